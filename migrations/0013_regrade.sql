-- Regrades (issue 11): a completed submission may be graded again (completed -> grading), by a
-- regrade batch's new run of grade-<id> (Temporal never runs two runs of one id at once). The
-- state machine of 0001 otherwise unchanged. Batches say what they are for (kind).

CREATE OR REPLACE FUNCTION submissions_check_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = OLD.status THEN
        RETURN NEW;
    END IF;
    IF NOT (
        (OLD.status = 'queued' AND NEW.status IN ('grading', 'failed', 'needs_intervention')) OR
        (OLD.status = 'grading' AND NEW.status IN ('needs_review', 'completed', 'failed', 'needs_intervention')) OR
        (OLD.status = 'needs_review' AND NEW.status IN ('completed', 'failed')) OR
        (OLD.status = 'needs_intervention' AND NEW.status IN ('grading', 'failed')) OR
        (OLD.status = 'failed' AND NEW.status IN ('grading')) OR
        (OLD.status = 'completed' AND NEW.status IN ('grading'))
    ) THEN
        RAISE EXCEPTION 'invalid submission status transition % -> %', OLD.status, NEW.status
            USING ERRCODE = 'check_violation';
    END IF;
    NEW.version := OLD.version + 1;
    NEW.updated_at := now();
    RETURN NEW;
END $$;

ALTER TABLE batches ADD COLUMN kind text NOT NULL DEFAULT 'grade' CHECK (kind IN ('grade', 'regrade'));
ALTER TABLE batches ADD COLUMN override_reviewed boolean NOT NULL DEFAULT false;
