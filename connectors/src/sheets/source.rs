//! Reading a Google Sheet range into Arrow batches of text columns, only
//! the rows that are new or changed since the last committed run.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use arrow::array::{ArrayRef, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use google_sheets4::Sheets;
use google_sheets4::api::{Scope, ValueRange};
use google_sheets4::common::{self, Retry};
use google_sheets4::hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use google_sheets4::hyper_util::client::legacy::Client;
use google_sheets4::hyper_util::client::legacy::connect::HttpConnector;
use google_sheets4::hyper_util::rt::TokioExecutor;
use google_sheets4::yup_oauth2::authenticator::Authenticator;
use google_sheets4::yup_oauth2::{
    self, CustomHyperClientBuilder, ServiceAccountAuthenticator, ServiceAccountKey,
};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

use super::config::{DEFAULT_BASE_URL, DEFAULT_TOKEN_URI, ID_COLUMN, SCOPE, SheetsConfig};
use crate::crm::{CrmDeletion, CrmError, CrmFetch, CrmProbe, json_text};
use crate::files::{SOURCE_COLUMN, SOURCE_FILE_COLUMN, SOURCE_ROW_COLUMN, clean_headers};
use crate::http::{HttpError, backoff, redact_jwts, retry_after_value};

const PROVIDER: &str = "google_sheets";
/// Every column of a tab: ZZZ is the widest a sheet can be.
const ALL_COLUMNS: &str = "A:ZZZ";
/// Version of the saved row state; another version is read as "no state".
const STATE_VERSION: u32 = 1;

type Connector = HttpsConnector<HttpConnector>;

/// The row state saved with each commit: per row identity, a hash of what
/// was committed. A row whose hash is unchanged is not passed downstream.
#[derive(Debug, Default, Serialize, Deserialize)]
struct RowState {
    version: u32,
    /// The id column the identities were made with (`None`: fingerprints).
    id_column: Option<String>,
    /// identity -> content hash (16 hex digits).
    rows: BTreeMap<String, String>,
}

/// What `leadflow check` reads: the header row.
#[derive(Debug, Clone)]
pub struct SheetHeader {
    /// The range as the API echoed it, e.g. `Leads!A1:F1`.
    pub range: String,
    pub headers: Vec<String>,
}

/// A configured Google Sheets source.
pub struct SheetsSource {
    name: String,
    config: SheetsConfig,
    /// The range asked for (the configured one, or every column of the
    /// first tab).
    range: String,
    /// API root, ending in `/`.
    base: String,
    display: String,
    requests: AtomicU32,
}

