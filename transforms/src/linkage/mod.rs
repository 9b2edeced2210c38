//! Probabilistic record linkage (Fellegi-Sunter): comparison levels per
//! field, blocking as DataFusion joins, match weights with term-frequency
//! adjustment, training without labels (u by random pairs, m by EM),
//! clustering with vetoes and exclusive nodes (existing masters), and a
//! field-by-field explanation of every score.
//!
//! The pieces: `config` (what is compared and blocked), `compare` (levels),
//! `frame` (the records, prepared once), `block` (candidate pairs),
//! `model` (versioned JSON, the built-in lead model), `score` (weights,
//! explanations, clustering), `train`.

pub mod block;
pub mod compare;
pub mod config;
pub mod frame;
pub mod model;
pub mod score;
pub mod train;

pub use config::{BlockPart, BlockTransform, BlockingRule, ComparisonConfig, ComparisonKind, LinkageConfig};
pub use frame::Frame;
pub use model::Model;
pub use score::{Clustering, ScoredPair, Scorer, cluster};
pub use train::{TrainReport, train};

#[derive(Debug, thiserror::Error)]
pub enum LinkageError {
    #[error("linkage input has no column `{0}` (check the comparison and blocking columns)")]
    MissingColumn(String),
    #[error("linkage model: {0}")]
    Model(String),
    #[error("linkage config: {0}")]
    Config(String),
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),
}

/// Candidate pairs of a frame, scored, and the clustering.
pub struct Linked {
    pub pairs: Vec<ScoredPair>,
    pub clustering: Clustering,
    /// Blocks skipped for being larger than `max_block_size`.
    pub skipped_blocks: u64,
}

/// Block, score and cluster a frame. Rows from `first_fixed` on are
/// existing masters (no pairs among them); `group` (optional) drops pairs
/// within one group (linking two data sets); `class` marks exclusive nodes;
/// `force` joins nodes first.
pub async fn link_frame(
    scorer: &Scorer,
    frame: &Frame,
    first_fixed: usize,
    group: Option<&[u32]>,
    class: &[Option<u32>],
    force: &[(u32, u32)],
) -> Result<Linked, LinkageError> {
    let clock = std::time::Instant::now();
    let pairs = candidates(&scorer.config, frame, first_fixed, group).await?;
    let blocked = clock.elapsed().as_secs_f64();
    let scored = scorer.score_all(frame, &pairs.0);
    let score_s = clock.elapsed().as_secs_f64() - blocked;
    tracing::debug!(
        pairs = scored.len(),
        block_seconds = blocked,
        score_seconds = score_s,
        "linkage pairs blocked and scored"
    );
    let c = &scorer.config;
    let clustering = cluster(
        frame.len,
        &scored,
        class,
        force,
        c.link_threshold,
        c.review_threshold,
    );
    Ok(Linked {
        pairs: scored,
        clustering,
        skipped_blocks: pairs.1,
    })
}

