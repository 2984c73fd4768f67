//! Moderation and fraud rules end to end over HTTP: flagged posts are hidden by the content
//! service, suspicious orders held by commerce, their owners notified, every decision
//! naming its rule; the rules file is read again when it changes — on SQLite and
//! PostgreSQL.

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ovasabi_services::moderation::ModerationService;
use ovasabi_services::notifications::NotificationsService;
use ovasabi_services::{commerce, content, users, Service};
use reqwest::StatusCode;
use serde_json::json;

use common::{order_of, start, Db};

on_both!(rules_flag_posts_and_hold_orders_and_reload_from_their_file);

fn rules(blocked: &str) -> String {
    json!({
        "content": {"blocked_terms": [blocked], "max_links": 2},
        "fraud": {"max_orders_per_minute": 3, "new_account_large_order_minor": 100000}
    })
    .to_string()
}

async fn rules_flag_posts_and_hold_orders_and_reload_from_their_file(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let rules_file = dir.path().join("rules.json");
    std::fs::write(&rules_file, rules("forbidden-word")).unwrap();
    let services: Vec<Arc<dyn Service>> = vec![
        Arc::new(users::UsersService),
        Arc::new(content::ContentService),
        Arc::new(commerce::CommerceService::default_provider()),
        Arc::new(NotificationsService::default()),
        Arc::new(ModerationService::with_rules(Some(rules_file.clone()))),
    ];
    let Some(p) = start(services, db, "moderation_rules").await else {
        return;
    };
    let ada = p
        .post_ok(
            "/v1/users",
            json!({"email": "ada@example.com", "display_name": "Ada"}),
        )
        .await;
    let ada = ada["id"].as_str().unwrap().to_owned();

    // A clean post is approved and stays visible.
    let clean = p
        .post_ok(
            "/v1/content",
            json!({"author_id": ada, "kind": "post", "body": "Notes on the engine"}),
        )
        .await;
    let clean = clean["id"].as_str().unwrap().to_owned();
    let decided = p
        .get_when(
            &format!("/v1/moderation/decisions?target_id={clean}"),
            |_, b| b["items"].as_array().is_some_and(|i| !i.is_empty()),
        )
        .await;
    assert_eq!(decided["items"][0]["decision"], "approved", "{decided}");
    assert_eq!(decided["items"][0]["rule"], "none");
    assert_eq!(
        p.get(&format!("/v1/content/{clean}")).await.0,
        StatusCode::OK
    );

    // A blocked term: flagged, hidden, the author told; the decision names the rule.
    let bad = p
        .post_ok(
            "/v1/content",
            json!({"author_id": ada, "kind": "post", "body": "Some FORBIDDEN-WORD here"}),
        )
        .await;
    let bad = bad["id"].as_str().unwrap().to_owned();
    let hidden = p
        .get_when(&format!("/v1/content/{bad}"), |s, _| {
            s == StatusCode::NOT_FOUND
        })
        .await;
    assert_eq!(hidden["error"]["code"], "content_hidden", "{hidden}");
    assert!(
        hidden["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rule blocked_terms"),
        "{hidden}"
    );
    let (_, listed) = p.get(&format!("/v1/content?author_id={ada}")).await;
    let ids: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [clean.as_str()], "the flagged post left the list");
    let (_, decided) = p
        .get(&format!("/v1/moderation/decisions?target_id={bad}"))
        .await;
    assert_eq!(decided["items"][0]["decision"], "flagged");
    assert_eq!(decided["items"][0]["rule"], "blocked_terms");
    assert!(decided["items"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("forbidden-word"));
    let told = p
        .get_when(&format!("/v1/notifications?user_id={ada}"), |_, b| {
            b["items"]
                .as_array()
                .is_some_and(|i| i.iter().any(|n| n["category"] == "moderation"))
        })
        .await;
    let note = told["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["category"] == "moderation")
        .unwrap();
    assert_eq!(note["title"], "Your post was hidden");

    // Link spam.
    let spam = p.post_ok("/v1/content", json!({"author_id": ada, "kind": "post", "body": "https://a.example https://b.example https://c.example"})).await;
    let spam = spam["id"].as_str().unwrap().to_owned();
    p.get_when(&format!("/v1/content/{spam}"), |s, _| {
        s == StatusCode::NOT_FOUND
    })
    .await;
    let (_, decided) = p
        .get(&format!("/v1/moderation/decisions?target_id={spam}"))
        .await;
    assert_eq!(decided["items"][0]["rule"], "max_links", "{decided}");

    // The rules file changes: the new term is blocked, the old one no longer.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(&rules_file, rules("newly-banned")).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let newly = p
        .post_ok(
            "/v1/content",
            json!({"author_id": ada, "kind": "post", "body": "newly-banned words"}),
        )
        .await;
    let newly = newly["id"].as_str().unwrap().to_owned();
    p.get_when(&format!("/v1/content/{newly}"), |s, _| {
        s == StatusCode::NOT_FOUND
    })
    .await;
    let old = p
        .post_ok(
            "/v1/content",
            json!({"author_id": ada, "kind": "post", "body": "forbidden-word is fine now"}),
        )
        .await;
    let old = old["id"].as_str().unwrap().to_owned();
    p.get_when(
        &format!("/v1/moderation/decisions?target_id={old}"),
        |_, b| b["items"][0]["decision"] == "approved",
    )
    .await;

    // Fraud: a new account placing a large order is held; it cannot be paid; the customer
    // is told. A small order goes through.
    let order = order_of;
    let bo = p
        .post_ok(
            "/v1/users",
            json!({"email": "bo@example.com", "display_name": "Bo"}),
        )
        .await;
    let bo = bo["id"].as_str().unwrap().to_owned();
    let large = p.post_ok("/v1/orders", order(&bo, 250_000)).await;
    let large = large["id"].as_str().unwrap().to_owned();
    let held = p
        .get_when(&format!("/v1/orders/{large}"), |_, b| {
            b["hold"]["state"] == "held"
        })
        .await;
    assert_eq!(held["hold"]["reason"], "account takeover", "{held}");
    let (_, decided) = p
        .get(&format!("/v1/moderation/decisions?target_id={large}"))
        .await;
    assert_eq!(
        decided["items"][0]["rule"], "new_account_large_order",
        "{decided}"
    );
    let (status, refused, _) = p
        .post(
            &format!("/v1/orders/{large}/pay"),
            &json!({"method": "card"}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["error"]["code"], "order_held");
    p.get_when(&format!("/v1/notifications?user_id={bo}"), |_, b| {
        b["items"]
            .as_array()
            .is_some_and(|i| i.iter().any(|n| n["category"] == "fraud"))
    })
    .await;

    // Velocity: of four orders within a minute, the one judged fourth is held (the orders
    // are different subjects, so the consumer may judge them in any order).
    let mut burst = Vec::new();
    for _ in 0..4 {
        let placed = p.post_ok("/v1/orders", order(&ada, 1_000)).await;
        burst.push(placed["id"].as_str().unwrap().to_owned());
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let held = loop {
        let mut held = Vec::new();
        for id in &burst {
            let (_, o) = p.get(&format!("/v1/orders/{id}")).await;
            if o["hold"]["state"] == "held" {
                held.push(o);
            }
        }
        if !held.is_empty() || Instant::now() > deadline {
            break held;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0]["hold"]["reason"], "velocity", "{held:?}");
    let small = p.post_ok("/v1/orders", order(&bo, 2_000)).await;
    let small = small["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, paid, _) = p
        .post(
            &format!("/v1/orders/{small}/pay"),
            &json!({"method": "card"}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    p.stop().await;
}