impl fmt::Debug for SheetsSource {
    // By hand: the config holds the key (redacted by `Secret`, but the
    // parsed key never lives here either).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SheetsSource")
            .field("name", &self.name)
            .field("spreadsheet_id", &self.config.spreadsheet_id)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

/// Why no access token could be had, if so. Final when the endpoint
/// refused the key (an OAuth error code); else (no answer, 5xx page,
/// an answer without a token) worth another try.
struct TokenFailure {
    is_final: bool,
    detail: String,
}

fn token_failure(outcome: Result<yup_oauth2::AccessToken, yup_oauth2::Error>) -> Option<TokenFailure> {
    match outcome {
        Ok(t) if t.token().is_some_and(|t| !t.is_empty()) => None,
        Ok(_) => Some(TokenFailure {
            is_final: false,
            detail: "the token endpoint's answer holds no access token".into(),
        }),
        Err(e) => Some(TokenFailure {
            is_final: token_error_is_final(&e),
            // An error body may echo the signed assertion we sent.
            detail: redact_jwts(&e.to_string()),
        }),
    }
}

/// The endpoint refused the key (an OAuth error code) or the key itself is
/// unusable: asking again cannot help. Anything else (no answer, a 5xx
/// page, an answer that is not a token) may pass on another try.
fn token_error_is_final(e: &yup_oauth2::Error) -> bool {
    use yup_oauth2::error::AuthErrorCode;
    match e {
        yup_oauth2::Error::AuthError(a) => !matches!(a.error, AuthErrorCode::Other(_)),
        yup_oauth2::Error::UserError(_) | yup_oauth2::Error::CredentialSourceError(_) => true,
        _ => false,
    }
}

/// The hub (API calls) and the authenticator (its token cache), for one run.
struct Session {
    hub: Sheets<Connector>,
    auth: Authenticator<Connector>,
    client_email: String,
    token_uri: String,
}

/// Captures the answer of a failed call, so the retry policy can read the
/// status, `Retry-After` and Google's error envelope; never retries itself.
#[derive(Default)]
struct Capture {
    status: Option<u16>,
    retry_after: Option<Duration>,
    /// `error.status` of the envelope (`RESOURCE_EXHAUSTED`, ...).
    code: Option<String>,
    /// `error.message` of the envelope.
    message: Option<String>,
}

impl common::Delegate for Capture {
    fn http_failure(&mut self, response: &common::Response, err: Option<&serde_json::Value>) -> Retry {
        self.status = Some(response.status().as_u16());
        self.retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(retry_after_value);
        if let Some(e) = err.and_then(|v| v.get("error")) {
            self.code = e.get("status").and_then(|s| s.as_str()).map(String::from);
            self.message = e.get("message").and_then(|s| s.as_str()).map(String::from);
        }
        Retry::Abort
    }
}

impl SheetsSource {
    pub fn new(name: &str, config: &SheetsConfig) -> Result<Self, CrmError> {
        CrmError::check_config(PROVIDER, name, config.problems())?;
        let range = config
            .range
            .as_deref()
            .map(str::trim)
            .unwrap_or(ALL_COLUMNS)
            .to_string();
        let display = format!("google_sheets:{}/{}", config.spreadsheet_id.trim(), range);
        let mut base = config
            .base_url
            .clone()
            .unwrap_or_else(|| DEFAULT_BASE_URL.to_string());
        if !base.ends_with('/') {
            base.push('/');
        }
        let mut config = config.clone();
        config.spreadsheet_id = config.spreadsheet_id.trim().to_string();
        Ok(Self {
            name: name.to_string(),
            config,
            range,
            base,
            display,
            requests: AtomicU32::new(0),
        })
    }

    fn err(&self, detail: impl Into<String>) -> CrmError {
        CrmError::Sheets {
            source_name: self.name.clone(),
            spreadsheet: self.config.spreadsheet_id.clone(),
            range: self.range.clone(),
            detail: detail.into(),
        }
    }

    /// The key JSON (file or environment variable), the token endpoint
    /// override applied.
    async fn key(&self) -> Result<ServiceAccountKey, CrmError> {
        let (text, origin) = match (
            &self.config.credentials.key_file,
            &self.config.credentials.key_env,
        ) {
            (Some(path), _) => (
                tokio::fs::read_to_string(path).await.map_err(|e| {
                    self.credentials_err(format!("cannot read the service-account key file {path}: {e}"))
                })?,
                format!("key file {path}"),
            ),
            (None, Some(var)) => (
                std::env::var(var.trim())
                    .ok()
                    .filter(|v| !v.trim().is_empty())
                    .ok_or_else(|| {
                        self.credentials_err(format!(
                            "environment variable {} (`credentials.key_env`) is not set or empty",
                            var.trim()
                        ))
                    })?,
                format!("environment variable {}", var.trim()),
            ),
            (None, None) => unreachable!("checked by problems()"),
        };
        let mut key: ServiceAccountKey = serde_json::from_str(&text).map_err(|e| {
            // serde's message may quote a value (the key itself): only say
            // which field is missing, or where the JSON breaks.
            let what = match e.classify() {
                serde_json::error::Category::Data if e.to_string().starts_with("missing field") => e
                    .to_string()
                    .split(" at line")
                    .next()
                    .unwrap_or("missing field")
                    .to_string(),
                _ => format!("not valid key JSON (line {}, column {})", e.line(), e.column()),
            };
            self.credentials_err(format!("{origin} is not a service-account key: {what}"))
        })?;
        if let Some(uri) = &self.config.token_uri {
            key.token_uri = uri.clone();
        } else if key.token_uri.trim().is_empty() {
            key.token_uri = DEFAULT_TOKEN_URI.to_string();
        }
        Ok(key)
    }

    fn credentials_err(&self, detail: String) -> CrmError {
        CrmError::Credentials {
            provider: PROVIDER,
            source_name: self.name.clone(),
            detail,
        }
    }

