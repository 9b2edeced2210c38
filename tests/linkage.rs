//! Probabilistic dedupe through the real binary: a fuzzy match linked with
//! its explanation, an uncertain pair in `review`, a family on one phone
//! and e-mail kept apart, and a later file linked to the same master by a
//! fuzzy block key (e-mail local part) looked up in `masters`.

use arrow::array::{Array, AsArray};

use super::{Sandbox, leadflow, text};

pub(super) const HEADER: &str = "Full Name,Mobile,Email,Company,City,Country,Project\n";

fn sandbox(first: &str) -> Sandbox {
    sandbox_with(first, "")
}

/// A probabilistic pipeline over `drops/first.csv` (`HEADER` + `first`),
/// with `more_yaml` appended to its config (top-level sections).
pub(super) fn sandbox_with(first: &str, more_yaml: &str) -> Sandbox {
    let sb = Sandbox {
        dir: tempfile::tempdir().expect("tempdir"),
    };
    std::fs::create_dir_all(sb.path().join("drops")).unwrap();
    std::fs::write(sb.path().join("drops/first.csv"), format!("{HEADER}{first}")).unwrap();
    let yaml = "warehouse:\n  uri: ./warehouse\npipelines:\n  - name: leads\n    defaults:\n      phone_region: IN\n      project: Riverside\n    dedupe:\n      mode: probabilistic\n    sources:\n      - name: drops\n        files:\n          path: ./drops\n          pattern: \"*.csv\"\n";
    std::fs::write(sb.path().join("pipeline.yaml"), format!("{yaml}{more_yaml}")).unwrap();
    sb
}

/// Every row of `sql`, each value as text.
pub(super) fn strings(sb: &Sandbox, sql: &str) -> Vec<Vec<Option<String>>> {
    text_rows(sb.sql(sql))
}

/// Every row of `batches`, each value as text.
pub(super) fn text_rows(batches: Vec<arrow::record_batch::RecordBatch>) -> Vec<Vec<Option<String>>> {
    let mut out = Vec::new();
    for b in batches {
        let cols: Vec<_> = (0..b.num_columns())
            .map(|c| arrow::compute::cast(b.column(c), &arrow::datatypes::DataType::Utf8).unwrap())
            .collect();
        for i in 0..b.num_rows() {
            out.push(
                cols.iter()
                    .map(|c| {
                        let s = c.as_string::<i32>();
                        (!s.is_null(i)).then(|| s.value(i).to_string())
                    })
                    .collect(),
            );
        }
    }
    out
}

fn master_of(sb: &Sandbox, row: i64) -> String {
    strings(
        sb,
        &format!("SELECT master_id FROM records WHERE source_row = {row} AND source_file LIKE '%first.csv'"),
    )[0][0]
        .clone()
        .unwrap()
}

