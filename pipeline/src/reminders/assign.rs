//! Owner assignment: an enrichment of the run's project links. A link that
//! has an owner (from the lead data, or from an earlier run: sticky) keeps
//! it; the others get the next owner of their project's rotation.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};

use super::ReminderError;
use super::config::AssignmentConfig;

/// Fill the `owner` of links without one, round-robin per project.
/// `assigned_before[project]` is how many links of the project already have
/// an owner in the warehouse: the rotation continues from there, so it does
/// not restart at the first owner on every run. Links are taken in batch
/// order (the link stage sorts them by master and project), so a re-run
/// assigns the same owners. Returns the batch and how many were assigned.
pub fn assign_owners(
    links: &RecordBatch,
    assigned_before: &HashMap<String, u64>,
    cfg: &AssignmentConfig,
) -> Result<(RecordBatch, usize), ReminderError> {
    let col = |name: &str| {
        links
            .schema()
            .index_of(name)
            .map_err(|_| ReminderError::Schema(format!("project links lack column `{name}`")))
    };
    let (pi, oi) = (col("project")?, col("owner")?);
    let project = arrow::compute::cast(links.column(pi), &arrow::datatypes::DataType::Utf8)?;
    let project = project.as_string::<i32>();
    let owner = arrow::compute::cast(links.column(oi), &arrow::datatypes::DataType::Utf8)?;
    let owner = owner.as_string::<i32>();
    let mut next: HashMap<&str, u64> = HashMap::new();
    let mut assigned = 0;
    let out: StringArray = (0..links.num_rows())
        .map(|i| {
            if !owner.is_null(i) && !owner.value(i).is_empty() {
                return Some(owner.value(i).to_string());
            }
            if project.is_null(i) {
                return None;
            }
            let p = project.value(i);
            let owners = cfg.owners_for(p)?;
            let k = next
                .entry(p)
                .or_insert_with(|| assigned_before.get(p).copied().unwrap_or(0));
            let o = owners[(*k % owners.len() as u64) as usize].clone();
            *k += 1;
            assigned += 1;
            Some(o)
        })
        .collect();
    let mut cols: Vec<ArrayRef> = links.columns().to_vec();
    cols[oi] = arrow::compute::cast(&(Arc::new(out) as ArrayRef), links.schema().field(oi).data_type())?;
    Ok((RecordBatch::try_new(links.schema(), cols)?, assigned))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use leadflow_transforms::schema::PROJECT_LINKS_SCHEMA;

    /// (master_id, project, owner)
    type Link<'a> = (&'a str, &'a str, Option<&'a str>);

    fn links(rows: &[Link]) -> RecordBatch {
        let n = rows.len();
        let s = |f: &dyn Fn(&Link) -> Option<String>| -> ArrayRef {
            Arc::new(rows.iter().map(f).collect::<StringArray>())
        };
        RecordBatch::try_new(
            PROJECT_LINKS_SCHEMA.clone(),
            vec![
                s(&|r| Some(r.0.to_string())),
                s(&|r| Some(r.1.to_string())),
                s(&|_| Some("new".into())),
                s(&|r| r.2.map(str::to_string)),
                Arc::new(Int64Array::from(vec![1; n])),
                Arc::new(arrow::array::TimestampMicrosecondArray::from(vec![0; n]).with_timezone("UTC")),
                Arc::new(arrow::array::TimestampMicrosecondArray::from(vec![0; n]).with_timezone("UTC")),
                s(&|_| Some("r1".into())),
            ],
        )
        .unwrap()
    }

    fn owners(b: &RecordBatch) -> Vec<Option<String>> {
        let o = b.column(3).as_string::<i32>();
        (0..b.num_rows())
            .map(|i| (!o.is_null(i)).then(|| o.value(i).to_string()))
            .collect()
    }

    fn cfg() -> AssignmentConfig {
        serde_norway::from_str("owners:\n  Riverside Towers: [asha, ravi]\n  \"*\": [desk]\n").unwrap()
    }

    #[test]
    fn round_robin_per_project_and_sticky() {
        let b = links(&[
            ("m1", "Riverside Towers", None),
            ("m2", "Lakeside Villas", None),
            ("m2", "Riverside Towers", None),
            ("m3", "Riverside Towers", Some("meera")),
            ("m4", "Riverside Towers", None),
        ]);
        let (out, n) = assign_owners(&b, &HashMap::new(), &cfg()).unwrap();
        assert_eq!(n, 4);
        let o = |s: &str| Some(s.to_string());
        // An owner from the data (meera) stays and does not take a turn.
        assert_eq!(
            owners(&out),
            vec![o("asha"), o("desk"), o("ravi"), o("meera"), o("asha")]
        );
        // The next run continues the rotation where the warehouse stands
        // (4 Riverside links owned so far); links that already have their
        // owner (sticky, carried by the link stage) keep it.
        let before = HashMap::from([("Riverside Towers".to_string(), 4u64)]);
        let b2 = links(&[
            ("m1", "Riverside Towers", Some("asha")),
            ("m5", "Riverside Towers", None),
            ("m6", "Riverside Towers", None),
        ]);
        let (out2, n2) = assign_owners(&b2, &before, &cfg()).unwrap();
        assert_eq!(n2, 2);
        assert_eq!(owners(&out2), vec![o("asha"), o("asha"), o("ravi")]);
        // Deterministic: the same input assigns the same owners.
        assert_eq!(
            owners(&assign_owners(&b, &HashMap::new(), &cfg()).unwrap().0),
            owners(&out)
        );
    }

    #[test]
    fn projects_without_owners_stay_unassigned() {
        let only: AssignmentConfig = serde_norway::from_str("owners:\n  Riverside Towers: [asha]\n").unwrap();
        let b = links(&[("m1", "Lakeside Villas", None)]);
        let (out, n) = assign_owners(&b, &HashMap::new(), &only).unwrap();
        assert_eq!(n, 0);
        assert_eq!(owners(&out), vec![None]);
    }
}
