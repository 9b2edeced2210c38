//! Reading Dataverse leads page by page.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde::Deserialize;
use tracing::{debug, info};
use url::Url;

use super::config::{DynamicsConfig, ID_COLUMN};
use crate::crm::{
    CrmError, CrmFetch, CrmProbe, RecordSet, json_text, parse_time, read_since, request_fields,
};
use crate::http::{Grant, HttpClient, TokenProvider};

const PROVIDER: &str = "dynamics";
const CURSOR_FIELD: &str = "modifiedon";
const KEY_FIELD: &str = "leadid";
/// The annotation carrying an option set's label (asked for with `Prefer`).
const FORMATTED: &str = "@OData.Community.Display.V1.FormattedValue";

#[derive(Deserialize)]
struct Page {
    value: Vec<serde_json::Map<String, serde_json::Value>>,
    #[serde(default, rename = "@odata.nextLink")]
    next_link: Option<String>,
}

/// A configured Dataverse source.
#[derive(Debug)]
pub struct DynamicsSource {
    name: String,
    config: DynamicsConfig,
    /// The environment root, ending in `/`.
    base: Url,
    fields: Vec<String>,
    http: HttpClient,
}

/// Percent-encodes an OData query value: spaces as `%20` (a `+` is not a
/// space to every OData server), keeping the characters OData syntax uses.
fn odata_encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~,:$'()/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl DynamicsSource {
    pub fn new(name: &str, config: &DynamicsConfig) -> Result<Self, CrmError> {
        CrmError::check_config(PROVIDER, name, config.problems())?;
        let grant = Grant::ClientCredentials {
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            scope: config.scope(),
        };
        let mut base = Url::parse(&config.url).expect("checked by problems()");
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let fields = request_fields(&config.fields, KEY_FIELD, CURSOR_FIELD);
        // Dataverse answers an expired token with 401 (ExpiredAuthTicket):
        // one fresh token, then the request again.
        let http = HttpClient::new(
            PROVIDER,
            TokenProvider::grant(grant, config.token_url().expect("checked by problems()")),
            config.http.clone(),
        )?
        .with_refresh_on_401();
        Ok(Self {
            name: name.to_string(),
            config: config.clone(),
            base,
            fields,
            http,
        })
    }

    fn malformed(&self, url: &Url, detail: impl std::fmt::Display) -> CrmError {
        CrmError::Malformed {
            provider: PROVIDER,
            source_name: self.name.clone(),
            url: url.to_string(),
            detail: detail.to_string(),
        }
    }

    fn first_url(&self, since: Option<DateTime<Utc>>) -> Url {
        let mut url = self
            .base
            .join(&format!("api/data/{}/leads", self.config.api_version))
            .expect("a path joins onto the environment URL");
        let select = std::iter::once(KEY_FIELD)
            .chain(self.fields.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(",");
        let mut q = format!(
            "$select={}&$orderby={}",
            odata_encode(&select),
            odata_encode(&format!("{CURSOR_FIELD} asc"))
        );
        if let Some(t) = since {
            // DateTimeOffset literals are unquoted.
            q.push_str(&format!(
                "&$filter={}",
                odata_encode(&format!("{CURSOR_FIELD} gt {}", t.format("%Y-%m-%dT%H:%M:%SZ")))
            ));
        }
        url.set_query(Some(&q));
        url
    }

    /// Reads every lead (no cursor) or those modified since `cursor`.
    pub async fn fetch(&self, cursor: Option<&str>) -> Result<CrmFetch, CrmError> {
        let since = read_since(PROVIDER, &self.name, cursor, self.config.lookback)?;
        let mut rows = RecordSet::new(ID_COLUMN, self.fields.clone());
        self.read(self.first_url(since), &mut rows, None).await?;
        let mode = if cursor.is_some() { "incremental" } else { "list" };
        info!(source = %self.name, mode, records = rows.len(), requests = self.http.requests(), "dynamics read");
        let display = "dynamics:leads".to_string();
        rows.into_fetch(PROVIDER, &self.name, display, mode, cursor, self.http.requests())
    }

    /// Token plus the first page; keeps nothing.
    pub async fn test(&self) -> Result<CrmProbe, CrmError> {
        let mut rows = RecordSet::new(ID_COLUMN, self.fields.clone());
        self.read(self.first_url(None), &mut rows, Some(1)).await?;
        Ok(CrmProbe {
            records: rows.len() as u64,
            requests: self.http.requests(),
        })
    }

    async fn read(&self, first: Url, rows: &mut RecordSet, max_pages: Option<usize>) -> Result<(), CrmError> {
        let headers = [
            ("OData-MaxVersion", "4.0".to_string()),
            ("OData-Version", "4.0".to_string()),
            (
                "Prefer",
                format!(
                    "odata.maxpagesize={},odata.include-annotations=\"OData.Community.Display.V1.FormattedValue\"",
                    self.config.page_size
                ),
            ),
        ];
        let mut url = first;
        let mut pages = 0;
        loop {
            let reply = self.http.request(Method::GET, &url, None, &headers).await?;
            let page: Page = serde_json::from_str(&reply.body).map_err(|e| self.malformed(&url, e))?;
            debug!(source = %self.name, records = page.value.len(), "dynamics page");
            for r in &page.value {
                let id = match r.get(KEY_FIELD).map(json_text) {
                    Some(id) if !id.trim().is_empty() => id,
                    _ => return Err(self.malformed(&url, format!("a record has no {KEY_FIELD}"))),
                };
                let modified = match r.get(CURSOR_FIELD).map(json_text).as_deref() {
                    Some("") | None => None,
                    Some(m) => Some(parse_time(m).ok_or_else(|| {
                        self.malformed(
                            &url,
                            format!("record {id}: {CURSOR_FIELD} {m:?} is not a timestamp"),
                        )
                    })?),
                };
                let values: HashMap<String, String> = self
                    .fields
                    .iter()
                    .filter_map(|f| cell(r, f).map(|v| (f.clone(), v)))
                    .collect();
                rows.push(id, values, modified);
            }
            pages += 1;
            if max_pages.is_some_and(|m| pages >= m) {
                return Ok(());
            }
            let Some(next) = page.next_link else {
                return Ok(());
            };
            let next =
                Url::parse(&next).map_err(|e| self.malformed(&url, format!("@odata.nextLink: {e}")))?;
            // The token goes wherever nextLink points: only to our own host.
            if next.scheme() != self.base.scheme()
                || next.host_str() != self.base.host_str()
                || next.port_or_known_default() != self.base.port_or_known_default()
            {
                return Err(self.malformed(
                    &url,
                    format!(
                        "@odata.nextLink points to another host ({}); not following it",
                        next.host_str().unwrap_or("?")
                    ),
                ));
            }
            if next == url {
                return Err(self.malformed(&url, "@odata.nextLink repeats the page just read"));
            }
            url = next;
        }
    }
}