#[test]
fn probabilistic_dedupe_links_fuzzy_matches_reviews_uncertain_ones_and_keeps_families_apart() {
    let sb = sandbox(concat!(
        // rows 2-3: the same man, no shared phone or e-mail key: same name,
        // e-mail local part, company (suffix dropped) and city.
        "Vikram Mehta,+91 98201 11111,vikram.mehta@gmail.com,Acme,Mumbai,IN,\n",
        "\"MEHTA, Vikram\",,vikram.mehta@yahoo.com,ACME Pvt Ltd,Mumbai,IN,\n",
        // rows 4-5: same name, company and city, different e-mails, one
        // phone: maybe the same woman -> review.
        "Neha Kapoor,+91 98202 22222,neha.k@gmail.com,Delta,Delhi,IN,\n",
        "Neha Kapoor,,nehakapoor88@gmail.com,Delta,Delhi,IN,\n",
        // rows 6-7: a family on one phone and e-mail: kept apart.
        "Anil Sharma,+91 98203 33333,sharma.family@gmail.com,,Pune,IN,\n",
        "Sunita Sharma,+91 98203 33333,sharma.family@gmail.com,,Pune,IN,\n",
    ));
    let s = sb.run();
    assert_eq!(s["rows_rejected"].as_u64(), Some(0), "{s}");
    let (v1, v2) = (master_of(&sb, 2), master_of(&sb, 3));
    assert_eq!(v1, v2, "fuzzy match linked");
    let (n1, n2) = (master_of(&sb, 4), master_of(&sb, 5));
    assert_ne!(n1, n2, "an uncertain pair is not linked");
    let (a, b) = (master_of(&sb, 6), master_of(&sb, 7));
    assert_ne!(a, b, "siblings kept apart");

    // The link's decision, with its score and field-by-field explanation.
    let link = strings(
        &sb,
        "SELECT rule, score, explanation FROM merges WHERE kind = 'link'",
    );
    assert_eq!(link.len(), 1, "{link:?}");
    assert_eq!(link[0][0].as_deref(), Some("probabilistic"));
    let score: f64 = link[0][1].as_ref().unwrap().parse().unwrap();
    assert!(score >= 0.95, "{score}");
    let why = link[0][2].as_ref().unwrap();
    assert!(why.contains("email same_local +"), "{why}");
    assert!(why.contains("company exact +"), "{why}");
    assert!(why.contains("phone missing"), "{why}");

    // The uncertain pair waits in `review`, open, with its explanation.
    let review = strings(
        &sb,
        "SELECT master_id, other_master_id, status, score, explanation FROM review",
    );
    assert_eq!(review.len(), 1, "{review:?}");
    let r = &review[0];
    let pair = [r[0].clone().unwrap(), r[1].clone().unwrap()];
    assert!(pair.contains(&n1) && pair.contains(&n2), "{r:?}");
    assert_eq!(r[2].as_deref(), Some("open"));
    let p: f64 = r[3].as_ref().unwrap().parse().unwrap();
    assert!((0.5..0.95).contains(&p), "{p}");
    assert!(r[4].as_ref().unwrap().contains("email differs -"), "{r:?}");
    assert_eq!(sb.count("SELECT count(*) FROM merges WHERE kind = 'review'"), 1);
    // The family: a conflict decision, kept apart despite phone and e-mail.
    let conflict = strings(&sb, "SELECT explanation FROM merges WHERE kind = 'conflict'");
    assert!(!conflict.is_empty());
    assert!(
        conflict[0][0]
            .as_ref()
            .unwrap()
            .contains("vetoed: name surname_only"),
        "{conflict:?}"
    );

    // A later file: Vikram with a third e-mail sharing only the local part.
    // The master is found by that fuzzy key in `masters` and keeps its id;
    // the review pair is not written twice.
    std::fs::write(
        sb.path().join("drops/second.csv"),
        format!("{HEADER}Vikram Mehta,,vikram.mehta@outlook.com,Acme Inc,Mumbai,IN,\n"),
    )
    .unwrap();
    let s2 = sb.run();
    assert_eq!(s2["matched_existing"].as_u64(), Some(1), "{s2}");
    let later = strings(
        &sb,
        "SELECT master_id, match_rule FROM records WHERE source_file LIKE '%second.csv'",
    );
    assert_eq!(later[0][0].as_deref(), Some(v1.as_str()));
    assert_eq!(later[0][1].as_deref(), Some("probabilistic"));
    assert_eq!(sb.count("SELECT count(*) FROM review"), 1);
    let o = leadflow(&["show", &sb.config(), "--id", &v1], &[]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn a_record_linked_strongly_to_two_masters_merges_them_unless_rejected_or_siblings() {
    let sb = sandbox(concat!(
        // rows 2-3 and 4-5: maybe the same person (a phone, another
        // e-mail) -> two reviews; Rahul's is rejected below.
        "Neha Kapoor,+91 98202 22222,neha.k@gmail.com,Delta,Delhi,IN,Riverside\n",
        "Neha Kapoor,,nehakapoor88@gmail.com,Delta,Delhi,IN,Hilltop\n",
        "Rahul Verma,+91 98204 44444,rahul.v@gmail.com,Zeta,Chennai,IN,Riverside\n",
        "Rahul Verma,,rverma77@gmail.com,Zeta,Chennai,IN,Riverside\n",
        // rows 6-7: two sisters, one known by phone, one by e-mail.
        "Sunita Rao,+91 98206 66666,,,Pune,IN,Riverside\n",
        "Kiran Rao,,kiran.rao@gmail.com,,Pune,IN,Riverside\n",
    ));
    let cfg = sb.config();
    sb.run();
    let m: Vec<String> = (2..=7).map(|r| master_of(&sb, r)).collect();
    assert_eq!(
        m.iter().collect::<std::collections::HashSet<_>>().len(),
        6,
        "{m:?}"
    );
    let review_of = |a: &str| {
        strings(
            &sb,
            &format!("SELECT review_id FROM review WHERE master_id = '{a}' OR other_master_id = '{a}'"),
        )[0][0]
            .clone()
            .unwrap()
    };
    let (neha, rahul) = (review_of(&m[0]), review_of(&m[2]));
    let o = leadflow(&["review", "reject", &cfg, &rahul, "--note", "cousins"], &[]);
    assert!(o.status.success(), "{}", text(&o));

    // Each pair is bridged by a record with one's phone and the other's
    // e-mail; the sisters by a form a parent filled in without a name.
    std::fs::write(
        sb.path().join("drops/second.csv"),
        format!(
            "{HEADER}{}{}{}",
            "Neha Kapoor,+91 98202 22222,nehakapoor88@gmail.com,Delta,Delhi,IN,\n",
            "Rahul Verma,+91 98204 44444,rverma77@gmail.com,Zeta,Chennai,IN,\n",
            ",+91 98206 66666,kiran.rao@gmail.com,,Pune,IN,\n",
        ),
    )
    .unwrap();
    let s2 = sb.run();
    assert_eq!(s2["masters_merged"].as_u64(), Some(1), "{s2}");

    // Neha: one master now, holding all three records; the review approved
    // by the run, the merge in `merges` (undoable) and an event.
    let survivor = m[0].as_str().min(m[1].as_str());
    let neha_masters = strings(
        &sb,
        "SELECT DISTINCT master_id FROM records WHERE full_name = 'Neha Kapoor'",
    );
    assert_eq!(neha_masters, vec![vec![Some(survivor.to_string())]]);
    assert_eq!(
        sb.count(&format!(
            "SELECT count(*) FROM masters WHERE master_id IN ('{}', '{}')",
            m[0], m[1]
        )),
        1
    );
    let decided = strings(
        &sb,
        &format!("SELECT status FROM review WHERE review_id = '{neha}'"),
    );
    assert_eq!(decided[0][0].as_deref(), Some("approved"));
    let merge = strings(
        &sb,
        "SELECT event_id, explanation FROM merges WHERE kind = 'merge'",
    );
    assert_eq!(merge.len(), 1, "{merge:?}");
    assert!(
        merge[0][1].as_ref().unwrap().contains("leadflow run"),
        "{merge:?}"
    );
    let o = leadflow(&["master", "unmerge", &cfg, merge[0][0].as_deref().unwrap()], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        sb.count(&format!(
            "SELECT count(*) FROM masters WHERE master_id IN ('{}', '{}')",
            m[0], m[1]
        )),
        2
    );

    // Rahul: rejected by a person, so apart for good; the bridging record
    // joined one of the two.
    assert_eq!(
        strings(
            &sb,
            &format!("SELECT status FROM review WHERE review_id = '{rahul}'")
        )[0][0]
            .as_deref(),
        Some("rejected")
    );
    assert_eq!(
        sb.count(&format!(
            "SELECT count(*) FROM masters WHERE master_id IN ('{}', '{}')",
            m[2], m[3]
        )),
        2
    );
    // The sisters: the nameless record links to both, but their golden
    // records disagree on the name: the pair waits for a person.
    let sisters = strings(
        &sb,
        &format!(
            "SELECT status FROM review WHERE (master_id = '{a}' AND other_master_id = '{b}') OR (master_id = '{b}' AND other_master_id = '{a}')",
            a = m[4],
            b = m[5]
        ),
    );
    assert_eq!(sisters, vec![vec![Some("open".to_string())]]);
    assert_eq!(
        sb.count(&format!(
            "SELECT count(*) FROM masters WHERE master_id IN ('{}', '{}')",
            m[4], m[5]
        )),
        2
    );
}

#[test]
fn bridged_masters_merge_in_rounds_when_one_master_is_bridged_twice() {
    // Three masters of one woman kept apart by a first run: a phone and an
    // e-mail, and two other e-mails (each pair only a question for review).
    let sb = sandbox(concat!(
        "Asha Iyer,+91 98207 77777,asha.iyer@gmail.com,Orbit,Pune,IN,Riverside\n",
        "Asha Iyer,,ashaiyer.work@outlook.com,Orbit,Pune,IN,Hilltop\n",
        "Asha Iyer,,asha1990@yahoo.com,Orbit,Pune,IN,Lakeside\n",
    ));
    sb.run();
    let m: Vec<String> = (2..=4).map(|r| master_of(&sb, r)).collect();
    assert_eq!(
        m.iter().collect::<std::collections::HashSet<_>>().len(),
        3,
        "{m:?}"
    );
    // Her phone with each other e-mail: one master bridged to two others.
    std::fs::write(
        sb.path().join("drops/second.csv"),
        format!(
            "{HEADER}{}{}",
            "Asha Iyer,+91 98207 77777,ashaiyer.work@outlook.com,Orbit,Pune,IN,\n",
            "Asha Iyer,+91 98207 77777,asha1990@yahoo.com,Orbit,Pune,IN,\n",
        ),
    )
    .unwrap();
    let s2 = sb.run();
    assert_eq!(s2["masters_merged"].as_u64(), Some(2), "{s2}");
    assert_eq!(sb.count("SELECT count(DISTINCT master_id) FROM records"), 1);
    assert_eq!(sb.count("SELECT count(*) FROM masters"), 1);
    assert_eq!(sb.count("SELECT count(*) FROM records"), 5);
    let links = strings(&sb, "SELECT project FROM project_links ORDER BY project");
    assert_eq!(links.len(), 3, "{links:?}");
    assert_eq!(sb.count("SELECT count(*) FROM merges WHERE kind = 'merge'"), 2);
    assert_eq!(
        sb.count("SELECT count(*) FROM review WHERE status = 'open'"),
        0,
        "{:?}",
        strings(
            &sb,
            "SELECT review_id, master_id, other_master_id, status FROM review"
        )
    );
}
