//! `GET /metrics` (Prometheus) and `GET /readyz` (readiness): what the process and its
//! database look like, for a scraper and for a load balancer or orchestrator.
//!
//! # `GET /metrics`
//!
//! The Prometheus text exposition format 0.0.4 (`content-type: text/plain; version=0.0.4`),
//! written by [`Monitor::render`]. Counters and the histogram are this process's, since it
//! started; gauges read from the database and the bus are the whole deployment's, read at
//! scrape time (each source at most [`CHECK_TIMEOUT`]; a source that fails or is too slow
//! leaves its metrics out, and says so in the log and in `ovasabi_scrape_errors`).
//!
//! | metric | type | labels | what |
//! | --- | --- | --- | --- |
//! | `ovasabi_up` | gauge | | 1: the process answers |
//! | `ovasabi_consumer_events_total` | counter | `service`, `group`, `outcome` | deliveries per consumer group: `received`, `acked`, `nacked`, `dead_lettered`, `settle_failed` (the bus refused the ack, nack or dead-letter), `unfinished` (abandoned at shutdown) |
//! | `ovasabi_consumer_events_by_type_total` | counter | `service`, `group`, `topic`, `type`, `outcome` | the same by topic and event type, for `received`, `acked`, `nacked`, `dead_lettered` (past [`ovasabi_middleware::stats::MAX_EVENT_KINDS`] pairs per group, under `_other`) |
//! | `ovasabi_consumer_published_total` | counter | `service`, `group` | events the group's handlers returned for the consumer to publish (not those written to the outbox) |
//! | `ovasabi_consumer_panics_total` | counter | `service`, `group` | handler calls that panicked |
//! | `ovasabi_handler_duration_seconds` | histogram | `service`, `group` | handler call durations, buckets [`ovasabi_middleware::stats::HANDLER_DURATION_BUCKETS`] |
//! | `ovasabi_consumer_lag` | gauge | `group`, `topic` | events published and not yet acked by the group, for this process's groups (from the bus's topic listing) |
//! | `ovasabi_outbox_backlog` | gauge | | outbox rows not yet published |
//! | `ovasabi_outbox_oldest_age_seconds` | gauge | | age of the oldest unpublished outbox row (0 when none) |
//! | `ovasabi_outbox_unreadable` | gauge | | outbox rows the relay set aside because their event does not decode (see [`ovasabi_store::outbox`]); never published until corrected by hand |
//! | `ovasabi_outbox_relay_published_total` | counter | | outbox rows this process's relay published |
//! | `ovasabi_outbox_relay_parked_total` | counter | | outbox events this process's relay parked on a dead-letter topic because the bus refused them |
//! | `ovasabi_events_published_total` | counter | `topic`, `type` | events this process's relay published, by topic and type |
//! | `ovasabi_webhook_deliveries` | gauge | `status` | webhook deliveries by status (`pending`, `delivered`, `failed`…), when the webhooks tables exist |
//! | `ovasabi_webhook_endpoints` | gauge | `state` | webhook endpoints by state (`active`, `paused`, `disabled`), when the webhooks tables exist |
//! | `ovasabi_webhook_endpoint_deliveries` | gauge | `endpoint`, `status` | each endpoint's deliveries by status, when the webhooks tables exist |
//! | `ovasabi_scrape_errors` | gauge | `source` | 1 for each source (`database`, `bus`) that failed during this scrape |
//! | `ovasabi_bus_up` | gauge | | 1 when the bus answered this scrape, 0 when it did not |
//!
//! # `GET /readyz`
//!
//! 200 `{"ready": true, "checks": {…}}` when every check passes, 503 with the same shape
//! otherwise; each check is `{"ok": bool, "error": "why" (when failing), …}`:
//!
//! - `database`: `SELECT 1` answers within [`CHECK_TIMEOUT`];
//! - `bus`: listing the topics answers within [`CHECK_TIMEOUT`];
//! - `outbox`: the oldest unpublished outbox row is younger than [`OUTBOX_STUCK_AFTER`] (or
//!   there is none), i.e. the relay is publishing; also gives `backlog`,
//!   `oldest_age_seconds` and `unreadable` (rows set aside do not make the process unready:
//!   the rows behind them go out).
//!
//! `GET /healthz` stays the liveness probe: it answers `ok` whenever the process serves HTTP.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use ovasabi_core::Bus;
use ovasabi_middleware::ConsumerStats;
use ovasabi_store::Store;
use serde::Serialize;
use serde_json::{json, Value};

