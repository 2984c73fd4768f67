//! `GET /metrics` and `GET /readyz` over real HTTP, on SQLite and PostgreSQL: the page is
//! valid Prometheus text (checked line by line, and read with a Prometheus parser); the
//! wallet's and the audit trail's counters and the wallet's handler histogram rise as users
//! register; `/readyz` is 200 with every check passing, and 503 naming the outbox when an
//! unpublished outbox row is older than a minute; the webhooks' gauges appear with their
//! tables.

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::{start, Db, Platform};
use ovasabi_core::format::json;
use ovasabi_core::Event;
use ovasabi_services::relay::Relay;
use ovasabi_services::users::UsersService;
use ovasabi_services::wallet::WalletService;
use ovasabi_services::webhooks::WebhooksService;
use ovasabi_services::{AuditService, Service};
use ovasabi_store::{params, Store};
use prometheus_parse::{Sample, Scrape, Value as PromValue};
use reqwest::StatusCode;
use serde_json::json;

/// Checks every line of an exposition page by hand, strictly: `# HELP name text`,
/// `# TYPE name counter|gauge|histogram|summary|untyped`, or `name{k="v",…} value`, each
/// sample after its family's `# TYPE`, each family typed once.
fn check_syntax(page: &str) {
    fn is_name(s: &str) -> bool {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
    fn is_value(s: &str) -> bool {
        matches!(s, "+Inf" | "-Inf" | "NaN") || s.parse::<f64>().is_ok_and(f64::is_finite)
    }
    /// The labels of `{…}` (without the braces' content checked elsewhere); `None` if bad.
    fn labels(mut s: &str) -> Option<Vec<(String, String)>> {
        let mut out = Vec::new();
        while !s.is_empty() {
            let eq = s.find('=')?;
            let key = &s[..eq];
            if !is_name(key) || key.starts_with("__") {
                return None;
            }
            s = s[eq + 1..].strip_prefix('"')?;
            let mut value = String::new();
            let mut chars = s.char_indices();
            let end = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next()?.1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        _ => return None,
                    },
                    (_, '\n') => return None,
                    (_, c) => value.push(c),
                }
            };
            out.push((key.to_owned(), value));
            s = &s[end + 1..];
            if let Some(rest) = s.strip_prefix(',') {
                s = rest;
            } else if !s.is_empty() {
                return None;
            }
        }
        Some(out)
    }

    let mut typed: Vec<(String, String)> = Vec::new();
    for line in page.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _) = rest.split_once(' ').unwrap_or((rest, ""));
            assert!(is_name(name), "bad HELP line: {line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(is_name(name), "bad TYPE line: {line}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "bad TYPE line: {line}"
            );
            assert!(typed.iter().all(|(n, _)| n != name), "{name} typed twice");
            typed.push((name.to_owned(), kind.to_owned()));
            continue;
        }
        assert!(!line.starts_with('#') || line.starts_with("# "), "{line}");
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        assert!(is_value(value), "bad value in: {line}");
        let (name, label_text) = match series.split_once('{') {
            Some((name, rest)) => (
                name,
                rest.strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line}")),
            ),
            None => (series, ""),
        };
        assert!(is_name(name), "bad metric name in: {line}");
        let labels = labels(label_text).unwrap_or_else(|| panic!("bad labels in: {line}"));
        // The sample belongs to the family typed last (a histogram's series carry suffixes).
        let (family, kind) = typed
            .last()
            .unwrap_or_else(|| panic!("sample before any TYPE: {line}"));
        if kind == "histogram" {
            let suffix = name.strip_prefix(family.as_str()).unwrap_or("?");
            assert!(
                ["_bucket", "_sum", "_count"].contains(&suffix),
                "{line} in histogram {family}"
            );
            if suffix == "_bucket" {
                assert!(labels.iter().any(|(k, _)| k == "le"), "no le: {line}");
            }
        } else {
            assert_eq!(name, family, "sample outside its family: {line}");
        }
    }
}

