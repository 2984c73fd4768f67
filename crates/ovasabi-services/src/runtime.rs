//! The runtime: runs chosen [`Service`]s on one bus and one store, in one process.
//!
//! [`Runtime::start`] opens the store (applying every service's migrations), asks each
//! service for its consumers, starts them, and returns once every consumer has subscribed.
//! [`Runtime::wait`] then runs until the shutdown future completes (Ctrl-C, SIGTERM) or a
//! consumer fails, and shuts down gracefully: running handlers finish for up to the grace
//! period; what is not finished stays unacked, for the bus to deliver again — to another
//! process of the same group if one runs.
//!
//! Several processes running the same service form one consumer group per consumer: the bus
//! shares the events among them, and when one dies its unacked events go to the others after
//! the ack timeout. A service makes that safe by recording what it processed in the same
//! transaction as its effect ([`ovasabi_store::Inbox`]), so an event delivered twice takes
//! effect once.
//!
//! # HTTP
//!
//! With [`Settings::http`], the runtime serves every service's routes and:
//!
//! - `GET /healthz` — liveness: `ok` whenever the process serves HTTP;
//! - `GET /readyz` — readiness: 200 `{"ready": true, "checks": {…}}` when the database
//!   answers `SELECT 1`, the bus lists its topics, and the oldest unpublished outbox row is
//!   younger than [`crate::metrics::OUTBOX_STUCK_AFTER`] (or there is none); 503 with the
//!   same shape, each failing check giving its `error`, otherwise;
//! - `GET /metrics` — Prometheus metrics (text format 0.0.4): every consumer's deliveries by
//!   outcome (and by topic and event type), handler durations, consumer lag, the outbox
//!   backlog and its oldest row's age, webhook deliveries and endpoints; see
//!   [`crate::metrics`] for the list;
//! - `GET /v1/status` — the platform at a glance ([`crate::status`]): topics with their events
//!   and dead letters, groups with their lag, the outbox backlog, webhook endpoints by
//!   state (what `ovasabi status` prints);
//! - `GET /v1/dlq?topic=&reason=&group=&limit=`, `GET /v1/dlq/{id}`, `POST /v1/dlq/redrive`
//!   — dead letters listed, shown and re-driven at most once, as `ovasabi dlq` does
//!   ([`crate::dlq`]; its table `dlq_redrives` is migrated with the services' tables);
//! - `GET /openapi.json` — the OpenAPI document of the running services' APIs.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ovasabi_core::{Bus, BusError, Ordering, SubscribeOptions};
use ovasabi_middleware::{Consumer, Handler, RunSummary};
use ovasabi_store::{Migration, MigrationSet, Store, StoreConfig, StoreError};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::http::Api;
use crate::metrics::Monitor;
use crate::relay::{Relay, RelayHandle};

/// Settings every service of a process shares.
#[derive(Clone, Debug)]
pub struct Settings {
    /// This process's name among the processes running the same services (recorded by
    /// services that note who did what; default `<host>-<pid>`).
    pub instance: String,
    /// How long a delivery may stay unacked before the bus delivers it again (to any
    /// member of the group).
    pub ack_timeout: Duration,
    /// Handlers running at once per consumer.
    pub concurrency: usize,
    /// How long running handlers get to finish at shutdown.
    pub shutdown_grace: Duration,
    /// Where the HTTP API listens; `None` for no HTTP server.
    pub http: Option<SocketAddr>,
    /// A pause before each pass of the outbox relay (zero but in crash tests).
    pub relay_delay: Duration,
    /// Whether requests' events are written to the outbox (off only to measure its cost).
    pub publish_events: bool,
    /// The event contracts served at `/v1/schemas` and `/asyncapi.yaml` (not served when
    /// `None`).
    pub schemas: Option<Arc<ovasabi_schema::Registry>>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            instance: default_instance(),
            ack_timeout: SubscribeOptions::DEFAULT_ACK_TIMEOUT,
            concurrency: Consumer::<Arc<dyn Handler>>::DEFAULT_CONCURRENCY,
            shutdown_grace: Consumer::<Arc<dyn Handler>>::DEFAULT_SHUTDOWN_GRACE,
            http: None,
            relay_delay: Duration::ZERO,
            publish_events: true,
            schemas: None,
        }
    }
}

/// `<host>-<pid>`: unique among the processes of a deployment.
pub fn default_instance() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "ovasabi".to_owned());
    format!("{host}-{}", std::process::id())
}

