//! `webhooks`: partners' endpoints receive the platform's events as signed HTTP POSTs
//! ([Standard Webhooks 1.0](https://www.standardwebhooks.com)), retried on a schedule,
//! never reaching into our own network.
//!
//! # Partners
//!
//! A partner holds an API key (`ovk_…`, shown once when the partner is added with
//! [`add_partner`] / `ovasabi webhooks partner add NAME --permit 'order.*,payment.*'`; only
//! its SHA-256 is stored) and is permitted a set of event-type patterns. Every request
//! carries `Authorization: Bearer <key>`; a partner sees and manages only its own endpoints,
//! and an endpoint receives only the event types its partner is permitted, whatever its
//! filters say.
//!
//! | request | answer |
//! | --- | --- |
//! | `POST /v1/webhooks` `{url, filters, description?}` | 201, the endpoint with its `secret` (`whsec_…`) |
//! | `GET /v1/webhooks` | the partner's endpoints |
//! | `GET /v1/webhooks/{id}` | the endpoint, with its delivery counts |
//! | `POST /v1/webhooks/{id}/pause`, `…/resume` | the endpoint (paused: events queue; resumed: they go out) |
//! | `DELETE /v1/webhooks/{id}` | 204; its queued deliveries are dropped |
//! | `POST /v1/webhooks/{id}/rotate-secret` `{overlap?}` | the new `secret`; the old one stays valid for `overlap` (default 24h): both signatures are sent |
//! | `GET /v1/webhooks/{id}/attempts?limit=&cursor=` | each attempt: time, status, latency, error, newest first |
//! | `POST /v1/webhooks/{id}/replay?from=<RFC 3339>` | 202: the permitted events since `from` queued again (new message ids) |
//! | `GET /v1/partners/stream?after=<seq>` | live: the permitted events as Server-Sent Events, or a WebSocket when the request upgrades (see [Streams](#streams)) |
//!
//! Type patterns (`filters`, permissions): `*` is every type, `order.*` every type whose
//! first token is `order`, anything else one exact type. A filter that matches no known
//! type the partner is permitted is refused (422 naming `filters`).
//!
//! # Delivery
//!
//! - Body: the event as a structured CloudEvent (JSON, `content-type:
//!   application/cloudevents+json`). Headers `webhook-id` (the event id: stable across
//!   retries), `webhook-timestamp` (seconds), `webhook-signature` (`v1,<base64 HMAC-SHA256 of
//!   id.timestamp.body>`, one per valid secret), and the event's `traceparent`. Each attempt
//!   runs in a `webhook.deliver` span; with OpenTelemetry on it is the child of the webhooks
//!   consumer's span that queued the delivery, and the `traceparent` sent is its own.
//! - Each event is queued per matching endpoint in the same transaction that records it in
//!   the consumer's inbox: the queue is durable, a restart resumes it, nothing queued is lost.
//!   The intake keeps the active and paused endpoints in memory, with the version of
//!   `webhook_endpoints_version` they were read at; database triggers raise that version
//!   with every change to an endpoint's partner, filters or state and to a partner's
//!   permissions, whoever makes it, and each event reads it (one row) before matching.
//! - Attempts follow [`SCHEDULE`]: at once, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h
//!   after the previous failure, each delay ±20 % jitter. A request times out after 15 s;
//!   2xx is success, anything else (3xx included: redirects are not followed) a failure.
//!   `429` with `Retry-After` waits as long as it asks (at least the schedule's delay, at
//!   most 10 h). `410 Gone` disables the endpoint at once. An endpoint whose delivery fails
//!   through the whole schedule is disabled. A disabled endpoint's owner is told by
//!   `webhook.endpoint_disabled` on `webhook.events`.
//! - One delivery per endpoint is in flight at a time, and at most 32 in all: a slow or dead
//!   endpoint holds only its own slot and never delays other partners. Deliveries are
//!   claimed with a lease, so several processes can run the service.
//! - The SSRF guard ([`ovasabi_webhooks::ssrf`]) checks a URL at registration (after DNS)
//!   and again at every delivery (IP literals before the request, host names after DNS at
//!   connection time, so DNS rebinding fails). `--webhooks-allow` lists addresses allowed
//!   anyway (local development, tests); `--webhooks-allow-http` permits `http://`.
//! - Time comes from a [`Clock`], so tests drive the schedule.
//!
//! # Streams
//!
//! A partner without a public endpoint (a mini-app) can instead hold a stream:
//! `GET /v1/partners/stream`, with its API key, sends every event of a type the partner is
//! permitted (all its patterns), oldest first, then each new one as it commits.
//!
//! - The intake records every event it handles in `webhook_feed`, in the transaction that
//!   queues its deliveries, numbered by `seq` (increasing). Rows are kept
//!   [`FEED_RETENTION`] (7 days, by the service's clock) and pruned at most once a minute.
//! - Server-Sent Events by default: `id: <seq>`, `event: <event type>`, `data: <the event as a
//!   structured CloudEvent, JSON>`, after a first comment saying where the stream starts,
//!   and a keep-alive comment every 15 s. A WebSocket when the request upgrades (same path,
//!   query and key): JSON text messages `{"seq": n, "event": {…the CloudEvent…}}`.
//! - Where it starts: after `Last-Event-ID` when the request carries it (an `EventSource`
//!   reconnecting resumes by itself, even when its URL says `after=0`), else after the
//!   `after` query parameter (`after=0`: everything kept), else **now**: only events
//!   recorded from then on. A client away longer than the retention resumes from the
//!   oldest event kept (the events in between are gone; the first comment says so).
//! - Live: the intake wakes this process's streams the moment it commits, and every stream
//!   also looks every second, for events recorded by another process.
//! - Late commits: on PostgreSQL, concurrent intake transactions can commit a lower `seq`
//!   after a higher one. A stream that sees a hole (the next row's `seq` is not the last
//!   sent + 1) holds everything after it back and reads again until the missing number
//!   appears, for at most [`GAP_WAIT`] (2 s); then it moves past it for good (a rolled-back
//!   transaction leaves a permanent hole, which costs a reader that wait once).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use ovasabi_core::{Bus, Event, Ordering, StartFrom, SubscribeOptions};
use ovasabi_events::webhooks::{DisableReason, WebhookEndpointDisabled};
use ovasabi_events::DomainEvent;
use ovasabi_middleware::{HandlerError, Message};
use ovasabi_store::{inbox::Order, params, Migration, MigrationSet, Outbox, Row, Store};
use ovasabi_webhooks::signing::{self, Secret};
use ovasabi_webhooks::ssrf::{self, Policy};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::http::{Api, ApiError, RequestMeta};
use crate::live;
use crate::reactor::{Reaction, Reactor};
use crate::relay::RelayHandle;
use crate::runtime::{ConsumerSpec, Context, Service, ServiceError, Task};
use crate::users::body::Body;
use crate::users::{missing, paging};
use crate::wallet::store_failure;

/// Where this service's events come from.
pub const SOURCE: &str = "/ovasabi/webhooks";
/// The intake consumer's group, and its inbox name.
pub const GROUP: &str = "webhooks";
/// The topics whose events partners may receive.
pub const TOPICS: &str = "*.events";
/// The delay before each attempt after the first failure, then after each further one:
/// 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (the first attempt goes at once). Eight
/// attempts in all, over about 28 hours.
pub const SCHEDULE: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];
/// How long one attempt may take.
pub const TIMEOUT: Duration = Duration::from_secs(15);
/// Longest wait a `Retry-After` can ask for.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(10 * 3600);
/// How long the previous secret stays valid after a rotation, by default.
pub const DEFAULT_OVERLAP: Duration = Duration::from_secs(24 * 3600);
/// Most deliveries in flight at once, over all endpoints.
const MAX_IN_FLIGHT: usize = 32;
/// Most endpoints per partner.
const MAX_ENDPOINTS: i64 = 50;
/// How long a claimed delivery is reserved for the process that claimed it.
const LEASE: Duration = Duration::from_secs(60);
/// How long the stream feed (`webhook_feed`) keeps an event: a stream resuming from further
/// back starts at the oldest event kept.
pub const FEED_RETENTION: Duration = Duration::from_secs(7 * 86_400);
/// How long a stream waits for a missing `seq` (a transaction committing late) before it
/// moves past it for good.
pub const GAP_WAIT: Duration = Duration::from_secs(2);
/// How often the dispatcher prunes the feed, at most (by the service's clock).
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// How often a stream looks for events recorded by another process.
const STREAM_POLL: Duration = Duration::from_secs(1);
/// Feed rows read at once by a stream.
const STREAM_BATCH: i64 = 200;
/// How often an SSE stream sends a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