use crate::relay::RelayHandle;
use crate::runtime::ConsumerInfo;
use crate::status::OutboxState;

/// The content type of `GET /metrics`.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// How long each source (the database, the bus) gets to answer during a scrape or a
/// readiness check.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// An unpublished outbox row older than this makes the process not ready: the relay is
/// stuck (or no process holds its lease).
pub const OUTBOX_STUCK_AFTER: Duration = Duration::from_secs(60);

/// What `/metrics` and `/readyz` read: the store, the bus, the relay, and the consumers the
/// runtime registered. Cheap to clone.
#[derive(Clone)]
pub struct Monitor {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    bus: Arc<dyn Bus>,
    relay: Option<RelayHandle>,
    consumers: RwLock<Vec<(ConsumerInfo, ConsumerStats)>>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("store", &self.inner.store)
            .field("consumers", &self.consumers().len())
            .finish_non_exhaustive()
    }
}

/// One readiness check's result.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Check {
    /// Whether it passed.
    pub ok: bool,
    /// Why not, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What else the check found (the outbox's `backlog` and `oldest_age_seconds`).
    #[serde(flatten)]
    pub details: BTreeMap<&'static str, Value>,
}

impl Check {
    fn pass() -> Check {
        Check {
            ok: true,
            error: None,
            details: BTreeMap::new(),
        }
    }

    fn fail(error: impl Into<String>) -> Check {
        Check {
            ok: false,
            error: Some(error.into()),
            details: BTreeMap::new(),
        }
    }
}

/// `GET /readyz`'s answer.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Readiness {
    /// Whether every check passed.
    pub ready: bool,
    /// Each check by name: `database`, `bus`, `outbox`.
    pub checks: BTreeMap<&'static str, Check>,
}

impl Monitor {
    /// A monitor of `store` and `bus` (and the outbox `relay`, for its counter), with no
    /// consumers yet.
    pub fn new(store: Store, bus: Arc<dyn Bus>, relay: Option<RelayHandle>) -> Monitor {
        Monitor {
            inner: Arc::new(Inner {
                store,
                bus,
                relay,
                consumers: RwLock::new(Vec::new()),
            }),
        }
    }

    /// Adds a consumer to the metrics: its identity and its live counters
    /// ([`ovasabi_middleware::Consumer::stats`]).
    pub fn register(&self, info: ConsumerInfo, stats: ConsumerStats) {
        self.inner
            .consumers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push((info, stats));
    }

