//! Google Sheets source settings.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::http::HttpOptions;

/// API root of the Sheets API (the request paths start with `v4/`).
pub const DEFAULT_BASE_URL: &str = "https://sheets.googleapis.com/";
/// Google's token endpoint, used when the key file names none.
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// Read-only access to spreadsheets: all this source needs.
pub const SCOPE: &str = "https://www.googleapis.com/auth/spreadsheets.readonly";
/// Data column holding each row's identity (the id column's value, or
/// `row-<fingerprint>`); it becomes the record id.
pub const ID_COLUMN: &str = "sheet_row_id";
/// Sheet headers are written by people, so the built-in header aliases
/// (and the pipeline's own) do the mapping; there are no provider names.
pub const DEFAULT_ALIASES: &[(&str, &str)] = &[];

fn default_header_row() -> u32 {
    1
}

/// Where the service-account key comes from. Set exactly one.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SheetsCredentials {
    /// Path of the service-account key JSON file (as downloaded from the
    /// Google Cloud console); relative paths are read from the config's
    /// folder.
    #[serde(default)]
    pub key_file: Option<String>,
    /// Name of an environment variable holding the whole key JSON, e.g.
    /// `GOOGLE_SA_KEY` (the name, not `${...}`: the key is read when the
    /// source connects, so a multi-line key file's content works).
    #[serde(default)]
    pub key_env: Option<String>,
}

/// A Google Sheets source. Share the spreadsheet with the service account's
/// `client_email` (Viewer is enough).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SheetsConfig {
    /// The spreadsheet id: the part of its URL between `/d/` and `/edit`.
    pub spreadsheet_id: String,
    /// A tab name (`Leads`) or an A1 range (`Leads!A1:K`). Default: the
    /// first tab, every column.
    #[serde(default)]
    pub range: Option<String>,
    /// Row of the range holding the headers (1 = the range's first row).
    /// Rows above it are skipped. Default 1.
    #[serde(default = "default_header_row")]
    pub header_row: u32,
    /// Header of the column holding a stable row id (e.g. `Lead ID`). An
    /// edited row then updates its record. Without it a row is identified by
    /// its values, so an edited row is a new record (dedupe still links it
    /// to the same person).
    #[serde(default)]
    pub id_column: Option<String>,
    /// The service-account key.
    pub credentials: SheetsCredentials,
    /// Sheets API root, for proxies and tests. Default
    /// https://sheets.googleapis.com/.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Token endpoint, for proxies and tests. Default: the key's
    /// `token_uri` (https://oauth2.googleapis.com/token).
    #[serde(default)]
    pub token_uri: Option<String>,
    /// Retries, request budget and timeouts.
    #[serde(default)]
    pub http: HttpOptions,
}

impl SheetsConfig {
    /// Problems a user must fix, in words.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let id = self.spreadsheet_id.trim();
        if id.is_empty() {
            out.push("`spreadsheet_id` is empty".to_string());
        } else if let Some(rest) = id.split("/spreadsheets/d/").nth(1) {
            let id = rest.split('/').next().unwrap_or(rest);
            out.push(format!("`spreadsheet_id` is a URL; use only the id part: {id}"));
        } else if !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            out.push(format!(
                "`spreadsheet_id` {id:?} may hold only letters, digits, `-` and `_`"
            ));
        }
        if self.range.as_deref().is_some_and(|r| r.trim().is_empty()) {
            out.push("`range` is empty; leave it out to read the first tab".to_string());
        }
        if self.header_row == 0 {
            out.push("`header_row` counts from 1 (the range's first row)".to_string());
        }
        if self.id_column.as_deref().is_some_and(|c| c.trim().is_empty()) {
            out.push("`id_column` is empty; leave it out to identify rows by their values".to_string());
        }
        match (&self.credentials.key_file, &self.credentials.key_env) {
            (Some(_), Some(_)) => {
                out.push("set either `credentials.key_file` or `credentials.key_env`, not both".to_string())
            }
            (None, None) => out.push(
                "set `credentials.key_file` (service-account key JSON file) or `credentials.key_env` (name \
                 of an environment variable holding the key JSON)"
                    .to_string(),
            ),
            (Some(f), None) if f.trim().is_empty() => out.push("`credentials.key_file` is empty".to_string()),
            (None, Some(v)) if v.trim().is_empty() || v.contains('$') => out.push(format!(
                "`credentials.key_env` {v:?} must be a variable name such as GOOGLE_SA_KEY (not `${{...}}`)"
            )),
            _ => {}
        }
        for (key, value) in [("base_url", &self.base_url), ("token_uri", &self.token_uri)] {
            if let Some(v) = value {
                match url::Url::parse(v) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                    Ok(u) => out.push(format!("`{key}` {v:?} must be http(s), not {}", u.scheme())),
                    Err(e) => out.push(format!("`{key}` {v:?} is not a URL: {e}")),
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_problems_are_reported_together() {
        let cfg: SheetsConfig = serde_json::from_str(
            r#"{"spreadsheet_id": "https://docs.google.com/spreadsheets/d/1AbC_d-9/edit#gid=0",
                "header_row": 0, "credentials": {}, "base_url": "ftp://x"}"#,
        )
        .unwrap();
        let p = cfg.problems();
        assert!(
            p.iter().any(|m| m.contains("use only the id part: 1AbC_d-9")),
            "{p:?}"
        );
        assert!(p.iter().any(|m| m.contains("header_row")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("credentials.key_file")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("base_url")), "{p:?}");

        let cfg: SheetsConfig =
            serde_json::from_str(r#"{"spreadsheet_id": "1AbC_d-9", "credentials": {"key_env": "SA_KEY"}}"#)
                .unwrap();
        assert!(cfg.problems().is_empty(), "{:?}", cfg.problems());
        assert_eq!(cfg.header_row, 1);
        assert!(cfg.range.is_none() && cfg.id_column.is_none());
        let both: SheetsConfig = serde_json::from_str(
            r#"{"spreadsheet_id": "x", "credentials": {"key_env": "SA_KEY", "key_file": "k.json"}}"#,
        )
        .unwrap();
        assert!(both.problems().iter().any(|m| m.contains("not both")));
        // Whether the variable is set is seen when the source connects (a
        // config is also loaded where the key is not needed, e.g. `show`).
        for (var, says) in [("${GOOGLE_SA_KEY}", "variable name"), (" ", "variable name")] {
            let cfg: SheetsConfig = serde_json::from_value(
                serde_json::json!({"spreadsheet_id": "x", "credentials": {"key_env": var}}),
            )
            .unwrap();
            assert!(
                cfg.problems().iter().any(|m| m.contains(says)),
                "{:?}",
                cfg.problems()
            );
        }
        assert!(
            serde_json::from_str::<SheetsConfig>(
                r#"{"spreadsheet_id": "x", "credentials": {"key_file": "k"}, "tab": "Leads"}"#
            )
            .is_err(),
            "unknown keys are refused"
        );
    }
}
