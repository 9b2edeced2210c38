//! End-to-end: the real `leadflow` binary on real files into real Delta
//! tables, read back through DataFusion.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow::array::AsArray;
use arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;

mod reminders;
/// Review queue, merge, split and unmerge.
mod review;

const BIN: &str = env!("CARGO_BIN_EXE_leadflow");

mod daemon;
mod dynamics;
/// A second entity type (channel partners).
mod entities;
/// Shared pieces of the fake CRM servers.
mod fake;
mod hubspot;
/// Probabilistic dedupe (record linkage) end to end.
mod linkage;
mod salesforce;
mod sheets;
/// Survivorship rules per field.
mod survivorship;
mod zoho;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The binary under test. LEADFLOW_E2E_BIN overrides it: worktrees that
/// share one target dir can swap `target/debug/leadflow` during a run.
fn bin() -> String {
    std::env::var("LEADFLOW_E2E_BIN").unwrap_or_else(|_| BIN.to_string())
}

fn leadflow(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env("LEADFLOW_LOG", "warn,deltalake_core=error")
        .env("LEADFLOW_LOG_FORMAT", "text");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("leadflow runs")
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    // `leadflow schema | head -1`: the reader goes away before the writer
    // is done; the CLI must stop without a panic and its backtrace.
    let mut child = Command::new(bin())
        .arg("schema")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("leadflow runs");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("waits");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "stderr: {err}");
    assert!(!err.contains("Broken pipe"), "stderr: {err}");
}