/// What a service is given when it starts.
#[derive(Clone)]
pub struct Context {
    /// The bus.
    pub bus: Arc<dyn Bus>,
    /// The database, with every started service's migrations applied.
    pub store: Store,
    /// The process's settings.
    pub settings: Settings,
    /// What HTTP handlers share: the store and the outbox relay.
    pub api: Api,
}

impl Context {
    /// Subscription options for `group` on `topics` with the process's settings: the ack
    /// timeout, in-flight deliveries bounded by the concurrency (so a member does not sit on
    /// events other members could take), and the given ordering.
    pub fn subscribe_options(
        &self,
        group: &str,
        topics: &[String],
        ordering: Ordering,
    ) -> Result<SubscribeOptions, BusError> {
        Ok(SubscribeOptions::new(group, topics)?
            .ack_timeout(self.settings.ack_timeout)
            .max_in_flight(self.settings.concurrency.max(1) * 2)
            .ordering(ordering))
    }
}

impl Context {
    /// The consumer of `service`'s group `group` on `topics`, with the process's settings
    /// ([`Context::subscribe_options`]) and `handler`; a bad topic is a configuration error
    /// naming the service.
    pub fn consumer(
        &self,
        service: &'static str,
        group: &str,
        topics: &[String],
        ordering: Ordering,
        handler: Arc<dyn Handler>,
    ) -> Result<ConsumerSpec, ServiceError> {
        let options = self
            .subscribe_options(group, topics, ordering)
            .map_err(|e| ServiceError::Config {
                service,
                reason: format!("subscribing to {}: {e}", topics.join(", ")),
            })?;
        Ok(ConsumerSpec { options, handler })
    }
}

/// One consumer a service runs: a group's subscription and the handler of its events.
pub struct ConsumerSpec {
    /// The subscription (its group and topics).
    pub options: SubscribeOptions,
    /// What handles each event.
    pub handler: Arc<dyn Handler>,
}

/// A part of the platform that `ovasabi serve <name>` runs (and `ovasabi up` runs with all
/// the others).
pub trait Service: Send + Sync + 'static {
    /// The name on the command line, e.g. `audit`.
    fn name(&self) -> &'static str;
    /// One line on what it does, for `ovasabi serve --list`.
    fn about(&self) -> &'static str;
    /// The tables it owns. Its component name is the service's name.
    fn migrations(&self) -> MigrationSet;
    /// The consumers to run, built once the store is open.
    fn consumers(&self, ctx: &Context) -> Result<Vec<ConsumerSpec>, ServiceError> {
        let _ = ctx;
        Ok(Vec::new())
    }
    /// Its HTTP routes (under `/v1/…`), if it has an API.
    fn routes(&self, ctx: &Context) -> Option<axum::Router> {
        let _ = ctx;
        None
    }
    /// Its part of the OpenAPI document: `{"paths": {…}, "schemas": {…}}` (either may be
    /// missing).
    fn openapi(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    /// Work it runs beside its consumers (a dispatcher, a chainer…), started once they have
    /// subscribed. Each task runs until `stop` is cancelled, which happens after the
    /// consumers have stopped; the runtime then waits for it (up to the shutdown grace).
    fn tasks(&self, ctx: &Context, stop: CancellationToken) -> Vec<Task> {
        let _ = (ctx, stop);
        Vec::new()
    }
}

/// A service's background work ([`Service::tasks`]).
pub type Task = std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Why services could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// A name on the command line is not a service.
    #[error("there is no service `{name}`; the services are: {known}")]
    Unknown {
        /// The name given.
        name: String,
        /// The names there are, comma-separated.
        known: String,
    },
    /// No service was named.
    #[error("name at least one service to run; the services are: {known}")]
    NoneChosen {
        /// The names there are, comma-separated.
        known: String,
    },
    /// A service's configuration is wrong.
    #[error("service `{service}`: {reason}")]
    Config {
        /// The service.
        service: &'static str,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The database could not be opened or migrated.
    #[error("{error} (the database is chosen with --db / OVASABI_DB; now {database})")]
    Store {
        /// The database (without password).
        database: String,
        /// The error.
        #[source]
        error: Box<StoreError>,
    },
    /// A consumer could not subscribe, or its subscription failed.
    #[error("service `{service}`, consumer group `{group}`: {error}")]
    Consumer {
        /// The service.
        service: &'static str,
        /// The group.
        group: String,
        /// The bus's error.
        #[source]
        error: BusError,
    },
    /// A consumer's task panicked (a bug: please report it with the log).
    #[error("a consumer task failed: {reason}")]
    Crashed {
        /// The panic.
        reason: String,
    },
    /// The HTTP server could not listen.
    #[error("cannot listen for HTTP on {addr}: {error}; choose another address with --http")]
    Http {
        /// The address.
        addr: SocketAddr,
        /// Why.
        error: String,
    },
    /// A subscription ended while the process was not shutting down (the bus closed).
    #[error("service `{service}`, consumer group `{group}`: the subscription ended unexpectedly (the bus closed)")]
    Ended {
        /// The service.
        service: &'static str,
        /// The group.
        group: String,
    },
}

