//! Reading Salesforce leads with SOQL, page by page.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use jsonwebtoken::EncodingKey;
use reqwest::Method;
use serde::Deserialize;
use tracing::{debug, info, warn};
use url::Url;

use super::config::{ID_COLUMN, OBJECT, SalesforceConfig};
use crate::crm::{
    CrmError, CrmFetch, CrmProbe, RecordSet, json_text, parse_time, read_since, request_fields,
};
use crate::http::{Grant, HttpClient, HttpError, TokenProvider};

const PROVIDER: &str = "salesforce";
/// The cursor field: changes by users and by the system.
const CURSOR_FIELD: &str = "SystemModstamp";

#[derive(Deserialize)]
struct QueryPage {
    done: bool,
    #[serde(default, rename = "nextRecordsUrl")]
    next_records_url: Option<String>,
    records: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// A configured Salesforce source.
#[derive(Debug)]
pub struct SalesforceSource {
    name: String,
    config: SalesforceConfig,
    /// Fields read after `Id`, `SystemModstamp` among them.
    fields: Vec<String>,
    http: HttpClient,
}

impl SalesforceSource {
    pub fn new(name: &str, config: &SalesforceConfig) -> Result<Self, CrmError> {
        let config_err = |problems: String| CrmError::Config {
            provider: PROVIDER,
            source_name: name.to_string(),
            problems,
        };
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(config_err(problems.join("; ")));
        }
        let grant = if config.uses_jwt() {
            let pem = match (&config.private_key, &config.private_key_file) {
                (Some(k), _) => k.expose().as_bytes().to_vec(),
                (None, Some(f)) => std::fs::read(f)
                    .map_err(|e| config_err(format!("cannot read `private_key_file` {f:?}: {e}")))?,
                (None, None) => unreachable!("checked by uses_jwt()"),
            };
            // The parse error says what is wrong with the PEM, never its text.
            let key = EncodingKey::from_rsa_pem(&pem)
                .map_err(|e| config_err(format!("the JWT private key is not an RSA PEM key: {e}")))?;
            Grant::JwtBearer {
                client_id: config.client_id.clone(),
                subject: config.username.clone().unwrap_or_default(),
                audience: config
                    .jwt_audience
                    .as_deref()
                    .unwrap_or(&config.login_url)
                    .trim_end_matches('/')
                    .to_string(),
                key,
            }
        } else {
            Grant::RefreshToken {
                client_id: config.client_id.clone(),
                client_secret: config.client_secret.clone(),
                refresh_token: config.refresh_token.clone().expect("checked by problems()"),
            }
        };
        let fields = request_fields(&config.fields, "Id", CURSOR_FIELD);
        // No `expires_in` in Salesforce token responses: a 401
        // INVALID_SESSION_ID is the signal to get a new token.
        let http = HttpClient::new(
            PROVIDER,
            TokenProvider::grant(grant, config.token_url()),
            config.http.clone(),
        )?
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

    fn soql(&self, since: Option<DateTime<Utc>>) -> String {
        let mut q = format!("SELECT Id, {} FROM {OBJECT}", self.fields.join(", "));
        if let Some(t) = since {
            // SOQL datetime literals are unquoted, without fractions.
            q.push_str(&format!(
                " WHERE {CURSOR_FIELD} >= {}",
                t.format("%Y-%m-%dT%H:%M:%SZ")
            ));
        }
        // Id breaks ties so pages of equal timestamps keep a stable order.
        q.push_str(&format!(" ORDER BY {CURSOR_FIELD}, Id"));
        q
    }

    /// Reads every lead (no cursor) or those changed since `cursor`.
    pub async fn fetch(&self, cursor: Option<&str>) -> Result<CrmFetch, CrmError> {
        let since = read_since(PROVIDER, &self.name, cursor, self.config.lookback)?;
        let mut rows = RecordSet::new(ID_COLUMN, self.fields.clone());
        self.query(&self.soql(since), &mut rows, None).await?;
        if let Some(since) = since {
            self.deleted(since, &mut rows).await?;
        }
        let mode = if cursor.is_some() { "incremental" } else { "list" };
        info!(source = %self.name, mode, records = rows.len(), deleted = rows.deleted_len(), requests = self.http.requests(), "salesforce read");
        let display = format!("salesforce:{OBJECT}");
        rows.into_fetch(PROVIDER, &self.name, display, mode, cursor, self.http.requests())
    }