const MIGRATIONS: MigrationSet = MigrationSet::new(
    "webhooks",
    &[
        Migration::new(
            1,
            "webhook_partners, webhook_endpoints, webhook_deliveries, webhook_attempts",
            "CREATE TABLE webhook_partners (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            key_hash TEXT NOT NULL UNIQUE,
            permitted TEXT NOT NULL,
            created_at TIMESTAMPTZ NOT NULL
        );
        CREATE TABLE webhook_endpoints (
            id TEXT PRIMARY KEY,
            partner_id TEXT NOT NULL,
            url TEXT NOT NULL,
            description TEXT,
            filters TEXT NOT NULL,
            secret TEXT NOT NULL,
            previous_secret TEXT,
            previous_until TIMESTAMPTZ,
            state TEXT NOT NULL,
            disabled_reason TEXT,
            created_at TIMESTAMPTZ NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL
        );
        CREATE INDEX webhook_endpoints_partner ON webhook_endpoints (partner_id, id);
        CREATE TABLE webhook_deliveries (
            id TEXT PRIMARY KEY,
            endpoint_id TEXT NOT NULL,
            message_id TEXT NOT NULL,
            event_type TEXT NOT NULL,
            body TEXT NOT NULL,
            traceparent TEXT,
            status TEXT NOT NULL,
            attempts BIGINT NOT NULL,
            next_at TIMESTAMPTZ NOT NULL,
            lease_until TIMESTAMPTZ,
            last_error TEXT,
            created_at TIMESTAMPTZ NOT NULL,
            finished_at TIMESTAMPTZ,
            UNIQUE (endpoint_id, message_id)
        );
        CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_at);
        CREATE TABLE webhook_attempts (
            id TEXT PRIMARY KEY,
            delivery_id TEXT NOT NULL,
            endpoint_id TEXT NOT NULL,
            message_id TEXT NOT NULL,
            attempt BIGINT NOT NULL,
            at TIMESTAMPTZ NOT NULL,
            status_code BIGINT,
            latency_ms BIGINT NOT NULL,
            error TEXT
        );
        CREATE INDEX webhook_attempts_endpoint ON webhook_attempts (endpoint_id, id);",
        ),
        Migration::per_backend(
            2,
            "webhook_feed",
            "CREATE TABLE webhook_feed (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            event_id TEXT NOT NULL UNIQUE,
            event_type TEXT NOT NULL,
            body TEXT NOT NULL,
            at TIMESTAMPTZ NOT NULL
        );
        CREATE INDEX webhook_feed_at ON webhook_feed (at);",
            "CREATE TABLE webhook_feed (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            event_id TEXT NOT NULL UNIQUE,
            event_type TEXT NOT NULL,
            body TEXT NOT NULL,
            at TIMESTAMPTZ NOT NULL
        );
        CREATE INDEX webhook_feed_at ON webhook_feed (at);",
        ),
        Migration::per_backend(
            3,
            "webhook_endpoints_version",
            "CREATE TABLE webhook_endpoints_version (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            version BIGINT NOT NULL
        );
        INSERT INTO webhook_endpoints_version (id, version) VALUES (1, 0);
        CREATE TRIGGER webhook_endpoints_inserted AFTER INSERT ON webhook_endpoints
        BEGIN UPDATE webhook_endpoints_version SET version = version + 1 WHERE id = 1; END;
        CREATE TRIGGER webhook_endpoints_deleted AFTER DELETE ON webhook_endpoints
        BEGIN UPDATE webhook_endpoints_version SET version = version + 1 WHERE id = 1; END;
        CREATE TRIGGER webhook_endpoints_updated
        AFTER UPDATE OF partner_id, filters, state ON webhook_endpoints
        BEGIN UPDATE webhook_endpoints_version SET version = version + 1 WHERE id = 1; END;
        CREATE TRIGGER webhook_partners_deleted AFTER DELETE ON webhook_partners
        BEGIN UPDATE webhook_endpoints_version SET version = version + 1 WHERE id = 1; END;
        CREATE TRIGGER webhook_partners_updated AFTER UPDATE OF permitted ON webhook_partners
        BEGIN UPDATE webhook_endpoints_version SET version = version + 1 WHERE id = 1; END;",
            "CREATE TABLE webhook_endpoints_version (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            version BIGINT NOT NULL
        );
        INSERT INTO webhook_endpoints_version (id, version) VALUES (1, 0);
        CREATE FUNCTION webhook_endpoints_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE webhook_endpoints_version SET version = version + 1 WHERE id = 1;
            RETURN NULL;
        END
        $$;
        CREATE TRIGGER webhook_endpoints_changed
        AFTER INSERT OR DELETE OR UPDATE OF partner_id, filters, state ON webhook_endpoints
        FOR EACH STATEMENT EXECUTE FUNCTION webhook_endpoints_changed();
        CREATE TRIGGER webhook_partners_changed
        AFTER DELETE OR UPDATE OF permitted ON webhook_partners
        FOR EACH STATEMENT EXECUTE FUNCTION webhook_endpoints_changed();",
        ),
    ],
);

// ---------------------------------------------------------------------------------------
// Time

/// Where the service reads the time: the system clock, or a clock a test moves.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that stands still until moved ([`ManualClock::advance`]).
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    /// A clock showing `at`.
    pub fn new(at: DateTime<Utc>) -> Self {
        ManualClock(Mutex::new(at))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *now += chrono::Duration::from_std(by).unwrap_or_default();
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn later(at: DateTime<Utc>, by: Duration) -> DateTime<Utc> {
    at + chrono::Duration::from_std(by).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// The service

/// The `webhooks` service.
#[derive(Clone, Debug)]
pub struct WebhooksService {
    clock: Arc<dyn Clock>,
    policy: Policy,
    jitter: bool,
    wake: Arc<Notify>,
    /// Wakes this process's partner streams after the intake commits.
    streams: Arc<Notify>,
}

impl Default for WebhooksService {
    fn default() -> Self {
        WebhooksService::new(Policy::default())
    }
}

impl WebhooksService {
    /// The service with the SSRF `policy`, the system clock and jittered retries.
    pub fn new(policy: Policy) -> Self {
        WebhooksService {
            clock: Arc::new(SystemClock),
            policy,
            jitter: true,
            wake: Arc::new(Notify::new()),
            streams: Arc::new(Notify::new()),
        }
    }

    /// Reads the time from `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Retries exactly on [`SCHEDULE`], without jitter (for tests that check the schedule).
    pub fn without_jitter(mut self) -> Self {
        self.jitter = false;
        self
    }
}

impl Service for WebhooksService {
    fn name(&self) -> &'static str {
        "webhooks"
    }

    fn about(&self) -> &'static str {
        "partners' endpoints receive events as signed webhooks, retried, behind an SSRF guard"
    }

    fn migrations(&self) -> MigrationSet {
        MIGRATIONS
    }

    fn consumers(&self, ctx: &Context) -> Result<Vec<ConsumerSpec>, ServiceError> {
        Ok(vec![ctx.consumer(
            "webhooks",
            GROUP,
            &[TOPICS.to_owned()],
            Ordering::None,
            Arc::new(Reactor::new(
                GROUP,
                Order::Unordered,
                ctx.store.clone(),
                Intake {
                    clock: self.clock.clone(),
                    wake: self.wake.clone(),
                    streams: self.streams.clone(),
                    endpoints: Mutex::default(),
                },
            )),
        )?])
    }

    fn routes(&self, ctx: &Context) -> Option<Router> {
        let shared = Shared {
            api: ctx.api.clone(),
            bus: ctx.bus.clone(),
            clock: self.clock.clone(),
            policy: self.policy.clone(),
            wake: self.wake.clone(),
            streams: self.streams.clone(),
        };
        Some(
            Router::new()
                .route("/v1/webhooks", post(create).get(list))
                .route("/v1/webhooks/{id}", get(show).delete(remove))
                .route("/v1/webhooks/{id}/pause", post(pause))
                .route("/v1/webhooks/{id}/resume", post(resume))
                .route("/v1/webhooks/{id}/rotate-secret", post(rotate))
                .route("/v1/webhooks/{id}/attempts", get(attempts))
                .route("/v1/webhooks/{id}/replay", post(replay))
                .route("/v1/partners/stream", get(stream))
                .with_state(shared),
        )
    }

    fn openapi(&self) -> Value {
        openapi()
    }

    fn tasks(&self, ctx: &Context, stop: CancellationToken) -> Vec<Task> {
        vec![Box::pin(run_dispatcher(Dispatcher {
            store: ctx.store.clone(),
            relay: ctx.api.relay.clone(),
            clock: self.clock.clone(),
            policy: self.policy.clone(),
            jitter: self.jitter,
            wake: self.wake.clone(),
            stop,
        }))]
    }
}

#[derive(Clone)]
struct Shared {
    api: Api,
    bus: Arc<dyn Bus>,
    clock: Arc<dyn Clock>,
    policy: Policy,
    wake: Arc<Notify>,
    streams: Arc<Notify>,
}

