//! The HTTP API (axum): health probes, metrics, pipelines and runs.
//!
//! Every route is listed once in [`routes`]; the router and the OpenAPI
//! test both read that list, so a route cannot go undocumented. To add one
//! (e.g. `POST /api/v1/reminders/{id}/contacted`), add a line there and its
//! path to `openapi.json`.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::warn;

use super::AppState;
use super::runs::{RunView, StartError, sort_newest_first};
use super::scheduler::{Plan, PlanView};

/// The OpenAPI 3.1 document of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

type S = Arc<AppState>;

/// One route: method, path, whether it is open without a token, handler.
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub public: bool,
    pub handler: MethodRouter<S>,
}

fn route(method: &'static str, path: &'static str, public: bool, handler: MethodRouter<S>) -> Route {
    Route {
        method,
        path,
        public,
        handler,
    }
}

/// Every route of the API.
pub fn routes() -> Vec<Route> {
    vec![
        route("get", "/healthz", true, get(healthz)),
        route("get", "/readyz", true, get(readyz)),
        route("get", "/metrics", true, get(metrics)),
        route("get", "/api/v1/openapi.json", false, get(openapi)),
        route("get", "/api/v1/pipelines", false, get(pipelines)),
        route("post", "/api/v1/pipelines/{name}/runs", false, post(trigger)),
        route("get", "/api/v1/runs", false, get(list_runs)),
        route("get", "/api/v1/runs/{id}", false, get(get_run)),
        route("get", "/api/v1/reminders", false, get(super::events::list)),
        route(
            "post",
            "/api/v1/reminders/{id}/contacted",
            false,
            post(super::events::contacted),
        ),
        route(
            "post",
            "/api/v1/reminders/{id}/snooze",
            false,
            post(super::events::snooze),
        ),
        route("get", "/api/v1/reviews", false, get(super::review::list)),
        route("get", "/api/v1/reviews/{id}", false, get(super::review::show)),
        route(
            "post",
            "/api/v1/reviews/{id}/approve",
            false,
            post(super::review::approve),
        ),
        route(
            "post",
            "/api/v1/reviews/{id}/reject",
            false,
            post(super::review::reject),
        ),
        route("post", "/api/v1/masters/merge", false, post(super::review::merge)),
        route(
            "post",
            "/api/v1/masters/{id}/split",
            false,
            post(super::review::split),
        ),
        route(
            "post",
            "/api/v1/merges/{id}/undo",
            false,
            post(super::review::undo),
        ),
    ]
}

/// The whole HTTP surface over the daemon's state.
pub fn router(state: S) -> Router {
    let mut open = Router::new();
    let mut guarded = Router::new();
    for r in routes() {
        if r.public {
            open = open.route(r.path, r.handler);
        } else {
            guarded = guarded.route(r.path, r.handler);
        }
    }
    let guarded = guarded.route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    open.merge(guarded)
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such endpoint; see /api/v1/openapi.json",
            )
        })
        .with_state(state)
}

/// An error answer: `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, e.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, e.body_text())
    }
}

fn warehouse_error(e: leadflow_sinks::WarehouseError) -> ApiError {
    warn!(error = %e, "runs table not readable");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the warehouse's runs table cannot be read: {e}"),
    )
}

