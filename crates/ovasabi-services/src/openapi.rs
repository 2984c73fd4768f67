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

/// What the runtime itself serves beside the services: health, metrics, status and dead
/// letters.
fn operations() -> Value {
    let error = |description: &str| json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let id = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}, "description": "`<dead-letter topic>@<offset>`, as listed"});
    json!({"paths": {
        "/healthz": {"get": {"summary": "Liveness: the process serves HTTP", "responses": {"200": {"description": "`ok`"}}}},
        "/readyz": {"get": {"summary": "Readiness: the database and the bus answer, the outbox relay is not stuck", "responses": {
            "200": {"description": "`{\"ready\": true, \"checks\": {…}}`"},
            "503": {"description": "The same shape; each failing check gives its `error`"}
        }}},
        "/metrics": {"get": {"summary": "Prometheus metrics (text format 0.0.4)", "responses": {"200": {"description": "The metrics page"}}}},
        "/v1/status": {"get": {"summary": "The platform at a glance: topics with their events and dead letters, groups with their lag, the outbox backlog, webhook endpoints by state", "responses": {
            "200": {"description": "`{at, topics, lag, dead_letters, outbox, webhook_endpoints}`"},
            "503": error("The bus or the database did not answer")
        }}},
        "/v1/dlq": {"get": {"summary": "Dead letters, oldest first", "parameters": [
            {"name": "topic", "in": "query", "required": false, "schema": {"type": "string"}},
            {"name": "reason", "in": "query", "required": false, "schema": {"type": "string"}, "description": "A part of the reason, any case"},
            {"name": "group", "in": "query", "required": false, "schema": {"type": "string"}},
            {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1}},
            {"name": "pending", "in": "query", "required": false, "schema": {"type": "boolean"}, "description": "true: only those not re-driven yet"}
        ], "responses": {"200": {"description": "`{items: [...]}`, each with `redriven_at` (null until re-driven)"}, "422": error("A parameter is invalid (named in `field`)")}}},
        "/v1/dlq/{id}": {"get": {"summary": "One dead letter, with its whole event", "parameters": [id], "responses": {
            "200": {"description": "The dead letter"}, "404": error("No such dead letter"), "422": error("`id` is not `<topic>.dlq@<offset>`")
        }}},
        "/v1/dlq/redrive": {"post": {"summary": "Put dead letters back on their original topic for the group that failed them, each once", "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "properties": {
            "ids": {"type": "array", "items": {"type": "string"}},
            "topic": {"type": "string"},
            "all": {"type": "boolean"},
            "dry_run": {"type": "boolean"},
            "force": {"type": "boolean", "description": "Re-drive again what was re-driven before"}
        }}}}}, "responses": {
            "200": {"description": "`{redriven, skipped, failed, dry_run}`"},
            "404": error("An id names no dead letter"),
            "422": error("No selector (`ids`, `topic` or `all`), or conflicting ones")
        }}},
        "/": {"get": {"summary": "The live dashboard (HTML)", "responses": {"200": {"description": "The page"}}}},
        "/v1/events": {"post": {"summary": "Publish one event straight onto the bus (operators); `specversion`, `id`, `time` and `source` are filled in when missing", "parameters": [
            {"name": "topic", "in": "query", "required": true, "schema": {"type": "string"}}
        ], "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["type"], "description": "A structured-mode CloudEvent"}}}}, "responses": {
            "201": {"description": "`{topic, offset, id}`"},
            "422": error("The topic, the event or its payload is invalid (named in `field`)"),
            "503": error("The bus did not take it")
        }}},
        "/v1/events/stream": {"get": {"summary": "Every event on the bus as it is published (Server-Sent Events: `id:` seq, `event: event`, `data:` a LiveEvent); resumes after `Last-Event-ID`", "parameters": live_filters(true), "responses": {
            "200": {"description": "text/event-stream"}, "422": error("A parameter is invalid (named in `field`)")
        }}},
        "/v1/events/recent": {"get": {"summary": "The latest events of the live window, oldest first", "parameters": live_filters(false), "responses": {
            "200": {"description": "`{items: [LiveEvent...]}`"}, "422": error("A parameter is invalid (named in `field`)")
        }}},
        "/v1/trace/{id}": {"get": {"summary": "The causal tree around an event id or a correlation id, from the audit trail", "parameters": [
            {"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}
        ], "responses": {"200": {"description": "`{asked, correlation_id, events, roots}`"}, "404": error("The audit trail holds nothing of it, or does not run here")}}},
        "/v1/dashboard/overview": {"get": {"summary": "Consumer groups with lag, counters and handler latency; topics with rates and dead letters; the outbox", "responses": {"200": {"description": "`{at, groups, topics, lag, dead_letters, outbox}`"}, "503": error("The bus or the database did not answer")}}},
        "/v1/dashboard/series": {"get": {"summary": "Events per topic and deliveries and latency per group, per 5-second interval, the last 10 minutes", "responses": {"200": {"description": "`{interval_seconds, points}`"}}}},
        "/v1/dashboard/topology": {"get": {"summary": "Services, topics and consumer groups as a graph with live rates and lag", "responses": {"200": {"description": "`{services, topics, groups, edges}`"}, "503": error("The bus or the database did not answer")}}},
        "/v1/dashboard/webhooks": {"get": {"summary": "Every partner's webhook endpoints with their latest attempts", "responses": {"200": {"description": "`{items}`"}, "503": error("The database did not answer")}}}
    }})
}

/// The query parameters of the live event stream and listing.
fn live_filters(stream: bool) -> Value {
    let text = |name: &str, description: &str| json!({"name": name, "in": "query", "required": false, "schema": {"type": "string"}, "description": description});
    let mut params = vec![
        text(
            "topic",
            "A topic or pattern: commerce.events, *.events, *.dlq",
        ),
        text("type", "An event type, or a prefix such as order.*"),
        text("subject", "The events' subject"),
        text("correlation_id", "The events' correlation id"),
    ];
    params.push(if stream {
        json!({"name": "backlog", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 0, "maximum": 1000}, "description": "Recent events sent first (default 100)"})
    } else {
        json!({"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 0, "maximum": 1000}, "description": "At most this many (default 100)"})
    });
    Value::Array(params)
}

/// The document for `services`.
pub fn document(services: &[Arc<dyn Service>]) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    schemas.insert("Error".to_owned(), error_schema());
    if let Some(p) = operations().get("paths").and_then(Value::as_object) {
        paths.extend(p.clone());
    }
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
