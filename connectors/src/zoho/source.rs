//! Reading Zoho CRM records page by page.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde::Deserialize;
use tracing::{debug, info};
use url::Url;

use super::config::{ID_COLUMN, ZohoConfig};
use crate::crm::{
    CrmError, CrmFetch, CrmProbe, RecordSet, json_text, parse_time, read_since, request_fields,
};
use crate::http::{Grant, HttpClient, TokenProvider};

const PROVIDER: &str = "zoho";
const CURSOR_FIELD: &str = "Modified_Time";
/// `page` reaches this many records; past them only `page_token` pages.
const DISCRETE_RECORDS: u32 = 2000;
/// Highest `page` number Zoho accepts.
const DISCRETE_PAGES: u32 = 10;

#[derive(Deserialize)]
struct Page {
    data: Vec<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    info: Info,
}

#[derive(Deserialize, Default)]
struct Info {
    #[serde(default)]
    more_records: bool,
    #[serde(default)]
    next_page_token: Option<String>,
}

/// How the next page is asked for.
enum Next {
    Page(u32),
    Token(String),
}

/// A configured Zoho CRM source.
#[derive(Debug)]
pub struct ZohoSource {
    name: String,
    config: ZohoConfig,
    fields: Vec<String>,
    http: HttpClient,
}

