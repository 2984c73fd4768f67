//! A platform for tests: chosen services on an embedded bus and SQLite in a temporary
//! directory (or any bus and database), the HTTP API on a free port, a real HTTP client, and
//! a reader of what reached the bus.

#![allow(dead_code, unreachable_pub, unused_macros)]

pub mod sse;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ovasabi_core::{Bus, Event, StartFrom, SubscribeOptions};
use ovasabi_embedded::{EmbeddedBus, EmbeddedConfig};
use ovasabi_schema::{Contracts, Registry, ValidatingBus};
use ovasabi_services::{Runtime, Service, Settings};
use ovasabi_store::StoreConfig;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Running services with their HTTP API.
pub struct Platform {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The HTTP client.
    pub client: reqwest::Client,
    /// The bus (checking contracts on publish, as `ovasabi up` does).
    pub bus: Arc<dyn Bus>,
    /// The database.
    pub database: StoreConfig,
    stop: Option<oneshot::Sender<()>>,
    running: Option<JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
}

/// The contracts `ovasabi up` enforces.
pub fn contracts() -> Contracts {
    let registry = Registry::builtin().unwrap_or_else(|e| panic!("schemas load: {e:?}"));
    Contracts::new(Arc::new(registry), ovasabi_events::upcasters())
}

impl Platform {
    /// `services` on a fresh embedded bus and SQLite database.
    pub async fn embedded(services: Vec<Arc<dyn Service>>) -> Platform {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn Bus> = Arc::new(
            EmbeddedBus::open(EmbeddedConfig::new(dir.path().join("bus")))
                .await
                .unwrap(),
        );
        let database = StoreConfig::sqlite(dir.path().join("ovasabi.db"));
        let mut platform = Platform::start(services, inner, database).await;
        platform._dir = Some(dir);
        platform
    }

