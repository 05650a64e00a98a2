//! The group-commit log writer. Exposures and rewards from every request go through one
//! channel into one writer thread, which commits whatever is queued (up to `max_batch`)
//! in one transaction as soon as the previous commit returns, and only then answers each
//! caller. An exposure is therefore acknowledged only once it is durable, and a busy
//! server gets large batches while an idle one commits each request alone, at once.
//!
//! If a batch fails for a reason other than the database being away, it is retried one
//! item at a time, so one bad row cannot take the others with it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use diesel::prelude::*;
use tokio::sync::oneshot;

use super::models::{ExposureRow, RewardRow, StickyRow};
use super::schema::{exposures, reward_keys, rewards, sticky_assignments};
use super::{now, Db, StoreError};
use crate::telemetry::Metrics;

/// Rows per INSERT statement: SQLite allows 32,766 bound values, Postgres 65,535.
const ROWS_PER_STATEMENT: usize = 1000;

/// One reward request: its rows (one per attributed exposure) under one idempotency key.
#[derive(Debug, Clone)]
pub struct RewardWrite {
    pub idempotency_key: String,
    pub rows: Vec<RewardRow>,
}

/// One decision to log. For a sticky experiment the row's draw is also the unit's claim on
/// an arm for the version: if the unit already holds one, the writer logs (and the caller
/// answers) the stored arm with its original propensity instead, as long as that arm is in
/// `eligible` (`None`: every arm). Claim and exposure commit in the same transaction.
#[derive(Debug, Clone)]
pub struct ExposureWrite {
    pub row: ExposureRow,
    pub sticky: Option<StickyClaim>,
}

#[derive(Debug, Clone, Default)]
pub struct StickyClaim {
    pub eligible: Option<Vec<String>>,
}

/// Exposures are most of the traffic: boxing them to shrink the (rarer) reward variant
/// would add an allocation per decision.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum WriteItem {
    Exposure(ExposureWrite),
    Reward(RewardWrite),
}

#[derive(Debug, Clone, PartialEq)]
pub enum WriteOutcome {
    /// The exposure is stored with this arm and propensity; `sticky` is the unit's stored
    /// assignment when the item carried a claim.
    Logged { arm: String, propensity: f64, sticky: Option<(String, f64)> },
    /// A reward is stored.
    Stored,
    /// A reward whose idempotency key was already stored: nothing new was written.
    Duplicate,
}

struct Job {
    item: WriteItem,
    reply: oneshot::Sender<Result<WriteOutcome, StoreError>>,
}

#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub max_batch: usize,
    /// Extra time to wait for more items after the first (0 = commit at once).
    pub batch_wait: Duration,
    pub queue_capacity: usize,
    /// Writer threads, each committing on its own connection: while one waits for its
    /// commit to be flushed, the next takes the queued items (1 = strictly one at a time).
    pub threads: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig { max_batch: 1024, batch_wait: Duration::ZERO, queue_capacity: 65_536, threads: 1 }
    }
}

/// Handle to the writer thread; cheap to clone. The thread ends when every handle is dropped,
/// after committing what is queued.
#[derive(Clone)]
pub struct LogWriter {
    tx: SyncSender<Job>,
    depth: Arc<AtomicUsize>,
    db_up: Arc<AtomicBool>,
}

impl LogWriter {
    /// Starts the writer thread. `db_up` is cleared when a commit finds the database away
    /// and set again when one succeeds.
    pub fn start(
        db: Db,
        cfg: WriterConfig,
        metrics: Arc<Metrics>,
        db_up: Arc<AtomicBool>,
    ) -> (LogWriter, std::thread::JoinHandle<()>) {
        let (tx, rx) = sync_channel::<Job>(cfg.queue_capacity.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let depth = Arc::new(AtomicUsize::new(0));
        let health = Arc::new(Health { db_up: db_up.clone(), metrics, down_since: Mutex::new(None) });
        let workers: Vec<_> = (0..cfg.threads.max(1))
            .map(|i| {
                let (db, cfg, rx, d, health) = (db.clone(), cfg.clone(), rx.clone(), depth.clone(), health.clone());
                std::thread::Builder::new()
                    .name(format!("log-writer-{i}"))
                    .spawn(move || run(db, cfg, rx, d, health))
                    .unwrap_or_else(|e| panic!("cannot start a log writer thread: {e}"))
            })
            .collect();
        // One handle for the caller: it ends when every writer thread has drained and ended.
        let handle = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || {
                for w in workers {
                    if w.join().is_err() {
                        tracing::error!("a log writer thread panicked");
                    }
                }
                tracing::info!("log writer drained and stopped");
            })
            .unwrap_or_else(|e| panic!("cannot start the log writer thread: {e}"));
        (LogWriter { tx, depth, db_up }, handle)
    }

