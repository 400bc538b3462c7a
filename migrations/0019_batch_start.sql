-- A batch whose workflow could not be started (Temporal unreachable at POST time) is started later
-- (issue 11). batches.started_at is set once Temporal accepted the start of batch-<id> (by the API,
-- or by the reconciler in the relay process, which sweeps batches still unstarted after a grace
-- period through the narrow SECURITY DEFINER function below: it has no tenant context). Batches
-- created before this migration count as started: nothing is started behind anyone's back.
ALTER TABLE batches ADD COLUMN started_at timestamptz;
UPDATE batches SET started_at = created_at;
CREATE INDEX batches_unstarted_idx ON batches (created_at) WHERE started_at IS NULL;

CREATE FUNCTION unstarted_batches(p_older_than_seconds double precision, p_limit integer)
RETURNS TABLE (tenant_id text, id uuid)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
    SELECT b.tenant_id, b.id
      FROM batches b
     WHERE b.started_at IS NULL
       AND b.created_at < now() - make_interval(secs => p_older_than_seconds)
     ORDER BY b.created_at
     LIMIT p_limit
$$;
