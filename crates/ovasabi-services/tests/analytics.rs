//! Live analytics over HTTP and SSE, and a replay from the log that reaches the same numbers
//! — on SQLite and on PostgreSQL.

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ovasabi_events::moderation::FraudHoldPlaced;
use ovasabi_events::DomainEvent;
use ovasabi_services::analytics::{self, AnalyticsService};
use ovasabi_services::{commerce, content, messaging, users, Service};
use ovasabi_store::Store;
use reqwest::StatusCode;
use serde_json::{json, Value};

use common::{order_of, start, Db, Running};

on_both!(counters_follow_the_traffic_live_and_a_replay_reaches_the_same_numbers);

/// The analytics once `ready` holds, within 15 s.
async fn analytics_when(p: &Running, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, snapshot) = p.get("/v1/analytics").await;
        assert_eq!(status, StatusCode::OK, "{snapshot}");
        if ready(&snapshot) {
            return snapshot;
        }
        assert!(Instant::now() < deadline, "never reached: {snapshot}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn counters_follow_the_traffic_live_and_a_replay_reaches_the_same_numbers(db: Db) {
    let services: Vec<Arc<dyn Service>> = vec![
        Arc::new(users::UsersService),
        Arc::new(content::ContentService),
        Arc::new(commerce::CommerceService::default_provider()),
        Arc::new(messaging::MessagingService),
        Arc::new(AnalyticsService::default()),
    ];
    let Some(p) = start(services, db, "analytics_live").await else {
        return;
    };
    // The live stream, opened before the traffic: a snapshot at once, then one per change.
    let mut stream = p
        .client
        .get(format!("{}/v1/analytics/stream", p.base))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);

    let ada = p
        .post_ok(
            "/v1/users",
            json!({"email": "ada@example.com", "display_name": "Ada"}),
        )
        .await;
    let ada = ada["id"].as_str().unwrap().to_owned();
    let bo = p
        .post_ok(
            "/v1/users",
            json!({"email": "bo@example.com", "display_name": "Bo"}),
        )
        .await;
    let bo = bo["id"].as_str().unwrap().to_owned();
    let posted = p
        .post_ok(
            "/v1/content",
            json!({"author_id": ada, "kind": "post", "body": "Notes on the Analytical Engine"}),
        )
        .await;
    let content_id = posted["id"].as_str().unwrap().to_owned();
    p.post_ok(
        &format!("/v1/content/{content_id}/comments"),
        json!({"author_id": bo, "body": "It weaves algebraic patterns!"}),
    )
    .await;
    for (user, kind) in [(&bo, "love"), (&ada, "like")] {
        p.post_ok(
            &format!("/v1/content/{content_id}/reactions"),
            json!({"user_id": user, "kind": kind}),
        )
        .await;
    }
    let order = |amount: i64| order_of(&ada, amount);
    let paid = p.post_ok("/v1/orders", order(2500)).await;
    p.post_ok(
        &format!("/v1/orders/{}/pay", paid["id"].as_str().unwrap()),
        json!({"method": "card"}),
    )
    .await;
    let declined = p.post_ok("/v1/orders", order(1013)).await;
    let (status, _, _) = p
        .post(
            &format!("/v1/orders/{}/pay", declined["id"].as_str().unwrap()),
            &json!({"method": "card"}),
            None,
        )
        .await;
    assert!(!status.is_success());
    p.post_ok(
        "/v1/messages",
        json!({"from_user_id": bo, "to_user_id": ada, "body": "Lovely notes."}),
    )
    .await;

    // A fraud hold (published by moderation, which does not run here).
    p.bus
        .publish(
            FraudHoldPlaced::TOPIC,
            FraudHoldPlaced::examples()
                .remove(0)
                .to_event("/ovasabi/moderation"),
        )
        .await
        .unwrap();

    let expected = json!({
        "signups": 2, "posts": 1, "comments": 1, "reactions": 2, "orders": 2,
        "payments_completed": 1, "payments_failed": 1, "messages": 1, "fraud_holds": 1,
        "revenue": [{"currency": "USD", "amount_minor": 2500}],
    });
    let snapshot = analytics_when(&p, |s| s["totals"] == expected).await;
    assert_eq!(
        snapshot["last_hour"], expected,
        "everything happened just now"
    );
    assert_eq!(snapshot["active_users"]["last_5_minutes"], 2, "{snapshot}");
    assert_eq!(snapshot["active_users"]["last_hour"], 2, "{snapshot}");
    assert_eq!(
        snapshot["top_content"],
        json!([{"content_id": content_id, "engagement": 3}])
    );
    let signups_per_minute: i64 = snapshot["per_minute"]["signups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"].as_i64().unwrap())
        .sum();
    assert_eq!(signups_per_minute, 2);

    // The stream has pushed a snapshot with the counts (it sends after each change).
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut buffer = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, stream.chunk())
            .await
            .expect("a pushed snapshot with every count")
            .unwrap()
            .unwrap();
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        let complete = buffer.split("\n\n").any(|block| {
            block
                .lines()
                .find_map(|l| l.strip_prefix("data:"))
                .and_then(|d| serde_json::from_str::<Value>(d.trim()).ok())
                .is_some_and(|s| s["totals"] == expected)
        });
        if complete {
            break;
        }
    }
    assert!(buffer.contains("event: analytics"), "{buffer}");

    // A replay from the start of the log reaches the same numbers (windows fixed at `at`).
    let at = snapshot["at"].as_str().unwrap().to_owned();
    let (_, before) = p.get(&format!("/v1/analytics?at={at}")).await;
    let store = Store::open(&p.database, &[]).await.unwrap();
    let mut calls = Vec::new();
    let summary = analytics::replay(&*p.bus, &store, |done, total| calls.push((done, total)))
        .await
        .unwrap();
    assert_eq!(summary.counted, 12, "{summary:?}");
    assert!(summary.events >= summary.counted, "{summary:?}");
    assert_eq!(calls.first(), Some(&(0, summary.events)));
    assert_eq!(calls.last(), Some(&(summary.events, summary.events)));
    let (_, after) = p.get(&format!("/v1/analytics?at={at}")).await;
    assert_eq!(after, before);

    let (status, bad) = p.get("/v1/analytics?at=yesterday").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad["error"]["field"], "at");
    drop(stream);
    p.stop().await;
}
