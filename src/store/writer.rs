//! The group-commit log writer. Exposures and rewards from every request go through one
//! channel into one writer thread, which commits whatever is queued (up to `max_batch`)
//! in one transaction as soon as the previous commit returns, and only then answers each
//! caller. An exposure is therefore acknowledged only once it is durable, and a busy
//! server gets large batches while an idle one commits each request alone, at once.
//!
//! If a batch fails for a reason other than the database being away, it is retried one
//! item at a time, so one bad row cannot take the others with it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use tokio::sync::oneshot;

use super::models::{ExposureRow, RewardRow};
use super::schema::{exposures, reward_keys, rewards};
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

#[derive(Debug)]
pub enum WriteItem {
    Exposure(ExposureRow),
    Reward(RewardWrite),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
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
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig { max_batch: 1024, batch_wait: Duration::ZERO, queue_capacity: 65_536 }
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
        let depth = Arc::new(AtomicUsize::new(0));
        let d = depth.clone();
        let up = db_up.clone();
        let handle = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || run(db, cfg, rx, d, metrics, up))
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

fn run(
    db: Db,
    cfg: WriterConfig,
    rx: Receiver<Job>,
    depth: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    db_up: Arc<AtomicBool>,
) {
    let max_batch = cfg.max_batch.max(1);
    while let Ok(first) = rx.recv() {
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
        depth.fetch_sub(batch.len(), Ordering::Relaxed);
        metrics.writer_batch_size.observe(batch.len() as f64);
        metrics.writer_queue_depth.set(depth.load(Ordering::Relaxed) as i64);
        let started = Instant::now();
        let items: Vec<&WriteItem> = batch.iter().map(|j| &j.item).collect();
        let results = match commit(&db, &items) {
            Ok(outcomes) => {
                db_up.store(true, Ordering::Relaxed);
                outcomes.into_iter().map(Ok).collect::<Vec<_>>()
            }
            Err(e) if e.is_unavailable() => {
                db_up.store(false, Ordering::Relaxed);
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
    tracing::info!("log writer drained and stopped");
}

/// Commits a batch in one transaction and returns one outcome per item, in order.
fn commit(db: &Db, items: &[&WriteItem]) -> Result<Vec<WriteOutcome>, StoreError> {
    let exposures_rows: Vec<ExposureRow> = items
        .iter()
        .filter_map(|i| match i {
            WriteItem::Exposure(e) => Some(e.clone()),
            _ => None,
        })
        .collect();
    // Idempotency: the first occurrence of a key in the batch is a candidate; later ones
    // in the same batch are duplicates of it.
    let mut seen = HashSet::new();
    let candidate: Vec<bool> = items
        .iter()
        .map(|i| match i {
            WriteItem::Reward(r) => seen.insert(r.idempotency_key.clone()),
            _ => false,
        })
        .collect();
    let keys: Vec<String> = items
        .iter()
        .zip(&candidate)
        .filter_map(|(i, c)| match i {
            WriteItem::Reward(r) if *c => Some(r.idempotency_key.clone()),
            _ => None,
        })
        .collect();
    let ts = now();
    let new_keys: HashSet<String> = crate::db_run!(db, |conn| {
        conn.transaction::<_, StoreError, _>(|conn| {
            for chunk in exposures_rows.chunks(ROWS_PER_STATEMENT) {
                diesel::insert_into(exposures::table).values(chunk).execute(conn)?;
            }
            let mut fresh = HashSet::new();
            for chunk in keys.chunks(ROWS_PER_STATEMENT) {
                let rows: Vec<_> = chunk
                    .iter()
                    .map(|k| (reward_keys::idempotency_key.eq(k.as_str()), reward_keys::created_at.eq(ts)))
                    .collect();
                let inserted: Vec<String> = diesel::insert_into(reward_keys::table)
                    .values(rows)
                    .on_conflict_do_nothing()
                    .returning(reward_keys::idempotency_key)
                    .get_results(conn)?;
                fresh.extend(inserted);
            }
            let reward_rows: Vec<RewardRow> = items
                .iter()
                .zip(&candidate)
                .filter_map(|(i, c)| match i {
                    WriteItem::Reward(r) if *c && fresh.contains(&r.idempotency_key) => Some(r.rows.iter().cloned()),
                    _ => None,
                })
                .flatten()
                .collect();
            for chunk in reward_rows.chunks(ROWS_PER_STATEMENT) {
                diesel::insert_into(rewards::table).values(chunk).execute(conn)?;
            }
            Ok(fresh)
        })
    })?;
    Ok(items
        .iter()
        .zip(&candidate)
        .map(|(i, c)| match i {
            WriteItem::Exposure(_) => WriteOutcome::Stored,
            WriteItem::Reward(r) if *c && new_keys.contains(&r.idempotency_key) => WriteOutcome::Stored,
            WriteItem::Reward(_) => WriteOutcome::Duplicate,
        })
        .collect())
}
