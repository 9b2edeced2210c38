//! What every API source (the CRMs and Google Sheets) shares: the fetch
//! result (text columns, the record id column, the new cursor), one error
//! type, and [`CrmSource`], the enum the pipeline drives without knowing
//! which API it talks to.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, SecondsFormat, Utc};

use crate::dynamics::{DynamicsConfig, DynamicsSource};
use crate::files::{SOURCE_COLUMN, SOURCE_FILE_COLUMN, SOURCE_ROW_COLUMN};
use crate::http::HttpError;
use crate::hubspot::{HubSpotConfig, HubSpotSource};
use crate::salesforce::{SalesforceConfig, SalesforceSource};
use crate::sheets::{SheetsConfig, SheetsSource};
use crate::zoho::{ZohoConfig, ZohoSource};

/// Why a CRM read failed. The saved cursor never moves on an error.
#[derive(Debug, thiserror::Error)]
pub enum CrmError {
    #[error("{provider} source `{source_name}`: invalid config: {problems}")]
    Config {
        provider: &'static str,
        source_name: String,
        problems: String,
    },
    /// The HTTP error names the provider; the pipeline adds the source.
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(
        "{provider} source `{source_name}`: malformed response from {url}: {detail}; nothing from this run is \
         saved and the cursor stays where it was"
    )]
    Malformed {
        provider: &'static str,
        source_name: String,
        url: String,
        detail: String,
    },
    #[error(
        "{provider} source `{source_name}`: saved cursor {cursor:?} is not one this source can resume from (a timestamp, or the source's own JSON state)"
    )]
    Cursor {
        provider: &'static str,
        source_name: String,
        cursor: String,
    },
    #[error(
        "{provider} source `{source_name}`: the API's request limit is used up ({detail}); the run stops, the \
         cursor stays where it was and the next run resumes from it"
    )]
    LimitExceeded {
        provider: &'static str,
        source_name: String,
        detail: String,
    },
    /// The source's key cannot be read or used (names the file, never
    /// its content).
    #[error("{provider} source `{source_name}`: {detail}")]
    Credentials {
        provider: &'static str,
        source_name: String,
        detail: String,
    },
    /// The token endpoint refused the key or could not be reached.
    #[error(
        "{provider} source `{source_name}`: token request at {url} failed: {detail}; check the \
         service-account key (is it enabled?) and `token_uri`"
    )]
    Token {
        provider: &'static str,
        source_name: String,
        url: String,
        detail: String,
    },
    /// The spreadsheet or range cannot be read, or its header does not
    /// hold what the pipeline needs.
    #[error("google_sheets source `{source_name}`: spreadsheet {spreadsheet}, range {range}: {detail}")]
    Sheets {
        source_name: String,
        spreadsheet: String,
        range: String,
        detail: String,
    },
    #[error("{provider} source `{source_name}`: {detail}")]
    Stuck {
        provider: &'static str,
        source_name: String,
        detail: String,
    },
}

/// What one run read from a CRM.
#[derive(Debug)]
pub struct CrmFetch {
    /// Data column names: the id column, then the fields.
    pub headers: Vec<String>,
    /// Data columns then `_source`, `_source_file`, `_source_row`.
    pub batches: Vec<RecordBatch>,
    pub rows: u64,
    /// The cursor to save with the run's commit (newest modification time
    /// seen, or the old cursor when nothing changed).
    pub cursor: Option<String>,
    /// `list` (full read) or `incremental`/`search`.
    pub mode: &'static str,
    /// What `_source_file` holds, e.g. `salesforce:Lead`.
    pub display: String,
    pub requests: u32,
    /// Records the CRM deleted since the cursor (incremental reads only),
    /// minus those the same read saw alive again (restored).
    pub deleted: Vec<CrmDeletion>,
}

/// A record the CRM reports deleted, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrmDeletion {
    pub id: String,
    pub deleted_at: DateTime<Utc>,
}