    /// One client for the token endpoint and the API. TLS uses the
    /// process's rustls provider (the binary installs one), else aws-lc-rs.
    async fn session(&self) -> Result<Session, CrmError> {
        let key = self.key().await?;
        let client_email = key.client_email.clone();
        let token_uri = key.token_uri.clone();
        let provider = rustls::crypto::CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
        let connector = HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider)
            .map_err(|e| {
                self.credentials_err(format!("cannot load the system's TLS root certificates: {e}"))
            })?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        let api_client = Client::builder(TokioExecutor::new()).build(connector.clone());
        let token_client = Client::builder(TokioExecutor::new()).build(connector);
        let auth =
            ServiceAccountAuthenticator::with_client(key, CustomHyperClientBuilder::from(token_client))
                .build()
                .await
                .map_err(|e| self.credentials_err(format!("the key's private_key cannot sign: {e}")))?;
        let mut hub = Sheets::new(api_client, auth.clone());
        hub.base_url(self.base.clone());
        hub.root_url(self.base.clone());
        hub.user_agent(concat!("leadflow/", env!("CARGO_PKG_VERSION")).to_string());
        Ok(Session {
            hub,
            auth,
            client_email,
            token_uri,
        })
    }

    /// Requests made so far (retries and token refreshes included).
    pub fn requests(&self) -> u32 {
        self.requests.load(Ordering::Relaxed)
    }

    fn count_request(&self) -> Result<(), CrmError> {
        if self.requests.fetch_add(1, Ordering::Relaxed) >= self.config.http.max_requests {
            return Err(HttpError::Budget {
                provider: PROVIDER.to_string(),
                budget: self.config.http.max_requests,
            }
            .into());
        }
        Ok(())
    }

    /// A failed token request at the session's endpoint.
    fn token_err(&self, s: &Session, detail: String) -> CrmError {
        CrmError::Token {
            provider: PROVIDER,
            source_name: self.name.clone(),
            url: s.token_uri.clone(),
            detail,
        }
    }