/// `GET /metrics`: the page, checked and parsed.
async fn scrape(platform: &Platform) -> Scrape {
    let response = platform
        .client
        .get(format!("{}/metrics", platform.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let page = response.text().await.unwrap();
    check_syntax(&page);
    let scrape = Scrape::parse(page.lines().map(|l| Ok(l.to_owned()))).unwrap();
    for family in [
        "ovasabi_up",
        "ovasabi_consumer_events_total",
        "ovasabi_consumer_events_by_type_total",
        "ovasabi_handler_duration_seconds",
        "ovasabi_outbox_backlog",
        "ovasabi_outbox_oldest_age_seconds",
        "ovasabi_consumer_lag",
    ] {
        assert!(
            scrape.docs.contains_key(family),
            "no HELP for {family}:\n{page}"
        );
    }
    scrape
}

fn value_of(sample: &Sample) -> f64 {
    match &sample.value {
        PromValue::Counter(v) | PromValue::Gauge(v) | PromValue::Untyped(v) => *v,
        other => panic!("{}: not a single value: {other:?}", sample.metric),
    }
}

/// The sum of the samples of `metric` whose labels include `labels`.
fn sum(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .map(value_of)
        .sum()
}

/// The wallet group's handler histogram: its cumulative buckets and `_count`.
fn wallet_histogram(scrape: &Scrape) -> (Vec<(f64, f64)>, f64) {
    let buckets = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "ovasabi_handler_duration_seconds"
                && s.labels.get("group") == Some("wallet")
        })
        .map(|s| match &s.value {
            PromValue::Histogram(h) => h.iter().map(|b| (b.less_than, b.count)).collect(),
            other => panic!("not a histogram: {other:?}"),
        })
        .expect("the wallet's handler histogram");
    let count = sum(
        scrape,
        "ovasabi_handler_duration_seconds_count",
        &[("group", "wallet")],
    );
    (buckets, count)
}

async fn metrics_follow_the_consumers(db: Db) {
    let services: Vec<Arc<dyn Service>> = vec![
        Arc::new(UsersService),
        Arc::new(WalletService),
        Arc::new(AuditService::default()),
    ];
    let Some(platform) = start(services, db, "metrics: metrics_follow_the_consumers").await else {
        return;
    };
    let before = scrape(&platform).await;
    assert_eq!(sum(&before, "ovasabi_up", &[]), 1.0);
    let acked = |s: &Scrape| {
        sum(
            s,
            "ovasabi_consumer_events_total",
            &[("group", "wallet"), ("outcome", "acked")],
        )
    };
    let audited = |s: &Scrape| {
        sum(
            s,
            "ovasabi_consumer_events_total",
            &[("group", "audit"), ("outcome", "received")],
        )
    };
    let (acked_before, audited_before) = (acked(&before), audited(&before));
    let (_, count_before) = wallet_histogram(&before);

    for name in ["ada", "grace", "edsger"] {
        platform
            .post_ok("/v1/users", json!({"email": format!("{name}@example.com")}))
            .await;
    }

    let deadline = Instant::now() + Duration::from_secs(15);
    let after = loop {
        let now = scrape(&platform).await;
        let (_, count) = wallet_histogram(&now);
        // The relay counts an event once it has also marked its row, which may come after
        // a consumer has acked it: wait for that count too.
        let relayed = sum(
            &now,
            "ovasabi_events_published_total",
            &[("topic", "user.events"), ("type", "user.registered")],
        );
        if acked(&now) >= acked_before + 3.0
            && audited(&now) > audited_before
            && count >= count_before + 3.0
            && relayed >= 3.0
        {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "the counters never rose: wallet acked {} (from {acked_before}), audit received {} (from {audited_before}), wallet handler count {count} (from {count_before}), relayed user.registered {relayed}",
            acked(&now),
            audited(&now),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let (buckets, count) = wallet_histogram(&after);
    assert_eq!(buckets.len(), 13, "{buckets:?}");
    assert!(
        buckets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
        "buckets not monotonic: {buckets:?}"
    );
    assert_eq!(
        buckets.last().unwrap(),
        &(f64::INFINITY, count),
        "+Inf is the count"
    );
    assert!(
        sum(
            &after,
            "ovasabi_handler_duration_seconds_sum",
            &[("group", "wallet")]
        ) > 0.0
    );
    assert!(
        sum(
            &after,
            "ovasabi_consumer_events_by_type_total",
            &[
                ("group", "wallet"),
                ("topic", "user.events"),
                ("type", "user.registered"),
                ("outcome", "acked"),
            ],
        ) >= 3.0
    );
    // The relay counts what it published, by topic and type.
    assert!(
        sum(
            &after,
            "ovasabi_events_published_total",
            &[("topic", "user.events"), ("type", "user.registered")],
        ) >= 3.0
    );
    // Each sample names its service.
    assert!(after
        .samples
        .iter()
        .filter(|s| s.metric == "ovasabi_consumer_events_total")
        .all(|s| s.labels.get("service").is_some()));
    assert!(
        after
            .samples
            .iter()
            .any(|s| s.metric == "ovasabi_consumer_lag"
                && s.labels.get("group") == Some("wallet")
                && s.labels.get("topic") == Some("user.events")),
        "no lag for the wallet on user.events"
    );
    assert!(sum(&after, "ovasabi_outbox_backlog", &[]) >= 0.0);

    let (status, ready) = platform.get("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(ready["ready"], true, "{ready}");
    for check in ["database", "bus", "outbox"] {
        assert_eq!(ready["checks"][check]["ok"], true, "{check}: {ready}");
    }
    let (status, _) = platform.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    // The runtime's own routes are in the API document.
    let (_, doc) = platform.get("/openapi.json").await;
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/status",
        "/v1/dlq",
        "/v1/dlq/{id}",
        "/v1/dlq/redrive",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} is not in /openapi.json"
        );
    }
    platform.stop().await;
}

