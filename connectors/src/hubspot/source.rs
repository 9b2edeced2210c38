//! Reading HubSpot records into Arrow batches of text columns.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde::Deserialize;
use tracing::{debug, info};
use url::Url;

use super::config::{DEFAULT_TOKEN_URL, HubSpotConfig, ID_COLUMN};
use crate::crm::{CrmError, CrmFetch, CrmProbe, RecordSet, parse_time, read_since};
use crate::http::{HttpClient, TokenProvider};

const PROVIDER: &str = "hubspot";
/// The cursor property: HubSpot's last-modified timestamp.
const CURSOR_PROPERTY: &str = "lastmodifieddate";
/// Search results reachable through one query; paging past it is a 400.
const SEARCH_CAP: u64 = 10_000;
const LIST_MAX: u32 = 100;
const SEARCH_MAX: u32 = 200;

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
    /// Set on archived (deleted) records.
    #[serde(default, rename = "archivedAt")]
    archived_at: Option<String>,
    #[serde(default, rename = "updatedAt")]
    updated_at: Option<String>,
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
    pub fn new(name: &str, config: &HubSpotConfig) -> Result<Self, CrmError> {
        CrmError::check_config(PROVIDER, name, config.problems())?;
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
            // Tokens are refreshed before `expires_in` runs out; a 401 that
            // says EXPIRED_AUTHENTICATION (clock skew, a token revoked
            // early) gets one new token. Other 401s are not retried: HubSpot
            // says a 401 alone is no reason to refresh.
            http: HttpClient::new("hubspot", auth, config.http.clone())?
                .with_refresh_on_401_saying("EXPIRED_AUTHENTICATION")
                .with_quota_429_saying(r#""policyName":"DAILY""#),
        })
    }

    fn url(&self, tail: &str) -> Url {
        self.base
            .join(&format!("crm/v3/objects/{}{tail}", self.config.object.as_str()))
            .expect("object path joins onto a base URL")
    }

    fn malformed(&self, url: &Url, detail: impl std::fmt::Display) -> CrmError {
        CrmError::Malformed {
            provider: PROVIDER,
            source_name: self.name.clone(),
            url: url.to_string(),
            detail: detail.to_string(),
        }
    }

    fn parse(&self, url: &Url, text: &str) -> Result<Page, CrmError> {
        let page: Page = serde_json::from_str(text).map_err(|e| self.malformed(url, e))?;
        if let Some(r) = page.results.iter().find(|r| r.id.trim().is_empty()) {
            return Err(self.malformed(
                url,
                format!("a record has an empty id ({} properties)", r.properties.len()),
            ));
        }
        Ok(page)
    }

    fn record_set(&self) -> RecordSet {
        RecordSet::new(ID_COLUMN, self.properties.clone())
    }

    /// Reads everything (no cursor) or what changed since `cursor`.
    pub async fn fetch(&self, cursor: Option<&str>) -> Result<CrmFetch, CrmError> {
        let mut rows = self.record_set();
        let mode = match read_since(PROVIDER, &self.name, cursor, self.config.lookback)? {
            None => {
                self.list(&mut rows, None).await?;
                "list"
            }
            Some(since) => {
                self.search(since, &mut rows).await?;
                self.archived(since, &mut rows).await?;
                "search"
            }
        };
        let display = format!("hubspot:{}", self.config.object.as_str());
        info!(source = %self.name, mode, records = rows.len(), deleted = rows.deleted_len(), requests = self.http.requests(), "hubspot read");
        rows.into_fetch(PROVIDER, &self.name, display, mode, cursor, self.http.requests())
    }

    /// Auth and the first list page; keeps nothing.
    pub async fn test(&self) -> Result<CrmProbe, CrmError> {
        let mut rows = self.record_set();
        self.list(&mut rows, Some(1)).await?;
        Ok(CrmProbe {
            records: rows.len() as u64,
            requests: self.http.requests(),
        })
    }

    async fn list(&self, rows: &mut RecordSet, max_pages: Option<usize>) -> Result<(), CrmError> {
        let mut after: Option<String> = None;
        let mut pages = 0;
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
            add(rows, page.results);
            pages += 1;
            if max_pages.is_some_and(|m| pages >= m) {
                return Ok(());
            }
            match page.paging.and_then(|p| p.next) {
                Some(n) if Some(&n.after) == after.as_ref() => {
                    return Err(self.malformed(&url, format!("paging.next.after {:?} repeats", n.after)));
                }
                Some(n) => after = Some(n.after),
                None => return Ok(()),
            }
        }
    }

    /// Deletions: HubSpot lists archived (deleted, restorable for 90 days)
    /// records with `archived=true`; there is no time filter, so every page
    /// is read and those archived since `since` are kept.
    async fn archived(&self, since: DateTime<Utc>, rows: &mut RecordSet) -> Result<(), CrmError> {
        let mut after: Option<String> = None;
        loop {
            let mut url = self.url("");
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("limit", &self.config.page_size.min(LIST_MAX).to_string());
                q.append_pair("properties", CURSOR_PROPERTY);
                q.append_pair("archived", "true");
                if let Some(a) = &after {
                    q.append_pair("after", a);
                }
            }
            let text = self.http.send(Method::GET, &url, None).await?;
            let page = self.parse(&url, &text)?;
            debug!(source = %self.name, records = page.results.len(), "hubspot archived page");
            for r in page.results {
                let at = r.archived_at.as_deref().or(r.updated_at.as_deref());
                let Some(at) = at.and_then(parse_time) else {
                    return Err(self.malformed(
                        &url,
                        format!("archived record {} has no archivedAt timestamp", r.id),
                    ));
                };
                if at >= since {
                    rows.push_deleted(r.id, at);
                }
            }
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
    /// seen (records of that instant come again; `RecordSet` keeps one per id).
    async fn search(&self, from: DateTime<Utc>, rows: &mut RecordSet) -> Result<(), CrmError> {
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
            add(rows, page.results);
            let Some(next) = page.paging.and_then(|p| p.next) else {
                return Ok(());
            };
            if in_window + u64::from(limit) > SEARCH_CAP {
                let Some(last) = rows.newest() else {
                    return Err(self.malformed(&url, "full pages without lastmodifieddate values"));
                };
                if last <= window_start {
                    return Err(CrmError::Stuck {
                        provider: PROVIDER,
                        source_name: self.name.clone(),
                        detail: format!(
                            "more than {SEARCH_CAP} records share lastmodifieddate {}; the search API cannot \
                             page past them",
                            crate::crm::format_cursor(last)
                        ),
                    });
                }
                debug!(source = %self.name, restart_at = %last, "hubspot search window restarts");
                window_start = last;
                after = None;
                in_window = 0;
            } else {
                after = Some(next.after);
            }
        }
    }
}

