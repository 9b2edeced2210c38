//! What the fake CRM servers share: serving a router on 127.0.0.1, JSON
//! answers, form bodies, the bearer check, and a sandbox whose pipeline
//! reads one CRM source.

use std::collections::HashMap;

use arrow::array::AsArray;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::Value;

use super::{Sandbox, leadflow, text};

pub fn json_response(status: StatusCode, body: Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// Starts `app` on its own runtime thread; returns `http://127.0.0.1:PORT`.
pub fn serve(app: Router) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!("http://{addr}")
}

/// The same server under another host name: APIs that name their data host
/// in the token response (Salesforce `instance_url`, Zoho `api_domain`)
/// are checked to call that host, not the login host.
pub fn other_host(base: &str) -> String {
    base.replace("127.0.0.1", "localhost")
}

/// The `Host` header of a request.
pub fn host(headers: &HeaderMap) -> String {
    headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// An `application/x-www-form-urlencoded` body (or query string).
pub fn form(body: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect()
}

/// The token of `Authorization: <scheme> <token>`, if that scheme.
pub fn token_of(headers: &HeaderMap, scheme: &str) -> Option<String> {
    let v = headers.get("authorization")?.to_str().ok()?;
    v.strip_prefix(scheme)?.strip_prefix(' ').map(str::to_string)
}

/// First value of the first column (Delta may hand back Utf8View).
pub fn first_text(batches: &[arrow::record_batch::RecordBatch]) -> String {
    let b = batches.iter().find(|b| b.num_rows() > 0).expect("a row");
    let col = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
    col.as_string::<i32>().value(0).to_string()
}

/// A sandbox whose one pipeline `crm` reads one CRM source named `source`.
pub struct CrmSandbox {
    pub sandbox: Sandbox,
    pub source: String,
}

impl CrmSandbox {
    /// `source_yaml` is the source's kind block, indented for a list item
    /// (the `kind:` key at 8 spaces).
    pub fn new(source: &str, source_yaml: &str) -> Self {
        Self::with_pipeline(source, source_yaml, "")
    }

    /// [`Self::new`] with more pipeline keys (e.g. a `mapping:` block,
    /// indented for the pipeline: keys at 4 spaces).
    pub fn with_pipeline(source: &str, source_yaml: &str, pipeline_yaml: &str) -> Self {
        let sandbox = Sandbox {
            dir: tempfile::tempdir().unwrap(),
        };
        let config = format!(
            r#"warehouse:
  uri: ./warehouse
pipelines:
  - name: crm
    defaults:
      phone_region: US
    sources:
      - name: {source}
{source_yaml}
    dedupe:
      keys: [phone, email]
{pipeline_yaml}"#
        );
        std::fs::write(sandbox.path().join("pipeline.yaml"), config).unwrap();
        Self {
            sandbox,
            source: source.to_string(),
        }
    }

    pub fn path(&self) -> &std::path::Path {
        self.sandbox.path()
    }

    pub fn run_with(&self, envs: &[(&str, &str)]) -> std::process::Output {
        leadflow(&["run", &self.sandbox.config(), "--json"], envs)
    }

    /// A run that must succeed; its JSON report.
    pub fn run(&self, envs: &[(&str, &str)]) -> Value {
        let o = self.run_with(envs);
        assert!(o.status.success(), "{}", text(&o));
        let v: Value = serde_json::from_slice(&o.stdout).expect("json summary");
        v[0].clone()
    }

    pub fn check(&self, envs: &[(&str, &str)]) -> std::process::Output {
        leadflow(&["check", &self.sandbox.config()], envs)
    }

    pub fn count(&self, sql: &str) -> i64 {
        self.sandbox.sql(sql)[0]
            .column(0)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .value(0)
    }

    /// The saved cursor, None before the first committed run.
    pub fn cursor(&self) -> Option<String> {
        if !self.path().join("warehouse").exists() {
            return None;
        }
        let b = self.sandbox.sql(&format!(
            "SELECT cursor FROM source_cursors WHERE source = '{}'",
            self.source
        ));
        b.iter().any(|b| b.num_rows() > 0).then(|| first_text(&b))
    }

    /// `column` of the one record with this CRM id.
    pub fn value_of(&self, column: &str, id: &str) -> String {
        let b = self.sandbox.sql(&format!(
            "SELECT {column} FROM records WHERE source = '{}' AND source_record_id = '{id}'",
            self.source
        ));
        assert_eq!(
            b.iter().map(|b| b.num_rows()).sum::<usize>(),
            1,
            "one record for id {id}"
        );
        first_text(&b)
    }
}
