-- Retention of trace_spans: the application role is RLS-bound (and cannot see system spans), so the
-- periodic purge goes through this narrow SECURITY DEFINER function, like 0003's key purge.
-- One call deletes at most 10 000 rows (ctid subquery on trace_spans_started_idx) so each chunk
-- is a short transaction; the caller (activities/maintenance.py) loops until a call deletes fewer.
-- EXECUTE is granted to gradeflow_app by `gradeflow migrate` (GRANT_SQL in infra/migrate.py).
CREATE FUNCTION purge_old_trace_spans(p_older_than_hours double precision)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    cutoff  timestamptz;
    deleted bigint;
BEGIN
    IF p_older_than_hours IS NULL OR NOT p_older_than_hours > 0 THEN
        RAISE EXCEPTION 'purge_old_trace_spans: p_older_than_hours must be > 0, got %', p_older_than_hours
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    cutoff := now() - p_older_than_hours * interval '1 hour';
    DELETE FROM trace_spans
     WHERE ctid IN (SELECT ctid FROM trace_spans WHERE started_at < cutoff LIMIT 10000)
       AND started_at < cutoff;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN deleted;
END
$$;