    /// Token plus the first page of the lead query; keeps nothing.
    pub async fn test(&self) -> Result<CrmProbe, CrmError> {
        let mut rows = RecordSet::new(ID_COLUMN, self.fields.clone());
        self.query(&self.soql(None), &mut rows, Some(1)).await?;
        Ok(CrmProbe {
            records: rows.len() as u64,
            requests: self.http.requests(),
        })
    }

    /// Deleted leads: `sobjects/Lead/deleted/?start=&end=`. Salesforce keeps
    /// them 15 days and rejects an older `start`, so a cursor older than
    /// that asks from the oldest day it can (and says deletions before it
    /// may be missed).
    async fn deleted(&self, since: DateTime<Utc>, rows: &mut RecordSet) -> Result<(), CrmError> {
        #[derive(Deserialize)]
        struct Deleted {
            #[serde(rename = "deletedRecords", default)]
            deleted_records: Vec<DeletedRecord>,
        }
        #[derive(Deserialize)]
        struct DeletedRecord {
            id: String,
            #[serde(rename = "deletedDate")]
            deleted_date: String,
        }
        let now = Utc::now();
        let oldest = now - chrono::Duration::days(15) + chrono::Duration::hours(1);
        let start = if since < oldest {
            warn!(source = %self.name, since = %since, "salesforce keeps deletions 15 days: deletions before that are not seen");
            oldest
        } else {
            since
        };
        let base = self.base().await?;
        let mut url = base
            .join(&format!(
                "/services/data/{}/sobjects/{OBJECT}/deleted/",
                self.config.api_version
            ))
            .map_err(|e| self.malformed(&base, e))?;
        url.query_pairs_mut()
            .append_pair("start", &start.format("%Y-%m-%dT%H:%M:%S+00:00").to_string())
            .append_pair("end", &now.format("%Y-%m-%dT%H:%M:%S+00:00").to_string());
        let reply = self
            .http
            .request(Method::GET, &url, None, &[])
            .await
            .map_err(|e| self.limit(e))?;
        let page: Deleted = serde_json::from_str(&reply.body).map_err(|e| self.malformed(&url, e))?;
        for d in page.deleted_records {
            let at = parse_time(&d.deleted_date).ok_or_else(|| {
                self.malformed(
                    &url,
                    format!(
                        "deleted record {}: deletedDate {:?} is not a timestamp",
                        d.id, d.deleted_date
                    ),
                )
            })?;
            if d.id.trim().is_empty() {
                return Err(self.malformed(&url, "a deleted record has no id"));
            }
            rows.push_deleted(d.id, at);
        }
        Ok(())
    }

    /// The instance the token names: every data call goes there.
    async fn base(&self) -> Result<Url, CrmError> {
        let session = self.http.session().await?;
        let instance = session.instance_url.ok_or_else(|| CrmError::Malformed {
            provider: PROVIDER,
            source_name: self.name.clone(),
            url: self.config.token_url(),
            detail: "the token response has no instance_url".into(),
        })?;
        Url::parse(&instance).map_err(|e| CrmError::Malformed {
            provider: PROVIDER,
            source_name: self.name.clone(),
            url: self.config.token_url(),
            detail: format!("instance_url {instance:?} is not a URL: {e}"),
        })
    }

