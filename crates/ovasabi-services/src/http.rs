//! The HTTP API's shared parts: errors that name the field, request metadata (correlation id,
//! trace context, idempotency key), and [`Api::transact`], which runs a request's state
//! change and its events in one transaction, exactly once per `Idempotency-Key`.
//!
//! # Conventions every service follows
//!
//! - JSON in and out under `/v1/…`. An error is `{"error": {"code", "message", "field"}}`
//!   with a 4xx status when the caller can fix it (the field named when one is at fault),
//!   5xx otherwise.
//! - `X-Correlation-Id`: taken from the request or generated, returned on the response, and
//!   stamped as `correlationid` on every event the request publishes. `traceparent` (W3C):
//!   taken from the request or started; each event carries a child of it. Each request is
//!   served in an `http` span; with OpenTelemetry on it is the child of the request's
//!   `traceparent` and the parent of the request's events (see [`ovasabi_middleware::otel`]).
//! - `Idempotency-Key` on a POST: the first response is stored with the request's effects,
//!   in the same transaction; a retry with the same key and body gets the stored response
//!   (`Idempotent-Replayed: true`) and changes and publishes nothing; the same key with
//!   another body is refused (422). Keys are scoped by method and path.

use std::future::Future;
use std::pin::Pin;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use ovasabi_core::Event;
use ovasabi_events::DomainEvent;
use ovasabi_middleware::TraceParent;
use ovasabi_store::{params, Outbox, Store, StoreError, Transaction};
use serde::Serialize;
use serde_json::{json, Value};
use tracing::Instrument;

use crate::relay::RelayHandle;

/// `X-Correlation-Id`.
pub const CORRELATION_HEADER: &str = "x-correlation-id";
/// `Idempotency-Key`.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// Longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// An error answered to the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// The status.
    pub status: StatusCode,
    /// A stable code: `invalid_field`, `not_found`, `conflict`…
    pub code: &'static str,
    /// What was wrong and what to do.
    pub message: String,
    /// The request field at fault, when one is.
    pub field: Option<String>,
}

impl ApiError {
    /// 422: `field` is wrong.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid_field",
            message: message.into(),
            field: Some(field.into()),
        }
    }

    /// 404: `what` does not exist.
    pub fn not_found(what: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: format!("{} does not exist", what.into()),
            field: None,
        }
    }

    /// 409: the request conflicts with the current state (e.g. paying a cancelled order).
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::CONFLICT,
            code: "conflict",
            message: message.into(),
            field: None,
        }
    }

    /// 400 or 422 with a code of the caller's choosing.
    pub fn with(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// 500/503 for a database failure: logged in full, answered briefly.
    pub fn store(error: StoreError) -> ApiError {
        if error.is_retryable() {
            tracing::warn!(%error, "request conflicted or lost the database; the caller may retry");
            return ApiError::with(
                StatusCode::SERVICE_UNAVAILABLE,
                "retry",
                "the request conflicted with another or the database is unavailable; retry it (with the same Idempotency-Key)",
            );
        }
        tracing::error!(%error, "request failed in the database");
        ApiError::with(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the request failed in the database; see the server's log",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::store(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            json!({"error": {"code": self.code, "message": self.message, "field": self.field}});
        (self.status, Json(body)).into_response()
    }
}

/// The request body as JSON, with a 4xx naming the problem (not axum's plain-text one).
pub struct JsonBody<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for JsonBody<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(JsonBody(value)),
            Err(rejection) => {
                let text = rejection.body_text();
                // serde's messages say which field: "missing field `email` at line 1 column 2".
                let field = text
                    .split('`')
                    .nth(1)
                    .filter(|_| text.contains("field `"))
                    .map(str::to_owned);
                Err(ApiError {
                    status: if rejection.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE {
                        StatusCode::UNSUPPORTED_MEDIA_TYPE
                    } else {
                        StatusCode::UNPROCESSABLE_ENTITY
                    },
                    code: "invalid_body",
                    message: format!("the body is not the expected JSON: {text}"),
                    field,
                })
            }
        }
    }
}

