-- Observability (issue 10, part A). The relay has no tenant context, so it reads the outbox backlog
-- for its metrics through a narrow SECURITY DEFINER function (counts and one timestamp, no rows);
-- operators read a whole trace (every tenant's spans and the system spans) through another, for
-- `gradeflow trace <id>`. Tenants read their own spans under RLS (GET /v1/traces/{id}).
-- EXECUTE is granted to gradeflow_app by `gradeflow migrate` (GRANT_SQL in infra/db/migrate.py).

-- Failed (dead-lettered) events are few but scattered among millions of published rows: index them.
CREATE INDEX event_outbox_failed_idx ON event_outbox (id) WHERE status = 'failed';

-- Pending events, the commit time of the oldest one (lowest id; NULL when none) and failed events.
-- Every part reads a partial index (pending: event_outbox_pending_idx), never the published rows.
CREATE FUNCTION outbox_backlog()
RETURNS TABLE (pending bigint, oldest_pending_at timestamptz, failed bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
    SELECT (SELECT count(*) FROM event_outbox WHERE status = 'pending'),
           (SELECT o.occurred_at FROM event_outbox o
             WHERE o.id = (SELECT min(p.id) FROM event_outbox p WHERE p.status = 'pending')),
           (SELECT count(*) FROM event_outbox WHERE status = 'failed')
$$;

-- Every stored span of one trace, oldest first (at most p_limit), for operators.
CREATE FUNCTION trace_spans_find(p_trace_id text, p_limit integer)
RETURNS SETOF trace_spans
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
    SELECT * FROM trace_spans WHERE trace_id = p_trace_id ORDER BY started_at, span_id LIMIT p_limit
$$;
