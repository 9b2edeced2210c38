//! Reminders, owner assignment and event delivery, end to end: the real
//! binary, real Delta tables, a real HTTP receiver and (when
//! LEADFLOW_TEST_NATS_URL is set) a real NATS server.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{Array, AsArray};
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use leadflow::reminders::{self, ReminderError, ReminderState};
use sha2::Sha256;

use crate::{BIN, Sandbox, exited, text};

/// The binary under test. LEADFLOW_E2E_BIN overrides it: worktrees that
/// share one target dir can swap `target/debug/leadflow` during a run.
fn leadflow(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let bin = std::env::var("LEADFLOW_E2E_BIN").unwrap_or_else(|_| BIN.to_string());
    let mut cmd = std::process::Command::new(bin);
    cmd.args(args)
        .env("LEADFLOW_LOG", "warn,deltalake_core=error")
        .env("LEADFLOW_LOG_FORMAT", "text");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("leadflow runs")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

impl Sandbox {
    /// Add `reminders:`/`assignment:` (YAML, indented for a pipeline key) to
    /// the pipeline and an `events:` section to the file.
    fn with_reminders(&self, pipeline_yaml: &str, events_yaml: &str) {
        self.edit_config("    validate:\n", &format!("{pipeline_yaml}    validate:\n"));
        let mut cfg = std::fs::read_to_string(self.config()).unwrap();
        cfg.push_str(events_yaml);
        std::fs::write(self.config(), cfg).unwrap();
    }

    /// Two people, one per project, instead of the quickstart drops.
    fn small_drop(&self) {
        let drops = self.path().join("drops");
        for e in std::fs::read_dir(&drops).unwrap() {
            std::fs::remove_file(e.unwrap().path()).unwrap();
        }
        std::fs::write(
            drops.join("leads.csv"),
            "First Name,Last Name,Phone,Email,Project\n\
             Asha,Rao,+91 98200 11111,asha.rao@example.com,Riverside Towers\n\
             Ravi,Kumar,+91 98200 22222,ravi.k@example.com,Lakeside Villas\n",
        )
        .unwrap();
    }

    fn strings(&self, sql: &str) -> Vec<String> {
        let mut out = Vec::new();
        for b in self.sql(sql) {
            let c = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
            let c = c.as_string::<i32>();
            out.extend((0..c.len()).map(|i| c.value(i).to_string()));
        }
        out
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = leadflow(args, &[]);
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

const REMINDERS_5M: &str = "    reminders:\n      contact_within: 5m\n      repeat_every: 1m\n      max_repeats: 2\n    assignment:\n      owners:\n        Riverside Towers: [asha, ravi]\n        \"*\": [desk]\n";

#[test]
fn a_run_makes_one_reminder_and_one_created_event_per_new_link_once() {
    let sb = Sandbox::new();
    sb.with_reminders(
        REMINDERS_5M,
        "events:\n  outputs:\n    - name: ops-log\n      file: {path: ./events.jsonl}\n",
    );
    let out = sb.ok(&["run", &sb.config()]);
    assert!(out.contains("events ops-log (file): 45 delivered"), "{out}");
    assert_eq!(sb.count("SELECT count(*) FROM project_links"), 45);
    assert_eq!(
        sb.count("SELECT count(*) FROM reminders WHERE state = 'open'"),
        45
    );
    assert_eq!(
        sb.count("SELECT count(*) FROM reminders r JOIN project_links l ON r.master_id = l.master_id AND r.project = l.project"),
        45
    );
    assert_eq!(
        sb.count("SELECT count(*) FROM outbox WHERE kind = 'reminder.created'"),
        45
    );
    // Every link got an owner from its project's rotation, carried by its reminder.
    assert_eq!(
        sb.count("SELECT count(*) FROM project_links WHERE project = 'Riverside Towers' AND owner IN ('asha', 'ravi')"),
        sb.count("SELECT count(*) FROM project_links WHERE project = 'Riverside Towers'")
    );
    assert_eq!(
        sb.count("SELECT count(*) FROM project_links WHERE project <> 'Riverside Towers' AND owner = 'desk'"),
        sb.count("SELECT count(*) FROM project_links WHERE project <> 'Riverside Towers'")
    );
    let spread = sb.strings("SELECT owner FROM project_links WHERE project = 'Riverside Towers' GROUP BY owner HAVING count(*) > 0 ORDER BY owner");
    assert_eq!(spread, ["asha", "ravi"]);
    assert_eq!(
        sb.count("SELECT count(*) FROM reminders r JOIN project_links l ON r.master_id = l.master_id AND r.project = l.project WHERE r.owner = l.owner"),
        45
    );
    let owners_before = sb.strings("SELECT master_id || project || owner FROM project_links ORDER BY 1");
    // Deadline = created + 5m (no quiet hours).
    assert_eq!(
        sb.count("SELECT count(*) FROM reminders WHERE deadline = created_at + INTERVAL '5 minutes' AND next_due_at = deadline"),
        45
    );

    // The same input again: nothing new anywhere, owners unchanged (sticky).
    let out = sb.ok(&["run", &sb.config()]);
    assert!(out.contains("events ops-log (file): 0 delivered"), "{out}");
    assert_eq!(sb.count("SELECT count(*) FROM reminders"), 45);
    assert_eq!(sb.count("SELECT count(*) FROM outbox"), 45);
    assert_eq!(
        sb.strings("SELECT master_id || project || owner FROM project_links ORDER BY 1"),
        owners_before
    );

    // Each event once in the file, after a run's delivery and another call.
    sb.ok(&["deliver", &sb.config()]);
    let lines = std::fs::read_to_string(sb.path().join("events.jsonl")).unwrap();
    let mut ids: HashMap<String, usize> = HashMap::new();
    for l in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(l).expect("a JSON object per line");
        assert_eq!(v["kind"], "reminder.created");
        assert!(v["deadline"].is_string() && v["owner"].is_string(), "{v}");
        *ids.entry(v["event_id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(ids.len(), 45);
    assert!(ids.values().all(|&n| n == 1), "{ids:?}");
    assert_eq!(
        sb.count("SELECT count(*) FROM deliveries WHERE output = 'ops-log' AND state = 'delivered' AND attempts = 1"),
        45
    );

    // `reminders list` shows them; --json parses.
    let listed = sb.ok(&["reminders", "list", &sb.config(), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 45);
    assert_eq!(v[0]["state"], "open");
}

#[test]
fn a_run_killed_after_committing_reminders_is_finished_without_duplicates() {
    let sb = Sandbox::new();
    sb.with_reminders(REMINDERS_5M, "");
    let o = leadflow(
        &["run", &sb.config()],
        &[("LEADFLOW_FAULT_AFTER_TABLE", "outbox")],
    );
    assert!(!o.status.success(), "the run was aborted: {}", text(&o));
    // The next run finishes the staged commit first, then finds nothing new.
    sb.ok(&["run", &sb.config()]);
    assert_eq!(sb.count("SELECT count(*) FROM reminders"), 45);
    assert_eq!(sb.count("SELECT count(*) FROM outbox"), 45);
    assert_eq!(sb.count("SELECT count(DISTINCT event_id) FROM outbox"), 45);
    assert_eq!(
        sb.count("SELECT count(*) FROM project_links WHERE owner IS NOT NULL"),
        45
    );
}

#[test]
fn ticks_repeat_overdue_events_until_contacted_or_expired_and_snooze_brings_them_back() {
    let sb = Sandbox::new();
    sb.with_reminders(REMINDERS_5M, "");
    sb.ok(&["run", &sb.config()]);
    let loaded = leadflow::config::load(&sb.path().join("pipeline.yaml")).unwrap();
    let pipelines = loaded.config.pipelines.clone();
    rt().block_on(async {
        let wh = leadflow::open_warehouse(&loaded).await.unwrap();
        let all = reminders::list(&wh, None, &[], 1000).await.unwrap();
        assert_eq!(all.len(), 45);
        let t0: DateTime<Utc> = all[0].created_at;
        let at = |secs: i64| t0 + chrono::Duration::seconds(secs);
        let (a, b) = (all[0].reminder_id.clone(), all[1].reminder_id.clone());

        let r = reminders::tick(&wh, &pipelines, at(240)).await.unwrap();
        assert_eq!(r.pipelines["quickstart"].overdue, 0, "{r:?}");
        let c = reminders::mark_contacted(&wh, &a, "test", at(240)).await.unwrap();
        assert_eq!(c.state, ReminderState::Contacted);
        let s = reminders::snooze(&wh, &b, 10, at(240)).await.unwrap();
        assert_eq!(s.snoozed_until, Some(at(840)));

        let r = reminders::tick(&wh, &pipelines, at(300)).await.unwrap();
        assert_eq!(r.pipelines["quickstart"].overdue, 43, "{r:?}");
        let r = reminders::tick(&wh, &pipelines, at(330)).await.unwrap();
        assert_eq!(
            r.pipelines["quickstart"].overdue, 0,
            "not due again before repeat_every: {r:?}"
        );
        let r = reminders::tick(&wh, &pipelines, at(360)).await.unwrap();
        assert_eq!(r.pipelines["quickstart"].overdue, 43, "{r:?}");
        let r = reminders::tick(&wh, &pipelines, at(420)).await.unwrap();
        let q = &r.pipelines["quickstart"];
        assert_eq!((q.overdue, q.expired, q.open, q.snoozed), (0, 43, 0, 1), "{r:?}");
        let r = reminders::tick(&wh, &pipelines, at(600)).await.unwrap();
        assert_eq!(
            r.pipelines["quickstart"],
            reminders::PipelineTick {
                snoozed: 1,
                ..Default::default()
            }
        );
        // The snooze ends: back, and due at once.
        let r = reminders::tick(&wh, &pipelines, at(840)).await.unwrap();
        let q = &r.pipelines["quickstart"];
        assert_eq!((q.reopened, q.overdue, q.open), (1, 1, 1), "{r:?}");

        assert!(matches!(
            reminders::mark_contacted(&wh, &a, "test", at(900)).await,
            Err(ReminderError::AlreadyClosed {
                state: ReminderState::Contacted,
                ..
            })
        ));
        assert!(matches!(
            reminders::snooze(&wh, "rem-nope", 5, at(900)).await,
            Err(ReminderError::NotFound(_))
        ));
        assert!(matches!(
            reminders::snooze(&wh, &b, 0, at(900)).await,
            Err(ReminderError::Invalid(_))
        ));
    });
    let kinds: BTreeMap<String, i64> = sb
        .strings("SELECT kind || '=' || CAST(count(DISTINCT event_id) AS VARCHAR) FROM outbox GROUP BY kind")
        .into_iter()
        .map(|s| {
            let (k, n) = s.split_once('=').unwrap();
            (k.to_string(), n.parse().unwrap())
        })
        .collect();
    assert_eq!(
        kinds,
        BTreeMap::from([
            ("reminder.contacted".to_string(), 1),
            ("reminder.created".to_string(), 45),
            ("reminder.expired".to_string(), 43),
            ("reminder.overdue".to_string(), 43 * 2 + 1),
        ])
    );
    // No event was written twice.
    assert_eq!(sb.count("SELECT count(*) FROM outbox"), 45 + 43 * 3 + 2);
    assert_eq!(
        sb.count("SELECT count(*) FROM outbox WHERE kind = 'reminder.overdue' AND repeat IN (1, 2)"),
        43 * 2 + 1
    );
}

#[test]
fn the_tick_command_emits_overdue_events_on_short_deadlines() {
    let sb = Sandbox::new();
    sb.small_drop();
    sb.with_reminders(
        "    reminders:\n      contact_within: 1s\n      repeat_every: 1s\n      max_repeats: 2\n",
        "",
    );
    sb.ok(&["run", &sb.config()]);
    let ids = sb.strings("SELECT reminder_id FROM reminders ORDER BY project");
    assert_eq!(ids.len(), 2);
    // Lakeside's reminder is contacted at once; Riverside's runs its course.
    sb.ok(&["reminders", "contacted", &sb.config(), &ids[0]]);
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(1100));
        sb.ok(&["reminders", "tick", &sb.config()]);
    }
    let events = |id: &str| {
        sb.strings(&format!(
            "SELECT k FROM (SELECT kind || coalesce(CAST(repeat AS VARCHAR), '') AS k, min(created_at) AS t
             FROM outbox WHERE reminder_id = '{id}' GROUP BY kind, repeat) ORDER BY t, k"
        ))
    };
    let contacted = events(&ids[0]);
    assert_eq!(contacted.first().map(String::as_str), Some("reminder.created"));
    assert_eq!(contacted.last().map(String::as_str), Some("reminder.contacted"));
    assert!(contacted.len() <= 3, "stops after contacted: {contacted:?}");
    assert_eq!(
        events(&ids[1]),
        [
            "reminder.created",
            "reminder.overdue1",
            "reminder.overdue2",
            "reminder.expired"
        ]
    );
    // Closed reminders answer with distinct exit codes.
    let o = leadflow(&["reminders", "contacted", &sb.config(), &ids[1]], &[]);
    let all = exited(&o, 4);
    assert!(all.contains("already expired"), "{all}");
    let o = leadflow(
        &["reminders", "snooze", &sb.config(), "rem-nope", "--minutes", "5"],
        &[],
    );
    exited(&o, 3);
}

#[test]
fn a_later_status_change_closes_the_open_reminder() {
    let sb = Sandbox::new();
    sb.small_drop();
    sb.with_reminders("    reminders: {}\n", "");
    sb.ok(&["run", &sb.config()]);
    assert_eq!(sb.count("SELECT count(*) FROM reminders WHERE state = 'open'"), 2);
    // The CRM export comes again with Asha's status moved on.
    std::fs::write(
        sb.path().join("drops/leads-2.csv"),
        "First Name,Last Name,Phone,Email,Project,Status\n\
         Asha,Rao,+91 98200 11111,asha.rao@example.com,Riverside Towers,Site visit done\n",
    )
    .unwrap();
    sb.ok(&["run", &sb.config()]);
    assert_eq!(
        sb.strings("SELECT project || ':' || state || ':' || closed_by FROM reminders WHERE state <> 'open'"),
        ["Riverside Towers:contacted:link status"]
    );
    assert_eq!(
        sb.count("SELECT count(*) FROM outbox WHERE kind = 'reminder.contacted'"),
        1
    );
    assert_eq!(sb.count("SELECT count(*) FROM reminders"), 2);
}

/// A recorded request to the test webhook.
struct Hit {
    headers: HashMap<String, String>,
    body: Vec<u8>,
    answered: u16,
}

/// A tiny HTTP/1.1 receiver on a local port; `answer(n)` is the status of
/// the n-th request (0-based).
fn receiver(answer: impl Fn(usize) -> u16 + Send + 'static) -> (String, Arc<Mutex<Vec<Hit>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let hits = Arc::new(Mutex::new(Vec::new()));
    let seen = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                continue;
            }
            let mut headers = HashMap::new();
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
            }
            let len: usize = headers
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let n = seen.lock().unwrap().len();
            let status = answer(n);
            seen.lock().unwrap().push(Hit {
                headers,
                body,
                answered: status,
            });
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (url, hits)
}

fn webhook_events(url: &str, max_attempts: u32) -> String {
    format!(
        "events:\n  outputs:\n    - name: crm-hook\n      webhook:\n        url: \"{url}\"\n        secret: \"${{HOOK_SECRET}}\"\n        max_attempts: {max_attempts}\n        timeout: 5s\n        initial_backoff: 100ms\n        max_backoff: 200ms\n"
    )
}

#[test]
fn the_webhook_gets_each_event_signed_and_once_after_a_retry() {
    let (url, hits) = receiver(|n| if n == 0 { 500 } else { 200 });
    let sb = Sandbox::new();
    sb.small_drop();
    sb.with_reminders("    reminders: {}\n", &webhook_events(&url, 5));
    let envs = [("HOOK_SECRET", "s3cret-hook")];
    let o = leadflow(&["run", &sb.config()], &envs);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("s3cret-hook"), "{}", text(&o));
    let o = leadflow(&["deliver", &sb.config(), "--wait", "10s", "--json"], &envs);
    assert!(o.status.success(), "{}", text(&o));
    let hits = hits.lock().unwrap();
    let ok: Vec<&Hit> = hits.iter().filter(|h| h.answered == 200).collect();
    assert_eq!(ok.len(), 2, "each event delivered once");
    assert_eq!(hits.len(), 3, "one 500 and two 200s");
    assert_eq!(
        hits[0].headers["x-leadflow-event-id"], hits[1].headers["x-leadflow-event-id"],
        "the failed event is retried first, with the same id"
    );
    for h in hits.iter() {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret-hook").unwrap();
        mac.update(&h.body);
        let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(h.headers["x-leadflow-signature"], want);
        let v: serde_json::Value = serde_json::from_slice(&h.body).unwrap();
        assert_eq!(v["event_id"].as_str().unwrap(), h.headers["x-leadflow-event-id"]);
        assert_eq!(v["kind"], "reminder.created");
        assert_eq!(h.headers["content-type"], "application/json");
    }
    assert_eq!(
        sb.count("SELECT count(*) FROM deliveries WHERE output = 'crm-hook' AND state = 'delivered'"),
        2
    );
    assert_eq!(
        sb.count("SELECT count(*) FROM deliveries WHERE output = 'crm-hook' AND attempts = 2 AND last_error IS NULL"),
        1
    );
}