    /// `values.get` of `range` (formatted values, rows), with the retry
    /// policy of the HTTP layer: 429 and 5xx and connection errors are
    /// retried after `Retry-After` or a jittered backoff, a 401 gets one new
    /// token, every attempt counts against the request budget.
    async fn values(&self, s: &Session, range: &str) -> Result<ValueRange, CrmError> {
        let opts = &self.config.http;
        let url = format!(
            "{}v4/spreadsheets/{}/values/{range}",
            self.base, self.config.spreadsheet_id
        );
        let mut attempt: u32 = 0;
        let mut refreshed = false;
        let mut force_refresh = false;
        loop {
            attempt += 1;
            self.count_request()?;
            // The token first, checked here: google-sheets4 would send the
            // request without one when the endpoint answers without a token.
            // After a failure or a 401, ask the endpoint again: yup-oauth2
            // caches an answer without a token as if it were one.
            let token = if force_refresh {
                s.auth.force_refreshed_token(&[SCOPE]).await
            } else {
                s.auth.token(&[SCOPE]).await
            };
            force_refresh = false;
            if let Some(failure) = token_failure(token) {
                force_refresh = true;
                if failure.is_final || attempt > opts.max_retries {
                    return Err(self.token_err(s, failure.detail));
                }
                warn!(source = %self.name, attempt, "token endpoint failing; retrying");
                tokio::time::sleep(backoff(opts.backoff, attempt)).await;
                continue;
            }
            let mut capture = Capture::default();
            let call = s
                .hub
                .spreadsheets()
                .values_get(&self.config.spreadsheet_id, range)
                .value_render_option("FORMATTED_VALUE")
                .major_dimension("ROWS")
                .add_scope(Scope::SpreadsheetReadonly)
                .delegate(&mut capture);
            let outcome = tokio::time::timeout(opts.timeout, call.doit()).await;
            let retry_in = match outcome {
                Ok(Ok((_, values))) => return Ok(values),
                Err(_) => {
                    let message = format!("no answer within {:?}", opts.timeout);
                    if attempt > opts.max_retries {
                        return Err(self.transport(&url, attempt, message));
                    }
                    warn!(source = %self.name, attempt, "sheets request timed out; retrying");
                    backoff(opts.backoff, attempt)
                }
                Ok(Err(common::Error::JsonDecodeError(body, e))) => {
                    // The body is sheet data, and serde's message may quote
                    // a value of it: name its size and where it breaks.
                    return Err(CrmError::Malformed {
                        provider: PROVIDER,
                        source_name: self.name.clone(),
                        url,
                        detail: format!(
                            "the values response ({} bytes) is not a ValueRange ({:?} error at line {}, \
                             column {})",
                            body.len(),
                            e.classify(),
                            e.line(),
                            e.column()
                        ),
                    });
                }
                Ok(Err(common::Error::MissingToken(e))) => {
                    // The token lapsed between our check and the call: the
                    // same rule as that check (an OAuth refusal is final),
                    // and the next try asks the endpoint anew.
                    let is_final = e
                        .downcast_ref::<yup_oauth2::Error>()
                        .is_none_or(token_error_is_final);
                    if is_final || attempt > opts.max_retries {
                        return Err(self.token_err(s, redact_jwts(&e.to_string())));
                    }
                    force_refresh = true;
                    warn!(source = %self.name, attempt, "token endpoint failing; retrying");
                    backoff(opts.backoff, attempt)
                }
                Ok(Err(common::Error::HttpError(e))) => {
                    if attempt > opts.max_retries {
                        return Err(self.transport(&url, attempt, e.to_string()));
                    }
                    warn!(source = %self.name, attempt, error = %e, "sheets request failed; retrying");
                    backoff(opts.backoff, attempt)
                }
                Ok(Err(other)) => {
                    let Some(status) = capture.status else {
                        return Err(self.transport(&url, attempt, other.to_string()));
                    };
                    let detail = match (&capture.code, &capture.message) {
                        (Some(c), Some(m)) => format!("{c}: {m}"),
                        (None, Some(m)) => m.clone(),
                        (Some(c), None) => c.clone(),
                        (None, None) => "no error body".to_string(),
                    };
                    match status {
                        401 if !refreshed => {
                            // The token was revoked or expired early: one
                            // new token, then the same request again.
                            refreshed = true;
                            attempt -= 1;
                            // The loop's token step asks for it, with its
                            // retries for a failing endpoint.
                            warn!(source = %self.name, "access token rejected (401); getting a new one");
                            self.count_request()?;
                            force_refresh = true;
                            continue;
                        }
                        401 => {
                            return Err(HttpError::Auth {
                                provider: PROVIDER.to_string(),
                                status,
                                url,
                                detail,
                            }
                            .into());
                        }
                        400 => {
                            return Err(self.err(format!(
                                "the API cannot read this range (HTTP 400 {detail}); check `range`: a tab \
                                 name of this spreadsheet or an A1 range such as Leads!A1:K"
                            )));
                        }
                        403 | 404 => {
                            return Err(self.err(format!(
                                "no access (HTTP {status} {detail}); check `spreadsheet_id` and share the \
                                 spreadsheet with {} (Viewer is enough)",
                                s.client_email
                            )));
                        }
                        429 | 500..=599 if attempt <= opts.max_retries => {
                            let wait = capture
                                .retry_after
                                .unwrap_or_else(|| backoff(opts.backoff, attempt));
                            warn!(source = %self.name, status, attempt, wait_ms = wait.as_millis() as u64, "retrying sheets request");
                            wait
                        }
                        _ => {
                            return Err(HttpError::Status {
                                provider: PROVIDER.to_string(),
                                method: "GET".into(),
                                url,
                                status,
                                attempts: attempt,
                                body: detail,
                            }
                            .into());
                        }
                    }
                }
            };
            tokio::time::sleep(retry_in).await;
        }
    }

    fn transport(&self, url: &str, attempts: u32, message: String) -> CrmError {
        HttpError::Transport {
            provider: PROVIDER.to_string(),
            method: "GET".into(),
            url: url.to_string(),
            attempts,
            message,
        }
        .into()
    }

    /// The range holding only the header row, where the configured range
    /// says which tab it is; else the configured range itself.
    fn header_range(&self) -> String {
        let h = self.config.header_row;
        match &self.config.range {
            None => format!("{h}:{h}"),
            Some(r) if !r.contains('!') => format!("'{}'!{h}:{h}", r.trim().replace('\'', "''")),
            Some(r) => r.trim().to_string(),
        }
    }

