//! `leadflow daemon CONFIG`: pipelines on their schedules, an HTTP API to
//! trigger runs and read them, Prometheus metrics, health probes, graceful
//! shutdown (SIGTERM/SIGINT) and config reload (SIGHUP).
//!
//! Shape: one shared [`AppState`] (the current config behind a lock, the
//! warehouse, metrics, the run registry, a shutdown signal). The HTTP server,
//! the schedule loops and every run are tasks over it; a background loop
//! added later takes an `Arc<AppState>` and selects on
//! [`AppState::shutdown_signal`].

pub mod api;
pub mod config;
pub mod events;
pub mod metrics;
pub mod review;
pub mod runs;
pub mod scheduler;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use leadflow_sinks::Warehouse;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::config::{self as cfg, ConfigError, LoadedConfig, PipelineConfig};
use crate::run::{RunOptions, new_run_id, run_pipeline};
use config::Token;
use metrics::Metrics;
use runs::{Registry, RunView, RunsTable, StartError};
use scheduler::Plan;

/// Exit codes, as the other commands use them.
pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_CONFIG: u8 = 2;

/// Load a config with every check `leadflow validate` makes.
pub async fn load_checked(path: &Path) -> Result<LoadedConfig, ConfigError> {
    let loaded = cfg::load(path)?;
    cfg::check_sql_stages(&loaded).await?;
    Ok(loaded)
}

/// Everything the daemon's tasks share.
pub struct AppState {
    config: RwLock<Arc<LoadedConfig>>,
    pub warehouse: Arc<Warehouse>,
    pub metrics: Metrics,
    runs: Mutex<Registry>,
    run_done: Notify,
    token: Option<Token>,
    shutdown: watch::Sender<bool>,
    next_ticks: Mutex<HashMap<String, DateTime<Utc>>>,
    schedules: Mutex<Vec<JoinHandle<()>>>,
}