    /// The consumers registered, with their counters.
    pub fn consumers(&self) -> Vec<(ConsumerInfo, ConsumerStats)> {
        self.inner
            .consumers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// `GET /metrics` and `GET /readyz`.
    pub fn routes(&self) -> axum::Router {
        let metrics = self.clone();
        let ready = self.clone();
        axum::Router::new()
            .route(
                "/metrics",
                axum::routing::get(move || {
                    let monitor = metrics.clone();
                    async move { monitor.metrics_response().await }
                }),
            )
            .route(
                "/readyz",
                axum::routing::get(move || {
                    let monitor = ready.clone();
                    async move { monitor.readyz_response().await }
                }),
            )
    }

    async fn metrics_response(&self) -> Response {
        ([(header::CONTENT_TYPE, CONTENT_TYPE)], self.render().await).into_response()
    }

    async fn readyz_response(&self) -> Response {
        let readiness = self.readiness().await;
        let status = if readiness.ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (status, axum::Json(readiness)).into_response()
    }

    /// The readiness checks (see the [module docs](self)).
    pub async fn readiness(&self) -> Readiness {
        let (database, bus, outbox) =
            tokio::join!(self.check_database(), self.check_bus(), self.check_outbox());
        let checks = BTreeMap::from([("database", database), ("bus", bus), ("outbox", outbox)]);
        Readiness {
            ready: checks.values().all(|c| c.ok),
            checks,
        }
    }

    async fn check_database(&self) -> Check {
        match within(self.inner.store.query_one("SELECT 1 AS one", &[])).await {
            Ok(_) => Check::pass(),
            Err(error) => Check::fail(format!("the database does not answer: {error}")),
        }
    }

    async fn check_bus(&self) -> Check {
        match within(self.inner.bus.topics()).await {
            Ok(_) => Check::pass(),
            Err(error) => Check::fail(format!("the bus does not answer: {error}")),
        }
    }

    async fn check_outbox(&self) -> Check {
        match within(self.outbox_state()).await {
            Ok(state) => {
                let limit = OUTBOX_STUCK_AFTER.as_secs_f64();
                let mut check = match state.oldest_age {
                    Some(age) if age >= limit => Check::fail(format!(
                        "the oldest unpublished outbox row is {age:.0} s old (limit {limit:.0} s): the outbox relay is not publishing"
                    )),
                    _ => Check::pass(),
                };
                check.details.insert("backlog", json!(state.backlog));
                check
                    .details
                    .insert("oldest_age_seconds", json!(state.oldest_age));
                check.details.insert("unreadable", json!(state.unreadable));
                check
            }
            Err(error) => Check::fail(format!("cannot read the outbox: {error}")),
        }
    }

    async fn outbox_state(&self) -> Result<OutboxState, String> {
        OutboxState::read(&self.inner.store, Utc::now())
            .await
            .map_err(|e| e.to_string())
    }

    /// Counts by status and by state of the webhooks' deliveries and endpoints; `None` when
    /// the webhooks tables are not in this database.
    async fn webhooks(&self) -> Result<Option<WebhookCounts>, String> {
        let store = &self.inner.store;
        if store
            .schema_version("webhooks")
            .await
            .map_err(|e| e.to_string())?
            .is_none()
        {
            return Ok(None);
        }
        let group = |sql: &'static str, column: &'static str| async move {
            let rows = store.query(sql, &[]).await.map_err(|e| e.to_string())?;
            rows.iter()
                .map(|row| {
                    let key: String = row.get(column).map_err(|e| e.to_string())?;
                    let n: u64 = row.get("n").map_err(|e| e.to_string())?;
                    Ok((key, n))
                })
                .collect::<Result<BTreeMap<String, u64>, String>>()
        };
        let mut deliveries = group(
            "SELECT status, COUNT(*) AS n FROM webhook_deliveries GROUP BY status",
            "status",
        )
        .await?;
        for status in ["pending", "delivered", "failed"] {
            deliveries.entry(status.to_owned()).or_insert(0);
        }
        let mut endpoints = group(
            "SELECT state, COUNT(*) AS n FROM webhook_endpoints GROUP BY state",
            "state",
        )
        .await?;
        for state in ["active", "paused", "disabled"] {
            endpoints.entry(state.to_owned()).or_insert(0);
        }
        let per_endpoint = store
            .query(
                "SELECT endpoint_id, status, COUNT(*) AS n FROM webhook_deliveries
                 GROUP BY endpoint_id, status",
                &[],
            )
            .await
            .map_err(|e| e.to_string())?
            .iter()
            .map(|row| {
                let endpoint: String = row.get("endpoint_id").map_err(|e| e.to_string())?;
                let status: String = row.get("status").map_err(|e| e.to_string())?;
                let n: u64 = row.get("n").map_err(|e| e.to_string())?;
                Ok(((endpoint, status), n))
            })
            .collect::<Result<BTreeMap<(String, String), u64>, String>>()?;
        Ok(Some(WebhookCounts {
            deliveries,
            endpoints,
            per_endpoint,
        }))
    }

    /// `(group, topic, lag)` for this process's groups.
    async fn lag(&self, groups: &HashSet<String>) -> Result<Vec<(String, String, u64)>, String> {
        let topics = self.inner.bus.topics().await.map_err(|e| e.to_string())?;
        let mut lag = Vec::new();
        for topic in topics {
            for group in topic.groups {
                if groups.contains(&group.group) {
                    lag.push((group.group, topic.topic.clone(), group.lag));
                }
            }
        }
        lag.sort();
        Ok(lag)
    }

    /// The metrics page (see the [module docs](self)).
    pub async fn render(&self) -> String {
        let consumers = self.consumers();
        let groups: HashSet<String> = consumers.iter().map(|(c, _)| c.group.clone()).collect();
        let (outbox, webhooks, lag) = tokio::join!(
            within(self.outbox_state()),
            within(self.webhooks()),
            within(self.lag(&groups)),
        );
        let mut errors: BTreeMap<&str, bool> =
            BTreeMap::from([("bus", false), ("database", false)]);
        let mut page = Page::default();

        page.family("ovasabi_up", "gauge", "1: the process answers.");
        page.sample("ovasabi_up", &[], 1);

        let snapshots: Vec<_> = consumers
            .iter()
            .map(|(info, stats)| (info, stats.snapshot()))
            .collect();
        page.family(
            "ovasabi_consumer_events_total",
            "counter",
            "Deliveries per consumer group and outcome since the process started.",
        );
        for (info, s) in &snapshots {
            for (outcome, n) in [
                ("received", s.received),
                ("acked", s.acked),
                ("nacked", s.nacked),
                ("dead_lettered", s.dead_lettered),
                ("settle_failed", s.settle_failed),
                ("unfinished", s.unfinished),
            ] {
                page.sample(
                    "ovasabi_consumer_events_total",
                    &[
                        ("service", info.service),
                        ("group", &info.group),
                        ("outcome", outcome),
                    ],
                    n,
                );
            }
        }

        page.family(
            "ovasabi_consumer_events_by_type_total",
            "counter",
            "Deliveries per consumer group, topic, event type and outcome since the process started.",
        );
        for (info, stats) in &consumers {
            for e in stats.by_event() {
                for (outcome, n) in [
                    ("received", e.received),
                    ("acked", e.acked),
                    ("nacked", e.nacked),
                    ("dead_lettered", e.dead_lettered),
                ] {
                    page.sample(
                        "ovasabi_consumer_events_by_type_total",
                        &[
                            ("service", info.service),
                            ("group", &info.group),
                            ("topic", &e.topic),
                            ("type", &e.event_type),
                            ("outcome", outcome),
                        ],
                        n,
                    );
                }
            }
        }

        page.family(
            "ovasabi_consumer_published_total",
            "counter",
            "Events each consumer group's handlers returned and the consumer published (events written to the outbox count in ovasabi_outbox_relay_published_total instead).",
        );
        for (info, s) in &snapshots {
            page.sample(
                "ovasabi_consumer_published_total",
                &[("service", info.service), ("group", &info.group)],
                s.published,
            );
        }

        page.family(
            "ovasabi_consumer_panics_total",
            "counter",
            "Handler calls that panicked, per consumer group.",
        );
        for (info, s) in &snapshots {
            page.sample(
                "ovasabi_consumer_panics_total",
                &[("service", info.service), ("group", &info.group)],
                s.panicked,
            );
        }

        page.family(
            "ovasabi_handler_duration_seconds",
            "histogram",
            "How long handler calls took, per consumer group.",
        );
        for (info, stats) in &consumers {
            let h = stats.handler_duration();
            let labels = [("service", info.service), ("group", info.group.as_str())];
            for (bound, count) in &h.buckets {
                let le = if bound.is_infinite() {
                    "+Inf".to_owned()
                } else {
                    bound.to_string()
                };
                let mut with_le = labels.to_vec();
                with_le.push(("le", &le));
                page.sample("ovasabi_handler_duration_seconds_bucket", &with_le, count);
            }
            page.sample(
                "ovasabi_handler_duration_seconds_sum",
                &labels,
                Float(h.sum_seconds),
            );
            page.sample("ovasabi_handler_duration_seconds_count", &labels, h.count);
        }

        match lag {
            Ok(lag) => {
                page.family(
                    "ovasabi_consumer_lag",
                    "gauge",
                    "Events published and not yet acked, per consumer group of this process and topic.",
                );
                for (group, topic, n) in lag {
                    page.sample(
                        "ovasabi_consumer_lag",
                        &[("group", &group), ("topic", &topic)],
                        n,
                    );
                }
            }
            Err(error) => {
                tracing::warn!(%error, "metrics: cannot read the consumer lag from the bus");
                errors.insert("bus", true);
            }
        }

        match outbox {
            Ok(state) => {
                page.family(
                    "ovasabi_outbox_backlog",
                    "gauge",
                    "Outbox rows not yet published.",
                );
                page.sample("ovasabi_outbox_backlog", &[], state.backlog);
                page.family(
                    "ovasabi_outbox_oldest_age_seconds",
                    "gauge",
                    "Age of the oldest unpublished outbox row (0 when none).",
                );
                page.sample(
                    "ovasabi_outbox_oldest_age_seconds",
                    &[],
                    Float(state.oldest_age.unwrap_or(0.0)),
                );
                page.family(
                    "ovasabi_outbox_unreadable",
                    "gauge",
                    "Outbox rows set aside because their event does not decode; never published until corrected by hand.",
                );
                page.sample("ovasabi_outbox_unreadable", &[], state.unreadable);
            }
            Err(error) => {
                tracing::warn!(%error, "metrics: cannot read the outbox");
                errors.insert("database", true);
            }
        }
        if let Some(relay) = &self.inner.relay {
            page.family(
                "ovasabi_outbox_relay_published_total",
                "counter",
                "Outbox rows this process's relay published.",
            );
            page.sample(
                "ovasabi_outbox_relay_published_total",
                &[],
                relay.published(),
            );
            page.family(
                "ovasabi_outbox_relay_parked_total",
                "counter",
                "Outbox events this process's relay parked on a dead-letter topic because the bus refused them.",
            );
            page.sample("ovasabi_outbox_relay_parked_total", &[], relay.parked());
            page.family(
                "ovasabi_events_published_total",
                "counter",
                "Events this process's relay published, by topic and type.",
            );
            for ((topic, ty), n) in relay.published_by_type() {
                page.sample(
                    "ovasabi_events_published_total",
                    &[("topic", topic.as_str()), ("type", ty.as_str())],
                    n,
                );
            }
        }

        match webhooks {
            Ok(Some(counts)) => {
                page.family(
                    "ovasabi_webhook_deliveries",
                    "gauge",
                    "Webhook deliveries by status.",
                );
                for (status, n) in &counts.deliveries {
                    page.sample("ovasabi_webhook_deliveries", &[("status", status)], *n);
                }
                page.family(
                    "ovasabi_webhook_endpoints",
                    "gauge",
                    "Webhook endpoints by state.",
                );
                for (state, n) in &counts.endpoints {
                    page.sample("ovasabi_webhook_endpoints", &[("state", state)], *n);
                }
                page.family(
                    "ovasabi_webhook_endpoint_deliveries",
                    "gauge",
                    "Each webhook endpoint's deliveries by status.",
                );
                for ((endpoint, status), n) in &counts.per_endpoint {
                    page.sample(
                        "ovasabi_webhook_endpoint_deliveries",
                        &[("endpoint", endpoint), ("status", status)],
                        *n,
                    );
                }
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, "metrics: cannot read the webhooks' tables");
                errors.insert("database", true);
            }
        }

        page.family(
            "ovasabi_scrape_errors",
            "gauge",
            "1 for each source that failed during this scrape (its metrics are left out).",
        );
        let bus_failed = errors.get("bus").copied().unwrap_or(false);
        for (source, failed) in errors {
            page.sample(
                "ovasabi_scrape_errors",
                &[("source", source)],
                u8::from(failed),
            );
        }
        page.family(
            "ovasabi_bus_up",
            "gauge",
            "1 when the bus answered this scrape, 0 when it did not.",
        );
        page.sample("ovasabi_bus_up", &[], u8::from(!bus_failed));
        page.out
    }
}

