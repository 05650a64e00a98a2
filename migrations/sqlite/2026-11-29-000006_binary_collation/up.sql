-- Nothing to do on SQLite: its default collation (BINARY) already compares bytes. The
-- folder exists because the Postgres and SQLite migration lists must match.
SELECT 1;