    /// Authenticates and reads the header row; keeps nothing.
    pub async fn header(&self) -> Result<SheetHeader, CrmError> {
        let s = self.session().await?;
        let range = self.header_range();
        let values = self.values(&s, &range).await?;
        let echoed = values.range.clone().unwrap_or(range);
        let rows = values.values.unwrap_or_default();
        let table = Table::new(rows, self.header_index(), first_row(&echoed));
        if table.headers.is_empty() {
            return Err(self.err(format!(
                "header row {} is empty; set `header_row` to the row holding the column names",
                self.config.header_row
            )));
        }
        Ok(SheetHeader {
            range: echoed,
            headers: table.headers,
        })
    }

    /// `leadflow check`: auth and the header row.
    pub async fn test(&self) -> Result<CrmProbe, CrmError> {
        let header = self.header().await?;
        self.check_id_column(&header.headers)?;
        Ok(CrmProbe {
            records: 0,
            requests: self.requests(),
        })
    }

    /// Where the header sits among the rows `header_range` returns: first
    /// when only the header row was asked for.
    fn header_index(&self) -> usize {
        if self.config.range.as_deref().is_none_or(|r| !r.contains('!')) {
            0
        } else {
            self.config.header_row as usize - 1
        }
    }

    /// The error for header names the pipeline's mapping needs and the
    /// sheet lacks.
    pub fn missing_columns(&self, missing: &[String], headers: &[String]) -> CrmError {
        self.err(format!(
            "the header row has no column {} (named in `mapping.columns`; headers: {}); rename the \
             sheet's column back or change the mapping",
            missing
                .iter()
                .map(|m| format!("{m:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            headers.join(", ")
        ))
    }

    /// The configured id column must be a header.
    pub fn check_id_column(&self, headers: &[String]) -> Result<(), CrmError> {
        match &self.config.id_column {
            Some(id) if find_column(headers, id).is_none() => Err(self.missing_id_column(id, headers)),
            _ => Ok(()),
        }
    }

    fn missing_id_column(&self, id: &str, headers: &[String]) -> CrmError {
        self.err(format!(
            "the id column {id:?} is not in the header row (headers: {}); fix `id_column` or the sheet",
            headers.join(", ")
        ))
    }

    /// Reads the whole range; returns the rows that are new or changed
    /// since the state in `cursor`, and the new state as the cursor.
    pub async fn fetch(&self, cursor: Option<&str>) -> Result<CrmFetch, CrmError> {
        let saved = cursor.and_then(|c| match serde_json::from_str::<RowState>(c) {
            Ok(s) if s.version == STATE_VERSION && s.id_column == self.config.id_column => Some(s),
            Ok(_) => {
                info!(source = %self.name, "saved row state is of another id column or version; reading all rows");
                None
            }
            Err(e) => {
                warn!(source = %self.name, error = %e, "saved row state unreadable; reading all rows");
                None
            }
        });
        let s = self.session().await?;
        let values = self.values(&s, &self.range).await?;
        let echoed = values.range.clone().unwrap_or_else(|| self.range.clone());
        let rows = values.values.unwrap_or_default();
        let table = Table::new(rows, self.config.header_row as usize - 1, first_row(&echoed));
        if table.headers.is_empty() {
            if table.rows.is_empty() {
                // An empty tab: nothing to read, the state stays as it was.
                info!(source = %self.name, range = %echoed, "sheet is empty");
                return Ok(CrmFetch {
                    headers: vec![ID_COLUMN.to_string()],
                    batches: Vec::new(),
                    rows: 0,
                    cursor: cursor.map(String::from),
                    mode: "empty",
                    display: self.display.clone(),
                    requests: self.requests(),
                    deleted: Vec::new(),
                });
            }
            return Err(self.err(format!(
                "header row {} is empty but rows follow it; set `header_row` to the row holding the \
                 column names",
                self.config.header_row
            )));
        }
        let id_col = match &self.config.id_column {
            Some(id) => Some(
                find_column(&table.headers, id).ok_or_else(|| self.missing_id_column(id, &table.headers))?,
            ),
            None => None,
        };
        let changes = diff(&table, id_col, saved.as_ref());
        if changes.blank_ids > 0 {
            warn!(source = %self.name, rows = changes.blank_ids, "rows without a value in the id column are identified by their values");
        }
        if changes.repeated > 0 {
            warn!(source = %self.name, rows = changes.repeated, "rows repeat an identity; the last one counts");
        }
        let mode = if saved.is_some() { "incremental" } else { "full" };
        // Identities the saved state holds and the sheet no longer does: rows
        // deleted since the last commit (the time of this read stands for
        // when). The new state no longer holds them.
        let now = chrono::Utc::now();
        let deleted: Vec<CrmDeletion> = saved
            .iter()
            .flat_map(|s| s.rows.keys())
            .filter(|id| !changes.state.contains_key(*id))
            .map(|id| CrmDeletion {
                id: id.clone(),
                deleted_at: now,
            })
            .collect();
        info!(
            source = %self.name,
            mode,
            rows = table.rows.len(),
            changed = changes.changed.len(),
            unchanged = changes.unchanged,
            deleted = deleted.len(),
            requests = self.requests(),
            "google sheet read"
        );
        let state = RowState {
            version: STATE_VERSION,
            id_column: self.config.id_column.clone(),
            rows: changes.state,
        };
        let batches = self
            .batch(&table, &changes.changed)
            .map_err(|e| CrmError::Malformed {
                provider: PROVIDER,
                source_name: self.name.clone(),
                url: self.display.clone(),
                detail: redact_jwts(&e.to_string()),
            })?;
        let mut headers = vec![ID_COLUMN.to_string()];
        headers.extend(table.headers.iter().cloned());
        Ok(CrmFetch {
            headers,
            batches,
            rows: changes.changed.len() as u64,
            cursor: Some(serde_json::to_string(&state).expect("row state serialises")),
            mode,
            display: self.display.clone(),
            requests: self.requests(),
            deleted,
        })
    }

    /// One batch: the identity column, the sheet's columns (text as the
    /// user sees it; missing trailing cells are empty), then the meta
    /// columns with the sheet row number as `_source_row`.
    fn batch(
        &self,
        table: &Table,
        changed: &[(String, usize)],
    ) -> Result<Vec<RecordBatch>, arrow::error::ArrowError> {
        if changed.is_empty() {
            return Ok(Vec::new());
        }
        let n = changed.len();
        let mut fields = vec![Field::new(ID_COLUMN, DataType::Utf8, true)];
        let mut columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from_iter_values(
            changed.iter().map(|(id, _)| id.as_str()),
        ))];
        for (c, h) in table.headers.iter().enumerate() {
            fields.push(Field::new(h, DataType::Utf8, true));
            columns.push(Arc::new(StringArray::from_iter_values(
                changed
                    .iter()
                    .map(|(_, r)| table.rows[*r].1.get(c).map(String::as_str).unwrap_or("")),
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
            self.display.as_str(),
            n,
        ))));
        columns.push(Arc::new(UInt64Array::from_iter_values(
            changed.iter().map(|(_, r)| table.rows[*r].0),
        )));
        Ok(vec![RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?])
    }
}

