-- Byte-order ("C") collation for the text columns that are index keys: ids, pseudonymised
-- unit hashes and idempotency keys are ASCII tokens compared only for equality and
-- (for time-ordered ids) order, so a linguistic collation buys nothing. Under the
-- database's default (e.g. C.UTF-8 or en_US.UTF-8 with the libc provider) every B-tree
-- comparison goes through strcoll; under "C" it is a memcmp. On the /v1/assign load test
-- B-tree insertion was ~30% of Postgres's CPU (docs/performance.md). The ALTERs rewrite
-- the tables and rebuild their indexes: on a large installation run this migration in a
-- quiet hour.
ALTER TABLE sticky_assignments ALTER COLUMN unit_hash TYPE TEXT COLLATE "C";
ALTER TABLE exposures ALTER COLUMN id TYPE TEXT COLLATE "C", ALTER COLUMN unit_hash TYPE TEXT COLLATE "C";
ALTER TABLE rewards ALTER COLUMN id TYPE TEXT COLLATE "C", ALTER COLUMN exposure_id TYPE TEXT COLLATE "C";
ALTER TABLE reward_keys ALTER COLUMN idempotency_key TYPE TEXT COLLATE "C";
ALTER TABLE events ALTER COLUMN event_id TYPE TEXT COLLATE "C", ALTER COLUMN unit_hash TYPE TEXT COLLATE "C";
ALTER TABLE profiles ALTER COLUMN unit_hash TYPE TEXT COLLATE "C";
