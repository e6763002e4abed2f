-- Number what is still unnumbered, then make the sequence the key again.
CREATE TABLE events_keyed (
    sequence BIGINT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
INSERT INTO events_keyed (sequence, id, event_type, subject_id, payload, trace_id, created_at)
    SELECT COALESCE(sequence, (SELECT COALESCE(MAX(sequence), 0) FROM events)
               + ROW_NUMBER() OVER (PARTITION BY sequence IS NULL ORDER BY id)),
           id, event_type, subject_id, payload, trace_id, created_at
    FROM events;
UPDATE counters SET value = (SELECT COALESCE(MAX(sequence), 0) FROM events_keyed)
    WHERE name = 'event';
DROP TABLE events;
ALTER TABLE events_keyed RENAME TO events;
CREATE INDEX events_by_subject ON events (subject_id, sequence);
