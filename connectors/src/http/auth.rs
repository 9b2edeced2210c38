//! Access tokens: static, or an OAuth2 grant (refresh token, client
//! credentials, JWT bearer) with the access token cached until shortly
//! before `expires_in` runs out. Providers whose tokens carry no expiry
//! (Salesforce) keep theirs until a 401 invalidates it.

use std::time::{Duration, Instant};

use jsonwebtoken::EncodingKey;
use serde::Deserialize;
use tokio::sync::Mutex;
use tracing::debug;

use super::config::{OAuthConfig, Secret};
use super::error::{HttpError, redact, snippet};

/// Refresh this long before the token's stated expiry.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Lifetime of a JWT bearer assertion (Salesforce accepts up to 3 minutes).
const ASSERTION_LIFETIME: Duration = Duration::from_secs(180);

/// An OAuth2 grant that yields access tokens.
pub enum Grant {
    /// `grant_type=refresh_token`; the client secret is optional (Salesforce
    /// apps may not require one).
    RefreshToken {
        client_id: String,
        client_secret: Option<Secret>,
        refresh_token: Secret,
    },
    /// `grant_type=client_credentials` with a scope (Azure AD:
    /// `<resource>/.default`).
    ClientCredentials {
        client_id: String,
        client_secret: Secret,
        scope: String,
    },
    /// RFC 7523 JWT bearer: a fresh RS256 assertion per token request.
    JwtBearer {
        /// `iss`: the connected app's consumer key.
        client_id: String,
        /// `sub`: the user the app acts as.
        subject: String,
        /// `aud`: the login server.
        audience: String,
        key: EncodingKey,
    },
}

/// Where access tokens come from.
pub enum TokenProvider {
    /// A fixed token (private app / API key style).
    Static(Secret),
    /// An OAuth2 grant against `token_url`.
    OAuth {
        // Boxed: a signing key makes the grant much larger than a token.
        grant: Box<Grant>,
        token_url: String,
        cached: Mutex<Option<Session>>,
    },
}

/// A cached access token and what the token endpoint said with it.
#[derive(Clone)]
pub struct Session {
    pub token: Secret,
    /// Salesforce: the org's API host; all data calls go there.
    pub instance_url: Option<String>,
    /// Zoho: the API host of the account's data centre.
    pub api_domain: Option<String>,
    /// None: valid until the API answers 401.
    valid_until: Option<Instant>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("token", &self.token)
            .field("instance_url", &self.instance_url)
            .field("api_domain", &self.api_domain)
            .finish()
    }
}

impl std::fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Static(_) => f.write_str("TokenProvider::Static([redacted])"),
            Self::OAuth { token_url, grant, .. } => {
                let kind = match grant.as_ref() {
                    Grant::RefreshToken { .. } => "refresh_token",
                    Grant::ClientCredentials { .. } => "client_credentials",
                    Grant::JwtBearer { .. } => "jwt_bearer",
                };
                write!(f, "TokenProvider::OAuth({kind}, {token_url}, [redacted])")
            }
        }
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    instance_url: Option<String>,
    #[serde(default)]
    api_domain: Option<String>,
    /// Zoho answers token errors with HTTP 200 and this field.
    #[serde(default)]
    error: Option<String>,
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: u64,
}

impl TokenProvider {
    /// Refresh-token grant from the shared `oauth:` settings.
    pub fn oauth(config: OAuthConfig, default_token_url: &str) -> Self {
        let token_url = config
            .token_url
            .clone()
            .unwrap_or_else(|| default_token_url.to_string());
        Self::grant(
            Grant::RefreshToken {
                client_id: config.client_id,
                client_secret: Some(config.client_secret),
                refresh_token: config.refresh_token,
            },
            token_url,
        )
    }

    pub fn grant(grant: Grant, token_url: String) -> Self {
        Self::OAuth {
            grant: Box::new(grant),
            token_url,
            cached: Mutex::new(None),
        }
    }

    /// Whether a new token can be had (a 401 is then worth one retry).
    pub fn can_refresh(&self) -> bool {
        matches!(self, Self::OAuth { .. })
    }

    /// Drop the cached token if it is still `token` (a 401 said it is dead;
    /// another request may have replaced it already).
    pub async fn invalidate(&self, token: &Secret) {
        if let Self::OAuth { cached, .. } = self {
            let mut cached = cached.lock().await;
            if cached.as_ref().is_some_and(|s| &s.token == token) {
                *cached = None;
            }
        }
    }