impl CrmError {
    /// Every problem of a source's config as one error; `Ok` when none.
    pub(crate) fn check_config(
        provider: &'static str,
        source_name: &str,
        problems: Vec<String>,
    ) -> Result<(), Self> {
        if problems.is_empty() {
            return Ok(());
        }
        Err(Self::Config {
            provider,
            source_name: source_name.to_string(),
            problems: problems.join("; "),
        })
    }
}

/// The saved cursor as the time to read from: the cursor minus the
/// lookback window (late writes near the cursor are read again).
pub(crate) fn read_since(
    provider: &'static str,
    source_name: &str,
    cursor: Option<&str>,
    lookback: std::time::Duration,
) -> Result<Option<DateTime<Utc>>, CrmError> {
    let Some(c) = cursor else { return Ok(None) };
    let since = parse_time(c).ok_or_else(|| CrmError::Cursor {
        provider,
        source_name: source_name.to_string(),
        cursor: c.to_string(),
    })?;
    Ok(Some(
        since - chrono::Duration::from_std(lookback).unwrap_or_default(),
    ))
}

/// The fields to ask a CRM for: the configured ones without the record id
/// (always returned) and without repeats, plus the cursor field.
pub(crate) fn request_fields(configured: &[String], id_field: &str, cursor_field: &str) -> Vec<String> {
    let mut fields: Vec<String> = Vec::new();
    for f in configured {
        if f != id_field && !fields.contains(f) {
            fields.push(f.clone());
        }
    }
    if !fields.iter().any(|f| f == cursor_field) {
        fields.push(cursor_field.to_string());
    }
    fields
}

/// Records of one read, one per CRM id (the latest version wins), in
/// first-seen order, and the newest modification time.
#[derive(Debug)]
pub struct RecordSet {
    id_column: &'static str,
    columns: Vec<String>,
    records: Vec<(String, HashMap<String, String>)>,
    index: HashMap<String, usize>,
    newest: Option<DateTime<Utc>>,
    deleted: Vec<CrmDeletion>,
}

impl RecordSet {
    pub fn new(id_column: &'static str, columns: Vec<String>) -> Self {
        Self {
            id_column,
            columns,
            records: Vec::new(),
            index: HashMap::new(),
            newest: None,
            deleted: Vec::new(),
        }
    }

    /// A deletion the CRM reported. Its time moves the cursor too, so the
    /// next run asks for deletions from there (Salesforce keeps 15 days).
    pub fn push_deleted(&mut self, id: String, deleted_at: DateTime<Utc>) {
        if self.newest.is_none_or(|n| deleted_at > n) {
            self.newest = Some(deleted_at);
        }
        self.deleted.push(CrmDeletion { id, deleted_at });
    }