/// Blocked candidate pairs of a frame (see [`link_frame`]).
pub async fn candidates(
    config: &LinkageConfig,
    frame: &Frame,
    first_fixed: usize,
    group: Option<&[u32]>,
) -> Result<(Vec<(u32, u32)>, u64), LinkageError> {
    let (keys, rows) = block::block_keys(frame, &config.blocking);
    let (mut pairs, skipped) = block::candidate_pairs(keys, rows, first_fixed, config.max_block_size).await?;
    if let Some(g) = group {
        pairs.retain(|&(a, b)| g[a as usize] != g[b as usize]);
    }
    Ok((pairs, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    const COLS: [&str; 7] = [
        "first_name",
        "last_name",
        "phone",
        "email_key",
        "company",
        "city",
        "country",
    ];

    pub(crate) fn batch(rows: &[[&str; 7]]) -> RecordBatch {
        let schema = Arc::new(Schema::new(
            COLS.iter()
                .chain(&["full_name"])
                .map(|c| Field::new(*c, DataType::Utf8, true))
                .collect::<Vec<_>>(),
        ));
        let mut cols: Vec<ArrayRef> = (0..7)
            .map(|c| {
                Arc::new(
                    rows.iter()
                        .map(|r| (!r[c].is_empty()).then_some(r[c]))
                        .collect::<StringArray>(),
                ) as ArrayRef
            })
            .collect();
        cols.push(Arc::new(
            rows.iter()
                .map(|r| Some(format!("{} {}", r[0], r[1])))
                .collect::<StringArray>(),
        ));
        RecordBatch::try_new(schema, cols).unwrap()
    }

    /// [`batch`] of rows built as owned strings.
    pub(crate) fn batch_owned(rows: &[[String; 7]]) -> RecordBatch {
        let rows: Vec<[&str; 7]> = rows
            .iter()
            .map(|r| std::array::from_fn(|i| r[i].as_str()))
            .collect();
        batch(&rows)
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn links_fuzzy_duplicates_keeps_a_family_apart_and_explains() {
        let b = batch(&[
            [
                "Priya",
                "Sharma",
                "+919820012345",
                "priya.sharma@gmail.com",
                "Acme Pvt Ltd",
                "Mumbai",
                "IN",
            ],
            [
                "Priya",
                "Sharma",
                "",
                "priya.sharma@gmail.com",
                "ACME",
                "Mumbai",
                "IN",
            ],
            ["Priyaa", "Sharma", "+919820012345", "", "", "Mumbai", "IN"],
            [
                "Anil",
                "Sharma",
                "+919820012345",
                "priya.sharma@gmail.com",
                "",
                "Mumbai",
                "IN",
            ],
            [
                "Ravi",
                "Kumar",
                "+919811122233",
                "ravi@beta.in",
                "Beta",
                "Pune",
                "IN",
            ],
            ["Ravi", "Kumar", "", "", "Beta Inc", "Pune", "IN"],
            [
                "Meera",
                "Nair",
                "+919822233344",
                "meera@x.in",
                "Gamma",
                "Kochi",
                "IN",
            ],
        ]);
        let config = LinkageConfig::default();
        let scorer = Scorer::new(config.clone(), Model::default_leads()).unwrap();
        let frame = Frame::new(&config, &[(&b, &[])]).unwrap();
        let linked = rt()
            .block_on(link_frame(&scorer, &frame, frame.len, None, &[], &[]))
            .unwrap();
        let r = &linked.clustering.root;
        assert_eq!(r[0], r[1], "same e-mail, same name");
        assert_eq!(r[0], r[2], "same phone, name typo");
        assert_ne!(
            r[3], r[0],
            "family member on the shared phone and e-mail stays apart"
        );
        assert_eq!(r[4], r[5], "same name, company and city, no shared key");
        assert_ne!(r[6], r[0]);
        assert!(
            !linked.clustering.conflicts.is_empty(),
            "the family pair is a conflict"
        );
        let text = scorer.explain(&frame, 0, 2);
        assert!(text.contains("phone exact +"), "{text}");
        assert!(text.contains("name alike +"), "{text}");
        assert!(text.contains("email missing"), "{text}");
        let family = scorer.explain(&frame, 0, 3);
        assert!(family.contains("vetoed: name surname_only"), "{family}");
    }

    #[test]
    fn block_size_cap_skips_common_values() {
        let mut rows = Vec::new();
        for _ in 0..5 {
            rows.push(["A", "B", "+919800000001", "", "", "", ""]);
        }
        let b = batch(&rows);
        let mut config = LinkageConfig {
            max_block_size: 4,
            ..Default::default()
        };
        let frame = Frame::new(&config, &[(&b, &[])]).unwrap();
        let (pairs, skipped) = rt()
            .block_on(candidates(&config, &frame, frame.len, None))
            .unwrap();
        // phone, last 7 digits and initial+surname blocks all hold 5 > 4 rows.
        assert!(pairs.is_empty(), "{pairs:?}");
        assert!(skipped >= 2);
        config.max_block_size = 5;
        let (pairs, _) = rt()
            .block_on(candidates(&config, &frame, frame.len, None))
            .unwrap();
        assert_eq!(pairs.len(), 10);
        // Rows from 3 on are existing masters: no pairs among them.
        let (pairs, _) = rt().block_on(candidates(&config, &frame, 3, None)).unwrap();
        assert!(pairs.iter().all(|&(a, _)| a < 3));
        assert_eq!(pairs.len(), 9);
    }

    #[test]
    fn training_recovers_a_useful_model() {
        // 200 people, each twice with small changes, plus noise fields.
        let firsts = [
            "Priya", "Ravi", "Anil", "Meera", "Sunita", "Vikram", "Neha", "Rahul", "Kiran", "Asha",
        ];
        let lasts = [
            "Sharma", "Kumar", "Nair", "Iyer", "Patel", "Mehta", "Rao", "Das", "Gupta", "Khan",
        ];
        let cities = ["Mumbai", "Pune", "Delhi", "Chennai"];
        let mut owned: Vec<[String; 7]> = Vec::new();
        for p in 0..200usize {
            let (f, l) = (firsts[p % 10], lasts[(p / 10) % 10]);
            let phone = format!("+9198{:08}", p * 7919 % 100_000_000);
            let email = format!("{}.{}{}@gmail.com", f.to_lowercase(), l.to_lowercase(), p);
            let city = cities[p % 4];
            owned.push([
                f.into(),
                l.into(),
                phone.clone(),
                email.clone(),
                format!("Co{p}"),
                city.into(),
                "IN".into(),
            ]);
            owned.push([
                f.into(),
                l.into(),
                if p % 3 == 0 { String::new() } else { phone },
                email,
                String::new(),
                city.into(),
                "IN".into(),
            ]);
        }
        let b = batch_owned(&owned);
        let config = LinkageConfig::default();
        let frame = Frame::new(&config, &[(&b, &[])]).unwrap();
        let start = Model::initial(&config.comparisons, 1e-3);
        let (model, report) = rt()
            .block_on(train(&config, &start, &frame, None, &[], "test", "now"))
            .unwrap();
        assert!(report.em_iterations > 1);
        model.check(&config.comparisons).unwrap();
        let email = &model.comparisons[2].levels;
        assert!(
            email[0].m > 0.5,
            "an exact e-mail is common among matches: {email:?}"
        );
        assert!(email[0].u < 0.01, "and rare among random pairs: {email:?}");
        let back = Model::from_json(&model.to_json()).unwrap();
        assert_eq!(back.comparisons.len(), 6);
        assert_eq!(model.prior_records, 400, "its prior holds for the records it saw");

        // 30 pairs a person approved (rows 2p, 2p+1: the same e-mail) move
        // m toward what they show, EM's estimate counting for 20 pairs.
        let labels: Vec<(u32, u32)> = (0..30).map(|p| (2 * p, 2 * p + 1)).collect();
        let (labelled, report) = rt()
            .block_on(train(&config, &start, &frame, None, &labels, "test", "now"))
            .unwrap();
        assert_eq!(report.labelled_pairs, 30);
        let (m0, m1) = (email[0].m, labelled.comparisons[2].levels[0].m);
        let want = (m0 * 20.0 + 30.0) / 50.0;
        assert!(
            (m1 - want).abs() < 1e-4,
            "exact e-mail m {m0} -> {m1}, want {want}"
        );
        let differs = |m: &Model| m.comparisons[2].levels.last().unwrap().m;
        assert!(
            differs(&labelled) < differs(&model),
            "no labelled pair has another e-mail"
        );
    }

    /// A common name swapped counts no more than the same name in order,
    /// and the same pair weighs less among more records.
    #[test]
    fn a_common_swapped_name_and_a_larger_population_weigh_less() {
        let mut owned: Vec<[String; 7]> = vec![
            ["Sharma", "Rahul", "", "", "", "Mumbai", "IN"].map(String::from),
            ["Rahul", "Sharma", "", "", "", "Mumbai", "IN"].map(String::from),
        ];
        for i in 0..1200 {
            let (f, l) = if i % 20 == 0 {
                ("Rahul".to_string(), "Sharma".to_string())
            } else {
                (format!("Given{i}"), format!("Family{i}"))
            };
            owned.push([
                f,
                l,
                String::new(),
                String::new(),
                String::new(),
                "Pune".into(),
                "IN".into(),
            ]);
        }
        let b = batch_owned(&owned);
        let config = LinkageConfig::default();
        let frame = Frame::new(&config, &[(&b, &[])]).unwrap();
        let model = Model::default_leads();
        let weights = model.weights(&config.comparisons);
        let scorer = Scorer::new(config.clone(), model.clone()).unwrap();
        let text = scorer.explain(&frame, 0, 1);
        assert!(
            text.contains("name swapped") && text.contains("(shared by 61)"),
            "{text}"
        );
        let pair = scorer.score(&frame, 0, 1);
        let unadjusted = model.prior_weight() + weights[0][1] + weights[4][0] + weights[5][0];
        assert!(pair.weight < unadjusted - 1.0, "{} vs {unadjusted}", pair.weight);

        let big = Scorer::new(config, model.clone())
            .unwrap()
            .for_population(model.prior_records * 8);
        let scaled = big.score(&frame, 0, 1);
        assert!(
            (pair.weight - scaled.weight - 3.0).abs() < 1e-3,
            "8x the records: 3 bits less"
        );
        let text = big.explain(&frame, 0, 1);
        assert!(
            text.contains(&format!("({} records)", model.prior_records * 8)),
            "{text}"
        );
    }
}
