//! OpenTelemetry traces follow an order across every hop: spans are collected in memory (a
//! `tracing_opentelemetry` layer over an `InMemorySpanExporter`), a user registers and places,
//! pays and ships an order (every request with the same `traceparent`), and the wallet's coin
//! reward, the shipment notification and the partner's webhook of `order.shipped` all land in
//! that one trace, with parent links: the ship request's `http` span → the relay's `publish`
//! of `order.shipped` → each consumer group's `delivery` span of it → the `publish` of the
//! `coin.mined` it caused (wallet) and the `webhook.deliver` attempt (webhooks), whose
//! `traceparent` header names that span.

#[macro_use]
mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use chrono::{TimeZone, Utc};
use common::{order_of, Platform};
use opentelemetry::trace::{SpanId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use ovasabi_middleware::TraceParent;
use ovasabi_services::notifications::NotificationsService;
use ovasabi_services::webhooks::{self, ManualClock, WebhooksService};
use ovasabi_services::{commerce, users, wallet, Service};
use ovasabi_store::Store;
use ovasabi_webhooks::ssrf::{parse_allowlist, Policy};
use serde_json::{json, Value};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The webhook requests received: (path, headers, body).
type Got = Arc<Mutex<Vec<(String, HashMap<String, String>, String)>>>;

async fn receiver() -> (Got, String) {
    let got: Got = Arc::default();
    let app = axum::Router::new()
        .route(
            "/{*path}",
            axum::routing::post(
                |axum::extract::State(got): axum::extract::State<Got>,
                 axum::extract::Path(path): axum::extract::Path<String>,
                 headers: HeaderMap,
                 body: String| async move {
                    let headers = headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                        .collect();
                    got.lock().unwrap().push((path, headers, body));
                    axum::http::StatusCode::OK
                },
            ),
        )
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (got, format!("http://{addr}"))
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
}

/// The spans named `name` whose attribute `key` is `value`.
fn find<'s>(spans: &'s [SpanData], name: &str, filters: &[(&str, &str)]) -> Vec<&'s SpanData> {
    spans
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            filters
                .iter()
                .all(|(k, v)| attr(s, k).as_deref() == Some(*v))
        })
        .collect()
}

fn one<'s>(spans: &'s [SpanData], name: &str, filters: &[(&str, &str)]) -> &'s SpanData {
    let found = find(spans, name, filters);
    assert_eq!(
        found.len(),
        1,
        "exactly one {name} span with {filters:?}: {found:#?}"
    );
    found[0]
}

fn by_id(spans: &[SpanData], id: SpanId) -> Option<&SpanData> {
    spans.iter().find(|s| s.span_context.span_id() == id)
}

