//! The live dashboard: the page at `/`, built into the binary, and the API it reads beside
//! the services' own (`docs/dashboard.md` describes every view and route).
//!
//! - [`Dashboard::routes`]: the page and its files (`/`, `/dashboard/…`); the live event
//!   stream (`GET /v1/events/stream`, `GET /v1/events/recent`); publishing one event
//!   (`POST /v1/events`); an event's causal tree (`GET /v1/trace/{id}`); and
//!   `GET /v1/dashboard/{overview,series,topology,webhooks}`.
//! - [`Dashboard::run`]: the sampler, which every [`SAMPLE_EVERY`] reads the bus's topic
//!   offsets and the consumers' counters and keeps the differences for the last
//!   [`SERIES_POINTS`] intervals: events per topic, deliveries, redeliveries and handler
//!   latency per group.
//!
//! # The live stream
//!
//! One ephemeral subscription to every topic (`>`) feeds a window of the last
//! [`WINDOW`] events and a broadcast to the connected clients. It runs only while a client
//! is connected, and [`IDLE_STOP`] after the last one left, so a process nobody watches
//! pays nothing for it. When it starts it reads from where it stopped, or from
//! [`FIRST_LOOK_BACK`] ago the first time; events it has already seen (same topic and
//! offset) are skipped, so a restart neither repeats nor loses one.
//!
//! # Assets
//!
//! `index.html`, `app.js`, `app.css` and `favicon.svg` in `src/dashboard/`, plain files with
//! no build step, compiled in with `include_str!`. With `OVASABI_DASHBOARD_DIR` set they are
//! read from that directory at each request instead (to work on the page without
//! rebuilding).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use ovasabi_core::naming::{validate_topic, TopicPattern, DEAD_LETTER_SUFFIX};
use ovasabi_core::{Bus, Event, StartFrom, SubscribeOptions};
use ovasabi_middleware::stats::HistogramSnapshot;
use ovasabi_schema::Registry;
use ovasabi_store::Store;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::http::ApiError;
use crate::metrics::Monitor;
use crate::users::paging;

/// Events the live window keeps (and the most a client can ask for first).
pub const WINDOW: usize = 1000;
/// Events a new stream client gets first unless it asks otherwise.
pub const DEFAULT_BACKLOG: usize = 100;
/// How far back the live subscription reads the first time it starts.
pub const FIRST_LOOK_BACK: Duration = Duration::from_secs(600);
/// How long the live subscription runs after the last client left.
pub const IDLE_STOP: Duration = Duration::from_secs(60);
/// How often the sampler reads the offsets and counters.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Intervals the series keeps: ten minutes.
pub const SERIES_POINTS: usize = 120;
/// Intervals a live rate averages over.
const RATE_POINTS: usize = 3;
/// How often a stream sends a comment line when nothing happens.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Attempts per endpoint in `GET /v1/dashboard/webhooks`.
const WEBHOOK_ATTEMPTS: i64 = 5;
/// Producer names in the schema catalog that are not services, and the service that
/// publishes for them.
const PRODUCER_ALIASES: &[(&str, &str)] = &[("fraud", "moderation")];

/// The dashboard of one process: see the [module documentation](self).
#[derive(Clone)]
pub struct Dashboard {
    inner: Arc<Inner>,
}

struct Inner {
    bus: Arc<dyn Bus>,
    store: Store,
    monitor: Monitor,
    services: Vec<&'static str>,
    registry: Option<Arc<Registry>>,
    live: Live,
    series: Mutex<Series>,
}

impl Dashboard {
    /// The dashboard of a process running `services`, reading `bus`, `store` and the
    /// consumers `monitor` knows; `registry` gives the schema catalog (topology, schema
    /// references).
    pub fn new(
        bus: Arc<dyn Bus>,
        store: Store,
        monitor: Monitor,
        services: Vec<&'static str>,
        registry: Option<Arc<Registry>>,
    ) -> Dashboard {
        let (tx, _) = broadcast::channel(WINDOW);
        Dashboard {
            inner: Arc::new(Inner {
                bus,
                store,
                monitor,
                services,
                registry,
                live: Live {
                    state: Mutex::new(LiveState::default()),
                    tx,
                },
                series: Mutex::new(Series::default()),
            }),
        }
    }

    /// The routes: see the [module documentation](self).
    pub fn routes(&self) -> Router {
        Router::new()
            .route("/", get(asset))
            .route("/dashboard/{file}", get(asset))
            .route("/v1/events", axum::routing::post(publish))
            .route("/v1/events/stream", get(stream))
            .route("/v1/events/recent", get(recent))
            .route("/v1/trace/{id}", get(trace))
            .route("/v1/dashboard/overview", get(overview))
            .route("/v1/dashboard/series", get(series))
            .route("/v1/dashboard/topology", get(topology))
            .route("/v1/dashboard/webhooks", get(webhooks))
            .with_state(self.clone())
    }

