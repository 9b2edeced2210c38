//! The review and merge routes: the same operations as `leadflow review`
//! and `leadflow master`, over HTTP. Events they write are delivered by
//! the events loop on its next turn.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
use tracing::warn;

use super::AppState;
use super::api::ApiError;
use crate::review::{self, ReviewError};

type Out = Result<Json<serde_json::Value>, ApiError>;

fn review_error(e: ReviewError) -> ApiError {
    let status = match &e {
        ReviewError::NotFound { .. } => StatusCode::NOT_FOUND,
        ReviewError::Decided { .. } => StatusCode::CONFLICT,
        ReviewError::Invalid(_) => StatusCode::BAD_REQUEST,
        ReviewError::Conflict(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => {
            warn!(error = %e, "review operation failed");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    ApiError::new(status, e.to_string())
}

/// Merges and splits rewrite masters that a run of this daemon may have
/// read as candidates and would write back; while one is going, they wait
/// for it (503, try again) instead of racing it.
fn no_run_going(state: &AppState) -> Result<(), ApiError> {
    let active = state.runs.lock().unwrap_or_else(|e| e.into_inner()).active();
    match active.first() {
        None => Ok(()),
        Some((pipeline, run)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("run {run} of pipeline {pipeline} is going; try again when it has finished"),
        )),
    }
}

/// `?entity=` on every review and merge route: the entity type whose
/// tables to use (default: leads).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EntityQuery {
    entity: Option<String>,
}

type EntityParam = Result<Query<EntityQuery>, axum::extract::rejection::QueryRejection>;

/// The warehouse as `entity` sees it; 404 for an entity no pipeline has.
async fn warehouse_of(state: &AppState, entity: Option<&str>) -> Result<leadflow_sinks::Warehouse, ApiError> {
    let Some(e) = entity else {
        return Ok((*state.warehouse).clone());
    };
    if !state.config().config.has_entity(e) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no pipeline has `entity: {e}`"),
        ));
    }
    crate::warehouse_for(&state.warehouse, Some(e))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("warehouse: {e}")))
}

async fn entity_warehouse(state: &AppState, q: EntityParam) -> Result<leadflow_sinks::Warehouse, ApiError> {
    let Query(q) = q?;
    warehouse_of(state, q.entity.as_deref()).await
}

/// The warehouse and entity for a route that merges or splits: refused
/// first while a run is going (before an entity's tables are opened for
/// nothing).
async fn changing(
    state: &AppState,
    q: EntityParam,
) -> Result<(leadflow_sinks::Warehouse, Option<String>), ApiError> {
    no_run_going(state)?;
    let Query(q) = q?;
    let warehouse = warehouse_of(state, q.entity.as_deref()).await?;
    Ok((warehouse, q.entity))
}

fn to_json<T: serde::Serialize>(v: &T) -> Out {
    serde_json::to_value(v)
        .map(Json)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    b.map(|Json(v)| v)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))
}

/// An optional JSON body: none (or empty) is the default.
fn optional<T: serde::de::DeserializeOwned + Default>(b: &Bytes) -> Result<T, ApiError> {
    if b.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(b)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("request body: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// open (default), approved, rejected or all.
    status: Option<String>,
    /// The entity type (default: leads).
    entity: Option<String>,
}

/// `GET /api/v1/reviews?status=`
pub async fn list(
    State(state): State<Arc<AppState>>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Out {
    let Query(q) = query?;
    let status = match q.status.as_deref().unwrap_or("open") {
        "all" => None,
        s @ ("open" | "approved" | "rejected") => Some(s),
        s => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("status {s:?}: expected open, approved, rejected or all"),
            ));
        }
    };
    let warehouse = warehouse_of(&state, q.entity.as_deref()).await?;
    let rows = review::list(&warehouse, status).await.map_err(review_error)?;
    Ok(Json(json!({ "reviews": rows })))
}

/// `GET /api/v1/reviews/{id}`
pub async fn show(State(state): State<Arc<AppState>>, Path(id): Path<String>, q: EntityParam) -> Out {
    let warehouse = entity_warehouse(&state, q).await?;
    to_json(&review::show(&warehouse, &id).await.map_err(review_error)?)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ApproveBody {
    keep: Option<String>,
    note: Option<String>,
}

/// `POST /api/v1/reviews/{id}/approve` with optional `{"keep": MASTER, "note": ...}`
pub async fn approve(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    q: EntityParam,
    b: Bytes,
) -> Out {
    let (warehouse, entity) = changing(&state, q).await?;
    let b: ApproveBody = optional(&b)?;
    let m = review::approve(
        &warehouse,
        state.config().config.survivorship_for(entity.as_deref()),
        &id,
        b.keep.as_deref(),
        b.note.as_deref(),
        "api",
        Utc::now(),
    )
    .await
    .map_err(review_error)?;
    to_json(&m)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NoteBody {
    note: Option<String>,
}

/// `POST /api/v1/reviews/{id}/reject` with optional `{"note": ...}`
pub async fn reject(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    q: EntityParam,
    b: Bytes,
) -> Out {
    let warehouse = entity_warehouse(&state, q).await?;
    let b: NoteBody = optional(&b)?;
    let r = review::reject(&warehouse, &id, b.note.as_deref(), "api", Utc::now())
        .await
        .map_err(review_error)?;
    to_json(&r)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeBody {
    masters: [String; 2],
    keep: Option<String>,
    note: Option<String>,
}

/// `POST /api/v1/masters/merge` with `{"masters": [A, B], "keep"?, "note"?}`
pub async fn merge(
    State(state): State<Arc<AppState>>,
    q: EntityParam,
    b: Result<Json<MergeBody>, JsonRejection>,
) -> Out {
    let (warehouse, entity) = changing(&state, q).await?;
    let b = body(b)?;
    let m = review::merge(
        &warehouse,
        state.config().config.survivorship_for(entity.as_deref()),
        &b.masters[0],
        &b.masters[1],
        b.keep.as_deref(),
        b.note.as_deref(),
        "api",
        Utc::now(),
    )
    .await
    .map_err(review_error)?;
    to_json(&m)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordKey {
    source: String,
    source_record_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitBody {
    records: Vec<RecordKey>,
    note: Option<String>,
}

/// `POST /api/v1/masters/{id}/split` with `{"records": [{"source", "source_record_id"}], "note"?}`
pub async fn split(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    q: EntityParam,
    b: Result<Json<SplitBody>, JsonRejection>,
) -> Out {
    let (warehouse, entity) = changing(&state, q).await?;
    let b = body(b)?;
    let keys: Vec<(String, String)> = b
        .records
        .into_iter()
        .map(|k| (k.source, k.source_record_id))
        .collect();
    let s = review::split(
        &warehouse,
        state.config().config.survivorship_for(entity.as_deref()),
        &id,
        &keys,
        b.note.as_deref(),
        "api",
        Utc::now(),
    )
    .await
    .map_err(review_error)?;
    to_json(&s)
}

/// `POST /api/v1/merges/{id}/undo` with optional `{"note": ...}`
pub async fn undo(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    q: EntityParam,
    b: Bytes,
) -> Out {
    let (warehouse, entity) = changing(&state, q).await?;
    let b: NoteBody = optional(&b)?;
    let s = review::unmerge(
        &warehouse,
        state.config().config.survivorship_for(entity.as_deref()),
        &id,
        b.note.as_deref(),
        "api",
        Utc::now(),
    )
    .await
    .map_err(review_error)?;
    to_json(&s)
}
