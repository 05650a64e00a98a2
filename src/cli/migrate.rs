//! `strategist migrate`: applies the pending migrations of the configured store one at a
//! time, showing which one runs and how many are left on a terminal (a migration that
//! rewrites a large table can take minutes), then creates the upcoming log partitions.
//! In a pipe it prints only its one-line summary.

use crate::cli::progress::Progress;
use crate::config::Settings;
use crate::store::{partitions, Db, DbUrl};

pub fn run(settings: &Settings) -> anyhow::Result<()> {
    let url = DbUrl::parse(&settings.database_url)?;
    let db = Db::connect(&url, settings.pool_size)?;
    let bar = Progress::spinner("migrate");
    bar.set_message("reading applied migrations");
    let applied = db.migrate_with_progress(&mut |done, total, running| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        match running {
            Some(name) => bar.set_message(format!("applying {name}")),
            None => bar.set_message(""),
        }
    })?;
    bar.set_message("creating upcoming partitions");
    partitions::ensure_partitions(&db, chrono::Utc::now().date_naive(), 2)?;
    bar.finish();
    for m in &applied {
        tracing::info!(migration = %m, "migration applied");
    }
    println!("migrations applied on {} ({} new)", db.backend_name(), applied.len());
    Ok(())
}
