//! Reading HubSpot records into Arrow batches of text columns.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, TimeZone, Utc};
use reqwest::Method;
use serde::Deserialize;
use tracing::{debug, info};
use url::Url;

use super::config::{DEFAULT_TOKEN_URL, HubSpotConfig, ID_COLUMN};
use crate::files::{SOURCE_COLUMN, SOURCE_FILE_COLUMN, SOURCE_ROW_COLUMN};
use crate::http::{HttpClient, HttpError, TokenProvider};

/// The cursor property: HubSpot's last-modified timestamp.
const CURSOR_PROPERTY: &str = "lastmodifieddate";
/// Search results reachable through one query; paging past it is a 400.
const SEARCH_CAP: u64 = 10_000;
const LIST_MAX: u32 = 100;
const SEARCH_MAX: u32 = 200;

/// Why a HubSpot read failed. The saved cursor does not move.
#[derive(Debug, thiserror::Error)]
pub enum HubSpotError {
    #[error("hubspot source `{source_name}`: invalid config: {problems}")]
    Config { source_name: String, problems: String },
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(
        "hubspot source `{source_name}`: malformed response from {url}: {detail}; nothing from this run is \
         saved and the cursor stays where it was"
    )]
    Malformed {
        source_name: String,
        url: String,
        detail: String,
    },
    #[error("hubspot source `{source_name}`: saved cursor {cursor:?} is not a timestamp")]
    Cursor { source_name: String, cursor: String },
    #[error(
        "hubspot source `{source_name}`: more than {SEARCH_CAP} records share lastmodifieddate {value}; the \
         search API cannot page past them"
    )]
    Stuck { source_name: String, value: String },
}

/// What one run read.
#[derive(Debug)]
pub struct HubSpotFetch {
    /// Data column names: `hubspot_id`, then the properties.
    pub headers: Vec<String>,
    /// Data columns then `_source`, `_source_file`, `_source_row`.
    pub batches: Vec<RecordBatch>,
    pub rows: u64,
    /// The cursor to save with the run's commit (newest lastmodifieddate
    /// seen, or the old cursor when nothing changed).
    pub cursor: Option<String>,
    /// `list` (full read) or `search` (incremental).
    pub mode: &'static str,
    /// What `_source_file` holds, e.g. `hubspot:contacts`.
    pub display: String,
    pub requests: u32,
}

#[derive(Deserialize)]
struct Page {
    results: Vec<Record>,
    #[serde(default)]
    paging: Option<Paging>,
}

#[derive(Deserialize)]
struct Paging {
    #[serde(default)]
    next: Option<Next>,
}

#[derive(Deserialize)]
struct Next {
    after: String,
}

#[derive(Deserialize)]
struct Record {
    id: String,
    properties: BTreeMap<String, Option<String>>,
}

/// A configured HubSpot source.
#[derive(Debug)]
pub struct HubSpotSource {
    name: String,
    config: HubSpotConfig,
    base: Url,
    properties: Vec<String>,
    http: HttpClient,
}