    pub fn queue_depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    pub fn db_up(&self) -> bool {
        self.db_up.load(Ordering::Relaxed)
    }

    /// Queues an item and waits until its batch is committed (or failed).
    pub async fn write(&self, item: WriteItem) -> Result<WriteOutcome, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.depth.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(Job { item, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.depth.fetch_sub(1, Ordering::Relaxed);
                return Err(StoreError::Unavailable("the log writer's queue is full".into()));
            }
            Err(TrySendError::Disconnected(_)) => {
                self.depth.fetch_sub(1, Ordering::Relaxed);
                return Err(StoreError::Unavailable("the log writer has stopped".into()));
            }
        }
        rx.await.unwrap_or_else(|_| Err(StoreError::Unavailable("the log writer dropped the request".into())))
    }
}

/// Takes the next batch: waits for a first item, then whatever else is queued (and, with
/// a `batch_wait`, what arrives within it), up to `max_batch`. `None` once every sender is
/// gone and the queue is empty. The receiver is locked while a batch is gathered, so
/// writer threads take turns and each item goes to exactly one of them.
fn next_batch(rx: &Mutex<Receiver<Job>>, cfg: &WriterConfig) -> Option<Vec<Job>> {
    let rx = rx.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let first = rx.recv().ok()?;
    let max_batch = cfg.max_batch.max(1);
    let mut batch = vec![first];
    let deadline = Instant::now() + cfg.batch_wait;
    while batch.len() < max_batch {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) if cfg.batch_wait.is_zero() => break,
            Err(_) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match rx.recv_timeout(left) {
                    Ok(job) => batch.push(job),
                    Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        }
    }
    Some(batch)
}

/// The store's health as the writer threads see it (`db_up` and the `db_up` gauge). With
/// several threads, a commit that began before an outage can return after another thread's
/// commit found the database away; such a late success does not mark the store up again —
/// only a commit that began after the last failure does.
struct Health {
    db_up: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    down_since: Mutex<Option<Instant>>,
}

impl Health {
    fn failed(&self) {
        let mut down = self.down_since.lock().unwrap_or_else(|p| p.into_inner());
        *down = Some(Instant::now());
        self.db_up.store(false, Ordering::Relaxed);
        self.metrics.db_up.set(0);
    }

    fn succeeded(&self, started: Instant) {
        let mut down = self.down_since.lock().unwrap_or_else(|p| p.into_inner());
        if down.is_some_and(|since| started < since) {
            return;
        }
        *down = None;
        self.db_up.store(true, Ordering::Relaxed);
        self.metrics.db_up.set(1);
    }
}

fn run(db: Db, cfg: WriterConfig, rx: Arc<Mutex<Receiver<Job>>>, depth: Arc<AtomicUsize>, health: Arc<Health>) {
    let metrics = health.metrics.clone();
    while let Some(batch) = next_batch(&rx, &cfg) {
        depth.fetch_sub(batch.len(), Ordering::Relaxed);
        metrics.writer_batch_size.observe(batch.len() as f64);
        metrics.writer_queue_depth.set(depth.load(Ordering::Relaxed) as i64);
        let started = Instant::now();
        let items: Vec<&WriteItem> = batch.iter().map(|j| &j.item).collect();
        let results = match commit(&db, &items) {
            Ok(outcomes) => {
                health.succeeded(started);
                outcomes.into_iter().map(Ok).collect::<Vec<_>>()
            }
            Err(e) if e.is_unavailable() => {
                health.failed();
                tracing::warn!(error = %e, items = batch.len(), "log batch not committed: database unavailable");
                batch.iter().map(|_| Err(StoreError::Unavailable(e.to_string()))).collect()
            }
            Err(e) => {
                tracing::warn!(error = %e, items = batch.len(), "log batch failed; committing its items one by one");
                items.iter().map(|item| commit(&db, std::slice::from_ref(item)).map(|mut o| o.remove(0))).collect()
            }
        };
        metrics.writer_commit_seconds.observe(started.elapsed().as_secs_f64());
        for (job, result) in batch.into_iter().zip(results) {
            if let Err(e) = &result {
                if !e.is_unavailable() {
                    tracing::error!(error = %e, "log item not stored");
                }
            }
            // The caller may have gone away (client disconnected); the row is stored anyway.
            let _ = job.reply.send(result);
        }
    }
}

type StickyKey<'a> = (i64, i32, &'a str);

