ALTER TABLE exposures DROP COLUMN features;
DROP TABLE profiles;
DROP TABLE events;
