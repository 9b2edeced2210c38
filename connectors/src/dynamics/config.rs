//! Dynamics 365 / Dataverse source settings.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::http::{HttpOptions, Secret};

/// The CRM object this source reads.
pub const OBJECT: &str = "leads";
/// Data column holding the Dataverse lead id (`leadid`).
pub const ID_COLUMN: &str = "dynamics_id";
/// Dataverse column -> lead field defaults.
pub const DEFAULT_ALIASES: &[(&str, &str)] = &[
    ("firstname", "first_name"),
    ("lastname", "last_name"),
    ("fullname", "full_name"),
    ("emailaddress1", "email"),
    ("telephone1", "phone"),
    ("mobilephone", "phone"),
    ("companyname", "company"),
    ("address1_country", "country"),
    ("address1_city", "city"),
    ("jobtitle", "job_title"),
    ("websiteurl", "website"),
    ("statuscode", "status"),
    ("createdon", "source_created_at"),
];

fn default_api_version() -> String {
    "v9.2".to_string()
}

fn default_fields() -> Vec<String> {
    [
        "firstname",
        "lastname",
        "emailaddress1",
        "telephone1",
        "mobilephone",
        "companyname",
        "address1_country",
        "statuscode",
        "leadsourcecode",
        "createdon",
        "modifiedon",
    ]
    .map(String::from)
    .to_vec()
}

fn default_page_size() -> u32 {
    500
}

fn default_lookback() -> Duration {
    Duration::from_secs(300)
}

/// A Dynamics 365 / Dataverse source reading `leads` as an application user
/// (Azure AD client credentials).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DynamicsConfig {
    /// The environment URL, e.g. https://contoso.crm.dynamics.com; API
    /// calls go to `<url>/api/data/<api_version>/leads`.
    pub url: String,
    /// Azure AD tenant (id or domain): the token endpoint is
    /// https://login.microsoftonline.com/<tenant_id>/oauth2/v2.0/token.
    /// Not needed with `token_url`.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// Token endpoint, if not Azure AD's for `tenant_id`.
    #[serde(default)]
    pub token_url: Option<String>,
    /// App registration (client) id.
    pub client_id: String,
    /// Client secret; use `${VAR}`.
    pub client_secret: Secret,
    /// Token scope. Default `<url>/.default`.
    #[serde(default)]
    pub scope: Option<String>,
    /// Web API version. Default v9.2.
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// Columns to read (`$select`); each becomes a column. `modifiedon` is
    /// always read. Default: firstname, lastname, emailaddress1, telephone1,
    /// mobilephone, companyname, address1_country, statuscode,
    /// leadsourcecode, createdon, modifiedon.
    #[serde(default = "default_fields")]
    pub fields: Vec<String>,
    /// Records per page (`Prefer: odata.maxpagesize`), 1..=5000. Default 500.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// How far before the saved cursor an incremental run starts, e.g.
    /// "5m". Default 5m. Not used with `change_tracking`.
    #[serde(default = "default_lookback", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub lookback: Duration,
    /// Read through Dataverse change tracking (delta links) instead of
    /// `$filter=modifiedon gt ...`: the first run reads every lead and gets
    /// a delta link, later runs read only what changed since, deletions
    /// included (their records get `deleted_at`). The leads table needs
    /// "Track changes" on (table settings, Advanced options). An expired
    /// delta link (7 days by default) falls back to one full read. Default
    /// false.
    #[serde(default)]
    pub change_tracking: bool,
    /// Retries, request budget and timeouts.
    #[serde(default)]
    pub http: HttpOptions,
}

impl DynamicsConfig {
    /// The token endpoint (None when neither `token_url` nor `tenant_id`).
    pub fn token_url(&self) -> Option<String> {
        self.token_url.clone().or_else(|| {
            self.tenant_id
                .as_ref()
                .map(|t| format!("https://login.microsoftonline.com/{t}/oauth2/v2.0/token"))
        })
    }

    /// The token scope.
    pub fn scope(&self) -> String {
        self.scope
            .clone()
            .unwrap_or_else(|| format!("{}/.default", self.url.trim_end_matches('/')))
    }

    /// Problems a user must fix, in words.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        match url::Url::parse(&self.url) {
            Err(e) => out.push(format!("`url` {:?} is not a URL: {e}", self.url)),
            Ok(u) if u.host_str().is_none() => out.push(format!("`url` {:?} has no host", self.url)),
            Ok(_) => {}
        }
        if self.token_url.is_none() && self.tenant_id.as_deref().is_none_or(|t| t.trim().is_empty()) {
            out.push("set `tenant_id` (Azure AD tenant) or `token_url`".to_string());
        }
        if let Some(t) = &self.tenant_id
            && !t.is_empty()
            && !t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            out.push(format!("`tenant_id` {t:?} is not a tenant id or domain"));
        }
        if let Some(u) = &self.token_url
            && let Err(e) = url::Url::parse(u)
        {
            out.push(format!("`token_url` {u:?} is not a URL: {e}"));
        }
        if self.client_id.trim().is_empty() {
            out.push("`client_id` is empty".to_string());
        }
        if self.client_secret.expose().trim().is_empty() {
            out.push("`client_secret` is empty".to_string());
        }
        if !(1..=5000).contains(&self.page_size) {
            out.push(format!(
                "`page_size` {} is out of range: Dataverse pages hold 1..=5000 records",
                self.page_size
            ));
        }
        let v = self.api_version.strip_prefix('v').unwrap_or("");
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            out.push(format!(
                "`api_version` {:?} must look like v9.2",
                self.api_version
            ));
        }
        for f in &self.fields {
            if f.is_empty() || !f.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                out.push(format!(
                    "`fields` entry {f:?} is not a column logical name (letters, digits, `_`)"
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
    fn azure_ad_token_url_and_default_scope() {
        let c: DynamicsConfig = serde_json::from_str(
            r#"{"url": "https://contoso.crm.dynamics.com/", "tenant_id": "contoso.onmicrosoft.com",
                "client_id": "a", "client_secret": "s"}"#,
        )
        .unwrap();
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        assert_eq!(
            c.token_url().unwrap(),
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert_eq!(c.scope(), "https://contoso.crm.dynamics.com/.default");
        assert_eq!(c.page_size, 500);
    }

    #[test]
    fn every_problem_is_listed() {
        let c: DynamicsConfig = serde_json::from_str(
            r#"{"url": "contoso", "client_id": " ", "client_secret": "", "page_size": 9000,
                "api_version": "9.2", "fields": ["emailaddress1", "x y"]}"#,
        )
        .unwrap();
        let p = c.problems().join("\n");
        for needle in [
            "`url`",
            "`tenant_id` (Azure AD tenant) or `token_url`",
            "`client_id` is empty",
            "`client_secret` is empty",
            "page_size",
            "api_version",
            "\"x y\"",
        ] {
            assert!(p.contains(needle), "missing {needle:?} in:\n{p}");
        }
        assert!(
            serde_json::from_str::<DynamicsConfig>(
                r#"{"url": "https://x", "tenant_id": "t", "client_id": "a", "client_secret": "s", "tenant": "t"}"#
            )
            .is_err()
        );
    }
}
