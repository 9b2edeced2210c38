//! The lead data model: canonical fields and the Arrow schemas of the
//! warehouse tables. Sinks stay generic; the shapes live here.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Canonical lead fields a source column can be mapped onto.
pub const LEAD_FIELDS: &[&str] = &[
    "first_name",
    "last_name",
    "full_name",
    "phone",
    "email",
    "company",
    "job_title",
    "country",
    "city",
    "website",
    "project",
    "status",
    "owner",
    "source_created_at",
];

/// Is `name` a canonical lead field?
pub fn is_lead_field(name: &str) -> bool {
    LEAD_FIELDS.contains(&name)
}

/// Columns every batch carries from the source onwards.
pub const SOURCE: &str = "_source";
pub const SOURCE_FILE: &str = "_source_file";
pub const SOURCE_ROW: &str = "_source_row";
/// Stable id of the record within its source (see `mapping::record_ids`).
pub const RECORD_ID: &str = "_record_id";
/// JSON object of the source columns that were not mapped.
pub const EXTRAS: &str = "_extras";
/// Position of the row in the run's raw batches (`batch << 32 | row`), so a
/// rejected row can be shown with its original values.
pub const RAW_POS: &str = "_raw_pos";

fn utf8(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}

fn ts(name: &str) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        true,
    )
}

/// Delta names a list's element field `element`; Arrow's builders say `item`.
fn list_item() -> Arc<Field> {
    Arc::new(Field::new("element", DataType::Utf8, true))
}

fn list_utf8(name: &str) -> Field {
    Field::new(name, DataType::List(list_item()), true)
}

/// A builder for the warehouse's `list<string>` columns.
pub fn list_builder() -> arrow::array::ListBuilder<arrow::array::StringBuilder> {
    list_builder_with(arrow::array::StringBuilder::new(), 0)
}

/// [`list_builder`] over `values`, room for `lists` lists.
pub fn list_builder_with(
    values: arrow::array::StringBuilder,
    lists: usize,
) -> arrow::array::ListBuilder<arrow::array::StringBuilder> {
    arrow::array::ListBuilder::with_capacity(values, lists).with_field(list_item())
}

/// A mapped lead batch: meta columns, then every canonical field as Utf8.
pub static MAPPED_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = vec![
        Field::new(SOURCE, DataType::Utf8, false),
        Field::new(SOURCE_FILE, DataType::Utf8, false),
        Field::new(SOURCE_ROW, DataType::UInt64, false),
        Field::new(RECORD_ID, DataType::Utf8, false),
        Field::new(RAW_POS, DataType::UInt64, false),
    ];
    fields.extend(LEAD_FIELDS.iter().map(|f| utf8(f)));
    fields.push(utf8(EXTRAS));
    Arc::new(Schema::new(fields))
});

/// `records`: every source record ever ingested, normalised, with its master.
/// Key: (`source`, `source_record_id`).
pub static RECORDS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("source_record_id", DataType::Utf8, false),
        utf8("source_file"),
        Field::new("source_row", DataType::Int64, true),
        Field::new("master_id", DataType::Utf8, false),
        utf8("match_rule"),
        Field::new("match_score", DataType::Float64, true),
        utf8("first_name"),
        utf8("last_name"),
        utf8("full_name"),
        utf8("phone"),
        utf8("phone_raw"),
        Field::new("phone_valid", DataType::Boolean, true),
        utf8("phone_type"),
        utf8("email"),
        utf8("email_raw"),
        utf8("email_key"),
        Field::new("email_valid", DataType::Boolean, true),
        utf8("company"),
        utf8("job_title"),
        utf8("country"),
        utf8("country_raw"),
        utf8("city"),
        utf8("website"),
        utf8("project"),
        utf8("status"),
        utf8("owner"),
        ts("source_created_at"),
        utf8("extras"),
        utf8("run_id"),
        ts("ingested_at"),
        // Added after the first release: nullable and last, so a warehouse
        // written before gains them as columns (rows read back as null).
        // `origin`: `file`, `sheet` or `crm`; `provider`/`crm_id` name the CRM record
        // (null for files); `deleted_at`: when the CRM deleted it.
        utf8("origin"),
        utf8("provider"),
        utf8("crm_id"),
        ts("deleted_at"),
    ]))
});

