//! The wallet service over real HTTP on the embedded bus and SQLite: registering a user (the
//! users service) mints the signup bonus once, caused by the registration and in its
//! correlation; a paid order's shipment mints its reward; transfers never take a balance below
//! zero, even concurrently; a redelivered event mints once; unreadable events are
//! dead-lettered; every 4xx names the field; the ledger is walked a page at a time; coins
//! spent on an order come back, once, when it is cancelled, refunded or held for fraud.

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::{start, Db, Platform};
use ovasabi_core::{Bus, Event};
use ovasabi_embedded::{EmbeddedBus, EmbeddedConfig};
use ovasabi_events::commerce::{
    OrderCancelled, OrderPlaced, OrderShipped, PaymentCompleted, PaymentMethod, PaymentRefunded,
};
use ovasabi_events::moderation::FraudHoldPlaced;
use ovasabi_events::users::{DeletionReason, UserDeleted, UserRegistered};
use ovasabi_events::{DomainEvent, Money};
use ovasabi_services::users::UsersService;
use ovasabi_services::wallet::{mint_id, WalletService, SIGNUP_BONUS};
use ovasabi_store::StoreConfig;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn data(event: &Event) -> Value {
    event.data_json().expect("JSON payload")
}

/// Registers `email` through the users service; the user's id.
async fn register(platform: &Platform, email: &str, correlation: &str) -> String {
    let (status, user, _) = platform
        .post_with(
            "/v1/users",
            &json!({"email": email}),
            &[("X-Correlation-Id", correlation)],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    user["id"].as_str().unwrap().to_owned()
}

/// The wallet once `ready` holds for it (polling: the wallet follows the bus).
async fn wallet_when(platform: &Platform, user: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, wallet) = platform.get(&format!("/v1/wallets/{user}")).await;
        if status == StatusCode::OK && ready(&wallet) {
            return wallet;
        }
        assert!(
            status == StatusCode::OK || status == StatusCode::NOT_FOUND,
            "{status}: {wallet}"
        );
        assert!(
            Instant::now() < deadline,
            "the wallet of {user} never got there: {status} {wallet}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn funded(platform: &Platform, user: &str) -> Value {
    wallet_when(platform, user, |w| w["balance"] == json!(SIGNUP_BONUS)).await
}

async fn transfer(
    platform: &Platform,
    from: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    platform
        .post_with(&format!("/v1/wallets/{from}/transfers"), body, headers)
        .await
}

async fn registration_mints_the_signup_bonus_caused_by_it(db: Db) {
    let Some(platform) = start(
        vec![Arc::new(UsersService), Arc::new(WalletService)],
        db,
        "wallet: registration_mints_the_signup_bonus_caused_by_it",
    )
    .await
    else {
        return;
    };
    let ada = register(&platform, "ada@example.com", "corr-w").await;
    let wallet = funded(&platform, &ada).await;
    let entries = wallet["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{wallet}");
    assert_eq!(entries[0]["kind"], "mined");
    assert_eq!(entries[0]["reason"], "signup_bonus");
    assert_eq!(entries[0]["delta"], json!(SIGNUP_BONUS));
    assert_eq!(entries[0]["balance_after"], json!(SIGNUP_BONUS));

    let registered = platform
        .events("user.events", 1, Duration::from_secs(10))
        .await;
    let mined = platform
        .events("wallet.events", 1, Duration::from_secs(10))
        .await;
    assert_eq!((registered.len(), mined.len()), (1, 1), "{mined:?}");
    let (registered, mined) = (&registered[0], &mined[0]);
    assert_eq!(mined.ty, "coin.mined");
    assert_eq!(mined.subject.as_deref(), Some(ada.as_str()));
    assert_eq!(mined.causation_id(), Some(registered.id.as_str()));
    assert_eq!(mined.correlation_id(), Some("corr-w"));
    assert_eq!(mined.id, mint_id(registered), "derived from the cause");
    assert!(mined.traceparent().is_some());
    let payload = data(mined);
    assert_eq!(payload["mint_id"], mined.id.as_str());
    assert_eq!(payload["user_id"], ada.as_str());
    assert_eq!(payload["amount"], json!(SIGNUP_BONUS));
    assert_eq!(payload["reason"], "signup_bonus");
    assert_eq!(payload["cause_event_id"], registered.id.as_str());
    assert_eq!(payload["balance_after"], json!(SIGNUP_BONUS));
    assert_eq!(entries[0]["reference_id"], mined.id.as_str());
    platform.stop().await;
}

async fn transfers_move_coins_once_per_key_and_never_overdraw(db: Db) {
    let Some(platform) = start(
        vec![Arc::new(UsersService), Arc::new(WalletService)],
        db,
        "wallet: transfers_move_coins_once_per_key_and_never_overdraw",
    )
    .await
    else {
        return;
    };
    let ada = register(&platform, "ada@example.com", "corr-a").await;
    let bo = register(&platform, "bo@example.com", "corr-b").await;
    funded(&platform, &ada).await;
    funded(&platform, &bo).await;

    let body = json!({"to_user_id": bo, "amount": 30, "memo": "coffee"});
    let headers = [("Idempotency-Key", "t1"), ("X-Correlation-Id", "corr-t")];
    let (status, done, _) = transfer(&platform, &ada, &body, &headers).await;
    assert_eq!(status, StatusCode::CREATED, "{done}");
    assert_eq!(done["balance_after"], 70);
    let (status, again, replayed) = transfer(&platform, &ada, &body, &headers).await;
    assert_eq!((status, &again), (StatusCode::CREATED, &done));
    assert_eq!(replayed["idempotent-replayed"], "true");

    // More than the balance: 409 naming `amount`, nothing moves.
    let (status, err, _) = transfer(
        &platform,
        &ada,
        &json!({"to_user_id": bo, "amount": 71}),
        &[("X-Correlation-Id", "corr-t")],
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert_eq!(err["error"]["field"], "amount", "{err}");
    assert_eq!(err["error"]["code"], "insufficient_balance", "{err}");

    let (_, ada_wallet) = platform.get(&format!("/v1/wallets/{ada}")).await;
    let (_, bo_wallet) = platform.get(&format!("/v1/wallets/{bo}")).await;
    assert_eq!(
        (ada_wallet["balance"].clone(), bo_wallet["balance"].clone()),
        (json!(70), json!(130))
    );
    let entry = &ada_wallet["entries"][0];
    assert_eq!(
        (
            entry["kind"].as_str(),
            entry["delta"].as_i64(),
            entry["memo"].as_str()
        ),
        (Some("transfer_out"), Some(-30), Some("coffee")),
        "{ada_wallet}"
    );
    assert_eq!(entry["counterparty_user_id"], bo.as_str());
    assert_eq!(bo_wallet["entries"][0]["kind"], "transfer_in");

    // Two bonuses and one transfer: the retry and the refusal published nothing.
    let events = platform
        .events("wallet.events", 3, Duration::from_secs(10))
        .await;
    let types: Vec<&str> = events.iter().map(|e| e.ty.as_str()).collect();
    assert_eq!(types.len(), 3, "{events:?}");
    assert_eq!(
        types.iter().filter(|t| **t == "coin.transferred").count(),
        1
    );
    // Per aggregate (Ada's wallet): the bonus, then the transfer.
    let ada_events: Vec<&Event> = events
        .iter()
        .filter(|e| e.subject.as_deref() == Some(ada.as_str()))
        .collect();
    let ada_types: Vec<&str> = ada_events.iter().map(|e| e.ty.as_str()).collect();
    assert_eq!(ada_types, ["coin.mined", "coin.transferred"]);
    let transferred = ada_events[1];
    assert_eq!(transferred.correlation_id(), Some("corr-t"));
    let payload = data(transferred);
    assert_eq!(payload["transfer_id"], done["transfer_id"]);
    assert_eq!(payload["from_user_id"], ada.as_str());
    assert_eq!(payload["to_user_id"], bo.as_str());
    assert_eq!(payload["amount"], 30);
    assert_eq!(payload["memo"], "coffee");
    platform.stop().await;
}

async fn concurrent_transfers_never_take_a_balance_below_zero(db: Db) {
    let Some(platform) = start(
        vec![Arc::new(UsersService), Arc::new(WalletService)],
        db,
        "wallet: concurrent_transfers_never_take_a_balance_below_zero",
    )
    .await
    else {
        return;
    };
    let ada = register(&platform, "ada@example.com", "c1").await;
    let bo = register(&platform, "bo@example.com", "c2").await;
    funded(&platform, &ada).await;
    funded(&platform, &bo).await;

    // Two transfers of 60 from 100: exactly one goes through.
    let body = json!({"to_user_id": bo, "amount": 60});
    let (first, second) = tokio::join!(
        transfer(&platform, &ada, &body, &[]),
        transfer(&platform, &ada, &body, &[])
    );
    let mut statuses = [first.0, second.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::CREATED, StatusCode::CONFLICT],
        "{first:?} {second:?}"
    );

    // A burst both ways: Ada has 40, Bo 160; eight transfers of 20 from Ada, and Bo sending
    // back at the same time.
    let to_bo = json!({"to_user_id": bo, "amount": 20});
    let to_ada = json!({"to_user_id": ada, "amount": 5});
    let mut requests = Vec::new();
    for i in 0..8 {
        let (from, body) = if i % 4 == 3 {
            (&bo, &to_ada)
        } else {
            (&ada, &to_bo)
        };
        requests.push(transfer(&platform, from, body, &[]));
    }
    let answers = futures::future::join_all(requests).await;
    for (status, answer, _) in &answers {
        assert!(
            *status == StatusCode::CREATED || *status == StatusCode::CONFLICT,
            "{status}: {answer}"
        );
        if *status == StatusCode::CONFLICT {
            assert_eq!(answer["error"]["field"], "amount");
        } else {
            assert!(answer["balance_after"].as_i64().unwrap() >= 0, "{answer}");
        }
    }
    let (_, ada_wallet) = platform.get(&format!("/v1/wallets/{ada}?limit=200")).await;
    let (_, bo_wallet) = platform.get(&format!("/v1/wallets/{bo}?limit=200")).await;
    let balance = |w: &Value| w["balance"].as_i64().unwrap();
    assert!(balance(&ada_wallet) >= 0 && balance(&bo_wallet) >= 0);
    assert_eq!(
        balance(&ada_wallet) + balance(&bo_wallet),
        200,
        "coins are neither made nor lost"
    );
    // Every movement is an entry: each wallet's entries add up to its balance, and every
    // balance_after along the way is at least zero.
    for wallet in [&ada_wallet, &bo_wallet] {
        let entries = wallet["entries"].as_array().unwrap();
        let sum: i64 = entries.iter().map(|e| e["delta"].as_i64().unwrap()).sum();
        assert_eq!(sum, balance(wallet), "{wallet}");
        assert!(entries
            .iter()
            .all(|e| e["balance_after"].as_i64().unwrap() >= 0));
        assert_eq!(
            entries[0]["balance_after"], wallet["balance"],
            "newest first"
        );
    }
    let succeeded = answers
        .iter()
        .filter(|(s, _, _)| *s == StatusCode::CREATED)
        .count();
    let transferred = platform
        .events("wallet.events", 2 + 1 + succeeded, Duration::from_secs(10))
        .await
        .iter()
        .filter(|e| e.ty == "coin.transferred")
        .count();
    assert_eq!(
        transferred,
        1 + succeeded,
        "one event per transfer that went through"
    );
    platform.stop().await;
}

async fn bad_requests_name_the_field_and_publish_nothing(db: Db) {
    let Some(platform) = start(
        vec![Arc::new(UsersService), Arc::new(WalletService)],
        db,
        "wallet: bad_requests_name_the_field_and_publish_nothing",
    )
    .await
    else {
        return;
    };
    let ada = register(&platform, "ada@example.com", "c1").await;
    let bo = register(&platform, "bo@example.com", "c2").await;
    funded(&platform, &ada).await;
    funded(&platform, &bo).await;
    for (body, status, field) in [
        (
            json!({"to_user_id": bo, "amount": 0}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "amount",
        ),
        (
            json!({"to_user_id": bo, "amount": -5}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "amount",
        ),
        (
            json!({"to_user_id": bo, "amount": 1.5}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "amount",
        ),
        (
            json!({"to_user_id": bo, "amount": "ten"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "amount",
        ),
        (
            json!({"to_user_id": bo}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "amount",
        ),
        (
            json!({"amount": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "to_user_id",
        ),
        (
            json!({"to_user_id": 5, "amount": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "to_user_id",
        ),
        (
            json!({"to_user_id": bo, "amount": 1, "memo": 7}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "memo",
        ),
        (
            json!({"to_user_id": "", "amount": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "to_user_id",
        ),
        (
            json!({"to_user_id": ada, "amount": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "to_user_id",
        ),
        (
            json!({"to_user_id": "nobody", "amount": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "to_user_id",
        ),
        (
            json!({"to_user_id": bo, "amount": 1, "memo": "m".repeat(141)}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "memo",
        ),
        (
            json!({"to_user_id": bo, "amount": 1, "note": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "note",
        ),
        (
            json!({"to_user_id": bo, "amount": 101}),
            StatusCode::CONFLICT,
            "amount",
        ),
    ] {
        let (got, err, _) = transfer(&platform, &ada, &body, &[]).await;
        assert_eq!(got, status, "{body}: {err}");
        assert_eq!(err["error"]["field"], field, "{body}: {err}");
    }
    // A user without a wallet has nothing to send.
    let (status, err, _) = transfer(
        &platform,
        "nobody",
        &json!({"to_user_id": ada, "amount": 1}),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert_eq!(err["error"]["field"], "amount", "{err}");
    for (query, field) in [
        ("?limit=0", "limit"),
        ("?cursor=zz", "cursor"),
        ("?since=1", "since"),
    ] {
        let (status, err) = platform.get(&format!("/v1/wallets/{ada}{query}")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {err}");
        assert_eq!(err["error"]["field"], field, "{query}: {err}");
    }
    let (status, err) = platform.get("/v1/wallets/nobody").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(err["error"]["field"], "user_id", "{err}");
    let (_, wallet) = platform.get(&format!("/v1/wallets/{ada}")).await;
    assert_eq!(wallet["balance"], 100);
    let events = platform
        .events("wallet.events", 2, Duration::from_secs(10))
        .await;
    assert_eq!(events.len(), 2, "the bonuses only: {events:?}");
    let (_, doc) = platform.get("/openapi.json").await;
    assert!(doc["paths"]["/v1/wallets/{user_id}"]["get"].is_object());
    assert!(doc["paths"]["/v1/wallets/{user_id}/transfers"]["post"].is_object());
    platform.stop().await;
}

async fn a_redelivered_registration_mints_once(db: Db) {
    let Some(platform) = start(
        vec![Arc::new(WalletService)],
        db,
        "wallet: a_redelivered_registration_mints_once",
    )
    .await
    else {
        return;
    };
    let user = "u-dup";
    let registered = UserRegistered {
        user_id: user.to_owned(),
        email: "dup@example.com".to_owned(),
        registered_at: Utc::now(),
        referrer_user_id: None,
        display_name: None,
        locale: None,
    }
    .to_event("/ovasabi/users")
    .with_id("evt-registered-1")
    .with_extension("correlationid", "corr-dup");
    // The same event twice (a relay that published and died before marking it), then the
    // user's deletion: one key, so handled in this order, after both copies.
    platform
        .bus
        .publish(UserRegistered::TOPIC, registered.clone())
        .await
        .unwrap();
    platform
        .bus
        .publish(UserRegistered::TOPIC, registered.clone())
        .await
        .unwrap();
    let deleted = UserDeleted {
        user_id: user.to_owned(),
        reason: DeletionReason::UserRequest,
        deleted_by: user.to_owned(),
        deleted_at: Utc::now(),
        purge_after: None,
    }
    .to_event("/ovasabi/users");
    platform
        .bus
        .publish(UserDeleted::TOPIC, deleted)
        .await
        .unwrap();
    let wallet = wallet_when(&platform, user, |w| w["closed"] == true).await;
    assert_eq!(wallet["balance"], json!(SIGNUP_BONUS), "{wallet}");
    assert_eq!(wallet["entries"].as_array().unwrap().len(), 1, "{wallet}");
    let mined = platform
        .events("wallet.events", 1, Duration::from_secs(10))
        .await;
    assert_eq!(mined.len(), 1, "minted once: {mined:?}");
    assert_eq!(mined[0].causation_id(), Some("evt-registered-1"));
    assert_eq!(mined[0].correlation_id(), Some("corr-dup"));
    platform.stop().await;
}

async fn a_shipment_mints_the_order_reward_for_the_customer(db: Db) {
    let Some(platform) = start(
        vec![Arc::new(WalletService)],
        db,
        "wallet: a_shipment_mints_the_order_reward_for_the_customer",
    )
    .await
    else {
        return;
    };
    let mut order = OrderPlaced::examples().remove(0);
    order.order_id = "order-1".to_owned();
    order.customer_id = "cust-1".to_owned();
    let placed = order.to_event("/ovasabi/commerce");
    let payment = PaymentCompleted {
        payment_id: "pay-1".to_owned(),
        order_id: "order-1".to_owned(),
        amount: Money::new(5998, "USD"),
        method: PaymentMethod::Card,
        provider_reference: None,
        completed_at: Utc::now(),
    }
    .to_event("/ovasabi/commerce");
    let mut shipment = OrderShipped::examples().remove(0);
    shipment.order_id = "order-1".to_owned();
    let shipped = shipment
        .to_event("/ovasabi/commerce")
        .with_extension("correlationid", "checkout-1");
    // A payment for an order the wallet never saw: retried (its order.placed could be
    // redelivered behind it), then dead-lettered when deliveries run out; nothing minted.
    let orphan = PaymentCompleted {
        payment_id: "pay-2".to_owned(),
        order_id: "order-unknown".to_owned(),
        amount: Money::new(1000, "USD"),
        method: PaymentMethod::Card,
        provider_reference: None,
        completed_at: Utc::now(),
    }
    .to_event("/ovasabi/commerce");
    // Paid, not shipped yet: no reward.
    for event in [placed, payment, orphan.clone()] {
        platform
            .bus
            .publish(OrderPlaced::TOPIC, event)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, _) = platform.get("/v1/wallets/cust-1").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no wallet before the reward");
    platform
        .bus
        .publish(OrderShipped::TOPIC, shipped.clone())
        .await
        .unwrap();
    let wallet = wallet_when(&platform, "cust-1", |w| w["balance"] == 59).await;
    assert_eq!(wallet["entries"][0]["reason"], "order_reward", "{wallet}");
    let mined = platform
        .events("wallet.events", 1, Duration::from_secs(10))
        .await;
    assert_eq!(mined.len(), 1, "{mined:?}");
    assert_eq!(mined[0].causation_id(), Some(shipped.id.as_str()));
    assert_eq!(mined[0].correlation_id(), Some("checkout-1"));
    assert_eq!(data(&mined[0])["reason"], "order_reward");
    // Five deliveries, 1 + 2 + 4 + 8 s apart (±20 %).
    let dead = platform
        .events("commerce.events.dlq", 1, Duration::from_secs(40))
        .await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].id, orphan.id);
    assert_eq!(
        dead[0].extension_str("deadletterreason"),
        Some("max deliveries reached")
    );
    let error = dead[0].extension_str("deadlettererror").unwrap_or_default();
    assert!(
        error.contains("order order-unknown") && error.contains("has not seen that order placed"),
        "{error}"
    );
    platform.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_event_is_dead_lettered_at_once() {
    // The contract-checking bus would refuse this event: publish it on the bus underneath,
    // as a producer that skips the checks would.
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn Bus> = Arc::new(
        EmbeddedBus::open(EmbeddedConfig::new(dir.path().join("bus")))
            .await
            .unwrap(),
    );
    let platform = Platform::start(
        vec![Arc::new(WalletService)],
        inner.clone(),
        StoreConfig::sqlite(dir.path().join("ovasabi.db")),
    )
    .await;
    let broken = Event::new("user.registered", "/somewhere")
        .with_id("broken-1")
        .with_json(&json!({"user_id": 42, "email": "x@example.com"}));
    inner.publish("user.events", broken).await.unwrap();
    let dead = platform
        .events("user.events.dlq", 1, Duration::from_secs(10))
        .await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].id, "broken-1");
    assert_eq!(
        dead[0].extension_str("deadletterreason"),
        Some("invalid payload")
    );
    let error = dead[0].extension_str("deadlettererror").unwrap_or_default();
    assert!(error.contains("user.registered v3"), "{error}");
    assert_eq!(
        dead[0].extension_str("deadletterattempts"),
        Some("1"),
        "at once"
    );
    let (status, _) = platform.get("/v1/wallets/42").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    platform.stop().await;
}

async fn the_ledger_is_walked_page_by_page_each_entry_once(db: Db) {
    let Some(platform) = start(
        vec![Arc::new(UsersService), Arc::new(WalletService)],
        db,
        "wallet: the_ledger_is_walked_page_by_page_each_entry_once",
    )
    .await
    else {
        return;
    };
    let ada = register(&platform, "ada@example.com", "c1").await;
    let bo = register(&platform, "bo@example.com", "c2").await;
    funded(&platform, &ada).await;
    funded(&platform, &bo).await;
    let mut transfers = Vec::new();
    for amount in 1..=6 {
        let (status, done, _) = transfer(
            &platform,
            &ada,
            &json!({"to_user_id": bo, "amount": amount}),
            &[],
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{done}");
        transfers.push(done["transfer_id"].clone());
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..5 {
        let path = match &cursor {
            Some(c) => format!("/v1/wallets/{ada}?limit=3&cursor={c}"),
            None => format!("/v1/wallets/{ada}?limit=3"),
        };
        let (status, page) = platform.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(page["balance"], 100 - 21);
        seen.extend(page["entries"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => {
                cursor = None;
                break;
            }
        }
    }
    assert!(cursor.is_none(), "the walk did not end");
    // Newest first: six transfers out (latest first), then the bonus.
    assert_eq!(seen.len(), 7, "{seen:?}");
    let references: Vec<Value> = seen[..6]
        .iter()
        .map(|e| e["reference_id"].clone())
        .collect();
    transfers.reverse();
    assert_eq!(references, transfers);
    assert_eq!(seen[6]["kind"], "mined");
    let deltas: Vec<i64> = seen.iter().map(|e| e["delta"].as_i64().unwrap()).collect();
    assert_eq!(deltas, [-6, -5, -4, -3, -2, -1, 100]);
    platform.stop().await;
}

async fn coins_spent_on_an_order_come_back_when_it_is_cancelled_refunded_or_held(db: Db) {
    let Some(platform) = start(
        vec![Arc::new(WalletService)],
        db,
        "wallet: coins_spent_on_an_order_come_back_when_it_is_cancelled_refunded_or_held",
    )
    .await
    else {
        return;
    };
    let publish = |topic: &'static str, event: Event| {
        let bus = platform.bus.clone();
        async move { bus.publish(topic, event).await.unwrap() }
    };
    let mut registered = UserRegistered::examples().remove(0);
    registered.user_id = "cust-1".to_owned();
    publish(UserRegistered::TOPIC, registered.to_event("/ovasabi/users")).await;
    for (order_id, customer) in [
        ("order-a", "cust-1"),
        ("order-b", "cust-1"),
        ("order-c", "cust-1"),
        ("order-x", "cust-2"),
    ] {
        let mut order = OrderPlaced::examples().remove(0);
        order.order_id = order_id.to_owned();
        order.customer_id = customer.to_owned();
        publish(OrderPlaced::TOPIC, order.to_event("/ovasabi/commerce")).await;
    }
    funded(&platform, "cust-1").await;
    let spend = |order_id: &str, amount: Value| {
        let body = json!({"order_id": order_id, "amount": amount});
        let platform = &platform;
        async move {
            let (status, body, _) = platform
                .post_with("/v1/wallets/cust-1/spends", &body, &[])
                .await;
            (status, body)
        }
    };
    // The wallet learns of orders from the bus: a spend waits for order-c's order.placed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = spend("order-x", json!(1)).await;
        if status != StatusCode::NOT_FOUND {
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            assert_eq!(body["error"]["field"], "order_id", "{body}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("another user"),
                "{body}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "order-x never reached the wallet: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = spend("order-unknown", json!(5)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["field"], "order_id", "{body}");
    let (status, body) = spend("order-a", json!(0)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "amount", "{body}");
    let (status, body) = spend("order-a", json!(101)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_balance", "{body}");
    for (order_id, amount, balance_after) in [
        ("order-a", 30, 70),
        ("order-b", 20, 50),
        ("order-c", 10, 40),
        ("order-a", 5, 35),
    ] {
        let (status, body) = spend(order_id, json!(amount)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["balance_after"], balance_after, "{body}");
    }

    // order-a cancelled (and the cancellation redelivered, and cancelled again by another
    // event), order-b's payment refunded, order-c held for fraud, order-x (nothing spent on
    // it) cancelled.
    let mut cancelled = OrderCancelled::examples().remove(0);
    cancelled.order_id = "order-a".to_owned();
    let cancel_a = cancelled.to_event("/ovasabi/commerce");
    let mut refunded = PaymentRefunded::examples().remove(0);
    refunded.order_id = "order-b".to_owned();
    let refund_b = refunded.to_event("/ovasabi/commerce");
    let mut hold = FraudHoldPlaced::examples().remove(0);
    hold.target_id = "order-c".to_owned();
    let hold_c = hold.to_event("/ovasabi/moderation");
    cancelled.order_id = "order-x".to_owned();
    publish(OrderCancelled::TOPIC, cancel_a.clone()).await;
    publish(OrderCancelled::TOPIC, cancel_a.clone()).await;
    cancelled.order_id = "order-a".to_owned();
    publish(
        OrderCancelled::TOPIC,
        cancelled.to_event("/ovasabi/commerce"),
    )
    .await;
    publish(PaymentRefunded::TOPIC, refund_b.clone()).await;
    publish(FraudHoldPlaced::TOPIC, hold_c.clone()).await;
    cancelled.order_id = "order-x".to_owned();
    publish(
        OrderCancelled::TOPIC,
        cancelled.to_event("/ovasabi/commerce"),
    )
    .await;

    let wallet = wallet_when(&platform, "cust-1", |w| w["balance"] == 100).await;
    let kinds: Vec<&str> = wallet["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["refund", "refund", "refund", "spend", "spend", "spend", "spend", "mined"],
        "{wallet}"
    );
    let events = platform
        .events("wallet.events", 8, Duration::from_secs(10))
        .await;
    let of_type = |ty: &str| -> Vec<&Event> { events.iter().filter(|e| e.ty == ty).collect() };
    assert_eq!(of_type("coin.spent").len(), 4, "{events:?}");
    let refunds = of_type("coin.refunded");
    assert_eq!(refunds.len(), 3, "{events:?}");
    let mut seen: Vec<(String, i64, String, String)> = refunds
        .iter()
        .map(|e| {
            let d = data(e);
            assert_eq!(d["user_id"], "cust-1");
            assert_eq!(d["cause_event_id"], e.causation_id().unwrap());
            (
                d["order_id"].as_str().unwrap().to_owned(),
                d["amount"].as_i64().unwrap(),
                d["reason"].as_str().unwrap().to_owned(),
                e.causation_id().unwrap().to_owned(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            (
                "order-a".to_owned(),
                35,
                "order_cancelled".to_owned(),
                cancel_a.id.clone()
            ),
            (
                "order-b".to_owned(),
                20,
                "payment_refunded".to_owned(),
                refund_b.id.clone()
            ),
            (
                "order-c".to_owned(),
                10,
                "fraud_hold".to_owned(),
                hold_c.id.clone()
            ),
        ]
    );
    // A closed order takes no more coins.
    for order_id in ["order-a", "order-b", "order-c"] {
        let (status, body) = spend(order_id, json!(1)).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["error"]["code"], "order_closed", "{body}");
    }
    platform.stop().await;
}

on_both!(
    registration_mints_the_signup_bonus_caused_by_it,
    transfers_move_coins_once_per_key_and_never_overdraw,
    concurrent_transfers_never_take_a_balance_below_zero,
    bad_requests_name_the_field_and_publish_nothing,
    a_redelivered_registration_mints_once,
    a_shipment_mints_the_order_reward_for_the_customer,
    the_ledger_is_walked_page_by_page_each_entry_once,
    coins_spent_on_an_order_come_back_when_it_is_cancelled_refunded_or_held,
);
