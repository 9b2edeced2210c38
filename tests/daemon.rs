//! `leadflow daemon` as a real process: schedules, the HTTP API, auth,
//! metrics, SIGTERM and SIGHUP. Each test owns a sandbox and a free port;
//! the daemon is killed when the test ends, passed or not.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{Sandbox, bin, exited, leadflow};

pub(super) const TOKEN: &str = "daemon-test-token-7f3a";

pub(super) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .unwrap()
        .port()
}

/// A sandbox whose config has a `daemon:` section on a free port, and
/// `keys` (e.g. `schedule: "* * * * * *"`) added to the pipeline.
fn daemon_sandbox(keys: &str) -> (Sandbox, u16) {
    let sb = Sandbox::new();
    let port = with_daemon_section(&sb);
    if !keys.is_empty() {
        sb.edit_config(
            "  - name: quickstart\n",
            &format!("  - name: quickstart\n    {keys}\n"),
        );
    }
    (sb, port)
}

/// Put a `daemon:` section on a free port (token from
/// `LEADFLOW_API_TOKEN`) at the top of the sandbox's config; its port.
pub(super) fn with_daemon_section(sb: &Sandbox) -> u16 {
    let port = free_port();
    let cfg = std::fs::read_to_string(sb.config()).unwrap();
    std::fs::write(
        sb.config(),
        format!("daemon:\n  listen: 127.0.0.1:{port}\n  token_env: LEADFLOW_API_TOKEN\n  shutdown_grace: 30s\n{cfg}"),
    )
    .unwrap();
    port
}

pub(super) struct Resp {
    pub(super) status: u16,
    headers: String,
    pub(super) body: String,
}

