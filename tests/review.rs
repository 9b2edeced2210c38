//! The review queue, merge, split and unmerge through the real binary: a
//! probabilistic run leaves two uncertain pairs; one is approved (merged),
//! the other rejected; a later run neither resurrects the absorbed master
//! nor links the rejected pair; then a split and an unmerge.

use arrow::array::AsArray;

use super::linkage::{HEADER, strings};
use super::{Sandbox, exited, leadflow, text};

fn sandbox(first: &str) -> Sandbox {
    super::linkage::sandbox_with(
        first,
        "events:\n  outputs:\n    - name: ops-log\n      file: {path: ./events.jsonl}\n",
    )
}

fn one(sb: &Sandbox, sql: &str) -> String {
    let r = strings(sb, sql);
    assert_eq!(r.len(), 1, "{sql}: {r:?}");
    r[0][0].clone().unwrap()
}

fn master_of(sb: &Sandbox, file: &str, row: i64) -> String {
    one(
        sb,
        &format!("SELECT master_id FROM records WHERE source_row = {row} AND source_file LIKE '%{file}'"),
    )
}

/// Write `masters` rows back as they were (to stage an interrupted merge).
fn put_back_masters(sb: &Sandbox, rows: Vec<arrow::record_batch::RecordBatch>) {
    let schema = leadflow_transforms::schema::MASTERS_SCHEMA.clone();
    let batches: Vec<_> = rows
        .iter()
        .map(|b| {
            let cols = schema
                .fields()
                .iter()
                .map(|f| arrow::compute::cast(b.column_by_name(f.name()).unwrap(), f.data_type()).unwrap())
                .collect();
            arrow::record_batch::RecordBatch::try_new(schema.clone(), cols).unwrap()
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let loaded = leadflow::config::load(&sb.path().join("pipeline.yaml")).expect("config");
        let wh = leadflow::open_warehouse(&loaded).await.expect("warehouse");
        let t = leadflow_sinks::StagedTable {
            table: "masters".into(),
            mode: leadflow_sinks::WriteMode::Upsert,
            batches,
        };
        assert!(wh.apply(&t, "test:put-back", 1).await.unwrap());
    });
}