/// What every request carries beyond its body.
#[derive(Clone, Debug)]
pub struct RequestMeta {
    /// The correlation id (the request's, or generated).
    pub correlation_id: String,
    /// The trace context (the request's, or a new root).
    pub traceparent: TraceParent,
    /// The idempotency key, if given.
    pub idempotency_key: Option<String>,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

impl<S: Send + Sync> FromRequestParts<S> for RequestMeta {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let headers = &parts.headers;
        let correlation_id = header(headers, CORRELATION_HEADER)
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let traceparent = parts
            .extensions
            .get::<RequestSpan>()
            .map(|span| span.0.clone())
            .or_else(|| header(headers, "traceparent").and_then(TraceParent::parse))
            .unwrap_or_else(TraceParent::new_root);
        let idempotency_key = match header(headers, IDEMPOTENCY_HEADER) {
            Some(k) if k.len() > MAX_IDEMPOTENCY_KEY => {
                return Err(ApiError {
                    status: StatusCode::BAD_REQUEST,
                    code: "invalid_header",
                    message: format!(
                        "Idempotency-Key is {} bytes; at most {MAX_IDEMPOTENCY_KEY}",
                        k.len()
                    ),
                    field: Some("Idempotency-Key".to_owned()),
                })
            }
            other => other.map(str::to_owned),
        };
        Ok(RequestMeta {
            correlation_id,
            traceparent,
            idempotency_key,
        })
    }
}

/// The OpenTelemetry context of a request's `http` span, as a `traceparent` (a request
/// extension set by [`correlation`] when OpenTelemetry is on).
#[derive(Clone, Debug)]
struct RequestSpan(TraceParent);

/// The `http` span of a request: the child of its `traceparent` header when it has a valid
/// one (see [`ovasabi_middleware::otel`]).
pub fn request_span(req: &Request) -> tracing::Span {
    let span = tracing::info_span!(
        "http",
        method = %req.method(),
        path = %req.uri().path(),
    );
    if !span.is_disabled() {
        ovasabi_middleware::otel::set_parent(&span, header(req.headers(), "traceparent"));
    }
    span
}

/// Middleware: gives a request without `X-Correlation-Id` a new one (so the handler and the
/// response agree), and returns it on the response. The request is served inside its `http`
/// span ([`request_span`]); with OpenTelemetry on, the request's trace context
/// ([`RequestMeta::traceparent`]) is that span's, so the span is the parent of the events
/// the request publishes.
pub async fn correlation(mut req: Request, next: Next) -> Response {
    let span = request_span(&req);
    if let Some(trace) = ovasabi_middleware::otel::traceparent_of(&span) {
        req.extensions_mut().insert(RequestSpan(trace));
    }
    let name = HeaderName::from_static(CORRELATION_HEADER);
    let id = match req.headers().get(&name).filter(|v| !v.is_empty()) {
        Some(v) => v.clone(),
        None => {
            let v = HeaderValue::from_str(&uuid::Uuid::now_v7().to_string())
                .expect("a UUID is a header value");
            req.headers_mut().insert(name.clone(), v.clone());
            v
        }
    };
    let mut response = next.run(req).instrument(span).await;
    response.headers_mut().insert(name, id);
    response
}

/// A request's transaction: the service's statements, and its events into the outbox.
pub struct Tx<'m> {
    tx: Transaction,
    meta: &'m RequestMeta,
    published: usize,
    publish: bool,
}

impl Tx<'_> {
    /// The database transaction.
    pub fn db(&mut self) -> &mut Transaction {
        &mut self.tx
    }

    /// Writes `payload`'s event to the outbox, published if and only if the request's
    /// transaction commits; stamped with the request's correlation id and a child of its
    /// trace context (the current span, normally the request's `http` span, when
    /// OpenTelemetry is on). Returns the event.
    pub async fn publish<E: DomainEvent>(
        &mut self,
        payload: &E,
        source: &str,
    ) -> Result<Event, ApiError> {
        let event = payload
            .to_event(source)
            .with_extension("correlationid", self.meta.correlation_id.clone())
            .with_extension(
                "traceparent",
                ovasabi_middleware::otel::caused_by(&self.meta.traceparent).to_string(),
            );
        if self.publish {
            Outbox::append(&mut self.tx, E::TOPIC, &event).await?;
            self.published += 1;
        }
        Ok(event)
    }
}

/// A channel feeding a Server-Sent Events response: a task sends the events on the sender,
/// the response streams them; once the client has gone, the sender is closed
/// (`tx.closed()` completes, sends fail).
pub fn sse_channel(
    capacity: usize,
) -> (
    tokio::sync::mpsc::Sender<axum::response::sse::Event>,
    impl futures::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>
        + Send
        + 'static,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(capacity);
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|e| (Ok::<_, std::convert::Infallible>(e), rx))
    });
    (tx, stream)
}

/// A boxed future borrowing the transaction.
pub type TxFuture<'t, T> = Pin<Box<dyn Future<Output = Result<T, ApiError>> + Send + 't>>;

