//! The `strategist` command line: serve, migrate, experiments, keys, demo.

pub mod demo;
pub mod migrate;
pub mod progress;
pub mod report;
pub mod simulate;
pub mod stream;

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};

use crate::config::{Settings, SettingsArgs};
use crate::experiment::admin;
use crate::experiment::files::load_definitions;
use crate::keys::{generate_key, hash_key, Scope};
use crate::store::models::NewApiKey;
use crate::store::queries::{self, UpdateOutcome};
use crate::store::{now, Db};

#[derive(Debug, Parser)]
#[command(name = "strategist", version, about = "Contextual-bandit experimentation for e-commerce marketing")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API, learn and refresh policies.
    Serve(SettingsArgs),
    /// Apply pending database migrations and exit.
    Migrate(SettingsArgs),
    /// Validate, apply or list experiment definitions.
    Experiments {
        #[command(subcommand)]
        command: ExperimentsCommand,
    },
    /// Create, list or revoke API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Run the whole platform on the embedded store with the example experiments and
    /// simulated storefront traffic.
    Demo(demo::DemoArgs),
    /// Statistics engine utilities.
    Stats {
        #[command(subcommand)]
        command: StatsCommand,
    },
    /// Off-policy evaluation of a target policy on logged bandit feedback.
    Ope(crate::ope::cli::OpeArgs),
    /// Trustworthiness simulations of the analyzer (aa, power, drift, srm), or a bandit stream replay (stream).
    Simulate(simulate::SimulateArgs),
    /// Run the analyzer once now (fold the new log, analyse, act) and print what it did.
    Analyze(SettingsArgs),
    /// The weekly uplift report: write a week's report (HTML, Markdown, CSV, JSON) or list
    /// the stored ones.
    Report {
        #[command(subcommand)]
        command: report::ReportCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum StatsCommand {
    /// Evaluate a file of reference cases (format of stats_cases.json) and print the results as JSON.
    Eval { file: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum ExperimentsCommand {
    /// Check definition files without touching the store.
    Validate {
        /// A .toml file or a folder of them.
        #[arg(default_value = "experiments")]
        path: PathBuf,
    },
    /// Create or update the experiments in the store from definition files.
    Apply {
        #[arg(default_value = "experiments")]
        path: PathBuf,
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// List the experiments in the store.
    List {
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Print the latest analysis of an experiment as JSON (or the one in force at `--at`).
    Results {
        key: String,
        /// An RFC 3339 time, e.g. 2026-11-29T10:00:00Z.
        #[arg(long)]
        at: Option<String>,
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Print the audit log of an experiment as JSON lines.
    Decisions {
        key: String,
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Promote an arm: to all traffic (the experiment concludes), or beside a holdout on control.
    Promote {
        key: String,
        #[arg(long)]
        arm: String,
        /// Share kept on control, in [0, 1) [default: the experiment's `analysis.holdout`].
        #[arg(long)]
        holdout: Option<f64>,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Pause a running experiment (every unit gets the default arm, unlogged).
    Pause(ChangeArgs),
    /// Resume a paused experiment.
    Resume(ChangeArgs),
    /// Stop an experiment for good (control is served).
    Stop(ChangeArgs),
    /// Undo the last promotion, or go back to the previous version's arms and policy.
    Rollback(ChangeArgs),
}

/// A manual lifecycle change: which experiment, and why (for the audit log).
#[derive(Debug, clap::Args)]
pub struct ChangeArgs {
    pub key: String,
    #[arg(long, default_value = "")]
    pub reason: String,
    #[command(flatten)]
    pub settings: SettingsArgs,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it (it is shown only once).
    Create {
        #[arg(long, value_enum)]
        scope: Scope,
        #[arg(long, default_value = "")]
        name: String,
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// List keys (prefixes only).
    List {
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Revoke the key with this prefix (as shown by `keys list`).
    Revoke {
        prefix: String,
        #[command(flatten)]
        settings: SettingsArgs,
    },
}

pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let settings = Settings::load(&args)?;
            crate::telemetry::init_logging(settings.log_json);
            serve(settings)
        }
        Command::Migrate(args) => {
            let settings = Settings::load(&args)?;
            crate::telemetry::init_logging(settings.log_json);
            migrate::run(&settings)
        }
        Command::Experiments { command } => experiments(command),
        Command::Keys { command } => keys(command),
        Command::Demo(args) => demo::run(args),
        Command::Stats { command: StatsCommand::Eval { file } } => {
            let out = crate::stats::eval_file(&file)?;
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
        Command::Ope(args) => crate::ope::cli::run(&args),
        Command::Simulate(args) => simulate::run(&args),
        Command::Report { command } => report::run(command),
        Command::Analyze(args) => {
            let settings = Settings::load(&args)?;
            crate::telemetry::init_logging(settings.log_json);
            let db = crate::startup::open_store(&settings)?;
            let report = crate::analysis::job::run_once(&db, crate::store::now(), settings.analyzer_margin())?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
    }
}

fn serve(settings: Settings) -> anyhow::Result<()> {
    actix_web::rt::System::new().block_on(async move {
        let app = crate::startup::Application::build(&settings)?;
        tracing::info!(bind = %settings.bind, port = app.port(), backend = app.state.db.backend_name(), "serving");
        app.run_until_stopped().await?;
        Ok(())
    })
}

fn store(args: &SettingsArgs) -> anyhow::Result<Db> {
    let settings = Settings::load(args)?;
    crate::startup::open_store(&settings)
}

/// Creates or updates every definition at `path`; returns one line per experiment.
pub fn apply_definitions(db: &Db, path: &std::path::Path, actor: &str) -> anyhow::Result<Vec<String>> {
    let defs = match load_definitions(path) {
        Ok(d) => d,
        Err(problems) => {
            let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
            bail!("invalid experiment definitions:\n  {}", text.join("\n  "));
        }
    };
    let mut lines = Vec::new();
    for (file, def) in defs {
        let line = match queries::get_experiment(db, &def.key) {
            Err(crate::store::StoreError::NotFound) => {
                let e = admin::create(db, &def, actor).with_context(|| format!("{}", file.display()))?;
                format!("{}: created `{}` ({})", file.display(), def.key, e.row.status)
            }
            Err(e) => return Err(e.into()),
            Ok(_) => {
                let (e, outcome) = admin::update(db, &def, actor).with_context(|| format!("{}", file.display()))?;
                let what = match outcome {
                    UpdateOutcome::Unchanged => "unchanged".to_string(),
                    UpdateOutcome::UpdatedInPlace => "updated".to_string(),
                    UpdateOutcome::NewVersion(v) => format!("new version {v}"),
                };
                format!("{}: `{}` {what} ({})", file.display(), def.key, e.row.status)
            }
        };
        lines.push(line);
    }
    Ok(lines)
}

fn experiments(cmd: ExperimentsCommand) -> anyhow::Result<()> {
    match cmd {
        ExperimentsCommand::Validate { path } => match load_definitions(&path) {
            Ok(defs) => {
                for (file, def) in defs {
                    println!(
                        "{}: ok ({}, {} arms, policy {})",
                        file.display(),
                        def.key,
                        def.arms.len(),
                        def.policy.kind()
                    );
                }
                Ok(())
            }
            Err(problems) => {
                for p in &problems {
                    eprintln!("{p}");
                }
                bail!("{} problem(s) found", problems.len())
            }
        },
        ExperimentsCommand::Apply { path, settings } => {
            let db = store(&settings)?;
            for line in apply_definitions(&db, &path, "cli")? {
                println!("{line}");
            }
            Ok(())
        }
        ExperimentsCommand::List { settings } => {
            let db = store(&settings)?;
            println!("{:<28} {:<10} {:>7} {:<18} {:>5}", "KEY", "STATUS", "VERSION", "POLICY", "ARMS");
            for e in queries::list_experiments(&db)? {
                println!(
                    "{:<28} {:<10} {:>7} {:<18} {:>5}",
                    e.row.key,
                    e.row.status,
                    e.row.current_version,
                    e.definition.policy.kind(),
                    e.definition.arms.len()
                );
            }
            Ok(())
        }
        ExperimentsCommand::Results { key, at, settings } => {
            let db = store(&settings)?;
            let e = queries::get_experiment(&db, &key).with_context(|| format!("experiment `{key}`"))?;
            let at = at
                .map(|t| chrono::DateTime::parse_from_rfc3339(&t).map(|t| t.naive_utc()))
                .transpose()
                .context("--at must be an RFC 3339 time such as 2026-11-29T10:00:00Z")?;
            match crate::store::analysis::latest_analysis(&db, e.row.id, None, at)? {
                Some(row) => println!("{}", row.result),
                None => bail!("no analysis of `{key}` yet (the analyzer runs every analyzer_interval; `strategist analyze` runs it now)"),
            }
            Ok(())
        }
        ExperimentsCommand::Decisions { key, settings } => {
            let db = store(&settings)?;
            let e = queries::get_experiment(&db, &key).with_context(|| format!("experiment `{key}`"))?;
            for d in queries::list_decisions(&db, e.row.id)? {
                let details: serde_json::Value = serde_json::from_str(&d.details).unwrap_or(serde_json::Value::Null);
                let line = serde_json::json!({"id": d.id, "at": d.created_at, "action": d.action, "actor": d.actor,
                    "reason": d.reason, "details": details});
                println!("{line}");
            }
            Ok(())
        }
        ExperimentsCommand::Promote { key, arm, holdout, change } => {
            let db = store(&change.settings)?;
            let holdout = match holdout {
                Some(h) => h,
                None => queries::get_experiment(&db, &key)?.definition.analysis.holdout,
            };
            let e = admin::promote(&db, &key, &arm, holdout, "cli", &change.reason, serde_json::Value::Null)?;
            println!("{}: {} (promoted `{arm}`, version {})", e.row.key, e.row.status, e.row.current_version);
            Ok(())
        }
        ExperimentsCommand::Pause(c) => lifecycle(c, admin::Action::Pause),
        ExperimentsCommand::Resume(c) => lifecycle(c, admin::Action::Resume),
        ExperimentsCommand::Stop(c) => lifecycle(c, admin::Action::Stop),
        ExperimentsCommand::Rollback(c) => lifecycle(c, admin::Action::Rollback),
    }
}

fn lifecycle(c: ChangeArgs, action: admin::Action) -> anyhow::Result<()> {
    let db = store(&c.settings)?;
    let e = admin::transition(&db, &c.key, action, "cli", &c.reason, None)?;
    println!("{}: {} (version {})", e.row.key, e.row.status, e.row.current_version);
    Ok(())
}

/// Creates a key in the store and returns it in clear (the only time it is shown).
pub fn create_key(db: &Db, scope: Scope, name: &str) -> anyhow::Result<String> {
    let (key, prefix) = generate_key();
    queries::insert_api_key(
        db,
        NewApiKey {
            key_hash: hash_key(&key),
            prefix,
            scope: scope.as_str().into(),
            name: name.into(),
            created_at: now(),
        },
    )?;
    Ok(key)
}

fn keys(cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Create { scope, name, settings } => {
            let db = store(&settings)?;
            println!("{}", create_key(&db, scope, &name)?);
            Ok(())
        }
        KeysCommand::List { settings } => {
            let db = store(&settings)?;
            println!("{:<14} {:<8} {:<20} {:<20} REVOKED", "PREFIX", "SCOPE", "NAME", "CREATED");
            for k in queries::list_api_keys(&db)? {
                println!(
                    "{:<14} {:<8} {:<20} {:<20} {}",
                    k.prefix,
                    k.scope,
                    k.name,
                    k.created_at.format("%Y-%m-%d %H:%M:%S"),
                    k.revoked_at.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default()
                );
            }
            Ok(())
        }
        KeysCommand::Revoke { prefix, settings } => {
            let db = store(&settings)?;
            match queries::revoke_api_key(&db, &prefix)? {
                0 => bail!("no active key with prefix `{prefix}`"),
                n => {
                    println!("revoked {n} key(s)");
                    Ok(())
                }
            }
        }
    }
}
