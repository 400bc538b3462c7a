-- Spans without a tenant (HTTP requests, Temporal client/worker spans) carry URL paths and ids of
-- every tenant; the application role may still write them, but only operators (the owner) read them.
DROP POLICY tenant_isolation ON trace_spans;
CREATE POLICY tenant_isolation ON trace_spans
    USING (tenant_id = current_setting('app.current_tenant', true))
    WITH CHECK (tenant_id IS NULL OR tenant_id = current_setting('app.current_tenant', true));
