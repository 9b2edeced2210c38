//! Salesforce source settings.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::http::{HttpOptions, Secret};

pub const DEFAULT_LOGIN_URL: &str = "https://login.salesforce.com";
/// Data column holding the Salesforce record id.
/// The CRM object this source reads.
pub const OBJECT: &str = "Lead";
pub const ID_COLUMN: &str = "salesforce_id";
/// Lead field -> lead field defaults. `LeadSource` has no canonical lead
/// field; it stays in `extras` unless the pipeline maps it.
pub const DEFAULT_ALIASES: &[(&str, &str)] = &[
    ("FirstName", "first_name"),
    ("LastName", "last_name"),
    ("Email", "email"),
    ("Phone", "phone"),
    ("MobilePhone", "phone"),
    ("Company", "company"),
    ("Country", "country"),
    ("Status", "status"),
    ("Title", "job_title"),
    ("City", "city"),
    ("Website", "website"),
    ("CreatedDate", "source_created_at"),
];

fn default_login_url() -> String {
    DEFAULT_LOGIN_URL.to_string()
}

fn default_api_version() -> String {
    "v62.0".to_string()
}

fn default_fields() -> Vec<String> {
    [
        "FirstName",
        "LastName",
        "Email",
        "Phone",
        "MobilePhone",
        "Company",
        "Country",
        "Status",
        "LeadSource",
        "CreatedDate",
        "SystemModstamp",
    ]
    .map(String::from)
    .to_vec()
}

fn default_page_size() -> u32 {
    2000
}

fn default_lookback() -> Duration {
    Duration::from_secs(300)
}

/// A Salesforce source reading `Lead` records. Authenticate with the
/// refresh-token flow (`refresh_token`, `client_secret` if the app wants
/// one) or the JWT bearer flow (`username` and `private_key_file` or
/// `private_key`), not both.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SalesforceConfig {
    /// The connected app's consumer key.
    pub client_id: String,
    /// Refresh-token flow: the consumer secret, if the app requires it; use
    /// `${VAR}`. Not with a JWT private key.
    #[serde(default)]
    pub client_secret: Option<Secret>,
    /// Refresh-token flow: the refresh token; use `${VAR}`.
    #[serde(default)]
    pub refresh_token: Option<Secret>,
    /// JWT bearer flow: the Salesforce username the app acts as.
    #[serde(default)]
    pub username: Option<String>,
    /// JWT bearer flow: path of the PEM private key whose certificate is on
    /// the connected app (relative to the config file).
    #[serde(default)]
    pub private_key_file: Option<String>,
    /// JWT bearer flow: the PEM private key itself, from `${VAR}`.
    #[serde(default)]
    pub private_key: Option<Secret>,
    /// Login server: token endpoint `<login_url>/services/oauth2/token` and
    /// JWT audience. Default https://login.salesforce.com; sandboxes use
    /// https://test.salesforce.com.
    #[serde(default = "default_login_url")]
    pub login_url: String,
    /// Token endpoint, if not `<login_url>/services/oauth2/token`.
    #[serde(default)]
    pub token_url: Option<String>,
    /// JWT bearer flow: the assertion's audience, if not `login_url` (e.g.
    /// https://login.salesforce.com while `login_url` is a My Domain).
    #[serde(default)]
    pub jwt_audience: Option<String>,
    /// REST API version. Default v62.0.
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// Lead fields to read; each becomes a column. `Id` and
    /// `SystemModstamp` are always read. Default: FirstName, LastName,
    /// Email, Phone, MobilePhone, Company, Country, Status, LeadSource,
    /// CreatedDate, SystemModstamp.
    #[serde(default = "default_fields")]
    pub fields: Vec<String>,
    /// Records per page asked for (`Sforce-Query-Options: batchSize`),
    /// 200..=2000. Default 2000.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// How far before the saved cursor an incremental run starts, e.g.
    /// "5m". Default 5m.
    #[serde(default = "default_lookback", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub lookback: Duration,
    /// Retries, request budget and timeouts.
    #[serde(default)]
    pub http: HttpOptions,
}

impl SalesforceConfig {
    /// The token endpoint.
    pub fn token_url(&self) -> String {
        self.token_url
            .clone()
            .unwrap_or_else(|| format!("{}/services/oauth2/token", self.login_url.trim_end_matches('/')))
    }

