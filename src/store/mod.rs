//! The store: one diesel schema over two backends (Postgres in production and tests,
//! SQLite as the embedded default), embedded migrations per backend, typed queries for
//! the rooms above, and the group-commit log writer (`writer`). The backend is chosen
//! from the URL scheme here, not by diesel's `MultiConnection`, so a failed connection
//! reports the driver's own message.

pub mod analysis;
pub mod export;
pub mod models;
pub mod partitions;
mod pg_batch;
pub mod profiles;
pub mod queries;
pub mod schema;
pub mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool, PooledConnection};
use diesel::{PgConnection, SqliteConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

pub const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Where the embedded default keeps its file when no `DATABASE_URL` is given.
pub const DEFAULT_SQLITE_PATH: &str = "./data/strategist.db";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unknown database URL scheme `{0}`: use postgres://…, sqlite://PATH or a file path")]
    UnknownScheme(String),
    #[error("cannot connect to the database: {0}")]
    Connect(String),
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Query(diesel::result::Error),
}

impl StoreError {
    /// True when the failure is the database being away (retry later), not a bad query.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Connect(_))
    }
}

impl From<diesel::result::Error> for StoreError {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind as K, Error as E};
        match e {
            E::NotFound => StoreError::NotFound,
            E::DatabaseError(K::UniqueViolation, info) => StoreError::Conflict(info.message().to_string()),
            E::DatabaseError(K::ClosedConnection | K::UnableToSendCommand, info) => {
                StoreError::Unavailable(info.message().to_string())
            }
            E::BrokenTransactionManager => StoreError::Unavailable("broken transaction manager".into()),
            other => {
                // libpq reports a dropped server as a generic error with these words.
                let text = other.to_string();
                if text.contains("server closed the connection")
                    || text.contains("terminating connection")
                    || text.contains("no connection to the server")
                    || text.contains("Connection refused")
                {
                    StoreError::Unavailable(text)
                } else {
                    StoreError::Query(other)
                }
            }
        }
    }
}

impl From<diesel::r2d2::PoolError> for StoreError {
    fn from(e: diesel::r2d2::PoolError) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

/// Which backend a URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbUrl {
    Postgres(String),
    Sqlite(PathBuf),
}

impl DbUrl {
    /// `postgres://` / `postgresql://` → Postgres; `sqlite://PATH` or a plain path → SQLite;
    /// anything else with a scheme is an error naming the scheme.
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DbUrl::Postgres(url.to_string()));
        }
        if let Some(path) = url.strip_prefix("sqlite://") {
            return Ok(DbUrl::Sqlite(PathBuf::from(path)));
        }
        if let Some(path) = url.strip_prefix("sqlite:") {
            return Ok(DbUrl::Sqlite(PathBuf::from(path)));
        }
        if let Some((scheme, _)) = url.split_once("://") {
            return Err(StoreError::UnknownScheme(scheme.to_string()));
        }
        if url.trim().is_empty() {
            return Ok(DbUrl::Sqlite(PathBuf::from(DEFAULT_SQLITE_PATH)));
        }
        Ok(DbUrl::Sqlite(PathBuf::from(url)))
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            DbUrl::Postgres(_) => "postgres",
            DbUrl::Sqlite(_) => "sqlite",
        }
    }
}

