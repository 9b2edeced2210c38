//! Bearer tokens: static, or OAuth2 refresh-token grant with a cached
//! access token refreshed before `expires_in` runs out (HubSpot says a 401
//! is no signal to refresh, so expiry is tracked, not reacted to).

use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Mutex;
use tracing::debug;

use super::config::{OAuthConfig, Secret};
use super::error::{HttpError, snippet};

/// Refresh this long before the token's stated expiry.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// Where bearer tokens come from.
pub enum TokenProvider {
    /// A fixed token (private app / API key style).
    Static(Secret),
    /// OAuth2 refresh-token grant against `token_url`.
    OAuth {
        config: OAuthConfig,
        token_url: String,
        cached: Mutex<Option<(Secret, Instant)>>,
    },
}

impl std::fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Static(_) => f.write_str("TokenProvider::Static([redacted])"),
            Self::OAuth { token_url, .. } => write!(f, "TokenProvider::OAuth({token_url}, [redacted])"),
        }
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

impl TokenProvider {
    pub fn oauth(config: OAuthConfig, default_token_url: &str) -> Self {
        let token_url = config
            .token_url
            .clone()
            .unwrap_or_else(|| default_token_url.to_string());
        Self::OAuth {
            config,
            token_url,
            cached: Mutex::new(None),
        }
    }

    /// A valid access token, refreshing it when needed.
    pub async fn bearer(&self, client: &reqwest::Client, provider: &str) -> Result<Secret, HttpError> {
        let (config, token_url, cached) = match self {
            Self::Static(t) => return Ok(t.clone()),
            Self::OAuth {
                config,
                token_url,
                cached,
            } => (config, token_url, cached),
        };
        let mut cached = cached.lock().await;
        if let Some((token, valid_until)) = cached.as_ref()
            && Instant::now() < *valid_until
        {
            return Ok(token.clone());
        }
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "refresh_token")
            .append_pair("client_id", &config.client_id)
            .append_pair("client_secret", config.client_secret.expose())
            .append_pair("refresh_token", config.refresh_token.expose())
            .finish();
        let refresh_err = |status: u16, detail: String| HttpError::TokenRefresh {
            provider: provider.to_string(),
            url: token_url.clone(),
            status,
            detail,
        };
        let resp = client
            .post(token_url.as_str())
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| refresh_err(0, e.without_url().to_string()))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| refresh_err(status.as_u16(), e.without_url().to_string()))?;
        if !status.is_success() {
            // Token endpoints answer with error codes, not secrets; still
            // keep only a short snippet.
            return Err(refresh_err(status.as_u16(), snippet(&text, 200)));
        }
        let parsed: TokenResponse = serde_json::from_str(&text)
            .map_err(|e| refresh_err(status.as_u16(), format!("response is not a token response: {e}")))?;
        let lifetime = Duration::from_secs(parsed.expires_in);
        let valid_until = Instant::now() + lifetime.saturating_sub(REFRESH_MARGIN.min(lifetime / 2));
        debug!(provider, expires_in = parsed.expires_in, "access token refreshed");
        let token = Secret::new(parsed.access_token);
        *cached = Some((token.clone(), valid_until));
        Ok(token)
    }
}
