//! The request helper: auth header, retries with exponential backoff and
//! jitter, `Retry-After` on 429, a per-run request budget.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::{Method, StatusCode};
use tracing::warn;
use url::Url;

use super::auth::TokenProvider;
use super::config::HttpOptions;
use super::error::{HttpError, snippet};

/// Longest wait we accept from a `Retry-After` header.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// Longest backoff between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// An authenticated client for one provider, used for one run.
#[derive(Debug)]
pub struct HttpClient {
    client: reqwest::Client,
    provider: String,
    auth: TokenProvider,
    options: HttpOptions,
    requests: AtomicU32,
}

impl HttpClient {
    pub fn new(provider: &str, auth: TokenProvider, options: HttpOptions) -> Result<Self, HttpError> {
        let client = reqwest::Client::builder()
            .timeout(options.timeout)
            .user_agent(concat!("leadflow/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HttpError::Transport {
                provider: provider.to_string(),
                method: "-".into(),
                url: "-".into(),
                attempts: 0,
                message: format!("cannot build HTTP client: {e}"),
            })?;
        Ok(Self {
            client,
            provider: provider.to_string(),
            auth,
            options,
            requests: AtomicU32::new(0),
        })
    }

    /// Requests made so far (retries included).
    pub fn requests(&self) -> u32 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Sends a request (JSON body if given) and returns the body of a 2xx
    /// answer. Retries 5xx, 429, timeouts and connection errors; 401/403
    /// end at once with [`HttpError::Auth`].
    pub async fn send(
        &self,
        method: Method,
        url: &Url,
        json: Option<&serde_json::Value>,
    ) -> Result<String, HttpError> {
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            if self.requests.fetch_add(1, Ordering::Relaxed) >= self.options.max_requests {
                return Err(HttpError::Budget {
                    provider: self.provider.clone(),
                    budget: self.options.max_requests,
                });
            }
            let token = self.auth.bearer(&self.client, &self.provider).await?;
            let mut req = self
                .client
                .request(method.clone(), url.clone())
                .bearer_auth(token.expose())
                .header(reqwest::header::ACCEPT, "application/json");
            if let Some(body) = json {
                req = req.json(body);
            }
            let retry_in = match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    if status.is_success() {
                        return resp
                            .text()
                            .await
                            .map_err(|e| self.transport(&method, url, attempt, &e));
                    }
                    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                        return Err(HttpError::Auth {
                            provider: self.provider.clone(),
                            status: status.as_u16(),
                            url: url.to_string(),
                        });
                    }
                    let retry_after = retry_after(resp.headers());
                    let body = resp.text().await.unwrap_or_default();
                    let retryable = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
                    if !retryable || attempt > self.options.max_retries {
                        return Err(HttpError::Status {
                            provider: self.provider.clone(),
                            method: method.to_string(),
                            url: url.to_string(),
                            status: status.as_u16(),
                            attempts: attempt,
                            body: snippet(&body, 300),
                        });
                    }
                    let wait = if status == StatusCode::TOO_MANY_REQUESTS {
                        retry_after.unwrap_or_else(|| self.backoff(attempt))
                    } else {
                        self.backoff(attempt)
                    };
                    warn!(provider = %self.provider, status = status.as_u16(), attempt, wait_ms = wait.as_millis() as u64, "retrying request");
                    wait
                }
                Err(e) => {
                    let retryable = e.is_timeout() || e.is_connect() || e.is_request();
                    if !retryable || attempt > self.options.max_retries {
                        return Err(self.transport(&method, url, attempt, &e));
                    }
                    let wait = self.backoff(attempt);
                    warn!(provider = %self.provider, error = %e, attempt, wait_ms = wait.as_millis() as u64, "retrying request");
                    wait
                }
            };
            tokio::time::sleep(retry_in).await;
        }
    }

    fn transport(&self, method: &Method, url: &Url, attempts: u32, e: &reqwest::Error) -> HttpError {
        let mut message = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            message = format!("{message}: {s}");
            src = s.source();
        }
        HttpError::Transport {
            provider: self.provider.clone(),
            method: method.to_string(),
            url: url.to_string(),
            attempts,
            message,
        }
    }

    /// `backoff * 2^(attempt-1)`, capped, with "equal jitter" (half fixed,
    /// half random) so parallel runs do not retry in lockstep.
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .options
            .backoff
            .saturating_mul(1u32 << (attempt - 1).min(16))
            .min(MAX_BACKOFF);
        let half = exp / 2;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0) as u64;
        let jitter = if half.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_nanos(nanos % half.as_nanos().max(1) as u64)
        };
        half + jitter
    }
}

/// `Retry-After` as delta-seconds (HTTP dates are rare on APIs; they fall
/// back to our own backoff).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: f64 = v.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs).min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::super::config::{OAuthConfig, Secret};
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_caps() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(reqwest::header::RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(reqwest::header::RETRY_AFTER, "99999".parse().unwrap());
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
        h.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn backoff_grows_and_stays_capped() {
        let c = HttpClient::new(
            "test",
            TokenProvider::Static(Secret::new("t")),
            HttpOptions::default(),
        )
        .unwrap();
        let first = c.backoff(1);
        assert!(first >= Duration::from_millis(250) && first < Duration::from_millis(500));
        let third = c.backoff(3);
        assert!(third >= Duration::from_secs(1) && third < Duration::from_secs(2));
        assert!(c.backoff(40) <= MAX_BACKOFF);
    }

    #[test]
    fn no_secret_in_any_error_or_debug() {
        let secret = "sk-live-SUPERSECRET";
        let oauth = OAuthConfig {
            client_id: "app".into(),
            client_secret: Secret::new(secret),
            refresh_token: Secret::new(secret),
            token_url: None,
        };
        let providers = [
            TokenProvider::Static(Secret::new(secret)),
            TokenProvider::oauth(oauth.clone(), "https://example.test/token"),
        ];
        for p in &providers {
            assert!(!format!("{p:?}").contains(secret));
        }
        assert!(!format!("{oauth:?}").contains(secret));
        let client = HttpClient::new(
            "hubspot",
            TokenProvider::Static(Secret::new(secret)),
            HttpOptions::default(),
        )
        .unwrap();
        assert!(!format!("{client:?}").contains(secret));
        let errors = [
            HttpError::Auth {
                provider: "hubspot".into(),
                status: 401,
                url: "https://api.example/x".into(),
            },
            HttpError::Budget {
                provider: "hubspot".into(),
                budget: 3,
            },
            HttpError::TokenRefresh {
                provider: "hubspot".into(),
                url: "https://api.example/token".into(),
                status: 400,
                detail: "invalid_grant".into(),
            },
        ];
        for e in &errors {
            assert!(!e.to_string().contains(secret));
            assert!(!format!("{e:?}").contains(secret));
        }
        assert!(errors[0].to_string().contains("hubspot") && errors[0].to_string().contains("401"));
    }
}