struct WebhookCounts {
    deliveries: BTreeMap<String, u64>,
    endpoints: BTreeMap<String, u64>,
    per_endpoint: BTreeMap<(String, String), u64>,
}

/// `work`, or an error if it takes longer than [`CHECK_TIMEOUT`].
async fn within<T, E: std::fmt::Display>(
    work: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(CHECK_TIMEOUT, work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!(
            "no answer within {} s",
            CHECK_TIMEOUT.as_secs_f64()
        )),
    }
}

/// A float sample value, in a form Prometheus reads (`+Inf`, `-Inf`, `NaN`).
struct Float(f64);

impl std::fmt::Display for Float {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            v if v.is_nan() => f.write_str("NaN"),
            v if v == f64::INFINITY => f.write_str("+Inf"),
            v if v == f64::NEG_INFINITY => f.write_str("-Inf"),
            v => write!(f, "{v}"),
        }
    }
}

/// A page in the text exposition format.
#[derive(Default)]
struct Page {
    out: String,
}

impl Page {
    /// The `# HELP` and `# TYPE` lines of a family; its samples follow.
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', r"\\").replace('\n', r"\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample: `name{labels} value`.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(key);
                self.out.push_str("=\"");
                for c in value.chars() {
                    match c {
                        '\\' => self.out.push_str(r"\\"),
                        '"' => self.out.push_str("\\\""),
                        '\n' => self.out.push_str(r"\n"),
                        c => self.out.push(c),
                    }
                }
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut page = Page::default();
        page.family("m", "gauge", "a \\ b\nc");
        page.sample("m", &[("a", "x\"y\\z\nw"), ("b", "v")], 3);
        page.sample("m", &[], Float(f64::INFINITY));
        page.sample("m", &[], Float(0.25));
        assert_eq!(
            page.out,
            "# HELP m a \\\\ b\\nc\n# TYPE m gauge\nm{a=\"x\\\"y\\\\z\\nw\",b=\"v\"} 3\nm +Inf\nm 0.25\n"
        );
    }
}
