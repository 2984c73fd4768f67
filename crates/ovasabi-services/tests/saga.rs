//! An order's life across services, visible on `GET /v1/orders/{id}`: placed → paid →
//! shipped → coins rewarded; held by fraud screening; cancelled when its payment never
//! comes — on SQLite and PostgreSQL.

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::Duration;

use ovasabi_services::moderation::ModerationService;
use ovasabi_services::{commerce, users, wallet, Service};
use reqwest::StatusCode;
use serde_json::{json, Value};

use common::{order_of, start, Db};

on_both!(orders_are_paid_shipped_rewarded_held_or_cancelled_by_timeout);

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
    let ada = p
        .post_ok(
            "/v1/users",
            json!({"email": "ada@example.com", "display_name": "Ada"}),
        )
        .await;
    let ada = ada["id"].as_str().unwrap().to_owned();
    let order = |amount: i64| order_of(&ada, amount);

    // Paid, shipped, rewarded.
    let paid = p.post_ok("/v1/orders", order(2500)).await;
    let paid = paid["id"].as_str().unwrap().to_owned();
    p.post_ok(&format!("/v1/orders/{paid}/pay"), json!({"method": "card"}))
        .await;
    p.post_ok(
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
    p.get_when(&format!("/v1/wallets/{ada}"), |_, w| w["balance"] == 125)
        .await;

    // Never paid: cancelled by the platform after the payment timeout.
    let unpaid = p.post_ok("/v1/orders", order(1000)).await;
    let unpaid = unpaid["id"].as_str().unwrap().to_owned();
    let cancelled = p
        .get_when(&format!("/v1/orders/{unpaid}"), |_, o| {
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
    let large = p.post_ok("/v1/orders", order(250_000)).await;
    let large = large["id"].as_str().unwrap().to_owned();
    let held = p
        .get_when(&format!("/v1/orders/{large}"), |_, o| {
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
    let ended = p
        .get_when(&format!("/v1/orders/{large}"), |_, o| {
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