    /// Deletions reported so far.
    pub fn deleted_len(&self) -> usize {
        self.deleted.len()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The newest modification time seen so far.
    pub fn newest(&self) -> Option<DateTime<Utc>> {
        self.newest
    }

    pub fn push(&mut self, id: String, values: HashMap<String, String>, modified: Option<DateTime<Utc>>) {
        if let Some(t) = modified
            && self.newest.is_none_or(|n| t > n)
        {
            self.newest = Some(t);
        }
        match self.index.get(&id) {
            Some(&i) => self.records[i].1 = values,
            None => {
                self.index.insert(id.clone(), self.records.len());
                self.records.push((id, values));
            }
        }
    }

    /// [`Self::finish`] with the error a source reports.
    pub(crate) fn into_fetch(
        self,
        provider: &'static str,
        source_name: &str,
        display: String,
        mode: &'static str,
        old_cursor: Option<&str>,
        requests: u32,
    ) -> Result<CrmFetch, CrmError> {
        self.finish(source_name, display.clone(), mode, old_cursor, requests)
            .map_err(|e| CrmError::Malformed {
                provider,
                source_name: source_name.to_string(),
                url: display,
                detail: e.to_string(),
            })
    }

    /// The fetch result: one batch of text columns (missing and null values
    /// are empty text, like an empty cell), the cursor as RFC 3339 UTC.
    pub fn finish(
        self,
        source_name: &str,
        display: String,
        mode: &'static str,
        old_cursor: Option<&str>,
        requests: u32,
    ) -> Result<CrmFetch, arrow::error::ArrowError> {
        let n = self.records.len();
        let headers: Vec<String> = std::iter::once(self.id_column.to_string())
            .chain(self.columns.iter().cloned())
            .collect();
        let cursor = match self.newest {
            Some(t) => Some(format_cursor(t)),
            None => old_cursor.map(String::from),
        };
        // One deletion per id (the latest); a record this read saw alive
        // was restored after its deletion.
        let mut deleted: Vec<CrmDeletion> = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for d in self.deleted {
            if self.index.contains_key(&d.id) {
                continue;
            }
            match seen.get(&d.id) {
                Some(&i) if deleted[i].deleted_at >= d.deleted_at => {}
                Some(&i) => deleted[i] = d,
                None => {
                    seen.insert(d.id.clone(), deleted.len());
                    deleted.push(d);
                }
            }
        }
        let mut batches = Vec::new();
        if n > 0 {
            let mut fields = vec![Field::new(self.id_column, DataType::Utf8, true)];
            let mut columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from_iter_values(
                self.records.iter().map(|r| r.0.as_str()),
            ))];
            for c in &self.columns {
                fields.push(Field::new(c, DataType::Utf8, true));
                columns.push(Arc::new(StringArray::from_iter_values(
                    self.records
                        .iter()
                        .map(|r| r.1.get(c).map(String::as_str).unwrap_or("")),
                )));
            }
            fields.push(Field::new(SOURCE_COLUMN, DataType::Utf8, false));
            fields.push(Field::new(SOURCE_FILE_COLUMN, DataType::Utf8, false));
            fields.push(Field::new(SOURCE_ROW_COLUMN, DataType::UInt64, false));
            columns.push(Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                source_name,
                n,
            ))));
            columns.push(Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                display.as_str(),
                n,
            ))));
            columns.push(Arc::new(UInt64Array::from_iter_values(1..=n as u64)));
            batches.push(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?);
        }
        Ok(CrmFetch {
            headers,
            batches,
            rows: n as u64,
            cursor,
            mode,
            display,
            requests,
            deleted,
        })
    }
}

/// Cursors are stored as RFC 3339 UTC with milliseconds.
pub fn format_cursor(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// CRM timestamps: RFC 3339, Salesforce's `+0000` offsets, or epoch
/// milliseconds (HubSpot).
pub fn parse_time(v: &str) -> Option<DateTime<Utc>> {
    let v = v.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return v.parse::<i64>().ok().and_then(DateTime::from_timestamp_millis);
    }
    DateTime::parse_from_rfc3339(v)
        .or_else(|_| DateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A JSON field value as the text a spreadsheet cell would show: strings
/// as they are, null as empty, numbers and booleans printed, lookups
/// (objects with a `name`) by name, anything else as JSON.
pub fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Bool(b) => b.to_string(),
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::Object(o) => match o.get("name") {
            Some(serde_json::Value::String(s)) => s.clone(),
            _ => v.to_string(),
        },
        serde_json::Value::Array(_) => v.to_string(),
    }
}

/// One CRM source's settings, whichever CRM it is.
#[derive(Debug, Clone)]
pub enum CrmConfig {
    HubSpot(HubSpotConfig),
    Salesforce(SalesforceConfig),
    Zoho(ZohoConfig),
    Dynamics(DynamicsConfig),
    Sheets(SheetsConfig),
}

impl CrmConfig {
    /// A CRM, with CRM ids, accounts and `crm_links`; a Google Sheet is read
    /// through the same plumbing but is none.
    pub fn is_crm(&self) -> bool {
        !matches!(self, Self::Sheets(_))
    }

