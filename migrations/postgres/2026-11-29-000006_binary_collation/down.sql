-- Back to the database default collation.
ALTER TABLE sticky_assignments ALTER COLUMN unit_hash TYPE TEXT COLLATE "default";
ALTER TABLE exposures ALTER COLUMN id TYPE TEXT COLLATE "default", ALTER COLUMN unit_hash TYPE TEXT COLLATE "default";
ALTER TABLE rewards ALTER COLUMN id TYPE TEXT COLLATE "default", ALTER COLUMN exposure_id TYPE TEXT COLLATE "default";
ALTER TABLE reward_keys ALTER COLUMN idempotency_key TYPE TEXT COLLATE "default";
ALTER TABLE events ALTER COLUMN event_id TYPE TEXT COLLATE "default", ALTER COLUMN unit_hash TYPE TEXT COLLATE "default";
ALTER TABLE profiles ALTER COLUMN unit_hash TYPE TEXT COLLATE "default";