fn json(args: &[&str]) -> serde_json::Value {
    let o = leadflow(args, &[]);
    assert!(o.status.success(), "{args:?}: {}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)))
}

#[test]
fn review_approve_merges_reject_sticks_and_merges_can_be_split_and_undone() {
    let sb = sandbox(concat!(
        // rows 2-3: maybe the same woman (same name, company, city; other
        // e-mails) -> review; in two projects.
        "Neha Kapoor,+91 98202 22222,neha.k@gmail.com,Delta,Delhi,IN,Riverside\n",
        "Neha Kapoor,,nehakapoor88@gmail.com,Delta,Delhi,IN,Hilltop\n",
        // rows 4-5: the same shape -> a second review, to be rejected.
        "Rahul Verma,+91 98204 44444,rahul.v@gmail.com,Zeta,Chennai,IN,Riverside\n",
        "Rahul Verma,,rverma77@gmail.com,Zeta,Chennai,IN,Riverside\n",
    ));
    let cfg = sb.config();
    sb.run();
    let (n1, n2) = (master_of(&sb, "first.csv", 2), master_of(&sb, "first.csv", 3));
    let (r1, r2) = (master_of(&sb, "first.csv", 4), master_of(&sb, "first.csv", 5));
    assert_ne!(n1, n2);
    assert_ne!(r1, r2);
    let masters_before = sb.count("SELECT count(*) FROM masters");

    // `review list` shows both pairs, open, with the masters' names.
    let list = json(&["review", "list", &cfg, "--json"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    let pair_of = |a: &str| {
        list.iter()
            .find(|r| r["master_id"] == a || r["other_master_id"] == a)
            .unwrap_or_else(|| panic!("no review for {a}: {list:?}"))
            .clone()
    };
    let (neha, rahul) = (pair_of(&n1), pair_of(&r1));
    assert_eq!(neha["status"], "open");
    assert_eq!(neha["master_name"], "Neha Kapoor");
    let (neha_id, rahul_id) = (
        neha["review_id"].as_str().unwrap().to_string(),
        rahul["review_id"].as_str().unwrap().to_string(),
    );
    // `show` has both golden records and each one's records.
    let detail = json(&["review", "show", &cfg, &neha_id, "--json"]);
    assert_eq!(detail["masters"].as_array().unwrap().len(), 2, "{detail}");
    assert_eq!(detail["records"].as_array().unwrap().len(), 2, "{detail}");
    assert!(
        detail["review"]["explanation"]
            .as_str()
            .unwrap()
            .contains("email differs")
    );
    let o = leadflow(&["review", "show", &cfg, "rv-nope"], &[]);
    exited(&o, 3);

    let both_before = sb.sql(&format!(
        "SELECT * FROM masters WHERE master_id IN ('{n1}', '{n2}')"
    ));
    // Approve: the older (first) master survives and absorbs the other.
    let m = json(&[
        "review",
        "approve",
        &cfg,
        &neha_id,
        "--note",
        "same phone owner",
        "--json",
    ]);
    // Both were first seen in the same run: the smaller id survives.
    let (survivor, absorbed) = (
        m["master_id"].as_str().unwrap(),
        m["absorbed_master_id"].as_str().unwrap(),
    );
    assert_eq!(survivor, n1.as_str().min(n2.as_str()));
    assert_eq!(absorbed, n1.as_str().max(n2.as_str()));
    // `train` takes the approved pair's two records as a label.
    let model = sb.path().join("model.json");
    let o = leadflow(&["train", &cfg, "--out", model.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("and 1 approved review pairs"),
        "{}",
        text(&o)
    );
    assert!(std::fs::read_to_string(&model).unwrap().contains("\"format\""));
    // From here on n1 is the survivor; x_row / x_project are the absorbed one's.
    let (x_row, x_project) = if survivor == n1 {
        (3, "Hilltop")
    } else {
        (2, "Riverside")
    };
    let (n1, n2) = (survivor.to_string(), absorbed.to_string());
    let merge_event = m["event_id"].as_str().unwrap().to_string();
    assert_eq!(sb.count("SELECT count(*) FROM masters"), masters_before - 1);
    assert_eq!(
        sb.count(&format!("SELECT count(*) FROM masters WHERE master_id = '{n2}'")),
        0
    );
    assert_eq!(
        sb.count(&format!("SELECT count(*) FROM records WHERE master_id = '{n1}'")),
        2
    );
    let links = strings(
        &sb,
        &format!(
            "SELECT master_id, project FROM project_links WHERE master_id IN ('{n1}', '{n2}') ORDER BY project"
        ),
    );
    assert_eq!(links.len(), 2, "{links:?}");
    assert!(
        links.iter().all(|l| l[0].as_deref() == Some(n1.as_str())),
        "{links:?}"
    );
    let golden = strings(
        &sb,
        &format!("SELECT record_count, array_length(emails) FROM masters WHERE master_id = '{n1}'"),
    );
    assert_eq!(golden[0][0].as_deref(), Some("2"));
    assert_eq!(
        golden[0][1].as_deref(),
        Some("2"),
        "both e-mails on the golden record"
    );
    assert_eq!(
        one(
            &sb,
            &format!("SELECT status FROM review WHERE review_id = '{neha_id}'")
        ),
        "approved"
    );
    assert_eq!(
        sb.count("SELECT count(*) FROM outbox WHERE kind = 'master.merged'"),
        1
    );
    // The CLI delivered the event to the configured output: ids, no lead data.
    let events = std::fs::read_to_string(sb.path().join("events.jsonl")).unwrap();
    let merged: serde_json::Value = serde_json::from_str(
        events
            .lines()
            .find(|l| l.contains("master.merged"))
            .unwrap_or_else(|| panic!("{events}")),
    )
    .unwrap();
    assert_eq!(merged["master_id"], n1.as_str());
    assert_eq!(merged["absorbed_master_id"], n2.as_str());
    assert!(!events.contains("Neha"), "{events}");
    let o = leadflow(&["show", &cfg, "--id", &n2], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("merged into {n1}")),
        "{}",
        text(&o)
    );
    // A merge interrupted after re-pointing the records (the absorbed row
    // still in `masters`), done again: the same event finishes, nothing
    // counted twice.
    let links_before = strings(
        &sb,
        &format!("SELECT project, record_count FROM project_links WHERE master_id = '{n1}' ORDER BY project"),
    );
    let absorbed_row: Vec<_> = both_before
        .iter()
        .map(|b| {
            let ids = arrow::compute::cast(
                b.column_by_name("master_id").unwrap(),
                &arrow::datatypes::DataType::Utf8,
            )
            .unwrap();
            let keep: arrow::array::BooleanArray = (0..b.num_rows())
                .map(|i| Some(ids.as_string::<i32>().value(i) == n2))
                .collect();
            arrow::compute::filter_record_batch(b, &keep).unwrap()
        })
        .collect();
    put_back_masters(&sb, absorbed_row);
    assert_eq!(sb.count("SELECT count(*) FROM masters"), masters_before);
    let again = json(&["master", "merge", &cfg, &n1, &n2, "--json"]);
    assert_eq!(again["event_id"], merge_event.as_str(), "{again}");
    assert_eq!(sb.count("SELECT count(*) FROM masters"), masters_before - 1);
    assert_eq!(
        strings(
            &sb,
            &format!(
                "SELECT project, record_count FROM project_links WHERE master_id = '{n1}' ORDER BY project"
            ),
        ),
        links_before
    );
    // A decided review answers 4 (conflict).
    let o = leadflow(&["review", "approve", &cfg, &neha_id], &[]);
    exited(&o, 4);

    // Reject the other pair.
    let r = json(&["review", "reject", &cfg, &rahul_id, "--json"]);
    assert_eq!(r["status"], "rejected");
    let rejected = json(&["review", "list", &cfg, "--status", "rejected", "--json"]);
    assert_eq!(rejected.as_array().unwrap().len(), 1);

    // A later run: Neha by the absorbed master's e-mail, Rahul with the
    // phone of one and the e-mail of the other.
    std::fs::write(
        sb.path().join("drops/second.csv"),
        format!(
            "{HEADER}Neha Kapoor,,nehakapoor88@gmail.com,Delta,Delhi,IN,Riverside\n\
             Rahul Verma,+91 98204 44444,rverma77@gmail.com,Zeta,Chennai,IN,Riverside\n"
        ),
    )
    .unwrap();
    sb.run();
    assert_eq!(master_of(&sb, "second.csv", 2), n1, "linked to the survivor");
    assert_eq!(
        sb.count(&format!("SELECT count(*) FROM masters WHERE master_id = '{n2}'")),
        0,
        "the absorbed master stays gone"
    );
    let rahul_now = strings(
        &sb,
        &format!("SELECT DISTINCT master_id FROM records WHERE master_id IN ('{r1}', '{r2}')"),
    );
    assert_eq!(rahul_now.len(), 2, "the rejected pair is never joined");
    assert_eq!(
        one(
            &sb,
            &format!("SELECT status FROM review WHERE review_id = '{rahul_id}'")
        ),
        "rejected"
    );
    assert_eq!(
        sb.count(&format!(
            "SELECT count(*) FROM review WHERE review_id = '{rahul_id}'"
        )),
        1
    );

    // Split the later Neha record out: a new master named after it.
    let key = strings(
        &sb,
        "SELECT source, source_record_id FROM records WHERE source_file LIKE '%second.csv' AND source_row = 2",
    );
    let record = format!(
        "{}:{}",
        key[0][0].as_deref().unwrap(),
        key[0][1].as_deref().unwrap()
    );
    let s = json(&["master", "split", &cfg, &n1, "--record", &record, "--json"]);
    let split_id = s["new_master_id"].as_str().unwrap().to_string();
    assert_ne!(split_id, n1);
    assert_eq!(master_of(&sb, "second.csv", 2), split_id);
    assert_eq!(
        one(
            &sb,
            &format!("SELECT record_count FROM masters WHERE master_id = '{split_id}'")
        ),
        "1"
    );
    assert_eq!(
        sb.count("SELECT count(*) FROM outbox WHERE kind = 'master.split'"),
        1
    );
    let events = std::fs::read_to_string(sb.path().join("events.jsonl")).unwrap();
    assert!(
        events.contains(&format!("\"new_master_id\":\"{split_id}\"")),
        "{events}"
    );

    // Undo the approved merge: the absorbed master is back with its id,
    // its record and its project.
    let u = json(&["master", "unmerge", &cfg, &merge_event, "--json"]);
    assert_eq!(u["new_master_id"], n2.as_str());
    assert_eq!(master_of(&sb, "first.csv", x_row), n2);
    assert_eq!(master_of(&sb, "first.csv", 5 - x_row), n1);
    assert_eq!(
        sb.count(&format!("SELECT count(*) FROM masters WHERE master_id = '{n2}'")),
        1
    );
    assert_eq!(
        one(
            &sb,
            &format!("SELECT project FROM project_links WHERE master_id = '{n2}'")
        ),
        x_project
    );
    let o = leadflow(&["show", &cfg, "--id", &n2], &[]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("Neha"),
        "{}",
        text(&o)
    );
    // The approved pair is a question again (the merge that answered it is
    // undone); the rejected one stays rejected.
    assert_eq!(
        one(
            &sb,
            &format!("SELECT status FROM review WHERE review_id = '{neha_id}'")
        ),
        "open"
    );
    assert_eq!(
        one(
            &sb,
            &format!("SELECT status FROM review WHERE review_id = '{rahul_id}'")
        ),
        "rejected"
    );
    // Twice is refused.
    let o = leadflow(&["master", "unmerge", &cfg, &merge_event], &[]);
    exited(&o, 2);
    // And a manual merge by id works the same way, the kept one surviving.
    let m = json(&["master", "merge", &cfg, &n1, &n2, "--keep", &n2, "--json"]);
    assert_eq!(m["master_id"], n2.as_str());
    assert_eq!(master_of(&sb, "first.csv", 5 - x_row), n2);
}

/// The same operations over the daemon's HTTP API: 404 / 409 / 400 where
/// they belong, approve, reject, merge, split and undo.
#[test]
fn daemon_review_and_merge_endpoints() {
    use super::daemon::{Daemon, TOKEN, http_body, with_daemon_section};
    let sb = sandbox(concat!(
        "Neha Kapoor,+91 98202 22222,neha.k@gmail.com,Delta,Delhi,IN,\n",
        "Neha Kapoor,,nehakapoor88@gmail.com,Delta,Delhi,IN,\n",
        "Rahul Verma,+91 98204 44444,rahul.v@gmail.com,Zeta,Chennai,IN,\n",
        "Rahul Verma,,rverma77@gmail.com,Zeta,Chennai,IN,\n",
        "Asha Rao,+91 98205 55555,asha.rao@gmail.com,,Pune,IN,\n",
    ));
    sb.run();
    let port = with_daemon_section(&sb);
    let d = Daemon::start(&sb, port);
    let post = |path: &str, body: &str| http_body(port, "POST", path, Some(TOKEN), body).expect("request");

    let list = d.get("/api/v1/reviews");
    assert_eq!(list.status, 200, "{}", list.body);
    let reviews = list.json()["reviews"].as_array().unwrap().clone();
    assert_eq!(reviews.len(), 2, "{reviews:?}");
    let (a, b) = (
        reviews[0]["review_id"].as_str().unwrap().to_string(),
        reviews[1]["review_id"].as_str().unwrap().to_string(),
    );
    assert_eq!(d.get(&format!("/api/v1/reviews/{a}")).status, 200);
    assert_eq!(d.get("/api/v1/reviews/rv-unknown").status, 404);
    assert_eq!(d.get("/api/v1/reviews?status=maybe").status, 400);
    assert_eq!(post("/api/v1/reviews/rv-unknown/approve", "").status, 404);

    let m = post(
        &format!("/api/v1/reviews/{a}/approve"),
        r#"{"note":"checked by phone"}"#,
    );
    assert_eq!(m.status, 200, "{}", m.body);
    let m = m.json();
    assert_eq!(post(&format!("/api/v1/reviews/{a}/approve"), "").status, 409);
    let r = post(&format!("/api/v1/reviews/{b}/reject"), "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "rejected");
    assert_eq!(post(&format!("/api/v1/reviews/{b}/reject"), "").status, 409);
    let open = d.get("/api/v1/reviews").json();
    assert_eq!(open["reviews"].as_array().unwrap().len(), 0);
    assert_eq!(
        d.get("/api/v1/reviews?status=all").json()["reviews"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Undo the approval, then merge the same pair by hand and split it again.
    let ev = m["event_id"].as_str().unwrap();
    let u = post(&format!("/api/v1/merges/{ev}/undo"), "");
    assert_eq!(u.status, 200, "{}", u.body);
    assert_eq!(u.json()["new_master_id"], m["absorbed_master_id"]);
    assert_eq!(post("/api/v1/merges/e-unknown/undo", "").status, 404);
    let (s, x) = (
        m["master_id"].as_str().unwrap(),
        m["absorbed_master_id"].as_str().unwrap(),
    );
    let body = format!(r#"{{"masters": ["{s}", "{x}"], "keep": "{x}"}}"#);
    let mm = post("/api/v1/masters/merge", &body);
    assert_eq!(mm.status, 200, "{}", mm.body);
    assert_eq!(mm.json()["master_id"], x);
    assert_eq!(
        post("/api/v1/masters/merge", r#"{"masters": ["m-a"]}"#).status,
        400
    );
    assert_eq!(
        post("/api/v1/masters/merge", r#"{"masters": ["m-nope", "m-nope2"]}"#).status,
        404
    );
    // Not the record `x` was created from: that one cannot leave it.
    let keys = strings(
        &sb,
        &format!("SELECT source, source_record_id FROM records WHERE master_id = '{x}'"),
    );
    let key: Vec<_> = keys
        .into_iter()
        .filter(|k| {
            leadflow_transforms::dedupe::new_master_id(k[0].as_deref().unwrap(), k[1].as_deref().unwrap())
                != x
        })
        .collect();
    let body = format!(
        r#"{{"records": [{{"source": "{}", "source_record_id": "{}"}}]}}"#,
        key[0][0].as_deref().unwrap(),
        key[0][1].as_deref().unwrap()
    );
    let sp = post(&format!("/api/v1/masters/{x}/split"), &body);
    assert_eq!(sp.status, 200, "{}", sp.body);
    assert_eq!(sp.json()["master_id"], x);
    assert_eq!(post("/api/v1/masters/m-nope/split", &body).status, 404);
    assert_eq!(
        post(&format!("/api/v1/masters/{x}/split"), r#"{"records": []}"#).status,
        400
    );
}

#[test]
fn merges_and_splits_move_open_reminders_with_their_projects() {
    let sb = super::linkage::sandbox_with(
        concat!(
            "Neha Kapoor,+91 98202 22222,neha.k@gmail.com,Delta,Delhi,IN,Riverside\n",
            "Ravi Rao,+91 98203 33333,ravi.rao@gmail.com,Zeta,Pune,IN,Riverside\n",
            "Ravi Rao,+91 98203 33333,ravi.rao@gmail.com,Zeta,Pune,IN,Hilltop\n",
        ),
        "",
    );
    sb.edit_config(
        "    dedupe:\n",
        "    reminders:\n      contact_within: 1h\n    dedupe:\n",
    );
    let cfg = sb.config();
    sb.run();
    let (neha, ravi) = (master_of(&sb, "first.csv", 2), master_of(&sb, "first.csv", 3));
    assert_ne!(neha, ravi);
    let deadline_of = |master: &str, project: &str| {
        one(
            &sb,
            &format!(
                "SELECT CAST(deadline AS VARCHAR) FROM reminders WHERE master_id = '{master}' AND project = '{project}'"
            ),
        )
    };
    let hilltop_deadline = deadline_of(&ravi, "Hilltop");
    let merged = json(&["master", "merge", &cfg, &neha, &ravi, "--keep", &neha, "--json"]);
    let event = merged["event_id"].as_str().unwrap().to_string();

    // Ravi's reminders are closed as moved; Neha's Riverside reminder carries
    // on, and Hilltop (which Neha had none for) moved to her with its deadline.
    let rows = strings(
        &sb,
        &format!(
            "SELECT project, state, closed_by FROM reminders WHERE master_id = '{ravi}' ORDER BY project"
        ),
    );
    assert_eq!(rows.len(), 2, "{rows:?}");
    for r in &rows {
        assert_eq!(r[1].as_deref(), Some("moved"), "{rows:?}");
        assert_eq!(
            r[2].as_deref(),
            Some(format!("merge {event}").as_str()),
            "{rows:?}"
        );
    }
    let rows = strings(
        &sb,
        &format!("SELECT project, state FROM reminders WHERE master_id = '{neha}' ORDER BY project"),
    );
    assert_eq!(
        rows,
        vec![
            vec![Some("Hilltop".to_string()), Some("open".to_string())],
            vec![Some("Riverside".to_string()), Some("open".to_string())],
        ]
    );
    assert_eq!(deadline_of(&neha, "Hilltop"), hilltop_deadline);
    let dangling = "SELECT CAST(count(*) AS VARCHAR) FROM reminders r LEFT JOIN masters m ON r.master_id = m.master_id \
         WHERE r.state IN ('open', 'snoozed') AND m.master_id IS NULL";
    // Open reminders name only masters that exist.
    assert_eq!(one(&sb, dangling), "0");

    // Undone: Hilltop (only Ravi's record) goes back to Ravi with its
    // reminder and deadline; Riverside stays with Neha, who has a record there.
    json(&["master", "unmerge", &cfg, &event, "--json"]);
    let state_of = |master: &str, project: &str| {
        one(
            &sb,
            &format!("SELECT state FROM reminders WHERE master_id = '{master}' AND project = '{project}'"),
        )
    };
    assert_eq!(state_of(&ravi, "Hilltop"), "open");
    assert_eq!(deadline_of(&ravi, "Hilltop"), hilltop_deadline);
    assert_eq!(state_of(&neha, "Hilltop"), "moved");
    assert_eq!(state_of(&neha, "Riverside"), "open");
    assert_eq!(one(&sb, dangling), "0");
}

#[test]
fn a_rejected_pair_follows_its_master_into_a_merge() {
    let sb = sandbox(concat!(
        // rows 2-3: maybe one man -> a review, rejected below.
        "Rahul Verma,+91 98204 44444,rahul.v@gmail.com,Zeta,Chennai,IN,Riverside\n",
        "Rahul Verma,,rverma77@gmail.com,Zeta,Chennai,IN,Riverside\n",
        // row 4: someone else, who absorbs the first Rahul by hand.
        "Anita Das,+91 98205 55555,anita.das@gmail.com,Acme,Kolkata,IN,Riverside\n",
    ));
    let cfg = sb.config();
    sb.run();
    let (r1, r2, anita) = (
        master_of(&sb, "first.csv", 2),
        master_of(&sb, "first.csv", 3),
        master_of(&sb, "first.csv", 4),
    );
    let open = strings(&sb, "SELECT review_id FROM review WHERE status = 'open'");
    assert_eq!(open.len(), 1, "{open:?}");
    let rv = open[0][0].clone().unwrap();
    json(&["review", "reject", &cfg, &rv, "--json"]);
    let decided = one(
        &sb,
        &format!("SELECT CAST(decided_at AS VARCHAR) FROM review WHERE review_id = '{rv}'"),
    );
    let merged = json(&["master", "merge", &cfg, &anita, &r1, "--keep", &anita, "--json"]);

    // The old pair is superseded; "not the same" now holds for the survivor.
    assert_eq!(
        one(
            &sb,
            &format!("SELECT status FROM review WHERE review_id = '{rv}'")
        ),
        "superseded"
    );
    let (lo, hi) = if anita <= r2 { (&anita, &r2) } else { (&r2, &anita) };
    let carried = strings(
        &sb,
        &format!("SELECT status FROM review WHERE master_id = '{lo}' AND other_master_id = '{hi}'"),
    );
    assert_eq!(carried, vec![vec![Some("rejected".to_string())]]);
    // Nothing is left open.
    assert!(strings(&sb, "SELECT review_id FROM review WHERE status = 'open'").is_empty());

    // Undone: the first Rahul's own "not the same" is back as it was, and
    // the survivor's copy of it, which stood for him, is retired.
    json(&[
        "master",
        "unmerge",
        &cfg,
        merged["event_id"].as_str().unwrap(),
        "--json",
    ]);
    assert_eq!(
        strings(
            &sb,
            &format!("SELECT status, CAST(decided_at AS VARCHAR) FROM review WHERE review_id = '{rv}'")
        ),
        vec![vec![Some("rejected".to_string()), Some(decided)]]
    );
    let carried = strings(
        &sb,
        &format!("SELECT status FROM review WHERE master_id = '{lo}' AND other_master_id = '{hi}'"),
    );
    assert_eq!(carried, vec![vec![Some("superseded".to_string())]]);
    // A later run still keeps the rejected pair apart.
    sb.run();
    assert_ne!(master_of(&sb, "first.csv", 2), master_of(&sb, "first.csv", 3));
}
