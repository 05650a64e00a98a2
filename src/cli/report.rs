//! `strategist report`: make the weekly uplift report of a week into files
//! (`report weekly`), optionally storing it for the API, and list the stored reports
//! (`report list`).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;

use crate::config::{Settings, SettingsArgs};
use crate::report::{data, model, render, Format, Week};

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Write the weekly uplift report of one ISO week into files (one per format).
    Weekly {
        /// ISO week, e.g. 2026-W48 [default: the last closed week].
        #[arg(long)]
        week: Option<String>,
        /// Only this experiment [default: every experiment that ran that week].
        #[arg(long)]
        experiment: Option<String>,
        /// Formats to write; repeat or separate with commas.
        #[arg(long, value_enum, value_delimiter = ',', default_value = "html")]
        format: Vec<Format>,
        /// Folder to write into (created if missing).
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Also store the report (every format) in the database, as the scheduled job
        /// does, so `GET /v1/reports` serves it (not with --experiment).
        #[arg(long)]
        store: bool,
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// List the stored weekly reports.
    List {
        #[command(flatten)]
        settings: SettingsArgs,
    },
}

pub fn run(cmd: ReportCommand) -> anyhow::Result<()> {
    match cmd {
        ReportCommand::Weekly { week, experiment, format, out, store, settings } => {
            let settings = Settings::load(&settings)?;
            crate::telemetry::init_logging(settings.log_json);
            if store && experiment.is_some() {
                anyhow::bail!("--store keeps whole-week reports only; drop --experiment");
            }
            let db = crate::startup::open_store(&settings)?;
            let now = crate::store::now();
            let week = match week {
                Some(w) => Week::parse(&w)?,
                None => Week::last_closed(now),
            };
            let bar = crate::cli::progress::Progress::spinner(&format!("report {week}"));
            if experiment.is_none() {
                bar.set_length(crate::store::queries::list_experiments(&db)?.len() as u64);
            }
            let report = model::build_weekly(&db, week, experiment.as_deref(), now, |key| {
                bar.set_message(key.to_string());
                bar.inc(1);
            })?;
            bar.finish();
            std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
            let stem = match &experiment {
                Some(k) => format!("strategist-report-{week}-{k}"),
                None => format!("strategist-report-{week}"),
            };
            let mut formats: Vec<Format> = Vec::new();
            for f in format {
                if !formats.contains(&f) {
                    formats.push(f);
                }
            }
            for f in &formats {
                let path = out.join(format!("{stem}.{}", f.as_str()));
                let text = render::render(&report, *f)?;
                std::fs::write(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
                println!("{} ({} bytes, {} experiment(s))", path.display(), text.len(), report.experiments.len());
            }
            if store {
                let mut contents = Vec::new();
                for f in Format::ALL {
                    contents.push((f.as_str(), render::render(&report, f)?));
                }
                data::store_reports(&db, &week.to_string(), &contents, now)?;
                println!("stored {week} (html, md, csv, json)");
            }
            Ok(())
        }
        ReportCommand::List { settings } => {
            let settings = Settings::load(&settings)?;
            crate::telemetry::init_logging(settings.log_json);
            let db = crate::startup::open_store(&settings)?;
            println!("{:<10} {:<6} {:>10} CREATED", "WEEK", "FORMAT", "BYTES");
            for r in data::list_reports(&db)? {
                println!("{:<10} {:<6} {:>10} {}", r.week, r.format, r.bytes, r.created_at.format("%Y-%m-%d %H:%M:%S"));
            }
            Ok(())
        }
    }
}