    /// `services` on `bus` and `database`.
    pub async fn start(
        services: Vec<Arc<dyn Service>>,
        inner: Arc<dyn Bus>,
        database: StoreConfig,
    ) -> Platform {
        ovasabi_webhooks::install_tls();
        let bus: Arc<dyn Bus> = Arc::new(ValidatingBus::new(inner, contracts()));
        let settings = Settings {
            instance: "test".to_owned(),
            ack_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
            http: Some("127.0.0.1:0".parse().unwrap()),
            schemas: Some(Arc::new(
                Registry::builtin().unwrap_or_else(|e| panic!("schemas load: {e:?}")),
            )),
            ..Settings::default()
        };
        let runtime = Runtime::start(&services, bus.clone(), &database, settings)
            .await
            .unwrap_or_else(|e| panic!("services start: {e}"));
        let addr = runtime.http_addr().expect("the HTTP API listens");
        let (tx, rx) = oneshot::channel::<()>();
        let running = tokio::spawn(async move {
            let reports = runtime
                .wait(async move {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = reports {
                panic!("services failed: {e}");
            }
        });
        Platform {
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            bus,
            database,
            stop: Some(tx),
            running: Some(running),
            _dir: None,
        }
    }

    /// `GET path`'s body as text (panics unless the answer is 200).
    pub async fn text(&self, path: &str) -> String {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.text().await.unwrap()
    }

    /// POSTs `body` as JSON (with an `Idempotency-Key` when given); the status, the JSON
    /// answer and the headers.
    pub async fn post(
        &self,
        path: &str,
        body: &Value,
        idempotency_key: Option<&str>,
    ) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        let mut request = self.client.post(format!("{}{path}", self.base)).json(body);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let json = response.json().await.unwrap_or(Value::Null);
        (status, json, headers)
    }

    /// POSTs with extra headers.
    pub async fn post_with(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        let mut request = self.client.post(format!("{}{path}", self.base)).json(body);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let json = response.json().await.unwrap_or(Value::Null);
        (status, json, headers)
    }

    /// GETs `path`; the status and the JSON answer.
    /// POSTs `body` to `path` (no idempotency key); panics unless the answer is 2xx.
    pub async fn post_ok(&self, path: &str, body: Value) -> Value {
        let (status, answer, _) = self.post(path, &body, None).await;
        assert!(status.is_success(), "{path}: {status} {answer}");
        answer
    }

    /// Registers `email` through `POST /v1/users` (201 expected); the user's id.
    pub async fn register(&self, email: &str) -> String {
        let (status, user, _) = self
            .post("/v1/users", &serde_json::json!({ "email": email }), None)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{user}");
        user["id"].as_str().unwrap().to_owned()
    }

    /// `GET path` once `ready(status, body)` holds; panics after 15 s.
    pub async fn get_when(&self, path: &str, ready: impl Fn(StatusCode, &Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (status, body) = self.get(path).await;
            if ready(status, &body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{path}: never ready: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET path` with `Authorization: Bearer <key>` once `ready(body)` holds; panics after
    /// 15 s.
    pub async fn get_when_with(
        &self,
        path: &str,
        key: &str,
        ready: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let response = self
                .client
                .get(format!("{}{path}", self.base))
                .bearer_auth(key)
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if status.is_success() && ready(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{path}: never ready: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The events on `topic` from the beginning, once at least `expected` arrived (or
    /// `timeout` passed), and then whatever follows within 200 ms.
    pub async fn events(&self, topic: &str, expected: usize, timeout: Duration) -> Vec<Event> {
        let options = SubscribeOptions::new(format!("reader-{}", uuid_like()), [topic])
            .unwrap()
            .start(StartFrom::Beginning)
            .ephemeral(true);
        let mut sub = self.bus.subscribe(options).await.unwrap();
        let mut events = Vec::new();
        let deadline = Instant::now() + timeout;
        loop {
            let wait = if events.len() >= expected {
                Duration::from_millis(200)
            } else {
                deadline.saturating_duration_since(Instant::now())
            };
            match tokio::time::timeout(wait, sub.next()).await {
                Ok(Some(Ok(delivery))) => {
                    events.push(delivery.event().clone());
                    let _ = delivery.ack().await;
                }
                _ => break,
            }
        }
        sub.close().await;
        events
    }

    /// Stops the services (gracefully) and waits.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(running) = self.running.take() {
            running.await.unwrap();
        }
        let _ = self.bus.close().await;
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

// ---------------------------------------------------------------------------------------
// Each scenario runs on SQLite and on PostgreSQL (skipped, saying so, when no server is
// reachable; required under OVASABI_REQUIRE_SERVICES=1): the services' SQL is written once
// for both.

/// `POST /v1/orders` for `customer`: one item of `amount_minor` USD, a London address.
pub fn order_of(customer: &str, amount_minor: i64) -> Value {
    serde_json::json!({
        "customer_id": customer,
        "items": [{"sku": "SKU-1", "quantity": 1, "unit_price": {"amount_minor": amount_minor, "currency": "USD"}}],
        "shipping_address": {"recipient": "Ada", "line1": "1 Main St", "city": "London", "postal_code": "N1", "country": "GB"},
    })
}

/// The database (and bus) a scenario runs on.
#[derive(Clone, Copy, Debug)]
pub enum Db {
    /// SQLite and the embedded bus.
    Sqlite,
    /// PostgreSQL and the embedded bus.
    Postgres,
    /// PostgreSQL and NATS JetStream, in a namespace of the test's own (deleted at the end).
    NatsPostgres,
}

/// A platform, and the PostgreSQL schema, bus directory or NATS namespace it lives on.
pub struct Running {
    platform: Platform,
    _schema: Option<ovasabi_store::testing::TestSchema>,
    _dir: Option<tempfile::TempDir>,
    /// The NATS server and namespace, whose streams `stop` deletes.
    nats: Option<(String, String)>,
}

impl std::ops::Deref for Running {
    type Target = Platform;

    fn deref(&self) -> &Platform {
        &self.platform
    }
}

impl Running {
    pub async fn stop(self) {
        self.platform.stop().await;
        if let Some((url, namespace)) = self.nats {
            let bus = ovasabi_nats::NatsBus::connect(
                ovasabi_nats::NatsConfig::new(&url).namespace(namespace),
            )
            .await
            .unwrap();
            let status = ovasabi_nats::provision::status(&bus).await.unwrap();
            for stream in &status.streams {
                bus.delete_topic(&stream.topic).await.unwrap();
            }
            let _ = bus.close().await;
        }
    }
}

/// `services` on the embedded bus and `db`; `None` when PostgreSQL is not there.
pub async fn start(
    services: Vec<Arc<dyn ovasabi_services::Service>>,
    db: Db,
    test: &str,
) -> Option<Running> {
    match db {
        Db::Sqlite => Some(Running {
            platform: Platform::embedded(services).await,
            _schema: None,
            _dir: None,
            nats: None,
        }),
        Db::NatsPostgres => {
            let server = ovasabi_nats::testing::server_or_skip(test)?;
            let schema = ovasabi_store::testing::postgres_or_skip(test).await?;
            let namespace = format!("t-{}", uuid::Uuid::new_v4().simple());
            let bus: Arc<dyn ovasabi_core::Bus> = Arc::new(
                ovasabi_nats::NatsBus::connect(
                    ovasabi_nats::NatsConfig::new(&server.url).namespace(namespace.clone()),
                )
                .await
                .unwrap(),
            );
            Some(Running {
                platform: Platform::start(services, bus, schema.config()).await,
                _schema: Some(schema),
                _dir: None,
                nats: Some((server.url, namespace)),
            })
        }
        Db::Postgres => {
            let schema = ovasabi_store::testing::postgres_or_skip(test).await?;
            let dir = tempfile::tempdir().unwrap();
            let bus: Arc<dyn ovasabi_core::Bus> = Arc::new(
                ovasabi_embedded::EmbeddedBus::open(ovasabi_embedded::EmbeddedConfig::new(
                    dir.path().join("bus"),
                ))
                .await
                .unwrap(),
            );
            Some(Running {
                platform: Platform::start(services, bus, schema.config()).await,
                _schema: Some(schema),
                _dir: Some(dir),
                nats: None,
            })
        }
    }
}

/// A test per scenario and database: `sqlite::<scenario>`, `postgresql::<scenario>` (both on
/// the embedded bus).
macro_rules! on_both {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Db::Sqlite).await;
                }
            )*
        }
        mod postgresql {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Db::Postgres).await;
                }
            )*
        }
    };
}

/// [`on_both!`], and `nats_postgresql::<scenario>` on NATS JetStream and PostgreSQL.
macro_rules! on_all {
    ($($scenario:ident),* $(,)?) => {
        on_both!($($scenario),*);
        mod nats_postgresql {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Db::NatsPostgres).await;
                }
            )*
        }
    };
}
