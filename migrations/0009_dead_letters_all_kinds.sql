-- Dead letters of every kind: outbox events (0007), external events the bridge could not deliver,
-- submissions in needs_intervention (written by the activity that marks them, in its transaction),
-- later webhook deliveries. `kind` is what gave up (0007's `source`); `event_type` is what it was
-- doing (0007's `kind`, e.g. the outbox event type). Replays and discards are made under the item's
-- tenant (RLS) by infra/events/dead_letters.py and each is audited in dlq_actions (actor, time,
-- reason); the record keeps the latest resolution (resolved_by/_at, resolution_reason).
-- Status: open → replayed | discarded (an operator) → open again if it fails again; resolved when the
-- thing succeeded later by itself (a submission graded after a retry).
-- EXECUTE on the functions below is granted to gradeflow_app by `gradeflow migrate` (GRANT_SQL).

ALTER TABLE dlq_items RENAME COLUMN kind TO event_type;
ALTER TABLE dlq_items RENAME COLUMN source TO kind;
ALTER TABLE dlq_items
    DROP CONSTRAINT dlq_items_source_reference_key,
    DROP CONSTRAINT dlq_items_status_check,
    ADD CONSTRAINT dlq_items_status_check CHECK (status IN ('open', 'replayed', 'discarded', 'resolved')),
    ADD CONSTRAINT dlq_items_kind_check CHECK (kind IN ('outbox', 'external_event', 'submission', 'webhook')),
    ADD CONSTRAINT dlq_items_kind_reference_key UNIQUE (tenant_id, kind, reference_id),
    ADD COLUMN resolved_at       timestamptz,
    ADD COLUMN resolution_reason text;
COMMENT ON COLUMN dlq_items.kind IS 'what gave up: outbox | external_event | submission | webhook';
COMMENT ON COLUMN dlq_items.event_type IS 'what it was doing, e.g. the outbox or external event type';
COMMENT ON COLUMN dlq_items.error IS 'the latest error (first_error keeps the first)';
COMMENT ON COLUMN dlq_items.created_at IS 'when it first gave up';
CREATE INDEX dlq_items_tenant_kind_status_idx ON dlq_items (tenant_id, kind, status, id);

-- Every operator action on a dead letter (and the system's "resolved"), newest last.
CREATE TABLE dlq_actions (
    id         bigserial PRIMARY KEY,
    tenant_id  text NOT NULL REFERENCES tenants(id),
    item_id    bigint NOT NULL REFERENCES dlq_items(id) ON DELETE CASCADE,
    action     text NOT NULL CHECK (action IN ('replay', 'discard', 'resolve')),
    actor      text NOT NULL,
    reason     text,
    detail     jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dlq_actions_item_idx ON dlq_actions (item_id, id);
ALTER TABLE dlq_actions ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON dlq_actions
    USING (tenant_id = current_setting('app.current_tenant', true))
    WITH CHECK (tenant_id = current_setting('app.current_tenant', true));

-- The relay records a failed outbox event (0007's function, with the renamed columns).
CREATE OR REPLACE FUNCTION outbox_dead_letter(p_id bigint)
RETURNS bigint LANGUAGE sql SECURITY DEFINER SET search_path = public AS $$
    INSERT INTO dlq_items AS d (tenant_id, kind, event_type, reference_id, error, first_error, attempts, payload)
    SELECT o.tenant_id, 'outbox', o.event_type, o.event_id::text, coalesce(o.last_error, 'unknown error'),
           coalesce(o.last_error, 'unknown error'), o.attempts,
           to_jsonb(o) - ARRAY['status', 'attempts', 'transient_failures', 'next_attempt_at', 'last_error',
                               'published_at', 'stream_id']
      FROM event_outbox o
     WHERE o.id = p_id AND o.status = 'failed'
    ON CONFLICT (tenant_id, kind, reference_id) DO UPDATE
       SET status = 'open', event_type = EXCLUDED.event_type, error = EXCLUDED.error,
           attempts = d.attempts + EXCLUDED.attempts, payload = EXCLUDED.payload,
           last_failed_at = now(), updated_at = now(),
           resolved_by = NULL, resolved_at = NULL, resolution_reason = NULL
    RETURNING d.id
$$;

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
    UPDATE dlq_items SET status = 'replayed', updated_at = now(), resolved_at = now()
     WHERE tenant_id = tenant AND kind = 'outbox' AND reference_id = p_event_id::text AND status = 'open';
    PERFORM pg_notify('gradeflow_outbox', tenant);
    RETURN true;
END
$$;

-- Replays and discards now run under the item's tenant (RLS), audited in dlq_actions.
DROP FUNCTION dlq_resolve(bigint, text, text);

-- Dead letters for operators across tenants (`gradeflow dlq`), each with the number of later events
-- of its aggregate it holds back (outbox only). NULL filters match everything; p_after_id pages.
DROP FUNCTION dlq_items_find(bigint, text, text, integer);
CREATE FUNCTION dlq_items_find(p_id bigint, p_kind text, p_status text, p_tenant text, p_limit integer,
                               p_after_id bigint DEFAULT 0)
RETURNS TABLE (id bigint, tenant_id text, kind text, event_type text, reference_id text, status text,
               attempts integer, first_error text, last_error text, payload jsonb,
               first_failed_at timestamptz, last_failed_at timestamptz, updated_at timestamptz,
               resolved_by text, resolved_at timestamptz, resolution_reason text, blocking bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
    SELECT d.id, d.tenant_id, d.kind, d.event_type, d.reference_id, d.status, d.attempts, d.first_error,
           d.error, d.payload, d.created_at, d.last_failed_at, d.updated_at, d.resolved_by, d.resolved_at,
           d.resolution_reason,
           CASE WHEN d.kind = 'outbox' THEN
               (SELECT count(*) FROM event_outbox e
                 WHERE e.tenant_id = d.tenant_id AND e.target_type = d.payload->>'target_type'
                   AND e.target_id = d.payload->>'target_id' AND e.id > (d.payload->>'id')::bigint
                   AND e.status = 'pending')
           ELSE 0 END
      FROM dlq_items d
     WHERE (p_id IS NULL OR d.id = p_id)
       AND (p_kind IS NULL OR d.kind = p_kind)
       AND (p_status IS NULL OR d.status = p_status)
       AND (p_tenant IS NULL OR d.tenant_id = p_tenant)
       AND d.id > coalesce(p_after_id, 0)
     ORDER BY d.id
     LIMIT p_limit
$$;

-- The tenant a dead letter belongs to (operators act on it under that tenant's RLS context).
CREATE FUNCTION dlq_item_tenant(p_id bigint)
RETURNS text LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
    SELECT tenant_id FROM dlq_items WHERE id = p_id
$$;

-- Counts by kind and status over every tenant (the `dead letters by kind` metric, alert rules).
CREATE FUNCTION dlq_counts()
RETURNS TABLE (kind text, status text, items bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
    SELECT kind, status, count(*) FROM dlq_items GROUP BY kind, status ORDER BY kind, status
$$;
