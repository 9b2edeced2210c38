//! How `leadflow review ...` and `leadflow master ...` print.

use super::{MergeOutcome, Review, ReviewDetail, SplitOutcome};

fn time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| "-".into())
}

/// A table of reviews for a terminal.
pub fn print_list(rows: &[Review]) {
    if rows.is_empty() {
        println!("no reviews");
        return;
    }
    println!(
        "{:<35}  {:<8}  {:>5}  {:<20}  {:<26}  {:<26}  {:<26}  other_name",
        "review_id", "status", "score", "created", "master_id", "other_master_id", "master_name"
    );
    for r in rows {
        println!(
            "{:<35}  {:<8}  {:>5}  {:<20}  {:<26}  {:<26}  {:<26}  {}",
            r.review_id,
            r.status,
            r.score.map(|s| format!("{s:.2}")).unwrap_or_else(|| "-".into()),
            time(r.created_at),
            r.master_id,
            r.other_master_id,
            r.master_name.as_deref().unwrap_or("-"),
            r.other_name.as_deref().unwrap_or("-"),
        );
    }
}

fn field(v: &serde_json::Value, k: &str) -> String {
    v[k].as_str().unwrap_or("-").to_string()
}

/// One review: the pair, its score and explanation, both golden records
/// and their records.
pub fn print_detail(d: &ReviewDetail) {
    let r = &d.review;
    println!("review {} ({})", r.review_id, r.status);
    println!(
        "score {}  created {}  decided {}",
        r.score.map(|s| format!("{s:.3}")).unwrap_or_else(|| "-".into()),
        time(r.created_at),
        time(r.decided_at)
    );
    if let Some(e) = &r.explanation {
        println!("why: {e}");
    }
    for id in [&r.master_id, &r.other_master_id] {
        println!();
        match d.masters.iter().find(|m| m["master_id"] == id.as_str()) {
            Some(m) => {
                println!("master {id}");
                for k in [
                    "full_name",
                    "phone",
                    "email",
                    "phones",
                    "emails",
                    "company",
                    "job_title",
                    "city",
                    "country",
                    "record_count",
                    "first_seen",
                    "last_seen",
                ] {
                    println!("  {k:<13} {}", field(m, k));
                }
            }
            None => println!("master {id} (no longer in masters: merged or removed)"),
        }
        println!("  records:");
        for rec in d.records.iter().filter(|x| x["master_id"] == id.as_str()) {
            println!(
                "    {}:{}  {}  {}  {}",
                field(rec, "source"),
                field(rec, "source_record_id"),
                field(rec, "full_name"),
                field(rec, "phone"),
                field(rec, "email")
            );
        }
    }
}

pub fn print_merge(m: &MergeOutcome) {
    println!(
        "merged {} into {} ({} records moved, {} records now); undo with: leadflow master unmerge CONFIG {}",
        m.absorbed_master_id, m.master_id, m.records_moved, m.record_count, m.event_id
    );
}

pub fn print_split(s: &SplitOutcome) {
    println!(
        "split {} records of {} into {} (event {})",
        s.records_moved, s.master_id, s.new_master_id, s.event_id
    );
}

/// `SOURCE:RECORD_ID` for `--record`; the record id may hold colons.
pub fn parse_record(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a.to_string(), b.to_string())),
        _ => Err(format!("{s:?}: say SOURCE:RECORD_ID, e.g. drops:3f2a...")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keys_split_at_the_first_colon() {
        assert_eq!(
            parse_record("hubspot:123:4").unwrap(),
            ("hubspot".into(), "123:4".into())
        );
        assert!(parse_record("nocolon").unwrap_err().contains("SOURCE:RECORD_ID"));
        assert!(parse_record(":x").is_err());
    }
}