#[derive(Debug)]
struct SqlitePragmas;

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for SqlitePragmas {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        // WAL lets readers run beside the one writer; synchronous stays FULL (the WAL
        // default) so a committed batch survives a crash of the process or the machine.
        diesel::sql_query("PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON;")
            .execute(conn)
            .map(|_| ())
            .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// A connection pool on one of the two backends.
#[derive(Clone)]
pub enum Db {
    Pg(Pool<ConnectionManager<PgConnection>>),
    Sqlite(Pool<ConnectionManager<SqliteConnection>>),
}

pub enum Conn {
    Pg(PooledConnection<ConnectionManager<PgConnection>>),
    Sqlite(PooledConnection<ConnectionManager<SqliteConnection>>),
}

/// Runs the same diesel code on whichever backend the pool holds. The body is compiled
/// once per backend, so the query DSL is checked against each.
#[macro_export]
macro_rules! db_run {
    ($db:expr, |$conn:ident| $body:block) => {
        match $db {
            $crate::store::Db::Pg(pool) => {
                let mut pooled = pool.get().map_err($crate::store::StoreError::from)?;
                let $conn: &mut diesel::PgConnection = &mut pooled;
                $body
            }
            $crate::store::Db::Sqlite(pool) => {
                let mut pooled = pool.get().map_err($crate::store::StoreError::from)?;
                let $conn: &mut diesel::SqliteConnection = &mut pooled;
                $body
            }
        }
    };
}

impl Db {
    /// Connects (once directly, so a failure carries the driver's message), builds the
    /// pool and returns it. Does not migrate.
    pub fn connect(url: &DbUrl, pool_size: u32) -> Result<Db, StoreError> {
        match url {
            DbUrl::Postgres(u) => {
                PgConnection::establish(u).map_err(|e| StoreError::Connect(e.to_string()))?;
                // No `SELECT 1` round trip on every checkout (r2d2's default): a connection
                // that broke is found by its failing query, dropped by the pool
                // (`has_broken`), and the caller sees the outage as usual.
                let pool = Pool::builder()
                    .max_size(pool_size.max(2))
                    // No connections opened ahead in r2d2's background threads: a one-shot
                    // command (`keys create`) that exited while one of them was in the TLS
                    // handshake crashed in OpenSSL's exit-time cleanup (SIGSEGV, ~1 in 10
                    // runs). Connections are opened on demand and then kept.
                    .min_idle(Some(0))
                    .test_on_check_out(false)
                    .connection_timeout(Duration::from_secs(2))
                    .build_unchecked(ConnectionManager::<PgConnection>::new(u.clone()));
                Ok(Db::Pg(pool))
            }
            DbUrl::Sqlite(path) => {
                if let Some(dir) = path.parent() {
                    if !dir.as_os_str().is_empty() {
                        std::fs::create_dir_all(dir)
                            .map_err(|e| StoreError::Connect(format!("cannot create {}: {e}", dir.display())))?;
                    }
                }
                let p = sqlite_path_str(path)?;
                SqliteConnection::establish(&p).map_err(|e| StoreError::Connect(e.to_string()))?;
                let pool = Pool::builder()
                    .max_size(pool_size.clamp(2, 8))
                    .connection_timeout(Duration::from_secs(10))
                    .connection_customizer(Box::new(SqlitePragmas))
                    .build_unchecked(ConnectionManager::<SqliteConnection>::new(p));
                Ok(Db::Sqlite(pool))
            }
        }
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            Db::Pg(_) => "postgres",
            Db::Sqlite(_) => "sqlite",
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Db::Pg(_))
    }

    /// Applies pending migrations; returns the names of those applied.
    pub fn migrate(&self) -> Result<Vec<String>, StoreError> {
        self.migrate_with_progress(&mut |_, _, _| {})
    }

    /// [`Db::migrate`], one migration at a time (each in its own transaction, as diesel's
    /// `run_pending_migrations` does): `on_step(done, total, Some(name))` before each,
    /// `on_step(total, total, None)` at the end.
    pub fn migrate_with_progress(
        &self,
        on_step: &mut dyn FnMut(usize, usize, Option<&str>),
    ) -> Result<Vec<String>, StoreError> {
        match self {
            Db::Pg(pool) => run_migrations_stepwise(&mut pool.get()?, PG_MIGRATIONS, on_step),
            Db::Sqlite(pool) => run_migrations_stepwise(&mut pool.get()?, SQLITE_MIGRATIONS, on_step),
        }
    }

    /// A cheap round trip, used by `/readyz` and the outage probe.
    pub fn ping(&self) -> Result<(), StoreError> {
        db_run!(self, |conn| {
            diesel::sql_query("SELECT 1").execute(conn)?;
            Ok(())
        })
    }
}

