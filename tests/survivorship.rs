//! Survivorship per field through the real binary: `most_frequent` weighs
//! every earlier record of a master (read back from `records`), not only
//! its golden record; the values a golden record overruled are written to
//! `merges`; bad rules are config errors.

use super::linkage::{HEADER, sandbox_with, strings};
use super::{exited, leadflow};

#[test]
fn most_frequent_counts_earlier_records_and_overruled_values_reach_merges() {
    let sb = sandbox_with(
        concat!(
            "Anil Mehta,+91 98100 11111,anil@acme.in,Acme,Pune,IN,Riverside\n",
            "Anil Mehta,+91 98100 11111,anil@acme.in,Acme,Pune,IN,Hilltop\n",
        ),
        "survivorship:\n  fields:\n    company: most_frequent\n",
    );
    sb.run();
    std::fs::write(
        sb.path().join("drops/second.csv"),
        format!(
            "{HEADER}Anil Mehta,+91 98100 11111,anil@acme.in,Acme Consulting Services,Mumbai,IN,Riverside\n"
        ),
    )
    .unwrap();
    sb.run();
    let m = strings(&sb, "SELECT master_id, company, city, record_count FROM masters");
    assert_eq!(m.len(), 1, "{m:?}");
    // Acme twice against once: the earlier records count, although the
    // golden record alone would tie with the new value (and newest win).
    assert_eq!(m[0][1].as_deref(), Some("Acme"));
    // Fields without a rule: newest.
    assert_eq!(m[0][2].as_deref(), Some("Mumbai"));
    assert_eq!(m[0][3].as_deref(), Some("3"));

    let rows = strings(
        &sb,
        &format!(
            "SELECT explanation FROM merges WHERE kind = 'survivorship' AND master_id = '{}' ORDER BY created_at DESC",
            m[0][0].as_deref().unwrap()
        ),
    );
    assert!(!rows.is_empty(), "no survivorship row");
    let v: serde_json::Value = serde_json::from_str(rows[0][0].as_deref().unwrap()).unwrap();
    assert_eq!(v["company"]["kept"], "Acme");
    assert_eq!(v["company"]["rule"], "most_frequent");
    assert_eq!(v["company"]["others"][0], "Acme Consulting Services");
    assert_eq!(v["city"]["kept"], "Mumbai");
    assert_eq!(v["city"]["others"][0], "Pune");
    assert!(v.get("name").is_none(), "names agree: {v}");
}

#[test]
fn bad_survivorship_rules_are_listed_before_any_work() {
    let sb = sandbox_with(
        "Anil Mehta,+91 98100 11111,anil@acme.in,Acme,Pune,IN,Riverside\n",
        "survivorship:\n  fields:\n    name: source_priority\n  source_priority: [drops, hubspot_crm, drops]\n",
    );
    let o = leadflow(&["validate", &sb.config()], &[]);
    exited(&o, 2);
    let err = String::from_utf8_lossy(&o.stderr);
    for needle in ["survivorship.source_priority", "hubspot_crm", "listed twice"] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    sb.edit_config("name: source_priority", "company: oldest");
    let o = leadflow(&["run", &sb.config()], &[]);
    exited(&o, 2);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("oldest"), "{err}");
    assert!(!sb.path().join("warehouse").exists());
}
