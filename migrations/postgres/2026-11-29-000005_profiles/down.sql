DROP TABLE profiles;
DROP TABLE events;
