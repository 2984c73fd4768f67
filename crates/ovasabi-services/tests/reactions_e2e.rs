//! The reacting side end to end over HTTP with every service of `ovasabi up` running: users
//! register, post (one post with a blocked term), order (one normal order, one that fraud
//! screening holds, one whose payment fails); the notifications arrive over a WebSocket,
//! the analytics count it all, the blocked post is hidden, the suspicious order held, the
//! failed payment leaves the order unpaid and unrewarded, the coins spent on it come back
//! when it is cancelled, and the audit trail verifies — then fails once an entry is
//! changed. On SQLite and on PostgreSQL (embedded bus), and on NATS JetStream and PostgreSQL
//! (in a namespace of the test's own).

#[macro_use]
mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use ovasabi_services::audit::{self, Verdict};
use ovasabi_store::{params, Store};
use reqwest::StatusCode;
use serde_json::{json, Value};

use common::{order_of, start, Db};

on_all!(users_orders_and_posts_set_every_reactor_going);

async fn users_orders_and_posts_set_every_reactor_going(db: Db) {
    let services = ovasabi_services::catalog(&Default::default());
    let Some(p) = start(services, db, "reactions_e2e").await else {
        return;
    };
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

    // Ada watches her notifications over a WebSocket from the start.
    let url = format!(
        "{}/v1/notifications/stream?user_id={ada}",
        p.base.replace("http://", "ws://")
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();

    // Posts: one fine, one with a blocked term (the built-in rules block "free money").
    let fine = p
        .post_ok(
            "/v1/content",
            json!({"author_id": ada, "kind": "post", "body": "Notes on the engine"}),
        )
        .await;
    let fine = fine["id"].as_str().unwrap().to_owned();
    let blocked = p
        .post_ok(
            "/v1/content",
            json!({"author_id": bo, "kind": "post", "body": "Free money for everyone!"}),
        )
        .await;
    let blocked = blocked["id"].as_str().unwrap().to_owned();
    p.post_ok(
        &format!("/v1/content/{fine}/comments"),
        json!({"author_id": bo, "body": "Lovely."}),
    )
    .await;

    let order = order_of;
    // A normal order, paid and shipped.
    let normal = p.post_ok("/v1/orders", order(&ada, 2500)).await;
    let normal = normal["id"].as_str().unwrap().to_owned();
    p.post_ok(
        &format!("/v1/orders/{normal}/pay"),
        json!({"method": "card"}),
    )
    .await;
    p.post_ok(
        &format!("/v1/orders/{normal}/ship"),
        json!({"carrier": "royal-mail"}),
    )
    .await;
    // A failed payment (the fake provider declines totals ending in 13).
    let failing = p.post_ok("/v1/orders", order(&ada, 1013)).await;
    let failing = failing["id"].as_str().unwrap().to_owned();
    // Ada spends 40 of her coins on it (once the wallet has seen it placed).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body, _) = p
            .post(
                &format!("/v1/wallets/{ada}/spends"),
                &json!({"order_id": failing, "amount": 40}),
                None,
            )
            .await;
        if status == StatusCode::CREATED {
            assert_eq!(body["amount"], 40, "{body}");
            break;
        }
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _, _) = p
        .post(
            &format!("/v1/orders/{failing}/pay"),
            &json!({"method": "card"}),
            None,
        )
        .await;
    assert!(!status.is_success());
    // A brand-new account ordering big: held by fraud screening.
    let suspicious = p.post_ok("/v1/orders", order(&bo, 250_000)).await;
    let suspicious = suspicious["id"].as_str().unwrap().to_owned();

    // Notifications over the WebSocket: welcome, shipped, payment failed.
    let mut categories = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while categories.len() < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = tokio::time::timeout(left, ws.next())
            .await
            .unwrap_or_else(|_| panic!("only {categories:?} arrived over the WebSocket"))
            .unwrap()
            .unwrap();
        let n: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
        assert_eq!(n["user_id"], ada.as_str());
        categories.insert(n["category"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        categories,
        BTreeSet::from([
            "order".to_owned(),
            "payment".to_owned(),
            "welcome".to_owned()
        ])
    );

    // The blocked post is hidden; the fine one is not.
    let hidden = p
        .get_when(&format!("/v1/content/{blocked}"), |s, _| {
            s == StatusCode::NOT_FOUND
        })
        .await;
    assert_eq!(hidden["error"]["code"], "content_hidden", "{hidden}");
    assert_eq!(
        p.get(&format!("/v1/content/{fine}")).await.0,
        StatusCode::OK
    );

    // The suspicious order is held (it cannot be paid), and Bo was told.
    let held = p
        .get_when(&format!("/v1/orders/{suspicious}"), |_, o| {
            o["hold"]["state"] == "held"
        })
        .await;
    assert!(
        held["history"].to_string().contains("fraud.hold_placed"),
        "{held}"
    );
    let (status, _, _) = p
        .post(
            &format!("/v1/orders/{suspicious}/pay"),
            &json!({"method": "card"}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let told = p
        .get_when(&format!("/v1/notifications?user_id={bo}"), |_, b| {
            b["items"].to_string().contains("\"fraud\"")
        })
        .await;
    assert!(
        told["items"].to_string().contains("\"moderation\""),
        "{told}"
    );

    // Coins: both signup bonuses, and the reward of the paid order only; the failed order
    // stays unpaid, and once Ada cancels it the 40 coins spent on it come back.
    let (_, failed_order) = p.get(&format!("/v1/orders/{failing}")).await;
    assert_eq!(failed_order["status"], "placed", "{failed_order}");
    p.post_ok(
        &format!("/v1/orders/{failing}/cancel"),
        json!({"cancelled_by": "customer"}),
    )
    .await;
    let wallet = p
        .get_when(&format!("/v1/wallets/{ada}"), |_, w| {
            w["balance"] == 125 && w["entries"][0]["kind"] == "refund"
        })
        .await;
    assert_eq!(wallet["entries"][0]["delta"], 40, "{wallet}");
    assert_eq!(
        wallet["entries"][0]["reason"], "order_cancelled",
        "{wallet}"
    );

    // The analytics counted it all.
    let totals = p
        .get_when("/v1/analytics", |_, a| {
            a["totals"]["orders"] == 3 && a["totals"]["payments_failed"] == 1
        })
        .await;
    let t = &totals["totals"];
    assert_eq!(
        (
            t["signups"].clone(),
            t["posts"].clone(),
            t["comments"].clone(),
            t["payments_completed"].clone()
        ),
        (json!(2), json!(2), json!(1), json!(1)),
        "{totals}"
    );

    // The audit trail: intact once chained, broken once an entry is changed.
    let store = Store::open(&p.database, &[]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let entries = loop {
        match audit::verify(&store).await.unwrap() {
            Verdict::Intact {
                entries,
                pending: 0,
            } if entries >= 15 => break entries,
            verdict => {
                assert!(Instant::now() < deadline, "{verdict:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    store
        .execute(
            "UPDATE audit_events SET subject = 'someone-else' WHERE position = $1",
            params![entries / 2],
        )
        .await
        .unwrap();
    match audit::verify(&store).await.unwrap() {
        Verdict::Broken { position, .. } => assert_eq!(position, entries / 2),
        verdict => panic!("the change went unnoticed: {verdict:?}"),
    }
    p.stop().await;
}