/// A column's text. Option sets, status codes and two-option columns come
/// as numbers or booleans: their formatted-value label is what a user sees.
/// Text and dates keep their raw value (formatted dates are locale text).
fn cell(r: &serde_json::Map<String, serde_json::Value>, field: &str) -> Option<String> {
    let raw = r.get(field)?;
    if matches!(raw, serde_json::Value::Number(_) | serde_json::Value::Bool(_))
        && let Some(serde_json::Value::String(label)) = r.get(&format!("{field}{FORMATTED}"))
    {
        return Some(label.clone());
    }
    Some(json_text(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> DynamicsSource {
        let cfg: DynamicsConfig = serde_json::from_str(
            r#"{"url": "https://contoso.crm.dynamics.com", "tenant_id": "t", "client_id": "a",
                "client_secret": "s", "fields": ["emailaddress1", "statuscode"]}"#,
        )
        .unwrap();
        DynamicsSource::new("d", &cfg).unwrap()
    }

    #[test]
    fn query_selects_orders_and_filters() {
        let s = source();
        assert_eq!(
            s.first_url(None).as_str(),
            "https://contoso.crm.dynamics.com/api/data/v9.2/leads?$select=leadid,emailaddress1,statuscode,\
             modifiedon&$orderby=modifiedon%20asc"
        );
        let t = parse_time("2024-05-01T00:00:00.250Z").unwrap();
        assert!(
            s.first_url(Some(t))
                .as_str()
                .ends_with("&$filter=modifiedon%20gt%202024-05-01T00:00:00Z"),
            "{}",
            s.first_url(Some(t))
        );
    }

    #[test]
    fn option_sets_read_as_labels_dates_stay_raw() {
        let r: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&format!(
            r#"{{"statuscode": 1, "statuscode{FORMATTED}": "New", "modifiedon": "2024-05-02T08:00:00Z",
                "modifiedon{FORMATTED}": "5/2/2024 8:00 AM", "donotemail": false, "numberofemployees": 12}}"#
        ))
        .unwrap();
        assert_eq!(cell(&r, "statuscode").as_deref(), Some("New"));
        assert_eq!(cell(&r, "modifiedon").as_deref(), Some("2024-05-02T08:00:00Z"));
        assert_eq!(cell(&r, "numberofemployees").as_deref(), Some("12"));
        assert_eq!(cell(&r, "missing"), None);
    }
}
