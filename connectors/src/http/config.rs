//! Settings shared by every HTTP source.

use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A secret value (token, client secret). Debug and Display print
/// `[redacted]`, so it cannot leak through logs or error messages.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(transparent)]
#[schemars(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret text, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// OAuth2 refresh-token grant credentials.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuthConfig {
    /// OAuth app client id.
    pub client_id: String,
    /// OAuth app client secret; use `${VAR}`.
    pub client_secret: Secret,
    /// Long-lived refresh token; use `${VAR}`.
    pub refresh_token: Secret,
    /// Token endpoint. Default: the provider's own.
    #[serde(default)]
    pub token_url: Option<String>,
}

/// Retry and budget settings for an API source.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HttpOptions {
    /// Retries of one request after 5xx, 429, timeouts and connection
    /// errors. Default 5.
    pub max_retries: u32,
    /// Most requests one run may make to this source (all retries count);
    /// the run fails past it and the next run continues from the cursor.
    /// Default 10000.
    pub max_requests: u32,
    /// First retry delay, doubled per retry (with jitter), e.g. "500ms".
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub backoff: Duration,
    /// Timeout of one request, e.g. "30s".
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            max_retries: 5,
            max_requests: 10_000,
            backoff: Duration::from_millis(500),
            timeout: Duration::from_secs(30),
        }
    }
}
