-- Outbox dead letters: an event whose handler keeps failing logically becomes `failed` AND gets a
-- dlq_items record an operator can list, replay or discard (infra/events/dead_letters.py,
-- `gradeflow dlq`). Connection-level failures never make an event failed: they are counted apart
-- (transient_failures) and retried with capped backoff for as long as the outage lasts.
-- Order per aggregate holds across failures: an event is not claimed while an earlier event of its
-- aggregate is failed (dead-lettered) or backing off; a discarded event no longer holds anything.
-- EXECUTE on the functions below is granted to gradeflow_app by `gradeflow migrate` (GRANT_SQL in
-- infra/db/migrate.py), like 0003's.

ALTER TABLE event_outbox
    DROP CONSTRAINT event_outbox_status_check,
    ADD CONSTRAINT event_outbox_status_check
        CHECK (status IN ('pending', 'published', 'failed', 'discarded')),
    ADD COLUMN transient_failures integer NOT NULL DEFAULT 0;
COMMENT ON COLUMN event_outbox.transient_failures IS
    'connection-level failures (Redis, PostgreSQL, Temporal unreachable); never lead to failed';

-- One record per (source, reference_id): a re-failure after a replay re-opens and updates it.
-- `error` is the latest error (last_error); `created_at` is the first failure.
ALTER TABLE dlq_items
    ADD COLUMN kind           text,
    ADD COLUMN attempts       integer NOT NULL DEFAULT 0,
    ADD COLUMN first_error    text,
    ADD COLUMN last_failed_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN updated_at     timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN resolved_by    text,
    ADD CONSTRAINT dlq_items_source_reference_key UNIQUE (source, reference_id);
UPDATE dlq_items SET first_error = error, last_failed_at = created_at, updated_at = created_at;
CREATE INDEX dlq_items_status_idx ON dlq_items (status, id);

-- Claim only events that may go now: not behind a failed or backing-off event of their aggregate
-- (those would be held back anyway, and a batch full of them would starve every other aggregate).
CREATE OR REPLACE FUNCTION outbox_claim(p_limit integer)
RETURNS SETOF event_outbox LANGUAGE sql SECURITY DEFINER SET search_path = public AS $$
    SELECT * FROM event_outbox c
     WHERE c.status = 'pending' AND c.next_attempt_at <= now()
       AND NOT EXISTS (SELECT 1 FROM event_outbox e
                        WHERE e.tenant_id = c.tenant_id AND e.target_type = c.target_type
                          AND e.target_id = c.target_id AND e.id < c.id
                          AND (e.status = 'failed' OR (e.status = 'pending' AND e.next_attempt_at > now())))
     ORDER BY c.id
     LIMIT p_limit
       FOR UPDATE OF c SKIP LOCKED
$$;

-- A connection-level failure: retry after p_delay_seconds; attempts (the logical budget) untouched.
CREATE FUNCTION outbox_mark_transient(p_id bigint, p_error text, p_delay_seconds double precision)
RETURNS integer LANGUAGE sql SECURITY DEFINER SET search_path = public AS $$
    UPDATE event_outbox
       SET transient_failures = transient_failures + 1,
           last_error = p_error,
           next_attempt_at = now() + make_interval(secs => p_delay_seconds)
     WHERE id = p_id AND status = 'pending'
    RETURNING transient_failures
$$;

-- Record a failed event as a dead letter (or re-open and update its record); returns the record id.
-- Acts only on a row that is `failed`; the payload is the event itself (with its outbox id).
CREATE FUNCTION outbox_dead_letter(p_id bigint)
RETURNS bigint LANGUAGE sql SECURITY DEFINER SET search_path = public AS $$
    INSERT INTO dlq_items AS d (tenant_id, source, kind, reference_id, error, first_error, attempts, payload)
    SELECT o.tenant_id, 'outbox', o.event_type, o.event_id::text, coalesce(o.last_error, 'unknown error'),
           coalesce(o.last_error, 'unknown error'), o.attempts,
           to_jsonb(o) - ARRAY['status', 'attempts', 'transient_failures', 'next_attempt_at', 'last_error',
                               'published_at', 'stream_id']
      FROM event_outbox o
     WHERE o.id = p_id AND o.status = 'failed'
    ON CONFLICT (source, reference_id) DO UPDATE
       SET status = 'open', kind = EXCLUDED.kind, error = EXCLUDED.error,
           attempts = d.attempts + EXCLUDED.attempts, payload = EXCLUDED.payload,
           last_failed_at = now(), updated_at = now(), resolved_by = NULL
    RETURNING d.id