// The std locks here are held for map operations only, never across .await.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl AppState {
    pub fn new(loaded: LoadedConfig, warehouse: Warehouse, token: Option<Token>) -> Arc<Self> {
        let (shutdown, _) = watch::channel(false);
        Arc::new(Self {
            config: RwLock::new(Arc::new(loaded)),
            warehouse: Arc::new(warehouse),
            metrics: Metrics::new(),
            runs: Mutex::new(Registry::default()),
            run_done: Notify::new(),
            token,
            shutdown,
            next_ticks: Mutex::new(HashMap::new()),
            schedules: Mutex::new(Vec::new()),
        })
    }

    /// The current config (a snapshot: a reload swaps in a new one).
    pub fn config(&self) -> Arc<LoadedConfig> {
        self.config.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn token(&self) -> Option<&Token> {
        self.token.as_ref()
    }

    /// A receiver that turns `true` when the daemon starts shutting down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    pub fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        lock(&self.runs)
    }

    pub fn next_tick(&self, pipeline: &str) -> Option<DateTime<Utc>> {
        lock(&self.next_ticks).get(pipeline).copied()
    }

    pub fn set_next_tick(&self, pipeline: &str, at: Option<DateTime<Utc>>) {
        let mut t = lock(&self.next_ticks);
        match at {
            Some(at) => t.insert(pipeline.to_string(), at),
            None => t.remove(pipeline),
        };
    }

    /// The `runs` table reader.
    pub fn runs_table(&self) -> RunsTable<'_> {
        RunsTable {
            warehouse: &self.warehouse,
        }
    }

    /// Start a run of `pipeline` now, unless it is running already or the
    /// daemon is stopping. Returns the run id at once; the run goes on in
    /// its own task.
    pub fn start_run(self: &Arc<Self>, pipeline: &str, trigger: &str) -> Result<String, StartError> {
        let config = self.config();
        let p = config
            .pipeline(pipeline)
            .cloned()
            .ok_or_else(|| StartError::Unknown(pipeline.to_string()))?;
        let now = Utc::now();
        let run_id = new_run_id(pipeline, now);
        self.registry()
            .admit(RunView::queued(&run_id, pipeline, trigger, now))?;
        self.metrics.run_started(pipeline);
        let state = self.clone();
        let (id, trigger) = (run_id.clone(), trigger.to_string());
        tokio::spawn(async move { state.execute(config, p, id, trigger).await });
        Ok(run_id)
    }

    async fn execute(
        self: Arc<Self>,
        config: Arc<LoadedConfig>,
        p: PipelineConfig,
        run_id: String,
        trigger: String,
    ) {
        self.registry().set_running(&run_id);
        let opts = RunOptions {
            trigger: trigger.clone(),
            progress: false,
            fault_after_table: std::env::var("LEADFLOW_FAULT_AFTER_TABLE").ok(),
            run_id: Some(run_id.clone()),
        };
        let warehouse = self.warehouse.clone();
        let name = p.name.clone();
        // Its own task, so even a panic deep in a dependency ends as a failed
        // run instead of a pipeline stuck "running" forever.
        let handle = tokio::spawn(async move { run_pipeline(&config, &p, &warehouse, &opts).await });
        let outcome = handle.await;
        // The run's columns are freed; hand the pages back between runs.
        crate::memory::release();
        let view = match outcome {
            Ok(report) => {
                let at = Utc::now();
                self.metrics
                    .run_finished(&report, at.timestamp_micros() as f64 / 1e6);
                RunView::from_report(&report, at)
            }
            Err(e) => {
                error!(pipeline = %name, run_id = %run_id, error = %e, "run task ended abnormally");
                let at = Utc::now();
                let report = crate::run::RunReport {
                    run_id: run_id.clone(),
                    pipeline: name.clone(),
                    status: "failed".into(),
                    trigger,
                    started_at: at.to_rfc3339(),
                    error: Some(format!("the run task ended abnormally: {e}")),
                    ..Default::default()
                };
                self.metrics
                    .run_finished(&report, at.timestamp_micros() as f64 / 1e6);
                RunView::from_report(&report, at)
            }
        };
        self.registry().finish(view);
        self.run_done.notify_waiters();
    }

    /// Stop the schedule loops and start one per scheduled pipeline of the
    /// current config.
    pub fn rebuild_schedules(self: &Arc<Self>) {
        let config = self.config();
        let mut handles = lock(&self.schedules);
        for h in handles.drain(..) {
            h.abort();
        }
        lock(&self.next_ticks).clear();
        for p in &config.config.pipelines {
            match Plan::of(p) {
                Ok(Some(plan)) => {
                    let v = plan.view();
                    info!(
                        pipeline = %p.name,
                        schedule = v.schedule.as_deref(),
                        time_zone = v.time_zone.as_deref(),
                        every = v.every.as_deref(),
                        "scheduled"
                    );
                    handles.push(tokio::spawn(scheduler::schedule_loop(
                        self.clone(),
                        p.name.clone(),
                        plan,
                    )));
                }
                Ok(None) => info!(pipeline = %p.name, "no schedule: runs only when triggered"),
                Err(e) => error!(pipeline = %p.name, error = %e, "schedule not usable"),
            }
        }
    }

    /// Create every pipeline's metric series; seed timestamps from `runs`.
    fn init_metrics(&self, last: &HashMap<String, runs::LastTimes>) {
        let config = self.config();
        for p in &config.config.pipelines {
            let sources: Vec<&str> = p.sources.iter().map(|s| s.name.as_str()).collect();
            self.metrics.init_pipeline(&p.name, &sources);
            if let Some(t) = last.get(&p.name) {
                let secs = |d: Option<DateTime<Utc>>| d.map(|d| d.timestamp_micros() as f64 / 1e6);
                self.metrics
                    .seed_last_times(&p.name, secs(t.success), secs(t.finish));
            }
        }
    }

    /// Run once now every scheduled pipeline that missed a tick since its
    /// last run (the daemon was down): once, not once per missed tick.
    async fn catch_up(self: &Arc<Self>, last: &HashMap<String, runs::LastTimes>) {
        let config = self.config();
        let now = Utc::now();
        for p in &config.config.pipelines {
            let Ok(Some(plan)) = Plan::of(p) else {
                continue;
            };
            let Some(start) = last.get(&p.name).and_then(|t| t.start) else {
                continue;
            };
            if plan.missed_since(start, now) {
                match self.start_run(&p.name, "startup") {
                    Ok(run_id) => info!(
                        pipeline = %p.name,
                        run_id = %run_id,
                        last_run_started = %start.to_rfc3339(),
                        "ticks were missed while the daemon was down: running once now"
                    ),
                    Err(e) => warn!(pipeline = %p.name, error = %e, "catch-up run not started"),
                }
            }
        }
    }

    /// SIGHUP: load and check the config file again; swap it in when good,
    /// keep the old one (and say why) when not.
    pub async fn reload(self: &Arc<Self>) -> bool {
        let old = self.config();
        let path = old.path.clone();
        let fresh = match load_checked(&path).await {
            Ok(c) => c,
            Err(e) => {
                let problems: Vec<String> = e.to_string().lines().map(|l| l.trim().to_string()).collect();
                error!(
                    config = %path.display(),
                    problems = ?problems,
                    "config reload refused: keeping the running config"
                );
                self.metrics.config_reload(false);
                return false;
            }
        };
        let old_root = Warehouse::resolve(&old.config.warehouse.uri, &old.base).ok();
        let new_root = Warehouse::resolve(&fresh.config.warehouse.uri, &fresh.base).ok();
        if old_root != new_root {
            error!(
                config = %path.display(),
                "config reload refused: warehouse.uri changed; restart the daemon to switch warehouses"
            );
            self.metrics.config_reload(false);
            return false;
        }
        let d_old = serde_json::to_value(&old.config.daemon).ok();
        let d_new = serde_json::to_value(&fresh.config.daemon).ok();
        if d_old != d_new {
            warn!("daemon: settings changed; they take effect at the next restart (listen address, token)");
        }
        let names: Vec<String> = fresh.config.pipelines.iter().map(|p| p.name.clone()).collect();
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
        self.init_metrics(&HashMap::new());
        if !self.shutting_down() {
            self.rebuild_schedules();
        }
        self.metrics.config_reload(true);
        info!(config = %path.display(), pipelines = ?names, "config reloaded");
        true
    }

    /// Stop taking runs, stop the schedules, and wait up to `grace` for the
    /// running runs. Returns the runs still going when the grace ran out.
    pub async fn drain(self: &Arc<Self>, grace: Duration) -> Vec<(String, String)> {
        self.registry().closed = true;
        self.shutdown.send_replace(true);
        for h in lock(&self.schedules).drain(..) {
            h.abort();
        }
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            // Register for the wake-up before looking, so a run ending in
            // between is not missed.
            let done = self.run_done.notified();
            let active = self.registry().active();
            if active.is_empty() {
                return active;
            }
            info!(runs = ?active, "waiting for running runs to finish");
            if tokio::time::timeout_at(deadline, done).await.is_err() {
                return self.registry().active();
            }
        }
    }
}