fn run_migrations_stepwise<B: diesel::backend::Backend>(
    conn: &mut impl MigrationHarness<B>,
    source: EmbeddedMigrations,
    on_step: &mut dyn FnMut(usize, usize, Option<&str>),
) -> Result<Vec<String>, StoreError> {
    let pending = conn.pending_migrations(source).map_err(|e| StoreError::Migration(e.to_string()))?;
    let total = pending.len();
    let mut applied = Vec::with_capacity(total);
    for (done, m) in pending.iter().enumerate() {
        on_step(done, total, Some(&m.name().to_string()));
        let version = conn.run_migration(m.as_ref()).map_err(|e| StoreError::Migration(e.to_string()))?;
        applied.push(version.to_string());
    }
    on_step(total, total, None);
    Ok(applied)
}

fn sqlite_path_str(path: &Path) -> Result<String, StoreError> {
    path.to_str()
        .map(|s| s.to_string())
        .ok_or_else(|| StoreError::Connect(format!("path is not UTF-8: {}", path.display())))
}

/// A transaction that will write. On SQLite it starts `IMMEDIATE` (takes the write lock
/// first): a deferred transaction that reads and then writes fails at once with "database
/// is locked" when another connection committed in between (its snapshot is stale, and
/// SQLite's busy timeout does not apply), so background jobs racing the log writer lost
/// runs. On Postgres it is an ordinary transaction.
pub trait WriteTransaction: Connection {
    fn write_transaction<T, E, F>(&mut self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Self) -> Result<T, E>,
        E: From<diesel::result::Error>;
}

impl WriteTransaction for PgConnection {
    fn write_transaction<T, E, F>(&mut self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Self) -> Result<T, E>,
        E: From<diesel::result::Error>,
    {
        self.transaction(f)
    }
}

impl WriteTransaction for SqliteConnection {
    fn write_transaction<T, E, F>(&mut self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Self) -> Result<T, E>,
        E: From<diesel::result::Error>,
    {
        self.immediate_transaction(f)
    }
}

/// Now, as stored: UTC without zone (both backends' `TIMESTAMP`).
pub fn now() -> chrono::NaiveDateTime {
    chrono::Utc::now().naive_utc()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_choose_the_backend_by_scheme() {
        assert!(matches!(DbUrl::parse("postgres://u@h/db"), Ok(DbUrl::Postgres(_))));
        assert!(matches!(DbUrl::parse("postgresql://u@h/db"), Ok(DbUrl::Postgres(_))));
        assert_eq!(DbUrl::parse("sqlite://data/x.db").ok(), Some(DbUrl::Sqlite("data/x.db".into())));
        assert_eq!(DbUrl::parse("./x.db").ok(), Some(DbUrl::Sqlite("./x.db".into())));
        assert!(matches!(DbUrl::parse("mysql://h/db"), Err(StoreError::UnknownScheme(s)) if s == "mysql"));
    }

    #[test]
    fn both_backends_have_the_same_migration_folders() {
        let names = |dir: &str| {
            let mut v: Vec<String> = std::fs::read_dir(dir)
                .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            v.sort();
            v
        };
        let pg = names(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"));
        let lite = names(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"));
        assert!(!pg.is_empty());
        assert_eq!(pg, lite);
        for name in &pg {
            for backend in ["postgres", "sqlite"] {
                for file in ["up.sql", "down.sql"] {
                    let p = format!("{}/migrations/{backend}/{name}/{file}", env!("CARGO_MANIFEST_DIR"));
                    assert!(Path::new(&p).is_file(), "missing {p}");
                }
            }
        }
    }
}
