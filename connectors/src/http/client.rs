//! The request helper: auth header, retries with exponential backoff and
//! jitter, `Retry-After` on 429, a per-run request budget.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::{Method, StatusCode};
use tracing::warn;
use url::Url;

use super::auth::{Session, TokenProvider};
use super::config::HttpOptions;
use super::error::{HttpError, redact, snippet};

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
    /// `Authorization: <scheme> <token>`; Zoho wants `Zoho-oauthtoken`.
    scheme: &'static str,
    /// Treat a 401 as "token expired": get a new one and retry once.
    refresh_on_401: bool,
    /// Treat only a 401 whose body holds this text as "token expired"
    /// (HubSpot: any 401 is not a reason to refresh, `EXPIRED_AUTHENTICATION` is).
    expired_401: Option<&'static str>,
}

/// A non-error answer: 2xx, or 304 (not modified, no body).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
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
            scheme: "Bearer",
            refresh_on_401: false,
            expired_401: None,
        })
    }

    /// Send the token as `Authorization: <scheme> <token>`.
    pub fn with_auth_scheme(mut self, scheme: &'static str) -> Self {
        self.scheme = scheme;
        self
    }

    /// For APIs whose 401 means "token expired" (tokens without a stated
    /// lifetime, or revoked early): refresh once and retry the request.
    pub fn with_refresh_on_401(mut self) -> Self {
        self.refresh_on_401 = true;
        self
    }

    /// For APIs that say in a 401's body that the token expired: refresh
    /// once and retry only when the body holds `marker`.
    pub fn with_refresh_on_401_saying(mut self, marker: &'static str) -> Self {
        self.expired_401 = Some(marker);
        self
    }

    /// Requests made so far (retries included).
    pub fn requests(&self) -> u32 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The current session (token plus the hosts the token endpoint named),
    /// getting a token first if there is none.
    pub async fn session(&self) -> Result<Session, HttpError> {
        self.auth.session(&self.client, &self.provider).await
    }

    /// Sends a request (JSON body if given) and returns the body of a 2xx
    /// answer. See [`HttpClient::request`].
    pub async fn send(
        &self,
        method: Method,
        url: &Url,
        json: Option<&serde_json::Value>,
    ) -> Result<String, HttpError> {
        Ok(self.request(method, url, json, &[]).await?.body)
    }

    /// Sends a request with extra headers. Retries 5xx, 429 (after
    /// `Retry-After`), timeouts and connection errors; a 401 refreshes the
    /// token once when enabled, else ends with [`HttpError::Auth`]; a 403
    /// ends with [`HttpError::Forbidden`]. 304 is an answer, not an error.
    pub async fn request(
        &self,
        method: Method,
        url: &Url,
        json: Option<&serde_json::Value>,
        headers: &[(&str, String)],
    ) -> Result<Reply, HttpError> {
        let mut attempt: u32 = 0;
        let mut refreshed = false;
        loop {
            attempt += 1;
            if self.requests.fetch_add(1, Ordering::Relaxed) >= self.options.max_requests {
                return Err(HttpError::Budget {
                    provider: self.provider.clone(),
                    budget: self.options.max_requests,
                });
            }
            let token = self.session().await?.token;
            let mut req = self
                .client
                .request(method.clone(), url.clone())
                .header(
                    reqwest::header::AUTHORIZATION,
                    format!("{} {}", self.scheme, token.expose()),
                )
                .header(reqwest::header::ACCEPT, "application/json");
            for (name, value) in headers {
                req = req.header(*name, value);
            }
            if let Some(body) = json {
                req = req.json(body);
            }
            let retry_in = match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    if status.is_success() || status == StatusCode::NOT_MODIFIED {
                        let body = resp
                            .text()
                            .await
                            .map_err(|e| self.transport(&method, url, attempt, &e))?;
                        return Ok(Reply {
                            status: status.as_u16(),
                            body,
                        });
                    }
                    let retry_after = retry_after(resp.headers());
                    let body = resp.text().await.unwrap_or_default();
                    let detail = redact(&snippet(&body, 300), &[token.expose()]);
                    if status == StatusCode::UNAUTHORIZED {
                        let expired =
                            self.refresh_on_401 || self.expired_401.is_some_and(|m| body.contains(m));
                        if expired && self.auth.can_refresh() && !refreshed {
                            refreshed = true;
                            attempt -= 1;
                            self.auth.invalidate(&token).await;
                            warn!(provider = %self.provider, "access token rejected (401); getting a new one");
                            continue;
                        }
                        return Err(HttpError::Auth {
                            provider: self.provider.clone(),
                            status: status.as_u16(),
                            url: url.to_string(),
                            detail,
                        });
                    }
                    if status == StatusCode::FORBIDDEN {
                        return Err(HttpError::Forbidden {
                            provider: self.provider.clone(),
                            url: url.to_string(),
                            detail,
                        });
                    }
                    let retryable = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
                    if !retryable || attempt > self.options.max_retries {
                        return Err(HttpError::Status {
                            provider: self.provider.clone(),
                            method: method.to_string(),
                            url: url.to_string(),
                            status: status.as_u16(),
                            attempts: attempt,
                            body: detail,
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
                    warn!(provider = %self.provider, error = %e.without_url(), attempt, wait_ms = wait.as_millis() as u64, "retrying request");
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
        backoff(self.options.backoff, attempt)
    }
}

/// The wait before retry `attempt` (1-based): `base * 2^(attempt-1)`,
/// capped, with "equal jitter". Shared with sources that bring their own
/// HTTP client (Google Sheets), so every source retries alike.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let exp = base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
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

/// `Retry-After` as delta-seconds (HTTP dates are rare on APIs; they fall
/// back to our own backoff).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    retry_after_value(headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?)
}

/// A `Retry-After` header value in seconds, capped.
pub fn retry_after_value(v: &str) -> Option<Duration> {
    let secs: f64 = v.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs).min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::super::auth::Grant;
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
                detail: "EXPIRED_AUTHENTICATION".into(),
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

    /// A one-shot HTTP server answering every connection with `response`.
    async fn answer_with(response: String) -> Url {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let _ = sock.write_all(response.as_bytes()).await;
                let _ = sock.shutdown().await;
            }
        });
        Url::parse(&format!("http://{addr}/api")).unwrap()
    }

    fn http_response(status: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    #[tokio::test]
    async fn a_failing_request_never_shows_the_token_even_when_the_api_echoes_it() {
        let token = "00Dx0000000BV7z!AR8AQ-SECRET-SESSION";
        for (status, body) in [
            (
                "401 Unauthorized",
                format!(r#"[{{"message":"Session {token} expired","errorCode":"INVALID_SESSION_ID"}}]"#),
            ),
            (
                "403 Forbidden",
                format!(r#"[{{"message":"no access for {token}","errorCode":"REQUEST_LIMIT_EXCEEDED"}}]"#),
            ),
            (
                "400 Bad Request",
                format!(r#"{{"code":"INVALID_DATA","message":"bad {token}"}}"#),
            ),
        ] {
            let url = answer_with(http_response(status, &body)).await;
            let client = HttpClient::new(
                "salesforce",
                TokenProvider::Static(Secret::new(token)),
                HttpOptions::default(),
            )
            .unwrap();
            let err = client.send(Method::GET, &url, None).await.unwrap_err();
            let text = format!("{err} {err:?}");
            assert!(!text.contains(token), "token in error: {text}");
            assert!(text.contains("[redacted]"), "{text}");
            assert!(
                err.detail()
                    .is_some_and(|d| d.contains("errorCode") || d.contains("INVALID_DATA"))
            );
        }
    }

    #[tokio::test]
    async fn a_token_endpoint_error_never_shows_what_we_sent() {
        let secret = "client-secret-DO-NOT-PRINT";
        let refresh = "refresh-token-DO-NOT-PRINT";
        let body = format!(r#"{{"error":"invalid_grant","error_description":"bad {refresh} for {secret}"}}"#);
        let url = answer_with(http_response("400 Bad Request", &body)).await;
        let auth = TokenProvider::oauth(
            OAuthConfig {
                client_id: "app".into(),
                client_secret: Secret::new(secret),
                refresh_token: Secret::new(refresh),
                token_url: Some(url.to_string()),
            },
            "unused",
        );
        let client = HttpClient::new("zoho", auth, HttpOptions::default()).unwrap();
        let err = client.session().await.unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(text.contains("invalid_grant"), "{text}");
        assert!(
            !text.contains(secret) && !text.contains(refresh),
            "secret in error: {text}"
        );

        // Zoho: the error arrives with HTTP 200.
        let url = answer_with(http_response("200 OK", r#"{"error":"invalid_client"}"#)).await;
        let auth = TokenProvider::grant(
            Grant::RefreshToken {
                client_id: "app".into(),
                client_secret: Some(Secret::new(secret)),
                refresh_token: Secret::new(refresh),
            },
            url.to_string(),
        );
        let client = HttpClient::new("zoho", auth, HttpOptions::default()).unwrap();
        let err = client.session().await.unwrap_err().to_string();
        assert!(
            err.contains("invalid_client") && err.contains("token request"),
            "{err}"
        );
    }
}
