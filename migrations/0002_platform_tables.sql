-- Platform tables: outbox and its consumers, idempotency keys, sagas, traces, workflow state, DLQ.

CREATE TABLE event_outbox (
    id              bigserial PRIMARY KEY,
    event_id        uuid NOT NULL UNIQUE,
    tenant_id       text NOT NULL REFERENCES tenants(id),
    event_type      text NOT NULL,
    actor_id        text,
    target_type     text NOT NULL,
    target_id       text NOT NULL,
    version         integer NOT NULL DEFAULT 1,
    occurred_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    trace_id        text,
    correlation_id  text,
    causation_id    text,
    payload         jsonb NOT NULL DEFAULT '{}',
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'published', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    published_at    timestamptz,
    stream_id       text
);
CREATE INDEX event_outbox_pending_idx ON event_outbox (next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX event_outbox_target_idx ON event_outbox (tenant_id, target_type, target_id, id);

-- Wake relays on commit of a new event.
CREATE FUNCTION event_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('gradeflow_outbox', NEW.tenant_id);
    RETURN NULL;
END $$;
CREATE TRIGGER event_outbox_notify AFTER INSERT ON event_outbox
    FOR EACH ROW EXECUTE FUNCTION event_outbox_notify();

CREATE TABLE consumed_events (
    event_id    uuid NOT NULL,
    consumer    text NOT NULL,
    tenant_id   text NOT NULL REFERENCES tenants(id),
    consumed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, consumer)
);

CREATE TABLE idempotency_cache (
    tenant_id        text NOT NULL REFERENCES tenants(id),
    caller           text NOT NULL,
    method           text NOT NULL,
    path             text NOT NULL,
    key              text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    fingerprint      text NOT NULL,
    state            text NOT NULL DEFAULT 'in_flight' CHECK (state IN ('in_flight', 'done')),
    response_status  integer,
    response_headers jsonb,
    response_body    bytea,
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, caller, method, path, key)
);
CREATE INDEX idempotency_cache_expires_idx ON idempotency_cache (expires_at);

CREATE TABLE saga_transactions (
    id            uuid PRIMARY KEY,
    tenant_id     text NOT NULL REFERENCES tenants(id),
    saga_type     text NOT NULL,
    status        text NOT NULL CHECK (status IN
                  ('running', 'completed', 'compensating', 'compensated', 'needs_intervention')),
    steps         jsonb NOT NULL DEFAULT '[]',
    error         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX saga_transactions_status_idx ON saga_transactions (tenant_id, status);

CREATE TABLE trace_spans (
    span_id        text NOT NULL,
    trace_id       text NOT NULL,
    parent_span_id text,
    tenant_id      text,
    name           text NOT NULL,
    service        text NOT NULL,
    started_at     timestamptz NOT NULL,
    duration_ms    double precision NOT NULL,
    status         text NOT NULL DEFAULT 'ok',
    attributes     jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (trace_id, span_id)
);
CREATE INDEX trace_spans_started_idx ON trace_spans (started_at);

CREATE TABLE workflow_state_cache (
    workflow_id  text PRIMARY KEY,
    tenant_id    text NOT NULL REFERENCES tenants(id),
    run_id       text,
    stage        text NOT NULL,
    percentage   double precision NOT NULL DEFAULT 0,
    details      jsonb NOT NULL DEFAULT '{}',
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE dlq_items (
    id            bigserial PRIMARY KEY,
    tenant_id     text NOT NULL REFERENCES tenants(id),
    source        text NOT NULL,
    reference_id  text NOT NULL,
    error         text NOT NULL,
    payload       jsonb NOT NULL DEFAULT '{}',
    status        text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'replayed', 'discarded')),
    created_at    timestamptz NOT NULL DEFAULT now()
);
