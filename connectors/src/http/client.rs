//! The request helper: auth header, retries with exponential backoff and
//! jitter, `Retry-After` on 429, a per-run request budget.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::{Method, StatusCode};
use tracing::warn;
use url::Url;

use super::auth::{Session, TokenProvider};
use super::config::HttpOptions;
use super::error::{HttpError, redact, snippet, token_endpoint_failing};

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
    /// A 429 whose body holds this says a quota for the day is spent.
    quota_429: Option<&'static str>,
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
            quota_429: None,
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

    /// For APIs that say in a 429's body that a daily quota is spent
    /// (HubSpot: `"policyName":"DAILY"`): waiting seconds cannot help, so
    /// such a 429 ends the run at once (the next run resumes).
    pub fn with_quota_429_saying(mut self, marker: &'static str) -> Self {
        self.quota_429 = Some(marker);
        self
    }

    /// One more request against the run's budget (`http.max_requests`).
    fn count_request(&self) -> Result<(), HttpError> {
        if self.requests.fetch_add(1, Ordering::Relaxed) >= self.options.max_requests {
            return Err(HttpError::Budget {
                provider: self.provider.clone(),
                budget: self.options.max_requests,
            });
        }
        Ok(())
    }

    /// Requests made so far (retries included).
    pub fn requests(&self) -> u32 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The current session (token plus the hosts the token endpoint named),
    /// getting a token first if there is none.
    /// A token endpoint that is down (connection error, 429, 5xx) is asked
    /// again with the same backoff and budget as the API; an answer that
    /// refuses the credentials is final.
    pub async fn session(&self) -> Result<Session, HttpError> {
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            match self.auth.session(&self.client, &self.provider).await {
                Err(HttpError::TokenRefresh { status, .. })
                    if token_endpoint_failing(status) && attempt <= self.options.max_retries =>
                {
                    warn!(provider = %self.provider, attempt, status, "token endpoint unavailable; retrying");
                    self.count_request()?;
                    tokio::time::sleep(self.backoff(attempt)).await;
                }
                other => return other,
            }
        }
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
            self.count_request()?;
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
                    let quota_spent = status == StatusCode::TOO_MANY_REQUESTS
                        && self
                            .quota_429
                            .is_some_and(|m| body.split_whitespace().collect::<String>().contains(m));
                    let retryable = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
                    if !retryable || quota_spent || attempt > self.options.max_retries {
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

    /// An HTTP server answering every connection with `response`.
    async fn answer_with(response: String) -> Url {
        answer_in_turn(vec![response]).await
    }

    /// An HTTP server answering its n-th connection with `responses[n]`
    /// (the last one from then on).
    async fn answer_in_turn(responses: Vec<String>) -> Url {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let r = &responses[n.min(responses.len() - 1)];
                n += 1;
                let _ = sock.write_all(r.as_bytes()).await;
                let _ = sock.shutdown().await;
            }
        });
        Url::parse(&format!("http://{addr}/api")).unwrap()
    }

    fn quick() -> HttpOptions {
        HttpOptions {
            backoff: Duration::from_millis(5),
            max_retries: 2,
            ..HttpOptions::default()
        }
    }

    fn refresh_grant(url: &Url) -> TokenProvider {
        TokenProvider::grant(
            Grant::RefreshToken {
                client_id: "app".into(),
                client_secret: Some(Secret::new("client-secret-DO-NOT-PRINT")),
                refresh_token: Secret::new("refresh-token-DO-NOT-PRINT"),
            },
            url.to_string(),
        )
    }

    #[tokio::test]
    async fn a_token_endpoint_that_fails_with_5xx_is_asked_again() {
        let url = answer_in_turn(vec![
            http_response("503 Service Unavailable", r#"{"message":"try later"}"#),
            http_response("502 Bad Gateway", "<html>bad gateway</html>"),
            http_response("200 OK", r#"{"access_token":"tok-1","expires_in":3600}"#),
        ])
        .await;
        let client = HttpClient::new("hubspot", refresh_grant(&url), quick()).unwrap();
        let session = client.session().await.unwrap();
        assert_eq!(session.token.expose(), "tok-1");
        assert_eq!(client.requests(), 2, "each retry counts against the budget");

        // Down for good: the error says so, not "check the credentials".
        let url = answer_in_turn(vec![http_response("503 Service Unavailable", "down")]).await;
        let client = HttpClient::new("hubspot", refresh_grant(&url), quick()).unwrap();
        let err = client.session().await.unwrap_err().to_string();
        assert!(
            err.contains("HTTP 503") && err.contains("unreachable or failing"),
            "{err}"
        );
        assert!(!err.contains("credentials"), "{err}");

        // A refusal is final: asked once.
        let url = answer_in_turn(vec![http_response(
            "400 Bad Request",
            r#"{"error":"invalid_grant"}"#,
        )])
        .await;
        let client = HttpClient::new("hubspot", refresh_grant(&url), quick()).unwrap();
        let err = client.session().await.unwrap_err().to_string();
        assert!(
            err.contains("invalid_grant") && err.contains("credentials"),
            "{err}"
        );
        assert_eq!(client.requests(), 0);
    }

    #[tokio::test]
    async fn a_daily_quota_429_ends_at_once_a_burst_429_is_retried() {
        let daily = http_response(
            "429 Too Many Requests",
            r#"{"status":"error","message":"You have reached your daily limit.","errorType":"RATE_LIMIT","policyName":"DAILY"}"#,
        );
        let burst = http_response(
            "429 Too Many Requests",
            r#"{"status":"error","message":"You have reached your ten_secondly_rolling limit.","errorType":"RATE_LIMIT","policyName":"TEN_SECONDLY_ROLLING"}"#,
        );
        let ok = http_response("200 OK", r#"{"results":[]}"#);
        let client = || {
            HttpClient::new("hubspot", TokenProvider::Static(Secret::new("pat-1")), quick())
                .unwrap()
                .with_quota_429_saying(r#""policyName":"DAILY""#)
        };
        let url = answer_in_turn(vec![daily, ok.clone()]).await;
        let c = client();
        let err = c.send(Method::GET, &url, None).await.unwrap_err();
        assert_eq!(err.status(), Some(429));
        assert!(err.to_string().contains("daily limit"), "{err}");
        assert_eq!(c.requests(), 1, "not retried");

        let url = answer_in_turn(vec![burst, ok]).await;
        let c = client();
        assert_eq!(
            c.send(Method::GET, &url, None).await.unwrap(),
            r#"{"results":[]}"#
        );
        assert_eq!(c.requests(), 2, "retried once");
    }

    #[test]
    fn signed_jwts_are_blanked_wherever_they_appear() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJhQGIifQ.c2lnbmF0dXJl-_x";
        let text = format!("echo: grant_type=jwt&assertion={jwt}&x=1 and \"{jwt}\"");
        let out = redact(&text, &[]);
        assert!(!out.contains("eyJ"), "{out}");
        assert_eq!(out.matches("[redacted]").count(), 2, "{out}");
        assert!(
            out.starts_with("echo: grant_type=jwt&assertion=[redacted]&x=1"),
            "{out}"
        );
        // URL-encoded in an echoed form body, padding and all.
        let form = "assertion=eyJhbGciOiJSUzI1NiJ9%3D.eyJpc3MiOiJhQGIifQ%3D%3D.c2lnbmF0dXJl&scope=x";
        assert_eq!(redact(form, &[]), "assertion=[redacted]&scope=x");
        // Text that only starts like one stays.
        assert_eq!(
            redact("eyJust a word. Then more", &[]),
            "eyJust a word. Then more"
        );
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
