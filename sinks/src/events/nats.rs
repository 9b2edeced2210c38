//! NATS JetStream output. Every event is published with `Nats-Msg-Id` =
//! its event id, so a re-delivery inside the stream's duplicate window is
//! dropped by the server; the publish ack is awaited before an event counts
//! as delivered.

use std::time::Duration;

use async_nats::jetstream;
use tokio::sync::Mutex;
use tracing::{info, warn};

use super::config::{NatsOutputConfig, Secret};
use super::{Event, Outcome};

pub(super) struct NatsOutput {
    url: Secret,
    token: Option<Secret>,
    subject: String,
    stream: String,
    duplicate_window: Duration,
    timeout: Duration,
    /// Connected lazily and kept: async-nats reconnects by itself.
    conn: Mutex<Option<jetstream::Context>>,
}

impl NatsOutput {
    pub(super) fn new(c: &NatsOutputConfig) -> Self {
        Self {
            url: c.url.clone(),
            token: c.token.clone(),
            subject: c.subject.clone(),
            stream: c.stream.clone(),
            duplicate_window: c.duplicate_window,
            timeout: c.timeout,
            conn: Mutex::new(None),
        }
    }

    async fn context(&self) -> Result<jetstream::Context, String> {
        let mut guard = self.conn.lock().await;
        if let Some(ctx) = guard.as_ref() {
            return Ok(ctx.clone());
        }
        let mut opts = async_nats::ConnectOptions::new()
            .connection_timeout(self.timeout)
            .name("leadflow");
        if let Some(t) = &self.token {
            opts = opts.token(t.expose().to_string());
        }
        // The URL is not echoed in errors: it may carry a password.
        let client = tokio::time::timeout(self.timeout * 2, opts.connect(self.url.expose()))
            .await
            .map_err(|_| {
                format!(
                    "could not connect to the NATS server within {:?}",
                    self.timeout * 2
                )
            })?
            .map_err(|e| format!("could not connect to the NATS server: {e}"))?;
        let mut ctx = jetstream::new(client);
        ctx.set_timeout(self.timeout);
        let stream = ctx
            .get_or_create_stream(jetstream::stream::Config {
                name: self.stream.clone(),
                subjects: vec![self.subject.clone()],
                duplicate_window: self.duplicate_window,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("JetStream stream `{}`: {e}", self.stream))?;
        let subjects = &stream.cached_info().config.subjects;
        if !subjects.iter().any(|s| subject_matches(s, &self.subject)) {
            // An existing stream that does not capture the subject: every
            // publish would go unanswered. Say so once, clearly.
            warn!(stream = %self.stream, subject = %self.subject, "the JetStream stream does not capture the output's subject");
        }
        info!(stream = %self.stream, subject = %self.subject, "connected to NATS JetStream");
        *guard = Some(ctx.clone());
        Ok(ctx)
    }

    pub(super) async fn send(&self, events: &[Event]) -> Vec<Outcome> {
        let retry = |error: String| Outcome::Retry {
            error,
            retry_after: None,
        };
        let ctx = match self.context().await {
            Ok(c) => c,
            Err(e) => return vec![retry(e); events.len()],
        };
        // Publish all, then collect the acks in order: one round trip of
        // latency for the batch instead of one per event.
        let mut pending = Vec::with_capacity(events.len());
        for e in events {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", e.event_id.as_str());
            headers.insert("Leadflow-Event-Kind", e.kind.as_str());
            let sent = ctx
                .publish_with_headers(self.subject.clone(), headers, e.payload.clone().into())
                .await;
            pending.push(sent);
        }
        let mut out = Vec::with_capacity(events.len());
        for sent in pending {
            out.push(match sent {
                Err(e) => retry(format!("publish failed: {e}")),
                // `duplicate: true` means the server already holds it: delivered.
                Ok(ack) => match ack.await {
                    Ok(_) => Outcome::Delivered,
                    Err(e) => retry(format!("no publish ack: {e}")),
                },
            });
        }
        out
    }
}

/// Does a stream subject filter (with `*` and `>` wildcards) match `subject`?
fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut f = filter.split('.');
    let mut s = subject.split('.');
    loop {
        match (f.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_filters() {
        assert!(subject_matches("leadflow.events", "leadflow.events"));
        assert!(subject_matches("leadflow.*", "leadflow.events"));
        assert!(subject_matches("leadflow.>", "leadflow.events.x"));
        assert!(!subject_matches("leadflow.*", "leadflow.events.x"));
        assert!(!subject_matches("other", "leadflow.events"));
    }

    #[tokio::test]
    async fn an_unreachable_server_is_retried() {
        let out = NatsOutput::new(&NatsOutputConfig {
            url: Secret::new("nats://127.0.0.1:1"),
            subject: "x".into(),
            stream: "X".into(),
            token: None,
            duplicate_window: Duration::from_secs(120),
            timeout: Duration::from_millis(500),
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(1),
        });
        let ev = Event {
            event_id: "e".into(),
            kind: "k".into(),
            payload: "{}".into(),
        };
        let r = out.send(&[ev]).await;
        assert!(matches!(&r[0], Outcome::Retry { .. }), "{r:?}");
    }

    #[tokio::test]
    async fn each_event_is_in_the_stream_once_when_sent_twice() {
        let Ok(url) = std::env::var("LEADFLOW_TEST_NATS_URL") else {
            println!("skipped: LEADFLOW_TEST_NATS_URL not set");
            return;
        };
        use futures::StreamExt;
        let unique = format!("{}_{}", std::process::id(), chrono::Utc::now().timestamp_micros());
        let (stream, subject) = (format!("LF_SINKS_{unique}"), format!("leadflow.sinks.{unique}"));
        let out = NatsOutput::new(&NatsOutputConfig {
            url: Secret::new(url.clone()),
            subject: subject.clone(),
            stream: stream.clone(),
            token: None,
            duplicate_window: Duration::from_secs(120),
            timeout: Duration::from_secs(5),
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(1),
        });
        let evs: Vec<Event> = ["e1", "e2", "e3"]
            .iter()
            .map(|id| Event {
                event_id: id.to_string(),
                kind: "reminder.created".into(),
                payload: format!(r#"{{"event_id":"{id}"}}"#),
            })
            .collect();
        assert_eq!(out.send(&evs).await, vec![Outcome::Delivered; 3]);
        assert_eq!(
            out.send(&evs[1..]).await,
            vec![Outcome::Delivered; 2],
            "a duplicate is acked"
        );
        let js = jetstream::new(async_nats::connect(url.as_str()).await.unwrap());
        let st = js.get_stream(&stream).await.unwrap();
        let consumer = st
            .create_consumer(jetstream::consumer::pull::Config::default())
            .await
            .unwrap();
        let mut msgs = consumer
            .fetch()
            .max_messages(10)
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .unwrap();
        let mut ids = Vec::new();
        while let Some(m) = msgs.next().await {
            let m = m.unwrap();
            ids.push(
                m.headers
                    .as_ref()
                    .unwrap()
                    .get("Nats-Msg-Id")
                    .unwrap()
                    .as_str()
                    .to_string(),
            );
        }
        js.delete_stream(&stream).await.unwrap();
        assert_eq!(ids, ["e1", "e2", "e3"]);
    }
}
