-- Core schema: tenants, exams with versioned rubrics, submissions and their answers and results.
-- Every tenant-scoped table carries tenant_id and a row-level-security policy on
-- current_setting('app.current_tenant'). The application role is neither owner nor superuser.

CREATE TABLE tenants (
    id          text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 64),
    name        text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE exams (
    id          uuid PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES tenants(id),
    title       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX exams_tenant_created_idx ON exams (tenant_id, created_at DESC, id DESC);

CREATE TABLE questions (
    exam_id         uuid NOT NULL REFERENCES exams(id) ON DELETE CASCADE,
    question_id     text NOT NULL,
    tenant_id       text NOT NULL REFERENCES tenants(id),
    position        integer NOT NULL,
    type            text NOT NULL CHECK (type IN ('choice', 'numeric', 'short_answer', 'essay')),
    prompt          text NOT NULL,
    max_points      numeric NOT NULL CHECK (max_points > 0),
    current_version integer NOT NULL DEFAULT 1,
    PRIMARY KEY (exam_id, question_id)
);

CREATE TABLE rubric_versions (
    exam_id      uuid NOT NULL,
    question_id  text NOT NULL,
    version      integer NOT NULL,
    tenant_id    text NOT NULL REFERENCES tenants(id),
    rubric       jsonb NOT NULL,
    rubric_hash  text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (exam_id, question_id, version),
    FOREIGN KEY (exam_id, question_id) REFERENCES questions(exam_id, question_id) ON DELETE CASCADE
);

CREATE TABLE submissions (
    id            uuid PRIMARY KEY,
    tenant_id     text NOT NULL REFERENCES tenants(id),
    exam_id       uuid NOT NULL REFERENCES exams(id),
    student_id    text NOT NULL,
    external_id   text,
    status        text NOT NULL DEFAULT 'queued' CHECK (status IN
                  ('queued', 'grading', 'needs_review', 'completed', 'failed', 'needs_intervention')),
    total         numeric,
    max_total     numeric,
    workflow_id   text NOT NULL,
    trace_id      text NOT NULL,
    error         text,
    version       integer NOT NULL DEFAULT 1,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    graded_at     timestamptz
);
CREATE UNIQUE INDEX submissions_external_id_uq
    ON submissions (tenant_id, exam_id, student_id, external_id) WHERE external_id IS NOT NULL;
CREATE INDEX submissions_tenant_created_idx ON submissions (tenant_id, created_at DESC, id DESC);
CREATE INDEX submissions_tenant_status_idx ON submissions (tenant_id, status, created_at DESC, id DESC);
CREATE INDEX submissions_tenant_exam_idx ON submissions (tenant_id, exam_id, created_at DESC, id DESC);
CREATE INDEX submissions_tenant_student_idx ON submissions (tenant_id, student_id, created_at DESC);

-- Status state machine: refuse transitions that make no sense.
CREATE FUNCTION submissions_check_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = OLD.status THEN
        RETURN NEW;
    END IF;
    IF NOT (
        (OLD.status = 'queued' AND NEW.status IN ('grading', 'failed', 'needs_intervention')) OR
        (OLD.status = 'grading' AND NEW.status IN ('needs_review', 'completed', 'failed', 'needs_intervention')) OR
        (OLD.status = 'needs_review' AND NEW.status IN ('completed', 'failed')) OR
        (OLD.status = 'needs_intervention' AND NEW.status IN ('grading', 'failed')) OR
        (OLD.status = 'failed' AND NEW.status IN ('grading'))
    ) THEN
        RAISE EXCEPTION 'invalid submission status transition % -> %', OLD.status, NEW.status
            USING ERRCODE = 'check_violation';
    END IF;
    NEW.version := OLD.version + 1;
    NEW.updated_at := now();
    RETURN NEW;
END $$;
CREATE TRIGGER submissions_transition BEFORE UPDATE OF status ON submissions
    FOR EACH ROW EXECUTE FUNCTION submissions_check_transition();

CREATE TABLE answers (
    submission_id uuid NOT NULL REFERENCES submissions(id) ON DELETE CASCADE,
    question_id   text NOT NULL,
    tenant_id     text NOT NULL REFERENCES tenants(id),
    answer        jsonb NOT NULL,
    PRIMARY KEY (submission_id, question_id)
);

CREATE TABLE grading_results (
    submission_id   uuid NOT NULL REFERENCES submissions(id) ON DELETE CASCADE,
    question_id     text NOT NULL,
    tenant_id       text NOT NULL REFERENCES tenants(id),
    score           numeric NOT NULL,
    max_points      numeric NOT NULL,
    confidence      double precision NOT NULL CHECK (confidence BETWEEN 0 AND 1),
    feedback        text NOT NULL DEFAULT '',
    grader          text NOT NULL,
    criteria_met    jsonb NOT NULL DEFAULT '[]',
    criteria_missed jsonb NOT NULL DEFAULT '[]',
    rubric_version  integer NOT NULL,
    flagged         boolean NOT NULL DEFAULT false,
    overridden      boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (submission_id, question_id),
    CHECK (score >= 0 AND score <= max_points)
);

-- Grader invocations, one row per question graded (lets tests prove nothing is graded twice).
CREATE TABLE grader_calls (
    id            bigserial PRIMARY KEY,
    tenant_id     text NOT NULL REFERENCES tenants(id),
    submission_id uuid NOT NULL,
    question_id   text NOT NULL,
    run_id        text NOT NULL,
    attempt       integer NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX grader_calls_submission_idx ON grader_calls (submission_id);

CREATE TABLE review_log (
    id            bigserial PRIMARY KEY,
    tenant_id     text NOT NULL REFERENCES tenants(id),
    submission_id uuid NOT NULL REFERENCES submissions(id) ON DELETE CASCADE,
    question_id   text,
    actor_id      text NOT NULL,
    action        text NOT NULL,
    before        jsonb,
    after         jsonb,
    reason        text,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX review_log_submission_idx ON review_log (submission_id, created_at);