// ---------------------------------------------------------------------------------------
// Partners

/// A partner, as [`add_partner`] and [`partners`] give it.
#[derive(Clone, Debug, Serialize)]
pub struct Partner {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The event-type patterns it is permitted.
    pub permitted: Vec<String>,
    /// When it was added.
    pub created_at: DateTime<Utc>,
}

fn key_hash(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks a type pattern: `*`, `<token>.*`, or an event type.
fn check_pattern(pattern: &str) -> Result<(), String> {
    let token_ok = |t: &str| {
        !t.is_empty()
            && t.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    let ok = pattern == "*"
        || match pattern.split_once('.') {
            Some((first, "*")) => token_ok(first),
            Some((first, rest)) => token_ok(first) && rest.split('.').all(token_ok),
            None => false,
        };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{pattern}` is not an event-type pattern: use `*`, `order.*` or a type such as `order.placed`"
        ))
    }
}

/// Whether the type pattern `pattern` matches event type `ty`.
pub fn type_matches(pattern: &str, ty: &str) -> bool {
    match pattern.strip_suffix(".*") {
        _ if pattern == "*" => true,
        Some(prefix) => ty.split_once('.').is_some_and(|(first, _)| first == prefix),
        None => pattern == ty,
    }
}

/// Adds a partner permitted the event types matching `permit`; the partner and its API key,
/// which is not stored (only its SHA-256) and cannot be shown again.
pub async fn add_partner(
    store: &Store,
    name: &str,
    permit: &[String],
) -> Result<(Partner, String), String> {
    let name = name.trim();
    if name.is_empty() || name.len() > 100 || name.contains(char::is_control) {
        return Err("a partner's name has 1 to 100 characters, no control characters".to_owned());
    }
    if permit.is_empty() {
        return Err(
            "name the event types the partner may receive, e.g. --permit 'order.*,payment.*'"
                .to_owned(),
        );
    }
    for p in permit {
        check_pattern(p)?;
    }
    let key = format!("ovk_{}", uuid::Uuid::new_v4().simple());
    let partner = Partner {
        id: uuid::Uuid::now_v7().to_string(),
        name: name.to_owned(),
        permitted: permit.to_vec(),
        created_at: Utc::now(),
    };
    let inserted = store
        .execute(
            "INSERT INTO webhook_partners (id, name, key_hash, permitted, created_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
            params![
                partner.id.as_str(),
                partner.name.as_str(),
                key_hash(&key),
                json!(partner.permitted).to_string(),
                partner.created_at
            ],
        )
        .await
        .map_err(|e| format!("webhooks database: {e}"))?;
    if inserted == 0 {
        return Err(format!("a partner named `{name}` exists already"));
    }
    Ok((partner, key))
}

/// Every partner, by name.
pub async fn partners(store: &Store) -> Result<Vec<Partner>, String> {
    let rows = store
        .query(
            "SELECT id, name, permitted, created_at FROM webhook_partners ORDER BY name",
            &[],
        )
        .await
        .map_err(|e| format!("webhooks database: {e}"))?;
    rows.iter()
        .map(|row| partner_of_row(row).map_err(|e| e.message))
        .collect()
}

/// Every partner's endpoints (as `GET /v1/webhooks/{id}` shows one, with `partner` the
/// partner's name), by partner then id: for operators.
pub async fn endpoints(store: &Store) -> Result<Vec<Value>, String> {
    let rows = store
        .query(
            &format!(
                "SELECT p.name AS partner, {} FROM webhook_endpoints e
                 JOIN webhook_partners p ON p.id = e.partner_id ORDER BY p.name, e.id",
                ENDPOINT_COLUMNS
                    .split(", ")
                    .map(|c| format!("e.{c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            &[],
        )
        .await
        .map_err(|e| format!("webhooks database: {e}"))?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut endpoint = endpoint_json(store, row).await.map_err(|e| e.message)?;
        endpoint["partner"] = json!(row.get::<String>("partner").map_err(|e| e.to_string())?);
        out.push(endpoint);
    }
    Ok(out)
}

/// Endpoint `endpoint_id`'s latest `limit` attempts, newest first (as
/// `GET /v1/webhooks/{id}/attempts` shows them): for operators.
pub async fn recent_attempts(
    store: &Store,
    endpoint_id: &str,
    limit: i64,
) -> Result<Vec<Value>, String> {
    let rows = store
        .query(
            "SELECT id, delivery_id, message_id, attempt, at, status_code, latency_ms, error
             FROM webhook_attempts WHERE endpoint_id = $1 ORDER BY id DESC LIMIT $2",
            params![endpoint_id, limit],
        )
        .await
        .map_err(|e| format!("webhooks database: {e}"))?;
    rows.iter()
        .map(|row| attempt_json(row).map_err(|e| e.message))
        .collect()
}

fn attempt_json(row: &Row) -> Result<Value, ApiError> {
    Ok(json!({
        "id": row.get::<String>("id")?,
        "delivery_id": row.get::<String>("delivery_id")?,
        "message_id": row.get::<String>("message_id")?,
        "attempt": row.get::<i64>("attempt")?,
        "at": row.get::<DateTime<Utc>>("at")?,
        "status_code": row.get::<Option<i64>>("status_code")?,
        "latency_ms": row.get::<i64>("latency_ms")?,
        "error": row.get::<Option<String>>("error")?,
    }))
}

fn partner_of_row(row: &Row) -> Result<Partner, ApiError> {
    let permitted: String = row.get("permitted")?;
    Ok(Partner {
        id: row.get("id")?,
        name: row.get("name")?,
        permitted: serde_json::from_str(&permitted).unwrap_or_default(),
        created_at: row.get("created_at")?,
    })
}

/// The partner whose API key the request carries.
async fn authenticate(store: &Store, headers: &HeaderMap) -> Result<Partner, ApiError> {
    let unauthorized = |message: &str| {
        ApiError::with(StatusCode::UNAUTHORIZED, "unauthorized", message.to_owned())
    };
    let key = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            unauthorized("send the partner's API key as `Authorization: Bearer ovk_…`")
        })?;
    let row = store
        .query_opt(
            "SELECT id, name, permitted, created_at FROM webhook_partners WHERE key_hash = $1",
            params![key_hash(key)],
        )
        .await?
        .ok_or_else(|| {
            unauthorized("this API key belongs to no partner: check it, or ask for a new one")
        })?;
    partner_of_row(&row)
}

// ---------------------------------------------------------------------------------------
// Endpoints over HTTP

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    url: String,
    filters: Vec<String>,
    #[serde(default)]
    description: Option<String>,
}

fn check_filters(partner: &Partner, filters: &[String]) -> Result<(), ApiError> {
    if filters.is_empty() || filters.len() > 50 {
        return Err(ApiError::invalid(
            "filters",
            "give 1 to 50 event-type patterns, e.g. [\"order.*\"]",
        ));
    }
    let known: Vec<&'static str> = ovasabi_events::all_types().iter().map(|t| t.ty).collect();
    for filter in filters {
        check_pattern(filter).map_err(|e| ApiError::invalid("filters", e))?;
        let reachable = known.iter().any(|ty| {
            type_matches(filter, ty) && partner.permitted.iter().any(|p| type_matches(p, ty))
        });
        if !reachable {
            return Err(ApiError::invalid(
                "filters",
                format!(
                    "`{filter}` matches no event type this partner may receive (it may receive {})",
                    partner.permitted.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// The partner's endpoint `id`, or 404.
async fn endpoint_row(api: &Api, partner: &Partner, id: &str) -> Result<Row, ApiError> {
    api.store
        .query_opt(
            &format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1 AND partner_id = $2"),
            params![id, partner.id.as_str()],
        )
        .await?
        .ok_or_else(|| missing("id", format!("a webhook endpoint {id} of this partner")))
}

const ENDPOINT_COLUMNS: &str =
    "id, url, description, filters, state, disabled_reason, created_at, updated_at";

async fn endpoint_json(store: &Store, row: &Row) -> Result<Value, ApiError> {
    let id: String = row.get("id")?;
    let filters: String = row.get("filters")?;
    let counts = store
        .query(
            "SELECT status, COUNT(*) AS n FROM webhook_deliveries WHERE endpoint_id = $1 GROUP BY status",
            params![id.as_str()],
        )
        .await?;
    let mut stats = json!({"pending": 0, "delivered": 0, "failed": 0});
    for c in &counts {
        let status: String = c.get("status")?;
        stats[status] = json!(c.get::<i64>("n")?);
    }
    let last = store
        .query_opt(
            "SELECT at, status_code, latency_ms, error FROM webhook_attempts
             WHERE endpoint_id = $1 ORDER BY id DESC LIMIT 1",
            params![id.as_str()],
        )
        .await?;
    if let Some(last) = last {
        stats["last_attempt"] = json!({
            "at": last.get::<DateTime<Utc>>("at")?,
            "status_code": last.get::<Option<i64>>("status_code")?,
            "latency_ms": last.get::<i64>("latency_ms")?,
            "error": last.get::<Option<String>>("error")?,
        });
    }
    Ok(json!({
        "id": id,
        "url": row.get::<String>("url")?,
        "description": row.get::<Option<String>>("description")?,
        "filters": serde_json::from_str::<Value>(&filters).unwrap_or(Value::Null),
        "state": row.get::<String>("state")?,
        "disabled_reason": row.get::<Option<String>>("disabled_reason")?,
        "created_at": row.get::<DateTime<Utc>>("created_at")?,
        "updated_at": row.get::<DateTime<Utc>>("updated_at")?,
        "deliveries": stats,
    }))
}

/// Checks `url` for registration: the SSRF guard, after DNS.
async fn check_target(policy: &Policy, url: &str) -> Result<String, ApiError> {
    let parsed =
        ssrf::check_url(url, policy).map_err(|e| ApiError::invalid("url", e.to_string()))?;
    ssrf::resolve(&parsed, policy)
        .await
        .map_err(|e| ApiError::invalid("url", e.to_string()))?;
    Ok(parsed.to_string())
}

async fn create(
    State(s): State<Shared>,
    headers: HeaderMap,
    meta: RequestMeta,
    Body(input): Body<CreateRequest>,
) -> Result<Response, ApiError> {
    let partner = authenticate(&s.api.store, &headers).await?;
    check_filters(&partner, &input.filters)?;
    let description = input
        .description
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(str::to_owned);
    if description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 500)
    {
        return Err(ApiError::invalid("description", "at most 500 characters"));
    }
    let url = check_target(&s.policy, &input.url).await?;
    let scope = format!("POST /v1/webhooks by {}", partner.id);
    let now = s.clock.now();
    let filters = json!(input.filters).to_string();
    s.api
        .transact(&meta, &scope, &input, move |tx| {
            Box::pin(async move {
                let count: i64 = tx
                    .db()
                    .query_one(
                        "SELECT COUNT(*) AS n FROM webhook_endpoints WHERE partner_id = $1",
                        params![partner.id.as_str()],
                    )
                    .await?
                    .get("n")?;
                if count >= MAX_ENDPOINTS {
                    return Err(ApiError::conflict(format!(
                    "this partner has {count} endpoints, the most there may be: delete one first"
                )));
                }
                let id = uuid::Uuid::now_v7().to_string();
                let secret = Secret::generate();
                tx.db()
                    .execute(
                        "INSERT INTO webhook_endpoints (id, partner_id, url, description, filters,
                         secret, state, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, 'active', $7, $7)",
                        params![
                            id.as_str(),
                            partner.id.as_str(),
                            url.as_str(),
                            description.as_deref(),
                            filters.as_str(),
                            secret.to_string(),
                            now
                        ],
                    )
                    .await?;
                Ok((
                    StatusCode::CREATED,
                    json!({
                        "id": id, "url": url, "description": description,
                        "filters": serde_json::from_str::<Value>(&filters).unwrap_or(Value::Null),
                        "state": "active", "secret": secret.to_string(), "created_at": now,
                    }),
                ))
            })
        })
        .await
}

async fn list(State(s): State<Shared>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let partner = authenticate(&s.api.store, &headers).await?;
    let rows = s
        .api
        .store
        .query(
            &format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE partner_id = $1 ORDER BY id"),
            params![partner.id.as_str()],
        )
        .await?;
    let mut items = Vec::with_capacity(rows.len());
    for row in &rows {
        items.push(endpoint_json(&s.api.store, row).await?);
    }
    Ok(Json(json!({ "items": items })))
}

async fn show(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let partner = authenticate(&s.api.store, &headers).await?;
    let row = endpoint_row(&s.api, &partner, &id).await?;
    Ok(Json(endpoint_json(&s.api.store, &row).await?))
}

/// Sets the endpoint's state (pause, resume: a disabled endpoint comes back by resuming).
async fn set_state(
    s: &Shared,
    headers: &HeaderMap,
    id: &str,
    state: &str,
) -> Result<Json<Value>, ApiError> {
    let partner = authenticate(&s.api.store, headers).await?;
    endpoint_row(&s.api, &partner, id).await?;
    set_endpoint_state(&s.api.store, id, state, s.clock.now()).await?;
    s.wake.notify_one();
    let row = endpoint_row(&s.api, &partner, id).await?;
    Ok(Json(endpoint_json(&s.api.store, &row).await?))
}

/// Sets endpoint `id`'s state: `paused` (events queue for it), or `active` (deliveries
/// resume; for a disabled endpoint, the deliveries that failed for good go out again, their
/// schedule restarted). 404 naming `id` when there is no such endpoint.
pub async fn set_endpoint_state(
    store: &Store,
    id: &str,
    state: &str,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    let changed = store
        .execute(
            "UPDATE webhook_endpoints SET state = $2, disabled_reason = NULL, updated_at = $3 WHERE id = $1",
            params![id, state, now],
        )
        .await?;
    if changed == 0 {
        return Err(missing("id", format!("a webhook endpoint {id}")));
    }
    if state == "active" {
        // What failed for good while it was disabled goes out again.
        store
            .execute(
                "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_at = $2
                 WHERE endpoint_id = $1 AND status = 'failed'",
                params![id, now],
            )
            .await?;
    }
    Ok(())
}

async fn pause(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_state(&s, &headers, &id, "paused").await
}

async fn resume(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_state(&s, &headers, &id, "active").await
}

async fn remove(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let partner = authenticate(&s.api.store, &headers).await?;
    endpoint_row(&s.api, &partner, &id).await?;
    let mut tx = s.api.store.begin().await?;
    tx.execute(
        "DELETE FROM webhook_endpoints WHERE id = $1",
        params![id.as_str()],
    )
    .await?;
    tx.execute(
        "DELETE FROM webhook_deliveries WHERE endpoint_id = $1 AND status = 'pending'",
        params![id.as_str()],
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RotateRequest {
    #[serde(default)]
    overlap: Option<String>,
}

/// Parses `90s`, `30m`, `24h`, `0`.
fn parse_overlap(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    (secs <= 7 * 86_400).then_some(Duration::from_secs(secs))
}

async fn rotate(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let partner = authenticate(&s.api.store, &headers).await?;
    endpoint_row(&s.api, &partner, &id).await?;
    let request: RotateRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RotateRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::invalid(
                "overlap",
                format!("the body is not `{{\"overlap\": \"24h\"}}`: {e}"),
            )
        })?
    };
    let overlap = match request.overlap.as_deref() {
        None => DEFAULT_OVERLAP,
        Some(text) => parse_overlap(text).ok_or_else(|| {
            ApiError::invalid(
                "overlap",
                format!("`{text}` is not an overlap: give a duration up to 7d, such as 30m or 24h, or 0 to drop the old secret at once"),
            )
        })?,
    };
    let now = s.clock.now();
    let secret = Secret::generate();
    s.api
        .store
        .execute(
            "UPDATE webhook_endpoints SET previous_secret = secret, previous_until = $2,
                 secret = $3, updated_at = $4 WHERE id = $1",
            params![id.as_str(), later(now, overlap), secret.to_string(), now],
        )
        .await?;
    Ok(Json(json!({
        "id": id, "secret": secret.to_string(),
        "previous_secret_valid_until": later(now, overlap),
    })))
}