impl ServiceError {
    /// Whether the person running the command caused it (a wrong name or setting).
    pub fn is_user_error(&self) -> bool {
        match self {
            ServiceError::Unknown { .. }
            | ServiceError::NoneChosen { .. }
            | ServiceError::Config { .. }
            | ServiceError::Http { .. } => true,
            ServiceError::Consumer { error, .. } => error.is_user_error(),
            ServiceError::Store { .. }
            | ServiceError::Ended { .. }
            | ServiceError::Crashed { .. } => false,
        }
    }
}

/// A consumer the runtime started.
#[derive(Clone, Debug)]
pub struct ConsumerInfo {
    /// Its service.
    pub service: &'static str,
    /// Its group.
    pub group: String,
    /// Its topics and patterns.
    pub topics: Vec<String>,
}

/// How one consumer ended.
#[derive(Clone, Debug)]
pub struct ConsumerReport {
    /// Which consumer.
    pub consumer: ConsumerInfo,
    /// What it did.
    pub summary: RunSummary,
}

/// Services running in this process.
pub struct Runtime {
    consumers: Vec<ConsumerInfo>,
    tasks: JoinSet<(usize, Result<RunSummary, BusError>)>,
    stop: CancellationToken,
    store: Store,
    relay: Option<(JoinHandle<()>, CancellationToken, RelayHandle)>,
    http: Option<(SocketAddr, JoinHandle<()>, CancellationToken)>,
    /// The services' background tasks, and what stops them.
    background: (Vec<JoinHandle<()>>, CancellationToken),
    grace: Duration,
    monitor: Monitor,
}

/// The runtime's own tables: idempotency of HTTP requests, the outbox relay's lease.
const RUNTIME_MIGRATIONS: MigrationSet = MigrationSet::new(
    "ovasabi_runtime",
    &[Migration::new(
        1,
        "http_idempotency and outbox_relay_lease",
        "CREATE TABLE http_idempotency (
            scope TEXT NOT NULL,
            idempotency_key TEXT NOT NULL,
            request_hash TEXT NOT NULL,
            status INTEGER NOT NULL,
            body TEXT NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (scope, idempotency_key)
        );
        CREATE TABLE outbox_relay_lease (
            id INTEGER PRIMARY KEY,
            owner TEXT NOT NULL,
            expires_at TIMESTAMPTZ NOT NULL
        );",
    )],
);