    /// Whether the JWT bearer flow is configured.
    pub fn uses_jwt(&self) -> bool {
        self.private_key.is_some() || self.private_key_file.is_some()
    }

    /// Problems a user must fix, in words.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.client_id.trim().is_empty() {
            out.push("`client_id` (the connected app's consumer key) is empty".to_string());
        }
        let jwt = self.uses_jwt();
        if jwt && self.client_secret.is_some() {
            out.push(
                "set either `client_secret` (refresh-token flow) or a JWT private key (`private_key_file` / \
                 `private_key`), not both"
                    .to_string(),
            );
        }
        if jwt && self.refresh_token.is_some() {
            out.push(
                "set either `refresh_token` (refresh-token flow) or a JWT private key, not both".to_string(),
            );
        }
        if !jwt && self.refresh_token.is_none() {
            out.push(
                "set `refresh_token` (refresh-token flow) or `username` with `private_key_file` or \
                 `private_key` (JWT bearer flow)"
                    .to_string(),
            );
        }
        if self.private_key.is_some() && self.private_key_file.is_some() {
            out.push("set either `private_key_file` or `private_key`, not both".to_string());
        }
        if jwt && self.username.as_deref().is_none_or(|u| u.trim().is_empty()) {
            out.push("the JWT bearer flow needs `username` (the user the app acts as)".to_string());
        }
        if let Some(f) = &self.private_key_file
            && !std::path::Path::new(f).is_file()
        {
            out.push(format!("`private_key_file` {f:?} is not a readable file"));
        }
        if !(200..=2000).contains(&self.page_size) {
            out.push(format!(
                "`page_size` {} is out of range: Salesforce takes 200..=2000",
                self.page_size
            ));
        }
        for (key, u) in [
            ("login_url", Some(&self.login_url)),
            ("token_url", self.token_url.as_ref()),
        ] {
            if let Some(u) = u
                && let Err(e) = url::Url::parse(u)
            {
                out.push(format!("`{key}` {u:?} is not a URL: {e}"));
            }
        }
        let v = self.api_version.strip_prefix('v').unwrap_or("");
        if v.split('.').count() != 2
            || !v
                .split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        {
            out.push(format!(
                "`api_version` {:?} must look like v62.0",
                self.api_version
            ));
        }
        // Field names go into SOQL: API names only, nothing else.
        for f in &self.fields {
            if f.is_empty() || !f.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                out.push(format!(
                    "`fields` entry {f:?} is not a Salesforce field API name (letters, digits, `_`)"
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> SalesforceConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn refresh_flow_is_enough_and_defaults_apply() {
        let c = parse(r#"{"client_id": "app", "refresh_token": "r"}"#);
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        assert_eq!(
            c.token_url(),
            "https://login.salesforce.com/services/oauth2/token"
        );
        assert_eq!(c.page_size, 2000);
        assert!(c.fields.iter().any(|f| f == "SystemModstamp"));
        assert!(!c.uses_jwt());
    }

    #[test]
    fn secret_and_jwt_key_together_are_rejected() {
        let c = parse(
            r#"{"client_id": "app", "client_secret": "s", "username": "u@x.io", "private_key": "PEM"}"#,
        );
        let p = c.problems();
        assert!(
            p.iter()
                .any(|m| m.contains("not both") && m.contains("client_secret")),
            "{p:?}"
        );
    }

    #[test]
    fn every_problem_is_listed() {
        let c = parse(
            r#"{"client_id": " ", "private_key": "PEM", "private_key_file": "/nonexistent/key.pem",
                "refresh_token": "r", "page_size": 50, "login_url": "nope", "api_version": "62",
                "fields": ["Email", "Name, (SELECT Id FROM Tasks)"]}"#,
        );
        let p = c.problems().join("\n");
        for needle in [
            "client_id",
            "`refresh_token` (refresh-token flow) or a JWT private key",
            "`private_key_file` or `private_key`",
            "needs `username`",
            "not a readable file",
            "page_size",
            "login_url",
            "api_version",
            "not a Salesforce field API name",
        ] {
            assert!(p.contains(needle), "missing {needle:?} in:\n{p}");
        }
        let none = parse(r#"{"client_id": "app"}"#);
        assert!(none.problems()[0].contains("set `refresh_token`"));
        assert!(serde_json::from_str::<SalesforceConfig>(r#"{"client_id": "a", "secret": "x"}"#).is_err());
    }
}