/// The first row number of an A1 range as the API echoes it
/// (`Leads!A5:D9` -> 5, `'My tab'!B2:C` -> 2, `Leads` or `A:D` -> 1).
fn first_row(range: &str) -> u64 {
    let cells = match range.rfind('!') {
        Some(i) => &range[i + 1..],
        None => range,
    };
    let start = cells.split(':').next().unwrap_or("");
    let digits: String = start
        .trim_start_matches(|c: char| c.is_ascii_alphabetic() || c == '$')
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok().filter(|n| *n > 0).unwrap_or(1)
}

/// The header row and the data rows under it (sheet row number, cells as
/// text). Rows with no value at all are left out.
struct Table {
    headers: Vec<String>,
    rows: Vec<(u64, Vec<String>)>,
}

impl Table {
    fn new(values: Vec<Vec<serde_json::Value>>, header_index: usize, first_row: u64) -> Self {
        let text = |row: &[serde_json::Value]| row.iter().map(json_text).collect::<Vec<String>>();
        let Some(header) = values.get(header_index) else {
            return Self {
                headers: Vec::new(),
                rows: Vec::new(),
            };
        };
        let raw = text(header);
        // Trailing blank header cells hold no column.
        let width = raw
            .iter()
            .rposition(|h| !h.trim().is_empty())
            .map_or(0, |i| i + 1);
        let headers = if width == 0 {
            Vec::new()
        } else {
            clean_headers(&raw[..width])
        };
        let rows = values
            .iter()
            .enumerate()
            .skip(header_index + 1)
            .filter_map(|(i, row)| {
                let cells = text(row);
                cells
                    .iter()
                    .any(|c| !c.trim().is_empty())
                    .then(|| (first_row + i as u64, cells))
            })
            .collect();
        Self { headers, rows }
    }
}

