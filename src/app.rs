//! Shared state of one serving process: the store, the log writer, the live registry
//! (hot-swapped), the API-key cache, metrics, and the refresher loop that keeps them in
//! step with the store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::experiment::registry::{LiveExperiment, Registry, ScoringSetup};
use crate::keys::Scope;
use crate::store::writer::LogWriter;
use crate::store::{queries, Db, StoreError};
use crate::telemetry::Metrics;

#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub id: i64,
    pub prefix: String,
    pub scope: Scope,
    pub revoked: bool,
}

/// (experiment id, version, unit hash).
pub type StickyKey = (i64, i32, String);
/// Entries of the in-memory sticky cache (~200 bytes each, so ~40 MB at most); when full it
/// is emptied and refills with the units that come back. A miss costs nothing extra: the
/// claim goes to the log writer, which reads the stored arm back.
const STICKY_CACHE_MAX: usize = 200_000;

pub struct AppState {
    pub db: Db,
    pub writer: LogWriter,
    pub registry: ArcSwap<Registry>,
    pub metrics: Arc<Metrics>,
    pub unit_secret: Vec<u8>,
    pub db_up: Arc<AtomicBool>,
    pub max_body_bytes: usize,
    /// Device and micro-batcher bounds the registry loads `neural_pg` networks with.
    pub scoring: ScoringSetup,
    keys: RwLock<HashMap<String, KeyInfo>>,
    /// Stored sticky assignments already read: a stored row never changes, so a hit is
    /// always what the store holds. Bounded by clearing when full.
    sticky: RwLock<HashMap<StickyKey, (String, f64)>>,
    stamp: RwLock<Option<queries::Stamp>>,
    /// Held for a whole registry refresh: two refreshes that overlapped (the background
    /// refresher and a request that just changed an experiment) could otherwise store the
    /// older registry last, and it would be served until the next refresh.
    refreshing: std::sync::Mutex<()>,
}

impl AppState {
    pub fn new(
        db: Db,
        writer: LogWriter,
        metrics: Arc<Metrics>,
        unit_secret: Vec<u8>,
        db_up: Arc<AtomicBool>,
        max_body_bytes: usize,
    ) -> AppState {
        let scoring = ScoringSetup { metrics: metrics.scoring.clone(), ..ScoringSetup::default() };
        AppState {
            db,
            writer,
            registry: ArcSwap::from_pointee(Registry::default()),
            metrics,
            unit_secret,
            db_up,
            max_body_bytes,
            scoring,
            keys: RwLock::new(HashMap::new()),
            sticky: RwLock::new(HashMap::new()),
            stamp: RwLock::new(None),
            refreshing: std::sync::Mutex::new(()),
        }
    }

    /// Scores `neural_pg` policies with `setup` (the CPU and default bounds otherwise).
    pub fn with_scoring(mut self, setup: ScoringSetup) -> AppState {
        self.scoring = setup;
        self
    }

    pub fn db_up(&self) -> bool {
        self.db_up.load(Ordering::Relaxed)
    }

    /// Reloads the registry when the store's fingerprint changed; returns whether it did.
    /// An experiment whose snapshot cannot be read keeps its previous live version.
    pub fn refresh_registry(&self) -> Result<bool, StoreError> {
        let _one_at_a_time = self.refreshing.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let stamp = queries::registry_stamp(&self.db)?;
        if self.stamp.read().map(|s| *s == Some(stamp)).unwrap_or(false) {
            return Ok(false);
        }
        let rows = queries::load_live(&self.db)?;
        let old = self.registry.load();
        let mut live = Vec::with_capacity(rows.len());
        for (stored, snap) in rows {
            let previous = old.by_id(snap.experiment_id).map(|p| &**p);
            match LiveExperiment::load(stored, &snap, &self.scoring, previous) {
                Ok(e) => live.push(e),
                Err(msg) => {
                    tracing::error!(error = %msg, "snapshot not loaded");
                    if let Some(prev) = old.by_id(snap.experiment_id) {
                        live.push((**prev).clone());
                    }
                }
            }
        }
        for e in &live {
            self.metrics.policy_version.with_label_values(&[&e.key]).set(e.policy_version);
        }
        self.registry.store(Arc::new(Registry::new(live)));
        if let Ok(mut s) = self.stamp.write() {
            *s = Some(stamp);
        }
        Ok(true)
    }