    /// `hubspot`, `salesforce`, `zoho`, `dynamics` or `google_sheets`: the
    /// YAML key.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::HubSpot(_) => "hubspot",
            Self::Salesforce(_) => "salesforce",
            Self::Zoho(_) => "zoho",
            Self::Dynamics(_) => "dynamics",
            Self::Sheets(_) => "google_sheets",
        }
    }

    /// The CRM object the source reads, as the CRM names it (`contacts`,
    /// `Lead`, `Leads`, `leads`): with the provider and the CRM id it names
    /// one CRM record in `crm_links`.
    pub fn object(&self) -> String {
        match self {
            Self::HubSpot(c) => c.object.as_str().to_string(),
            Self::Salesforce(_) => crate::salesforce::OBJECT.to_string(),
            Self::Zoho(c) => c.module.clone(),
            Self::Dynamics(_) => crate::dynamics::OBJECT.to_string(),
            Self::Sheets(c) => c.spreadsheet_id.clone(),
        }
    }

    /// Problems a user must fix, in words.
    pub fn problems(&self) -> Vec<String> {
        match self {
            Self::HubSpot(c) => c.problems(),
            Self::Salesforce(c) => c.problems(),
            Self::Zoho(c) => c.problems(),
            Self::Dynamics(c) => c.problems(),
            Self::Sheets(c) => c.problems(),
        }
    }
}

/// A configured CRM source.
#[derive(Debug)]
pub enum CrmSource {
    HubSpot(HubSpotSource),
    Salesforce(SalesforceSource),
    Zoho(ZohoSource),
    Dynamics(DynamicsSource),
    Sheets(SheetsSource),
}

/// What `test()` saw: the connection works and the first page had this
/// many records.
#[derive(Debug, Clone)]
pub struct CrmProbe {
    pub records: u64,
    pub requests: u32,
}

impl CrmSource {
    pub fn new(name: &str, config: &CrmConfig) -> Result<Self, CrmError> {
        Ok(match config {
            CrmConfig::HubSpot(c) => Self::HubSpot(HubSpotSource::new(name, c)?),
            CrmConfig::Salesforce(c) => Self::Salesforce(SalesforceSource::new(name, c)?),
            CrmConfig::Zoho(c) => Self::Zoho(ZohoSource::new(name, c)?),
            CrmConfig::Dynamics(c) => Self::Dynamics(DynamicsSource::new(name, c)?),
            CrmConfig::Sheets(c) => Self::Sheets(SheetsSource::new(name, c)?),
        })
    }

    /// Reads everything (no cursor) or what changed since `cursor`.
    pub async fn fetch(&self, cursor: Option<&str>) -> Result<CrmFetch, CrmError> {
        match self {
            Self::HubSpot(s) => s.fetch(cursor).await,
            Self::Salesforce(s) => s.fetch(cursor).await,
            Self::Zoho(s) => s.fetch(cursor).await,
            Self::Dynamics(s) => s.fetch(cursor).await,
            Self::Sheets(s) => s.fetch(cursor).await,
        }
    }

    /// Authenticates and reads one page; keeps nothing.
    pub async fn test(&self) -> Result<CrmProbe, CrmError> {
        match self {
            Self::HubSpot(s) => s.test().await,
            Self::Salesforce(s) => s.test().await,
            Self::Zoho(s) => s.test().await,
            Self::Dynamics(s) => s.test().await,
            Self::Sheets(s) => s.test().await,
        }
    }

