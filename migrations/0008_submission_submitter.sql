-- Who created a submission: the `sub` claim of the bearer token that posted it (an LMS integration).
-- A caller whose only role is `submitter` reads and lists only the submissions it created; reviewers
-- and admins read all of their tenant's. Submissions stored before this migration have NULL here:
-- only reviewers and admins read those.
ALTER TABLE submissions ADD COLUMN submitted_by text;
CREATE INDEX submissions_tenant_submitter_idx
    ON submissions (tenant_id, submitted_by, created_at DESC, id DESC);
