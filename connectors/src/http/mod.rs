//! Shared HTTP layer for API sources (CRMs): one reqwest client, bearer
//! tokens (static or OAuth2 refresh-token grant, cached), and a request
//! helper with retries, `Retry-After`, a per-run request budget and typed
//! errors that never carry a secret.

mod auth;
mod client;
mod config;
mod error;

pub use auth::TokenProvider;
pub use client::HttpClient;
pub use config::{HttpOptions, OAuthConfig, Secret};
pub use error::HttpError;
