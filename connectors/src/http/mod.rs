//! Shared HTTP layer for API sources (CRMs): one reqwest client, access
//! tokens (static, or OAuth2 refresh-token / client-credentials / JWT
//! bearer grants, cached, refreshed once on 401 where the API wants that),
//! and a request helper with retries, `Retry-After`, a per-run request
//! budget and typed errors that never carry a secret.

mod auth;
mod client;
mod config;
mod error;

pub use auth::{Grant, Session, TokenProvider};
pub use client::{HttpClient, Reply, backoff, retry_after_value};
pub use config::{HttpOptions, OAuthConfig, Secret};
pub use error::{HttpError, redact_jwts};