impl ZohoSource {
    pub fn new(name: &str, config: &ZohoConfig) -> Result<Self, CrmError> {
        CrmError::check_config(PROVIDER, name, config.problems())?;
        let grant = Grant::RefreshToken {
            client_id: config.client_id.clone(),
            client_secret: Some(config.client_secret.clone()),
            refresh_token: config.refresh_token.clone(),
        };
        let fields = request_fields(&config.fields, "id", CURSOR_FIELD);
        // Tokens live an hour but may be revoked early (Zoho caps tokens per
        // refresh token): a 401 INVALID_TOKEN gets one fresh token.
        let http = HttpClient::new(
            PROVIDER,
            TokenProvider::grant(grant, config.token_url()),
            config.http.clone(),
        )?
        .with_auth_scheme("Zoho-oauthtoken")
        .with_refresh_on_401();
        Ok(Self {
            name: name.to_string(),
            config: config.clone(),
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

    /// Reads every record (no cursor) or those modified since `cursor`.
    pub async fn fetch(&self, cursor: Option<&str>) -> Result<CrmFetch, CrmError> {
        let since = read_since(PROVIDER, &self.name, cursor, self.config.lookback)?;
        let mut rows = RecordSet::new(ID_COLUMN, self.fields.clone());
        self.read(since, &mut rows, None).await?;
        if let Some(since) = since {
            self.deleted(since, &mut rows).await?;
        }
        let mode = if cursor.is_some() { "incremental" } else { "list" };
        info!(source = %self.name, mode, records = rows.len(), deleted = rows.deleted_len(), requests = self.http.requests(), "zoho read");
        let display = format!("zoho:{}", self.config.module);
        rows.into_fetch(PROVIDER, &self.name, display, mode, cursor, self.http.requests())
    }

    /// Token plus the first page; keeps nothing.
    pub async fn test(&self) -> Result<CrmProbe, CrmError> {
        let mut rows = RecordSet::new(ID_COLUMN, self.fields.clone());
        self.read(None, &mut rows, Some(1)).await?;
        Ok(CrmProbe {
            records: rows.len() as u64,
            requests: self.http.requests(),
        })
    }

    /// Deleted records (recycle bin and permanent): `{module}/deleted?type=all`
    /// with If-Modified-Since, paged by `page` until `more_records` is false.
    async fn deleted(&self, since: DateTime<Utc>, rows: &mut RecordSet) -> Result<(), CrmError> {
        #[derive(Deserialize)]
        struct Deleted {
            data: Vec<serde_json::Map<String, serde_json::Value>>,
            #[serde(default)]
            info: Info,
        }
        let base = self.module_url().await?;
        let mut url = base.clone();
        url.set_path(&format!("{}/deleted", base.path()));
        let headers = [(
            "If-Modified-Since",
            since.format("%Y-%m-%dT%H:%M:%S+00:00").to_string(),
        )];
        let per_page = self.config.page_size;
        let mut page_no = 1u32;
        loop {
            let mut page_url = url.clone();
            page_url
                .query_pairs_mut()
                .append_pair("type", "all")
                .append_pair("page", &page_no.to_string())
                .append_pair("per_page", &per_page.to_string());
            let reply = self.http.request(Method::GET, &page_url, None, &headers).await?;
            if reply.status == 204 || reply.status == 304 {
                return Ok(());
            }
            let page: Deleted =
                serde_json::from_str(&reply.body).map_err(|e| self.malformed(&page_url, e))?;
            debug!(source = %self.name, records = page.data.len(), more = page.info.more_records, "zoho deleted page");
            for r in &page.data {
                let id = match r.get("id").map(json_text) {
                    Some(id) if !id.trim().is_empty() => id,
                    _ => return Err(self.malformed(&page_url, "a deleted record has no id")),
                };
                let time = r.get("deleted_time").map(json_text).unwrap_or_default();
                let at = parse_time(&time).ok_or_else(|| {
                    self.malformed(
                        &page_url,
                        format!("deleted record {id}: deleted_time {time:?} is not a timestamp"),
                    )
                })?;
                // If-Modified-Since should already filter; the lookback
                // window must not reach past what was asked for.
                if at >= since {
                    rows.push_deleted(id, at);
                }
            }
            if !page.info.more_records || page.data.is_empty() {
                return Ok(());
            }
            page_no += 1;
        }
    }

    /// `{api_domain}/crm/{version}/{module}` on the domain the token names.
    async fn module_url(&self) -> Result<Url, CrmError> {
        let session = self.http.session().await?;
        let token_url = self.config.token_url();
        let domain = session.api_domain.ok_or_else(|| CrmError::Malformed {
            provider: PROVIDER,
            source_name: self.name.clone(),
            url: token_url.clone(),
            detail: "the token response has no api_domain".into(),
        })?;
        Url::parse(&domain)
            .and_then(|b| {
                b.join(&format!(
                    "/crm/{}/{}",
                    self.config.api_version, self.config.module
                ))
            })
            .map_err(|e| CrmError::Malformed {
                provider: PROVIDER,
                source_name: self.name.clone(),
                url: token_url,
                detail: format!("api_domain {domain:?} is not a URL: {e}"),
            })
    }

    async fn read(
        &self,
        since: Option<DateTime<Utc>>,
        rows: &mut RecordSet,
        max_pages: Option<u32>,
    ) -> Result<(), CrmError> {
        let base = self.module_url().await?;
        let mut headers = Vec::new();
        if let Some(t) = since {
            headers.push((
                "If-Modified-Since",
                t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string(),
            ));
        }
        let per_page = self.config.page_size;
        let mut next = Next::Page(1);
        let mut pages = 0;
        loop {
            let mut url = base.clone();
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("fields", &self.fields.join(","))
                    .append_pair("per_page", &per_page.to_string())
                    .append_pair("sort_by", CURSOR_FIELD)
                    .append_pair("sort_order", "asc");
                match &next {
                    Next::Page(p) => q.append_pair("page", &p.to_string()),
                    Next::Token(t) => q.append_pair("page_token", t),
                };
            }
            let reply = self.http.request(Method::GET, &url, None, &headers).await?;
            // 204: nothing matches; 304: nothing modified since.
            if reply.status == 204 || reply.status == 304 {
                debug!(source = %self.name, status = reply.status, "zoho: no (more) records");
                return Ok(());
            }
            let page: Page = serde_json::from_str(&reply.body).map_err(|e| self.malformed(&url, e))?;
            debug!(source = %self.name, records = page.data.len(), more = page.info.more_records, "zoho page");
            for r in page.data {
                let id = match r.get("id").map(json_text) {
                    Some(id) if !id.trim().is_empty() => id,
                    _ => return Err(self.malformed(&url, "a record has no id")),
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
                    .filter_map(|f| r.get(f).map(|v| (f.clone(), json_text(v))))
                    .collect();
                rows.push(id, values, modified);
            }
            pages += 1;
            if !page.info.more_records || max_pages.is_some_and(|m| pages >= m) {
                return Ok(());
            }
            next = match next {
                Next::Page(p) if p < DISCRETE_PAGES && (p + 1) * per_page <= DISCRETE_RECORDS => {
                    Next::Page(p + 1)
                }
                _ => match page.info.next_page_token {
                    Some(t) if !t.is_empty() => Next::Token(t),
                    _ => {
                        return Err(self.malformed(
                            &url,
                            "more_records is true but there is no next_page_token to page past the page limit",
                        ));
                    }
                },
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modified_time_is_always_read() {
        let cfg: ZohoConfig = serde_json::from_str(
            r#"{"client_id": "a", "client_secret": "s", "refresh_token": "r", "fields": ["Email", "id"]}"#,
        )
        .unwrap();
        let s = ZohoSource::new("z", &cfg).unwrap();
        assert_eq!(s.fields, ["Email", "Modified_Time"]);
    }
}
