-- Checkpoint retention: the LangGraph checkpoint threads of a grading are kept whole while it may
-- still resume, pruned to their last checkpoint some hours after the submission is final (completed
-- or failed), and deleted some days later. Thread ids are workflow run ids (plus `<run_id>:fresh-<n>`
-- after a corrupt checkpoint); the grading activities record each thread of a submission here: the
-- run id when a run loads its context, the thread the agent finished on when the result is persisted.
-- The checkpoint tables carry no tenant, so the hourly maintenance schedule prunes through the
-- SECURITY DEFINER function below, in bounded chunks (EXECUTE granted by `gradeflow migrate`).
-- The function is PL/pgSQL on purpose: the checkpoint tables are created by LangGraph's own set-up,
-- which runs after the SQL migrations on a fresh database.

CREATE TABLE checkpoint_threads (
    thread_id     text PRIMARY KEY,
    tenant_id     text NOT NULL REFERENCES tenants(id),
    submission_id uuid NOT NULL REFERENCES submissions(id) ON DELETE CASCADE,
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    pruned_at     timestamptz,
    deleted_at    timestamptz
);
CREATE INDEX checkpoint_threads_submission_idx ON checkpoint_threads (submission_id);
CREATE INDEX checkpoint_threads_live_idx ON checkpoint_threads (submission_id) WHERE deleted_at IS NULL;
COMMENT ON TABLE checkpoint_threads IS
    'checkpoint threads of each submission: pruned to the last checkpoint, then deleted, once it is final';
ALTER TABLE checkpoint_threads ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON checkpoint_threads
    USING (tenant_id = current_setting('app.current_tenant', true))
    WITH CHECK (tenant_id = current_setting('app.current_tenant', true));

-- Gradings that ran before this migration: their run ids are in grader_calls.
INSERT INTO checkpoint_threads (thread_id, tenant_id, submission_id, recorded_at)
SELECT g.run_id, g.tenant_id, g.submission_id, min(g.created_at)
  FROM grader_calls g JOIN submissions s ON s.id = g.submission_id
 GROUP BY g.run_id, g.tenant_id, g.submission_id
ON CONFLICT (thread_id) DO NOTHING;

-- One chunk of retention work: delete the threads of submissions final for longer than
-- p_delete_after_hours, then prune to their last checkpoint the threads of submissions final for
-- longer than p_prune_after_hours; at most p_limit threads each. Returns what it did; the caller
-- (activities/maintenance.py) calls again while a phase comes back full.
CREATE FUNCTION prune_checkpoint_threads(p_prune_after_hours double precision,
                                         p_delete_after_hours double precision, p_limit integer)
RETURNS TABLE (threads_deleted integer, threads_pruned integer, rows_deleted bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    t       record;
    n       bigint;
    kept    text;
BEGIN
    IF p_prune_after_hours IS NULL OR NOT p_prune_after_hours > 0
       OR p_delete_after_hours IS NULL OR NOT p_delete_after_hours > p_prune_after_hours
       OR p_limit IS NULL OR p_limit < 1 THEN
        RAISE EXCEPTION 'prune_checkpoint_threads: need 0 < prune after (%) < delete after (%) and limit (%) >= 1',
            p_prune_after_hours, p_delete_after_hours, p_limit USING ERRCODE = 'invalid_parameter_value';
    END IF;
    threads_deleted := 0;
    threads_pruned := 0;
    rows_deleted := 0;
    FOR t IN
        SELECT c.thread_id FROM checkpoint_threads c JOIN submissions s ON s.id = c.submission_id
         WHERE c.deleted_at IS NULL AND s.status IN ('completed', 'failed')
           AND s.updated_at < now() - p_delete_after_hours * interval '1 hour'
         ORDER BY c.thread_id
         LIMIT p_limit
           FOR UPDATE OF c SKIP LOCKED
    LOOP
        DELETE FROM checkpoint_writes WHERE thread_id = t.thread_id;
        GET DIAGNOSTICS n = ROW_COUNT; rows_deleted := rows_deleted + n;
        DELETE FROM checkpoint_blobs WHERE thread_id = t.thread_id;
        GET DIAGNOSTICS n = ROW_COUNT; rows_deleted := rows_deleted + n;
        DELETE FROM checkpoints WHERE thread_id = t.thread_id;
        GET DIAGNOSTICS n = ROW_COUNT; rows_deleted := rows_deleted + n;
        UPDATE checkpoint_threads SET deleted_at = now(), pruned_at = coalesce(pruned_at, now())
         WHERE thread_id = t.thread_id;
        threads_deleted := threads_deleted + 1;
    END LOOP;
    FOR t IN
        SELECT c.thread_id FROM checkpoint_threads c JOIN submissions s ON s.id = c.submission_id
         WHERE c.pruned_at IS NULL AND c.deleted_at IS NULL AND s.status IN ('completed', 'failed')
           AND s.updated_at < now() - p_prune_after_hours * interval '1 hour'
         ORDER BY c.thread_id
         LIMIT p_limit
           FOR UPDATE OF c SKIP LOCKED
    LOOP
        -- Keep the newest checkpoint of each namespace (checkpoint ids sort by time, as LangGraph
        -- lists them), its pending writes and the blobs its channel_versions point at.
        DELETE FROM checkpoints c
         WHERE c.thread_id = t.thread_id
           AND c.checkpoint_id < (SELECT max(k.checkpoint_id) FROM checkpoints k
                                   WHERE k.thread_id = t.thread_id AND k.checkpoint_ns = c.checkpoint_ns);
        GET DIAGNOSTICS n = ROW_COUNT; rows_deleted := rows_deleted + n;
        DELETE FROM checkpoint_writes w
         WHERE w.thread_id = t.thread_id
           AND NOT EXISTS (SELECT 1 FROM checkpoints k WHERE k.thread_id = w.thread_id
                              AND k.checkpoint_ns = w.checkpoint_ns AND k.checkpoint_id = w.checkpoint_id);
        GET DIAGNOSTICS n = ROW_COUNT; rows_deleted := rows_deleted + n;
        DELETE FROM checkpoint_blobs b
         WHERE b.thread_id = t.thread_id
           AND NOT EXISTS (SELECT 1 FROM checkpoints k WHERE k.thread_id = b.thread_id
                              AND k.checkpoint_ns = b.checkpoint_ns
                              AND k.checkpoint->'channel_versions'->>b.channel = b.version);
        GET DIAGNOSTICS n = ROW_COUNT; rows_deleted := rows_deleted + n;
        UPDATE checkpoint_threads SET pruned_at = now() WHERE thread_id = t.thread_id;
        threads_pruned := threads_pruned + 1;
    END LOOP;
    RETURN NEXT;
END
$$;
