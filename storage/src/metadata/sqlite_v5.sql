-- Berth metadata schema for SQLite, version 5: claiming webhook deliveries in time
-- proportional to what is claimed, not to the backlog.

-- The pending deliveries in the order claims take them: a claim walks this index and stops
-- once it has found enough heads of lines.
CREATE INDEX deliveries_pending ON deliveries (event_seq, id) WHERE state = 'pending';

-- One delivery per event and subscription (the fan-out writes no more), so within a line
-- (subscription, repository) `event_seq` alone orders deliveries: a claim asks "is there an
-- earlier pending one?" as a range of deliveries_line.
CREATE UNIQUE INDEX deliveries_once ON deliveries (subscription, event_seq);
