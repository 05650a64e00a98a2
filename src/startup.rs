//! Builds a running process: store, migrations, log writer, registry, background loops
//! and the HTTP server on its own listener (port 0 works: `port()` says which one).

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;

use crate::api;
use crate::app::{spawn_refresher, AppState};
use crate::config::Settings;
use crate::keys::generate_secret;
use crate::store::writer::{LogWriter, WriterConfig};
use crate::store::{partitions, queries, Db, DbUrl};
use crate::telemetry::Metrics;

/// Opens the store named by the settings and applies pending migrations.
pub fn open_store(settings: &Settings) -> anyhow::Result<Db> {
    let url = DbUrl::parse(&settings.database_url)?;
    let db = Db::connect(&url, settings.pool_size)?;
    let applied = db.migrate()?;
    for m in applied {
        tracing::info!(migration = %m, "migration applied");
    }
    partitions::ensure_partitions(&db, chrono::Utc::now().date_naive(), 2)?;
    Ok(db)
}

pub struct Application {
    port: u16,
    server: Server,
    pub state: web::Data<AppState>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Application {
    pub fn build(settings: &Settings) -> anyhow::Result<Application> {
        let listener =
            TcpListener::bind(&settings.bind).with_context(|| format!("cannot listen on {}", settings.bind))?;
        let db = open_store(settings)?;
        Self::build_with(settings, db, listener)
    }

    /// Builds on an already opened store and listener (tests bind port 0).
    pub fn build_with(settings: &Settings, db: Db, listener: TcpListener) -> anyhow::Result<Application> {
        let port = listener.local_addr()?.port();
        let secret = if settings.unit_id_secret.is_empty() {
            queries::setting_or_init(&db, "unit_id_secret", generate_secret)?
        } else {
            settings.unit_id_secret.clone()
        };
        // The scoring device is resolved once and passed down (candle's habit): a bad or
        // unavailable `--device` stops the start with the reason.
        let device = settings
            .device
            .parse::<crate::scoring::DeviceSpec>()
            .and_then(|d| d.resolve())
            .map_err(|e| anyhow::anyhow!("--device {}: {e}", settings.device))?;
        tracing::info!(
            device = %crate::scoring::device_name(&device),
            cpu_threads = crate::scoring::cpu_threads(),
            "scoring device"
        );
        let metrics = Arc::new(Metrics::new());
        let db_up = Arc::new(AtomicBool::new(true));
        let (writer, writer_thread) = LogWriter::start(
            db.clone(),
            WriterConfig {
                max_batch: settings.writer_max_batch,
                batch_wait: settings.batch_wait(),
                threads: match (settings.writer_threads, &db) {
                    (0, crate::store::Db::Pg(_)) => 2,
                    (0, crate::store::Db::Sqlite(_)) => 1,
                    (n, _) => n,
                },
                ..Default::default()
            },
            metrics.clone(),
            db_up.clone(),
        );
        let scoring = crate::experiment::registry::ScoringSetup {
            device: device.clone(),
            batch: settings.scoring_batch(),
            metrics: metrics.scoring.clone(),
        };
        let state = web::Data::new(
            AppState::new(db.clone(), writer, metrics.clone(), secret.into_bytes(), db_up, settings.max_body_bytes)
                .with_scoring(scoring),
        );
        state.refresh_registry()?;
        state.refresh_keys()?;
        metrics.db_up.set(1);
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = vec![writer_thread];
        threads.push(spawn_refresher(state.clone().into_inner(), settings.refresh_every(), stop.clone()));
        if settings.run_learner {
            threads.push(crate::learner::spawn(
                db.clone(),
                metrics.clone(),
                settings.learner_every(),
                device.clone(),
                stop.clone(),
            ));
        }
        if let Some(schedule) = settings.report_schedule() {
            threads.push(crate::report::job::spawn(db.clone(), schedule, stop.clone()));
        }
        if settings.run_analyzer {
            threads.push(crate::analysis::job::spawn(
                db,
                metrics,
                settings.analyzer_every(),
                settings.analyzer_margin(),
                stop.clone(),
            ));
        }
        let data = state.clone();
        let max_body = settings.max_body_bytes;
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(
                    web::JsonConfig::default()
                        .limit(max_body)
                        .error_handler(|err, _req| api::error::json_error(&err).into()),
                )
                .app_data(web::PayloadConfig::default().limit(max_body))
                .app_data(web::PathConfig::default().error_handler(|err, _req| {
                    api::error::ApiError::not_found("route_not_found", format!("bad path: {err}")).into()
                }))
                .wrap(from_fn(api::observe))
                .configure(api::config)
        })
        .listen(listener)?
        .shutdown_timeout(30);
        if settings.workers > 0 {
            server = server.workers(settings.workers);
        }
        let server = server.run();
        Ok(Application { port, server, state, stop, threads })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// A flag that stops the background loops when set (`run_until_stopped` sets it).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Serves until the server is stopped (SIGINT/SIGTERM: graceful, in-flight requests
    /// finish and their exposures commit), then stops the background loops.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let Application { server, stop, threads, state, .. } = self;
        let result = server.await;
        stop.store(true, Ordering::Relaxed);
        drop(state);
        for t in threads {
            // The writer thread outlives this (other handles may remain); only wait for
            // the loops that watch `stop`.
            if t.thread().name() != Some("log-writer") {
                let _ = t.join();
            }
        }
        result
    }
}
