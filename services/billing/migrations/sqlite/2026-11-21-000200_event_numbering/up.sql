-- Events are numbered after they commit. A transaction that changes an order appends its events
-- without a sequence; the numberer (one at a time, holding the 'event' counter row) gives the
-- committed unnumbered events the next numbers, oldest id first, so a reader following the feed
-- never skips one. (SQLite has one writer at a time; the layout matches PostgreSQL's.)
CREATE TABLE events_numbered (
    sequence BIGINT UNIQUE,
    id TEXT PRIMARY KEY,
    event_type TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
INSERT INTO events_numbered (sequence, id, event_type, subject_id, payload, trace_id, created_at)
    SELECT sequence, id, event_type, subject_id, payload, trace_id, created_at FROM events;
DROP TABLE events;
ALTER TABLE events_numbered RENAME TO events;
CREATE INDEX events_by_subject ON events (subject_id, sequence);
CREATE INDEX events_unnumbered ON events (id) WHERE sequence IS NULL;
