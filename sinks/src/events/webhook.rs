//! Webhook output: one POST per event, signed with HMAC-SHA256 over the
//! exact body bytes. Events are sent one after another, oldest first.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use sha2::Sha256;

use super::config::{Secret, WebhookOutputConfig};
use super::{Event, Outcome};

/// `sha256=<hex HMAC-SHA256(secret, body)>`: the `X-Leadflow-Signature`
/// header. Receivers recompute it over the raw body and compare in constant time.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length; this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

pub(super) struct WebhookOutput {
    client: reqwest::Client,
    url: Secret,
    secret: Option<Secret>,
}

impl WebhookOutput {
    pub(super) fn new(c: &WebhookOutputConfig) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(c.timeout)
            .connect_timeout(c.timeout)
            // A redirected POST would silently turn into a GET elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("leadflow/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {}", e.without_url()))?;
        Ok(Self {
            client,
            url: c.url.clone(),
            secret: c.secret.clone(),
        })
    }

    pub(super) async fn send(&self, events: &[Event]) -> Vec<Outcome> {
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            let outcome = self.post(e).await;
            let failing = matches!(outcome, Outcome::Retry { .. });
            out.push(outcome);
            // The receiver is down or overloaded: do not hammer it with
            // the rest of the batch; they stay pending.
            if failing {
                break;
            }
        }
        out
    }

    async fn post(&self, e: &Event) -> Outcome {
        let body = e.payload.clone().into_bytes();
        let mut req = self
            .client
            .post(self.url.expose())
            .header(CONTENT_TYPE, "application/json")
            .header("X-Leadflow-Event-Id", &e.event_id)
            .header("X-Leadflow-Event-Kind", &e.kind);
        if let Some(s) = &self.secret {
            req = req.header("X-Leadflow-Signature", signature(s.expose(), &body));
        }
        match req.body(body).send().await {
            Ok(resp) => classify(resp.status(), resp.headers()),
            // Errors print without the URL: it may carry a token.
            Err(err) => Outcome::Retry {
                error: describe(&err),
                retry_after: None,
            },
        }
    }
}

fn describe(err: &reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not connect"
    } else if err.is_request() {
        "request failed"
    } else {
        "failed"
    };
    let mut msg = format!("{kind}: {}", strip_url(err));
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

fn strip_url(err: &reqwest::Error) -> String {
    // `without_url` consumes; rebuild the top-level message without it.
    let text = err.to_string();
    match err.url() {
        Some(u) => text.replace(u.as_str(), "<url>"),
        None => text,
    }
}

/// Map a response to an outcome: 2xx delivered; 408, 429 and 5xx retried;
/// anything else refused (the receiver will not change its mind).
fn classify(status: StatusCode, headers: &HeaderMap) -> Outcome {
    if status.is_success() {
        return Outcome::Delivered;
    }
    let error = format!("HTTP {status}");
    if status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
    {
        let retry_after = headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        return Outcome::Retry { error, retry_after };
    }
    Outcome::Refused { error }
}

/// `Retry-After`: delay-seconds or an HTTP date.
fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn signature_matches_a_known_hmac() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn classifies_answers() {
        let none = HeaderMap::new();
        assert_eq!(classify(StatusCode::OK, &none), Outcome::Delivered);
        assert_eq!(classify(StatusCode::NO_CONTENT, &none), Outcome::Delivered);
        assert!(matches!(
            classify(StatusCode::BAD_GATEWAY, &none),
            Outcome::Retry {
                retry_after: None,
                ..
            }
        ));
        assert!(matches!(
            classify(StatusCode::REQUEST_TIMEOUT, &none),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            classify(StatusCode::BAD_REQUEST, &none),
            Outcome::Refused { .. }
        ));
        assert!(matches!(
            classify(StatusCode::NOT_FOUND, &none),
            Outcome::Refused { .. }
        ));
        assert!(matches!(
            classify(StatusCode::MOVED_PERMANENTLY, &none),
            Outcome::Refused { .. }
        ));
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, &h),
            Outcome::Retry {
                error: "HTTP 429 Too Many Requests".into(),
                retry_after: Some(Duration::from_secs(7))
            }
        );
        let later = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        let d = parse_retry_after(&later).unwrap();
        assert!(
            d > Duration::from_secs(20) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