/// What differs between the backends in a commit: exposure rows and sticky claims go as
/// one prepared `INSERT … SELECT FROM unnest(arrays)` each on Postgres (src/store/pg_batch.rs)
/// and by multi-row INSERTs on SQLite, and a SQLite write transaction takes the
/// write lock at BEGIN (IMMEDIATE), so it waits in the busy handler instead of failing
/// with SQLITE_BUSY when it would have to upgrade a read lock held beside another writer.
trait WriterConnection: diesel::Connection {
    fn insert_exposures(&mut self, rows: &[&ExposureRow]) -> QueryResult<()>;
    /// Inserts the sticky rows whose unit holds no arm yet; returns which were inserted.
    fn claim_sticky(&mut self, rows: &[&StickyRow]) -> QueryResult<HashSet<(i64, i32, String)>>;
    /// Inserts the idempotency keys not stored yet; returns which were inserted.
    fn claim_keys(&mut self, keys: &[&str], at: NaiveDateTime) -> QueryResult<HashSet<String>>;
    fn write_transaction<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, StoreError>) -> Result<T, StoreError>;
}

impl WriterConnection for diesel::PgConnection {
    fn claim_sticky(&mut self, rows: &[&StickyRow]) -> QueryResult<HashSet<(i64, i32, String)>> {
        if rows.is_empty() {
            return Ok(HashSet::new());
        }
        let won: Vec<(i64, i32, String)> = super::pg_batch::ClaimSticky::new(rows).get_results(self)?;
        Ok(won.into_iter().collect())
    }

    fn claim_keys(&mut self, keys: &[&str], at: NaiveDateTime) -> QueryResult<HashSet<String>> {
        let mut fresh = HashSet::new();
        for chunk in keys.chunks(ROWS_PER_STATEMENT) {
            let rows: Vec<_> =
                chunk.iter().map(|k| (reward_keys::idempotency_key.eq(*k), reward_keys::created_at.eq(at))).collect();
            let inserted: Vec<String> = diesel::insert_into(reward_keys::table)
                .values(rows)
                .on_conflict_do_nothing()
                .returning(reward_keys::idempotency_key)
                .get_results(self)?;
            fresh.extend(inserted);
        }
        Ok(fresh)
    }

    fn write_transaction<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.transaction(f)
    }

    fn insert_exposures(&mut self, rows: &[&ExposureRow]) -> QueryResult<()> {
        if !rows.is_empty() {
            super::pg_batch::InsertExposures::new(rows).execute(self)?;
        }
        Ok(())
    }
}

// SQLite runs a multi-row INSERT … RETURNING row by row and reports a row skipped by
// ON CONFLICT DO NOTHING as `NotFound`, so claims go one row at a time (in-process, cheap)
// and the affected-row count says whether a row was new.
impl WriterConnection for diesel::SqliteConnection {
    fn claim_sticky(&mut self, rows: &[&StickyRow]) -> QueryResult<HashSet<(i64, i32, String)>> {
        let mut won = HashSet::new();
        for row in rows {
            if diesel::insert_into(sticky_assignments::table).values(*row).on_conflict_do_nothing().execute(self)? == 1
            {
                won.insert((row.experiment_id, row.version, row.unit_hash.clone()));
            }
        }
        Ok(won)
    }

    fn claim_keys(&mut self, keys: &[&str], at: NaiveDateTime) -> QueryResult<HashSet<String>> {
        let mut fresh = HashSet::new();
        for k in keys {
            let row = (reward_keys::idempotency_key.eq(*k), reward_keys::created_at.eq(at));
            if diesel::insert_into(reward_keys::table).values(row).on_conflict_do_nothing().execute(self)? == 1 {
                fresh.insert(k.to_string());
            }
        }
        Ok(fresh)
    }

    fn write_transaction<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.immediate_transaction(f)
    }

    fn insert_exposures(&mut self, rows: &[&ExposureRow]) -> QueryResult<()> {
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            diesel::insert_into(exposures::table).values(chunk.to_vec()).execute(self)?;
        }
        Ok(())
    }
}