    async fn query(
        &self,
        soql: &str,
        rows: &mut RecordSet,
        max_pages: Option<usize>,
    ) -> Result<(), CrmError> {
        let base = self.base().await?;
        let mut url = base
            .join(&format!("/services/data/{}/query", self.config.api_version))
            .map_err(|e| self.malformed(&base, e))?;
        url.query_pairs_mut().append_pair("q", soql);
        let options = format!("batchSize={}", self.config.page_size);
        let mut pages = 0;
        loop {
            let reply = self
                .http
                .request(
                    Method::GET,
                    &url,
                    None,
                    &[("Sforce-Query-Options", options.clone())],
                )
                .await
                .map_err(|e| self.limit(e))?;
            let page: QueryPage = serde_json::from_str(&reply.body).map_err(|e| self.malformed(&url, e))?;
            debug!(source = %self.name, records = page.records.len(), done = page.done, "salesforce page");
            for r in page.records {
                let id = match r.get("Id") {
                    Some(serde_json::Value::String(id)) if !id.trim().is_empty() => id.clone(),
                    _ => return Err(self.malformed(&url, "a record has no Id")),
                };
                let modified = r.get(CURSOR_FIELD).map(json_text);
                let modified = match modified.as_deref() {
                    Some(m) if !m.is_empty() => Some(parse_time(m).ok_or_else(|| {
                        self.malformed(
                            &url,
                            format!("record {id}: {CURSOR_FIELD} {m:?} is not a timestamp"),
                        )
                    })?),
                    _ => None,
                };
                let values: HashMap<String, String> = self
                    .fields
                    .iter()
                    .filter_map(|f| r.get(f).map(|v| (f.clone(), json_text(v))))
                    .collect();
                rows.push(id, values, modified);
            }
            pages += 1;
            if page.done || max_pages.is_some_and(|m| pages >= m) {
                return Ok(());
            }
            // A relative path on the instance; anything else is not ours to follow.
            let next = match page.next_records_url {
                Some(n) if n.starts_with('/') && !n.starts_with("//") => n,
                Some(n) => {
                    return Err(self.malformed(
                        &url,
                        format!("nextRecordsUrl {n:?} is not a path on the instance"),
                    ));
                }
                None => return Err(self.malformed(&url, "done is false but there is no nextRecordsUrl")),
            };
            let next = base.join(&next).map_err(|e| self.malformed(&url, e))?;
            if next == url {
                return Err(self.malformed(&url, "nextRecordsUrl repeats the page just read"));
            }
            url = next;
        }
    }

    /// Salesforce signals its daily API limit with 403 REQUEST_LIMIT_EXCEEDED
    /// (no 429): stop now, the next run resumes from the saved cursor.
    fn limit(&self, e: HttpError) -> CrmError {
        match &e {
            HttpError::Forbidden { detail, .. } if detail.contains("REQUEST_LIMIT_EXCEEDED") => {
                CrmError::LimitExceeded {
                    provider: PROVIDER,
                    source_name: self.name.clone(),
                    detail: detail.clone(),
                }
            }
            _ => CrmError::Http(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soql_reads_id_and_the_cursor_field_in_order() {
        let cfg: SalesforceConfig =
            serde_json::from_str(r#"{"client_id": "app", "refresh_token": "r", "fields": ["Email", "Id"]}"#)
                .unwrap();
        let s = SalesforceSource::new("sf", &cfg).unwrap();
        assert_eq!(
            s.soql(None),
            "SELECT Id, Email, SystemModstamp FROM Lead ORDER BY SystemModstamp, Id"
        );
        let t = parse_time("2024-05-01T10:20:30.500+0000").unwrap();
        assert_eq!(
            s.soql(Some(t)),
            "SELECT Id, Email, SystemModstamp FROM Lead WHERE SystemModstamp >= 2024-05-01T10:20:30Z ORDER BY \
             SystemModstamp, Id"
        );
    }

    #[test]
    fn a_bad_private_key_is_a_config_error_without_the_key() {
        let cfg: SalesforceConfig = serde_json::from_str(
            r#"{"client_id": "app", "username": "u@x.io", "private_key": "-----BEGIN NOPE-----SECRETBITS"}"#,
        )
        .unwrap();
        let e = SalesforceSource::new("sf", &cfg).unwrap_err().to_string();
        assert!(e.contains("not an RSA PEM key"), "{e}");
        assert!(!e.contains("SECRETBITS"), "{e}");
    }
}