async fn attempts(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let partner = authenticate(&s.api.store, &headers).await?;
    endpoint_row(&s.api, &partner, &id).await?;
    let query = paging::query(query, &["limit", "cursor"])?;
    let page = paging::request(&query)?;
    const COLUMNS: &str =
        "id, delivery_id, message_id, attempt, at, status_code, latency_ms, error";
    let rows = match &page.after {
        None => {
            s.api
                .store
                .query(
                    &format!("SELECT {COLUMNS} FROM webhook_attempts WHERE endpoint_id = $1 ORDER BY id DESC LIMIT $2"),
                    params![id.as_str(), page.fetch()],
                )
                .await?
        }
        Some(after) => {
            s.api
                .store
                .query(
                    &format!("SELECT {COLUMNS} FROM webhook_attempts WHERE endpoint_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"),
                    params![id.as_str(), after.as_str(), page.fetch()],
                )
                .await?
        }
    };
    let items = rows
        .iter()
        .map(|row| Ok((row.get::<String>("id")?, attempt_json(row)?)))
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(Json(paging::answer(&page, items)))
}

/// `POST /v1/webhooks/{id}/replay?from=`: the events since `from` on the platform's topics
/// that the endpoint would receive, queued again with new message ids
/// (`<event id>.replay-<replay id>`, so receivers that drop repeated ids take them).
async fn replay(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let partner = authenticate(&s.api.store, &headers).await?;
    endpoint_row(&s.api, &partner, &id).await?;
    let query = query
        .map_err(|e| ApiError::invalid("from", e.body_text()))?
        .0;
    let from = query
        .get("from")
        .and_then(|f| parse_time(f))
        .ok_or_else(|| {
            ApiError::invalid(
                "from",
                "give the time to replay from, RFC 3339 (2026-11-27T10:00:00Z)",
            )
        })?;
    let replayed = replay_endpoint(&s.api.store, &s.bus, &id, from, s.clock.now()).await?;
    s.wake.notify_one();
    Ok((StatusCode::ACCEPTED, Json(json!(replayed))).into_response())
}