    /// Reloads every API key (revocations take effect within one refresh interval).
    pub fn refresh_keys(&self) -> Result<(), StoreError> {
        let rows = queries::list_api_keys(&self.db)?;
        let mut map = HashMap::with_capacity(rows.len());
        for r in rows {
            if let Some(scope) = Scope::parse(&r.scope) {
                map.insert(r.key_hash, KeyInfo { id: r.id, prefix: r.prefix, scope, revoked: r.revoked_at.is_some() });
            }
        }
        if let Ok(mut k) = self.keys.write() {
            *k = map;
        }
        Ok(())
    }

    pub fn sticky_cached(&self, key: &StickyKey) -> Option<(String, f64)> {
        self.sticky.read().ok().and_then(|m| m.get(key).cloned())
    }

    pub fn sticky_remember(&self, key: StickyKey, arm: (String, f64)) {
        if let Ok(mut m) = self.sticky.write() {
            if m.len() >= STICKY_CACHE_MAX {
                m.clear();
            }
            m.insert(key, arm);
        }
    }

    /// The cached key for this hash, without touching the store.
    pub fn cached_key(&self, key_hash: &str) -> Option<KeyInfo> {
        self.keys.read().ok().and_then(|m| m.get(key_hash).cloned())
    }

    /// Looks a key hash up in the cache, then in the store (so a key created a moment ago
    /// by another process works at once).
    pub fn lookup_key(&self, key_hash: &str) -> Result<Option<KeyInfo>, StoreError> {
        if let Some(k) = self.cached_key(key_hash) {
            return Ok(Some(k));
        }
        let Some(row) = queries::find_api_key(&self.db, key_hash)? else { return Ok(None) };
        let Some(scope) = Scope::parse(&row.scope) else { return Ok(None) };
        let info = KeyInfo { id: row.id, prefix: row.prefix, scope, revoked: row.revoked_at.is_some() };
        if let Ok(mut m) = self.keys.write() {
            m.insert(row.key_hash, info.clone());
        }
        Ok(Some(info))
    }

    /// Forces the next refresh to reload (after a change made through this process).
    pub fn invalidate(&self) {
        if let Ok(mut s) = self.stamp.write() {
            *s = None;
        }
    }

    /// One pass of the refresher: probe the store, reload registry and keys.
    pub fn refresh_all(&self) {
        match self.db.ping() {
            Ok(()) => {
                self.db_up.store(true, Ordering::Relaxed);
                self.metrics.db_up.set(1);
                if let Err(e) = self.refresh_registry() {
                    tracing::warn!(error = %e, "registry refresh failed");
                }
                if let Err(e) = self.refresh_keys() {
                    tracing::warn!(error = %e, "key refresh failed");
                }
            }
            Err(e) => {
                if self.db_up.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "database unreachable; serving default arms unlogged");
                }
                self.metrics.db_up.set(0);
            }
        }
    }
}

/// Runs `refresh_all` every `every` until `stop` is set.
pub fn spawn_refresher(state: Arc<AppState>, every: Duration, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("refresher".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                sleep_unless_stopped(every, &stop);
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                state.refresh_all();
            }
        })
        .unwrap_or_else(|e| panic!("cannot start the refresher thread: {e}"))
}

/// Sleeps in short steps so a stop request is seen within ~50 ms.
pub fn sleep_unless_stopped(total: Duration, stop: &AtomicBool) {
    let step = Duration::from_millis(50);
    let mut left = total;
    while !left.is_zero() && !stop.load(Ordering::Relaxed) {
        let d = left.min(step);
        std::thread::sleep(d);
        left = left.saturating_sub(d);
    }
}