/// Whether `ancestor` is `span` or one of its ancestors.
fn descends(spans: &[SpanData], span: &SpanData, ancestor: &SpanData) -> bool {
    let mut current = Some(span);
    while let Some(s) = current {
        if s.span_context.span_id() == ancestor.span_context.span_id() {
            return true;
        }
        current = by_id(spans, s.parent_span_id);
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_trace_follows_an_order_from_request_to_webhook() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry().with(
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("test"))
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("ovasabi", tracing::Level::INFO),
            ),
    );
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap(),
    ));
    let services: Vec<Arc<dyn Service>> = vec![
        Arc::new(users::UsersService),
        Arc::new(commerce::CommerceService::default_provider().payment_timeout(None)),
        Arc::new(wallet::WalletService),
        Arc::new(NotificationsService::with_outbox_dir(Some(
            dir.path().to_owned(),
        ))),
        Arc::new(
            WebhooksService::new(Policy {
                allow_http: true,
                allowlist: parse_allowlist("127.0.0.1/32").unwrap(),
            })
            .with_clock(clock.clone())
            .without_jitter(),
        ),
    ];
    let p = Platform::embedded(services).await;

    // A partner listening to orders and coins.
    let (got, base) = receiver().await;
    let store = Store::open(&p.database, &[]).await.unwrap();
    let permit = vec!["order.*".to_owned(), "coin.*".to_owned()];
    let key = webhooks::add_partner(&store, "acme", &permit)
        .await
        .unwrap()
        .1;
    let response = p
        .client
        .post(format!("{}/v1/webhooks", p.base))
        .bearer_auth(&key)
        .json(&json!({"url": format!("{base}/hook"), "filters": ["order.*", "coin.*"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::CREATED);

    // The order's life, every request in one trace.
    let post = |path: String, body: Value| {
        let p = &p;
        async move {
            let (status, answer, _) = p
                .post_with(&path, &body, &[("traceparent", TRACEPARENT)])
                .await;
            assert!(status.is_success(), "{path}: {status} {answer}");
            answer
        }
    };
    let ada = post("/v1/users".into(), json!({"email": "ada@example.com"})).await;
    let ada = ada["id"].as_str().unwrap().to_owned();
    let order = post("/v1/orders".into(), order_of(&ada, 2500)).await;
    let order = order["id"].as_str().unwrap().to_owned();
    post(format!("/v1/orders/{order}/pay"), json!({"method": "card"})).await;
    post(
        format!("/v1/orders/{order}/ship"),
        json!({"carrier": "royal-mail"}),
    )
    .await;

    // Wait for the coin reward's publish, the notification and the webhook of the shipment.
    let deadline = Instant::now() + Duration::from_secs(20);
    let spans = loop {
        let spans = exporter.get_finished_spans().unwrap();
        let ready = [
            ("publish", vec![("event_type", "coin.mined")]),
            (
                "delivery",
                vec![("event_type", "order.shipped"), ("group", "notifications")],
            ),
            ("webhook.deliver", vec![("event.type", "order.shipped")]),
        ]
        .iter()
        .all(|(name, filters)| !find(&spans, name, filters).is_empty())
            // The signup bonus and the order reward.
            && find(&spans, "publish", &[("event_type", "coin.mined")]).len() >= 2;
        if ready {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "the flow's spans did not all arrive: {:#?}",
            spans
                .iter()
                .map(|s| (&s.name, attr(s, "event_type"), attr(s, "group")))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let hooks = got.lock().unwrap().clone();

    // Every span of the flow is in the one trace.
    let flow: Vec<&SpanData> = spans
        .iter()
        .filter(|s| ["http", "publish", "delivery", "webhook.deliver"].contains(&&*s.name))
        .filter(|s| s.name != "http" || attr(s, "path").is_some_and(|p| p != "/v1/webhooks"))
        .collect();
    for span in &flow {
        assert_eq!(
            span.span_context.trace_id().to_string(),
            TRACE_ID,
            "{span:#?}"
        );
    }
    for name in ["http", "publish", "delivery", "webhook.deliver"] {
        assert!(flow.iter().any(|s| s.name == name), "no {name} span");
    }

    // The ship request's span is the parent of the relay's publish of `order.shipped`.
    let ship = one(
        &spans,
        "http",
        &[("path", &format!("/v1/orders/{order}/ship"))],
    );
    assert_eq!(
        ship.parent_span_id.to_string(),
        "00f067aa0ba902b7",
        "the request span continues the caller's traceparent"
    );
    let shipped = one(&spans, "publish", &[("event_type", "order.shipped")]);
    assert_eq!(shipped.parent_span_id, ship.span_context.span_id());
    assert_eq!(
        attr(shipped, "messaging.destination").as_deref(),
        Some("commerce.events")
    );

    // Every consumer group's delivery of `order.shipped` is a child of that publish.
    let shipped_id = attr(shipped, "event.id").unwrap();
    for group in ["wallet", "notifications", "webhooks"] {
        let delivery = one(
            &spans,
            "delivery",
            &[
                ("event.id", &shipped_id),
                ("messaging.consumer.group", group),
            ],
        );
        assert_eq!(
            delivery.parent_span_id,
            shipped.span_context.span_id(),
            "{group}'s delivery of order.shipped"
        );
        assert_eq!(
            attr(delivery, "event.type").as_deref(),
            Some("order.shipped")
        );
        assert_eq!(attr(delivery, "attempt").as_deref(), Some("1"));
    }
    let wallet_handle = one(
        &spans,
        "delivery",
        &[
            ("event.id", &shipped_id),
            ("messaging.consumer.group", "wallet"),
        ],
    );
    let webhooks_handle = one(
        &spans,
        "delivery",
        &[
            ("event.id", &shipped_id),
            ("messaging.consumer.group", "webhooks"),
        ],
    );

    // The coin reward for the shipment: its publish descends from the wallet's handling.
    let reward = find(&spans, "publish", &[("event_type", "coin.mined")])
        .into_iter()
        .find(|s| descends(&spans, s, wallet_handle))
        .unwrap_or_else(|| {
            panic!("no coin.mined publish under the wallet's delivery of order.shipped")
        });
    assert!(descends(&spans, reward, ship));
    assert_eq!(reward.parent_span_id, wallet_handle.span_context.span_id());

    // The webhook of `order.shipped`: its attempt is a child of the webhooks consumer's
    // delivery, and the partner got that attempt's span as its parent.
    let deliver = one(&spans, "webhook.deliver", &[("event.id", &shipped_id)]);
    assert_eq!(
        deliver.parent_span_id,
        webhooks_handle.span_context.span_id()
    );
    assert!(descends(&spans, deliver, ship));
    let (_, headers, _) = hooks
        .iter()
        .find(|(_, headers, _)| headers.get("webhook-id") == Some(&shipped_id))
        .expect("the partner got order.shipped");
    let sent = TraceParent::parse(&headers["traceparent"]).unwrap();
    assert_eq!(sent.trace_id(), TRACE_ID);
    assert_eq!(sent.parent_id(), deliver.span_context.span_id().to_string());

    // The order's earlier events and the coin events delivered to the partner are in the
    // trace too.
    for ty in ["order.placed", "payment.completed", "order.shipped"] {
        assert!(
            !find(&spans, "publish", &[("event_type", ty)]).is_empty(),
            "no publish of {ty}"
        );
    }
    for (_, headers, body) in &hooks {
        let sent = TraceParent::parse(&headers["traceparent"]).unwrap();
        assert_eq!(sent.trace_id(), TRACE_ID, "{body}");
    }

    p.stop().await;
    let _ = provider.shutdown();
}