impl Runtime {
    /// Opens the store with the services' migrations, starts their consumers on `bus`, and
    /// returns once all have subscribed.
    pub async fn start(
        services: &[Arc<dyn Service>],
        bus: Arc<dyn Bus>,
        database: &StoreConfig,
        settings: Settings,
    ) -> Result<Runtime, ServiceError> {
        // The dead letters' re-drive records, which `/v1/dlq/redrive` writes.
        let mut migrations: Vec<MigrationSet> = vec![RUNTIME_MIGRATIONS, crate::dlq::MIGRATIONS];
        migrations.extend(services.iter().map(|s| s.migrations()));
        let store =
            Store::open(database, &migrations)
                .await
                .map_err(|error| ServiceError::Store {
                    database: database.to_string(),
                    error: Box::new(error),
                })?;
        let relay = Relay::new(store.clone(), bus.clone(), settings.instance.clone())
            .with_delay(settings.relay_delay);
        let relay_handle = relay.handle();
        let relay_stop = CancellationToken::new();
        let relay_task = tokio::spawn(relay.run(relay_stop.clone(), settings.shutdown_grace));
        let ctx = Context {
            bus: bus.clone(),
            store: store.clone(),
            settings: settings.clone(),
            api: Api {
                store: store.clone(),
                relay: relay_handle.clone(),
                publish: settings.publish_events,
            },
        };
        let monitor = Monitor::new(store.clone(), bus.clone(), Some(relay_handle.clone()));
        let stop = CancellationToken::new();
        let mut runtime = Runtime {
            consumers: Vec::new(),
            tasks: JoinSet::new(),
            stop: stop.clone(),
            store,
            relay: Some((relay_task, relay_stop, relay_handle)),
            http: None,
            background: (Vec::new(), CancellationToken::new()),
            grace: settings.shutdown_grace,
            monitor: monitor.clone(),
        };
        if let Some(addr) = settings.http {
            match serve_http(services, &ctx, &monitor, addr).await {
                Ok(http) => runtime.http = Some(http),
                Err(e) => {
                    runtime.stop_support().await;
                    return Err(e);
                }
            }
        }
        let mut subscribed = Vec::new();
        for service in services {
            for spec in service.consumers(&ctx)? {
                let info = ConsumerInfo {
                    service: service.name(),
                    group: spec.options.group.clone(),
                    topics: spec
                        .options
                        .topics
                        .iter()
                        .map(|t| t.as_str().to_owned())
                        .collect(),
                };
                let (tx, rx) = tokio::sync::oneshot::channel();
                let consumer = Consumer::new(bus.clone(), bus.clone(), spec.options, spec.handler)
                    .concurrency(settings.concurrency)
                    .shutdown_grace(settings.shutdown_grace)
                    .notify_subscribed(tx);
                monitor.register(info.clone(), consumer.stats());
                let index = runtime.consumers.len();
                let token = stop.child_token();
                runtime
                    .tasks
                    .spawn(async move { (index, consumer.run(token).await) });
                runtime.consumers.push(info);
                subscribed.push(rx);
            }
        }
        for (index, rx) in subscribed.into_iter().enumerate() {
            if rx.await.is_err() {
                // The consumer ended before subscribing: its task holds the reason.
                let error = runtime.first_failure(index).await;
                runtime.stop.cancel();
                while runtime.tasks.join_next().await.is_some() {}
                runtime.stop_support().await;
                return Err(error);
            }
        }
        let background_stop = runtime.background.1.clone();
        for service in services {
            for task in service.tasks(&ctx, background_stop.clone()) {
                runtime.background.0.push(tokio::spawn(task));
            }
        }
        Ok(runtime)
    }

    /// The consumers running.
    pub fn consumers(&self) -> &[ConsumerInfo] {
        &self.consumers
    }

    /// What `/metrics` and `/readyz` read: the consumers' live counters, the store, the
    /// bus.
    pub fn monitor(&self) -> &Monitor {
        &self.monitor
    }

    /// Where the HTTP API listens, if it does.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|(addr, _, _)| *addr)
    }

    /// The outbox relay's handle.
    pub fn relay(&self) -> Option<&RelayHandle> {
        self.relay.as_ref().map(|(_, _, handle)| handle)
    }

    /// Stops the HTTP server (letting requests in progress finish), then the relay (which
    /// publishes what they committed first).
    async fn stop_support(&mut self) {
        if let Some((_, task, stop)) = self.http.take() {
            stop.cancel();
            if tokio::time::timeout(self.grace, task).await.is_err() {
                tracing::warn!("HTTP requests still running after the grace period; their effects are committed or rolled back whole");
            }
        }
        if let Some((task, stop, _)) = self.relay.take() {
            stop.cancel();
            let _ = task.await;
        }
    }

    /// The store the services use.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The error of the consumer at `index`, which has ended.
    async fn first_failure(&mut self, index: usize) -> ServiceError {
        while let Some(joined) = self.tasks.join_next().await {
            match joined {
                Ok((i, Err(error))) if i == index => return self.consumer_error(i, error),
                Ok((i, Ok(_))) if i == index => return self.ended(i),
                Ok(_) => {}
                Err(panic) => {
                    return ServiceError::Crashed {
                        reason: panic.to_string(),
                    }
                }
            }
        }
        self.ended(index)
    }

    fn consumer_error(&self, index: usize, error: BusError) -> ServiceError {
        ServiceError::Consumer {
            service: self.consumers[index].service,
            group: self.consumers[index].group.clone(),
            error,
        }
    }

    fn ended(&self, index: usize) -> ServiceError {
        ServiceError::Ended {
            service: self.consumers[index].service,
            group: self.consumers[index].group.clone(),
        }
    }

    /// Runs until `shutdown` completes or a consumer fails, then stops every consumer
    /// gracefully. Returns each consumer's summary, or the first failure.
    pub async fn wait(
        mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<Vec<ConsumerReport>, ServiceError> {
        let mut summaries: Vec<Option<RunSummary>> = vec![None; self.consumers.len()];
        let mut failure = None;
        tokio::pin!(shutdown);
        tokio::select! {
            _ = &mut shutdown => {}
            Some(joined) = self.tasks.join_next() => {
                failure = Some(match joined {
                    Ok((i, Ok(summary))) => {
                        summaries[i] = Some(summary);
                        self.ended(i)
                    }
                    Ok((i, Err(error))) => self.consumer_error(i, error),
                    Err(panic) => ServiceError::Crashed { reason: panic.to_string() },
                });
            }
        }
        self.stop_support().await;
        self.stop.cancel();
        while let Some(joined) = self.tasks.join_next().await {
            match joined {
                Ok((i, Ok(summary))) => summaries[i] = Some(summary),
                Ok((i, Err(error))) => {
                    failure.get_or_insert_with(|| self.consumer_error(i, error));
                }
                Err(panic) => {
                    failure.get_or_insert_with(|| ServiceError::Crashed {
                        reason: panic.to_string(),
                    });
                }
            }
        }
        let (tasks, stop) = std::mem::take(&mut self.background);
        stop.cancel();
        for task in tasks {
            if tokio::time::timeout(self.grace, task).await.is_err() {
                tracing::warn!("a background task was still running after the grace period");
            }
        }
        if let Some(failure) = failure {
            return Err(failure);
        }
        Ok(self
            .consumers
            .into_iter()
            .zip(summaries)
            .map(|(consumer, summary)| ConsumerReport {
                consumer,
                summary: summary.unwrap_or_default(),
            })
            .collect())
    }
}