fn text(o: &Output) -> String {
    format!(
        "status: {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The output of a command that must have exited with `code`, as text for
/// the checks that follow (a failure shows it whole).
fn exited(o: &Output, code: i32) -> String {
    let all = text(o);
    assert_eq!(o.status.code(), Some(code), "{all}");
    all
}

/// A work dir with the example drops copied in and a config pointing at them.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let drops = dir.path().join("drops");
        std::fs::create_dir_all(&drops).unwrap();
        for e in std::fs::read_dir(repo().join("examples/quickstart/drops")).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                std::fs::copy(e.path(), drops.join(e.file_name())).unwrap();
            }
        }
        let quickstart = std::fs::read_to_string(repo().join("configs/quickstart.yaml")).unwrap();
        let config = quickstart
            .replace("uri: ../warehouse", "uri: ./warehouse")
            .replace("path: ../examples/quickstart/drops", "path: ./drops");
        std::fs::write(dir.path().join("pipeline.yaml"), config).unwrap();
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn config(&self) -> String {
        self.path().join("pipeline.yaml").display().to_string()
    }

    /// Replace `from` (which must be there) by `to` in the sandbox config.
    fn edit_config(&self, from: &str, to: &str) {
        let cfg = std::fs::read_to_string(self.config()).unwrap();
        assert!(cfg.contains(from), "config has no {from:?}");
        std::fs::write(self.config(), cfg.replace(from, to)).unwrap();
    }

    /// Add one `sql:` stage to the pipeline.
    fn add_sql_stage(&self, sql: &str) {
        self.edit_config(
            "    validate:\n",
            &format!("    sql:\n      - {sql:?}\n    validate:\n"),
        );
    }

    fn run(&self) -> serde_json::Value {
        let o = leadflow(&["run", &self.config(), "--json"], &[]);
        assert!(o.status.success(), "{}", text(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json summary");
        v[0].clone()
    }

    /// Query the warehouse with SQL, every table registered by name. The
    /// config's `${VAR}` secrets are not needed to read tables: unset ones
    /// get a placeholder.
    fn sql(&self, sql: &str) -> Vec<arrow::record_batch::RecordBatch> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let env = |k: &str| std::env::var(k).ok().or_else(|| Some("unused".into()));
            let loaded =
                leadflow::config::load_with_env(&self.path().join("pipeline.yaml"), &env).expect("config");
            let wh = leadflow::open_warehouse(&loaded).await.expect("warehouse");
            let ctx = SessionContext::new();
            let tables: Vec<&str> = leadflow::table_specs().iter().map(|t| t.name).collect();
            wh.register(&ctx, &tables).await.unwrap();
            ctx.sql(sql).await.unwrap().collect().await.unwrap()
        })
    }

    fn count(&self, sql: &str) -> i64 {
        let b = self.sql(sql);
        b[0].column(0)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .value(0)
    }

    /// A stable text dump of the data tables (no run ids or times).
    fn dump(&self) -> String {
        let q = [
            "SELECT source, source_record_id, master_id, match_rule, phone, email_key, project FROM records ORDER BY source, source_record_id",
            "SELECT master_id, full_name, phone, email, phones, emails, company, country, city, website, record_count FROM masters ORDER BY master_id",
            "SELECT master_id, project, status, owner, record_count FROM project_links ORDER BY master_id, project",
            "SELECT source, source_record_id, source_row, raw, reason_codes FROM rejects ORDER BY source, source_record_id",
            "SELECT event_id, kind, master_id, rule FROM merges ORDER BY event_id",
            "SELECT source, path, content_hash, status FROM source_files ORDER BY path",
        ];
        q.iter()
            .map(|s| pretty_format_batches(&self.sql(s)).unwrap().to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[test]
fn second_run_of_the_same_input_changes_nothing() {
    let sb = Sandbox::new();
    let first = sb.run();
    assert!(first["rows_read"].as_u64().unwrap() > 0, "{first}");
    let before = sb.dump();
    let second = sb.run();
    assert_eq!(second["files_imported"], 0, "{second}");
    assert_eq!(second["files_unchanged"], first["files_imported"], "{second}");
    assert_eq!(sb.dump(), before);
    assert_eq!(sb.count("SELECT count(*) FROM runs"), 2);
}

#[test]
fn changed_file_is_imported_again_and_its_rows_dedupe() {
    let sb = Sandbox::new();
    let csv = sb.path().join("drops/extra.csv");
    std::fs::write(&csv, "Name,Mobile,Email,Project\nAsha Verma,+91 98111 22334,asha@example.in,Riverside Towers\nRohan Das,+91 98111 55667,,Riverside Towers\n").unwrap();
    let first = sb.run();
    let records = sb.count("SELECT count(*) FROM records");
    let masters = sb.count("SELECT count(*) FROM masters");
    // The same people again plus a new one, and Asha now as "Verma, Asha".
    std::fs::write(
        &csv,
        "Name,Mobile,Email,Project\nAsha Verma,+91 98111 22334,asha@example.in,Riverside Towers\nRohan Das,+91 98111 55667,,Riverside Towers\n\"Verma, Asha\",098111-22334,,Lakeside Villas\nNew Person,+91 98111 99887,,Riverside Towers\n",
    )
    .unwrap();
    let second = sb.run();
    assert_eq!(second["files_imported"], 1, "{second}");
    assert_eq!(second["records_known"], 2, "{second}");
    assert_eq!(second["matched_existing"], 1, "{second}");
    assert_eq!(second["masters_new"], 1, "{second}");
    assert_eq!(sb.count("SELECT count(*) FROM records"), records + 2);
    assert_eq!(sb.count("SELECT count(*) FROM masters"), masters + 1);
    let asha = sb.count("SELECT count(DISTINCT master_id) FROM records WHERE phone = '+919811122334'");
    assert_eq!(asha, 1);
    assert_eq!(
        sb.count("SELECT count(*) FROM project_links p JOIN masters m ON p.master_id = m.master_id WHERE m.phone = '+919811122334'"),
        2,
        "Asha is in two projects"
    );
    let _ = first;
}

/// Upserts leave the files they rewrote behind, and a crashed run can leave
/// a file it never committed; `vacuum` deletes both once they are older than
/// the retention, and the tables read the same after. The default retention
/// (7 days) keeps new files, a short one is refused unless the check is
/// skipped, and a dry run deletes nothing.
#[test]
fn vacuum_deletes_rewritten_and_orphaned_files_and_the_tables_read_the_same() {
    let sb = Sandbox::new();
    sb.run();
    let csv = sb.path().join("drops/extra.csv");
    std::fs::write(
        &csv,
        "Name,Mobile,Email,Project\nAsha Verma,+91 98111 22334,asha@example.in,Riverside Towers\n",
    )
    .unwrap();
    sb.run();
    // Asha again, in a second project: her master and link are upserted,
    // which rewrites the files holding them.
    std::fs::write(
        &csv,
        "Name,Mobile,Email,Project\nAsha Verma,+91 98111 22334,asha@example.in,Riverside Towers\n\"Verma, Asha\",098111-22334,,Lakeside Villas\n",
    )
    .unwrap();
    let third = sb.run();
    assert_eq!(third["matched_existing"], 1, "{third}");
    let orphan = sb
        .path()
        .join("warehouse/masters/part-00000-never-committed.snappy.parquet");
    std::fs::write(&orphan, b"PAR1 written by a run that crashed before its commit").unwrap();
    // Data files of every table folder.
    let parquet_files = || {
        std::fs::read_dir(sb.path().join("warehouse"))
            .unwrap()
            .map(|t| t.unwrap().path())
            .filter(|t| t.join("_delta_log").is_dir())
            .map(|t| {
                std::fs::read_dir(t)
                    .unwrap()
                    .filter(|e| {
                        e.as_ref()
                            .unwrap()
                            .file_name()
                            .to_string_lossy()
                            .ends_with(".parquet")
                    })
                    .count()
            })
            .sum::<usize>()
    };
    let before = sb.dump();
    let config = sb.config();
    let vacuum = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["vacuum", config.as_str(), "--json"];
        all.extend_from_slice(args);
        let o = leadflow(&all, &[]);
        exited(&o, 0);
        serde_json::from_slice(&o.stdout).expect("json outcome")
    };
    let files_of = |v: &serde_json::Value, table: &str| {
        v["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["table"] == table)
            .unwrap_or_else(|| panic!("no {table} in {v}"))["files"]
            .as_u64()
            .unwrap()
    };
    let total = |v: &serde_json::Value| {
        v["tables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["files"].as_u64().unwrap())
            .sum::<u64>()
    };

    // A crashed run's file from last week: the one file the default
    // retention (7 days) lets go.
    let old_orphan = sb
        .path()
        .join("warehouse/records/part-00000-crashed-last-week.snappy.parquet");
    orphan_from_last_week(&old_orphan);
    let kept = vacuum(&[]);
    assert_eq!(total(&kept), 1, "only last week's orphan is old enough: {kept}");
    assert_eq!(files_of(&kept, "records"), 1, "{kept}");
    assert!(!old_orphan.exists() && orphan.exists());
    let files_before = parquet_files();
    let refused = leadflow(&["vacuum", &config, "--retain", "0s"], &[]);
    let said = exited(&refused, 1);
    assert!(said.contains("shorter than the table's own"), "{said}");
    let dry = vacuum(&["--retain", "0s", "--skip-retention-check", "--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert!(
        files_of(&dry, "masters") >= 2,
        "the rewritten masters file and the orphan: {dry}"
    );
    assert!(files_of(&dry, "project_links") >= 1, "{dry}");
    assert_eq!(
        parquet_files(),
        files_before,
        "the refusal and the dry run deleted nothing"
    );
    assert!(orphan.exists());

    let done = vacuum(&["--retain", "0s", "--skip-retention-check"]);
    assert_eq!(done["tables"], dry["tables"], "deleted what the dry run listed");
    assert!(!orphan.exists(), "the uncommitted file is gone");
    assert_eq!(parquet_files(), files_before - total(&done) as usize);
    assert_eq!(sb.dump(), before, "the tables read the same");
    assert_eq!(
        total(&vacuum(&["--retain", "0s", "--skip-retention-check"])),
        0,
        "nothing left to delete"
    );
    let again = sb.run();
    assert_eq!(again["files_imported"], 0, "{again}");
    assert_eq!(sb.dump(), before, "runs go on after a vacuum");
}

/// A data file a run wrote eight days ago and never committed.
fn orphan_from_last_week(path: &Path) {
    std::fs::write(path, b"PAR1 left by a run that crashed eight days ago").unwrap();
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(8 * 24 * 3600))
        .unwrap();
}

/// Runs vacuum the warehouse by themselves once `warehouse.vacuum_every`
/// (default 24h) has passed since the last vacuum; a new warehouse starts
/// counting at its first run, and `0s` turns it off.
#[test]
fn a_run_vacuums_the_warehouse_once_vacuum_every_has_passed() {
    let sb = Sandbox::new();
    sb.run();
    let marker = sb.path().join("warehouse/_leadflow/vacuumed_at");
    let started = std::fs::read_to_string(&marker).expect("the first run starts the count");
    let orphan = sb
        .path()
        .join("warehouse/masters/part-00000-crashed-last-week.snappy.parquet");
    orphan_from_last_week(&orphan);
    sb.run();
    assert!(orphan.exists(), "not due yet");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), started);

    let yesterday = || (chrono::Utc::now() - chrono::Duration::hours(25)).to_rfc3339();
    std::fs::write(&marker, yesterday()).unwrap();
    sb.run();
    assert!(!orphan.exists(), "a day after the last vacuum, the run vacuumed");
    let at = chrono::DateTime::parse_from_rfc3339(std::fs::read_to_string(&marker).unwrap().trim()).unwrap();
    assert!(chrono::Utc::now().signed_duration_since(at) < chrono::Duration::minutes(5));

    sb.edit_config("uri: ./warehouse", "uri: ./warehouse\n  vacuum_every: 0s");
    orphan_from_last_week(&orphan);
    std::fs::write(&marker, yesterday()).unwrap();
    sb.run();
    assert!(orphan.exists(), "vacuum_every: 0s turns it off");
}

/// A commit staged but not applied names data files the log does not hold
/// yet: vacuum refuses until a run has finished it.
#[test]
fn vacuum_waits_for_a_staged_commit_to_be_finished() {
    let sb = Sandbox::new();
    let o = leadflow(
        &["run", &sb.config()],
        &[("LEADFLOW_FAULT_AFTER_TABLE", "masters")],
    );
    assert!(!o.status.success(), "the fault hook must abort: {}", text(&o));
    let vacuum = || {
        leadflow(
            &["vacuum", &sb.config(), "--retain", "0s", "--skip-retention-check"],
            &[],
        )
    };
    let refused = exited(&vacuum(), 1);
    assert!(refused.contains("staged but not applied"), "{refused}");
    assert!(refused.contains("quickstart"), "names the pipeline: {refused}");
    let again = sb.run();
    assert!(again["recovered_run"].is_string(), "{again}");
    exited(&vacuum(), 0);
}

#[test]
fn a_run_killed_during_its_commit_ends_like_an_uninterrupted_one() {
    let clean = Sandbox::new();
    clean.run();
    for table in ["records", "masters", "merges"] {
        let sb = Sandbox::new();
        let o = leadflow(&["run", &sb.config()], &[("LEADFLOW_FAULT_AFTER_TABLE", table)]);
        assert!(!o.status.success(), "the fault hook must abort: {}", text(&o));
        let again = sb.run();
        assert_eq!(again["status"], "succeeded", "{again}");
        assert!(
            again["recovered_run"].is_string(),
            "the next run finishes the staged commit: {again}"
        );
        assert_eq!(sb.dump(), clean.dump(), "after a crash after `{table}`");
        // And a third run still changes nothing.
        sb.run();
        assert_eq!(sb.dump(), clean.dump());
    }
}

#[test]
fn an_unparseable_file_is_quarantined_and_the_run_goes_on() {
    let sb = Sandbox::new();
    std::fs::write(
        sb.path().join("drops/broken.xlsx"),
        b"this is not a zip file at all",
    )
    .unwrap();
    let r = sb.run();
    assert_eq!(r["files_quarantined"], 1, "{r}");
    assert!(r["rows_read"].as_u64().unwrap() > 0);
    assert!(sb.path().join("drops/_quarantine/broken.xlsx").exists());
    let reason = std::fs::read_to_string(sb.path().join("drops/_quarantine/broken.xlsx.reason.txt")).unwrap();
    assert!(reason.contains("broken.xlsx"), "{reason}");
    assert_eq!(
        sb.count("SELECT count(*) FROM source_files WHERE status = 'quarantined'"),
        1
    );
}

#[test]
fn ragged_rows_and_invalid_contacts_land_in_rejects_with_reasons() {
    let sb = Sandbox::new();
    std::fs::write(
        sb.path().join("drops/ragged.csv"),
        "Name,Phone,Email\nGood One,+91 98765 43210,good@example.com\nToo,Many,Fields,Here\nNo Contact,,\nBad Mail,,bad@@mail\n",
    )
    .unwrap();
    sb.run();
    let b = sb.sql("SELECT source_row, arrow_cast(array_to_string(reason_codes, ','), 'Utf8') AS codes, arrow_cast(raw, 'Utf8') AS raw FROM rejects WHERE source_file LIKE '%ragged.csv' ORDER BY source_row");
    let out = pretty_format_batches(&b).unwrap().to_string();
    let rows = b[0].column(0).as_primitive::<arrow::datatypes::Int64Type>();
    let codes = b[0].column(1).as_string::<i32>();
    assert_eq!(rows.values().to_vec(), vec![3, 4, 5], "{out}");
    assert_eq!(codes.value(0), "ragged_row", "{out}");
    assert_eq!(codes.value(1), "require_any:phone|email", "{out}");
    assert_eq!(codes.value(2), "invalid_email,require_any:phone|email", "{out}");
    assert!(
        b[0].column(2).as_string::<i32>().value(2).contains("bad@@mail"),
        "raw values kept: {out}"
    );
}

#[test]
fn a_bad_config_lists_every_problem_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "pipelines:\n  - name: bad name\n    defaults:\n      phone_region: XX\n    sources:\n      - name: drops\n        files:\n          path: ./drops\n          colour: blue\n    validate:\n      required: [projekt]\n      require_any: [[phone, email]]\n    dedupe:\n      keys: [phone, fax]\n    token: ${LEADFLOW_TEST_UNSET_VAR}\n",
    )
    .unwrap();
    let o = leadflow(&["validate", path.to_str().unwrap()], &[]);
    exited(&o, 2);
    let err = String::from_utf8_lossy(&o.stderr);
    for needle in ["LEADFLOW_TEST_UNSET_VAR", "colour", "fax", "token"] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    assert!(err.contains("bad.yaml:9"), "line of `colour`: {err}");
    // run refuses too, before touching anything
    let o = leadflow(&["run", path.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(!dir.path().join("warehouse").exists());
}

#[test]
fn semantic_problems_are_listed_together() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "pipelines:\n  - name: bad name\n    defaults:\n      phone_region: XX\n    sources:\n      - name: drops\n        files:\n          path: ./drops\n    validate:\n      required: [projekt]\n    sql:\n      - \"DELETE FROM leads\"\n",
    )
    .unwrap();
    let o = leadflow(&["validate", path.to_str().unwrap()], &[]);
    exited(&o, 2);
    let err = String::from_utf8_lossy(&o.stderr);
    for needle in ["bad name", "XX", "projekt", "SELECT"] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}

