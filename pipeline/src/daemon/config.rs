//! The `daemon:` section of a config file and the per-pipeline schedule
//! keys' checks.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::PipelineConfig;

/// `leadflow daemon`: where the HTTP API listens and how it is protected.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Address (ip:port) of the HTTP API, `/metrics` and the health probes.
    /// Default `127.0.0.1:8080`; use `0.0.0.0:8080` in a container.
    pub listen: String,
    /// Name of the environment variable holding the API's bearer token.
    pub token_env: Option<String>,
    /// File holding the API's bearer token (a mounted secret); relative
    /// paths resolve against the config file's folder.
    pub token_file: Option<PathBuf>,
    /// `bearer` (default): every API call needs `Authorization: Bearer
    /// <token>`. `none`: no authentication at all; only for a listen address
    /// nobody else can reach.
    pub auth: AuthMode,
    /// How long a shutdown (SIGTERM/SIGINT) waits for running runs to finish,
    /// e.g. "60s" or "5m".
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub shutdown_grace: Duration,
    /// How often the daemon advances reminders (overdue, expired, back from
    /// snooze) and delivers pending events, e.g. "5s". Default 5s.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub events_every: Duration,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            token_env: None,
            token_file: None,
            auth: AuthMode::Bearer,
            shutdown_grace: Duration::from_secs(60),
            events_every: Duration::from_secs(5),
        }
    }
}

/// How API calls authenticate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// A bearer token from `token_env` or `token_file`.
    #[default]
    Bearer,
    /// No authentication (explicit opt-out).
    None,
}

/// A bearer token. Never printed: Debug shows its length only.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// Constant-time comparison (per byte of the shorter input; a length
    /// mismatch alone is not secret).
    pub fn matches(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(<redacted, {} bytes>)", self.0.len())
    }
}

/// Why the API token could not be found.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "no API token configured: set `daemon.token_env` (e.g. LEADFLOW_API_TOKEN) or `daemon.token_file`, \
         or set `daemon.auth: none` explicitly to run the API without authentication"
    )]
    Missing,
    #[error("daemon.token_env: environment variable {0} is not set or empty")]
    EnvUnset(String),
    #[error("daemon.token_file: cannot read {path}: {source}")]
    File { path: PathBuf, source: std::io::Error },
    #[error("daemon.token_file: {0} is empty")]
    FileEmpty(PathBuf),
}

impl DaemonConfig {
    /// The listen address (checked at load, so this only fails on an
    /// unchecked config).
    pub fn listen_addr(&self) -> Result<SocketAddr, String> {
        parse_listen(&self.listen)
    }

    /// The bearer token, or None when `auth: none`.
    pub fn token(
        &self,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Token>, TokenError> {
        if self.auth == AuthMode::None {
            return Ok(None);
        }
        if let Some(var) = &self.token_env {
            return match env(var) {
                Some(v) if !v.trim().is_empty() => Ok(Some(Token::new(v.trim()))),
                _ => Err(TokenError::EnvUnset(var.clone())),
            };
        }
        if let Some(file) = &self.token_file {
            let path = if file.is_relative() {
                base.join(file)
            } else {
                file.clone()
            };
            let text = std::fs::read_to_string(&path).map_err(|source| TokenError::File {
                path: path.clone(),
                source,
            })?;
            // Secret files usually end with a newline.
            let t = text.trim();
            if t.is_empty() {
                return Err(TokenError::FileEmpty(path));
            }
            return Ok(Some(Token::new(t)));
        }
        Err(TokenError::Missing)
    }

    /// Problems as (key under `daemon`, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Err(e) = parse_listen(&self.listen) {
            out.push(("listen", e));
        }
        if self.token_env.is_some() && self.token_file.is_some() {
            out.push((
                "token_file",
                "set either `token_env` or `token_file`, not both".into(),
            ));
        }
        if self.auth == AuthMode::None && (self.token_env.is_some() || self.token_file.is_some()) {
            out.push((
                "auth",
                "`auth: none` disables the token; remove `token_env`/`token_file` or the `auth: none`".into(),
            ));
        }
        if let Some(v) = &self.token_env
            && (v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        {
            out.push(("token_env", format!("{v:?} is not an environment variable name")));
        }
        if self.events_every < Duration::from_millis(200) {
            out.push(("events_every", "must be at least 200ms".into()));
        }
        out
    }
}

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    SocketAddr::from_str(s)
        .map_err(|_| format!("{s:?} is not an ip:port address (e.g. 127.0.0.1:8080 or 0.0.0.0:8080)"))
}