/// An RFC 3339 time; a `+` of the offset that arrived as a space (an unencoded query) is
/// read as the `+` it was.
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(&text.trim().replace(' ', "+"))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// What a replay did.
#[derive(Clone, Debug, Serialize)]
pub struct Replayed {
    /// Its id, in the replayed messages' ids (`<event id>.replay-<replay id>`).
    pub replay_id: String,
    /// Where it started.
    pub from: DateTime<Utc>,
    /// Events read from the log.
    pub read: u64,
    /// Deliveries queued: the events the endpoint would receive.
    pub queued: u64,
}

/// Queues again, for endpoint `endpoint_id`, the events since `from` on the platform's
/// topics that it would receive (its filters and its partner's permissions), under new
/// message ids (`<event id>.replay-<replay id>`, so receivers that drop repeated ids take
/// them). Reads the log until it goes quiet for half a second (at most 100,000 events).
pub async fn replay_endpoint(
    store: &Store,
    bus: &Arc<dyn Bus>,
    endpoint_id: &str,
    from: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Replayed, ApiError> {
    let row = store
        .query_opt(
            "SELECT e.id, e.filters, p.permitted FROM webhook_endpoints e
             JOIN webhook_partners p ON p.id = e.partner_id WHERE e.id = $1",
            params![endpoint_id],
        )
        .await?
        .ok_or_else(|| missing("id", format!("a webhook endpoint {endpoint_id}")))?;
    let receiver = Receiver::from_row(&row)?;
    let replay_id = uuid::Uuid::now_v7().simple().to_string();
    let topics: Vec<String> = {
        let mut t: Vec<String> = ovasabi_events::all_types()
            .iter()
            .map(|t| t.topic.to_owned())
            .collect();
        t.sort();
        t.dedup();
        t
    };
    let options = SubscribeOptions::new(format!("webhooks-replay-{replay_id}"), topics)
        .map_err(|e| ApiError::with(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .start(StartFrom::Time(from))
        .ephemeral(true);
    let mut sub = bus.subscribe(options).await.map_err(|e| {
        ApiError::with(
            StatusCode::SERVICE_UNAVAILABLE,
            "bus_unavailable",
            e.to_string(),
        )
    })?;
    let mut queued = 0u64;
    let mut read = 0u64;
    // The log up to now: read until it goes quiet (bounded).
    while read < 100_000 {
        let next = tokio::time::timeout(Duration::from_millis(500), sub.next()).await;
        let Ok(Some(Ok(delivery))) = next else { break };
        read += 1;
        let event = delivery.event().clone();
        let _ = delivery.ack().await;
        if !receiver.wants(&event.ty) {
            continue;
        }
        let message_id = format!("{}.replay-{replay_id}", event.id);
        queued += enqueue(store, endpoint_id, &message_id, &event, now).await?;
    }
    sub.close().await;
    Ok(Replayed {
        replay_id,
        from,
        read,
        queued,
    })
}

/// Queues `event` for endpoint `endpoint_id` as message `message_id`; 1 if it was new.
async fn enqueue(
    store: &Store,
    endpoint_id: &str,
    message_id: &str,
    event: &Event,
    now: DateTime<Utc>,
) -> Result<u64, ApiError> {
    Ok(store
        .execute(
            INSERT_DELIVERY,
            &delivery_params(endpoint_id, message_id, event, now),
        )
        .await?)
}

const INSERT_DELIVERY: &str = "INSERT INTO webhook_deliveries (id, endpoint_id, message_id,
        event_type, body, traceparent, status, attempts, next_at, created_at)
     VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $7)
     ON CONFLICT (endpoint_id, message_id) DO NOTHING";

/// The `traceparent` a delivery of `event` is queued with: the current span's (the webhooks
/// consumer's `delivery` span) when OpenTelemetry is on and it is in the event's trace, so the
/// `webhook.deliver` spans are its children; the event's own otherwise.
fn queued_traceparent(event: &Event) -> Option<String> {
    let trace = event.traceparent()?;
    Some(
        ovasabi_middleware::TraceParent::parse(trace)
            .and_then(|parent| ovasabi_middleware::otel::current_in(&parent))
            .map_or_else(|| trace.to_owned(), |current| current.to_string()),
    )
}

fn delivery_params(
    endpoint_id: &str,
    message_id: &str,
    event: &Event,
    now: DateTime<Utc>,
) -> Vec<ovasabi_store::Value> {
    params![
        uuid::Uuid::now_v7().to_string(),
        endpoint_id,
        message_id,
        event.ty.as_str(),
        ovasabi_core::format::json::to_json_string(event),
        queued_traceparent(event),
        now
    ]
    .to_vec()
}

// ---------------------------------------------------------------------------------------
// Streams: the permitted events, live, over SSE or a WebSocket

/// `GET /v1/partners/stream?after=`: Server-Sent Events, or a WebSocket on upgrade.
async fn stream(State(s): State<Shared>, request: Request) -> Result<Response, ApiError> {
    let (mut parts, _body) = request.into_parts();
    let partner = authenticate(&s.api.store, &parts.headers).await?;
    let query: Result<Query<HashMap<String, String>>, QueryRejection> =
        Query::from_request_parts(&mut parts, &s).await;
    let query = paging::query(query, &["after"])?;
    let (after, note) = stream_start(&s.api.store, query.get("after"), &parts.headers).await?;
    let feed = PartnerFeed {
        store: s.api.store.clone(),
        streams: s.streams.clone(),
        partner: partner.id,
        permitted: partner.permitted,
        after,
        gap: None,
    };
    if let Some(ws) = live::upgrade(&mut parts, &s).await? {
        return Ok(ws.on_upgrade(move |socket| {
            live::websocket(feed, socket, |item: FeedItem| {
                let event =
                    serde_json::from_str::<Value>(&item.body).unwrap_or(Value::String(item.body));
                json!({"seq": item.seq, "event": event}).to_string()
            })
        }));
    }
    let events = live::sse(
        feed,
        Some(SseEvent::default().comment(note)),
        |item: FeedItem| {
            SseEvent::default()
                .id(item.seq.to_string())
                .event(item.ty)
                .data(item.body)
        },
    );
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// Where a stream starts (the `seq` after which it sends), and the comment saying so:
/// `Last-Event-ID`, else `after`, else now; never before the oldest event kept.
async fn stream_start(
    store: &Store,
    after: Option<&String>,
    headers: &HeaderMap,
) -> Result<(i64, String), ApiError> {
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let asked = match (last_event_id, after.map(|a| a.trim())) {
        (Some(text), _) => Some((text, "Last-Event-ID")),
        (None, Some(text)) if !text.is_empty() => Some((text, "after")),
        _ => None,
    };
    let asked = asked
        .map(|(text, field)| {
            text.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                ApiError::invalid(
                    field,
                    format!("`{text}` is not a stream position: give the `seq` (SSE `id`) of the last event seen, or 0 for every event kept"),
                )
            })
        })
        .transpose()?;
    let bounds = store
        .query_one(
            "SELECT MIN(seq) AS oldest, MAX(seq) AS newest FROM webhook_feed",
            &[],
        )
        .await?;
    let oldest: Option<i64> = bounds.get("oldest")?;
    let newest: Option<i64> = bounds.get("newest")?;
    let days = FEED_RETENTION.as_secs() / 86_400;
    Ok(match asked {
        None => {
            let after = newest.unwrap_or(0);
            (
                after,
                format!("new events only, after seq {after}; resume with Last-Event-ID or ?after=<seq> (events are kept {days} days)"),
            )
        }
        Some(after) => match oldest {
            Some(oldest) if after < oldest - 1 => (
                oldest - 1,
                format!("after seq {after} asked, but events are kept {days} days: starting from the oldest kept, seq {oldest}"),
            ),
            _ => (after, format!("after seq {after} (events are kept {days} days)")),
        },
    })
}

/// One event of a partner stream.
struct FeedItem {
    seq: i64,
    ty: String,
    body: String,
}

/// A partner's permitted events from a point on, as they commit.
struct PartnerFeed {
    store: Store,
    streams: Arc<Notify>,
    partner: String,
    permitted: Vec<String>,
    /// The last `seq` passed (sent, or not permitted).
    after: i64,
    /// A hole right after `.0` (`after` when it was seen), waited for until `.1`.
    gap: Option<(i64, std::time::Instant)>,
}

