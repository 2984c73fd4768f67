//! Dead letters over HTTP (`/v1/dlq…`), on the runtime of users + wallet: a payment for an
//! order the wallet never saw placed is retried and dead-lettered by group `wallet`; the API
//! lists and shows it; once the order's `order.placed` is there, re-driving the dead letter
//! lets the wallet record the payment (its shipment then mints the order's reward), and a
//! second re-drive of it is skipped. Selectors and IDs are checked (422, 404).
//!
//! An outbox row whose event breaks its contract (a service's bug) is parked by the relay on
//! the dead-letter topic, and the rows behind it still go out. A row whose event does not
//! decode at all is set aside in the outbox, counted, and published once corrected by hand.

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::{start, Db, Platform};
use ovasabi_core::format::json;
use ovasabi_events::commerce::{OrderPlaced, OrderShipped, PaymentCompleted, PaymentMethod};
use ovasabi_events::{DomainEvent, Money};
use ovasabi_services::relay::REASON_REFUSED;
use ovasabi_services::users::UsersService;
use ovasabi_services::wallet::WalletService;
use ovasabi_store::{params, Outbox, Store};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// `GET path` until `ready` holds for a 200 answer; panics after `timeout`.
async fn get_until(
    platform: &Platform,
    path: &str,
    timeout: Duration,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let (status, body) = platform.get(path).await;
        if status == StatusCode::OK && ready(&body) {
            return body;
        }
        assert!(
            status == StatusCode::OK || status == StatusCode::NOT_FOUND,
            "{path}: {status} {body}"
        );
        assert!(Instant::now() < deadline, "{path}: never ready: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn a_dead_letter_is_listed_shown_and_redriven_once(db: Db) {
    let Some(platform) = start(
        vec![Arc::new(UsersService), Arc::new(WalletService)],
        db,
        "dlq: a_dead_letter_is_listed_shown_and_redriven_once",
    )
    .await
    else {
        return;
    };

    // Nothing dead-lettered yet; malformed and unknown IDs, and a redrive of nothing.
    let listed = get_until(&platform, "/v1/dlq", Duration::from_secs(5), |_| true).await;
    assert_eq!(listed["items"], json!([]), "{listed}");
    let (status, body) = platform.get("/v1/dlq/commerce.events@0").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "id", "{body}");
    let (status, body) = platform.get("/v1/dlq/commerce.events.dlq@99").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("commerce.events.dlq@99"),
        "{body}"
    );
    for request in [json!({}), json!({"dry_run": true}), json!({"ids": []})] {
        let (status, body, _) = platform.post("/v1/dlq/redrive", &request, None).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{request}: {body}"
        );
        assert_eq!(body["error"]["field"], "ids", "{request}: {body}");
    }
    let (status, body, _) = platform
        .post("/v1/dlq/redrive", &json!({"topic": "Not A Topic"}), None)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "topic", "{body}");
    let (status, body) = platform.get("/v1/dlq?limit=zero").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "limit", "{body}");

    // A payment for an order the wallet never saw placed: retried, then dead-lettered
    // (five deliveries, 1 + 2 + 4 + 8 s apart, ±20 %).
    let orphan = PaymentCompleted {
        payment_id: "pay-dlq".to_owned(),
        order_id: "order-dlq".to_owned(),
        amount: Money::new(1234, "USD"),
        method: PaymentMethod::Card,
        provider_reference: None,
        completed_at: Utc::now(),
    }
    .to_event("/ovasabi/commerce");
    platform
        .bus
        .publish(PaymentCompleted::TOPIC, orphan.clone())
        .await
        .unwrap();
    let listed = get_until(&platform, "/v1/dlq", Duration::from_secs(40), |b| {
        b["items"].as_array().is_some_and(|i| !i.is_empty())
    })
    .await;
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{listed}");
    let dead = &items[0];
    let id = dead["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("commerce.events.dlq@"), "{dead}");
    assert_eq!(dead["group"], "wallet", "{dead}");
    assert_eq!(dead["reason"], "max deliveries reached", "{dead}");
    assert_eq!(dead["topic"], "commerce.events", "{dead}");
    assert_eq!(dead["event_id"], orphan.id.as_str(), "{dead}");
    assert_eq!(dead["type"], "payment.completed", "{dead}");
    assert!(
        dead["error"]
            .as_str()
            .is_some_and(|e| e.contains("order-dlq")),
        "{dead}"
    );
    assert_eq!(dead["event"]["id"], orphan.id.as_str(), "{dead}");
    assert_eq!(
        dead["redriven_at"],
        Value::Null,
        "not re-driven yet: {dead}"
    );
    let (status, body) = platform.get("/v1/dlq?pending=maybe").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "pending", "{body}");

    // Filters.
    for (query, expected) in [
        ("?group=wallet", 1),
        ("?group=other", 0),
        ("?reason=MAX%20DELIV", 1),
        ("?topic=commerce.events", 1),
        ("?topic=user.events", 0),
        ("?limit=1", 1),
        ("?pending=true", 1),
        ("?pending=false", 1),
    ] {
        let (status, body) = platform.get(&format!("/v1/dlq{query}")).await;
        assert_eq!(status, StatusCode::OK, "{query}: {body}");
        assert_eq!(
            body["items"].as_array().map(Vec::len),
            Some(expected),
            "{query}: {body}"
        );
    }

    // One dead letter, whole.
    let (status, shown) = platform.get(&format!("/v1/dlq/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(&shown, dead, "the item shown is the item listed");

    // The missing order.placed arrives: the payment can now be recorded.
    let mut order = OrderPlaced::examples().remove(0);
    order.order_id = "order-dlq".to_owned();
    order.customer_id = "cust-dlq".to_owned();
    platform
        .bus
        .publish(OrderPlaced::TOPIC, order.to_event("/ovasabi/commerce"))
        .await
        .unwrap();

    // A dry run re-drives nothing.
    let dry = platform
        .post_ok("/v1/dlq/redrive", json!({"ids": [id], "dry_run": true}))
        .await;
    assert_eq!(dry["dry_run"], true, "{dry}");
    assert_eq!(dry["redriven"][0]["status"], "would-redrive", "{dry}");

    let first = platform
        .post_ok("/v1/dlq/redrive", json!({"ids": [id]}))
        .await;
    assert_eq!(
        first["redriven"].as_array().map(Vec::len),
        Some(1),
        "{first}"
    );
    assert_eq!(first["skipped"], json!([]), "{first}");
    assert_eq!(first["failed"], json!([]), "{first}");
    let redriven = &first["redriven"][0];
    assert_eq!(redriven["id"], id.as_str(), "{first}");
    assert_eq!(redriven["status"], "redriven", "{first}");
    assert_eq!(redriven["topic"], "commerce.events", "{first}");
    assert_eq!(redriven["group"], "wallet", "{first}");
    assert!(redriven["offset"].is_u64(), "{first}");

    // Re-driven: no longer pending, and listed with when.
    let (_, pending) = platform.get("/v1/dlq?pending=true").await;
    assert_eq!(pending["items"], json!([]), "{pending}");
    let (_, all) = platform.get("/v1/dlq").await;
    assert!(all["items"][0]["redriven_at"].is_string(), "{all}");
    let (_, shown) = platform.get(&format!("/v1/dlq/{id}")).await;
    assert_eq!(
        shown["redriven_at"], all["items"][0]["redriven_at"],
        "{shown}"
    );

    // The wallet recorded the re-driven payment: the order's shipment now mints its reward
    // (12 coins for 12.34 USD), which it could not without the payment.
    let mut shipment = OrderShipped::examples().remove(0);
    shipment.order_id = "order-dlq".to_owned();
    platform
        .bus
        .publish(OrderShipped::TOPIC, shipment.to_event("/ovasabi/commerce"))
        .await
        .unwrap();
    let wallet = get_until(
        &platform,
        "/v1/wallets/cust-dlq",
        Duration::from_secs(15),
        |w| w["balance"] == 12,
    )
    .await;
    assert_eq!(wallet["entries"][0]["reason"], "order_reward", "{wallet}");

    // At most once: the same dead letter again is skipped, saying when it was re-driven.
    let second = platform
        .post_ok("/v1/dlq/redrive", json!({"ids": [id]}))
        .await;
    assert_eq!(second["redriven"], json!([]), "{second}");
    assert_eq!(second["skipped"][0]["id"], id.as_str(), "{second}");
    assert_eq!(second["skipped"][0]["status"], "skipped", "{second}");
    assert!(second["skipped"][0]["redriven_at"].is_string(), "{second}");
    let all = platform
        .post_ok("/v1/dlq/redrive", json!({"all": true}))
        .await;
    assert_eq!(all["redriven"], json!([]), "{all}");
    assert_eq!(all["skipped"].as_array().map(Vec::len), Some(1), "{all}");

    // Re-driving an unknown dead letter names it.
    let (status, body, _) = platform
        .post(
            "/v1/dlq/redrive",
            &json!({"ids": ["commerce.events.dlq@99"]}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["field"], "ids", "{body}");
    platform.stop().await;
}

/// A valid `payment.completed` with `id` as its payment id.
fn payment(id: &str) -> ovasabi_core::Event {
    PaymentCompleted {
        payment_id: id.to_owned(),
        order_id: format!("order-{id}"),
        amount: Money::new(500, "USD"),
        method: PaymentMethod::Card,
        provider_reference: None,
        completed_at: Utc::now(),
    }
    .to_event("/ovasabi/commerce")
}

/// Waits until the relay has settled every outbox row; panics after 15 s.
async fn until_outbox_empty(store: &Store) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while store.outbox().pending().await.unwrap() > 0 {
        assert!(Instant::now() < deadline, "the outbox never emptied");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn an_event_the_bus_refuses_is_parked_and_the_rows_behind_it_go_out(db: Db) {
    let Some(platform) = start(
        vec![Arc::new(UsersService)],
        db,
        "dlq: an_event_the_bus_refuses_is_parked_and_the_rows_behind_it_go_out",
    )
    .await
    else {
        return;
    };
    // A payment without its amount breaks the contract: the bus refuses it.
    let (before, after) = (payment("pay-before"), payment("pay-after"));
    let mut bad = payment("pay-bad");
    let mut data: Value = serde_json::from_slice(bad.data.as_deref().unwrap()).unwrap();
    data.as_object_mut().unwrap().remove("amount");
    bad = bad.with_json(&data);

    // A service's transaction writes the three rows; the relay meets them in one pass.
    let store = Store::open(&platform.database, &[]).await.unwrap();
    let mut tx = store.begin().await.unwrap();
    for event in [&before, &bad, &after] {
        Outbox::append(&mut tx, PaymentCompleted::TOPIC, event)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();

    // The good ones go out, in order; the outbox empties.
    let published = platform
        .events(PaymentCompleted::TOPIC, 2, Duration::from_secs(15))
        .await;
    let ids: Vec<&str> = published.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, [before.id.as_str(), after.id.as_str()]);
    until_outbox_empty(&store).await;

    // The refused one is parked, with the reason and the field that broke the contract.
    let listed = get_until(&platform, "/v1/dlq", Duration::from_secs(15), |b| {
        b["items"].as_array().is_some_and(|i| !i.is_empty())
    })
    .await;
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{listed}");
    let parked = &items[0];
    assert_eq!(parked["event_id"], bad.id.as_str(), "{parked}");
    assert_eq!(parked["topic"], PaymentCompleted::TOPIC, "{parked}");
    assert_eq!(parked["dlq_topic"], "commerce.events.dlq", "{parked}");
    assert_eq!(parked["reason"], REASON_REFUSED, "{parked}");
    assert_eq!(parked["group"], Value::Null, "{parked}");
    let error = parked["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("invalid event") && error.contains("amount"),
        "{parked}"
    );
    assert_eq!(parked["event"]["data"]["payment_id"], "pay-bad", "{parked}");
    let metrics = platform.text("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "ovasabi_outbox_relay_parked_total 1"),
        "{metrics}"
    );

    // Re-driving it as it is fails the same check, saying why; nothing reaches the topic.
    let id = parked["id"].as_str().unwrap();
    let report = platform
        .post_ok("/v1/dlq/redrive", json!({"ids": [id]}))
        .await;
    assert_eq!(report["redriven"], json!([]), "{report}");
    let failed = &report["failed"][0];
    assert_eq!(failed["id"], id, "{report}");
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("amount")),
        "{report}"
    );
    let again = platform
        .events(PaymentCompleted::TOPIC, 2, Duration::from_secs(15))
        .await;
    assert_eq!(again.len(), 2, "{again:?}");
    platform.stop().await;
}

async fn an_unreadable_outbox_row_is_set_aside_and_published_once_corrected(db: Db) {
    let Some(platform) = start(
        vec![Arc::new(UsersService)],
        db,
        "dlq: an_unreadable_outbox_row_is_set_aside_and_published_once_corrected",
    )
    .await
    else {
        return;
    };
    // In one transaction, a row that is not an event (a hand edit gone wrong), then a good
    // one: the relay meets them in one pass.
    let store = Store::open(&platform.database, &[]).await.unwrap();
    let behind = payment("pay-behind");
    let mut tx = store.begin().await.unwrap();
    tx.execute(
        "INSERT INTO outbox (event_id, aggregate, topic, event, created_at)
         VALUES ($1, NULL, $2, $3, $4)",
        params![
            "pay-broken",
            PaymentCompleted::TOPIC,
            "{\"specversion\": \"1.0\", \"id\": ",
            Utc::now()
        ],
    )
    .await
    .unwrap();
    Outbox::append(&mut tx, PaymentCompleted::TOPIC, &behind)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // The good one goes out; the outbox empties; the unreadable row is counted.
    let published = platform
        .events(PaymentCompleted::TOPIC, 1, Duration::from_secs(15))
        .await;
    assert_eq!(published[0].id, behind.id);
    until_outbox_empty(&store).await;
    assert_eq!(store.outbox().unreadable().await.unwrap(), 1);
    let why: String = store
        .query_one(
            "SELECT unreadable FROM outbox WHERE event_id = $1",
            params!["pay-broken"],
        )
        .await
        .unwrap()
        .get("unreadable")
        .unwrap();
    assert!(!why.is_empty());
    let metrics = platform.text("/metrics").await;
    assert!(
        metrics.lines().any(|l| l == "ovasabi_outbox_unreadable 1"),
        "{metrics}"
    );
    let (status, ready) = platform.get("/readyz").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a row set aside blocks nothing: {ready}"
    );
    assert_eq!(ready["checks"]["outbox"]["unreadable"], 1, "{ready}");
    let (_, overview) = platform.get("/v1/status").await;
    assert_eq!(overview["outbox"]["unreadable"], 1, "{overview}");

    // Corrected and cleared by hand, it is published after the one behind it.
    let fixed = payment("pay-fixed").with_id("pay-broken");
    store
        .execute(
            "UPDATE outbox SET event = $1, published_at = NULL, unreadable = NULL
             WHERE event_id = $2",
            params![
                String::from_utf8(json::to_json_vec(&fixed)).unwrap(),
                "pay-broken"
            ],
        )
        .await
        .unwrap();
    let published = platform
        .events(PaymentCompleted::TOPIC, 2, Duration::from_secs(15))
        .await;
    let ids: Vec<&str> = published.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, [behind.id.as_str(), "pay-broken"]);
    assert_eq!(store.outbox().unreadable().await.unwrap(), 0);
    platform.stop().await;
}

on_both!(
    a_dead_letter_is_listed_shown_and_redriven_once,
    an_event_the_bus_refuses_is_parked_and_the_rows_behind_it_go_out,
    an_unreadable_outbox_row_is_set_aside_and_published_once_corrected,
);

mod nats_postgresql {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_event_the_bus_refuses_is_parked_and_the_rows_behind_it_go_out() {
        super::an_event_the_bus_refuses_is_parked_and_the_rows_behind_it_go_out(
            super::Db::NatsPostgres,
        )
        .await;
    }
}
