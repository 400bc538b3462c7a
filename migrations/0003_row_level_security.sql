-- Row-level security: every tenant-scoped table only shows and accepts the current tenant's rows.
-- With no tenant set, current_setting(..., true) is NULL and nothing matches.

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['exams', 'questions', 'rubric_versions', 'submissions', 'answers',
                             'grading_results', 'grader_calls', 'review_log', 'event_outbox',
                             'consumed_events', 'idempotency_cache', 'saga_transactions',
                             'workflow_state_cache', 'dlq_items']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format($p$CREATE POLICY tenant_isolation ON %I
                          USING (tenant_id = current_setting('app.current_tenant', true))
                          WITH CHECK (tenant_id = current_setting('app.current_tenant', true))$p$, t);
    END LOOP;
END $$;

ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants
    USING (id = current_setting('app.current_tenant', true))
    WITH CHECK (id = current_setting('app.current_tenant', true));

-- trace_spans is written by every service and read by operators only; it carries no tenant data
-- beyond the tenant id attribute and is filtered like the rest when a tenant is set.
ALTER TABLE trace_spans ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON trace_spans
    USING (tenant_id IS NULL OR tenant_id = current_setting('app.current_tenant', true))
    WITH CHECK (tenant_id IS NULL OR tenant_id = current_setting('app.current_tenant', true));

-- Cross-tenant system work (the outbox relay, purges) goes through these narrow SECURITY DEFINER
-- functions instead of a role that bypasses RLS. They run as the table owner, which RLS does not
-- bind (no FORCE): they name their rows explicitly and return only what the relay needs.

CREATE FUNCTION outbox_claim(p_limit integer)
RETURNS SETOF event_outbox LANGUAGE sql SECURITY DEFINER SET search_path = public AS $$
    SELECT * FROM event_outbox
     WHERE status = 'pending' AND next_attempt_at <= now()
     ORDER BY id
     LIMIT p_limit
       FOR UPDATE SKIP LOCKED
$$;

CREATE FUNCTION outbox_mark_published(p_id bigint, p_stream_id text)
RETURNS void LANGUAGE sql SECURITY DEFINER SET search_path = public AS $$
    UPDATE event_outbox
       SET status = 'published', published_at = now(), stream_id = p_stream_id,
           attempts = attempts + 1, last_error = NULL
     WHERE id = p_id
$$;

CREATE FUNCTION outbox_mark_retry(p_id bigint, p_error text, p_delay_seconds double precision,
                                  p_max_attempts integer)
RETURNS text LANGUAGE sql SECURITY DEFINER SET search_path = public AS $$
    UPDATE event_outbox
       SET attempts = attempts + 1,
           last_error = p_error,
           next_attempt_at = now() + make_interval(secs => p_delay_seconds),
           status = CASE WHEN attempts + 1 >= p_max_attempts THEN 'failed' ELSE 'pending' END
     WHERE id = p_id
    RETURNING status
$$;

CREATE FUNCTION outbox_replay_failed(p_event_id uuid)
RETURNS boolean LANGUAGE sql SECURITY DEFINER SET search_path = public AS $$
    UPDATE event_outbox SET status = 'pending', attempts = 0, next_attempt_at = now()
     WHERE event_id = p_event_id AND status = 'failed'
    RETURNING true
$$;

CREATE FUNCTION purge_expired_idempotency_keys()
RETURNS bigint LANGUAGE sql SECURITY DEFINER SET search_path = public AS $$
    WITH gone AS (DELETE FROM idempotency_cache WHERE expires_at < now() RETURNING 1)
    SELECT count(*) FROM gone
$$;