    /// A valid session, requesting a new token when needed.
    pub async fn session(&self, client: &reqwest::Client, provider: &str) -> Result<Session, HttpError> {
        let (grant, token_url, cached) = match self {
            Self::Static(t) => {
                return Ok(Session {
                    token: t.clone(),
                    instance_url: None,
                    api_domain: None,
                    valid_until: None,
                });
            }
            Self::OAuth {
                grant,
                token_url,
                cached,
            } => (grant, token_url, cached),
        };
        let mut cached = cached.lock().await;
        if let Some(s) = cached.as_ref()
            && s.valid_until.is_none_or(|t| Instant::now() < t)
        {
            return Ok(s.clone());
        }
        let refresh_err = |status: u16, detail: String| HttpError::TokenRefresh {
            provider: provider.to_string(),
            url: token_url.clone(),
            status,
            detail,
        };
        let mut secrets: Vec<&str> = Vec::new();
        // The signed assertion is a credential too (it buys a token until it
        // expires): blanked like the others if an error body echoes it.
        let mut assertion_sent = String::new();
        // The serializer is not Send: build the body before any await.
        let body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            match grant.as_ref() {
                Grant::RefreshToken {
                    client_id,
                    client_secret,
                    refresh_token,
                } => {
                    form.append_pair("grant_type", "refresh_token")
                        .append_pair("client_id", client_id)
                        .append_pair("refresh_token", refresh_token.expose());
                    secrets.push(refresh_token.expose());
                    if let Some(s) = client_secret {
                        form.append_pair("client_secret", s.expose());
                        secrets.push(s.expose());
                    }
                }
                Grant::ClientCredentials {
                    client_id,
                    client_secret,
                    scope,
                } => {
                    form.append_pair("grant_type", "client_credentials")
                        .append_pair("client_id", client_id)
                        .append_pair("client_secret", client_secret.expose())
                        .append_pair("scope", scope);
                    secrets.push(client_secret.expose());
                }
                Grant::JwtBearer {
                    client_id,
                    subject,
                    audience,
                    key,
                } => {
                    let exp = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default()
                        + ASSERTION_LIFETIME;
                    let claims = Claims {
                        iss: client_id,
                        sub: subject,
                        aud: audience,
                        exp: exp.as_secs(),
                    };
                    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
                    let assertion = jsonwebtoken::encode(&header, &claims, key)
                        .map_err(|e| refresh_err(0, format!("cannot sign the JWT assertion: {e}")))?;
                    form.append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
                        .append_pair("assertion", &assertion);
                    assertion_sent = assertion;
                }
            }
            form.finish()
        };
        if !assertion_sent.is_empty() {
            secrets.push(&assertion_sent);
        }
        let resp = client
            .post(token_url.as_str())
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| refresh_err(0, e.without_url().to_string()))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| refresh_err(status.as_u16(), e.without_url().to_string()))?;
        // Token endpoints answer with error codes; still blank anything we
        // sent, in case one echoes it.
        let shown = |t: &str| redact(&snippet(t, 300), &secrets);
        if !status.is_success() {
            return Err(refresh_err(status.as_u16(), shown(&text)));
        }
        let parsed: TokenResponse = serde_json::from_str(&text)
            .map_err(|e| refresh_err(status.as_u16(), format!("response is not a token response: {e}")))?;
        let access_token = match (parsed.access_token, parsed.error) {
            (Some(t), None) if !t.is_empty() => t,
            (_, Some(code)) => {
                return Err(refresh_err(
                    status.as_u16(),
                    format!("error `{}` in the token response", redact(&code, &secrets)),
                ));
            }
            _ => {
                return Err(refresh_err(
                    status.as_u16(),
                    "no access_token in the token response".into(),
                ));
            }
        };
        // `expires_in` is a number (a string at some providers); none means
        // the token lives until the API rejects it.
        let expires_in = parsed.expires_in.and_then(|v| match v {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        });
        let valid_until = expires_in.map(|secs| {
            let lifetime = Duration::from_secs(secs);
            Instant::now() + lifetime.saturating_sub(REFRESH_MARGIN.min(lifetime / 2))
        });
        debug!(provider, expires_in, "access token obtained");
        let session = Session {
            token: Secret::new(access_token),
            instance_url: parsed.instance_url,
            api_domain: parsed.api_domain,
            valid_until,
        };
        *cached = Some(session.clone());
        Ok(session)
    }
}
