-- User profiles (issue 5): behaviour events as sent by the storefront (idempotent by
-- event id) and, per pseudonymised unit, the profile state they fold into (JSON, see
-- src/profile/mod.rs). Events are the log; a profile can be rebuilt from them.
CREATE TABLE events (
    event_id TEXT PRIMARY KEY,
    unit_hash TEXT NOT NULL,
    kind TEXT NOT NULL,
    amount DOUBLE PRECISION NOT NULL,
    category TEXT,
    occurred_at TIMESTAMP NOT NULL,
    received_at TIMESTAMP NOT NULL
);
CREATE INDEX events_unit_time ON events (unit_hash, occurred_at);

CREATE TABLE profiles (
    unit_hash TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    events BIGINT NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

-- The encoded context a contextual policy scored, per exposure (JSON array; NULL for
-- context-free policies): what the learner and off-policy evaluation read back.
ALTER TABLE exposures ADD COLUMN features TEXT;
