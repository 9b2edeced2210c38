//! Zoho CRM source settings.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::http::{HttpOptions, Secret};

/// Data column holding the Zoho record id.
pub const ID_COLUMN: &str = "zoho_id";
/// Zoho field -> lead field defaults. `Lead_Source` has no canonical lead
/// field; it stays in `extras` unless the pipeline maps it.
pub const DEFAULT_ALIASES: &[(&str, &str)] = &[
    ("First_Name", "first_name"),
    ("Last_Name", "last_name"),
    ("Full_Name", "full_name"),
    ("Email", "email"),
    ("Phone", "phone"),
    ("Mobile", "phone"),
    ("Company", "company"),
    ("Country", "country"),
    ("Lead_Status", "status"),
    ("Designation", "job_title"),
    ("City", "city"),
    ("Website", "website"),
    ("Owner", "owner"),
    ("Created_Time", "source_created_at"),
];

/// Zoho data centre: decides the accounts server tokens come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ZohoDataCentre {
    /// accounts.zoho.com
    #[default]
    Us,
    /// accounts.zoho.eu
    Eu,
    /// accounts.zoho.in
    In,
    /// accounts.zoho.com.au
    Au,
    /// accounts.zoho.jp
    Jp,
    /// accounts.zohocloud.ca
    Ca,
    /// accounts.zoho.com.cn
    Cn,
    /// accounts.zoho.sa
    Sa,
    /// accounts.zoho.uk
    Uk,
}

impl ZohoDataCentre {
    pub fn accounts_url(self) -> &'static str {
        match self {
            Self::Us => "https://accounts.zoho.com",
            Self::Eu => "https://accounts.zoho.eu",
            Self::In => "https://accounts.zoho.in",
            Self::Au => "https://accounts.zoho.com.au",
            Self::Jp => "https://accounts.zoho.jp",
            Self::Ca => "https://accounts.zohocloud.ca",
            Self::Cn => "https://accounts.zoho.com.cn",
            Self::Sa => "https://accounts.zoho.sa",
            Self::Uk => "https://accounts.zoho.uk",
        }
    }
}

fn default_api_version() -> String {
    "v8".to_string()
}

fn default_module() -> String {
    "Leads".to_string()
}

fn default_fields() -> Vec<String> {
    [
        "First_Name",
        "Last_Name",
        "Email",
        "Phone",
        "Mobile",
        "Company",
        "Country",
        "Lead_Status",
        "Lead_Source",
        "Owner",
        "Created_Time",
        "Modified_Time",
    ]
    .map(String::from)
    .to_vec()
}

fn default_page_size() -> u32 {
    200
}

fn default_lookback() -> Duration {
    Duration::from_secs(300)
}

/// A Zoho CRM source (OAuth refresh-token credentials of a self-client or
/// server-based app).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ZohoConfig {
    /// OAuth client id.
    pub client_id: String,
    /// OAuth client secret; use `${VAR}`.
    pub client_secret: Secret,
    /// Refresh token; use `${VAR}`.
    pub refresh_token: Secret,
    /// Data centre of the Zoho account: us (default), eu, in, au, jp, ca,
    /// cn, sa, uk. Picks the accounts server; the API host comes from the
    /// token response (`api_domain`).
    #[serde(default)]
    pub data_centre: ZohoDataCentre,
    /// Accounts server, if not the data centre's (token endpoint
    /// `<accounts_url>/oauth/v2/token`).
    #[serde(default)]
    pub accounts_url: Option<String>,
    /// CRM API version (path segment). Default v8.
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// Module to read. Default Leads.
    #[serde(default = "default_module")]
    pub module: String,
    /// Fields to read (`fields=`); each becomes a column. `Modified_Time`
    /// is always read. Default: First_Name, Last_Name, Email, Phone, Mobile,
    /// Company, Country, Lead_Status, Lead_Source, Owner, Created_Time,
    /// Modified_Time.
    #[serde(default = "default_fields")]
    pub fields: Vec<String>,
    /// Records per page, 1..=200. Default 200.
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

impl ZohoConfig {
    /// The token endpoint.
    pub fn token_url(&self) -> String {
        let server = self
            .accounts_url
            .as_deref()
            .unwrap_or(self.data_centre.accounts_url());
        format!("{}/oauth/v2/token", server.trim_end_matches('/'))
    }

    /// Problems a user must fix, in words.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (key, v) in [
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose()),
            ("refresh_token", self.refresh_token.expose()),
        ] {
            if v.trim().is_empty() {
                out.push(format!("`{key}` is empty"));
            }
        }
        if let Some(u) = &self.accounts_url
            && let Err(e) = url::Url::parse(u)
        {
            out.push(format!("`accounts_url` {u:?} is not a URL: {e}"));
        }
        if !(1..=200).contains(&self.page_size) {
            out.push(format!(
                "`page_size` {} is out of range: Zoho returns at most 200 records per page",
                self.page_size
            ));
        }
        let v = self.api_version.strip_prefix('v').unwrap_or("");
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            out.push(format!("`api_version` {:?} must look like v8", self.api_version));
        }
        let name_ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !name_ok(&self.module) {
            out.push(format!(
                "`module` {:?} is not a module API name (letters, digits, `_`)",
                self.module
            ));
        }
        for f in &self.fields {
            if !name_ok(f) {
                out.push(format!(
                    "`fields` entry {f:?} is not a field API name (letters, digits, `_`)"
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_centre_picks_the_accounts_server() {
        let c: ZohoConfig = serde_json::from_str(
            r#"{"client_id": "1000.X", "client_secret": "s", "refresh_token": "r", "data_centre": "eu"}"#,
        )
        .unwrap();
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        assert_eq!(c.token_url(), "https://accounts.zoho.eu/oauth/v2/token");
        assert_eq!(c.module, "Leads");
        assert_eq!(ZohoDataCentre::Ca.accounts_url(), "https://accounts.zohocloud.ca");
        assert_eq!(ZohoDataCentre::Au.accounts_url(), "https://accounts.zoho.com.au");
        let c: ZohoConfig = serde_json::from_str(
            r#"{"client_id": "a", "client_secret": "s", "refresh_token": "r", "accounts_url": "http://127.0.0.1:9/"}"#,
        )
        .unwrap();
        assert_eq!(c.token_url(), "http://127.0.0.1:9/oauth/v2/token");
    }

    #[test]
    fn every_problem_is_listed() {
        let c: ZohoConfig = serde_json::from_str(
            r#"{"client_id": "", "client_secret": " ", "refresh_token": "r", "accounts_url": "nope",
                "page_size": 500, "api_version": "8", "module": "Leads; drop", "fields": ["Email", "a b"]}"#,
        )
        .unwrap();
        let p = c.problems().join("\n");
        for needle in [
            "`client_id` is empty",
            "`client_secret` is empty",
            "accounts_url",
            "page_size",
            "api_version",
            "`module`",
            "\"a b\"",
        ] {
            assert!(p.contains(needle), "missing {needle:?} in:\n{p}");
        }
        assert!(
            serde_json::from_str::<ZohoConfig>(
                r#"{"client_id": "a", "client_secret": "s", "refresh_token": "r", "data_centre": "mars"}"#
            )
            .is_err()
        );
        assert!(
            serde_json::from_str::<ZohoConfig>(
                r#"{"client_id": "a", "client_secret": "s", "refresh_token": "r", "region": "eu"}"#
            )
            .is_err()
        );
    }
}