#[async_trait]
impl live::Feed for PartnerFeed {
    type Item = FeedItem;
    const RETRY: Duration = STREAM_POLL;

    fn describe(&self) -> String {
        format!("partner stream of {}", self.partner)
    }

    /// The next permitted events after the last passed, waiting for one if there are none.
    async fn next_batch(&mut self) -> Result<Vec<FeedItem>, ApiError> {
        loop {
            let woken = self.streams.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let rows = self
                .store
                .query(
                    "SELECT seq, event_type, body FROM webhook_feed WHERE seq > $1
                     ORDER BY seq LIMIT $2",
                    params![self.after, STREAM_BATCH],
                )
                .await?;
            let mut out = Vec::new();
            let mut moved = false;
            for row in &rows {
                let seq: i64 = row.get("seq")?;
                if seq != self.after + 1 {
                    // A hole: a transaction may still commit the missing number (PostgreSQL
                    // commits concurrent intakes in any order). Hold on until GAP_WAIT.
                    match self.gap {
                        Some((at, until)) if at == self.after => {
                            if std::time::Instant::now() < until {
                                break;
                            }
                            tracing::debug!(
                                partner = %self.partner,
                                "partner stream: seq {}..{} never committed; moving on",
                                self.after + 1,
                                seq - 1
                            );
                        }
                        _ => {
                            self.gap = Some((self.after, std::time::Instant::now() + GAP_WAIT));
                            break;
                        }
                    }
                }
                self.after = seq;
                self.gap = None;
                moved = true;
                let ty: String = row.get("event_type")?;
                if self.permitted.iter().any(|p| type_matches(p, &ty)) {
                    out.push(FeedItem {
                        seq,
                        ty,
                        body: row.get("body")?,
                    });
                }
            }
            if !out.is_empty() {
                return Ok(out);
            }
            if moved {
                continue;
            }
            let wait = match self.gap {
                Some((_, until)) => until
                    .saturating_duration_since(std::time::Instant::now())
                    .min(STREAM_POLL),
                None => STREAM_POLL,
            };
            tokio::select! {
                _ = &mut woken => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Intake: events queued per matching endpoint

struct Intake {
    clock: Arc<dyn Clock>,
    wake: Arc<Notify>,
    streams: Arc<Notify>,
    /// The endpoints that may receive events, as of a version of
    /// `webhook_endpoints_version` (which triggers raise on every change of an endpoint's
    /// partner, filters or state, and of a partner's permissions, by any process).
    endpoints: Mutex<Option<(i64, Arc<[Receiver]>)>>,
}

/// An endpoint, and what it may receive: its filters and its partner's permissions.
struct Receiver {
    id: String,
    filters: Vec<String>,
    permitted: Vec<String>,
}

impl Receiver {
    /// From a row of `e.id, e.filters, p.permitted` (endpoint joined with its partner).
    fn from_row(row: &Row) -> Result<Receiver, ovasabi_store::StoreError> {
        Ok(Receiver {
            id: row.get("id")?,
            filters: serde_json::from_str(&row.get::<String>("filters")?).unwrap_or_default(),
            permitted: serde_json::from_str(&row.get::<String>("permitted")?).unwrap_or_default(),
        })
    }

    /// Whether events of type `ty` go to it.
    fn wants(&self, ty: &str) -> bool {
        self.filters.iter().any(|f| type_matches(f, ty))
            && self.permitted.iter().any(|p| type_matches(p, ty))
    }
}

impl Intake {
    /// The endpoints that may receive events, read again only when the version changed.
    async fn receivers(
        &self,
        tx: &mut ovasabi_store::Transaction,
    ) -> Result<Arc<[Receiver]>, ovasabi_store::StoreError> {
        let version: i64 = tx
            .query_one(
                "SELECT version FROM webhook_endpoints_version WHERE id = 1",
                &[],
            )
            .await?
            .get("version")?;
        if let Some((cached, receivers)) =
            &*self.endpoints.lock().unwrap_or_else(|e| e.into_inner())
        {
            if *cached == version {
                return Ok(receivers.clone());
            }
        }
        // Read after the version: at least as new as it, so the pair never goes stale.
        let rows = tx
            .query(
                "SELECT e.id, e.filters, p.permitted FROM webhook_endpoints e
                 JOIN webhook_partners p ON p.id = e.partner_id
                 WHERE e.state IN ('active', 'paused')",
                &[],
            )
            .await?;
        let receivers: Arc<[Receiver]> = rows
            .iter()
            .map(Receiver::from_row)
            .collect::<Result<_, _>>()?;
        *self.endpoints.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((version, receivers.clone()));
        Ok(receivers)
    }
}

#[async_trait]
impl Reaction for Intake {
    type Plan = ();

    fn plan(&self, _msg: &Message) -> Result<Option<()>, HandlerError> {
        Ok(Some(()))
    }

    async fn apply(
        &self,
        tx: &mut ovasabi_store::Transaction,
        msg: &Message,
        (): (),
    ) -> Result<bool, HandlerError> {
        let failed = store_failure("webhooks");
        let event = msg.event();
        let now = self.clock.now();
        // The stream feed: every event, whoever may read it (streams filter by partner).
        tx.execute(
            "INSERT INTO webhook_feed (event_id, event_type, body, at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (event_id) DO NOTHING",
            params![
                event.id.as_str(),
                event.ty.as_str(),
                ovasabi_core::format::json::to_json_string(event),
                now
            ],
        )
        .await
        .map_err(&failed)?;
        let receivers = self.receivers(tx).await.map_err(&failed)?;
        for receiver in receivers.iter().filter(|r| r.wants(&event.ty)) {
            tx.execute(
                INSERT_DELIVERY,
                &delivery_params(&receiver.id, &event.id, event, now),
            )
            .await
            .map_err(&failed)?;
        }
        Ok(false)
    }

    fn committed(&self, _msg: &Message) {
        self.wake.notify_one();
        self.streams.notify_waiters();
    }
}

// ---------------------------------------------------------------------------------------
// The dispatcher

struct Dispatcher {
    store: Store,
    relay: RelayHandle,
    clock: Arc<dyn Clock>,
    policy: Policy,
    jitter: bool,
    wake: Arc<Notify>,
    stop: CancellationToken,
}

/// What one attempt came to.
enum Outcome {
    Delivered(u16),
    Gone,
    RetryAfter(u16, Duration),
    Failed(Option<u16>, String),
}

async fn run_dispatcher(d: Dispatcher) {
    let client = match ssrf::client(&d.policy, TIMEOUT) {
        Ok(client) => client,
        Err(e) => {
            tracing::error!("webhooks: no HTTP client ({e}); deliveries stay queued");
            return;
        }
    };
    let d = Arc::new(d);
    let busy: Arc<Mutex<HashSet<String>>> = Arc::default();
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut running = tokio::task::JoinSet::new();
    let mut pruned: Option<DateTime<Utc>> = None;
    loop {
        tokio::select! {
            _ = d.stop.cancelled() => break,
            _ = d.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            Some(_) = running.join_next(), if !running.is_empty() => {}
        }
        let now = d.clock.now();
        if pruned.is_none_or(|at| later(at, PRUNE_EVERY) <= now) {
            pruned = Some(now);
            if let Err(e) = prune_feed(&d.store, now).await {
                tracing::warn!("webhooks: pruning the stream feed: {}", e.message);
            }
        }
        match claim(&d, &busy, slots.available_permits()).await {
            Ok(claimed) => {
                for (delivery, endpoint) in claimed {
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        // No slot after all: the lease lapses and the delivery comes back.
                        busy.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&endpoint);
                        continue;
                    };
                    let (d, client, busy) = (d.clone(), client.clone(), busy.clone());
                    running.spawn(async move {
                        if let Err(e) = deliver(&d, &client, &delivery).await {
                            tracing::warn!("webhooks: delivery {delivery}: {}", e.message);
                        }
                        busy.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&endpoint);
                        d.wake.notify_one();
                        drop(permit);
                    });
                }
            }
            Err(e) => tracing::warn!(
                "webhooks: finding due deliveries: {}; trying again",
                e.message
            ),
        }
    }
    // Attempts under way finish (bounded by the timeout); their leases guard the rest.
    let _ = tokio::time::timeout(TIMEOUT, async {
        while running.join_next().await.is_some() {}
    })
    .await;
}

/// Deletes the stream feed's events recorded more than [`FEED_RETENTION`] before `now`.
async fn prune_feed(store: &Store, now: DateTime<Utc>) -> Result<u64, ApiError> {
    let cutoff = now - chrono::Duration::from_std(FEED_RETENTION).unwrap_or_default();
    Ok(store
        .execute("DELETE FROM webhook_feed WHERE at < $1", params![cutoff])
        .await?)
}

/// Claims up to `room` due deliveries, at most one per endpoint and none of an endpoint
/// with one in flight; (delivery id, endpoint id).
async fn claim(
    d: &Dispatcher,
    busy: &Mutex<HashSet<String>>,
    room: usize,
) -> Result<Vec<(String, String)>, ApiError> {
    if room == 0 {
        return Ok(Vec::new());
    }
    let now = d.clock.now();
    let due = d
        .store
        .query(
            "SELECT d.id, d.endpoint_id FROM webhook_deliveries d
             JOIN webhook_endpoints e ON e.id = d.endpoint_id
             WHERE d.status = 'pending' AND d.next_at <= $1 AND e.state = 'active'
               AND (d.lease_until IS NULL OR d.lease_until < $1)
             ORDER BY d.next_at, d.id LIMIT 500",
            params![now],
        )
        .await?;
    let mut claimed = Vec::new();
    for row in &due {
        if claimed.len() >= room {
            break;
        }
        let id: String = row.get("id")?;
        let endpoint: String = row.get("endpoint_id")?;
        {
            let mut busy = busy.lock().unwrap_or_else(|e| e.into_inner());
            if busy.contains(&endpoint) {
                continue;
            }
            busy.insert(endpoint.clone());
        }
        let won = d
            .store
            .execute(
                "UPDATE webhook_deliveries SET lease_until = $2
                 WHERE id = $1 AND status = 'pending' AND (lease_until IS NULL OR lease_until < $3)",
                params![id.as_str(), later(now, LEASE), now],
            )
            .await;
        match won {
            Ok(1) => claimed.push((id, endpoint)),
            other => {
                busy.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&endpoint);
                other?;
            }
        }
    }
    Ok(claimed)
}

