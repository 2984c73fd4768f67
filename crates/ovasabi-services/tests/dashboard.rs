//! The dashboard's API over real HTTP, on SQLite, PostgreSQL, and NATS JetStream with
//! PostgreSQL: the live event stream (filters, backlog, resuming after `Last-Event-ID`),
//! the recent events, publishing an event by hand (and its refusals), an event's causal
//! tree, the overview, series and topology, the webhook listing, and the page itself.

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::sse::SseReader;
use common::{order_of, start, Db, Running};
use ovasabi_services::audit::AuditService;
use ovasabi_services::commerce::CommerceService;
use ovasabi_services::users::UsersService;
use ovasabi_services::wallet::WalletService;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// `GET /v1/events/stream<query>`, with `Last-Event-ID` when given.
async fn stream(p: &Running, query: &str, last_event_id: Option<&str>) -> SseReader {
    let mut request = p.client.get(format!("{}/v1/events/stream{query}", p.base));
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    SseReader::open(request).await
}

/// The live events `sse` sends within `within` until `done` holds for what came.
async fn read_until(
    sse: &mut SseReader,
    within: Duration,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    while !done(&seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        match sse.event("event", left).await {
            Some((id, event)) => {
                assert_eq!(id, Some(event["seq"].to_string()), "{event}");
                seen.push(event);
            }
            None => panic!(
                "the stream did not send what was expected within {within:?}; it sent: {:#?}",
                seen.iter().map(|e| &e["type"]).collect::<Vec<_>>()
            ),
        }
    }
    seen
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

async fn the_dashboard_api_follows_the_platform(db: Db) {
    let Some(p) = start(
        vec![
            Arc::new(UsersService),
            Arc::new(CommerceService::default_provider()),
            Arc::new(WalletService),
            Arc::new(AuditService::new(vec!["*.events".to_owned()])),
        ],
        db,
        "dashboard: the_dashboard_api_follows_the_platform",
    )
    .await
    else {
        return;
    };

    // The page and its files, with a policy that allows nothing from elsewhere.
    let page = p.client.get(format!("{}/", p.base)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'self'"));
    assert!(page.text().await.unwrap().contains("/dashboard/app.js"));
    for (file, kind) in [("app.js", "text/javascript"), ("app.css", "text/css")] {
        let answer = p
            .client
            .get(format!("{}/dashboard/{file}", p.base))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "{file}");
        assert!(answer.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with(kind));
    }
    let (status, body) = p.get("/dashboard/secrets.txt").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Two streams before anything happens: one of everything, one of orders only.
    let mut everything = stream(&p, "?correlation_id=dash-1", None).await;
    let mut orders = stream(&p, "?type=order.*&correlation_id=dash-1", None).await;

    let (status, user, _) = p
        .post_with(
            "/v1/users",
            &json!({"email": "ada@example.com", "display_name": "Ada"}),
            &[("X-Correlation-Id", "dash-1")],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    let ada = user["id"].as_str().unwrap().to_owned();
    let (status, order, _) = p
        .post_with(
            "/v1/orders",
            &order_of(&ada, 2500),
            &[("X-Correlation-Id", "dash-1")],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let order_id = order["id"].as_str().unwrap().to_owned();

    // The registration, the wallet's signup bonus it caused, and the order.
    let seen = read_until(&mut everything, Duration::from_secs(20), |seen| {
        let t = types(seen);
        ["user.registered", "coin.mined", "order.placed"]
            .iter()
            .all(|want| t.contains(want))
    })
    .await;
    let placed = seen.iter().find(|e| e["type"] == "order.placed").unwrap();
    assert_eq!(placed["topic"], "commerce.events", "{placed}");
    assert_eq!(placed["subject"], order_id.as_str(), "{placed}");
    assert_eq!(placed["correlation_id"], "dash-1", "{placed}");
    assert_eq!(placed["schema"]["event_type"], "order.placed", "{placed}");
    assert!(
        placed["schema"]["version"].as_u64().is_some_and(|v| v >= 1),
        "{placed}"
    );
    assert_eq!(placed["dead_letter"], false, "{placed}");
    assert_eq!(
        placed["event"]["data"]["customer_id"],
        ada.as_str(),
        "{placed}"
    );
    assert_eq!(placed["event"]["id"], placed["id"], "{placed}");
    let registered = seen
        .iter()
        .find(|e| e["type"] == "user.registered")
        .unwrap();
    let mined = seen.iter().find(|e| e["type"] == "coin.mined").unwrap();
    assert_eq!(mined["causation_id"], registered["id"], "{mined}");
    let seqs: Vec<u64> = seen.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seqs rise: {seqs:?}");

    // The filtered stream sends the order and nothing else.
    let only = read_until(&mut orders, Duration::from_secs(10), |seen| {
        !seen.is_empty()
    })
    .await;
    assert_eq!(types(&only), ["order.placed"]);
    assert!(orders
        .event("event", Duration::from_millis(500))
        .await
        .is_none());

    // Resuming after the first event sends the rest, not it.
    let first = seen[0]["seq"].to_string();
    let mut resumed = stream(&p, "?correlation_id=dash-1", Some(&first)).await;
    let again = read_until(&mut resumed, Duration::from_secs(10), |s| {
        s.len() >= seen.len() - 1
    })
    .await;
    assert_eq!(again[0]["seq"], seen[1]["seq"], "{:?}", types(&again));
    // A backlog of one sends the latest matching event first.
    let mut latest = stream(&p, "?correlation_id=dash-1&backlog=1", None).await;
    let newest = read_until(&mut latest, Duration::from_secs(10), |s| !s.is_empty()).await;
    let (_, listed) = p.get("/v1/events/recent?correlation_id=dash-1").await;
    let listed = listed["items"].as_array().unwrap().clone();
    assert_eq!(newest[0]["seq"], listed.last().unwrap()["seq"]);
    assert!(listed.len() >= 3, "{listed:?}");
    let (_, one) = p
        .get("/v1/events/recent?type=user.registered&limit=1")
        .await;
    assert_eq!(one["items"].as_array().map(Vec::len), Some(1), "{one}");

    // Refusals name what is wrong.
    for (path, field) in [
        ("/v1/events/stream?topic=Not%20A%20Topic", "topic"),
        ("/v1/events/stream?colour=red", "colour"),
        ("/v1/events/recent?limit=5000", "limit"),
        ("/v1/dashboard/overview?x=1", "x"),
    ] {
        let (status, body) = p.get(path).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {body}");
        assert_eq!(body["error"]["field"], field, "{path}: {body}");
    }
    let refused = p
        .client
        .get(format!("{}/v1/events/stream", p.base))
        .header("Last-Event-ID", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // Publishing by hand: refusals, then an event the stream shows.
    let payment = json!({"payment_id": "pay-op", "order_id": "order-op", "amount": {"amount_minor": 100, "currency": "USD"}, "method": "card", "completed_at": "2026-11-27T10:00:00Z"});
    for (query, body, field, says) in [
        (
            "",
            json!({"type": "payment.completed", "data": payment}),
            "topic",
            "topic",
        ),
        (
            "?topic=Bad%20Topic",
            json!({"type": "payment.completed", "data": payment}),
            "topic",
            "Bad Topic",
        ),
        (
            "?topic=commerce.events",
            json!(["not", "an", "object"]),
            "body",
            "object",
        ),
        (
            "?topic=commerce.events",
            json!({"data": payment}),
            "type",
            "type",
        ),
        (
            "?topic=commerce.events",
            json!({"type": "PaymentCompleted"}),
            "type",
            "PaymentCompleted",
        ),
        (
            "?topic=commerce.events",
            json!({"type": "payment.completed", "data": {"payment_id": "p"}}),
            "event",
            "order_id",
        ),
    ] {
        let (status, answer, _) = p.post(&format!("/v1/events{query}"), &body, None).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{query} {body}: {answer}"
        );
        assert_eq!(answer["error"]["field"], field, "{query} {body}: {answer}");
        assert!(
            answer["error"]["message"].as_str().unwrap().contains(says),
            "{query} {body}: {answer}"
        );
    }
    let mut operator = stream(&p, "?subject=order-op", None).await;
    let (status, published, _) = p
        .post(
            "/v1/events?topic=commerce.events",
            &json!({"type": "order.placed", "subject": "order-op", "data": {
                "order_id": "order-op", "customer_id": ada,
                "items": [{"sku": "S", "quantity": 1, "unit_price": {"amount_minor": 100, "currency": "USD"}}],
                "total": {"amount_minor": 100, "currency": "USD"},
                "shipping_address": {"recipient": "Ada", "line1": "1 Main St", "city": "London", "postal_code": "N1", "country": "GB"},
                "placed_at": "2026-11-27T10:00:00Z"
            }}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{published}");
    assert_eq!(published["topic"], "commerce.events", "{published}");
    let shown = read_until(&mut operator, Duration::from_secs(10), |s| !s.is_empty()).await;
    assert_eq!(shown[0]["id"], published["id"], "{:?}", shown[0]);
    assert_eq!(shown[0]["source"], "/ovasabi/operator", "{:?}", shown[0]);
    assert_eq!(shown[0]["offset"], published["offset"], "{:?}", shown[0]);

    // The causal tree of the correlation, from the audit trail.
    let trace = p
        .get_when("/v1/trace/dash-1", |status, body| {
            status == StatusCode::OK && body["events"].as_array().is_some_and(|e| e.len() >= 3)
        })
        .await;
    let mined_node = trace["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "coin.mined")
        .unwrap();
    assert_eq!(mined_node["causation_id"], registered["id"], "{trace}");
    assert!(
        trace["roots"]
            .as_array()
            .unwrap()
            .contains(&registered["id"]),
        "{trace}"
    );
    let (status, body) = p.get("/v1/trace/no-such-event").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // The overview: every group with its counters; the topics.
    let overview = p
        .get_when("/v1/dashboard/overview", |status, body| {
            status == StatusCode::OK
                && body["groups"].as_array().is_some_and(|g| {
                    g.iter()
                        .any(|g| g["group"] == "wallet" && g["acked"].as_u64() >= Some(2))
                })
        })
        .await;
    let wallet = overview["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == "wallet")
        .unwrap();
    assert_eq!(wallet["service"], "wallet", "{wallet}");
    assert!(wallet["handler"]["count"].as_u64() >= Some(2), "{wallet}");
    assert!(wallet["handler"]["p95_ms"].as_f64().is_some(), "{wallet}");
    assert!(wallet["lag"].is_u64(), "{wallet}");
    let topics: Vec<&str> = overview["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["topic"].as_str().unwrap())
        .collect();
    assert!(
        topics.contains(&"commerce.events") && topics.contains(&"user.events"),
        "{overview}"
    );

    // The topology: who publishes where, and who reads it.
    let (status, topology) = p.get("/v1/dashboard/topology").await;
    assert_eq!(status, StatusCode::OK, "{topology}");
    let edges = topology["edges"].as_array().unwrap();
    let edge = |from: &str, to: &str| edges.iter().any(|e| e["from"] == from && e["to"] == to);
    assert!(
        edge("service:commerce", "topic:commerce.events"),
        "{topology}"
    );
    assert!(edge("service:users", "topic:user.events"), "{topology}");
    assert!(edge("topic:commerce.events", "group:wallet"), "{topology}");
    assert!(edge("topic:user.events", "group:audit"), "{topology}");
    assert!(!edge("topic:user.events", "group:commerce"), "{topology}");
    let names: Vec<&str> = topology["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["audit", "commerce", "users", "wallet"],
        "{topology}"
    );

    // The series: after a sampling interval, the events published per topic.
    let series = p
        .get_when("/v1/dashboard/series", |status, body| {
            status == StatusCode::OK
                && body["points"].as_array().is_some_and(|points| {
                    points
                        .iter()
                        .map(|pt| pt["topics"]["commerce.events"].as_u64().unwrap_or(0))
                        .sum::<u64>()
                        >= 1
                })
        })
        .await;
    assert_eq!(series["interval_seconds"], 5, "{series}");

    // No webhooks service here: nothing to list.
    let (status, hooks) = p.get("/v1/dashboard/webhooks").await;
    assert_eq!(status, StatusCode::OK, "{hooks}");
    assert_eq!(hooks["items"], json!([]), "{hooks}");

    p.stop().await;
}

on_all!(the_dashboard_api_follows_the_platform);
