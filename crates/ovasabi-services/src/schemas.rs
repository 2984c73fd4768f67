//! The event contracts over HTTP: `GET /v1/schemas`, `GET /v1/schemas/{type}/{version}` and
//! `GET /asyncapi.yaml`, served by every process with an HTTP API.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ovasabi_schema::Registry;
use serde_json::{json, Value};

use crate::http::ApiError;

/// The routes, for `registry`.
pub fn routes(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/v1/schemas", get(list))
        .route("/v1/schemas/{event_type}", get(versions))
        .route("/v1/schemas/{event_type}/{version}", get(schema))
        .route("/asyncapi.yaml", get(asyncapi))
        .with_state(registry)
}

async fn list(State(registry): State<Arc<Registry>>) -> Json<Value> {
    let items: Vec<Value> = registry
        .types()
        .map(|t| {
            json!({
                "event_type": t.meta.event_type,
                "versions": t.versions.keys().collect::<Vec<_>>(),
                "latest": t.latest().version,
                "topic": t.meta.topic,
                "description": t.meta.description,
                "compatibility": t.meta.compatibility.to_string(),
                "producers": t.meta.producers,
                "consumers": t.meta.consumers,
            })
        })
        .collect();
    Json(json!({ "items": items }))
}

async fn versions(
    State(registry): State<Arc<Registry>>,
    Path(event_type): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let t = registry
        .get(&event_type)
        .ok_or_else(|| ApiError::not_found(format!("a schema for event type `{event_type}`")))?;
    let versions: Vec<Value> = t
        .versions
        .values()
        .map(|v| json!({"version": v.version, "changes": v.changes(), "schema": v.schema}))
        .collect();
    Ok(Json(json!({
        "event_type": t.meta.event_type,
        "compatibility": t.meta.compatibility.to_string(),
        "versions": versions,
    })))
}

async fn schema(
    State(registry): State<Arc<Registry>>,
    Path((event_type, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let number: u32 = version.trim_start_matches('v').parse().map_err(|_| {
        ApiError::invalid(
            "version",
            format!("`{version}` is not a version number such as 1 or v2"),
        )
    })?;
    let t = registry
        .get(&event_type)
        .ok_or_else(|| ApiError::not_found(format!("a schema for event type `{event_type}`")))?;
    let v = t.versions.get(&number).ok_or_else(|| {
        ApiError::not_found(format!(
            "version {number} of `{event_type}` (it has {})",
            t.versions
                .keys()
                .map(|v| format!("v{v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    Ok(Json(v.schema.clone()))
}

async fn asyncapi(State(registry): State<Arc<Registry>>) -> Response {
    let doc = ovasabi_schema::asyncapi::document(&registry);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/yaml")],
        ovasabi_schema::asyncapi::to_yaml(&doc),
    )
        .into_response()
}
