//! HubSpot source settings.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::http::{HttpOptions, OAuthConfig, Secret};

pub const DEFAULT_BASE_URL: &str = "https://api.hubapi.com";
pub const DEFAULT_TOKEN_URL: &str = "https://api.hubapi.com/oauth/v1/token";
/// Data column holding the HubSpot record id.
pub const ID_COLUMN: &str = "hubspot_id";
/// HubSpot property -> lead field defaults.
pub const DEFAULT_ALIASES: &[(&str, &str)] = &[
    ("firstname", "first_name"),
    ("lastname", "last_name"),
    ("email", "email"),
    ("phone", "phone"),
    ("mobilephone", "phone"),
    ("company", "company"),
    ("country", "country"),
    ("hs_lead_status", "status"),
    ("createdate", "source_created_at"),
];

/// Which CRM object to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HubSpotObject {
    /// `/crm/v3/objects/contacts`.
    #[default]
    Contacts,
    /// `/crm/v3/objects/leads`.
    Leads,
}

impl HubSpotObject {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Contacts => "contacts",
            Self::Leads => "leads",
        }
    }
}

fn default_base_url() -> String {
    DEFAULT_BASE_URL.to_string()
}

fn default_properties() -> Vec<String> {
    [
        "firstname",
        "lastname",
        "email",
        "phone",
        "mobilephone",
        "company",
        "country",
        "hs_lead_status",
        "createdate",
        "lastmodifieddate",
    ]
    .map(String::from)
    .to_vec()
}

fn default_page_size() -> u32 {
    100
}

fn default_lookback() -> Duration {
    Duration::from_secs(300)
}

/// A HubSpot CRM source. Set `token` (private app) or `oauth`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HubSpotConfig {
    /// Private-app access token; use `${VAR}`, never the literal token.
    #[serde(default)]
    pub token: Option<Secret>,
    /// OAuth2 refresh-token credentials (`client_id`, `client_secret`,
    /// `refresh_token`, `token_url` default
    /// https://api.hubapi.com/oauth/v1/token).
    #[serde(default)]
    pub oauth: Option<OAuthConfig>,
    /// API root. Default https://api.hubapi.com.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// Object to read: `contacts` (default) or `leads`.
    #[serde(default)]
    pub object: HubSpotObject,
    /// Properties to read; each becomes a column. `lastmodifieddate` is
    /// always read (it is the cursor). Default: firstname, lastname, email,
    /// phone, mobilephone, company, country, hs_lead_status, createdate,
    /// lastmodifieddate.
    #[serde(default = "default_properties")]
    pub properties: Vec<String>,
    /// Records per request: at most 100 (the search API allows 200, the
    /// list API 100; the smaller of this and the API's limit is used).
    /// Default 100.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// How far before the saved cursor an incremental run starts, to catch
    /// records that reach the search index late, e.g. "5m". Default 5m.
    #[serde(default = "default_lookback", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub lookback: Duration,
    /// Retries, request budget and timeouts.
    #[serde(default)]
    pub http: HttpOptions,
}

impl HubSpotConfig {
    /// Problems a user must fix, in words.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        match (&self.token, &self.oauth) {
            (Some(_), Some(_)) => out.push("set either `token` or `oauth`, not both".to_string()),
            (None, None) => out.push("set `token` (private app token) or `oauth`".to_string()),
            (Some(t), None) if t.expose().trim().is_empty() => out.push("`token` is empty".to_string()),
            _ => {}
        }
        if self.page_size == 0 || self.page_size > 200 {
            out.push(format!(
                "`page_size` {} is out of range: 1..=100 for listing (search allows up to 200)",
                self.page_size
            ));
        }
        if let Err(e) = url::Url::parse(&self.base_url) {
            out.push(format!("`base_url` {:?} is not a URL: {e}", self.base_url));
        }
        if let Some(o) = &self.oauth
            && let Some(u) = &o.token_url
            && let Err(e) = url::Url::parse(u)
        {
            out.push(format!("`oauth.token_url` {u:?} is not a URL: {e}"));
        }
        if self.properties.iter().any(|p| p.trim().is_empty()) {
            out.push("`properties` has an empty name".to_string());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_problems_are_reported() {
        let cfg: HubSpotConfig = serde_json::from_str(r#"{"page_size": 500}"#).unwrap();
        let p = cfg.problems();
        assert!(p.iter().any(|m| m.contains("`token`")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("page_size")), "{p:?}");
        let cfg: HubSpotConfig = serde_json::from_str(r#"{"token": "x"}"#).unwrap();
        assert!(cfg.problems().is_empty());
        assert_eq!(cfg.object.as_str(), "contacts");
        assert_eq!(cfg.lookback, std::time::Duration::from_secs(300));
        assert!(serde_json::from_str::<HubSpotConfig>(r#"{"token": "x", "tokn": 1}"#).is_err());
    }
}