    /// Samples every [`SAMPLE_EVERY`] until `stop`, and stops the live subscription then.
    pub async fn run(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            self.sample().await;
            self.inner.live.stop_if_idle();
        }
        self.inner.live.stop();
    }

    /// One sample: the topics' offsets and the consumers' counters, against the last.
    async fn sample(&self) {
        let offsets = match tokio::time::timeout(
            crate::metrics::CHECK_TIMEOUT,
            self.inner.bus.topics(),
        )
        .await
        {
            Ok(Ok(topics)) => Some(
                topics
                    .into_iter()
                    .map(|t| (t.topic, t.next_offset))
                    .collect::<HashMap<_, _>>(),
            ),
            Ok(Err(e)) => {
                tracing::debug!("dashboard: reading the topics: {e}");
                None
            }
            Err(_) => None,
        };
        let groups: Vec<(String, GroupCounters)> = self
            .inner
            .monitor
            .consumers()
            .into_iter()
            .map(|(info, stats)| (info.group, GroupCounters::read(&stats)))
            .collect();
        self.inner
            .series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add(Utc::now(), offsets, groups);
    }
}

// ---------------------------------------------------------------------------------------
// Assets

/// The page's files: (name, content type, compiled-in text).
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("dashboard/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("dashboard/app.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("dashboard/favicon.svg"),
    ),
];

/// The page allows nothing from elsewhere.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