/// Commits a batch in one transaction and returns one outcome per item, in order.
fn commit(db: &Db, items: &[&WriteItem]) -> Result<Vec<WriteOutcome>, StoreError> {
    // Sticky claims: the first claim of a unit in the batch is the candidate row. Claims
    // (and idempotency keys, below) are inserted in key order, so two writer threads'
    // transactions wait on each other's unique-index entries in the same order and
    // cannot deadlock.
    let mut claims: BTreeMap<StickyKey, StickyRow> = BTreeMap::new();
    for item in items {
        if let WriteItem::Exposure(ExposureWrite { row, sticky: Some(_) }) = item {
            claims.entry((row.experiment_id, row.version, row.unit_hash.as_str())).or_insert_with(|| StickyRow {
                experiment_id: row.experiment_id,
                version: row.version,
                unit_hash: row.unit_hash.clone(),
                arm: row.arm.clone(),
                propensity: row.propensity,
                created_at: row.created_at,
            });
        }
    }
    let candidates: Vec<&StickyRow> = claims.values().collect();
    // Idempotency: the first occurrence of a key in the batch is a candidate; later ones
    // in the same batch are duplicates of it.
    let mut seen = HashSet::new();
    let candidate: Vec<bool> = items
        .iter()
        .map(|i| match i {
            WriteItem::Reward(r) => seen.insert(r.idempotency_key.as_str()),
            _ => false,
        })
        .collect();
    let mut keys: Vec<&str> = items
        .iter()
        .zip(&candidate)
        .filter_map(|(i, c)| match i {
            WriteItem::Reward(r) if *c => Some(r.idempotency_key.as_str()),
            _ => None,
        })
        .collect();
    keys.sort_unstable();
    let ts = now();
    let (stored, new_keys, exposures_out) = crate::db_run!(db, |conn| {
        conn.write_transaction(|conn| {
            // 1. Claims: insert the new ones; read back the units that already held an arm.
            let mut stored: HashMap<(i64, i32, String), (String, f64)> = HashMap::new();
            let mut lost: HashMap<(i64, i32), Vec<&str>> = HashMap::new();
            let won = conn.claim_sticky(&candidates)?;
            for c in &candidates {
                let k = (c.experiment_id, c.version, c.unit_hash.clone());
                if won.contains(&k) {
                    stored.insert(k, (c.arm.clone(), c.propensity));
                } else {
                    lost.entry((c.experiment_id, c.version)).or_default().push(c.unit_hash.as_str());
                }
            }
            for ((experiment_id, version), units) in &lost {
                for chunk in units.chunks(ROWS_PER_STATEMENT) {
                    let rows: Vec<(String, String, f64)> = sticky_assignments::table
                        .filter(sticky_assignments::experiment_id.eq(experiment_id))
                        .filter(sticky_assignments::version.eq(version))
                        .filter(sticky_assignments::unit_hash.eq_any(chunk))
                        .select((
                            sticky_assignments::unit_hash,
                            sticky_assignments::arm,
                            sticky_assignments::propensity,
                        ))
                        .load(conn)?;
                    for (unit_hash, arm, propensity) in rows {
                        stored.insert((*experiment_id, *version, unit_hash), (arm, propensity));
                    }
                }
            }
            // 2. Exposures, with the stored arm where a claim was lost to an earlier one.
            let mut patched: Vec<Option<ExposureRow>> = Vec::with_capacity(items.len());
            for item in items {
                patched.push(match item {
                    WriteItem::Exposure(ExposureWrite { row, sticky: Some(claim) }) => {
                        let held = stored.get(&(row.experiment_id, row.version, row.unit_hash.clone()));
                        match held {
                            Some((arm, p))
                                if (*arm != row.arm || *p != row.propensity)
                                    && claim.eligible.as_ref().is_none_or(|e| e.contains(arm)) =>
                            {
                                Some(ExposureRow { arm: arm.clone(), propensity: *p, ..row.clone() })
                            }
                            _ => None,
                        }
                    }
                    _ => None,
                });
            }
            let rows: Vec<&ExposureRow> = items
                .iter()
                .zip(&patched)
                .filter_map(|(i, p)| match (i, p) {
                    (_, Some(p)) => Some(p),
                    (WriteItem::Exposure(e), None) => Some(&e.row),
                    _ => None,
                })
                .collect();
            conn.insert_exposures(&rows)?;
            let exposures_out: Vec<Option<(String, f64)>> =
                patched.iter().map(|p| p.as_ref().map(|r| (r.arm.clone(), r.propensity))).collect();
            // 3. Rewards: claim each idempotency key; rows only for the keys that are new.
            let fresh = conn.claim_keys(&keys, ts)?;
            let reward_rows: Vec<&RewardRow> = items
                .iter()
                .zip(&candidate)
                .filter_map(|(i, c)| match i {
                    WriteItem::Reward(r) if *c && fresh.contains(&r.idempotency_key) => Some(r.rows.iter()),
                    _ => None,
                })
                .flatten()
                .collect();
            for chunk in reward_rows.chunks(ROWS_PER_STATEMENT) {
                diesel::insert_into(rewards::table).values(chunk.to_vec()).execute(conn)?;
            }
            Ok((stored, fresh, exposures_out))
        })
    })?;
    Ok(items
        .iter()
        .zip(&candidate)
        .zip(exposures_out)
        .map(|((i, c), patched)| match i {
            WriteItem::Exposure(e) => {
                let (arm, propensity) = patched.unwrap_or_else(|| (e.row.arm.clone(), e.row.propensity));
                let sticky = e
                    .sticky
                    .as_ref()
                    .and_then(|_| stored.get(&(e.row.experiment_id, e.row.version, e.row.unit_hash.clone())).cloned());
                WriteOutcome::Logged { arm, propensity, sticky }
            }
            WriteItem::Reward(r) if *c && new_keys.contains(&r.idempotency_key) => WriteOutcome::Stored,
            WriteItem::Reward(_) => WriteOutcome::Duplicate,
        })
        .collect())
}
