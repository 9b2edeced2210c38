//! The `leadflow` command line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use leadflow::config::{self, LoadedConfig};
use leadflow::reminders::{self, ReminderError, ReminderState, cli as rcli};
use leadflow::review::{self, ReviewError};
use leadflow::run::{RunOptions, RunReport, run_pipeline};
use leadflow::show::{Lookup, show};

/// leadflow: lead files in, one golden master per person out.
#[derive(Parser)]
#[command(name = "leadflow", version, about)]
struct Cli {
    /// Log format: `auto` is text on a terminal and JSON otherwise.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto, env = "LEADFLOW_LOG_FORMAT")]
    log_format: LogFormat,
    /// The entity type to read or change (`show`, `review`, `master`,
    /// `crm-link`, ...), e.g. `channel_partner`; default: leads.
    #[arg(long, global = true)]
    entity: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Auto,
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipelines of CONFIG once (all, or one with --pipeline).
    Run {
        config: PathBuf,
        #[arg(long)]
        pipeline: Option<String>,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run as a service: pipelines on their schedules, HTTP API, /metrics.
    /// SIGTERM/SIGINT stop gracefully, SIGHUP reloads CONFIG.
    Daemon { config: PathBuf },
    /// Check CONFIG and list every problem; runs nothing.
    Validate { config: PathBuf },
    /// Validate CONFIG, then test each source's connection (files: list the
    /// drop; CRMs: token and one page). Writes nothing. Exit 0 when every
    /// source answered, 1 when one failed, 2 when CONFIG is invalid.
    Check {
        config: PathBuf,
        #[arg(long)]
        pipeline: Option<String>,
        /// Print the results as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON Schema of config files (for editors).
    Schema,
    /// Show a master by phone, e-mail or id.
    Show {
        config: PathBuf,
        #[arg(long, group = "what")]
        phone: Option<String>,
        #[arg(long, group = "what")]
        email: Option<String>,
        #[arg(long, group = "what")]
        id: Option<String>,
        /// Pipeline whose default phone region reads --phone.
        #[arg(long)]
        pipeline: Option<String>,
    },
    /// Contact reminders: list them, mark one contacted, snooze one, or tick.
    Reminders {
        #[command(subcommand)]
        action: RemindersCommand,
    },
    /// The review queue: pairs of masters probabilistic linkage was unsure
    /// about. List, show, approve (merge) or reject (never again).
    Review {
        #[command(subcommand)]
        action: ReviewCommand,
    },
    /// Masters by hand: merge two, split records out of one, undo a merge.
    Master {
        #[command(subcommand)]
        action: MasterCommand,
    },
    /// CRM links: record that leadflow created a CRM record for a master.
    CrmLink {
        #[command(subcommand)]
        action: CrmLinkCommand,
    },
    /// Deliver pending outbox events to the `events.outputs` of CONFIG.
    Deliver {
        config: PathBuf,
        /// Keep retrying failed deliveries that fall due within this time, e.g. 30s.
        #[arg(long, default_value = "0s", value_parser = leadflow::reminders::cli::parse_duration)]
        wait: std::time::Duration,
        /// Print the counts as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete data files the warehouse's tables no longer read: files that
    /// upserts rewrote, and files of runs that crashed before their commit.
    /// Exit 0 when every table was vacuumed, 1 on an error, 2 when CONFIG
    /// is invalid.
    Vacuum {
        config: PathBuf,
        /// Keep files removed less than this long ago (e.g. 24h); default:
        /// each table's `delta.deletedFileRetentionDuration`, 7 days unless
        /// set. Older table versions stay readable for this long.
        #[arg(long, value_parser = leadflow::reminders::cli::parse_duration)]
        retain: Option<std::time::Duration>,
        /// Accept --retain shorter than a table's own retention. Only while
        /// no run writes (daemon stopped): a commit in progress could lose
        /// its new files.
        #[arg(long, requires = "retain")]
        skip_retention_check: bool,
        /// List what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Linkage quality: link a file and score it against a truth file
    /// (`row,person_id`): pairwise precision, recall, F1.
    Eval {
        #[command(subcommand)]
        what: EvalCommand,
    },
    /// Train a linkage model without labels (u from random pairs, m by EM
    /// over blocked pairs) on a warehouse's records or on a CSV; writes JSON.
    Train {
        /// Pipeline config: train on its warehouse's `records` with the
        /// pipeline's `dedupe.linkage` settings.
        #[arg(required_unless_present = "csv")]
        config: Option<PathBuf>,
        #[arg(long)]
        pipeline: Option<String>,
        /// Train on this CSV instead, with --linkage settings.
        #[arg(long, requires = "linkage")]
        csv: Option<PathBuf>,
        /// Linkage YAML (comparisons, blocking, thresholds) for --csv.
        #[arg(long)]
        linkage: Option<PathBuf>,
        /// Records to train on at most.
        #[arg(long, default_value_t = 200_000)]
        sample: usize,
        /// Where to write the model JSON.
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a CSV of generated messy leads with planted duplicates (and a truth file beside it).
    Generate {
        /// Output CSV path.
        out: PathBuf,
        #[arg(long, default_value_t = 10_000)]
        rows: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Share of rows that repeat an earlier person.
        #[arg(long, default_value_t = 0.3)]
        duplicate_rate: f64,
        /// People of an earlier file generated with the same seed (its
        /// `people` count): repeats are then later appearances of them, and
        /// new people get ids from there on.
        #[arg(long, default_value_t = 0)]
        existing_people: u64,
        /// The hard profile: 18 % of pairs of people planted as families,
        /// colleagues and namesakes (one city), a fifth of rows name and
        /// phone only, a tenth of repeats with a new number.
        #[arg(long)]
        hard: bool,
    },
}

#[derive(Subcommand)]
enum EvalCommand {
    /// Run lead CSVs through the real pipeline into a fresh warehouse (in
    /// --dir) and score each file's records; a second file links against
    /// the first's masters.
    Leads {
        /// CSV and its truth file; repeat for a second file.
        #[arg(long = "file", num_args = 2, value_names = ["CSV", "TRUTH"], required = true)]
        files: Vec<PathBuf>,
        /// `exact` or `probabilistic`.
        #[arg(long, default_value = "probabilistic")]
        mode: String,
        /// A model JSON from `leadflow train` (default: the built-in one).
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long, default_value = "/tmp/leadflow-eval")]
        dir: PathBuf,
        /// Also write each file's `row,master_id,person_id` to DUMP.<n>.csv.
        #[arg(long)]
        dump: Option<PathBuf>,
    },
    /// Link any CSV with a linkage YAML (e.g. bench/febrl.yaml) and score it.
    /// Without `model:` in the YAML a model is trained on the file first.
    Table {
        csv: PathBuf,
        #[arg(long)]
        truth: PathBuf,
        #[arg(long)]
        linkage: PathBuf,
        /// Link across this column's values (two data sets) instead of
        /// deduplicating.
        #[arg(long)]
        link_column: Option<String>,
        /// Leave out comparisons and blocking rules reading these columns.
        #[arg(long)]
        drop: Vec<String>,
        /// Override the YAML's link threshold.
        #[arg(long)]
        link_threshold: Option<f64>,
    },
}

#[derive(Subcommand)]
enum ReviewCommand {
    /// List reviews, open first.
    List {
        config: PathBuf,
        #[arg(long, value_enum, default_value_t = ReviewStatusArg::Open)]
        status: ReviewStatusArg,
        #[arg(long)]
        json: bool,
    },
    /// Show a review: both golden records, their records, score and explanation.
    Show {
        config: PathBuf,
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Approve: merge the two masters (the older one survives, or --keep).
    Approve {
        config: PathBuf,
        id: String,
        /// The master that keeps its id.
        #[arg(long)]
        keep: Option<String>,
        /// Why, kept with the decision.
        #[arg(long)]
        note: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Reject: not the same person; the pair is never linked or offered again.
    Reject {
        config: PathBuf,
        id: String,
        #[arg(long)]
        note: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ReviewStatusArg {
    Open,
    Approved,
    Rejected,
    All,
}

#[derive(Subcommand)]
enum MasterCommand {
    /// Merge master B into A (or the other way: the older survives unless --keep).
    Merge {
        config: PathBuf,
        a: String,
        b: String,
        #[arg(long)]
        keep: Option<String>,
        #[arg(long)]
        note: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Move records out of MASTER to a new master (id from the first of them).
    Split {
        config: PathBuf,
        master: String,
        /// SOURCE:RECORD_ID (repeat the flag).
        #[arg(long = "record", required = true, value_parser = leadflow::review::cli::parse_record)]
        records: Vec<(String, String)>,
        #[arg(long)]
        note: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Undo a merge event (its id is printed by merge/approve and kept in `merges`).
    Unmerge {
        config: PathBuf,
        event_id: String,
        #[arg(long)]
        note: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum CrmLinkCommand {
    /// Record an outbound link: CRM record --crm-id (of the CRM that --source
    /// reads) was created by leadflow for --master. A run that reads it
    /// links it to that master instead of importing a new person.
    Add {
        config: PathBuf,
        #[arg(long)]
        pipeline: String,
        /// The pipeline's CRM source (names the provider and object).
        #[arg(long)]
        source: String,
        #[arg(long)]
        crm_id: String,
        #[arg(long)]
        master: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum RemindersCommand {
    /// List reminders, oldest first.
    List {
        config: PathBuf,
        #[arg(long)]
        pipeline: Option<String>,
        /// Only these states (repeat the flag); default open and snoozed.
        #[arg(long, value_enum)]
        state: Vec<StateArg>,
        /// Every state.
        #[arg(long, conflicts_with = "state")]
        all: bool,
        #[arg(long, default_value_t = 200)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Mark a reminder contacted (event `reminder.contacted`).
    Contacted {
        config: PathBuf,
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Snooze a reminder: no overdue events until the time is up.
    Snooze {
        config: PathBuf,
        id: String,
        #[arg(long)]
        minutes: u32,
        #[arg(long)]
        json: bool,
    },
    /// Emit overdue/expired events for missed deadlines, then deliver events.
    Tick {
        config: PathBuf,
        /// Keep retrying failed deliveries that fall due within this time.
        #[arg(long, default_value = "0s", value_parser = leadflow::reminders::cli::parse_duration)]
        wait: std::time::Duration,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum StateArg {
    Open,
    Snoozed,
    Contacted,
    Expired,
    Moved,
}

impl From<StateArg> for ReminderState {
    fn from(s: StateArg) -> Self {
        match s {
            StateArg::Open => ReminderState::Open,
            StateArg::Snoozed => ReminderState::Snoozed,
            StateArg::Contacted => ReminderState::Contacted,
            StateArg::Expired => ReminderState::Expired,
            StateArg::Moved => ReminderState::Moved,
        }
    }
}

const EXIT_FAILED: u8 = 1;
const EXIT_CONFIG: u8 = 2;
/// `reminders contacted|snooze`: no such reminder; `crm-link add`: no such master.
const EXIT_NOT_FOUND: u8 = 3;
/// `reminders contacted|snooze`: the reminder is contacted or expired already;
/// `crm-link add`: the CRM record is linked to another master.
const EXIT_CLOSED: u8 = 4;

fn init_logs(format: LogFormat) {
    let filter = leadflow::log_filter("info");
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).with_current_span(true).init();
    } else {
        builder.with_target(false).compact().init();
    }
}

async fn eval_command(what: EvalCommand) -> ExitCode {
    use leadflow::eval;
    match what {
        EvalCommand::Leads {
            files,
            mode,
            model,
            dir,
            dump,
        } => {
            let pairs: Vec<(PathBuf, PathBuf)> =
                files.chunks(2).map(|c| (c[0].clone(), c[1].clone())).collect();
            if let Err(e) = std::fs::create_dir_all(&dir) {
                eprintln!("{}: {e}", dir.display());
                return ExitCode::from(EXIT_FAILED);
            }
            match eval::eval_leads(&pairs, &dir, &mode, model.as_deref(), dump.as_deref()).await {
                Ok(results) => {
                    for r in results {
                        println!(
                            "{} ({} records, {mode}): {:.2}s; {} new masters, {} matched existing, {} merged in run",
                            r.label, r.rows, r.seconds, r.masters_new, r.matched_existing, r.merged_in_batch
                        );
                        println!("  this file: {}", r.scores);
                        if let Some(c) = r.cumulative {
                            println!("  all files so far: {c}");
                        }
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(EXIT_FAILED)
                }
            }
        }
        EvalCommand::Table {
            csv,
            truth,
            linkage,
            link_column,
            drop,
            link_threshold,
        } => {
            let mut config = match eval::read_linkage(&linkage, &drop) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            if let Some(t) = link_threshold {
                config.link_threshold = t;
                config.review_threshold = config.review_threshold.min(t);
            }
            match eval::eval_table(&csv, &truth, config, link_column.as_deref()).await {
                Ok(r) => {
                    if let Some(t) = &r.trained {
                        println!(
                            "trained on the file: {} random pairs for u, EM over {} candidate pairs ({} iterations, match share {:.3})",
                            t.random_pairs, t.candidate_pairs, t.em_iterations, t.match_share
                        );
                    }
                    println!(
                        "{}: {} records, {} candidate pairs ({} blocks over the cap skipped), {} records linked, {} for review, {:.2}s",
                        csv.display(),
                        r.records,
                        r.candidate_pairs,
                        r.skipped_blocks,
                        r.links,
                        r.reviews,
                        r.seconds
                    );
                    println!("  {}", r.scores);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(EXIT_FAILED)
                }
            }
        }
    }
}

async fn train_command(
    config: Option<PathBuf>,
    pipeline: Option<String>,
    csv: Option<PathBuf>,
    linkage: Option<PathBuf>,
    sample: usize,
    out: PathBuf,
) -> ExitCode {
    use leadflow::eval;
    let result = match (csv, linkage, config) {
        (Some(csv), Some(linkage), _) => {
            let cfg = match eval::read_linkage(&linkage, &[]) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            match eval::read_csv(&csv) {
                Ok(b) => {
                    let b = b.slice(0, b.num_rows().min(sample));
                    eval::train_batch(&cfg, &b, None, &[], &format!("trained on {}", csv.display())).await
                }
                Err(e) => Err(e),
            }
        }
        (_, _, Some(config)) => {
            let loaded = match load(&config).await {
                Ok(l) => l,
                Err(code) => return code,
            };
            let Some(p) = loaded
                .config
                .pipelines
                .iter()
                .find(|p| pipeline.as_ref().is_none_or(|n| &p.name == n))
            else {
                eprintln!("no pipeline {}", pipeline.unwrap_or_default());
                return ExitCode::from(EXIT_CONFIG);
            };
            eval::train_warehouse(&loaded, p, sample).await
        }
        _ => {
            eprintln!("train needs CONFIG, or --csv with --linkage");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match result {
        Ok((model, report)) => {
            if let Err(e) = std::fs::write(&out, model.to_json()) {
                eprintln!("{}: {e}", out.display());
                return ExitCode::from(EXIT_FAILED);
            }
            println!(
                "model written to {}: {} records, u from {} random pairs, m by EM over {} candidate pairs ({} iterations) and {} approved review pairs, prior {:.3e}",
                out.display(),
                model.trained_records,
                report.random_pairs,
                report.candidate_pairs,
                report.em_iterations,
                report.labelled_pairs,
                model.prior
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// Load and check a config, SQL stages included; print every problem.
async fn load(path: &std::path::Path) -> Result<LoadedConfig, ExitCode> {
    let fail = |e: config::ConfigError| {
        eprint!("{e}");
        ExitCode::from(EXIT_CONFIG)
    };
    let loaded = config::load(path).map_err(fail)?;
    config::check_sql_stages(&loaded).await.map_err(fail)?;
    Ok(loaded)
}

/// The pipelines to work on: all, or the one `--pipeline` names.
fn select(
    loaded: &LoadedConfig,
    pipeline: Option<&str>,
) -> Result<Vec<leadflow::config::PipelineConfig>, ExitCode> {
    match pipeline {
        Some(name) => match loaded.pipeline(name) {
            Some(p) => Ok(vec![p.clone()]),
            None => {
                eprintln!(
                    "{}: no pipeline named `{name}` (have: {})",
                    loaded.path.display(),
                    loaded
                        .config
                        .pipelines
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                Err(ExitCode::from(EXIT_CONFIG))
            }
        },
        None => Ok(loaded.config.pipelines.clone()),
    }
}

fn main() -> ExitCode {
    leadflow::memory::tune_allocator();
    let cli = Cli::parse();
    ENTITY.set(cli.entity.clone()).expect("set once");
    // Rust ignores SIGPIPE, so `leadflow review list | head` would panic on
    // the closed pipe. The one-shot commands end quietly instead, as Unix
    // tools do; the daemon keeps the default (a peer closing a socket must
    // never end it).
    #[cfg(unix)]
    if !matches!(cli.command, Command::Daemon { .. }) {
        // SAFETY: called before any thread is started; SIG_DFL is a valid handler.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    init_logs(cli.log_format);
    leadflow::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        match cli.command {
            Command::Schema => {
                print!("{}", config::json_schema());
                ExitCode::SUCCESS
            }
            Command::Daemon { config } => ExitCode::from(leadflow::daemon::Daemon::new(config).run().await),
            Command::Validate { config } => match load(&config).await {
                Ok(c) => {
                    println!(
                        "{}: ok ({} pipeline(s): {})",
                        config.display(),
                        c.config.pipelines.len(),
                        c.config
                            .pipelines
                            .iter()
                            .map(|p| p.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            },
            Command::Check {
                config,
                pipeline,
                json,
            } => {
                let loaded = match load(&config).await {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                let selected = match select(&loaded, pipeline.as_deref()) {
                    Ok(s) => s,
                    Err(code) => return code,
                };
                let results = leadflow::check::check_sources(&loaded, &selected).await;
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&results).expect("results serialise")
                    );
                } else {
                    for r in &results {
                        let verdict = if r.ok { "ok" } else { "FAILED" };
                        println!(
                            "{}/{} ({}): {verdict}: {}",
                            r.pipeline, r.source, r.kind, r.detail
                        );
                    }
                }
                if results.iter().all(|r| r.ok) {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(EXIT_FAILED)
                }
            }
            Command::Run {
                config,
                pipeline,
                json,
            } => {
                let loaded = match load(&config).await {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                let selected = match select(&loaded, pipeline.as_deref()) {
                    Ok(s) => s,
                    Err(code) => return code,
                };
                let warehouse = match leadflow::open_warehouse(&loaded).await {
                    Ok(w) => w,
                    Err(e) => {
                        eprintln!("warehouse: {e}");
                        return ExitCode::from(EXIT_FAILED);
                    }
                };
                let opts = RunOptions {
                    trigger: "cli".into(),
                    progress: std::io::stderr().is_terminal() && !json,
                    fault_after_table: std::env::var("LEADFLOW_FAULT_AFTER_TABLE").ok(),
                    run_id: None,
                };
                let mut reports = Vec::new();
                for p in &selected {
                    reports.push(run_pipeline(&loaded, p, &warehouse, &opts).await);
                }
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&reports).expect("report serialises")
                    );
                } else {
                    for r in &reports {
                        print_summary(r, &warehouse.root().display().to_string());
                    }
                }
                // Reminders fall due between runs: a cron'd `run` also ticks
                // them, then delivers every pending event once.
                let after = rcli::tick_and_deliver(&loaded, &warehouse, &selected, Duration::ZERO).await;
                match &after {
                    Ok((t, d)) if !json => {
                        rcli::print_tick(t);
                        rcli::print_delivery(d);
                    }
                    Ok(_) => {}
                    Err(e) => eprintln!("{e}"),
                }
                if reports.iter().all(RunReport::succeeded) && after.is_ok() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(EXIT_FAILED)
                }
            }
            Command::Show {
                config,
                phone,
                email,
                id,
                pipeline,
            } => {
                let (loaded, warehouse) = match open(&config).await {
                    Ok(x) => x,
                    Err(code) => return code,
                };
                let lookup = match (phone, email, id) {
                    (Some(p), _, _) => Lookup::Phone(p),
                    (_, Some(e), _) => Lookup::Email(e),
                    (_, _, Some(i)) => Lookup::Id(i),
                    _ => {
                        eprintln!("say what to show: --phone, --email or --id");
                        return ExitCode::from(EXIT_CONFIG);
                    }
                };
                let p = pipeline
                    .as_deref()
                    .and_then(|n| loaded.pipeline(n))
                    .or(loaded.config.pipelines.first());
                let region = p.and_then(|p| p.defaults.phone_region.clone());
                match show(&warehouse, &lookup, region.as_deref()).await {
                    Ok(Some(text)) => {
                        print!("{text}");
                        ExitCode::SUCCESS
                    }
                    Ok(None) => {
                        eprintln!("no master found");
                        ExitCode::from(EXIT_FAILED)
                    }
                    Err(e) => {
                        eprintln!("{e}");
                        ExitCode::from(EXIT_FAILED)
                    }
                }
            }
            Command::Reminders { action } => reminders_command(action).await,
            Command::Review { action } => review_command(action).await,
            Command::Master { action } => master_command(action).await,
            Command::CrmLink { action } => crm_link_command(action).await,
            Command::Deliver { config, wait, json } => {
                let (loaded, warehouse) = match open(&config).await {
                    Ok(x) => x,
                    Err(code) => return code,
                };
                match rcli::deliver(&loaded, &warehouse, wait).await {
                    Ok(d) => {
                        if json {
                            println!("{}", serde_json::to_string_pretty(&d).expect("report serialises"));
                        } else if d.outputs.is_empty() {
                            println!("no event outputs configured (events.outputs)");
                        } else {
                            rcli::print_delivery(&d);
                        }
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("{e}");
                        ExitCode::from(EXIT_FAILED)
                    }
                }
            }
            Command::Vacuum {
                config,
                retain,
                skip_retention_check,
                dry_run,
                json,
            } => {
                let loaded = match load(&config).await {
                    Ok(l) => l,
                    Err(code) => return code,
                };
                let opts = leadflow_sinks::VacuumOptions {
                    retain,
                    skip_retention_check,
                    dry_run,
                };
                let outcome = match leadflow::open_warehouse(&loaded).await {
                    Ok(wh) => leadflow::vacuum_warehouse(&loaded.config, &wh, opts).await,
                    Err(e) => Err(e),
                };
                match outcome {
                    Ok(tables) => {
                        if json {
                            println!(
                                "{}",
                                serde_json::to_string_pretty(&serde_json::json!({
                                    "dry_run": dry_run,
                                    "tables": tables,
                                }))
                                .expect("outcome serialises")
                            );
                        } else {
                            print_vacuum(&tables, dry_run);
                        }
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("vacuum: {e}");
                        ExitCode::from(EXIT_FAILED)
                    }
                }
            }
            Command::Eval { what } => eval_command(what).await,
            Command::Train {
                config,
                pipeline,
                csv,
                linkage,
                sample,
                out,
            } => train_command(config, pipeline, csv, linkage, sample, out).await,
            Command::Generate {
                out,
                rows,
                seed,
                duplicate_rate,
                existing_people,
                hard,
            } => {
                let opts = leadflow::generate::GenerateOptions {
                    rows,
                    seed,
                    duplicate_rate,
                    id_offset: existing_people,
                    existing_people,
                    hard,
                    ..Default::default()
                };
                match leadflow::generate::generate_csv(&out, &opts) {
                    Ok(s) => {
                        println!(
                            "wrote {} rows ({} people) to {} and truth to {}",
                            s.rows,
                            s.people,
                            out.display(),
                            s.truth_path.display()
                        );
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("{}: {e}", out.display());
                        ExitCode::from(EXIT_FAILED)
                    }
                }
            }
        }
    })
}

/// `--entity`, set once from the command line.
static ENTITY: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// The entity type `--entity` names (`None`: leads).
fn entity() -> Option<&'static str> {
    ENTITY.get().and_then(|e| e.as_deref())
}

/// The survivorship rules of the `--entity` a command works on.
fn rules(loaded: &LoadedConfig) -> &leadflow_transforms::dedupe::SurvivorshipConfig {
    loaded.config.survivorship_for(entity())
}

/// One line per table, then the total.
fn print_vacuum(tables: &[leadflow_sinks::VacuumOutcome], dry_run: bool) {
    let verb = if dry_run { "would delete" } else { "deleted" };
    let mb = |b: u64| b as f64 / 1e6;
    let width = tables.iter().map(|t| t.table.len()).max().unwrap_or(0);
    for t in tables {
        println!(
            "  {:width$}  {verb} {} files, {:.1} MB",
            t.table,
            t.files,
            mb(t.bytes)
        );
    }
    let (files, bytes) = tables.iter().fold((0, 0), |(f, b), t| (f + t.files, b + t.bytes));
    println!("vacuum: {verb} {files} files, {:.1} MB in all", mb(bytes));
}

/// Load a config and open its warehouse.
async fn open(path: &std::path::Path) -> Result<(LoadedConfig, leadflow_sinks::Warehouse), ExitCode> {
    let loaded = load(path).await?;
    let entity = entity();
    if let Some(e) = entity {
        if let Some(problem) = leadflow::entity_problem(e) {
            eprintln!("--entity: {problem}");
            return Err(ExitCode::from(EXIT_CONFIG));
        }
        if !loaded.config.has_entity(e) {
            eprintln!("--entity: no pipeline of {} has `entity: {e}`", path.display());
            return Err(ExitCode::from(EXIT_CONFIG));
        }
    }
    let opened = match leadflow::open_warehouse(&loaded).await {
        Ok(w) => leadflow::warehouse_for(&w, entity).await,
        Err(e) => Err(e),
    };
    match opened {
        Ok(w) => Ok((loaded, w)),
        Err(e) => {
            eprintln!("warehouse: {e}");
            Err(ExitCode::from(EXIT_FAILED))
        }
    }
}

fn reminder_exit(e: &ReminderError) -> ExitCode {
    eprintln!("{e}");
    ExitCode::from(match e {
        ReminderError::NotFound(_) => EXIT_NOT_FOUND,
        ReminderError::AlreadyClosed { .. } => EXIT_CLOSED,
        ReminderError::Invalid(_) => EXIT_CONFIG,
        _ => EXIT_FAILED,
    })
}

fn print_one(r: &reminders::Reminder, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(r).expect("reminder serialises")
        );
    } else {
        rcli::print_list(std::slice::from_ref(r));
    }
}

async fn reminders_command(action: RemindersCommand) -> ExitCode {
    let now = chrono::Utc::now();
    match action {
        RemindersCommand::List {
            config,
            pipeline,
            state,
            all,
            limit,
            json,
        } => {
            let (_, warehouse) = match open(&config).await {
                Ok(x) => x,
                Err(code) => return code,
            };
            let states: Vec<ReminderState> = if all {
                Vec::new()
            } else if state.is_empty() {
                vec![ReminderState::Open, ReminderState::Snoozed]
            } else {
                state.into_iter().map(Into::into).collect()
            };
            match reminders::list(&warehouse, pipeline.as_deref(), &states, limit).await {
                Ok(rows) if json => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&rows).expect("reminders serialise")
                    );
                    ExitCode::SUCCESS
                }
                Ok(rows) => {
                    rcli::print_list(&rows);
                    ExitCode::SUCCESS
                }
                Err(e) => reminder_exit(&e),
            }
        }
        RemindersCommand::Contacted { config, id, json } => {
            let (loaded, warehouse) = match open(&config).await {
                Ok(x) => x,
                Err(code) => return code,
            };
            match reminders::mark_contacted(&warehouse, &id, "cli", now).await {
                Ok(r) => {
                    print_one(&r, json);
                    deliver_quietly(&loaded, &warehouse).await
                }
                Err(e) => reminder_exit(&e),
            }
        }
        RemindersCommand::Snooze {
            config,
            id,
            minutes,
            json,
        } => {
            let (_, warehouse) = match open(&config).await {
                Ok(x) => x,
                Err(code) => return code,
            };
            match reminders::snooze(&warehouse, &id, minutes, now).await {
                Ok(r) => {
                    print_one(&r, json);
                    ExitCode::SUCCESS
                }
                Err(e) => reminder_exit(&e),
            }
        }
        RemindersCommand::Tick { config, wait, json } => {
            let (loaded, warehouse) = match open(&config).await {
                Ok(x) => x,
                Err(code) => return code,
            };
            let pipelines = loaded.config.pipelines.clone();
            match rcli::tick_and_deliver(&loaded, &warehouse, &pipelines, wait).await {
                Ok((t, d)) => {
                    if json {
                        let v = serde_json::json!({"reminders": t, "events": d});
                        println!("{}", serde_json::to_string_pretty(&v).expect("report serialises"));
                    } else {
                        rcli::print_tick(&t);
                        rcli::print_delivery(&d);
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(EXIT_FAILED)
                }
            }
        }
    }
}

fn review_exit(e: &ReviewError) -> ExitCode {
    eprintln!("{e}");
    ExitCode::from(match e {
        ReviewError::NotFound { .. } => EXIT_NOT_FOUND,
        ReviewError::Decided { .. } => EXIT_CLOSED,
        ReviewError::Invalid(_) => EXIT_CONFIG,
        _ => EXIT_FAILED,
    })
}

/// A review or merge command's answer: JSON or text on stdout, then the
/// event it wrote delivered (when it wrote one); or the error's exit code.
async fn review_answer<T: serde::Serialize>(
    answer: Result<T, ReviewError>,
    json: bool,
    print: impl Fn(&T),
    deliver: Option<(&LoadedConfig, &leadflow_sinks::Warehouse)>,
) -> ExitCode {
    match answer {
        Err(e) => review_exit(&e),
        Ok(v) => {
            if json {
                print_json(&v);
            } else {
                print(&v);
            }
            match deliver {
                Some((loaded, warehouse)) => deliver_quietly(loaded, warehouse).await,
                None => ExitCode::SUCCESS,
            }
        }
    }
}

fn print_json<T: serde::Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).expect("output serialises"));
}

async fn review_command(action: ReviewCommand) -> ExitCode {
    let now = chrono::Utc::now();
    match action {
        ReviewCommand::List { config, status, json } => {
            let (_, warehouse) = match open(&config).await {
                Ok(x) => x,
                Err(code) => return code,
            };
            let status = match status {
                ReviewStatusArg::Open => Some("open"),
                ReviewStatusArg::Approved => Some("approved"),
                ReviewStatusArg::Rejected => Some("rejected"),
                ReviewStatusArg::All => None,
            };
            let rows = review::list(&warehouse, status).await;
            review_answer(rows, json, |r| review::cli::print_list(r), None).await
        }
        ReviewCommand::Show { config, id, json } => {
            let (_, warehouse) = match open(&config).await {
                Ok(x) => x,
                Err(code) => return code,
            };
            let detail = review::show(&warehouse, &id).await;
            review_answer(detail, json, review::cli::print_detail, None).await
        }
        ReviewCommand::Approve {
            config,
            id,
            keep,
            note,
            json,
        } => {
            let (loaded, warehouse) = match open(&config).await {
                Ok(x) => x,
                Err(code) => return code,
            };
            let merged = review::approve(
                &warehouse,
                rules(&loaded),
                &id,
                keep.as_deref(),
                note.as_deref(),
                "cli",
                now,
            )
            .await;
            review_answer(
                merged,
                json,
                review::cli::print_merge,
                Some((&loaded, &warehouse)),
            )
            .await
        }
        ReviewCommand::Reject {
            config,
            id,
            note,
            json,
        } => {
            let (_, warehouse) = match open(&config).await {
                Ok(x) => x,
                Err(code) => return code,
            };
            let rejected = review::reject(&warehouse, &id, note.as_deref(), "cli", now).await;
            let print = |r: &review::Review| review::cli::print_list(std::slice::from_ref(r));
            review_answer(rejected, json, print, None).await
        }
    }
}

async fn master_command(action: MasterCommand) -> ExitCode {
    let now = chrono::Utc::now();
    match action {
        MasterCommand::Merge {
            config,
            a,
            b,
            keep,
            note,
            json,
        } => {
            let (loaded, warehouse) = match open(&config).await {
                Ok(x) => x,
                Err(code) => return code,
            };
            let merged = review::merge(
                &warehouse,
                rules(&loaded),
                &a,
                &b,
                keep.as_deref(),
                note.as_deref(),
                "cli",
                now,
            )
            .await;
            review_answer(
                merged,
                json,
                review::cli::print_merge,
                Some((&loaded, &warehouse)),
            )
            .await
        }
        MasterCommand::Split {
            config,
            master,
            records,
            note,
            json,
        } => {
            let (loaded, warehouse) = match open(&config).await {
                Ok(x) => x,
                Err(code) => return code,
            };
            let split = review::split(
                &warehouse,
                rules(&loaded),
                &master,
                &records,
                note.as_deref(),
                "cli",
                now,
            )
            .await;
            review_answer(split, json, review::cli::print_split, Some((&loaded, &warehouse))).await
        }
        MasterCommand::Unmerge {
            config,
            event_id,
            note,
            json,
        } => {
            let (loaded, warehouse) = match open(&config).await {
                Ok(x) => x,
                Err(code) => return code,
            };
            let split =
                review::unmerge(&warehouse, rules(&loaded), &event_id, note.as_deref(), "cli", now).await;
            review_answer(split, json, review::cli::print_split, Some((&loaded, &warehouse))).await
        }
    }
}

async fn crm_link_command(action: CrmLinkCommand) -> ExitCode {
    let CrmLinkCommand::Add {
        config,
        pipeline,
        source,
        crm_id,
        master,
        json,
    } = action;
    let (loaded, warehouse) = match open(&config).await {
        Ok(x) => x,
        Err(code) => return code,
    };
    let p = match select(&loaded, Some(pipeline.as_str())) {
        Ok(mut p) => p.remove(0),
        Err(code) => return code,
    };
    let Some(origin) = leadflow::crm_links::crm_sources(&p, &loaded.base).remove(&source) else {
        eprintln!(
            "{}: pipeline `{pipeline}` has no CRM source named `{source}`",
            loaded.path.display()
        );
        return ExitCode::from(EXIT_CONFIG);
    };
    match leadflow::crm_links::add_outbound(&warehouse, &p, &origin, &source, &crm_id, &master).await {
        Ok(link) if json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&link).expect("link serialises")
            );
            ExitCode::SUCCESS
        }
        Ok(link) => {
            println!("{} -> {} (outbound): {}", link.key, link.master_id, link.outcome);
            ExitCode::SUCCESS
        }
        Err(e @ leadflow::crm_links::CrmLinkError::Invalid(_)) => {
            eprintln!("{e}");
            ExitCode::from(EXIT_NOT_FOUND)
        }
        Err(e @ leadflow::crm_links::CrmLinkError::Conflict { .. }) => {
            eprintln!("{e}");
            ExitCode::from(EXIT_CLOSED)
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// Deliver the event an action just wrote; a failure here is not the
/// action's (the event waits in the outbox).
async fn deliver_quietly(loaded: &LoadedConfig, warehouse: &leadflow_sinks::Warehouse) -> ExitCode {
    if let Err(e) = rcli::deliver(loaded, warehouse, Duration::ZERO).await {
        eprintln!("{e} (the event stays in the outbox)");
    }
    ExitCode::SUCCESS
}

fn print_summary(r: &RunReport, warehouse: &str) {
    println!(
        "pipeline {}  run {}  {}  in {:.2}s",
        r.pipeline,
        r.run_id,
        r.status.to_uppercase(),
        r.duration_seconds
    );
    if let Some(rec) = &r.recovered_run {
        println!("  finished the interrupted commit of run {rec} first");
    }
    println!(
        "  files   {} seen, {} imported, {} unchanged, {} quarantined",
        r.files_seen, r.files_imported, r.files_unchanged, r.files_quarantined
    );
    for f in r.files.iter().filter(|f| f.status == "quarantined") {
        println!(
            "          quarantined {}: {}",
            f.path,
            f.reason.as_deref().unwrap_or("")
        );
    }
    println!(
        "  rows    {} read, {} rejected, {} written",
        r.rows_read, r.rows_rejected, r.records_written
    );
    for (reason, n) in &r.rejected_by_reason {
        println!("          {n:>6} {reason}");
    }
    println!(
        "  people  {} new masters, {} matched existing, {} merged within the run, {} already known, {} conflicts kept apart",
        r.masters_new, r.matched_existing, r.merged_in_batch, r.records_known, r.conflicts
    );
    if r.masters_merged > 0 {
        println!(
            "  merged  {} pair(s) of existing masters a record linked strongly to both (see `merges`)",
            r.masters_merged
        );
    }
    if r.outbound_linked > 0 {
        println!("  crm     {} linked by outbound link", r.outbound_linked);
    }
    if r.records_deleted > 0 {
        println!(
            "  deleted {} record(s) their source deleted, marked with deleted_at",
            r.records_deleted
        );
    }
    if let Some(e) = &r.error {
        println!("  error   {e}");
    }
    println!("  warehouse {warehouse}");
}