#[test]
fn a_webhook_that_always_fails_makes_events_dead_after_max_attempts() {
    let (url, hits) = receiver(|_| 503);
    let sb = Sandbox::new();
    sb.small_drop();
    sb.with_reminders("    reminders: {}\n", &webhook_events(&url, 3));
    let envs = [("HOOK_SECRET", "s3cret-hook")];
    leadflow(&["run", &sb.config()], &envs);
    let o = leadflow(&["deliver", &sb.config(), "--wait", "15s", "--json"], &envs);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["outputs"]["crm-hook"]["dead"], 2, "{v}");
    assert_eq!(v["outputs"]["crm-hook"]["backlog"], 0, "{v}");
    assert_eq!(hits.lock().unwrap().len(), 6, "3 attempts for each of 2 events");
    assert_eq!(
        sb.count("SELECT count(*) FROM deliveries WHERE state = 'dead' AND attempts = 3 AND last_error LIKE '%503%'"),
        2
    );
    // Dead is final: another call sends nothing.
    let o = leadflow(&["deliver", &sb.config()], &envs);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(hits.lock().unwrap().len(), 6);
}

#[test]
fn nats_gets_each_event_once_even_when_published_twice() {
    let Ok(nats_url) = std::env::var("LEADFLOW_TEST_NATS_URL") else {
        println!("skipped: LEADFLOW_TEST_NATS_URL not set");
        return;
    };
    let unique = format!(
        "{}_{}",
        std::process::id(),
        Utc::now().timestamp_nanos_opt().unwrap_or(0)
    );
    let stream = format!("LEADFLOW_TEST_{unique}");
    let subject = format!("leadflow.test.{unique}");
    let sb = Sandbox::new();
    sb.small_drop();
    // Two outputs on one subject: every event is published twice, as after
    // a crash between the publish and the `deliveries` commit.
    sb.with_reminders(
        "    reminders: {}\n",
        &format!(
            "events:\n  outputs:\n    - name: bus\n      nats: {{url: \"{nats_url}\", subject: \"{subject}\", stream: {stream}}}\n    - name: bus-again\n      nats: {{url: \"{nats_url}\", subject: \"{subject}\", stream: {stream}}}\n"
        ),
    );
    let out = sb.ok(&["run", &sb.config()]);
    assert!(out.contains("events bus (nats): 2 delivered"), "{out}");
    assert!(out.contains("events bus-again (nats): 2 delivered"), "{out}");
    let want: Vec<String> = sb.strings("SELECT DISTINCT event_id FROM outbox ORDER BY 1");
    assert_eq!(want.len(), 2);
    let got = rt().block_on(async {
        use futures::StreamExt;
        let client = async_nats::connect(nats_url.as_str()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let st = js.get_stream(&stream).await.unwrap();
        let consumer = st
            .create_consumer(async_nats::jetstream::consumer::pull::Config {
                durable_name: None,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut ids = Vec::new();
        let mut batch = consumer
            .fetch()
            .max_messages(100)
            .expires(Duration::from_secs(2))
            .messages()
            .await
            .unwrap();
        while let Some(m) = batch.next().await {
            let m = m.unwrap();
            let id = m
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .unwrap()
                .as_str()
                .to_string();
            let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            assert_eq!(v["event_id"].as_str().unwrap(), id);
            ids.push(id);
            m.ack().await.unwrap();
        }
        js.delete_stream(&stream).await.unwrap();
        ids
    });
    let mut got = got;
    got.sort();
    assert_eq!(got, want, "each event exactly once in the stream");
}

#[test]
fn bad_reminder_and_event_config_is_listed_with_keys() {
    let sb = Sandbox::new();
    sb.with_reminders(
        "    reminders:\n      repeat_every: 0s\n    assignment:\n      owners: {}\n",
        "events:\n  outputs:\n    - name: hook\n      webhook: {url: \"ftp://x\", max_attempts: 0}\n    - name: hook\n",
    );
    let o = leadflow(&["validate", &sb.config()], &[]);
    let t = exited(&o, 2);
    for key in [
        "pipelines.0.reminders.repeat_every",
        "pipelines.0.assignment.owners",
        "events.outputs.0.webhook.url",
        "events.outputs.0.webhook.max_attempts",
        "events.outputs.1.name",
    ] {
        assert!(t.contains(key), "{key} missing in:\n{t}");
    }
}