/// `crm_links`: a CRM record and the master it belongs to. Key:
/// (`provider`, `account`, `crm_object`, `crm_id`); `account` (the HubSpot
/// portal, Salesforce org, ... a source names) is null for a source that
/// names none, and for rows written before it existed. `direction`: `inbound` (read from
/// the CRM) or `outbound` (leadflow created it there; a run that reads it
/// back links it to `master_id`, never a new person). `deleted_at`: when
/// the CRM deleted it; the master and other records stay.
pub static CRM_LINKS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("provider", DataType::Utf8, false),
        Field::new("crm_object", DataType::Utf8, false),
        Field::new("crm_id", DataType::Utf8, false),
        Field::new("master_id", DataType::Utf8, false),
        Field::new("direction", DataType::Utf8, false),
        utf8("pipeline"),
        utf8("source"),
        utf8("first_seen_run"),
        utf8("last_seen_run"),
        ts("created_at"),
        ts("updated_at"),
        ts("deleted_at"),
        // Added after the first release (nullable, last): a key column that
        // null matches null in, so older rows keep their identity.
        utf8("account"),
    ]))
});

/// `masters`: one golden record per person. Key: `master_id`.
pub static MASTERS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("master_id", DataType::Utf8, false),
        utf8("first_name"),
        utf8("last_name"),
        utf8("full_name"),
        utf8("phone"),
        utf8("email"),
        list_utf8("phones"),
        list_utf8("emails"),
        list_utf8("email_keys"),
        utf8("company"),
        utf8("job_title"),
        utf8("country"),
        utf8("city"),
        utf8("website"),
        Field::new("record_count", DataType::Int64, false),
        ts("first_seen"),
        ts("last_seen"),
        utf8("updated_run_id"),
    ]))
});

/// `project_links`: a person in a project. Key: (`master_id`, `project`).
pub static PROJECT_LINKS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("master_id", DataType::Utf8, false),
        Field::new("project", DataType::Utf8, false),
        utf8("status"),
        utf8("owner"),
        Field::new("record_count", DataType::Int64, false),
        ts("first_seen"),
        ts("last_seen"),
        utf8("updated_run_id"),
    ]))
});

/// `merges`: every link, merge or conflict decision. Key: `event_id`.
pub static MERGES_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        utf8("master_id"),
        utf8("other_master_id"),
        utf8("source"),
        utf8("source_record_id"),
        utf8("rule"),
        Field::new("score", DataType::Float64, true),
        utf8("explanation"),
        utf8("run_id"),
        ts("created_at"),
    ]))
});

/// `review`: pairs of masters linkage was unsure about (score between the
/// thresholds, or a record strongly like two masters). Key: `review_id`
/// (hash of the two master ids, smaller first).
pub static REVIEW_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("review_id", DataType::Utf8, false),
        Field::new("master_id", DataType::Utf8, false),
        Field::new("other_master_id", DataType::Utf8, false),
        utf8("source"),
        utf8("source_record_id"),
        utf8("other_source"),
        utf8("other_source_record_id"),
        Field::new("score", DataType::Float64, true),
        utf8("explanation"),
        Field::new("status", DataType::Utf8, false),
        utf8("run_id"),
        ts("created_at"),
        ts("decided_at"),
    ]))
});

/// `rejects`: every row that failed, with its raw values and all reasons.
/// Key: (`source`, `source_record_id`).
pub static REJECTS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("source_record_id", DataType::Utf8, false),
        utf8("source_file"),
        Field::new("source_row", DataType::Int64, true),
        utf8("raw"),
        list_utf8("reasons"),
        list_utf8("reason_codes"),
        utf8("run_id"),
        ts("rejected_at"),
    ]))
});

/// `runs`: one row per pipeline run. Key: `run_id`.
pub static RUNS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let i64f = |n: &str| Field::new(n, DataType::Int64, true);
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("pipeline", DataType::Utf8, false),
        Field::new("sequence", DataType::Int64, true),
        utf8("trigger"),
        Field::new("status", DataType::Utf8, false),
        ts("started_at"),
        ts("finished_at"),
        i64f("files_seen"),
        i64f("files_imported"),
        i64f("files_unchanged"),
        i64f("files_quarantined"),
        i64f("rows_read"),
        i64f("rows_rejected"),
        utf8("rejected_by_reason"),
        i64f("masters_new"),
        i64f("matched_existing"),
        i64f("merged_in_batch"),
        i64f("records_known"),
        i64f("conflicts"),
        i64f("records_written"),
        utf8("error"),
        // Added later (nullable, last: added to older tables on open):
        // records marked deleted because their source deleted them.
        i64f("records_deleted"),
    ]))
});