/// Binds `addr` and serves every service's routes, `/healthz`, `/readyz`, `/metrics`,
/// `/v1/status`, `/v1/dlq…`, `/openapi.json` and the dashboard (`/`, see
/// [`crate::dashboard`]).
async fn serve_http(
    services: &[Arc<dyn Service>],
    ctx: &Context,
    monitor: &Monitor,
    addr: SocketAddr,
) -> Result<(SocketAddr, JoinHandle<()>, CancellationToken), ServiceError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| ServiceError::Http {
            addr,
            error: e.to_string(),
        })?;
    let local = listener.local_addr().map_err(|e| ServiceError::Http {
        addr,
        error: e.to_string(),
    })?;
    let openapi = crate::openapi::document(services);
    let stop = CancellationToken::new();
    let dashboard = crate::dashboard::Dashboard::new(
        ctx.bus.clone(),
        ctx.store.clone(),
        monitor.clone(),
        services.iter().map(|s| s.name()).collect(),
        ctx.settings.schemas.clone(),
    );
    let mut router = axum::Router::new()
        .merge(dashboard.routes())
        .route("/healthz", axum::routing::get(crate::http::healthz))
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let doc = openapi.clone();
                async move { axum::Json(doc) }
            }),
        )
        .merge(monitor.routes())
        .route(
            "/v1/status",
            axum::routing::get({
                let (bus, store) = (ctx.bus.clone(), ctx.store.clone());
                move || {
                    let (bus, store) = (bus.clone(), store.clone());
                    async move {
                        match crate::status::collect(bus.as_ref(), &store).await {
                            Ok(status) => {
                                axum::response::IntoResponse::into_response(axum::Json(status))
                            }
                            Err(e) => axum::response::IntoResponse::into_response(
                                crate::http::ApiError::with(
                                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                                    "unavailable",
                                    e,
                                ),
                            ),
                        }
                    }
                }
            }),
        )
        .merge(crate::dlq::routes(ctx.bus.clone(), ctx.store.clone()));
    if let Some(registry) = &ctx.settings.schemas {
        router = router.merge(crate::schemas::routes(registry.clone()));
    }
    for service in services {
        if let Some(routes) = service.routes(ctx) {
            router = router.merge(routes);
        }
    }
    let streams_end = stop.clone();
    let router = router
        .fallback(crate::http::not_found)
        .layer(axum::middleware::from_fn(crate::http::correlation))
        .layer(axum::middleware::from_fn(move |req, next| {
            end_streams_at(streams_end.clone(), req, next)
        }));
    let shutdown = stop.clone();
    let sampler = tokio::spawn(dashboard.run(stop.clone()));
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "the HTTP server stopped");
        }
        let _ = sampler.await;
    });
    Ok((local, task, stop))
}

/// Ends a Server-Sent Events response when `stop` is cancelled, so that a graceful shutdown
/// does not wait for the clients of endless streams (the dashboard's, notifications',
/// analytics'); an `EventSource` reconnects by itself once a server answers again.
async fn end_streams_at(
    stop: CancellationToken,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use futures::StreamExt;
    let response = next.run(req).await;
    let is_stream = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !is_stream {
        return response;
    }
    let (parts, body) = response.into_parts();
    let body = body.into_data_stream().take_until(stop.cancelled_owned());
    axum::response::Response::from_parts(parts, axum::body::Body::from_stream(body))
}