impl HubSpotSource {
    pub fn new(name: &str, config: &HubSpotConfig) -> Result<Self, HubSpotError> {
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(HubSpotError::Config {
                source_name: name.to_string(),
                problems: problems.join("; "),
            });
        }
        let auth = match (&config.token, &config.oauth) {
            (Some(t), _) => TokenProvider::Static(t.clone()),
            (None, Some(o)) => TokenProvider::oauth(o.clone(), DEFAULT_TOKEN_URL),
            (None, None) => unreachable!("checked by problems()"),
        };
        let mut base = Url::parse(&config.base_url).expect("checked by problems()");
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let mut properties: Vec<String> = Vec::new();
        for p in &config.properties {
            let p = p.trim().to_string();
            if !properties.contains(&p) {
                properties.push(p);
            }
        }
        if !properties.iter().any(|p| p == CURSOR_PROPERTY) {
            properties.push(CURSOR_PROPERTY.to_string());
        }
        Ok(Self {
            name: name.to_string(),
            config: config.clone(),
            base,
            properties,
            http: HttpClient::new("hubspot", auth, config.http.clone())?,
        })
    }

    fn url(&self, tail: &str) -> Url {
        self.base
            .join(&format!("crm/v3/objects/{}{tail}", self.config.object.as_str()))
            .expect("object path joins onto a base URL")
    }

    fn malformed(&self, url: &Url, detail: impl std::fmt::Display) -> HubSpotError {
        HubSpotError::Malformed {
            source_name: self.name.clone(),
            url: url.to_string(),
            detail: detail.to_string(),
        }
    }

    fn parse(&self, url: &Url, text: &str) -> Result<Page, HubSpotError> {
        let page: Page = serde_json::from_str(text).map_err(|e| self.malformed(url, e))?;
        if let Some(r) = page.results.iter().find(|r| r.id.trim().is_empty()) {
            return Err(self.malformed(
                url,
                format!("a record has an empty id ({} properties)", r.properties.len()),
            ));
        }
        Ok(page)
    }

    /// Reads everything (no cursor) or what changed since `cursor`.
    pub async fn fetch(&self, cursor: Option<&str>) -> Result<HubSpotFetch, HubSpotError> {
        let mut rows = Rows::default();
        let mode = match cursor {
            None => {
                self.list(&mut rows).await?;
                "list"
            }
            Some(c) => {
                let since = parse_time(c).ok_or_else(|| HubSpotError::Cursor {
                    source_name: self.name.clone(),
                    cursor: c.to_string(),
                })?;
                let lookback = chrono::Duration::from_std(self.config.lookback).unwrap_or_default();
                self.search(since - lookback, &mut rows).await?;
                "search"
            }
        };
        let new_cursor = match (rows.newest, cursor) {
            (Some((_, text)), _) => Some(text),
            (None, c) => c.map(String::from),
        };
        let display = format!("hubspot:{}", self.config.object.as_str());
        let n = rows.records.len() as u64;
        info!(source = %self.name, mode, records = n, requests = self.http.requests(), "hubspot read");
        Ok(HubSpotFetch {
            headers: std::iter::once(ID_COLUMN.to_string())
                .chain(self.properties.iter().cloned())
                .collect(),
            batches: if n == 0 {
                Vec::new()
            } else {
                vec![self.batch(&rows.records, &display)?]
            },
            rows: n,
            cursor: new_cursor,
            mode,
            display,
            requests: self.http.requests(),
        })
    }

    async fn list(&self, rows: &mut Rows) -> Result<(), HubSpotError> {
        let mut after: Option<String> = None;
        loop {
            let mut url = self.url("");
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("limit", &self.config.page_size.min(LIST_MAX).to_string());
                q.append_pair("properties", &self.properties.join(","));
                q.append_pair("archived", "false");
                if let Some(a) = &after {
                    q.append_pair("after", a);
                }
            }
            let text = self.http.send(Method::GET, &url, None).await?;
            let page = self.parse(&url, &text)?;
            debug!(source = %self.name, records = page.results.len(), "hubspot list page");
            rows.add(page.results);
            match page.paging.and_then(|p| p.next) {
                Some(n) if Some(&n.after) == after.as_ref() => {
                    return Err(self.malformed(&url, format!("paging.next.after {:?} repeats", n.after)));
                }
                Some(n) => after = Some(n.after),
                None => return Ok(()),
            }
        }
    }

    /// Search sorted by lastmodifieddate ascending. Before paging would
    /// cross the 10,000-result cap, restart the window at the last value
    /// seen (records of that instant come again; `Rows` keeps one per id).
    async fn search(&self, from: DateTime<Utc>, rows: &mut Rows) -> Result<(), HubSpotError> {
        let url = self.url("/search");
        let limit = self.config.page_size.min(SEARCH_MAX);
        let mut window_start = from;
        let mut after: Option<String> = None;
        let mut in_window: u64 = 0;
        loop {
            let mut body = serde_json::json!({
                "filterGroups": [{"filters": [{
                    "propertyName": CURSOR_PROPERTY,
                    "operator": "GTE",
                    "value": window_start.timestamp_millis().to_string(),
                }]}],
                "sorts": [{"propertyName": CURSOR_PROPERTY, "direction": "ASCENDING"}],
                "properties": self.properties,
                "limit": limit,
            });
            if let Some(a) = &after {
                body["after"] = serde_json::Value::String(a.clone());
            }
            let text = self.http.send(Method::POST, &url, Some(&body)).await?;
            let page = self.parse(&url, &text)?;
            in_window += page.results.len() as u64;
            rows.add(page.results);
            let Some(next) = page.paging.and_then(|p| p.next) else {
                return Ok(());
            };
            if in_window + u64::from(limit) > SEARCH_CAP {
                let Some((last, text)) = rows.newest.clone() else {
                    return Err(self.malformed(&url, "full pages without lastmodifieddate values"));
                };
                if last <= window_start {
                    return Err(HubSpotError::Stuck {
                        source_name: self.name.clone(),
                        value: text,
                    });
                }
                debug!(source = %self.name, restart_at = %text, "hubspot search window restarts");
                window_start = last;
                after = None;
                in_window = 0;
            } else {
                after = Some(next.after);
            }
        }
    }

    fn batch(&self, records: &[Record], display: &str) -> Result<RecordBatch, HubSpotError> {
        let n = records.len();
        let mut fields = vec![Field::new(ID_COLUMN, DataType::Utf8, true)];
        let mut columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from_iter_values(
            records.iter().map(|r| r.id.as_str()),
        ))];
        for p in &self.properties {
            fields.push(Field::new(p, DataType::Utf8, true));
            // Missing and null properties are empty text, like an empty cell.
            columns.push(Arc::new(StringArray::from_iter_values(
                records
                    .iter()
                    .map(|r| r.properties.get(p).and_then(|v| v.as_deref()).unwrap_or("")),
            )));
        }
        fields.push(Field::new(SOURCE_COLUMN, DataType::Utf8, false));
        fields.push(Field::new(SOURCE_FILE_COLUMN, DataType::Utf8, false));
        fields.push(Field::new(SOURCE_ROW_COLUMN, DataType::UInt64, false));
        columns.push(Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
            self.name.as_str(),
            n,
        ))));
        columns.push(Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
            display, n,
        ))));
        columns.push(Arc::new(UInt64Array::from_iter_values(1..=n as u64)));
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| HubSpotError::Malformed {
            source_name: self.name.clone(),
            url: display.to_string(),
            detail: e.to_string(),
        })
    }
}