/// Bearer token check (constant-time compare) for the guarded routes.
async fn require_token(State(state): State<S>, req: Request, next: Next) -> Response {
    if let Some(token) = state.token() {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim());
        let ok = presented.is_some_and(|t| token.matches(t));
        if !ok {
            let message = if presented.is_some() {
                "invalid bearer token"
            } else {
                "missing `Authorization: Bearer <token>` header"
            };
            let mut resp = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"leadflow\""),
            );
            return resp;
        }
    }
    next.run(req).await
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready: config loaded, not shutting down, warehouse answers.
async fn readyz(State(state): State<S>) -> Response {
    if state.shutting_down() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "reason": "shutting down" })),
        )
            .into_response();
    }
    match state.warehouse.test().await {
        Ok(()) => Json(json!({ "status": "ready" })).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "reason": format!("warehouse: {e}") })),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<S>) -> Response {
    (
        [(header::CONTENT_TYPE, super::metrics::CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

#[derive(Serialize)]
struct PipelineView {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(flatten)]
    plan: Option<PlanView>,
    next_tick: Option<String>,
    running_run_id: Option<String>,
    last_run: Option<RunView>,
}

async fn pipelines(State(state): State<S>) -> Result<Json<serde_json::Value>, ApiError> {
    let config = state.config();
    let mut out = Vec::new();
    for p in &config.config.pipelines {
        let (running, mut last) = {
            let reg = state.registry();
            (
                reg.running_id(&p.name),
                reg.list(Some(&p.name)).into_iter().next(),
            )
        };
        if last.is_none() {
            last = state
                .runs_table()
                .list(Some(&p.name), 1)
                .await
                .map_err(warehouse_error)?
                .into_iter()
                .next();
        }
        out.push(PipelineView {
            name: p.name.clone(),
            description: p.description.clone(),
            plan: Plan::of(p).ok().flatten().map(|pl| pl.view()),
            next_tick: state.next_tick(&p.name).map(|t| t.to_rfc3339()),
            running_run_id: running,
            last_run: last,
        });
    }
    Ok(Json(json!({ "pipelines": out })))
}

async fn trigger(
    State(state): State<S>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(name) = name?;
    match state.start_run(&name, "api") {
        Ok(run_id) => {
            let location = format!("/api/v1/runs/{run_id}");
            let mut resp = (
                StatusCode::ACCEPTED,
                Json(json!({ "run_id": run_id, "pipeline": name, "state": "queued", "url": location })),
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            Ok(resp)
        }
        Err(e @ StartError::Unknown(_)) => Err(ApiError::new(StatusCode::NOT_FOUND, e.to_string())),
        Err(StartError::Running(id)) => Ok((
            StatusCode::CONFLICT,
            Json(json!({
                "error": StartError::Running(id.clone()).to_string(),
                "running_run_id": id,
            })),
        )
            .into_response()),
        Err(e @ StartError::ShuttingDown) => {
            Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
        }
    }
}

async fn get_run(
    State(state): State<S>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<RunView>, ApiError> {
    let Path(id) = id?;
    if let Some(v) = state.registry().get(&id) {
        return Ok(Json(v));
    }
    match state.runs_table().get(&id).await.map_err(warehouse_error)? {
        Some(v) => Ok(Json(v)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no run with id `{id}`"),
        )),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunsQuery {
    pipeline: Option<String>,
    limit: Option<usize>,
}

const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 1000;

/// Newest first: this process's queued/running runs and the table's.
async fn list_runs(
    State(state): State<S>,
    q: Result<Query<RunsQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = q?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("limit must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let pipeline = q.pipeline.as_deref();
    let mut runs = state.registry().list(pipeline);
    let table = state
        .runs_table()
        .list(pipeline, limit)
        .await
        .map_err(warehouse_error)?;
    // This process's view of a run wins (it is at least as fresh).
    for r in table {
        if !runs.iter().any(|m| m.run_id == r.run_id) {
            runs.push(r);
        }
    }
    sort_newest_first(&mut runs);
    runs.truncate(limit);
    Ok(Json(json!({ "runs": runs })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_in_the_openapi_document() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json parses");
        assert!(
            doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")),
            "OpenAPI 3.1"
        );
        let paths = doc["paths"].as_object().expect("paths");
        for r in routes() {
            let op = &paths
                .get(r.path)
                .unwrap_or_else(|| panic!("{} missing from openapi.json", r.path))[r.method];
            assert!(
                op.is_object(),
                "{} {} missing from openapi.json",
                r.method,
                r.path
            );
            assert!(
                op["responses"].is_object(),
                "{} {} has no responses",
                r.method,
                r.path
            );
            // Guarded routes say so; open ones override security with [].
            let security = op.get("security");
            if r.public {
                assert_eq!(security, Some(&json!([])), "{} {} must be open", r.method, r.path);
            } else {
                assert!(
                    security.is_none(),
                    "{} {} must use the global bearer",
                    r.method,
                    r.path
                );
            }
        }
        // And nothing documented that the router lacks.
        let n: usize = paths
            .values()
            .map(|p| {
                p.as_object()
                    .unwrap()
                    .keys()
                    .filter(|k| ["get", "post", "put", "delete", "patch"].contains(&k.as_str()))
                    .count()
            })
            .sum();
        assert_eq!(
            n,
            routes().len(),
            "openapi.json documents routes the router does not have"
        );
        assert_eq!(doc["security"], json!([{ "bearer": [] }]));
    }
}