    /// The data column holding the CRM's record id.
    pub fn id_column(&self) -> &'static str {
        match self {
            Self::HubSpot(_) => crate::hubspot::ID_COLUMN,
            Self::Salesforce(_) => crate::salesforce::ID_COLUMN,
            Self::Zoho(_) => crate::zoho::ID_COLUMN,
            Self::Dynamics(_) => crate::dynamics::ID_COLUMN,
            Self::Sheets(_) => crate::sheets::ID_COLUMN,
        }
    }

    /// Provider field -> lead field defaults. A pipeline's own `mapping`
    /// columns and aliases win over these; these win over built-in aliases.
    pub fn default_aliases(&self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::HubSpot(_) => crate::hubspot::DEFAULT_ALIASES,
            Self::Salesforce(_) => crate::salesforce::DEFAULT_ALIASES,
            Self::Zoho(_) => crate::zoho::DEFAULT_ALIASES,
            Self::Dynamics(_) => crate::dynamics::DEFAULT_ALIASES,
            Self::Sheets(_) => crate::sheets::DEFAULT_ALIASES,
        }
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::Array;

    use super::*;

    #[test]
    fn timestamps_in_every_crm_shape() {
        let a = parse_time("2024-02-03T04:05:06.789Z").unwrap();
        assert_eq!(parse_time("1706933106789").unwrap(), a);
        assert_eq!(parse_time("2024-02-03T04:05:06.789+0000").unwrap(), a);
        assert_eq!(parse_time("2024-02-03T09:35:06.789+05:30").unwrap(), a);
        assert!(parse_time("yesterday").is_none());
        assert_eq!(format_cursor(a), "2024-02-03T04:05:06.789Z");
    }

    #[test]
    fn record_set_keeps_latest_version_per_id_and_newest_cursor() {
        let mut rows = RecordSet::new("crm_id", vec!["email".into()]);
        let v = |e: &str| HashMap::from([("email".to_string(), e.to_string())]);
        rows.push("1".into(), v("a@x.io"), parse_time("2024-01-01T00:00:00Z"));
        rows.push("2".into(), v("b@x.io"), parse_time("2024-03-01T00:00:00Z"));
        rows.push("1".into(), v("a2@x.io"), parse_time("2024-02-01T00:00:00Z"));
        let f = rows.finish("src", "crm:x".into(), "list", None, 3).unwrap();
        assert_eq!(f.rows, 2);
        assert_eq!(f.headers, ["crm_id", "email"]);
        assert_eq!(f.cursor.as_deref(), Some("2024-03-01T00:00:00.000Z"));
        let emails = f.batches[0]
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(emails.value(0), "a2@x.io");
        let empty = RecordSet::new("crm_id", vec![]);
        let f = empty
            .finish("src", "crm:x".into(), "incremental", Some("c"), 1)
            .unwrap();
        assert!(f.batches.is_empty());
        assert_eq!(f.cursor.as_deref(), Some("c"), "no change keeps the cursor");
    }

    #[test]
    fn deletions_move_the_cursor_and_a_record_seen_alive_is_not_deleted() {
        let mut rows = RecordSet::new("crm_id", vec![]);
        rows.push("1".into(), HashMap::new(), parse_time("2024-01-01T00:00:00Z"));
        rows.push_deleted("1".into(), parse_time("2024-01-02T00:00:00Z").unwrap());
        rows.push_deleted("2".into(), parse_time("2024-01-03T00:00:00Z").unwrap());
        rows.push_deleted("2".into(), parse_time("2024-01-04T00:00:00Z").unwrap());
        rows.push_deleted("3".into(), parse_time("2024-01-02T00:00:00Z").unwrap());
        let f = rows
            .finish("src", "crm:x".into(), "incremental", None, 1)
            .unwrap();
        assert_eq!(f.cursor.as_deref(), Some("2024-01-04T00:00:00.000Z"));
        let ids: Vec<(&str, String)> = f
            .deleted
            .iter()
            .map(|d| (d.id.as_str(), format_cursor(d.deleted_at)))
            .collect();
        assert_eq!(
            ids,
            [
                ("2", "2024-01-04T00:00:00.000Z".to_string()),
                ("3", "2024-01-02T00:00:00.000Z".to_string())
            ]
        );
    }

    #[test]
    fn json_values_as_cell_text() {
        use serde_json::json;
        assert_eq!(json_text(&json!(null)), "");
        assert_eq!(json_text(&json!("x")), "x");
        assert_eq!(json_text(&json!(3)), "3");
        assert_eq!(json_text(&json!(true)), "true");
        assert_eq!(json_text(&json!({"name": "Pat", "id": "1"})), "Pat");
        assert_eq!(json_text(&json!(["a"])), r#"["a"]"#);
    }
}