/// The delay before attempt `next` (2 for the first retry…), with ±20 % jitter.
fn backoff(next: i64, jitter: bool) -> Option<Duration> {
    let index = usize::try_from(next - 2).ok()?;
    let base = *SCHEDULE.get(index)?;
    if !jitter {
        return Some(base);
    }
    use rand::Rng as _;
    Some(base.mul_f64(rand::thread_rng().gen_range(0.8..=1.2)))
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// The `webhook.deliver` span of one attempt: the child of the delivery's queued
/// `traceparent`, with the attributes `event.id`, `event.type`, `webhook.endpoint` and
/// `attempt`.
fn deliver_span(
    event_id: &str,
    event_type: &str,
    endpoint: &str,
    attempt: i64,
    traceparent: Option<&str>,
) -> tracing::Span {
    let span = tracing::info_span!("webhook.deliver", event_id, event_type, endpoint, attempt,);
    if !span.is_disabled() {
        ovasabi_middleware::otel::set_parent(&span, traceparent);
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        span.set_attribute("event.id", event_id.to_owned());
        span.set_attribute("event.type", event_type.to_owned());
        span.set_attribute("webhook.endpoint", endpoint.to_owned());
        span.set_attribute("attempt", attempt);
    }
    span
}

/// One attempt of delivery `id`, and its outcome recorded.
async fn deliver(d: &Dispatcher, client: &reqwest::Client, id: &str) -> Result<(), ApiError> {
    let row = d
        .store
        .query_opt(
            "SELECT d.endpoint_id, d.message_id, d.event_type, d.body, d.traceparent, d.attempts, e.url,
                 e.secret, e.previous_secret, e.previous_until, e.partner_id, e.state
             FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
             WHERE d.id = $1",
            params![id],
        )
        .await?;
    let Some(row) = row else { return Ok(()) };
    let endpoint: String = row.get("endpoint_id")?;
    if row.get::<String>("state")? != "active" {
        // Paused or disabled since it was claimed: it waits, unleased.
        d.store
            .execute(
                "UPDATE webhook_deliveries SET lease_until = NULL WHERE id = $1",
                params![id],
            )
            .await?;
        return Ok(());
    }
    let message_id: String = row.get("message_id")?;
    let body: String = row.get("body")?;
    let url: String = row.get("url")?;
    let attempt = row.get::<i64>("attempts")? + 1;
    let queued_trace: Option<String> = row.get("traceparent")?;
    let span = deliver_span(
        &message_id,
        &row.get::<String>("event_type")?,
        &endpoint,
        attempt,
        queued_trace.as_deref(),
    );
    // The partner continues the `webhook.deliver` span when OpenTelemetry is on, the queued
    // trace context otherwise.
    let trace = ovasabi_middleware::otel::traceparent_of(&span)
        .filter(|own| {
            queued_trace
                .as_deref()
                .and_then(ovasabi_middleware::TraceParent::parse)
                .is_some_and(|queued| queued.trace_id() == own.trace_id())
        })
        .map(|own| own.to_string())
        .or(queued_trace);
    let now = d.clock.now();
    let mut secrets = vec![Secret::parse(&row.get::<String>("secret")?).map_err(|e| {
        ApiError::with(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    })?];
    if let (Some(previous), Some(until)) = (
        row.get::<Option<String>>("previous_secret")?,
        row.get::<Option<DateTime<Utc>>>("previous_until")?,
    ) {
        if until > now {
            if let Ok(previous) = Secret::parse(&previous) {
                secrets.push(previous);
            }
        }
    }
    let timestamp = now.timestamp();
    let started = std::time::Instant::now();
    let outcome = match ssrf::check_url(&url, &d.policy) {
        Err(refusal) => Outcome::Failed(None, refusal.to_string()),
        Ok(target) => {
            let refs: Vec<&Secret> = secrets.iter().collect();
            let mut request = client
                .post(target)
                .header(signing::HEADER_ID, message_id.as_str())
                .header(signing::HEADER_TIMESTAMP, timestamp.to_string())
                .header(
                    signing::HEADER_SIGNATURE,
                    signing::signature_header(&refs, &message_id, timestamp, body.as_bytes()),
                )
                .header(
                    "content-type",
                    "application/cloudevents+json; charset=utf-8",
                )
                .body(body.clone());
            if let Some(trace) = &trace {
                request = request.header("traceparent", trace.as_str());
            }
            match request.send().instrument(span.clone()).await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    match status {
                        200..=299 => Outcome::Delivered(status),
                        410 => Outcome::Gone,
                        429 => match response
                            .headers()
                            .get("retry-after")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.trim().parse::<u64>().ok())
                        {
                            Some(secs) => Outcome::RetryAfter(
                                status,
                                Duration::from_secs(secs).min(MAX_RETRY_AFTER),
                            ),
                            None => {
                                Outcome::Failed(Some(status), "429 Too Many Requests".to_owned())
                            }
                        },
                        300..=399 => Outcome::Failed(
                            Some(status),
                            format!("{status}: redirects are not followed; register the final URL"),
                        ),
                        _ => Outcome::Failed(Some(status), format!("{status}")),
                    }
                }
                Err(e) => Outcome::Failed(None, error_chain(&e)),
            }
        }
    };
    let latency = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    let (status_code, error) = match &outcome {
        Outcome::Delivered(s) => (Some(*s), None),
        Outcome::Gone => (
            Some(410),
            Some("410 Gone: the endpoint is disabled".to_owned()),
        ),
        Outcome::RetryAfter(s, after) => (
            Some(*s),
            Some(format!("{s}: retry after {}s", after.as_secs())),
        ),
        Outcome::Failed(s, e) => (*s, Some(e.clone())),
    };
    let mut tx = d.store.begin().await?;
    tx.execute(
        "INSERT INTO webhook_attempts (id, delivery_id, endpoint_id, message_id, attempt, at,
             status_code, latency_ms, error)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        params![
            uuid::Uuid::now_v7().to_string(),
            id,
            endpoint.as_str(),
            message_id.as_str(),
            attempt,
            now,
            status_code.map(i64::from),
            latency,
            error.as_deref()
        ],
    )
    .await?;
    let retry_at = match &outcome {
        Outcome::Delivered(_) | Outcome::Gone => None,
        Outcome::RetryAfter(_, after) => {
            backoff(attempt + 1, d.jitter).map(|b| later(now, b.max(*after)))
        }
        Outcome::Failed(..) => backoff(attempt + 1, d.jitter).map(|b| later(now, b)),
    };
    let mut disabled = None;
    match (&outcome, retry_at) {
        (Outcome::Delivered(_), _) => {
            tx.execute(
                "UPDATE webhook_deliveries SET status = 'delivered', attempts = $2,
                     finished_at = $3, lease_until = NULL, last_error = NULL WHERE id = $1",
                params![id, attempt, now],
            )
            .await?;
        }
        (_, Some(at)) => {
            tx.execute(
                "UPDATE webhook_deliveries SET attempts = $2, next_at = $3, lease_until = NULL,
                     last_error = $4 WHERE id = $1",
                params![id, attempt, at, error.as_deref()],
            )
            .await?;
        }
        (outcome, None) => {
            tx.execute(
                "UPDATE webhook_deliveries SET status = 'failed', attempts = $2, finished_at = $3,
                     lease_until = NULL, last_error = $4 WHERE id = $1",
                params![id, attempt, now, error.as_deref()],
            )
            .await?;
            let reason = match outcome {
                Outcome::Gone => DisableReason::Gone,
                _ => DisableReason::ConsecutiveFailures,
            };
            let changed = tx
                .execute(
                    "UPDATE webhook_endpoints SET state = 'disabled', disabled_reason = $2,
                         updated_at = $3 WHERE id = $1 AND state <> 'disabled'",
                    params![
                        endpoint.as_str(),
                        match reason {
                            DisableReason::Gone => "gone",
                            _ => "consecutive_failures",
                        },
                        now
                    ],
                )
                .await?;
            if changed == 1 {
                let event = WebhookEndpointDisabled {
                    endpoint_id: endpoint.clone(),
                    owner_id: row.get("partner_id")?,
                    url: url.clone(),
                    reason,
                    consecutive_failures: u32::try_from(attempt).ok(),
                    last_status_code: status_code,
                    disabled_at: now,
                }
                .to_event(SOURCE);
                Outbox::append(&mut tx, WebhookEndpointDisabled::TOPIC, &event).await?;
                disabled = Some(event);
            }
        }
    }
    tx.commit().await?;
    if disabled.is_some() {
        d.relay.wake();
        tracing::warn!(
            "webhooks: endpoint {endpoint} ({url}) disabled: {}",
            error.unwrap_or_default()
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// OpenAPI

fn openapi() -> Value {
    let error = |description: &str| json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let id = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}});
    let auth = json!({"name": "Authorization", "in": "header", "required": true, "schema": {"type": "string"}, "description": "`Bearer ovk_…`: the partner's API key"});
    let endpoint = json!({"description": "The endpoint", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/WebhookEndpoint"}}}});
    let with_id = || json!([auth.clone(), id.clone()]);
    json!({
        "paths": {
            "/v1/webhooks": {
                "post": {
                    "summary": "Register an endpoint for event types (Standard Webhooks deliveries); answers its signing secret once",
                    "parameters": [auth.clone(), {"$ref": "#/components/parameters/IdempotencyKey"}],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/WebhookCreate"}}}},
                    "responses": {
                        "201": {"description": "Registered, with `secret`", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/WebhookEndpoint"}}}},
                        "401": error("No or an unknown API key"),
                        "409": error("The partner has the most endpoints there may be"),
                        "422": error("A field is invalid: a URL refused by the SSRF guard (field url), a filter matching nothing permitted (field filters)")
                    }
                },
                "get": {"summary": "The partner's endpoints", "parameters": [auth.clone()], "responses": {"200": {"description": "The endpoints"}, "401": error("No or an unknown API key")}}
            },
            "/v1/webhooks/{id}": {
                "get": {"summary": "An endpoint with its delivery counts and last attempt", "parameters": with_id(), "responses": {"200": endpoint.clone(), "404": error("No such endpoint of this partner")}},
                "delete": {"summary": "Delete an endpoint and its queued deliveries", "parameters": with_id(), "responses": {"204": {"description": "Deleted"}, "404": error("No such endpoint of this partner")}}
            },
            "/v1/webhooks/{id}/pause": {"post": {"summary": "Pause deliveries (events queue meanwhile)", "parameters": with_id(), "responses": {"200": endpoint.clone(), "404": error("No such endpoint of this partner")}}},
            "/v1/webhooks/{id}/resume": {"post": {"summary": "Resume deliveries, also of a disabled endpoint (its failed deliveries go out again)", "parameters": with_id(), "responses": {"200": endpoint.clone(), "404": error("No such endpoint of this partner")}}},
            "/v1/webhooks/{id}/rotate-secret": {"post": {"summary": "A new signing secret; the old one stays valid for `overlap` (default 24h), both signatures sent meanwhile", "parameters": with_id(), "responses": {"200": {"description": "The new secret"}, "404": error("No such endpoint of this partner"), "422": error("`overlap` is not a duration")}}},
            "/v1/webhooks/{id}/attempts": {"get": {"summary": "Delivery attempts, newest first: time, status, latency, error", "parameters": paging::openapi_parameters_after(vec![auth.clone(), id.clone()]), "responses": {"200": {"description": "A page of attempts"}, "404": error("No such endpoint of this partner")}}},
            "/v1/webhooks/{id}/replay": {"post": {"summary": "Queue again the events since `from` that the endpoint would receive (new message ids)", "parameters": [auth.clone(), id, {"name": "from", "in": "query", "required": true, "schema": {"type": "string", "format": "date-time"}}], "responses": {"202": {"description": "Queued"}, "404": error("No such endpoint of this partner"), "422": error("`from` is not an RFC 3339 time")}}},
            "/v1/partners/stream": {"get": {
                "summary": "The event types the partner is permitted, live and oldest first: Server-Sent Events (`id:` = seq, `event:` = type, `data:` = the CloudEvent JSON), or a WebSocket of `{\"seq\", \"event\"}` JSON messages when the request upgrades; resumes after `Last-Event-ID` or `after`, else starts now; events are kept 7 days",
                "parameters": [
                    auth,
                    {"name": "after", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 0}, "description": "Send the events after this seq first (0: every event kept, 7 days). Without it (and without Last-Event-ID) the stream starts now: new events only"},
                    {"name": "Last-Event-ID", "in": "header", "required": false, "schema": {"type": "string"}, "description": "The seq of the last event seen (an EventSource sends it when it reconnects); wins over `after`"}
                ],
                "responses": {
                    "200": {"description": "text/event-stream: a first comment saying where the stream starts, then one event per feed entry, with keep-alive comments", "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                    "101": {"description": "Switching to a WebSocket: text messages `{\"seq\": n, \"event\": {…CloudEvent…}}`"},
                    "400": error("A WebSocket upgrade that cannot be accepted"),
                    "401": error("No or an unknown API key"),
                    "422": error("`after` or `Last-Event-ID` is not a seq, or an unknown query parameter")
                }
            }}
        },
        "schemas": {
            "WebhookCreate": {"type": "object", "required": ["url", "filters"], "additionalProperties": false, "properties": {
                "url": {"type": "string", "format": "uri", "description": "https:// (http:// only where allowed); no private, loopback or link-local addresses"},
                "filters": {"type": "array", "items": {"type": "string"}, "description": "Event-type patterns: `*`, `order.*` or a type"},
                "description": {"type": "string", "maxLength": 500}
            }},
            "WebhookEndpoint": {"type": "object", "required": ["id", "url", "filters", "state"], "properties": {
                "id": {"type": "string"},
                "url": {"type": "string"},
                "description": {"type": ["string", "null"]},
                "filters": {"type": "array", "items": {"type": "string"}},
                "state": {"type": "string", "enum": ["active", "paused", "disabled"]},
                "disabled_reason": {"type": ["string", "null"], "enum": ["gone", "consecutive_failures", null]},
                "secret": {"type": "string", "description": "Only when registered or rotated: `whsec_…`"},
                "deliveries": {"type": "object", "description": "Counts by status (pending, delivered, failed) and the last attempt"}
            }}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_types() {
        assert!(type_matches("*", "order.placed"));
        assert!(type_matches("order.*", "order.placed"));
        assert!(!type_matches("order.*", "payment.completed"));
        assert!(!type_matches("order.*", "orders.placed"));
        assert!(type_matches("order.placed", "order.placed"));
        assert!(!type_matches("order.placed", "order.shipped"));
        for bad in [
            "",
            "order",
            "Order.*",
            "*.placed",
            "order.*.x",
            "order..x",
            "order.>",
        ] {
            assert!(check_pattern(bad).is_err(), "{bad}");
        }
        for good in ["*", "order.*", "user.profile_updated"] {
            assert!(check_pattern(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn the_schedule_backs_off_then_ends() {
        assert_eq!(backoff(1, false), None);
        assert_eq!(backoff(2, false), Some(Duration::from_secs(5)));
        assert_eq!(backoff(8, false), Some(Duration::from_secs(36_000)));
        assert_eq!(backoff(9, false), None);
        for _ in 0..100 {
            let d = backoff(3, true).unwrap();
            assert!(
                d >= Duration::from_secs(240) && d <= Duration::from_secs(360),
                "{d:?}"
            );
        }
    }

    #[test]
    fn overlaps_parse() {
        assert_eq!(parse_overlap("30m"), Some(Duration::from_secs(1800)));
        assert_eq!(parse_overlap("0"), Some(Duration::ZERO));
        assert_eq!(parse_overlap("8d"), None);
        assert_eq!(parse_overlap("soon"), None);
    }
}
