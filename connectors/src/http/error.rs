//! Errors of the HTTP layer. None of them holds a token or secret: URLs
//! carry no credentials (they go in headers and form bodies only).

/// An HTTP request that could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(
        "{provider}: the API rejected our credentials (HTTP {status}) for {url}; check the token or OAuth \
         credentials and the app's scopes"
    )]
    Auth {
        provider: String,
        status: u16,
        url: String,
    },
    #[error(
        "{provider}: token refresh at {url} failed (HTTP {status}): {detail}; check client_id, client_secret \
         and refresh_token"
    )]
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

/// First `max` characters of a response body, for error messages.
pub(crate) fn snippet(body: &str, max: usize) -> String {
    let t = body.trim();
    match t.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &t[..i]),
        None => t.to_string(),
    }
}