/// A header by name: exact, else ignoring case and surrounding spaces.
fn find_column(headers: &[String], name: &str) -> Option<usize> {
    let name = name.trim();
    headers
        .iter()
        .position(|h| h == name)
        .or_else(|| headers.iter().position(|h| h.eq_ignore_ascii_case(name)))
}

/// The result of comparing a read with the saved state.
struct Changes {
    /// (identity, row index) of new or edited rows, in sheet order.
    changed: Vec<(String, usize)>,
    unchanged: usize,
    /// The state to save: every identity of this read.
    state: BTreeMap<String, String>,
    blank_ids: usize,
    repeated: usize,
}

/// Hash of a row's non-empty values keyed by header, in header-name order:
/// moving a column, or adding an empty one, changes nothing.
fn content(headers: &[String], cells: &[String]) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = headers
        .iter()
        .zip(cells)
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(h, v)| (h.to_lowercase(), v.trim().to_string()))
        .collect();
    pairs.sort();
    pairs
}

fn digest(pairs: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (h, v) in pairs {
        out.extend_from_slice(h.as_bytes());
        out.push(0x1f);
        out.extend_from_slice(v.as_bytes());
        out.push(0x1e);
    }
    out
}

fn diff(table: &Table, id_col: Option<usize>, saved: Option<&RowState>) -> Changes {
    let mut latest: HashMap<String, (usize, String)> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut blank_ids = 0;
    let mut repeated = 0;
    for (r, (_, cells)) in table.rows.iter().enumerate() {
        let bytes = digest(&content(&table.headers, cells));
        let hash = format!("{:016x}", xxh3_64(&bytes));
        let given = id_col
            .and_then(|c| cells.get(c))
            .map(|v| v.trim())
            .filter(|v| !v.is_empty());
        if id_col.is_some() && given.is_none() {
            blank_ids += 1;
        }
        let id = match given {
            Some(v) => v.to_string(),
            None => {
                let mut h = Xxh3::new();
                h.update(&bytes);
                format!("row-{:032x}", h.digest128())
            }
        };
        if latest.insert(id.clone(), (r, hash)).is_some() {
            repeated += 1;
        } else {
            order.push(id);
        }
    }
    let mut changed = Vec::new();
    let mut unchanged = 0;
    let mut state = BTreeMap::new();
    for id in order {
        let (r, hash) = latest.remove(&id).expect("every identity was recorded");
        if saved.and_then(|s| s.rows.get(&id)) == Some(&hash) {
            unchanged += 1;
        } else {
            changed.push((id.clone(), r));
        }
        state.insert(id, hash);
    }
    debug!(
        changed = changed.len(),
        unchanged, "sheet rows compared with the saved state"
    );
    Changes {
        changed,
        unchanged,
        state,
        blank_ids,
        repeated,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn values(rows: serde_json::Value) -> Vec<Vec<serde_json::Value>> {
        serde_json::from_value(rows).unwrap()
    }

    #[test]
    fn first_row_of_echoed_ranges() {
        assert_eq!(first_row("Leads!A1:D1000"), 1);
        assert_eq!(first_row("Leads!A5:D9"), 5);
        assert_eq!(first_row("'My tab'!$B$12:C"), 12);
        assert_eq!(first_row("Leads"), 1);
        assert_eq!(first_row("A:ZZZ"), 1);
        assert_eq!(first_row("Leads!3:3"), 3);
    }

    #[test]
    fn table_skips_blank_rows_and_names_rows_as_the_sheet_does() {
        let t = Table::new(
            values(json!([
                ["Title above the table"],
                ["Email", "Name", "", ""],
                ["a@x.io", "Ada"],
                [],
                ["", "  "],
                ["b@x.io", "Bob", "extra"]
            ])),
            1,
            3,
        );
        assert_eq!(t.headers, ["Email", "Name"]);
        assert_eq!(t.rows.len(), 2);
        assert_eq!(t.rows[0].0, 5, "range starts at row 3, header row 4, data row 5");
        assert_eq!(t.rows[1].0, 8);
        assert!(Table::new(Vec::new(), 0, 1).headers.is_empty());
    }

    #[test]
    fn moved_columns_keep_hashes_and_edits_change_them() {
        let a = Table::new(
            values(json!([
                ["ID", "Email", "Name"],
                ["7", "a@x.io", "Ada"],
                ["8", "b@x.io", "Bob"]
            ])),
            0,
            1,
        );
        let first = diff(&a, Some(0), None);
        assert_eq!(first.changed.len(), 2);
        let saved = RowState {
            version: STATE_VERSION,
            id_column: Some("ID".into()),
            rows: first.state,
        };
        // Name moved to the front, Bob's e-mail edited, a new empty column.
        let b = Table::new(
            values(json!([
                ["Name", "ID", "Notes", "Email"],
                ["Ada", "7", "", "a@x.io"],
                ["Bob", "8", "", "bob@x.io"]
            ])),
            0,
            1,
        );
        let second = diff(&b, Some(1), Some(&saved));
        assert_eq!(second.unchanged, 1);
        assert_eq!(second.changed, [("8".to_string(), 1)]);

        // Without an id column the identity is the content.
        let fp = diff(&a, None, None);
        assert!(fp.changed.iter().all(|(id, _)| id.starts_with("row-")));
        let fp2 = diff(
            &b,
            None,
            Some(&RowState {
                version: STATE_VERSION,
                id_column: None,
                rows: fp.state,
            }),
        );
        assert_eq!(fp2.unchanged, 1, "Ada's moved row is the same row");
        assert_eq!(fp2.changed.len(), 1, "Bob's edited row is a new identity");
    }

    #[test]
    fn repeated_and_blank_ids() {
        let t = Table::new(
            values(json!([
                ["ID", "Email"],
                ["1", "a@x.io"],
                ["1", "a2@x.io"],
                ["", "c@x.io"]
            ])),
            0,
            1,
        );
        let d = diff(&t, Some(0), None);
        assert_eq!(d.repeated, 1);
        assert_eq!(d.blank_ids, 1);
        assert_eq!(d.changed.len(), 2);
        assert_eq!(d.changed[0], ("1".to_string(), 1), "the last row of an id counts");
        assert!(d.changed[1].0.starts_with("row-"));
    }

    #[tokio::test]
    async fn key_errors_name_the_file_and_field_never_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sa.json");
        let source = |path: &std::path::Path| {
            let cfg: SheetsConfig = serde_json::from_value(json!({
                "spreadsheet_id": "abc", "credentials": {"key_file": path.to_string_lossy()}
            }))
            .unwrap();
            SheetsSource::new("sheet", &cfg).unwrap()
        };
        let err = source(&path).key().await.unwrap_err().to_string();
        assert!(err.contains("cannot read") && err.contains("sa.json"), "{err}");

        for (body, says) in [
            (r#"{"private_key": "PEM-SECRET-1", "client_email": 5}"#, "line 1"),
            (
                r#"{"private_key": "PEM-SECRET-1", "client_email": "a@b.iam"}"#,
                "missing field `token_uri`",
            ),
            (r#"{"private_key": "PEM-SECRET-1"#, "not valid key JSON"),
        ] {
            std::fs::write(&path, body).unwrap();
            let err = source(&path).key().await.unwrap_err();
            let text = format!("{err} {err:?}");
            assert!(
                text.contains(says) && text.contains("is not a service-account key"),
                "{text}"
            );
            assert!(!text.contains("PEM-SECRET"), "{text}");
        }
        // A key that parses but cannot sign: named, not shown.
        std::fs::write(
            &path,
            r#"{"private_key": "PEM-SECRET-1", "client_email": "a@b.iam", "token_uri": "http://127.0.0.1:9/t"}"#,
        )
        .unwrap();
        let s = source(&path);
        assert!(format!("{s:?}").contains("abc") && !format!("{s:?}").contains("PEM"));
        let err = match s.session().await {
            Ok(_) => panic!("a key that is not PEM cannot sign"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("cannot sign") && !err.contains("PEM-SECRET"),
            "{err}"
        );
    }

    #[test]
    fn column_lookup_by_name() {
        let h = vec!["Lead ID".to_string(), "Email".to_string()];
        assert_eq!(find_column(&h, "lead id"), Some(0));
        assert_eq!(find_column(&h, " Email "), Some(1));
        assert_eq!(find_column(&h, "Phone"), None);
    }
}
