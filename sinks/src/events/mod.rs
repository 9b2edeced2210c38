//! Event outputs: where the events of the `outbox` table are delivered
//! (JSON-lines file, webhook, NATS JetStream). An output sends a batch and
//! says, per event, whether it was delivered, should be retried, or was
//! refused for good; the delivery loop (in `pipeline`) keeps the state in
//! the `deliveries` table and decides when to try again.

mod config;
mod file;
mod nats;
mod webhook;

use std::path::Path;
use std::time::Duration;

use xxhash_rust::xxh3::xxh3_64;

pub use config::{
    EventsConfig, FileOutputConfig, NatsOutputConfig, OutputConfig, Secret, WebhookOutputConfig,
    check as check_config,
};
pub use webhook::signature;

/// One event as delivered: its stable id, kind and JSON object text (which
/// holds the id and kind as well).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event_id: String,
    pub kind: String,
    pub payload: String,
}

/// What happened to one event at one output.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Delivered,
    /// A failure worth retrying (timeout, connection, 5xx, 408, 429, I/O).
    Retry {
        error: String,
        /// The receiver asked for this wait (429 `Retry-After`).
        retry_after: Option<Duration>,
    },
    /// The receiver refused the event (4xx other than 408/429): retrying
    /// would get the same answer.
    Refused {
        error: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("event output `{output}`: {message}")]
    Config { output: String, message: String },
}

/// When to try again, and when to give up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts before the delivery is `dead`; `None` retries forever.
    pub max_attempts: Option<u32>,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// Wait after failed attempt number `attempt` (1-based): exponential,
    /// capped, with "equal jitter" (half fixed, half random) so that many
    /// events failing together do not retry in lockstep. `salt` varies the
    /// jitter per event.
    pub fn backoff(&self, attempt: u32, salt: &str) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(30)));
        let base = exp.min(self.max_backoff);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let r = xxh3_64(format!("{salt}:{attempt}:{nanos}").as_bytes());
        let half = base / 2;
        let frac = (r % 1_000_000) as f64 / 1_000_000.0;
        half + half.mul_f64(frac)
    }

    /// Is a delivery that failed `attempts` times out of tries?
    pub fn exhausted(&self, attempts: u32) -> bool {
        self.max_attempts.is_some_and(|m| attempts >= m)
    }
}

enum Sender {
    File(file::FileOutput),
    Webhook(webhook::WebhookOutput),
    // Boxed: the NATS state is large and outputs live for the process.
    Nats(Box<nats::NatsOutput>),
}

/// A configured output, ready to send. Keep it for the life of the process:
/// the webhook client and the NATS connection are reused.
pub struct EventOutput {
    name: String,
    kind: &'static str,
    retry: RetryPolicy,
    sender: Sender,
}

impl EventOutput {
    /// Build an output; relative file paths resolve against `base` (the
    /// config file's folder). Nothing connects yet.
    pub fn new(config: &OutputConfig, base: &Path) -> Result<Self, EventError> {
        let err = |message: String| EventError::Config {
            output: config.name.clone(),
            message,
        };
        let (kind, retry, sender) = match (&config.file, &config.webhook, &config.nats) {
            (Some(f), None, None) => (
                "file",
                // A local file that cannot be written is the operator's to
                // fix; events wait for it rather than die.
                RetryPolicy {
                    max_attempts: None,
                    initial_backoff: Duration::from_secs(1),
                    max_backoff: Duration::from_secs(60),
                },
                Sender::File(file::FileOutput::new(base.join(&f.path))),
            ),
            (None, Some(w), None) => (
                "webhook",
                RetryPolicy {
                    max_attempts: Some(w.max_attempts.max(1)),
                    initial_backoff: w.initial_backoff,
                    max_backoff: w.max_backoff,
                },
                Sender::Webhook(webhook::WebhookOutput::new(w).map_err(err)?),
            ),
            (None, None, Some(n)) => (
                "nats",
                RetryPolicy {
                    max_attempts: None,
                    initial_backoff: n.initial_backoff,
                    max_backoff: n.max_backoff,
                },
                Sender::Nats(Box::new(nats::NatsOutput::new(n))),
            ),
            _ => return Err(err("set exactly one kind: `file:`, `webhook:` or `nats:`".into())),
        };
        Ok(Self {
            name: config.name.clone(),
            kind,
            retry,
            sender,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `file`, `webhook` or `nats`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// Send events in order. One outcome per event attempted, in order; an
    /// output may stop early (a webhook after a retryable failure): the
    /// events past the outcomes were not attempted.
    pub async fn send(&self, events: &[Event]) -> Vec<Outcome> {
        if events.is_empty() {
            return Vec::new();
        }
        match &self.sender {
            Sender::File(f) => f.send(events).await,
            Sender::Webhook(w) => w.send(events).await,
            Sender::Nats(n) => n.send(events).await,
        }
    }
}

/// Build every configured output.
pub fn build_outputs(config: &EventsConfig, base: &Path) -> Result<Vec<EventOutput>, EventError> {
    config.outputs.iter().map(|o| EventOutput::new(o, base)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let p = RetryPolicy {
            max_attempts: Some(3),
            initial_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(10),
        };
        for (attempt, base) in [(1, 2), (2, 4), (3, 8), (4, 10), (40, 10)] {
            let d = p.backoff(attempt, "e1");
            let base = Duration::from_secs(base);
            assert!(
                d >= base / 2 && d <= base,
                "attempt {attempt}: {d:?} outside [{:?}, {base:?}]",
                base / 2
            );
        }
        assert!(!p.exhausted(2));
        assert!(p.exhausted(3));
        let forever = RetryPolicy {
            max_attempts: None,
            ..p
        };
        assert!(!forever.exhausted(1_000));
    }
}
