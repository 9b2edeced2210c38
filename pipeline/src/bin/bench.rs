//! End-to-end benchmark: generated messy leads (CSV) -> leadflow run -> Delta.
//!
//! cargo run --release --bin leadflow-bench -- [--rows 1000000] [--second 100000] [--dir /tmp/lf-bench]
//!     [--mode exact|probabilistic] [--second-mode exact|probabilistic]
//!     [--survivorship newest|most_frequent|longest]
//!
//! Prints rows/s for (1) N rows into an empty warehouse and (2) M new rows
//! into the warehouse the first step built, and the pairwise precision and
//! recall of the dedupe against the generator's truth files. `--mode` is the
//! dedupe mode of both runs (default exact); `--second-mode` overrides it for
//! the second, so a probabilistic link against a big warehouse can be timed
//! without a probabilistic first load. `--survivorship` is the default
//! survivorship rule of both runs (any rule but `newest` makes the second
//! run read back the earlier records of the masters it touches).

use std::path::{Path, PathBuf};
use std::time::Instant;

use arrow::array::AsArray;
use datafusion::prelude::SessionContext;
use leadflow::generate::{GenerateOptions, generate_csv};
use leadflow::run::{RunOptions, run_pipeline};

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

fn config(dir: &Path, drops: &str, mode: &str, rule: &str) -> PathBuf {
    let path = dir.join(format!("{drops}.yaml"));
    let yaml = format!(
        "warehouse:\n  uri: ./warehouse\nsurvivorship:\n  default: {rule}\npipelines:\n  - name: bench\n    dedupe:\n      mode: {mode}\n    defaults:\n      phone_region: IN\n      project: Bench\n    sources:\n      - name: {drops}\n        files:\n          path: ./{drops}\n          pattern: \"*.csv\"\n"
    );
    std::fs::write(&path, yaml).expect("write config");
    path
}

/// Pairwise precision/recall of record -> master against row -> person
/// (the scoring `leadflow eval` uses), over the records of `sources`
/// (each with its truth file; rows are told apart by source, people are
/// shared across the files, so links to earlier people count).
async fn score(cfg: &Path, sources: &[(&str, &Path)]) -> leadflow::eval::Scores {
    let loaded = leadflow::config::load(cfg).expect("config");
    let wh = leadflow::open_warehouse(&loaded).await.expect("warehouse");
    let ctx = SessionContext::new();
    wh.register(&ctx, &["records"]).await.expect("register");
    let mut person = std::collections::HashMap::new();
    let mut assigned: Vec<(i64, String)> = Vec::new();
    for (k, (source, truth)) in sources.iter().enumerate() {
        // Row numbers of file k live at k * 10^9 + row.
        let base = k as i64 * 1_000_000_000;
        let t = leadflow::eval::read_truth(truth).expect("truth file");
        person.extend(t.into_iter().map(|(row, p)| (base + row, p)));
        let batches = ctx
            .sql(&format!(
                "SELECT source_row, master_id FROM records WHERE source = '{source}'"
            ))
            .await
            .expect("sql")
            .collect()
            .await
            .expect("collect");
        for b in &batches {
            let rows = b.column(0).as_primitive::<arrow::datatypes::Int64Type>();
            let m = leadflow::run::utf8(b.column(1)).expect("text");
            assigned.extend((0..b.num_rows()).map(|i| (base + rows.value(i), m.value(i).to_string())));
        }
    }
    leadflow::eval::pairwise(assigned.iter().map(|(r, m)| (*r, m.as_str())), &person)
}

fn main() {
    leadflow::memory::tune_allocator();
    leadflow::install_crypto_provider();
    tracing_subscriber::fmt()
        .with_env_filter(leadflow::log_filter("warn"))
        .with_writer(std::io::stderr)
        .init();
    let rows: usize = arg("--rows", "1000000").parse().expect("--rows N");
    let second: usize = arg("--second", "100000").parse().expect("--second N");
    let dir = PathBuf::from(arg("--dir", "/tmp/leadflow-bench"));
    let mode = arg("--mode", "exact");
    let second_mode = arg("--second-mode", &mode);
    let rule = arg("--survivorship", "newest");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("first")).expect("bench dir");
    std::fs::create_dir_all(dir.join("second")).expect("bench dir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let t = Instant::now();
    let g1 = generate_csv(
        &dir.join("first/leads.csv"),
        &GenerateOptions {
            rows,
            seed: 7,
            ..Default::default()
        },
    )
    .expect("generate");
    let bytes = std::fs::metadata(dir.join("first/leads.csv"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "generated {} rows ({} people, {:.1} MB) in {:.2}s",
        g1.rows,
        g1.people,
        bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    let g2 = generate_csv(
        &dir.join("second/leads.csv"),
        &GenerateOptions {
            rows: second,
            seed: 7,
            id_offset: 10_000_000,
            existing_people: g1.people as u64,
            ..Default::default()
        },
    )
    .expect("generate");

    // Answer keys live beside the drops, not in them (they are CSV too).
    let truth1 = dir.join("first.truth.csv");
    let truth2 = dir.join("second.truth.csv");
    std::fs::rename(&g1.truth_path, &truth1).expect("move truth");
    std::fs::rename(&g2.truth_path, &truth2).expect("move truth");
    rt.block_on(async {
        let opts = RunOptions { trigger: "bench".into(), ..Default::default() };
        for (label, drops, n, truth, mode) in [
            ("empty warehouse", "first", g1.rows, &truth1, &mode),
            ("existing warehouse", "second", g2.rows, &truth2, &second_mode),
        ] {
            let cfg = config(&dir, drops, mode, &rule);
            let loaded = leadflow::config::load(&cfg).expect("config");
            let wh = leadflow::open_warehouse(&loaded).await.expect("warehouse");
            let masters_before = {
                let ctx = SessionContext::new();
                wh.register(&ctx, &["masters"]).await.expect("register");
                let b = ctx.sql("SELECT count(*) FROM masters").await.unwrap().collect().await.unwrap();
                b[0].column(0).as_primitive::<arrow::datatypes::Int64Type>().value(0)
            };
            let t = Instant::now();
            let r = run_pipeline(&loaded, &loaded.config.pipelines[0], &wh, &opts).await;
            let secs = t.elapsed().as_secs_f64();
            assert!(r.succeeded(), "run failed: {:?}", r.error);
            println!(
                "{n} rows into {label} ({masters_before} masters, {mode} dedupe, survivorship {rule}): {secs:.2}s = {:.0} rows/s end to end; {} rejected, {} new masters, {} matched existing, {} merged in run, {} conflicts",
                n as f64 / secs,
                r.rows_rejected,
                r.masters_new,
                r.matched_existing,
                r.merged_in_batch,
                r.conflicts
            );
            if r.masters_merged > 0 {
                // The run (link + commit) and, after it, the merges of the
                // masters a record linked strongly to both.
                println!(
                    "  of which the run {:.2}s, then {} pairs of existing masters merged in {:.2}s",
                    r.duration_seconds,
                    r.masters_merged,
                    secs - r.duration_seconds
                );
            }
            let s = score(&cfg, &[(drops, truth)]).await;
            println!("  dedupe vs truth ({drops}): {s}");
            if drops == "second" {
                let s = score(&cfg, &[("first", &truth1), ("second", &truth2)]).await;
                println!("  dedupe vs truth (first + second, links across them count): {s}");
            }
        }
    });
}
