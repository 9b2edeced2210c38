//! End-to-end benchmark: generated messy leads (CSV) -> leadflow run -> Delta.
//!
//! cargo run --release --bin leadflow-bench -- [--rows 1000000] [--second 100000] [--dir /tmp/lf-bench]
//!
//! Prints rows/s for (1) N rows into an empty warehouse and (2) M new rows
//! into the warehouse the first step built, and the pairwise precision and
//! recall of the exact dedupe against the generator's truth files.

use std::collections::HashMap;
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

fn config(dir: &Path, drops: &str) -> PathBuf {
    let path = dir.join(format!("{drops}.yaml"));
    let yaml = format!(
        "warehouse:\n  uri: ./warehouse\npipelines:\n  - name: bench\n    defaults:\n      phone_region: IN\n      project: Bench\n    sources:\n      - name: {drops}\n        files:\n          path: ./{drops}\n          pattern: \"*.csv\"\n"
    );
    std::fs::write(&path, yaml).expect("write config");
    path
}

/// Pairwise precision/recall of record -> master against row -> person.
async fn score(dir: &Path, cfg: &Path, source: &str, truth: &Path) -> (f64, f64, f64) {
    let loaded = leadflow::config::load(cfg).expect("config");
    let wh = leadflow::open_warehouse(&loaded).await.expect("warehouse");
    let ctx = SessionContext::new();
    wh.register(&ctx, &["records"]).await.expect("register");
    let batches = ctx
        .sql(&format!(
            "SELECT source_row, master_id FROM records WHERE source = '{source}'"
        ))
        .await
        .expect("sql")
        .collect()
        .await
        .expect("collect");
    let truth_text = std::fs::read_to_string(truth).expect("truth file");
    let person: HashMap<i64, u64> = truth_text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (r, p) = l.split_once(',')?;
            Some((r.parse().ok()?, p.trim().parse().ok()?))
        })
        .collect();
    let mut by_master: HashMap<String, u64> = HashMap::new();
    let mut by_person: HashMap<u64, u64> = HashMap::new();
    let mut by_both: HashMap<(String, u64), u64> = HashMap::new();
    for b in &batches {
        let rows = b.column(0).as_primitive::<arrow::datatypes::Int64Type>();
        let masters = leadflow::run::utf8(b.column(1)).expect("text");
        for i in 0..b.num_rows() {
            let Some(&p) = person.get(&rows.value(i)) else {
                continue;
            };
            let m = masters.value(i).to_string();
            *by_master.entry(m.clone()).or_default() += 1;
            *by_person.entry(p).or_default() += 1;
            *by_both.entry((m, p)).or_default() += 1;
        }
    }
    let pairs = |n: &u64| n * n.saturating_sub(1) / 2;
    let tp: u64 = by_both.values().map(pairs).sum();
    let predicted: u64 = by_master.values().map(pairs).sum();
    let actual: u64 = by_person.values().map(pairs).sum();
    let p = tp as f64 / predicted.max(1) as f64;
    let r = tp as f64 / actual.max(1) as f64;
    let _ = dir;
    (p, r, 2.0 * p * r / (p + r).max(f64::MIN_POSITIVE))
}

fn main() {
    leadflow::install_crypto_provider();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LEADFLOW_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,deltalake_core=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rows: usize = arg("--rows", "1000000").parse().expect("--rows N");
    let second: usize = arg("--second", "100000").parse().expect("--second N");
    let dir = PathBuf::from(arg("--dir", "/tmp/leadflow-bench"));
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
        for (label, drops, n, truth) in [("empty warehouse", "first", g1.rows, &truth1), ("existing warehouse", "second", g2.rows, &truth2)] {
            let cfg = config(&dir, drops);
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
                "{n} rows into {label} ({masters_before} masters): {secs:.2}s = {:.0} rows/s end to end; {} rejected, {} new masters, {} matched existing, {} merged in run, {} conflicts",
                n as f64 / secs,
                r.rows_rejected,
                r.masters_new,
                r.matched_existing,
                r.merged_in_batch,
                r.conflicts
            );
            let (p, rc, f1) = score(&dir, &cfg, drops, truth).await;
            println!("  dedupe vs truth ({drops}): pairwise precision {p:.4}, recall {rc:.4}, F1 {f1:.4}");
        }
    });
}
