-- Berth metadata schema for PostgreSQL, version 5: webhooks (sqlite_v4.sql): the outbox of
-- events, subscriptions, and the deliveries owed to each with their attempts.

-- Every change a webhook reports, written by the transaction that made the change, as its
-- last step. `payload` is the event as JSON; `seq` is not in it (read from the column).
CREATE TABLE events (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         TEXT COLLATE "C" NOT NULL UNIQUE,
    kind       TEXT COLLATE "C" NOT NULL,
    repository TEXT COLLATE "C" NOT NULL,
    created_ms BIGINT NOT NULL,
    payload    TEXT NOT NULL
);
CREATE INDEX events_created ON events (created_ms);

-- Webhook subscriptions. `definition` is the subscription as JSON (url, secret, filters,
-- format, headers, limits); the columns beside it are authoritative for what they hold.
CREATE TABLE subscriptions (
    name       TEXT COLLATE "C" PRIMARY KEY,
    definition TEXT NOT NULL,
    enabled    BOOLEAN NOT NULL,
    source     TEXT COLLATE "C" NOT NULL CHECK (source IN ('api', 'config')),
    created_at BIGINT NOT NULL
);

-- One event owed to one subscription. `repository` is the event's, copied so that each
-- (subscription, repository) line can be delivered in order. A lease (`lease_owner` until
-- `lease_until_ms`) marks a delivery in flight.
CREATE TABLE deliveries (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription    TEXT COLLATE "C" NOT NULL REFERENCES subscriptions (name) ON DELETE CASCADE,
    event_seq       BIGINT NOT NULL REFERENCES events (seq),
    repository      TEXT COLLATE "C" NOT NULL,
    state           TEXT COLLATE "C" NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL,
    lease_owner     TEXT COLLATE "C",
    lease_until_ms  BIGINT,
    last_status     INTEGER,
    last_error      TEXT,
    created_ms      BIGINT NOT NULL,
    updated_ms      BIGINT NOT NULL
);
-- The head of each line (the claim's NOT EXISTS), the due deliveries, and the deliveries of
-- an event (pruning, and the foreign key's check when an event is deleted).
CREATE INDEX deliveries_line ON deliveries (subscription, repository, state, event_seq);
CREATE INDEX deliveries_due ON deliveries (state, next_attempt_ms);
CREATE INDEX deliveries_event ON deliveries (event_seq);

-- The delivery log: every attempt, numbered from 1.
CREATE TABLE delivery_attempts (
    delivery    BIGINT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    number      INTEGER NOT NULL,
    at_ms       BIGINT NOT NULL,
    status      INTEGER,
    error       TEXT,
    duration_ms BIGINT NOT NULL,
    PRIMARY KEY (delivery, number)
);