/// Records of one read, one per id (the latest version wins), in first-seen
/// order, and the newest lastmodifieddate.
#[derive(Default)]
struct Rows {
    records: Vec<Record>,
    index: HashMap<String, usize>,
    newest: Option<(DateTime<Utc>, String)>,
}

impl Rows {
    fn add(&mut self, page: Vec<Record>) {
        for r in page {
            if let Some(t) = r
                .properties
                .get(CURSOR_PROPERTY)
                .and_then(|v| v.as_deref())
                .and_then(|v| parse_time(v).map(|t| (t, v.to_string())))
                && self.newest.as_ref().is_none_or(|(n, _)| t.0 > *n)
            {
                self.newest = Some(t);
            }
            match self.index.get(&r.id) {
                Some(&i) => self.records[i] = r,
                None => {
                    self.index.insert(r.id.clone(), self.records.len());
                    self.records.push(r);
                }
            }
        }
    }
}

/// HubSpot timestamps: ISO 8601 or epoch milliseconds.
fn parse_time(v: &str) -> Option<DateTime<Utc>> {
    let v = v.trim();
    if let Ok(ms) = v.parse::<i64>() {
        return Utc.timestamp_millis_opt(ms).single();
    }
    DateTime::parse_from_rfc3339(v)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, modified: &str, email: &str) -> Record {
        let mut properties = BTreeMap::new();
        properties.insert(CURSOR_PROPERTY.to_string(), Some(modified.to_string()));
        properties.insert("email".to_string(), Some(email.to_string()));
        Record {
            id: id.into(),
            properties,
        }
    }

    #[test]
    fn timestamps_iso_or_epoch_ms() {
        let a = parse_time("2024-02-03T04:05:06.789Z").unwrap();
        assert_eq!(parse_time("1706933106789").unwrap(), a);
        assert!(parse_time("yesterday").is_none());
    }

    #[test]
    fn rows_keep_latest_version_per_id_and_newest_cursor() {
        let mut rows = Rows::default();
        rows.add(vec![
            rec("1", "2024-01-01T00:00:00Z", "a@x.io"),
            rec("2", "2024-03-01T00:00:00Z", "b@x.io"),
        ]);
        rows.add(vec![rec("1", "2024-02-01T00:00:00Z", "a2@x.io")]);
        assert_eq!(rows.records.len(), 2);
        assert_eq!(rows.records[0].properties["email"].as_deref(), Some("a2@x.io"));
        assert_eq!(rows.newest.unwrap().1, "2024-03-01T00:00:00Z");
    }

    #[test]
    fn config_problems_are_reported() {
        let cfg: HubSpotConfig = serde_json::from_str(r#"{"page_size": 500}"#).unwrap();
        let p = cfg.problems();
        assert!(p.iter().any(|m| m.contains("`token`")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("page_size")), "{p:?}");
        let cfg: HubSpotConfig = serde_json::from_str(r#"{"token": "x"}"#).unwrap();
        assert!(cfg.problems().is_empty());
        assert_eq!(cfg.object.as_str(), "contacts");
        assert_eq!(cfg.lookback, std::time::Duration::from_secs(300));
        assert!(serde_json::from_str::<HubSpotConfig>(r#"{"token": "x", "tokn": 1}"#).is_err());
    }
}