#[test]
fn committed_json_schema_is_up_to_date() {
    let o = leadflow(&["schema"], &[]);
    assert!(o.status.success());
    let committed = std::fs::read_to_string(repo().join("configs/leadflow.schema.json")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        committed,
        "run `leadflow schema > configs/leadflow.schema.json`"
    );
}

#[test]
fn the_quickstart_config_validates() {
    let o = leadflow(
        &[
            "validate",
            repo().join("configs/quickstart.yaml").to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn sql_stage_can_call_the_normalisers() {
    let sb = Sandbox::new();
    sb.add_sql_stage("SELECT * EXCEPT (city), upper(city) AS city FROM leads WHERE country_code(country_raw) IS DISTINCT FROM 'KP'");
    sb.run();
    assert_eq!(
        sb.count("SELECT count(*) FROM records WHERE city IS NOT NULL AND city <> upper(city)"),
        0
    );
}

/// The bundled example, counted as examples/quickstart/README.md says.
#[test]
fn quickstart_tables_hold_what_the_example_promises() {
    let sb = Sandbox::new();
    let r = sb.run();
    assert_eq!(r["rows_read"], 52, "{r}");
    assert_eq!(r["rows_rejected"], 5, "{r}");
    assert_eq!(sb.count("SELECT count(*) FROM records"), 47);
    assert_eq!(sb.count("SELECT count(*) FROM masters"), 39);
    assert_eq!(sb.count("SELECT count(*) FROM masters WHERE record_count > 1"), 6);
    assert_eq!(sb.count("SELECT count(*) FROM project_links"), 45);
    assert_eq!(sb.count("SELECT count(*) FROM (SELECT master_id FROM project_links GROUP BY master_id HAVING count(*) = 2)"), 6);
    assert_eq!(
        sb.count("SELECT count(*) FROM project_links WHERE project = 'Riverside Towers'"),
        26
    );
    assert_eq!(sb.count("SELECT count(*) FROM rejects"), 5);
    // Vikram Mehta: one phone in four spellings, two projects.
    assert_eq!(
        sb.count("SELECT count(*) FROM records WHERE phone = '+919820012345'"),
        4
    );
    assert_eq!(
        sb.count("SELECT count(DISTINCT master_id) FROM records WHERE phone = '+919820012345'"),
        1
    );
    // The family e-mail and the switchboard keep people apart, and say so.
    assert_eq!(
        sb.count("SELECT count(*) FROM masters WHERE array_has(email_keys, 'sharmafamily@gmail.com')"),
        2
    );
    assert_eq!(
        sb.count("SELECT count(*) FROM masters WHERE phone = '+912266554400'"),
        2
    );
    assert!(sb.count("SELECT count(*) FROM merges WHERE kind = 'conflict'") >= 2);
    // Normalised values.
    for (sql, want) in [
        (
            "SELECT count(*) FROM records WHERE country_raw = 'hong kong sar' AND country = 'HK'",
            1,
        ),
        (
            "SELECT count(*) FROM records WHERE website = 'https://acme.io'",
            2,
        ),
        ("SELECT count(*) FROM records WHERE phone = '+919167234567'", 1),
        (
            "SELECT count(*) FROM records WHERE first_name = 'Zoë' AND last_name = 'Clarke'",
            2,
        ),
    ] {
        assert_eq!(sb.count(sql), want, "{sql}");
    }
    // Every reject says why, with the raw row.
    assert_eq!(
        sb.count("SELECT count(*) FROM rejects WHERE cardinality(reasons) = 0 OR raw IS NULL"),
        0
    );
    let runs = sb.sql("SELECT arrow_cast(status, 'Utf8'), rows_read, rows_rejected, masters_new FROM runs");
    assert_eq!(runs[0].column(0).as_string::<i32>().value(0), "succeeded");
}

#[test]
fn show_finds_a_person_by_any_spelling_of_their_phone() {
    let sb = Sandbox::new();
    sb.run();
    let o = leadflow(&["show", &sb.config(), "--phone", "098200-12345"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("Vikram Mehta"), "{out}");
    assert!(
        out.contains("Lakeside Villas") && out.contains("Riverside Towers"),
        "{out}"
    );
    assert!(out.contains("records (4)"), "{out}");
    let o = leadflow(&["show", &sb.config(), "--email", "nobody@example.org"], &[]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn processed_files_move_to_the_archive_after_the_commit() {
    let sb = Sandbox::new();
    sb.edit_config(
        "quarantine: _quarantine",
        "quarantine: _quarantine\n          archive: _archive",
    );
    let r = sb.run();
    assert_eq!(r["files_imported"], 3, "{r}");
    for f in [
        "2025-03-webform-riverside.csv",
        "2025-03-expo-lakeside.csv",
        "2025-03-walkins.xlsx",
    ] {
        assert!(sb.path().join("drops/_archive").join(f).exists(), "{f} archived");
        assert!(!sb.path().join("drops").join(f).exists(), "{f} moved away");
    }
    let again = sb.run();
    assert_eq!(again["files_seen"], 0, "the archive is not read again: {again}");
}

#[test]
fn secrets_never_reach_errors_or_logs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("drops")).unwrap();
    std::fs::write(
        dir.path().join("drops/a.csv"),
        "Name,Phone\nAsha Verma,+91 98111 22334\n",
    )
    .unwrap();
    let secret = "sk-TOPSECRET-7f3a9c";
    let good = "pipelines:\n  - name: p\n    sources:\n      - name: drops\n        files:\n          path: ./drops\n          storage_options:\n            aws_secret_access_key: ${LF_TEST_SECRET}\n";
    let bad = format!("{good}    dedupe:\n      keys: [fax]\n    colour: ${{LF_TEST_SECRET}}\n");
    let path = dir.path().join("p.yaml");
    std::fs::write(&path, bad).unwrap();
    let o = leadflow(
        &["validate", path.to_str().unwrap()],
        &[("LF_TEST_SECRET", secret)],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(!text(&o).contains(secret), "secret leaked: {}", text(&o));
    std::fs::write(&path, good).unwrap();
    let o = leadflow(
        &["run", path.to_str().unwrap(), "--log-format", "json"],
        &[
            ("LF_TEST_SECRET", secret),
            ("LEADFLOW_LOG", "debug,deltalake_core=error"),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains(secret), "secret leaked into logs");
}

#[test]
fn a_missing_drop_folder_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.yaml");
    std::fs::write(&path, "pipelines:\n  - name: p\n    sources:\n      - name: drops\n        files:\n          path: ./no-such-folder\n").unwrap();
    let o = leadflow(&["run", path.to_str().unwrap()], &[]);
    let all = exited(&o, 2);
    assert!(all.contains("no-such-folder"), "{all}");
}

#[test]
fn an_sql_stage_naming_an_unknown_column_is_a_config_error() {
    let sb = Sandbox::new();
    sb.add_sql_stage("SELECT * FROM leads WHERE no_such_column = 1");
    let o = leadflow(&["validate", &sb.config()], &[]);
    let all = exited(&o, 2);
    assert!(
        all.contains("no_such_column") && all.contains("pipelines.0.sql.0"),
        "{all}"
    );
}

#[test]
fn a_failing_run_exits_1_and_leaves_a_failed_runs_row() {
    let sb = Sandbox::new();
    sb.add_sql_stage("SELECT * FROM leads WHERE arrow_cast(city, 'Int64') > 0");
    let o = leadflow(&["run", &sb.config()], &[]);
    let all = exited(&o, 1);
    assert!(all.contains("sql stage 0"), "{all}");
    assert_eq!(
        sb.count("SELECT count(*) FROM runs WHERE status = 'failed' AND error LIKE '%sql stage 0%'"),
        1
    );
    assert_eq!(
        sb.count("SELECT count(*) FROM records"),
        0,
        "a failed run commits no data"
    );
}

#[test]
fn check_lists_a_file_drop_and_writes_nothing() {
    let sb = Sandbox::new();
    let o = leadflow(&["check", &sb.config(), "--json"], &[]);
    exited(&o, 0);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v[0]["kind"], "files", "{v}");
    assert_eq!(v[0]["ok"], true, "{v}");
    assert!(v[0]["detail"].as_str().unwrap().contains("file(s) listed"), "{v}");
    assert!(!sb.path().join("warehouse").exists(), "check writes nothing");
    let o = leadflow(&["check", &sb.config(), "--pipeline", "nope"], &[]);
    exited(&o, 2);
    sb.edit_config("dedupe:", "dedupe_typo:");
    let o = leadflow(&["check", &sb.config()], &[]);
    assert_eq!(o.status.code(), Some(2), "config invalid: {}", text(&o));
}