/// Problems of a pipeline's `schedule`, `every` and `time_zone`, as (key,
/// message).
pub fn schedule_problems(p: &PipelineConfig) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if p.schedule.is_some() && p.every.is_some() {
        out.push((
            "every",
            "set either `schedule` (cron) or `every` (interval), not both".into(),
        ));
    }
    if let Some(expr) = &p.schedule
        && let Err(e) = cron::Schedule::from_str(expr)
    {
        out.push((
            "schedule",
            format!(
                "{expr:?} is not a cron expression with seconds (sec min hour day-of-month month day-of-week, \
                 e.g. \"0 */5 * * * *\"): {e}"
            ),
        ));
    }
    if let Some(tz) = &p.time_zone {
        if tz.parse::<chrono_tz::Tz>().is_err() {
            out.push((
                "time_zone",
                format!("{tz:?} is not an IANA time zone (e.g. UTC, Asia/Kolkata, Europe/Berlin)"),
            ));
        }
        if p.schedule.is_none() {
            out.push((
                "time_zone",
                "`time_zone` applies to a cron `schedule`; this pipeline has none".into(),
            ));
        }
    }
    if let Some(every) = p.every
        && every < Duration::from_secs(1)
    {
        out.push(("every", "must be at least 1s".into()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison_and_redaction() {
        let t = Token::new("s3cret-token");
        assert!(t.matches("s3cret-token"));
        assert!(!t.matches("s3cret-tokeN"));
        assert!(!t.matches("s3cret"));
        assert!(!t.matches(""));
        let dbg = format!("{t:?}");
        assert!(!dbg.contains("s3cret"), "{dbg}");
    }

    #[test]
    fn token_sources() {
        let base = tempfile::tempdir().unwrap();
        let env = |k: &str| (k == "TOK").then(|| " abc \n".to_string());
        let cfg = DaemonConfig {
            token_env: Some("TOK".into()),
            ..Default::default()
        };
        assert!(cfg.token(base.path(), &env).unwrap().unwrap().matches("abc"));
        let cfg = DaemonConfig {
            token_env: Some("NOPE".into()),
            ..Default::default()
        };
        assert!(matches!(cfg.token(base.path(), &env), Err(TokenError::EnvUnset(v)) if v == "NOPE"));
        std::fs::write(base.path().join("tok"), "filetoken\n").unwrap();
        let cfg = DaemonConfig {
            token_file: Some("tok".into()),
            ..Default::default()
        };
        assert!(
            cfg.token(base.path(), &env)
                .unwrap()
                .unwrap()
                .matches("filetoken")
        );
        let err = DaemonConfig::default().token(base.path(), &env).unwrap_err();
        assert!(err.to_string().contains("auth: none"), "{err}");
        let none = DaemonConfig {
            auth: AuthMode::None,
            ..Default::default()
        };
        assert!(none.token(base.path(), &env).unwrap().is_none());
    }

    #[test]
    fn listen_and_token_problems() {
        let cfg = DaemonConfig {
            listen: "localhost".into(),
            token_env: Some("A".into()),
            token_file: Some("b".into()),
            ..Default::default()
        };
        let keys: Vec<_> = cfg.problems().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec!["listen", "token_file"]);
        assert!(DaemonConfig::default().problems().is_empty());
    }
}
