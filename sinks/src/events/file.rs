//! JSON-lines file output: each event's JSON object on one line, appended,
//! fsynced once per batch. A consumer tails the file; duplicates after a
//! crash between the write and the `deliveries` commit carry the same id.

use std::path::PathBuf;

use tokio::io::AsyncWriteExt;

use super::{Event, Outcome};

pub(super) struct FileOutput {
    path: PathBuf,
}

impl FileOutput {
    pub(super) fn new(path: PathBuf) -> Self {
        Self { path }
    }

    pub(super) async fn send(&self, events: &[Event]) -> Vec<Outcome> {
        match self.append(events).await {
            Ok(()) => vec![Outcome::Delivered; events.len()],
            Err(e) => {
                let error = format!("{}: {e}", self.path.display());
                vec![
                    Outcome::Retry {
                        error,
                        retry_after: None,
                    };
                    events.len()
                ]
            }
        }
    }

    async fn append(&self, events: &[Event]) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent()
            && !dir.as_os_str().is_empty()
        {
            tokio::fs::create_dir_all(dir).await?;
        }
        let mut buf = Vec::with_capacity(events.iter().map(|e| e.payload.len() + 1).sum());
        for e in events {
            // Payloads are compact JSON; a stray newline would split a line.
            buf.extend(e.payload.replace('\n', " ").as_bytes());
            buf.push(b'\n');
        }
        let mut f = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .await?;
        f.write_all(&buf).await?;
        f.sync_all().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str) -> Event {
        Event {
            event_id: id.into(),
            kind: "reminder.created".into(),
            payload: format!(r#"{{"event_id":"{id}","kind":"reminder.created"}}"#),
        }
    }

    #[tokio::test]
    async fn appends_one_line_per_event_and_creates_folders() {
        let dir = tempfile::tempdir().unwrap();
        let out = FileOutput::new(dir.path().join("sub/events.jsonl"));
        assert_eq!(out.send(&[ev("a"), ev("b")]).await, vec![Outcome::Delivered; 2]);
        assert_eq!(out.send(&[ev("c")]).await, vec![Outcome::Delivered]);
        let text = std::fs::read_to_string(dir.path().join("sub/events.jsonl")).unwrap();
        let ids: Vec<String> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["event_id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(ids, ["a", "b", "c"]);
    }

    #[tokio::test]
    async fn an_unwritable_path_is_retried_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        // A folder where the file should be: open fails.
        std::fs::create_dir_all(dir.path().join("events.jsonl")).unwrap();
        let out = FileOutput::new(dir.path().join("events.jsonl"));
        let r = out.send(&[ev("a")]).await;
        assert!(
            matches!(&r[0], Outcome::Retry { error, .. } if error.contains("events.jsonl")),
            "{r:?}"
        );
    }
}
