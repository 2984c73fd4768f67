//! An order's life across services, visible on `GET /v1/orders/{id}`: placed → paid →
//! shipped → coins rewarded; held by fraud screening; cancelled when its payment never
//! comes — on SQLite and PostgreSQL.

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ovasabi_services::moderation::ModerationService;
use ovasabi_services::{commerce, users, wallet, Service};
use reqwest::StatusCode;
use serde_json::{json, Value};

use common::{start, Db, Running};

on_both!(orders_are_paid_shipped_rewarded_held_or_cancelled_by_timeout);

async fn post(p: &Running, path: &str, body: Value) -> Value {
    let (status, answer, _) = p.post(path, &body, None).await;
    assert!(status.is_success(), "{path}: {status} {answer}");
    answer
}

/// `GET path` once `ready` holds, within 15 s.
async fn get_when(p: &Running, path: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, body) = p.get(path).await;
        if ready(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{path}: never ready: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn history(order: &Value) -> Vec<&str> {
    order["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["event_type"].as_str().unwrap())
        .collect()
}

async fn orders_are_paid_shipped_rewarded_held_or_cancelled_by_timeout(db: Db) {
    let services: Vec<Arc<dyn Service>> = vec![
        Arc::new(users::UsersService),
        Arc::new(
            commerce::CommerceService::default_provider()
                .payment_timeout(Some(Duration::from_secs(2))),
        ),
        Arc::new(wallet::WalletService),
        Arc::new(ModerationService::default()),
    ];
    let Some(p) = start(services, db, "order_saga").await else {
        return;
    };
    let ada = post(
        &p,
        "/v1/users",
        json!({"email": "ada@example.com", "display_name": "Ada"}),
    )
    .await;
    let ada = ada["id"].as_str().unwrap().to_owned();
    let order = |amount: i64| {
        json!({
            "customer_id": ada,
            "items": [{"sku": "SKU-1", "quantity": 1, "unit_price": {"amount_minor": amount, "currency": "USD"}}],
            "shipping_address": {"recipient": "Ada", "line1": "1 Main St", "city": "London", "postal_code": "N1", "country": "GB"},
        })
    };

    // Paid, shipped, rewarded.
    let paid = post(&p, "/v1/orders", order(2500)).await;
    let paid = paid["id"].as_str().unwrap().to_owned();
    post(
        &p,
        &format!("/v1/orders/{paid}/pay"),
        json!({"method": "card"}),
    )
    .await;
    post(
        &p,
        &format!("/v1/orders/{paid}/ship"),
        json!({"carrier": "royal-mail"}),
    )
    .await;
    let (_, shipped) = p.get(&format!("/v1/orders/{paid}")).await;
    assert_eq!(shipped["status"], "shipped");
    assert_eq!(
        history(&shipped),
        ["order.placed", "payment.completed", "order.shipped"],
        "{shipped}"
    );
    // 100 coins for signing up, 25 for the order.
    get_when(&p, &format!("/v1/wallets/{ada}"), |w| w["balance"] == 125).await;

    // Never paid: cancelled by the platform after the payment timeout.
    let unpaid = post(&p, "/v1/orders", order(1000)).await;
    let unpaid = unpaid["id"].as_str().unwrap().to_owned();
    let cancelled = get_when(&p, &format!("/v1/orders/{unpaid}"), |o| {
        o["status"] == "cancelled"
    })
    .await;
    assert_eq!(
        cancelled["cancellation"]["cancelled_by"], "system",
        "{cancelled}"
    );
    assert_eq!(
        cancelled["cancellation"]["reason"], "not paid within 2s",
        "{cancelled}"
    );
    assert_eq!(history(&cancelled), ["order.placed", "order.cancelled"]);
    let (status, refused, _) = p
        .post(
            &format!("/v1/orders/{unpaid}/pay"),
            &json!({"method": "card"}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");

    // A large order from a new account: held (the history says why), then cancelled unpaid.
    let large = post(&p, "/v1/orders", order(250_000)).await;
    let large = large["id"].as_str().unwrap().to_owned();
    let held = get_when(&p, &format!("/v1/orders/{large}"), |o| {
        o["hold"]["state"] == "held"
    })
    .await;
    let entry = held["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["event_type"] == "fraud.hold_placed")
        .cloned()
        .unwrap_or_else(|| panic!("{held}"));
    assert_eq!(entry["detail"], "account takeover");
    let ended = get_when(&p, &format!("/v1/orders/{large}"), |o| {
        o["status"] == "cancelled"
    })
    .await;
    assert_eq!(
        history(&ended),
        ["order.placed", "fraud.hold_placed", "order.cancelled"],
        "{ended}"
    );
    // No coins for orders that were never paid.
    let (_, wallet) = p.get(&format!("/v1/wallets/{ada}")).await;
    assert_eq!(wallet["balance"], 125, "{wallet}");
    p.stop().await;
}
