-- Berth metadata schema, version 4: webhooks (the outbox of events, subscriptions, and the
-- deliveries owed to each with their attempts).

-- Every change a webhook reports, written by the transaction that made the change. `seq`
-- never goes back, even after the newest rows are pruned (AUTOINCREMENT), so readers can
-- page by it. `payload` is the event as JSON; `seq` is not in it (read from the column).
CREATE TABLE events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    kind       TEXT NOT NULL,
    repository TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    payload    TEXT NOT NULL
);
CREATE INDEX events_created ON events (created_ms);

-- Webhook subscriptions. `definition` is the subscription as JSON (url, secret, filters,
-- format, headers, limits); the columns beside it are authoritative for what they hold.
CREATE TABLE subscriptions (
    name       TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    enabled    INTEGER NOT NULL,
    source     TEXT NOT NULL CHECK (source IN ('api', 'config')),
    created_at INTEGER NOT NULL
);

-- One event owed to one subscription. `repository` is the event's, copied so that each
-- (subscription, repository) line can be delivered in order. A lease (`lease_owner` until
-- `lease_until_ms`) marks a delivery in flight.
CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription    TEXT NOT NULL REFERENCES subscriptions (name) ON DELETE CASCADE,
    event_seq       INTEGER NOT NULL REFERENCES events (seq),
    repository      TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    lease_owner     TEXT,
    lease_until_ms  INTEGER,
    last_status     INTEGER,
    last_error      TEXT,
    created_ms      INTEGER NOT NULL,
    updated_ms      INTEGER NOT NULL
);
-- The head of each line (the claim's NOT EXISTS), and the due deliveries.
CREATE INDEX deliveries_line ON deliveries (subscription, repository, state, event_seq);
CREATE INDEX deliveries_due ON deliveries (state, next_attempt_ms);
CREATE INDEX deliveries_event ON deliveries (event_seq);

-- The delivery log: every attempt, numbered from 1.
CREATE TABLE delivery_attempts (
    delivery    INTEGER NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    number      INTEGER NOT NULL,
    at_ms       INTEGER NOT NULL,
    status      INTEGER,
    error       TEXT,
    duration_ms INTEGER NOT NULL,
    PRIMARY KEY (delivery, number)
) WITHOUT ROWID;
