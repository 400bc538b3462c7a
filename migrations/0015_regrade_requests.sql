-- Regrade requests (issue 11): the submitter of a graded submission asks for one question to be
-- graded again; a reviewer accepts (a new score through the review saga, history source 'request')
-- or rejects it with a reason. At most one open request per question of a submission.

CREATE TABLE regrade_requests (
    id                 uuid PRIMARY KEY,
    tenant_id          text NOT NULL REFERENCES tenants(id),
    submission_id      uuid NOT NULL REFERENCES submissions(id) ON DELETE CASCADE,
    question_id        text NOT NULL,
    reason             text NOT NULL,
    requested_by       text NOT NULL,
    status             text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'accepted', 'rejected')),
    resolved_by        text,
    resolution_reason  text,
    old_score          numeric,
    new_score          numeric,
    saga_id            uuid,
    created_at         timestamptz NOT NULL DEFAULT now(),
    resolved_at        timestamptz,
    CHECK ((status = 'open') = (resolved_at IS NULL))
);
CREATE UNIQUE INDEX regrade_requests_one_open_uq
    ON regrade_requests (submission_id, question_id) WHERE status = 'open';
CREATE INDEX regrade_requests_tenant_status_idx ON regrade_requests (tenant_id, status, created_at, id);

-- Row-level security as in 0003: only the current tenant's rows are seen and accepted.
ALTER TABLE regrade_requests ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON regrade_requests
    USING (tenant_id = current_setting('app.current_tenant', true))
    WITH CHECK (tenant_id = current_setting('app.current_tenant', true));
