-- Events are numbered after they commit. A transaction that changes an order appends its events
-- without a sequence, so writers no longer queue on the 'event' counter row until they commit; the
-- numberer (one at a time, holding that row's lock) gives the committed unnumbered events the next
-- numbers, oldest id first. A number is only ever given to a committed event, and every later
-- number to an event numbered later, so a reader following the feed never skips one.
ALTER TABLE events DROP CONSTRAINT events_pkey;
ALTER TABLE events DROP CONSTRAINT events_id_key;
ALTER TABLE events ADD PRIMARY KEY (id);
ALTER TABLE events ALTER COLUMN sequence DROP NOT NULL;
CREATE UNIQUE INDEX events_by_sequence ON events (sequence);
CREATE INDEX events_unnumbered ON events (id) WHERE sequence IS NULL;
