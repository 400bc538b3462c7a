-- Batches (issue 11): many submissions of one exam graded by one BatchGradingWorkflow
-- (workflow id batch-<id>), at most max_concurrent child gradings at once. batch_items lists the
-- submissions in order; GET /v1/batches/{id} counts their statuses when Temporal cannot answer.

CREATE TABLE batches (
    id              uuid PRIMARY KEY,
    tenant_id       text NOT NULL REFERENCES tenants(id),
    exam_id         uuid NOT NULL REFERENCES exams(id),
    workflow_id     text NOT NULL,
    max_concurrent  integer NOT NULL CHECK (max_concurrent >= 1),
    total           integer NOT NULL CHECK (total >= 0),
    trace_id        text NOT NULL,
    created_by      text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX batches_tenant_exam_idx ON batches (tenant_id, exam_id, created_at DESC);

CREATE TABLE batch_items (
    batch_id       uuid NOT NULL REFERENCES batches(id) ON DELETE CASCADE,
    position       integer NOT NULL,
    submission_id  uuid NOT NULL REFERENCES submissions(id),
    tenant_id      text NOT NULL REFERENCES tenants(id),
    PRIMARY KEY (batch_id, position),
    UNIQUE (batch_id, submission_id)
);
CREATE INDEX batch_items_submission_idx ON batch_items (submission_id);

-- Row-level security as in 0003: only the current tenant's rows are seen and accepted.
ALTER TABLE batches ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON batches
    USING (tenant_id = current_setting('app.current_tenant', true))
    WITH CHECK (tenant_id = current_setting('app.current_tenant', true));
ALTER TABLE batch_items ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON batch_items
    USING (tenant_id = current_setting('app.current_tenant', true))
    WITH CHECK (tenant_id = current_setting('app.current_tenant', true));