/// `source_files`: the file ledger. A file (path + content hash) is imported
/// once. Key: (`source`, `path`, `content_hash`).
pub static SOURCE_FILES_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("path", DataType::Utf8, false),
        Field::new("content_hash", DataType::Utf8, false),
        Field::new("size", DataType::Int64, true),
        ts("modified_at"),
        Field::new("status", DataType::Utf8, false),
        utf8("reason"),
        utf8("format"),
        Field::new("rows", DataType::Int64, true),
        utf8("run_id"),
        ts("imported_at"),
    ]))
});

/// `source_cursors`: where each incremental source (CRM) continues.
/// Written only in a run's commit, so a failed run leaves the old cursor.
/// Key: (`pipeline`, `source`).
pub static SOURCE_CURSORS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("pipeline", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("cursor", DataType::Utf8, false),
        utf8("run_id"),
        ts("updated_at"),
    ]))
});

/// `reminders`: one per (pipeline, master, project) link that needs a first
/// contact. Key: `reminder_id` (hash of pipeline, master and project, so a
/// re-run never makes a second one). `state`: open, snoozed, contacted, expired.
pub static REMINDERS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("reminder_id", DataType::Utf8, false),
        Field::new("pipeline", DataType::Utf8, false),
        Field::new("master_id", DataType::Utf8, false),
        Field::new("project", DataType::Utf8, false),
        utf8("owner"),
        Field::new("state", DataType::Utf8, false),
        ts("created_at"),
        ts("deadline"),
        ts("next_due_at"),
        Field::new("repeats", DataType::Int64, false),
        ts("snoozed_until"),
        ts("closed_at"),
        utf8("closed_by"),
        utf8("run_id"),
        ts("updated_at"),
    ]))
});

/// `outbox`: every event to deliver (reminder.created, reminder.overdue,
/// reminder.expired, reminder.contacted). Append-only; `event_id` is derived
/// from what the event is about, so a repeated write carries the same id and
/// delivery reads one row per id. `payload` is the JSON object delivered.
pub static OUTBOX_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("pipeline", DataType::Utf8, false),
        utf8("reminder_id"),
        utf8("master_id"),
        utf8("project"),
        utf8("owner"),
        ts("deadline"),
        Field::new("repeat", DataType::Int64, true),
        Field::new("payload", DataType::Utf8, false),
        ts("created_at"),
    ]))
});

/// `deliveries`: the state of each event at each output. Key: (`event_id`,
/// `output`). `state`: delivered, retrying, dead. `last_error` never holds
/// secrets (no URLs, no tokens).
pub static DELIVERIES_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("output", DataType::Utf8, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("attempts", DataType::Int64, false),
        utf8("last_error"),
        ts("next_attempt_at"),
        ts("delivered_at"),
        ts("updated_at"),
    ]))
});

/// Every warehouse table: name, schema, key columns.
pub fn warehouse_tables() -> Vec<(&'static str, SchemaRef, &'static [&'static str])> {
    vec![
        ("records", RECORDS_SCHEMA.clone(), &["source", "source_record_id"]),
        ("masters", MASTERS_SCHEMA.clone(), &["master_id"]),
        (
            "crm_links",
            CRM_LINKS_SCHEMA.clone(),
            &["provider", "account", "crm_object", "crm_id"],
        ),
        (
            "project_links",
            PROJECT_LINKS_SCHEMA.clone(),
            &["master_id", "project"],
        ),
        ("merges", MERGES_SCHEMA.clone(), &["event_id"]),
        ("review", REVIEW_SCHEMA.clone(), &["review_id"]),
        ("rejects", REJECTS_SCHEMA.clone(), &["source", "source_record_id"]),
        (
            "source_files",
            SOURCE_FILES_SCHEMA.clone(),
            &["source", "path", "content_hash"],
        ),
        ("runs", RUNS_SCHEMA.clone(), &["run_id"]),
        (
            "source_cursors",
            SOURCE_CURSORS_SCHEMA.clone(),
            &["pipeline", "source"],
        ),
        ("reminders", REMINDERS_SCHEMA.clone(), &["reminder_id"]),
        ("outbox", OUTBOX_SCHEMA.clone(), &["event_id"]),
        ("deliveries", DELIVERIES_SCHEMA.clone(), &["event_id", "output"]),
    ]
}
