//! `GET /openapi.json`: the OpenAPI 3.1 document of every running service's API, merged
//! from what each service declares ([`Service::openapi`]).

use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::runtime::Service;

/// The shape of every error response.
fn error_schema() -> Value {
    json!({
        "type": "object",
        "required": ["error"],
        "properties": {"error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "A stable code: invalid_field, not_found, conflict, idempotency_key_reused…"},
                "message": {"type": "string", "description": "What was wrong and what to do."},
                "field": {"type": ["string", "null"], "description": "The request field at fault, when one is."}
            }
        }}
    })
}

/// The document for `services`.
pub fn document(services: &[Arc<dyn Service>]) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    schemas.insert("Error".to_owned(), error_schema());
    for service in services {
        let part = service.openapi();
        if let Some(p) = part.get("paths").and_then(Value::as_object) {
            for (path, item) in p {
                let entry = paths.entry(path.clone()).or_insert_with(|| json!({}));
                if let (Some(entry), Some(item)) = (entry.as_object_mut(), item.as_object()) {
                    entry.extend(item.clone());
                }
            }
        }
        if let Some(s) = part.get("schemas").and_then(Value::as_object) {
            schemas.extend(s.clone());
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "OVASABI API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "JSON in and out. Every POST takes an `Idempotency-Key` header (a retry returns the first response and publishes nothing new); `X-Correlation-Id` is taken or generated and returned, and stamped on every event a request publishes; `traceparent` (W3C) is continued in those events. Errors are `{\"error\": {\"code\", \"message\", \"field\"}}`."
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "parameters": {
                "IdempotencyKey": {"name": "Idempotency-Key", "in": "header", "required": false, "schema": {"type": "string", "maxLength": 255}},
                "CorrelationId": {"name": "X-Correlation-Id", "in": "header", "required": false, "schema": {"type": "string"}}
            }
        }
    })
}