/// The daemon: `run` returns the process exit code.
pub struct Daemon {
    config_path: PathBuf,
}

impl Daemon {
    pub fn new(config_path: impl Into<PathBuf>) -> Self {
        Self {
            config_path: config_path.into(),
        }
    }

    /// Start, serve until SIGTERM/SIGINT, shut down gracefully.
    pub async fn run(self) -> u8 {
        let loaded = match load_checked(&self.config_path).await {
            Ok(c) => c,
            Err(e) => {
                eprint!("{e}");
                return EXIT_CONFIG;
            }
        };
        let dcfg = loaded.config.daemon.clone();
        let token = match dcfg.token(&loaded.base, &|k| std::env::var(k).ok()) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{}: {e}", self.config_path.display());
                return EXIT_CONFIG;
            }
        };
        if token.is_none() {
            warn!("daemon.auth is `none`: the API accepts every caller");
        }
        let addr = match dcfg.listen_addr() {
            Ok(a) => a,
            Err(e) => {
                eprintln!("{}: daemon.listen: {e}", self.config_path.display());
                return EXIT_CONFIG;
            }
        };
        // Signals first: a SIGTERM during start-up is a shutdown, not a kill.
        let (mut term, mut int, mut hup) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(a), Ok(b), Ok(c)) => (a, b, c),
            _ => {
                eprintln!("cannot install signal handlers");
                return EXIT_FAILED;
            }
        };
        let warehouse = match crate::open_warehouse(&loaded).await {
            Ok(w) => w,
            Err(e) => {
                eprintln!("warehouse: {e}");
                return EXIT_FAILED;
            }
        };
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("cannot listen on {addr} (daemon.listen): {e}");
                return EXIT_FAILED;
            }
        };
        let state = AppState::new(loaded, warehouse, token);
        let last = match state.runs_table().last_times().await {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "could not read the runs table: no catch-up runs, timestamps start at 0");
                HashMap::new()
            }
        };
        state.init_metrics(&last);

        let (http_stop, mut http_stopped) = watch::channel(false);
        let app = api::router(state.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = http_stopped.wait_for(|s| *s).await;
                })
                .await
        });
        info!(listen = %addr, pipelines = state.config().config.pipelines.len(), "daemon started");

        state.catch_up(&last).await;
        state.rebuild_schedules();
        let events_loop = events::spawn_loop(state.clone());

        let how = loop {
            tokio::select! {
                _ = term.recv() => break "SIGTERM",
                _ = int.recv() => break "SIGINT",
                _ = hup.recv() => {
                    info!("SIGHUP: reloading the config");
                    state.reload().await;
                }
            }
        };
        let grace = state.config().config.daemon.shutdown_grace;
        info!(signal = how, grace = ?grace, "shutting down: no new runs, waiting for running ones");
        let left = state.drain(grace).await;
        // The loop sees the shutdown signal and makes a last delivery turn.
        let mut events_loop = events_loop;
        if tokio::time::timeout(Duration::from_secs(10), &mut events_loop)
            .await
            .is_err()
        {
            // Undelivered events stay in the outbox for the next start.
            warn!("the last event delivery turn did not finish within 10s; stopping it");
            events_loop.abort();
            let _ = events_loop.await;
        }
        let _ = http_stop.send(true);
        match tokio::time::timeout(Duration::from_secs(5), server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => warn!(error = %e, "HTTP server ended with an error"),
            Ok(Err(e)) => warn!(error = %e, "HTTP server task failed"),
            Err(_) => warn!("HTTP connections still open after 5s; closing them"),
        }
        if left.is_empty() {
            info!("daemon stopped");
            EXIT_OK
        } else {
            let runs: Vec<String> = left.iter().map(|(p, r)| format!("{p} (run {r})")).collect();
            error!(
                runs = ?runs,
                "shutdown grace ran out with runs still going; their staged commits are finished by the next run"
            );
            eprintln!(
                "shutdown_grace ({}) ran out with runs still going: {}",
                humantime_serde::re::humantime::format_duration(grace),
                runs.join(", ")
            );
            EXIT_FAILED
        }
    }
}
