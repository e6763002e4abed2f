-- Number what is still unnumbered, then make the sequence the key again.
UPDATE events SET sequence = numbered.sequence
FROM (
    SELECT id, (SELECT COALESCE(MAX(sequence), 0) FROM events)
        + ROW_NUMBER() OVER (ORDER BY id) AS sequence
    FROM events WHERE sequence IS NULL
) AS numbered
WHERE events.id = numbered.id;
UPDATE counters SET value = (SELECT COALESCE(MAX(sequence), 0) FROM events) WHERE name = 'event';
DROP INDEX events_unnumbered;
DROP INDEX events_by_sequence;
ALTER TABLE events DROP CONSTRAINT events_pkey;
ALTER TABLE events ALTER COLUMN sequence SET NOT NULL;
ALTER TABLE events ADD PRIMARY KEY (sequence);
ALTER TABLE events ADD CONSTRAINT events_id_key UNIQUE (id);
