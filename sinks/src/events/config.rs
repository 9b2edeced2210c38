//! Where events go: the `events:` section of a config file.

use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Event outputs. Every event written to the `outbox` table (reminder
/// created, overdue, expired, contacted) is delivered to each output at least
/// once, with its stable `event_id`, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// The outputs; none means events stay in the `outbox` table only.
    #[serde(default)]
    pub outputs: Vec<OutputConfig>,
}

/// One output. Set exactly one kind: `file`, `webhook` or `nats`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// Unique name: letters, digits, `-` and `_`. Part of the `deliveries`
    /// key and the metrics label: renaming an output delivers every event in
    /// the outbox to it again.
    pub name: String,
    /// Append events as JSON lines to a local file.
    #[serde(default)]
    pub file: Option<FileOutputConfig>,
    /// POST each event as JSON to a URL, signed with HMAC-SHA256.
    #[serde(default)]
    pub webhook: Option<WebhookOutputConfig>,
    /// Publish each event to a NATS JetStream stream.
    #[serde(default)]
    pub nats: Option<NatsOutputConfig>,
}

impl OutputConfig {
    /// The kind set, for messages and metrics (`None` when zero or several are set).
    pub fn kind(&self) -> Option<&'static str> {
        match (&self.file, &self.webhook, &self.nats) {
            (Some(_), None, None) => Some("file"),
            (None, Some(_), None) => Some("webhook"),
            (None, None, Some(_)) => Some("nats"),
            _ => None,
        }
    }
}

/// A JSON-lines file: one event object per line, fsynced per batch.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileOutputConfig {
    /// File path, relative to the config file's folder or absolute. Created
    /// (with its folder) when missing; events are appended.
    pub path: String,
}

/// A webhook. The body is the event's JSON object; headers
/// `X-Leadflow-Event-Id`, `X-Leadflow-Event-Kind` and, with a secret,
/// `X-Leadflow-Signature: sha256=<hex HMAC-SHA256(secret, body)>`.
/// 2xx is delivered; 408, 429, 5xx, timeouts and connection errors are
/// retried with exponential backoff and jitter (429 honours `Retry-After`);
/// other answers are not retried. After `max_attempts` the delivery is `dead`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookOutputConfig {
    /// `http://` or `https://` URL to POST to.
    pub url: Secret,
    /// Signing secret, usually `${WEBHOOK_SECRET}`. Without it no signature header is sent.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// Attempts before an event is given up as `dead` for this output.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Time allowed for one request, e.g. "10s".
    #[serde(default = "default_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
    /// Wait before the first retry, doubled on each further one, e.g. "1s".
    #[serde(default = "default_initial_backoff", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub initial_backoff: Duration,
    /// Longest wait between two retries, e.g. "5m".
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub max_backoff: Duration,
}

/// NATS JetStream. Each event is published to `subject` with the header
/// `Nats-Msg-Id: <event_id>`, so the server drops a duplicate published
/// within the stream's duplicate window; the publish ack is awaited. The
/// stream is created when missing. Failures are retried with backoff until
/// the server takes the event (an event is never given up on).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsOutputConfig {
    /// Server URL, e.g. `nats://127.0.0.1:4222` (may carry `user:pass@`).
    pub url: Secret,
    /// Subject events are published to, e.g. `leadflow.events`.
    pub subject: String,
    /// JetStream stream that holds the subject; created (capturing `subject`) when missing.
    pub stream: String,
    /// Token for servers that use token auth, usually `${NATS_TOKEN}`.
    #[serde(default)]
    pub token: Option<Secret>,
    /// Duplicate window of a stream leadflow creates, e.g. "2m" (the server's default).
    #[serde(default = "default_duplicate_window", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub duplicate_window: Duration,
    /// Time allowed to connect and for one publish ack, e.g. "10s".
    #[serde(default = "default_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
    /// Wait before the first retry, doubled on each further one.
    #[serde(default = "default_initial_backoff", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub initial_backoff: Duration,
    /// Longest wait between two retries.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub max_backoff: Duration,
}

