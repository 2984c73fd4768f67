//! `ovasabi bench http`: requests per second and latency of a write endpoint over real HTTP,
//! with its event written to the outbox and relayed to the bus, beside the same handler with
//! publishing off, in one run — the outbox's cost as a ratio.
//!
//! Each side runs the service in this process (embedded bus with contract checks, SQLite in a
//! fresh directory, the outbox relay) with its HTTP API on a free local port; a load
//! generator in the same process keeps `--connections` requests in flight over keep-alive
//! connections. Client and server share the machine's cores, so absolute numbers are lower
//! than with a separate load generator; the ratio is what travels.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ovasabi_core::Bus;
use ovasabi_embedded::{EmbeddedBus, EmbeddedConfig};
use ovasabi_services::{Runtime, Service, Settings};
use ovasabi_store::StoreConfig;
use serde_json::{json, Value};

use super::{print_table, progress, Row};
use crate::cli::{BenchHttpArgs, Format};
use crate::cmd::contracts_of;
use crate::failure::Failure;
use crate::output::outln;

/// The endpoint measured: its service, path and the body of request `n`.
struct Target {
    name: &'static str,
    service: fn() -> Arc<dyn Service>,
    path: &'static str,
    body: fn(usize) -> Value,
}

fn orders_target() -> Target {
    Target {
        name: "POST /v1/orders",
        service: || Arc::new(ovasabi_services::commerce::CommerceService::default_provider()),
        path: "/v1/orders",
        body: |n| {
            json!({
                "customer_id": format!("customer-{}", n % 1000),
                "items": [
                    {"sku": "BOOK-ENGINE-HC", "quantity": 1, "unit_price": {"amount_minor": 2999, "currency": "EUR"}},
                    {"sku": "MUG-OVA-WHT", "quantity": 2, "unit_price": {"amount_minor": 1250, "currency": "EUR"}}
                ],
                "shipping_address": {"recipient": "Ada Lovelace", "line1": "12 St James's Square",
                    "city": "London", "postal_code": "SW1Y 4JH", "country": "GB"}
            })
        },
    }
}

fn users_target() -> Target {
    Target {
        name: "POST /v1/users",
        service: || Arc::new(ovasabi_services::users::UsersService),
        path: "/v1/users",
        body: |n| json!({"email": format!("user{n}@example.com"), "display_name": "Bench"}),
    }
}

struct Measured {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    published: u64,
}

async fn measure(
    target: &Target,
    args: &BenchHttpArgs,
    publish: bool,
) -> Result<Measured, Failure> {
    let dir = tempfile::tempdir().map_err(|e| Failure::runtime(e.to_string()))?;
    let inner: Arc<dyn Bus> =
        Arc::new(EmbeddedBus::open(EmbeddedConfig::new(dir.path().join("bus"))).await?);
    let bus: Arc<dyn Bus> = Arc::new(ovasabi_schema::ValidatingBus::new(
        inner,
        contracts_of(None)?,
    ));
    let settings = Settings {
        instance: "bench".to_owned(),
        http: Some("127.0.0.1:0".parse().expect("an address")),
        publish_events: publish,
        ..Settings::default()
    };
    let services = vec![(target.service)()];
    let runtime = Runtime::start(
        &services,
        bus.clone(),
        &StoreConfig::sqlite(dir.path().join("ovasabi.db")),
        settings,
    )
    .await
    .map_err(|e| Failure::runtime(e.to_string()))?;
    let addr = runtime.http_addr().expect("listening");
    let relay = runtime.relay().cloned();
    let url = format!("http://{addr}{}", target.path);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .build()
        .map_err(|e| Failure::runtime(e.to_string()))?;

    // Warm up the connections and the database.
    for n in 0..args.connections {
        let _ = client
            .post(&url)
            .json(&(target.body)(usize::MAX - n))
            .send()
            .await;
    }
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let (client, url, next) = (client.clone(), url.clone(), next.clone());
        let (body, total) = (target.body, args.requests);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let sent = Instant::now();
                let response = client
                    .post(&url)
                    .json(&body(n))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = response.status();
                let _ = response.bytes().await.map_err(|e| e.to_string())?;
                if !status.is_success() {
                    return Err::<Vec<f64>, String>(format!("request {n} answered {status}"));
                }
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
            }
            Ok(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(args.requests);
    for t in tasks {
        latencies.extend(
            t.await
                .map_err(|e| Failure::runtime(e.to_string()))?
                .map_err(Failure::runtime)?,
        );
    }
    let rate = args.requests as f64 / start.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let (p50_ms, p99_ms) = (pct(0.50), pct(0.99));
    // Let the relay catch up, so the published count covers the run.
    let deadline = Instant::now() + Duration::from_secs(30);
    while publish
        && relay
            .as_ref()
            .is_some_and(|r| (r.published() as usize) < args.requests)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let published = relay.as_ref().map_or(0, |r| r.published());
    runtime
        .wait(async {})
        .await
        .map_err(|e| Failure::runtime(e.to_string()))?;
    bus.close().await?;
    Ok(Measured {
        rate,
        p50_ms,
        p99_ms,
        published,
    })
}

pub(super) async fn bench_http(args: BenchHttpArgs) -> Result<(), Failure> {
    let target = match args.endpoint.as_str() {
        "orders" => orders_target(),
        "users" => users_target(),
        other => {
            return Err(Failure::usage(format!(
                "--endpoint `{other}`: use `orders` (POST /v1/orders) or `users` (POST /v1/users)"
            )))
        }
    };
    let format = args.format;
    progress(
        format,
        &format!("{} with publishing off (baseline)", target.name),
    );
    let off = measure(&target, &args, false).await?;
    progress(
        format,
        &format!("{} with its event through the outbox", target.name),
    );
    let on = measure(&target, &args, true).await?;
    if (on.published as usize) < args.requests {
        return Err(Failure::runtime(format!(
            "only {} of {} events were relayed to the bus",
            on.published, args.requests
        )));
    }
    let rows = vec![
        Row {
            measure: format!(
                "{} with event ({} in flight)",
                target.name, args.connections
            ),
            value: on.rate,
            unit: "req/s",
            baseline: "publishing off".to_owned(),
            baseline_value: off.rate,
            ratio: on.rate / off.rate,
        },
        Row {
            measure: format!("{} p50 latency", target.name),
            value: on.p50_ms,
            unit: "ms",
            baseline: "publishing off".to_owned(),
            baseline_value: off.p50_ms,
            ratio: off.p50_ms / on.p50_ms,
        },
        Row {
            measure: format!("{} p99 latency", target.name),
            value: on.p99_ms,
            unit: "ms",
            baseline: "publishing off".to_owned(),
            baseline_value: off.p99_ms,
            ratio: off.p99_ms / on.p99_ms,
        },
    ];
    match format {
        Format::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&json!({ "rows": rows })).unwrap_or_default()
        ),
        Format::Pretty => print_table(&rows),
    }
    Ok(())
}
