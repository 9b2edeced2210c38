//! Errors of the HTTP layer. None of them holds a token or secret: URLs
//! carry no credentials (they go in headers and form bodies only).

/// An HTTP request that could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(
        "{provider}: the API rejected our credentials (HTTP {status}) for {url}: {detail}; check the token or \
         OAuth credentials and the app's scopes"
    )]
    Auth {
        provider: String,
        status: u16,
        url: String,
        /// The provider's error body (tokens blanked).
        detail: String,
    },
    #[error(
        "{provider}: the API refused {url} (HTTP 403): {detail}; check the app's permissions, or the API's \
         usage limits"
    )]
    Forbidden {
        provider: String,
        url: String,
        /// The provider's error body (tokens blanked).
        detail: String,
    },
    #[error("{provider}: token request at {url} failed (HTTP {status}): {detail}; {}", token_hint(*.status))]
    TokenRefresh {
        provider: String,
        url: String,
        status: u16,
        detail: String,
    },
    #[error("{provider}: {method} {url} failed with HTTP {status} after {attempts} attempt(s): {body}")]
    Status {
        provider: String,
        method: String,
        url: String,
        status: u16,
        attempts: u32,
        body: String,
    },
    #[error("{provider}: {method} {url} failed after {attempts} attempt(s): {message}")]
    Transport {
        provider: String,
        method: String,
        url: String,
        attempts: u32,
        message: String,
    },
    #[error(
        "{provider}: request budget of {budget} requests for this run is used up; raise `http.max_requests` \
         or run again (the next run continues from the saved cursor)"
    )]
    Budget { provider: String, budget: u32 },
    #[error("{provider}: invalid URL {url:?}: {message}")]
    Url {
        provider: String,
        url: String,
        message: String,
    },
}

impl HttpError {
    /// The provider's error body or detail, when the error has one.
    pub fn detail(&self) -> Option<&str> {
        match self {
            Self::Auth { detail, .. }
            | Self::Forbidden { detail, .. }
            | Self::TokenRefresh { detail, .. } => Some(detail),
            Self::Status { body, .. } => Some(body),
            _ => None,
        }
    }

    /// HTTP status of the failed answer, if there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Auth { status, .. } | Self::TokenRefresh { status, .. } | Self::Status { status, .. } => {
                Some(*status)
            }
            Self::Forbidden { .. } => Some(403),
            _ => None,
        }
    }
}

/// A token request that failed without a verdict on the credentials (no
/// answer: status 0, 429, 5xx): worth asking again.
pub(crate) fn token_endpoint_failing(status: u16) -> bool {
    status == 0 || status == 429 || status >= 500
}

/// What to check after a failed token request: the endpoint (no answer,
/// 429, 5xx: it was asked again until the retries ran out) or the
/// credentials (the endpoint answered and refused them).
fn token_hint(status: u16) -> &'static str {
    if token_endpoint_failing(status) {
        "the token endpoint is unreachable or failing (retried); check its URL and the provider's status"
    } else {
        "check the source's credentials (client id and secret, refresh token, or JWT key and username) \
         and its token URL"
    }
}

/// `text` with every (non-trivial) secret replaced by `[redacted]`, for
/// provider bodies that may echo what we sent. Signed JWTs (ours or the
/// provider's) are blanked too, known or not: each one is a credential.
pub(crate) fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if s.len() >= 4 {
            out = out.replace(s, "[redacted]");
        }
    }
    redact_jwts(&out)
}

/// `text` with every compact JWS (`eyJ<header>.<payload>.<signature>`, the
/// base64url of `{"`) replaced by `[redacted]`, also when a form body
/// quotes it URL-encoded (padding as `%3D`): the signature alone with
/// guessable claims would rebuild it.
pub fn redact_jwts(text: &str) -> String {
    let b64 = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '=' || c == '%';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("eyJ") {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let end = tail.find(|c: char| !(b64(c) || c == '.')).unwrap_or(tail.len());
        let candidate = &tail[..end];
        if candidate.split('.').filter(|p| !p.is_empty()).count() >= 2 && candidate.contains('.') {
            out.push_str("[redacted]");
        } else {
            out.push_str(candidate);
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// First `max` characters of a response body, for error messages.
pub(crate) fn snippet(body: &str, max: usize) -> String {
    let t = body.trim();
    match t.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &t[..i]),
        None => t.to_string(),
    }
}