impl Resp {
    pub(super) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Minimal HTTP/1.1 client: one request per connection.
fn http(port: u16, method: &str, path: &str, token: Option<&str>) -> std::io::Result<Resp> {
    http_body(port, method, path, token, "")
}

/// Like [`http`], with a JSON body.
pub(super) fn http_body(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let len = body.len();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n{auth}\r\n{body}"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = head.to_ascii_lowercase();
    let body = if headers.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok(Resp {
        status,
        headers,
        body,
    })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A running daemon; killed on drop.
pub(super) struct Daemon {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Daemon {
    pub(super) fn start(sb: &Sandbox, port: u16) -> Self {
        let log = sb.path().join(format!("daemon-{}.log", free_port()));
        let child = Command::new(bin())
            .args(["daemon", &sb.config()])
            .env("LEADFLOW_API_TOKEN", TOKEN)
            .env("LEADFLOW_LOG", "info,deltalake_core=error")
            .env("LEADFLOW_LOG_FORMAT", "text")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("daemon starts");
        let mut d = Self { child, port, log };
        let t0 = Instant::now();
        loop {
            if let Ok(r) = http(port, "GET", "/healthz", None)
                && r.status == 200
            {
                return d;
            }
            if let Ok(Some(st)) = d.child.try_wait() {
                let log = d.log();
                // A target dir shared by several checkouts holds one
                // `debug/leadflow`: the last build of any of them.
                assert!(
                    !log.contains("unrecognized subcommand 'daemon'"),
                    "{} is a build without the daemon (another checkout built into the same \
                     CARGO_TARGET_DIR); rebuild this one (touch pipeline/src/main.rs) and rerun, or \
                     point LEADFLOW_E2E_BIN at a copy of this checkout's binary",
                    bin()
                );
                panic!("daemon exited early ({st}):\n{log}");
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "daemon not up in 60s:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn req(&self, method: &str, path: &str, token: Option<&str>) -> Resp {
        http(self.port, method, path, token)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log()))
    }

    pub(super) fn get(&self, path: &str) -> Resp {
        self.req("GET", path, Some(TOKEN))
    }

    fn post(&self, path: &str) -> Resp {
        self.req("POST", path, Some(TOKEN))
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                t0.elapsed() < timeout,
                "daemon still running after {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Poll `f` until it gives Some, or fail with the daemon's log.
    fn wait_for<T>(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
        let t0 = Instant::now();
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(
                t0.elapsed() < timeout,
                "timed out waiting for {what}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Poll a run until it has finished; its JSON.
    fn finished_run(&self, run_id: &str) -> serde_json::Value {
        self.wait_for(
            &format!("run {run_id} to finish"),
            Duration::from_secs(90),
            || {
                let r = self.get(&format!("/api/v1/runs/{run_id}"));
                assert_eq!(r.status, 200, "{}", r.body);
                let v = r.json();
                matches!(v["state"].as_str(), Some("succeeded" | "failed")).then_some(v)
            },
        )
    }

    fn metrics(&self) -> HashMap<String, f64> {
        let r = self.req("GET", "/metrics", None);
        assert_eq!(r.status, 200);
        parse_metrics(&r.body)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parse the text exposition: every sample line is `series value`.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        out.insert(series.to_string(), value);
    }
    out
}

/// `promtool check metrics` over the exposition, when promtool is installed.
fn promtool_check(text: &str) {
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        println!("skipped: promtool not found");
        return;
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn daemon_api_triggers_runs_enforces_auth_and_exports_metrics() {
    let (sb, port) = daemon_sandbox("");
    let d = Daemon::start(&sb, port);

    // Probes and metrics are open; everything under /api needs the token.
    assert_eq!(d.req("GET", "/healthz", None).status, 200);
    assert_eq!(d.req("GET", "/readyz", None).status, 200);
    let r = d.req("GET", "/api/v1/pipelines", None);
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.headers.contains("www-authenticate: bearer"), "{}", r.headers);
    assert!(r.json()["error"].is_string());
    let r = d.req("GET", "/api/v1/pipelines", Some("wrong-token"));
    assert_eq!(r.status, 401);
    let r = d.req("POST", "/api/v1/pipelines/quickstart/runs", Some("wrong-token"));
    assert_eq!(r.status, 401, "a trigger with a wrong token must not run");

    let r = d.get("/api/v1/pipelines");
    assert_eq!(r.status, 200, "{}", r.body);
    let p = &r.json()["pipelines"][0];
    assert_eq!(p["name"], "quickstart");
    assert!(p["running_run_id"].is_null() && p["last_run"].is_null(), "{p}");

    let doc = d.get("/api/v1/openapi.json");
    assert_eq!(doc.status, 200);
    assert!(doc.json()["paths"]["/api/v1/runs/{id}"].is_object());

    let r = d.post("/api/v1/pipelines/nope/runs");
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].as_str().unwrap().contains("nope"));
    assert_eq!(d.get("/api/v1/runs/20200101T000000Z-00000000").status, 404);
    assert_eq!(d.get("/api/v1/runs?limit=0").status, 400);

    // Trigger, then trigger again while the first one runs.
    let r = d.post("/api/v1/pipelines/quickstart/runs");
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(r.headers.contains("location: /api/v1/runs/"));
    let run_id = r.json()["run_id"].as_str().unwrap().to_string();
    let again = d.post("/api/v1/pipelines/quickstart/runs");
    let first = d.get(&format!("/api/v1/runs/{run_id}")).json();
    if again.status == 409 {
        assert_eq!(again.json()["running_run_id"], run_id.as_str());
    } else {
        // Only possible if the first run was already over.
        assert_eq!(again.status, 202, "{}", again.body);
        assert!(
            matches!(first["state"].as_str(), Some("succeeded" | "failed")),
            "{first}"
        );
    }

    let run = d.finished_run(&run_id);
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["trigger"], "api");
    assert_eq!(run["counts"]["rows_read"], 52, "{run}");
    assert_eq!(run["counts"]["masters_new"], 39, "{run}");
    assert_eq!(run["rejected_by_reason"]["invalid_email"], 2, "{run}");

    let list = d.get("/api/v1/runs?pipeline=quickstart&limit=5").json();
    let ids: Vec<&str> = list["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&run_id.as_str()), "{list}");
    let r = d.get("/api/v1/pipelines").json();
    assert!(r["pipelines"][0]["last_run"]["run_id"].is_string(), "{r}");

    // Metrics: well-formed, promtool-clean, and counting the run.
    let text = d.req("GET", "/metrics", None).body;
    promtool_check(&text);
    let m = parse_metrics(&text);
    let get = |k: &str| *m.get(k).unwrap_or_else(|| panic!("no {k} in\n{text}"));
    assert!(get(r#"leadflow_runs_total{outcome="succeeded",pipeline="quickstart"}"#) >= 1.0);
    assert_eq!(
        get(r#"leadflow_runs_total{outcome="failed",pipeline="quickstart"}"#),
        0.0
    );
    assert_eq!(
        get(r#"leadflow_rows_read_total{pipeline="quickstart",source="drops"}"#),
        52.0
    );
    assert_eq!(
        get(r#"leadflow_masters_created_total{pipeline="quickstart"}"#),
        39.0
    );
    assert_eq!(
        get(r#"leadflow_files_total{pipeline="quickstart",status="imported"}"#),
        3.0
    );
    assert!(get(r#"leadflow_last_success_timestamp_seconds{pipeline="quickstart"}"#) > 1.7e9);
    assert_eq!(get(r#"leadflow_config_reloads_total{outcome="failed"}"#), 0.0);
    for name in [
        "leadflow_run_duration_seconds_bucket",
        "leadflow_last_run_timestamp_seconds",
        "leadflow_run_in_progress",
        "leadflow_rows_rejected_total",
        "leadflow_records_linked_total",
        "leadflow_link_conflicts_total",
        "leadflow_reminders_total",
        "leadflow_reminders_open",
        "leadflow_build_info",
    ] {
        assert!(m.keys().any(|k| k.starts_with(name)), "no {name} in\n{text}");
    }
    // No lead data in any label.
    assert!(!text.contains('@') && !text.contains("+91"), "{text}");
}

#[test]
fn a_schedule_fires_sigterm_lets_the_run_finish_and_missed_ticks_run_once_on_start() {
    let (sb, port) = daemon_sandbox(r#"schedule: "* * * * * *""#);
    let mut d = Daemon::start(&sb, port);
    // The 1-second schedule starts a run on its own.
    let run_id = d.wait_for("a scheduled run", Duration::from_secs(30), || {
        let v = d.get("/api/v1/pipelines").json();
        v["pipelines"][0]["running_run_id"].as_str().map(str::to_string)
    });
    d.signal("TERM");
    // Once the signal is handled (/readyz turns 503), new triggers get 503;
    // the daemon may also be gone already when the run was quick.
    let draining = d.wait_for("the drain to start", Duration::from_secs(30), || {
        match http(port, "GET", "/readyz", None) {
            Ok(r) if r.status == 503 => Some(true),
            Ok(_) => None,
            Err(_) => Some(false),
        }
    });
    if draining && let Ok(r) = http(port, "POST", "/api/v1/pipelines/quickstart/runs", Some(TOKEN)) {
        assert!(r.status == 503 || r.status == 0, "{} {}", r.status, r.body);
    }
    let st = d.wait_exit(Duration::from_secs(60));
    assert!(st.success(), "exit {st}:\n{}", d.log());
    let b = sb.sql(&format!(
        "SELECT status, trigger FROM runs WHERE run_id = '{run_id}'"
    ));
    let dump = arrow::util::pretty::pretty_format_batches(&b)
        .unwrap()
        .to_string();
    assert!(
        dump.contains("succeeded") && dump.contains("schedule"),
        "{dump}\n{}",
        d.log()
    );
    drop(d);

    // Restarted after a missed tick: one catch-up run with trigger "startup";
    // the earlier process's run is still readable by id (from the table).
    std::thread::sleep(Duration::from_millis(1100));
    let d = Daemon::start(&sb, port);
    let old = d.get(&format!("/api/v1/runs/{run_id}"));
    assert_eq!(old.status, 200, "{}", old.body);
    assert_eq!(old.json()["state"], "succeeded");
    d.wait_for("a startup run", Duration::from_secs(30), || {
        let v = d.get("/api/v1/runs?pipeline=quickstart&limit=50").json();
        let n = v["runs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["trigger"] == "startup")
            .count();
        assert!(n <= 1, "one catch-up run, not one per missed tick: {v}");
        (n == 1).then_some(())
    });
}

#[test]
fn sighup_keeps_the_old_config_when_the_new_one_is_bad_and_applies_a_good_one() {
    let (sb, port) = daemon_sandbox("");
    let d = Daemon::start(&sb, port);
    let before = d.get("/api/v1/pipelines").json();

    sb.edit_config(
        "  - name: quickstart\n",
        "  - name: quickstart\n    schedule: \"not a cron\"\n",
    );
    d.signal("HUP");
    d.wait_for("a failed reload", Duration::from_secs(30), || {
        (d.metrics()
            .get(r#"leadflow_config_reloads_total{outcome="failed"}"#)
            == Some(&1.0))
        .then_some(())
    });
    assert_eq!(d.get("/api/v1/pipelines").json(), before);
    let log = d.log();
    assert!(
        log.contains("config reload refused") && log.contains("not a cron"),
        "{log}"
    );

    sb.edit_config("schedule: \"not a cron\"", "every: 1h");
    d.signal("HUP");
    d.wait_for("a good reload", Duration::from_secs(30), || {
        (d.metrics()
            .get(r#"leadflow_config_reloads_total{outcome="succeeded"}"#)
            == Some(&1.0))
        .then_some(())
    });
    let p = &d.get("/api/v1/pipelines").json()["pipelines"][0];
    assert_eq!(p["every"], "1h", "{p}");
    assert!(p["next_tick"].is_string(), "{p}");
    // The daemon still works after both reloads.
    let r = d.post("/api/v1/pipelines/quickstart/runs");
    assert_eq!(r.status, 202, "{}", r.body);
    let run = d.finished_run(r.json()["run_id"].as_str().unwrap());
    assert_eq!(run["state"], "succeeded", "{run}");
}

#[test]
fn daemon_config_problems_are_listed_with_lines_and_a_missing_token_stops_the_start() {
    let (sb, _) = daemon_sandbox("schedule: \"0 */5 * * *\"\n    every: 5m\n    time_zone: Mars/Olympus");
    sb.edit_config("listen: 127.0.0.1:", "listen: localhost:");
    let o = leadflow(&["validate", &sb.config()], &[]);
    exited(&o, 2);
    let err = String::from_utf8_lossy(&o.stderr);
    for needle in [
        "pipeline.yaml:2: daemon.listen:",
        "pipelines.0.schedule: \"0 */5 * * *\" is not a cron expression with seconds",
        "pipelines.0.every: set either `schedule` (cron) or `every` (interval), not both",
        "pipelines.0.time_zone: \"Mars/Olympus\" is not an IANA time zone",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in\n{err}");
    }

    // A valid config, but no token in the environment: refuse to start.
    let (sb, _) = daemon_sandbox("");
    let o = Command::new(bin())
        .args(["daemon", &sb.config()])
        .env_remove("LEADFLOW_API_TOKEN")
        .env("LEADFLOW_LOG_FORMAT", "text")
        .output()
        .unwrap();
    exited(&o, 2);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("LEADFLOW_API_TOKEN"), "{err}");
    sb.edit_config("  token_env: LEADFLOW_API_TOKEN\n", "");
    let o = Command::new(bin())
        .args(["daemon", &sb.config()])
        .env("LEADFLOW_LOG_FORMAT", "text")
        .output()
        .unwrap();
    let all = exited(&o, 2);
    assert!(String::from_utf8_lossy(&o.stderr).contains("auth: none"), "{all}");
}

#[test]
fn a_shutdown_grace_that_runs_out_exits_1_naming_the_run() {
    let (sb, port) = daemon_sandbox("");
    sb.edit_config("shutdown_grace: 30s", "shutdown_grace: 0s");
    let mut d = Daemon::start(&sb, port);
    let r = d.post("/api/v1/pipelines/quickstart/runs");
    assert_eq!(r.status, 202, "{}", r.body);
    let run_id = r.json()["run_id"].as_str().unwrap().to_string();
    // The quickstart run takes well over a second; the signal comes at once.
    d.signal("TERM");
    let st = d.wait_exit(Duration::from_secs(30));
    assert_eq!(st.code(), Some(1), "{}", d.log());
    let log = d.log();
    assert!(
        log.contains("ran out with runs still going") && log.contains(&run_id),
        "{log}"
    );
}

#[test]
fn daemon_delivers_reminder_events_and_answers_the_reminder_routes() {
    let (sb, port) = daemon_sandbox("reminders: {contact_within: 1s, repeat_every: 1s, max_repeats: 50}");
    let events = sb.path().join("events.jsonl");
    let cfg = std::fs::read_to_string(sb.config()).unwrap();
    let cfg = cfg.replace(
        "  shutdown_grace: 30s\n",
        &format!(
            "  shutdown_grace: 30s\n  events_every: 300ms\nevents:\n  outputs:\n    - name: ops\n      file: {{path: {}}}\n",
            events.display()
        ),
    );
    std::fs::write(sb.config(), cfg).unwrap();
    let d = Daemon::start(&sb, port);
    let run_id = d.post("/api/v1/pipelines/quickstart/runs").json()["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(d.finished_run(&run_id)["state"], "succeeded");

    // The loop delivers the run's 45 reminder.created events, then overdue ones.
    let lines = d.wait_for(
        "created and overdue events in the file",
        Duration::from_secs(30),
        || {
            let text = std::fs::read_to_string(&events).unwrap_or_default();
            let n = |kind: &str| text.lines().filter(|l| l.contains(kind)).count();
            (n("\"reminder.created\"") == 45 && n("\"reminder.overdue\"") > 0).then_some(text)
        },
    );
    let ids: Vec<String> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["event_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let distinct: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "an event delivered twice to one file");

    let open = d.get("/api/v1/reminders?pipeline=quickstart");
    assert_eq!(open.status, 200, "{}", open.body);
    let list = open.json()["reminders"].as_array().unwrap().clone();
    assert_eq!(list.len(), 45);
    let id = list[0]["reminder_id"].as_str().unwrap().to_string();
    let other = list[1]["reminder_id"].as_str().unwrap().to_string();

    // Auth, then contacted once (200) and again (409); unknown ids 404.
    let unauth = d.req("POST", &format!("/api/v1/reminders/{id}/contacted"), None);
    assert_eq!(unauth.status, 401);
    let r = d.post(&format!("/api/v1/reminders/{id}/contacted"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["state"], "contacted");
    assert_eq!(d.post(&format!("/api/v1/reminders/{id}/contacted")).status, 409);
    assert_eq!(d.post("/api/v1/reminders/rem-nope/contacted").status, 404);

    // Snooze: a body is required and checked.
    let snooze = |body: &str| {
        http_body(
            port,
            "POST",
            &format!("/api/v1/reminders/{other}/snooze"),
            Some(TOKEN),
            body,
        )
        .unwrap()
    };
    assert_eq!(snooze("").status, 400);
    assert_eq!(snooze(r#"{"minutes": 0}"#).status, 400);
    let r = snooze(r#"{"minutes": 30}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["state"], "snoozed");
    assert_eq!(d.get("/api/v1/reminders?state=nonsense").status, 400);

    let m = d.wait_for("reminder metrics", Duration::from_secs(10), || {
        let m = d.metrics();
        (m.get("leadflow_reminders_total{kind=\"contacted\",pipeline=\"quickstart\"}") == Some(&1.0))
            .then_some(m)
    });
    assert_eq!(
        m.get("leadflow_reminders_total{kind=\"created\",pipeline=\"quickstart\"}"),
        Some(&45.0),
        "{m:?}"
    );
    assert!(
        m.get("leadflow_reminders_total{kind=\"overdue\",pipeline=\"quickstart\"}")
            .is_some_and(|v| *v > 0.0)
    );
    assert!(
        m.get("leadflow_events_delivered_total{output=\"ops\"}")
            .is_some_and(|v| *v >= 45.0),
        "{m:?}"
    );
    // The contacted reminder's event reaches the file too.
    d.wait_for("the reminder.contacted event", Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&events).unwrap_or_default();
        text.lines()
            .any(|l| l.contains("\"reminder.contacted\"") && l.contains(id.as_str()))
            .then_some(())
    });
}