/// What request handlers share: the store and the relay to wake.
#[derive(Clone, Debug)]
pub struct Api {
    /// The database.
    pub store: Store,
    /// The outbox relay.
    pub relay: RelayHandle,
    /// Whether requests' events go to the outbox (off only to measure the outbox's cost).
    pub publish: bool,
}

/// A JSON response with its status.
pub type Answer = (StatusCode, Value);

impl Api {
    /// Runs `work` in one transaction with the request's events, once per idempotency key:
    /// see the [module documentation](self). `scope` is the method and path
    /// (`POST /v1/orders/o1/pay`); `request` the parsed body (hashed to tell a retry from a
    /// reuse of the key).
    pub async fn transact<F>(
        &self,
        meta: &RequestMeta,
        scope: &str,
        request: &impl Serialize,
        work: F,
    ) -> Result<Response, ApiError>
    where
        F: for<'t, 'm> FnOnce(&'t mut Tx<'m>) -> TxFuture<'t, Answer>,
    {
        // Only a request with a key is remembered, so only its body is hashed.
        let hash = meta
            .idempotency_key
            .as_ref()
            .map(|_| request_hash(request))
            .unwrap_or_default();
        if let Some(key) = &meta.idempotency_key {
            if let Some(stored) = self.stored(scope, key, &hash).await? {
                return Ok(stored);
            }
        }
        let mut tx = Tx {
            tx: self.store.begin().await?,
            meta,
            published: 0,
            publish: self.publish,
        };
        let (status, body) = match work(&mut tx).await {
            Ok(answer) => answer,
            Err(e) => {
                let _ = tx.tx.rollback().await;
                return Err(e);
            }
        };
        if let Some(key) = &meta.idempotency_key {
            let inserted = tx
                .tx
                .execute(
                    "INSERT INTO http_idempotency (scope, idempotency_key, request_hash, status, body, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (scope, idempotency_key) DO NOTHING",
                    params![
                        scope,
                        key.as_str(),
                        hash.as_str(),
                        i64::from(status.as_u16()),
                        body.to_string(),
                        Utc::now()
                    ],
                )
                .await?;
            if inserted == 0 {
                // The same key committed meanwhile: its answer stands, ours is undone.
                let _ = tx.tx.rollback().await;
                return self.stored(scope, key, &hash).await?.ok_or_else(|| {
                    ApiError::conflict("a request with this Idempotency-Key is in progress; retry")
                });
            }
        }
        let published = tx.published;
        tx.tx.commit().await?;
        if published > 0 {
            self.relay.wake();
        }
        Ok((status, Json(body)).into_response())
    }

    async fn stored(
        &self,
        scope: &str,
        key: &str,
        hash: &str,
    ) -> Result<Option<Response>, ApiError> {
        let Some(row) = self
            .store
            .query_opt(
                "SELECT request_hash, status, body FROM http_idempotency
                 WHERE scope = $1 AND idempotency_key = $2",
                params![scope, key],
            )
            .await?
        else {
            return Ok(None);
        };
        let stored_hash: String = row.get("request_hash")?;
        if stored_hash != hash {
            return Err(ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "idempotency_key_reused",
                message: "this Idempotency-Key was used with a different request body; use a new key for a new request".to_owned(),
                field: Some("Idempotency-Key".to_owned()),
            });
        }
        let status: i64 = row.get("status")?;
        let body: String = row.get("body")?;
        let status = u16::try_from(status)
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::OK);
        let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let mut response = (status, Json(body)).into_response();
        response.headers_mut().insert(
            HeaderName::from_static("idempotent-replayed"),
            HeaderValue::from_static("true"),
        );
        Ok(Some(response))
    }
}

/// A stable hash of the request body: SHA-1 (as a UUIDv5) of its canonical JSON (object keys
/// sorted), the same in every process and release.
fn request_hash(request: &impl Serialize) -> String {
    let value = serde_json::to_value(request).unwrap_or(Value::Null);
    // serde_json's Map keeps keys sorted (no `preserve_order`), so this text is canonical.
    let text = value.to_string();
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, text.as_bytes())
        .simple()
        .to_string()
}

/// 404 for paths no service serves, in the API's error shape.
pub async fn not_found() -> ApiError {
    ApiError::with(
        StatusCode::NOT_FOUND,
        "no_route",
        "no such endpoint; GET /openapi.json lists them",
    )
}

/// `GET /healthz`: the process answers (liveness; readiness, which asks the database, the
/// bus and the outbox, is `GET /readyz`: see [`crate::metrics`]).
pub async fn healthz() -> &'static str {
    "ok"
}