async fn readyz_names_a_stuck_outbox(db: Db) {
    let Some(platform) = start(
        vec![
            Arc::new(UsersService) as Arc<dyn Service>,
            Arc::new(WebhooksService::new(Default::default())),
        ],
        db,
        "metrics: readyz_names_a_stuck_outbox",
    )
    .await
    else {
        return;
    };
    let (status, ready) = platform.get("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{ready}");

    // Another process holds the relay's lease and publishes nothing (hung, say): this
    // process's relay stops once the lease it holds without asking runs out (a third of
    // `Relay::LEASE`). Then an unpublished row from two minutes ago stays for as long as the
    // test looks.
    let store = Store::open(&platform.database, &[]).await.unwrap();
    store
        .execute(
            "INSERT INTO outbox_relay_lease (id, owner, expires_at) VALUES (1, $1, $2)
             ON CONFLICT (id) DO UPDATE SET owner = $1, expires_at = $2",
            params!["a hung process", Utc::now() + chrono::Duration::hours(1)],
        )
        .await
        .unwrap();
    tokio::time::sleep(Relay::LEASE / 3 + Duration::from_millis(500)).await;
    let old = Utc::now() - chrono::Duration::seconds(120);
    let event = Event::new("user.registered", "/ovasabi/users").with_id("stuck-1");
    store
        .execute(
            "INSERT INTO outbox (event_id, aggregate, topic, event, created_at)
             VALUES ($1, NULL, $2, $3, $4)",
            params![
                "stuck-1",
                "user.events",
                String::from_utf8(json::to_json_vec(&event)).unwrap(),
                old
            ],
        )
        .await
        .unwrap();

    let (status, ready) = platform.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    assert_eq!(ready["ready"], false, "{ready}");
    let outbox = &ready["checks"]["outbox"];
    assert_eq!(outbox["ok"], false, "{ready}");
    let error = outbox["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("outbox") && error.contains("relay"),
        "{ready}"
    );
    assert!(outbox["backlog"].as_u64().unwrap() >= 1, "{ready}");
    assert!(
        outbox["oldest_age_seconds"].as_f64().unwrap() >= 119.0,
        "{ready}"
    );
    assert_eq!(ready["checks"]["database"]["ok"], true, "{ready}");
    assert_eq!(ready["checks"]["bus"]["ok"], true, "{ready}");

    let page = scrape(&platform).await;
    assert!(sum(&page, "ovasabi_outbox_backlog", &[]) >= 1.0);
    assert!(sum(&page, "ovasabi_outbox_oldest_age_seconds", &[]) >= 119.0);
    // The webhooks' tables are here: their gauges are, at zero.
    for status in ["pending", "delivered", "failed"] {
        assert!(page
            .samples
            .iter()
            .any(|s| s.metric == "ovasabi_webhook_deliveries"
                && s.labels.get("status") == Some(status)
                && value_of(s) == 0.0));
    }
    assert!(page.samples.iter().any(
        |s| s.metric == "ovasabi_webhook_endpoints" && s.labels.get("state") == Some("active")
    ));
    assert_eq!(
        sum(&page, "ovasabi_scrape_errors", &[("source", "database")]),
        0.0
    );

    // Once the row is gone the process is ready again.
    store
        .execute("DELETE FROM outbox WHERE event_id = $1", params!["stuck-1"])
        .await
        .unwrap();
    let (status, ready) = platform.get("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    platform.stop().await;
}

on_both!(metrics_follow_the_consumers, readyz_names_a_stuck_outbox);