$$;

-- Dead letters for operators (all tenants), each with the number of later events of its aggregate
-- that it holds back. NULL filters match everything.
CREATE FUNCTION dlq_items_find(p_id bigint, p_status text, p_tenant text, p_limit integer)
RETURNS TABLE (id bigint, tenant_id text, source text, kind text, reference_id text, status text,
               attempts integer, first_error text, last_error text, payload jsonb,
               first_failed_at timestamptz, last_failed_at timestamptz, updated_at timestamptz,
               resolved_by text, blocking bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
    SELECT d.id, d.tenant_id, d.source, d.kind, d.reference_id, d.status, d.attempts, d.first_error,
           d.error, d.payload, d.created_at, d.last_failed_at, d.updated_at, d.resolved_by,
           CASE WHEN d.source = 'outbox' THEN
               (SELECT count(*) FROM event_outbox e
                 WHERE e.tenant_id = d.tenant_id AND e.target_type = d.payload->>'target_type'
                   AND e.target_id = d.payload->>'target_id' AND e.id > (d.payload->>'id')::bigint
                   AND e.status = 'pending')
           ELSE 0 END
      FROM dlq_items d
     WHERE (p_id IS NULL OR d.id = p_id)
       AND (p_status IS NULL OR d.status = p_status)
       AND (p_tenant IS NULL OR d.tenant_id = p_tenant)
     ORDER BY d.id
     LIMIT p_limit
$$;

-- Replay (event back to pending, fresh budget) or discard (event `discarded`: later events of its
-- aggregate may go) an open outbox dead letter, and wake the relays. Returns the outcome:
-- 'replayed' | 'discarded' | 'not_found' | 'not_open' | 'unsupported_source' | 'event_not_failed'.
CREATE FUNCTION dlq_resolve(p_id bigint, p_action text, p_by text)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    item   dlq_items%ROWTYPE;
    tenant text;
BEGIN
    IF p_action IS NULL OR p_action NOT IN ('replay', 'discard') THEN
        RAISE EXCEPTION 'dlq_resolve: p_action must be replay or discard, got %', p_action
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO item FROM dlq_items WHERE dlq_items.id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'not_found';
    ELSIF item.status <> 'open' THEN
        RETURN 'not_open';
    ELSIF item.source <> 'outbox' THEN
        RETURN 'unsupported_source';
    END IF;
    IF p_action = 'replay' THEN
        UPDATE event_outbox
           SET status = 'pending', attempts = 0, transient_failures = 0, next_attempt_at = now()
         WHERE event_id = item.reference_id::uuid AND status = 'failed'
        RETURNING event_outbox.tenant_id INTO tenant;
    ELSE
        UPDATE event_outbox SET status = 'discarded'
         WHERE event_id = item.reference_id::uuid AND status = 'failed'
        RETURNING event_outbox.tenant_id INTO tenant;
    END IF;
    IF tenant IS NULL THEN
        RETURN 'event_not_failed';
    END IF;
    UPDATE dlq_items
       SET status = CASE p_action WHEN 'replay' THEN 'replayed' ELSE 'discarded' END,
           resolved_by = p_by, updated_at = now()
     WHERE dlq_items.id = p_id;
    PERFORM pg_notify('gradeflow_outbox', tenant);
    RETURN CASE p_action WHEN 'replay' THEN 'replayed' ELSE 'discarded' END;
END
$$;

-- The relay's replay by event id (0003) now also closes the event's dead-letter record.
CREATE OR REPLACE FUNCTION outbox_replay_failed(p_event_id uuid)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    tenant text;
BEGIN
    UPDATE event_outbox
       SET status = 'pending', attempts = 0, transient_failures = 0, next_attempt_at = now()
     WHERE event_id = p_event_id AND status = 'failed'
    RETURNING tenant_id INTO tenant;
    IF tenant IS NULL THEN
        RETURN false;
    END IF;
    UPDATE dlq_items SET status = 'replayed', updated_at = now()
     WHERE source = 'outbox' AND reference_id = p_event_id::text AND status = 'open';
    PERFORM pg_notify('gradeflow_outbox', tenant);
    RETURN true;
END
$$;

-- Events that failed before this migration get their dead-letter record too.
SELECT outbox_dead_letter(id) FROM event_outbox WHERE status = 'failed' ORDER BY id;