/// Adds a page of records (null properties as empty text).
fn add(rows: &mut RecordSet, page: Vec<Record>) {
    for r in page {
        let modified = r
            .properties
            .get(CURSOR_PROPERTY)
            .and_then(|v| v.as_deref())
            .and_then(parse_time);
        let values: HashMap<String, String> = r
            .properties
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or_default()))
            .collect();
        rows.push(r.id, values, modified);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_become_one_record_per_id() {
        let rec = |id: &str, modified: &str, email: &str| Record {
            id: id.into(),
            archived_at: None,
            updated_at: None,
            properties: BTreeMap::from([
                (CURSOR_PROPERTY.to_string(), Some(modified.to_string())),
                ("email".to_string(), Some(email.to_string())),
                ("phone".to_string(), None),
            ]),
        };
        let mut rows = RecordSet::new(ID_COLUMN, vec!["email".into(), "phone".into()]);
        add(
            &mut rows,
            vec![
                rec("1", "2024-01-01T00:00:00Z", "a@x.io"),
                rec("2", "1709251200000", "b@x.io"),
            ],
        );
        add(&mut rows, vec![rec("1", "2024-02-01T00:00:00Z", "a2@x.io")]);
        assert_eq!(rows.len(), 2);
        let f = rows
            .finish("hs", "hubspot:contacts".into(), "list", None, 2)
            .unwrap();
        assert_eq!(f.cursor.as_deref(), Some("2024-03-01T00:00:00.000Z"));
    }
}
