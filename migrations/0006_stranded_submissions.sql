-- Submissions still queued well after intake: their grading workflow was never started (the API
-- died between its commit and the start, or Temporal was unreachable). The reconciler in the relay
-- process starts them; it has no tenant context, so it reads them through this narrow SECURITY
-- DEFINER function (ids and what starting needs, nothing else). EXECUTE is granted to gradeflow_app
-- by `gradeflow migrate` (GRANT_SQL in infra/db/migrate.py).
CREATE INDEX submissions_queued_idx ON submissions (created_at) WHERE status = 'queued';

CREATE FUNCTION stranded_submissions(p_older_than_seconds double precision, p_limit integer)
RETURNS TABLE (tenant_id text, id uuid, exam_id uuid, trace_id text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
    SELECT s.tenant_id, s.id, s.exam_id, s.trace_id
      FROM submissions s
     WHERE s.status = 'queued'
       AND s.created_at < now() - make_interval(secs => p_older_than_seconds)
     ORDER BY s.created_at
     LIMIT p_limit
$$;
