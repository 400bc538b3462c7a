-- Score history (issue 11): one row per change of one question's score, written in the same
-- transaction as the change (agent grading, regrade, review override and its compensation, an
-- accepted regrade request). old_score is NULL for a question's first grade. submission_version is
-- the submissions.version the change committed, so the rows of one submission replay in order.

CREATE TABLE score_history (
    id                  bigserial PRIMARY KEY,
    tenant_id           text NOT NULL REFERENCES tenants(id),
    submission_id       uuid NOT NULL REFERENCES submissions(id) ON DELETE CASCADE,
    question_id         text NOT NULL,
    old_score           numeric,
    new_score           numeric NOT NULL,
    source              text NOT NULL CHECK (source IN ('agent', 'review', 'regrade', 'request')),
    actor_id            text,
    reason              text,
    rubric_version      integer,
    submission_version  integer NOT NULL,
    trace_id            text,
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX score_history_submission_idx ON score_history (submission_id, id);

-- Row-level security as in 0003: only the current tenant's rows are seen and accepted.
ALTER TABLE score_history ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON score_history
    USING (tenant_id = current_setting('app.current_tenant', true))
    WITH CHECK (tenant_id = current_setting('app.current_tenant', true));