fn default_max_attempts() -> u32 {
    8
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_initial_backoff() -> Duration {
    Duration::from_secs(1)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(300)
}
fn default_duplicate_window() -> Duration {
    Duration::from_secs(120)
}

/// A value that must not appear in logs, errors or `Debug` output (webhook
/// URLs often carry tokens; NATS URLs may carry passwords).
#[derive(Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// Problems of an `events:` section, as (key path below `events`, message).
pub fn check(config: &EventsConfig) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    let good_name = |s: &str| {
        !s.is_empty()
            && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    for (i, o) in config.outputs.iter().enumerate() {
        let at = |k: &str| {
            if k.is_empty() {
                format!("outputs.{i}")
            } else {
                format!("outputs.{i}.{k}")
            }
        };
        if !good_name(&o.name) {
            problems.push((
                at("name"),
                format!(
                    "output name {:?} may hold only letters, digits, `-` and `_`",
                    o.name
                ),
            ));
        }
        if !names.insert(o.name.clone()) {
            problems.push((at("name"), format!("output name `{}` is used twice", o.name)));
        }
        if o.kind().is_none() {
            problems.push((
                at(""),
                "set exactly one kind: `file:`, `webhook:` or `nats:`".into(),
            ));
        }
        if let Some(f) = &o.file
            && f.path.trim().is_empty()
        {
            problems.push((at("file.path"), "must not be empty".into()));
        }
        if let Some(w) = &o.webhook {
            match url::Url::parse(w.url.expose()) {
                Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
                // The URL itself is not echoed: it may hold a token.
                Ok(u) => problems.push((
                    at("webhook.url"),
                    format!(
                        "scheme `{}` is not supported, use http:// or https://",
                        u.scheme()
                    ),
                )),
                Err(e) => problems.push((at("webhook.url"), format!("not a URL: {e}"))),
            }
            if w.max_attempts == 0 {
                problems.push((at("webhook.max_attempts"), "must be at least 1".into()));
            }
            if w.timeout.is_zero() {
                problems.push((at("webhook.timeout"), "must be longer than 0s".into()));
            }
            if w.initial_backoff > w.max_backoff {
                problems.push((
                    at("webhook.initial_backoff"),
                    "must not be longer than max_backoff".into(),
                ));
            }
            if w.secret.as_ref().is_some_and(|s| s.expose().is_empty()) {
                problems.push((
                    at("webhook.secret"),
                    "is empty (is the environment variable set to an empty value?)".into(),
                ));
            }
        }
        if let Some(n) = &o.nats {
            match url::Url::parse(n.url.expose()) {
                Ok(u) if ["nats", "tls", "ws", "wss"].contains(&u.scheme()) => {}
                Ok(u) => problems.push((
                    at("nats.url"),
                    format!("scheme `{}` is not supported, use nats:// or tls://", u.scheme()),
                )),
                Err(e) => problems.push((at("nats.url"), format!("not a URL: {e}"))),
            }
            if n.subject.is_empty() || n.subject.contains(char::is_whitespace) {
                problems.push((at("nats.subject"), "must be a subject without spaces".into()));
            } else if n.subject.contains(['*', '>']) {
                problems.push((
                    at("nats.subject"),
                    "must be a concrete subject to publish to (no `*` or `>` wildcards)".into(),
                ));
            }
            if n.stream.is_empty()
                || n.stream
                    .chars()
                    .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
            {
                problems.push((
                    at("nats.stream"),
                    format!(
                        "stream name {:?} must be non-empty without spaces, `.`, `*`, `>`, `/` or `\\`",
                        n.stream
                    ),
                ));
            }
            if n.timeout.is_zero() {
                problems.push((at("nats.timeout"), "must be longer than 0s".into()));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug_or_serialised_form() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!serde_json::to_string(&s).unwrap().contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn checks_names_kinds_and_urls() {
        let yaml = r#"{"outputs": [
            {"name": "a", "file": {"path": "x.jsonl"}},
            {"name": "a", "webhook": {"url": "ftp://token@host/x", "max_attempts": 0}},
            {"name": "bad name"},
            {"name": "n", "nats": {"url": "nats://127.0.0.1:4222", "subject": "a.>", "stream": "A.B"}}
        ]}"#;
        let c: EventsConfig = serde_json::from_str(yaml).unwrap();
        let p = check(&c);
        let keys: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
        assert!(keys.contains(&"outputs.1.name"), "{p:?}");
        assert!(keys.contains(&"outputs.1.webhook.url"), "{p:?}");
        assert!(keys.contains(&"outputs.1.webhook.max_attempts"), "{p:?}");
        assert!(keys.contains(&"outputs.2.name"), "{p:?}");
        assert!(keys.contains(&"outputs.2"), "{p:?}");
        assert!(keys.contains(&"outputs.3.nats.subject"), "{p:?}");
        assert!(keys.contains(&"outputs.3.nats.stream"), "{p:?}");
        assert!(!p.iter().any(|(_, m)| m.contains("token@")), "URL echoed: {p:?}");
        let good: EventsConfig = serde_json::from_str(
            r#"{"outputs": [{"name": "hook", "webhook": {"url": "https://example.com/h", "secret": "s", "timeout": "3s"}}]}"#,
        )
        .unwrap();
        assert!(check(&good).is_empty());
        assert_eq!(
            good.outputs[0].webhook.as_ref().unwrap().timeout,
            Duration::from_secs(3)
        );
    }
}
