-- Signed webhooks (issue 11): endpoints a tenant's admins register, and one delivery per (endpoint,
-- event) that the relay's webhook fan-out records (deduplicated on consumed_events) and its dispatcher
-- POSTs (Standard Webhooks: webhook-id = the event id) with backoff until it succeeds, gives up (a
-- dead letter of kind 'webhook', reference = the delivery id) or the endpoint is disabled.
-- The signing secret must be readable to sign, so it is stored as is, under RLS like every tenant row;
-- during a rotation's grace period the previous secret signs too (two signatures per request).

CREATE TABLE webhook_endpoints (
    id                  uuid PRIMARY KEY,
    tenant_id           text NOT NULL REFERENCES tenants(id),
    url                 text NOT NULL,
    event_types         text[] NOT NULL CHECK (cardinality(event_types) >= 1),
    description         text,
    secret              text NOT NULL,
    previous_secret     text,
    previous_secret_expires_at timestamptz,
    status              text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    disabled_reason     text,
    disabled_at         timestamptz,
    failing_since       timestamptz,
    created_by          text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_tenant_idx ON webhook_endpoints (tenant_id, created_at, id);

CREATE TABLE webhook_deliveries (
    id               bigserial PRIMARY KEY,
    tenant_id        text NOT NULL REFERENCES tenants(id),
    endpoint_id      uuid NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
    event_id         uuid NOT NULL,
    event_type       text NOT NULL,
    body             text NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_status_code integer,
    last_error       text,
    last_attempt_at  timestamptz,
    delivered_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (endpoint_id, event_id)
);
COMMENT ON COLUMN webhook_deliveries.body IS 'the exact bytes sent (every attempt signs the same body)';
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, id DESC);

-- Row-level security as in 0003: only the current tenant's rows are seen and accepted.
ALTER TABLE webhook_endpoints ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON webhook_endpoints
    USING (tenant_id = current_setting('app.current_tenant', true))
    WITH CHECK (tenant_id = current_setting('app.current_tenant', true));
ALTER TABLE webhook_deliveries ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON webhook_deliveries
    USING (tenant_id = current_setting('app.current_tenant', true))
    WITH CHECK (tenant_id = current_setting('app.current_tenant', true));

-- The dispatcher claims due deliveries of active endpoints across tenants (like outbox_claim): each
-- claimed row is leased (next_attempt_at pushed by p_lease_seconds) so another dispatcher skips it,
-- and a dispatcher that dies mid-request leaves it to be claimed again when the lease runs out (the
-- same webhook-id is sent again). Everything after the claim runs under the row's tenant (RLS).
CREATE FUNCTION webhook_claim(p_limit integer, p_lease_seconds double precision)
RETURNS TABLE (id bigint, tenant_id text, endpoint_id uuid, event_id uuid, event_type text, body text,
               attempts integer, url text, secret text, previous_secret text,
               previous_secret_expires_at timestamptz)
LANGUAGE sql SECURITY DEFINER SET search_path = public AS $$
    WITH due AS (
        SELECT d.id FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
         WHERE d.status = 'pending' AND d.next_attempt_at <= now() AND e.status = 'active'
         ORDER BY d.next_attempt_at, d.id
         LIMIT p_limit
           FOR UPDATE OF d SKIP LOCKED
    ), leased AS (
        UPDATE webhook_deliveries d SET next_attempt_at = now() + make_interval(secs => p_lease_seconds)
          FROM due WHERE d.id = due.id
        RETURNING d.*
    )
    SELECT l.id, l.tenant_id, l.endpoint_id, l.event_id, l.event_type, l.body, l.attempts, e.url, e.secret,
           e.previous_secret, e.previous_secret_expires_at
      FROM leased l JOIN webhook_endpoints e ON e.id = l.endpoint_id
     ORDER BY l.id
$$;