async fn asset(file: Option<Path<String>>) -> Response {
    let name = file.map_or_else(|| "index.html".to_owned(), |Path(f)| f);
    let Some((name, content_type, built_in)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return ApiError::not_found(format!("the dashboard file `{name}`")).into_response();
    };
    let body = match std::env::var_os("OVASABI_DASHBOARD_DIR") {
        Some(dir) => match tokio::fs::read_to_string(std::path::Path::new(&dir).join(name)).await {
            Ok(text) => text,
            Err(e) => {
                return ApiError::with(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "unavailable",
                    format!(
                        "reading {name} from OVASABI_DASHBOARD_DIR={}: {e}",
                        std::path::Path::new(&dir).display()
                    ),
                )
                .into_response()
            }
        },
        None => (*built_in).to_owned(),
    };
    (
        [
            (header::CONTENT_TYPE, *content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------
// The live stream

/// One event as the stream sends it (see `docs/dashboard.md`).
#[derive(Clone, Debug, Serialize)]
pub struct LiveEvent {
    /// Its place in this process's window, from 1: the SSE `id`.
    pub seq: u64,
    /// The topic it is on.
    pub topic: String,
    /// Its offset there.
    pub offset: u64,
    /// When the bus stored it.
    pub published_at: DateTime<Utc>,
    /// Its id.
    pub id: String,
    /// Its type.
    #[serde(rename = "type")]
    pub ty: String,
    /// Its source.
    pub source: String,
    /// Its subject.
    pub subject: Option<String>,
    /// Its `time`.
    pub time: Option<DateTime<Utc>>,
    /// Its `correlationid`.
    pub correlation_id: Option<String>,
    /// Its `causationid`.
    pub causation_id: Option<String>,
    /// The catalogued schema its `dataschema` names.
    pub schema: Option<SchemaRef>,
    /// Whether it is on a dead-letter topic.
    pub dead_letter: bool,
    /// The whole event, structured-mode CloudEvents JSON.
    pub event: Value,
}

/// An event type and schema version.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SchemaRef {
    /// The type.
    pub event_type: String,
    /// The version.
    pub version: u32,
}

/// `urn:ovasabi:schema:<type>:<version>` read back.
fn schema_ref(dataschema: Option<&str>) -> Option<SchemaRef> {
    let rest = dataschema?.strip_prefix("urn:ovasabi:schema:")?;
    let (ty, version) = rest.rsplit_once(':')?;
    Some(SchemaRef {
        event_type: ty.to_owned(),
        version: version.parse().ok()?,
    })
}

/// A live event and its JSON, serialized once for every client.
struct Shared {
    event: LiveEvent,
    json: String,
}

struct Live {
    state: Mutex<LiveState>,
    tx: broadcast::Sender<Arc<Shared>>,
}

#[derive(Default)]
struct LiveState {
    window: VecDeque<Arc<Shared>>,
    next_seq: u64,
    /// The highest offset seen per topic: what a restarted subscription skips.
    seen: HashMap<String, u64>,
    /// When the last event seen was stored: where a restarted subscription starts.
    last_published: Option<DateTime<Utc>>,
    clients: usize,
    last_left: Option<Instant>,
    running: Option<CancellationToken>,
}

impl Live {
    fn lock(&self) -> std::sync::MutexGuard<'_, LiveState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops the subscription when no client has been connected for [`IDLE_STOP`].
    fn stop_if_idle(&self) {
        let mut state = self.lock();
        if state.clients == 0 && state.last_left.is_some_and(|t| t.elapsed() >= IDLE_STOP) {
            if let Some(token) = state.running.take() {
                token.cancel();
            }
        }
    }

    fn stop(&self) {
        if let Some(token) = self.lock().running.take() {
            token.cancel();
        }
    }

    /// Records `delivery`'s event unless already seen; broadcasts it.
    fn record(&self, topic: &str, offset: u64, published_at: DateTime<Utc>, event: &Event) {
        let mut state = self.lock();
        if state.seen.get(topic).is_some_and(|seen| offset <= *seen) {
            return;
        }
        state.seen.insert(topic.to_owned(), offset);
        if state.last_published.is_none_or(|t| published_at > t) {
            state.last_published = Some(published_at);
        }
        state.next_seq += 1;
        let live = LiveEvent {
            seq: state.next_seq,
            topic: topic.to_owned(),
            offset,
            published_at,
            id: event.id.clone(),
            ty: event.ty.clone(),
            source: event.source.clone(),
            subject: event.subject.clone(),
            time: event.time,
            correlation_id: event.correlation_id().map(str::to_owned),
            causation_id: event.causation_id().map(str::to_owned),
            schema: schema_ref(event.dataschema.as_deref()),
            dead_letter: topic.ends_with(DEAD_LETTER_SUFFIX),
            event: ovasabi_core::format::json::to_json_value(event),
        };
        let json = serde_json::to_string(&live).unwrap_or_default();
        let shared = Arc::new(Shared { event: live, json });
        if state.window.len() == WINDOW {
            state.window.pop_front();
        }
        state.window.push_back(shared.clone());
        // No receiver is not an error: nobody is watching right now.
        let _ = self.tx.send(shared);
    }
}

impl Dashboard {
    /// A client connected: starts the subscription if it is not running.
    fn connect(&self) -> ClientGuard {
        let mut state = self.inner.live.lock();
        state.clients += 1;
        if state.running.is_none() {
            let token = CancellationToken::new();
            state.running = Some(token.clone());
            let start = match state.last_published {
                Some(t) => t,
                None => {
                    Utc::now() - chrono::Duration::from_std(FIRST_LOOK_BACK).unwrap_or_default()
                }
            };
            tokio::spawn(self.clone().follow(start, token));
        }
        ClientGuard {
            dashboard: self.clone(),
        }
    }

    /// The subscription: every topic from `start`, until `stop`; restarted after an error.
    async fn follow(self, start: DateTime<Utc>, stop: CancellationToken) {
        let mut start = start;
        let mut backoff = Duration::from_millis(200);
        loop {
            let options = match SubscribeOptions::new("dashboard", [">"]) {
                Ok(o) => o
                    .start(StartFrom::Time(start))
                    .ephemeral(true)
                    .ordering(ovasabi_core::Ordering::None)
                    .max_in_flight(256),
                Err(e) => {
                    tracing::error!("dashboard: the live subscription's options: {e}");
                    return;
                }
            };
            let subscribed = tokio::select! {
                _ = stop.cancelled() => return,
                s = self.inner.bus.subscribe(options) => s,
            };
            match subscribed {
                Ok(mut sub) => {
                    backoff = Duration::from_millis(200);
                    loop {
                        let next = tokio::select! {
                            _ = stop.cancelled() => {
                                sub.close().await;
                                return;
                            }
                            next = sub.next() => next,
                        };
                        match next {
                            Some(Ok(delivery)) => {
                                let info = delivery.info();
                                self.inner.live.record(
                                    &info.topic,
                                    info.offset,
                                    info.published_at,
                                    delivery.event(),
                                );
                                if let Err(e) = delivery.ack().await {
                                    tracing::debug!("dashboard: acking a live event: {e}");
                                }
                            }
                            Some(Err(e)) => {
                                tracing::warn!("dashboard: the live subscription failed: {e}");
                                break;
                            }
                            None => break,
                        }
                    }
                    sub.close().await;
                }
                Err(e) => tracing::warn!("dashboard: subscribing to every topic: {e}"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
            if let Some(t) = self.inner.live.lock().last_published {
                start = t;
            }
        }
    }
}

/// Counts a stream client until it is dropped.
struct ClientGuard {
    dashboard: Dashboard,
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        let mut state = self.dashboard.inner.live.lock();
        state.clients = state.clients.saturating_sub(1);
        state.last_left = Some(Instant::now());
    }
}

/// What a stream or listing of live events selects.
#[derive(Clone, Debug, Default)]
struct LiveFilter {
    topic: Option<TopicPattern>,
    ty: Option<String>,
    subject: Option<String>,
    correlation_id: Option<String>,
}

impl LiveFilter {
    fn parse(query: &HashMap<String, String>) -> Result<LiveFilter, ApiError> {
        let text = |name: &str| {
            query
                .get(name)
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        };
        let topic = match text("topic") {
            Some(t) => Some(TopicPattern::parse(&t).map_err(|e| {
                ApiError::invalid(
                    "topic",
                    format!(
                        "{e}; give a topic such as commerce.events or a pattern such as *.events"
                    ),
                )
            })?),
            None => None,
        };
        Ok(LiveFilter {
            topic,
            ty: text("type"),
            subject: text("subject"),
            correlation_id: text("correlation_id"),
        })
    }

    fn matches(&self, e: &LiveEvent) -> bool {
        self.topic.as_ref().is_none_or(|p| p.matches(&e.topic))
            && self.ty.as_ref().is_none_or(|t| match t.strip_suffix('*') {
                Some(prefix) => e.ty.starts_with(prefix),
                None => e.ty == *t,
            })
            && self
                .subject
                .as_ref()
                .is_none_or(|s| e.subject.as_deref() == Some(s.as_str()))
            && self
                .correlation_id
                .as_ref()
                .is_none_or(|c| e.correlation_id.as_deref() == Some(c.as_str()))
    }
}

const FILTERS: [&str; 4] = ["topic", "type", "subject", "correlation_id"];

/// A count from the query: `name`, 1 to [`WINDOW`], or `default`.
fn count(query: &HashMap<String, String>, name: &str, default: usize) -> Result<usize, ApiError> {
    match query.get(name) {
        None => Ok(default),
        Some(text) => match text.trim().parse::<usize>() {
            Ok(n) if n <= WINDOW => Ok(n),
            _ => Err(ApiError::invalid(
                name,
                format!(
                    "`{text}` is not a count of events: give a whole number from 0 to {WINDOW}"
                ),
            )),
        },
    }
}

async fn stream(
    State(dashboard): State<Dashboard>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let known: Vec<&str> = FILTERS.iter().copied().chain(["backlog"]).collect();
    let query = paging::query(query, &known)?;
    let filter = LiveFilter::parse(&query)?;
    let backlog = count(&query, "backlog", DEFAULT_BACKLOG)?;
    let resume_after: Option<u64> = match headers.get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| {
                    ApiError::invalid(
                        "Last-Event-ID",
                        "Last-Event-ID is not the seq of an event this stream sent",
                    )
                })?,
        ),
        None => None,
    };
    let guard = dashboard.connect();
    // Subscribe before reading the window, so nothing falls between the two.
    let mut rx = dashboard.inner.live.tx.subscribe();
    let first: Vec<Arc<Shared>> = {
        let state = dashboard.inner.live.lock();
        let matching = state
            .window
            .iter()
            .filter(|s| resume_after.is_none_or(|after| s.event.seq > after))
            .filter(|s| filter.matches(&s.event));
        match resume_after {
            Some(_) => matching.cloned().collect(),
            None => {
                let all: Vec<_> = matching.cloned().collect();
                all[all.len().saturating_sub(backlog)..].to_vec()
            }
        }
    };
    let (tx, events) = crate::http::sse_channel(64);
    tokio::spawn(async move {
        let _guard = guard;
        let mut last = 0;
        let message = |s: &Shared| {
            SseEvent::default()
                .id(s.event.seq.to_string())
                .event("event")
                .data(&s.json)
        };
        for shared in first {
            last = shared.event.seq;
            if tx.send(message(&shared)).await.is_err() {
                return;
            }
        }
        loop {
            let received = tokio::select! {
                _ = tx.closed() => return,
                r = rx.recv() => r,
            };
            match received {
                Ok(shared) => {
                    if shared.event.seq <= last || !filter.matches(&shared.event) {
                        continue;
                    }
                    last = shared.event.seq;
                    if tx.send(message(&shared)).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    let note = format!("{missed} events were skipped: this client read too slowly");
                    if tx.send(SseEvent::default().comment(note)).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

async fn recent(
    State(dashboard): State<Dashboard>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let known: Vec<&str> = FILTERS.iter().copied().chain(["limit"]).collect();
    let query = paging::query(query, &known)?;
    let filter = LiveFilter::parse(&query)?;
    let limit = count(&query, "limit", DEFAULT_BACKLOG)?;
    // Listing starts the subscription too, so the window fills.
    drop(dashboard.connect());
    let items: Vec<Value> = {
        let state = dashboard.inner.live.lock();
        let matching: Vec<&Arc<Shared>> = state
            .window
            .iter()
            .filter(|s| filter.matches(&s.event))
            .collect();
        matching[matching.len().saturating_sub(limit)..]
            .iter()
            .map(|s| serde_json::to_value(&s.event).unwrap_or(Value::Null))
            .collect()
    };
    Ok(Json(json!({ "items": items })).into_response())
}

// ---------------------------------------------------------------------------------------
// Publishing one event

async fn publish(
    State(dashboard): State<Dashboard>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let query = paging::query(query, &["topic"])?;
    let topic = query
        .get("topic")
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::invalid(
                "topic",
                "say which topic to publish to: ?topic=commerce.events",
            )
        })?;
    validate_topic(&topic).map_err(|e| ApiError::invalid("topic", e.to_string()))?;
    let event = operator_event(&body)?;
    let id = event.id.clone();
    match dashboard.inner.bus.publish(&topic, event).await {
        Ok(published) => Ok((
            StatusCode::CREATED,
            Json(json!({"topic": published.topic, "offset": published.offset, "id": id})),
        )
            .into_response()),
        Err(e) if e.is_user_error() => Err(ApiError::invalid("event", e.to_string())),
        Err(e) => Err(ApiError::with(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("the bus did not take the event: {e}; try again"),
        )),
    }
}

/// The body of `POST /v1/events` as an event: a structured-mode CloudEvent, with
/// `specversion`, `id`, `time` and `source` filled in when missing.
fn operator_event(body: &[u8]) -> Result<Event, ApiError> {
    let mut value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(
            "body",
            format!("the body is not JSON: {e}; send a CloudEvent such as {{\"type\": \"order.placed\", \"data\": {{…}}}}"),
        )
    })?;
    let Some(object) = value.as_object_mut() else {
        return Err(ApiError::invalid(
            "body",
            "the body must be a JSON object: a structured-mode CloudEvent",
        ));
    };
    let ty = match object.get("type") {
        Some(Value::String(t)) => t.clone(),
        _ => {
            return Err(ApiError::invalid(
                "type",
                "give the event's type, e.g. \"type\": \"order.placed\"",
            ))
        }
    };
    ovasabi_core::naming::validate_event_type(&ty).map_err(|e| ApiError::invalid("type", e))?;
    let fresh = Event::new(&ty, "/ovasabi/operator");
    object.entry("specversion").or_insert_with(|| json!("1.0"));
    object.entry("id").or_insert_with(|| json!(fresh.id));
    object
        .entry("source")
        .or_insert_with(|| json!(fresh.source));
    object.entry("time").or_insert_with(|| json!(Utc::now()));
    if object.contains_key("data") && !object.contains_key("datacontenttype") {
        object.insert("datacontenttype".to_owned(), json!("application/json"));
    }
    let bytes = serde_json::to_vec(&value).unwrap_or_default();
    let event = ovasabi_core::format::json::from_json_slice(&bytes)
        .map_err(|e| ApiError::invalid("event", format!("not a valid CloudEvent: {e}")))?;
    event
        .validate()
        .map_err(|e| ApiError::invalid("event", format!("not a valid CloudEvent: {e}")))?;
    Ok(event)
}

// ---------------------------------------------------------------------------------------
// Trace, overview, series, topology, webhooks

async fn trace(
    State(dashboard): State<Dashboard>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if !dashboard.inner.services.contains(&"audit") {
        return Err(ApiError::with(
            StatusCode::NOT_FOUND,
            "not_found",
            "the audit trail does not run in this process, and a trace is read from it: run the audit service (ovasabi up runs it)",
        ));
    }
    match crate::audit::trace(&dashboard.inner.store, &id).await {
        Ok(Some(trace)) => Ok(Json(trace).into_response()),
        Ok(None) => Err(ApiError::not_found(format!(
            "an event or correlation id `{id}` in the audit trail (it records events a moment after they are published)"
        ))),
        Err(e) => Err(ApiError::store(e)),
    }
}

/// A consumer group's counters at one moment.
#[derive(Clone, Debug, Default)]
struct GroupCounters {
    received: u64,
    nacked: u64,
    dead_lettered: u64,
    histogram: Option<HistogramSnapshot>,
    by_topic: BTreeMap<String, u64>,
}

impl GroupCounters {
    fn read(stats: &ovasabi_middleware::ConsumerStats) -> GroupCounters {
        let summary = stats.snapshot();
        let mut by_topic: BTreeMap<String, u64> = BTreeMap::new();
        for counts in stats.by_event() {
            *by_topic.entry(counts.topic).or_default() += counts.received;
        }
        GroupCounters {
            received: summary.received,
            nacked: summary.nacked,
            dead_lettered: summary.dead_lettered,
            histogram: Some(stats.handler_duration()),
            by_topic,
        }
    }
}

/// Handler latency, estimated from a histogram's cumulative buckets.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
struct Latency {
    count: u64,
    mean_ms: Option<f64>,
    p50_ms: Option<f64>,
    p95_ms: Option<f64>,
    p99_ms: Option<f64>,
}

/// The `q` quantile of `buckets` (cumulative `(upper bound, count)`), interpolated within
/// its bucket; `None` without observations.
fn quantile(buckets: &[(f64, u64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut lower = (0.0, 0u64);
    for &(bound, cumulative) in buckets {
        if cumulative as f64 >= rank {
            if bound.is_infinite() {
                return Some(lower.0);
            }
            let inside = (cumulative - lower.1) as f64;
            let fraction = if inside > 0.0 {
                (rank - lower.1 as f64) / inside
            } else {
                1.0
            };
            return Some(lower.0 + (bound - lower.0) * fraction.clamp(0.0, 1.0));
        }
        lower = (bound, cumulative);
    }
    Some(lower.0)
}

/// `now - before`, bucket by bucket (the buckets of one histogram are the same).
fn histogram_delta(
    now: &HistogramSnapshot,
    before: Option<&HistogramSnapshot>,
) -> HistogramSnapshot {
    let mut delta = now.clone();
    if let Some(before) = before {
        for (bucket, old) in delta.buckets.iter_mut().zip(&before.buckets) {
            bucket.1 = bucket.1.saturating_sub(old.1);
        }
        delta.count = now.count.saturating_sub(before.count);
        delta.sum_seconds = (now.sum_seconds - before.sum_seconds).max(0.0);
    }
    delta
}

fn latency(h: &HistogramSnapshot) -> Latency {
    let ms = |s: f64| (s * 1e6).round() / 1e3;
    Latency {
        count: h.count,
        mean_ms: (h.count > 0).then(|| ms(h.sum_seconds / h.count as f64)),
        p50_ms: quantile(&h.buckets, 0.50).map(ms),
        p95_ms: quantile(&h.buckets, 0.95).map(ms),
        p99_ms: quantile(&h.buckets, 0.99).map(ms),
    }
}

/// One interval of the series.
#[derive(Clone, Debug, Serialize)]
struct Point {
    at: DateTime<Utc>,
    /// Events published per topic in the interval.
    topics: BTreeMap<String, u64>,
    groups: BTreeMap<String, GroupPoint>,
}

/// One group in one interval.
#[derive(Clone, Debug, Serialize)]
struct GroupPoint {
    /// Deliveries taken.
    handled: u64,
    mean_ms: Option<f64>,
    p95_ms: Option<f64>,
    nacked: u64,
    dead_lettered: u64,
    /// Deliveries taken per topic.
    by_topic: BTreeMap<String, u64>,
}

#[derive(Default)]
struct Series {
    offsets: Option<HashMap<String, u64>>,
    groups: HashMap<String, GroupCounters>,
    points: VecDeque<Point>,
}

impl Series {
    fn add(
        &mut self,
        at: DateTime<Utc>,
        offsets: Option<HashMap<String, u64>>,
        groups: Vec<(String, GroupCounters)>,
    ) {
        let topics: BTreeMap<String, u64> = match (&self.offsets, &offsets) {
            (Some(before), Some(now)) => now
                .iter()
                .filter(|(topic, _)| !topic.ends_with(DEAD_LETTER_SUFFIX))
                .map(|(topic, next)| {
                    let earlier = before.get(topic).copied().unwrap_or(0);
                    (topic.clone(), next.saturating_sub(earlier))
                })
                .collect(),
            _ => BTreeMap::new(),
        };
        let first = self.offsets.is_none() && self.groups.is_empty();
        let mut points: BTreeMap<String, GroupPoint> = BTreeMap::new();
        for (group, now) in &groups {
            let before = self.groups.get(group);
            let delta = now
                .histogram
                .as_ref()
                .map(|h| histogram_delta(h, before.and_then(|b| b.histogram.as_ref())))
                .map(|h| latency(&h))
                .unwrap_or_default();
            let sub = |f: fn(&GroupCounters) -> u64| f(now).saturating_sub(before.map_or(0, f));
            points.insert(
                group.clone(),
                GroupPoint {
                    handled: sub(|c| c.received),
                    mean_ms: delta.mean_ms,
                    p95_ms: delta.p95_ms,
                    nacked: sub(|c| c.nacked),
                    dead_lettered: sub(|c| c.dead_lettered),
                    by_topic: now
                        .by_topic
                        .iter()
                        .map(|(t, n)| {
                            let earlier =
                                before.and_then(|b| b.by_topic.get(t)).copied().unwrap_or(0);
                            (t.clone(), n.saturating_sub(earlier))
                        })
                        .collect(),
                },
            );
        }
        if offsets.is_some() {
            self.offsets = offsets;
        }
        self.groups = groups.into_iter().collect();
        if first {
            return;
        }
        if self.points.len() == SERIES_POINTS {
            self.points.pop_front();
        }
        self.points.push_back(Point {
            at,
            topics,
            groups: points,
        });
    }

    /// Events per second on `topic` over the last intervals.
    fn topic_rate(&self, topic: &str) -> f64 {
        self.rate(|p| p.topics.get(topic).copied().unwrap_or(0))
    }

    /// Deliveries per second `group` took (from `topic` when given).
    fn group_rate(&self, group: &str, topic: Option<&str>) -> f64 {
        self.rate(|p| {
            p.groups.get(group).map_or(0, |g| match topic {
                Some(t) => g.by_topic.get(t).copied().unwrap_or(0),
                None => g.handled,
            })
        })
    }

    fn rate(&self, of: impl Fn(&Point) -> u64) -> f64 {
        let recent: Vec<&Point> = self.points.iter().rev().take(RATE_POINTS).collect();
        if recent.is_empty() {
            return 0.0;
        }
        let total: u64 = recent.iter().map(|p| of(p)).sum();
        let rate = total as f64 / (recent.len() as f64 * SAMPLE_EVERY.as_secs_f64());
        (rate * 100.0).round() / 100.0
    }
}

impl Dashboard {
    fn series_lock(&self) -> std::sync::MutexGuard<'_, Series> {
        self.inner.series.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The bus's topics and groups, the outbox; 503 when a source does not answer.
    async fn status(&self) -> Result<crate::status::Status, ApiError> {
        crate::status::collect(self.inner.bus.as_ref(), &self.inner.store)
            .await
            .map_err(|e| ApiError::with(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e))
    }
}

async fn series(
    State(dashboard): State<Dashboard>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    paging::query(query, &[])?;
    let series = dashboard.series_lock();
    Ok(Json(json!({
        "interval_seconds": SAMPLE_EVERY.as_secs(),
        "points": series.points,
    })))
}

async fn overview(
    State(dashboard): State<Dashboard>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    paging::query(query, &[])?;
    let inner = &dashboard.inner;
    let status = dashboard.status().await?;
    let mut lag: HashMap<&str, BTreeMap<&str, u64>> = HashMap::new();
    for topic in &status.topics {
        for group in &topic.groups {
            lag.entry(group.group.as_str())
                .or_default()
                .insert(topic.topic.as_str(), group.lag);
        }
    }
    let series = dashboard.series_lock();
    let groups: Vec<Value> = inner
        .monitor
        .consumers()
        .into_iter()
        .map(|(info, stats)| {
            let summary = stats.snapshot();
            let by_topic = lag.get(info.group.as_str()).cloned().unwrap_or_default();
            json!({
                "service": info.service,
                "group": info.group,
                "topics": info.topics,
                "lag": by_topic.values().sum::<u64>(),
                "lag_by_topic": by_topic,
                "received": summary.received,
                "acked": summary.acked,
                "nacked": summary.nacked,
                "dead_lettered": summary.dead_lettered,
                "redeliveries": summary.nacked,
                "rate_per_second": series.group_rate(&info.group, None),
                "handler": latency(&stats.handler_duration()),
            })
        })
        .collect();
    let topics: Vec<Value> = status
        .topics
        .iter()
        .map(|t| {
            json!({
                "topic": t.topic,
                "events": t.events,
                "next_offset": t.next_offset,
                "dead_letters": t.dead_letters,
                "rate_per_second": series.topic_rate(&t.topic),
            })
        })
        .collect();
    Ok(Json(json!({
        "at": status.at,
        "groups": groups,
        "topics": topics,
        "lag": status.lag,
        "dead_letters": status.dead_letters,
        "outbox": status.outbox,
    }))
    .into_response())
}

async fn topology(
    State(dashboard): State<Dashboard>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    paging::query(query, &[])?;
    let inner = &dashboard.inner;
    let status = dashboard.status().await?;
    let running: BTreeSet<&str> = inner.services.iter().copied().collect();
    let service_of = |name: &str| -> Option<&'static str> {
        let name = PRODUCER_ALIASES
            .iter()
            .find(|(alias, _)| *alias == name)
            .map_or(name, |(_, service)| *service);
        inner.services.iter().copied().find(|s| *s == name)
    };
    // Topics: the catalog's and the bus's (dead-letter topics are shown on theirs).
    let mut types: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut produces: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    if let Some(registry) = &inner.registry {
        for t in registry.types() {
            types
                .entry(t.meta.topic.clone())
                .or_default()
                .insert(t.meta.event_type.clone());
            for producer in &t.meta.producers {
                if let Some(service) = service_of(producer) {
                    produces
                        .entry(service)
                        .or_default()
                        .insert(t.meta.topic.clone());
                }
            }
        }
    }
    let dead: HashMap<&str, u64> = status
        .topics
        .iter()
        .map(|t| (t.topic.as_str(), t.dead_letters))
        .collect();
    for t in &status.topics {
        types.entry(t.topic.clone()).or_default();
    }
    let lag: HashMap<(&str, &str), u64> = status
        .topics
        .iter()
        .flat_map(|t| {
            t.groups
                .iter()
                .map(move |g| ((g.group.as_str(), t.topic.as_str()), g.lag))
        })
        .collect();
    let series = dashboard.series_lock();
    let consumers = inner.monitor.consumers();
    let mut edges: Vec<Value> = Vec::new();
    for (service, topics) in &produces {
        for topic in topics {
            edges.push(json!({
                "from": format!("service:{service}"),
                "to": format!("topic:{topic}"),
                "rate_per_second": series.topic_rate(topic),
            }));
        }
    }
    let mut groups: Vec<Value> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for (info, _) in &consumers {
        if !seen.insert(info.group.as_str()) {
            continue;
        }
        let patterns: Vec<TopicPattern> = info
            .topics
            .iter()
            .filter_map(|t| TopicPattern::parse(t).ok())
            .collect();
        let topics: Vec<&String> = types
            .keys()
            .filter(|t| patterns.iter().any(|p| p.matches(t)))
            .collect();
        let mut group_lag = 0;
        for topic in &topics {
            let l = lag
                .get(&(info.group.as_str(), topic.as_str()))
                .copied()
                .unwrap_or(0);
            group_lag += l;
            edges.push(json!({
                "from": format!("topic:{topic}"),
                "to": format!("group:{}", info.group),
                "rate_per_second": series.group_rate(&info.group, Some(topic)),
                "lag": l,
            }));
        }
        groups.push(json!({
            "group": info.group,
            "service": info.service,
            "topics": topics,
            "rate_per_second": series.group_rate(&info.group, None),
            "lag": group_lag,
        }));
    }
    let services: Vec<Value> = running
        .iter()
        .map(|name| {
            json!({
                "name": name,
                "produces": produces.get(name).cloned().unwrap_or_default(),
                "groups": consumers
                    .iter()
                    .filter(|(info, _)| info.service == *name)
                    .map(|(info, _)| info.group.clone())
                    .collect::<BTreeSet<_>>(),
            })
        })
        .collect();
    let topics: Vec<Value> = types
        .iter()
        .map(|(topic, types)| {
            json!({
                "topic": topic,
                "event_types": types,
                "rate_per_second": series.topic_rate(topic),
                "dead_letters": dead.get(topic.as_str()).copied().unwrap_or(0),
            })
        })
        .collect();
    Ok(Json(json!({
        "services": services,
        "topics": topics,
        "groups": groups,
        "edges": edges,
    }))
    .into_response())
}

async fn webhooks(
    State(dashboard): State<Dashboard>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    paging::query(query, &[])?;
    let inner = &dashboard.inner;
    if !inner.services.contains(&"webhooks") {
        return Ok(Json(json!({"items": []})));
    }
    let unavailable = |e: String| ApiError::with(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e);
    let mut items = crate::webhooks::endpoints(&inner.store)
        .await
        .map_err(unavailable)?;
    for endpoint in &mut items {
        let id = endpoint["id"].as_str().unwrap_or_default().to_owned();
        let attempts = crate::webhooks::recent_attempts(&inner.store, &id, WEBHOOK_ATTEMPTS)
            .await
            .map_err(unavailable)?;
        endpoint["recent_attempts"] = Value::Array(attempts);
    }
    Ok(Json(json!({ "items": items })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataschema_urns_read_back() {
        assert_eq!(
            schema_ref(Some("urn:ovasabi:schema:order.placed:2")),
            Some(SchemaRef {
                event_type: "order.placed".into(),
                version: 2
            })
        );
        assert_eq!(schema_ref(Some("https://example.com/s.json")), None);
        assert_eq!(schema_ref(Some("urn:ovasabi:schema:order.placed:x")), None);
        assert_eq!(schema_ref(None), None);
    }

    #[test]
    fn quantiles_interpolate_within_their_bucket() {
        // 10 observations ≤ 1 ms, 10 more ≤ 2 ms, 0 above.
        let buckets = [(0.001, 10), (0.002, 20), (f64::INFINITY, 20)];
        assert_eq!(quantile(&buckets, 0.5), Some(0.001));
        let p75 = quantile(&buckets, 0.75).unwrap();
        assert!((p75 - 0.0015).abs() < 1e-12, "{p75}");
        assert_eq!(quantile(&buckets, 1.0), Some(0.002));
        assert_eq!(quantile(&[(0.001, 0), (f64::INFINITY, 0)], 0.5), None);
        // Past the last finite bound: that bound.
        assert_eq!(
            quantile(&[(0.001, 0), (f64::INFINITY, 4)], 0.5),
            Some(0.001)
        );
    }

    #[test]
    fn the_series_counts_differences_per_interval() {
        let mut series = Series::default();
        let offsets = |n: u64| {
            Some(HashMap::from([
                ("a.events".to_owned(), n),
                ("a.events.dlq".to_owned(), 1),
            ]))
        };
        let group = |received: u64| {
            vec![(
                "g".to_owned(),
                GroupCounters {
                    received,
                    by_topic: BTreeMap::from([("a.events".to_owned(), received)]),
                    ..GroupCounters::default()
                },
            )]
        };
        series.add(Utc::now(), offsets(10), group(4));
        assert!(series.points.is_empty(), "the first sample is the baseline");
        series.add(Utc::now(), offsets(25), group(9));
        let point = series.points.back().unwrap();
        assert_eq!(point.topics, BTreeMap::from([("a.events".to_owned(), 15)]));
        assert_eq!(point.groups["g"].handled, 5);
        assert_eq!(point.groups["g"].by_topic["a.events"], 5);
        assert_eq!(series.topic_rate("a.events"), 3.0);
        assert_eq!(series.group_rate("g", Some("a.events")), 1.0);
        // A failed topic listing keeps the last offsets.
        series.add(Utc::now(), None, group(9));
        series.add(Utc::now(), offsets(30), group(9));
        assert_eq!(series.points.back().unwrap().topics["a.events"], 5);
        for _ in 0..SERIES_POINTS + 5 {
            series.add(Utc::now(), offsets(30), group(9));
        }
        assert_eq!(series.points.len(), SERIES_POINTS);
    }

    #[test]
    fn operator_events_get_their_missing_attributes() {
        let event = operator_event(br#"{"type": "order.placed", "data": {"a": 1}}"#).unwrap();
        assert_eq!(event.ty, "order.placed");
        assert_eq!(event.source, "/ovasabi/operator");
        assert!(!event.id.is_empty() && event.time.is_some());
        assert_eq!(event.datacontenttype.as_deref(), Some("application/json"));
        let kept = operator_event(
            br#"{"type": "order.placed", "id": "e1", "source": "/x", "subject": "o1"}"#,
        )
        .unwrap();
        assert_eq!((kept.id.as_str(), kept.source.as_str()), ("e1", "/x"));
        assert_eq!(kept.subject.as_deref(), Some("o1"));
        for (body, field) in [
            (&b"nope"[..], "body"),
            (b"[1]", "body"),
            (b"{}", "type"),
            (br#"{"type": "OrderPlaced"}"#, "type"),
            (
                br#"{"type": "order.placed", "specversion": "0.3"}"#,
                "event",
            ),
        ] {
            let error = operator_event(body).unwrap_err();
            assert_eq!(
                error.field.as_deref(),
                Some(field),
                "{}: {error:?}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
