//! The messaging service over real HTTP on the embedded bus and SQLite: a message publishes
//! `message.sent` once, in its conversation's order, with the request's correlation id; a
//! retry with the same `Idempotency-Key` publishes nothing; bad input is a 4xx naming the
//! field; a user's messages are listed a page at a time, each once; users the messaging
//! projection knows were deleted are refused.

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{start, Db, Platform};
use ovasabi_core::Event;
use ovasabi_services::messaging::{conversation_id, MessagingService};
use ovasabi_services::users::UsersService;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn send(platform: &Platform, from: &str, to: &str, body: &str) -> Value {
    let (status, message, _) = platform
        .post(
            "/v1/messages",
            &json!({"from_user_id": from, "to_user_id": to, "body": body}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{message}");
    message
}

fn data(event: &Event) -> Value {
    event.data_json().expect("JSON payload")
}

async fn messages_publish_in_conversation_order_once_per_key(db: Db) {
    let Some(platform) = start(
        vec![Arc::new(MessagingService)],
        db,
        "messaging: messages_publish_in_conversation_order_once_per_key",
    )
    .await
    else {
        return;
    };
    let ab = conversation_id("ada", "bo");
    let mut sent = Vec::new();
    for (i, (from, to)) in [("ada", "bo"), ("bo", "ada"), ("ada", "cy"), ("ada", "bo")]
        .into_iter()
        .enumerate()
    {
        let body = json!({"from_user_id": from, "to_user_id": to, "body": format!("message {i}")});
        let key = format!("m{i}");
        let headers = [
            ("Idempotency-Key", key.as_str()),
            ("X-Correlation-Id", "corr-m"),
        ];
        let (status, message, response) = platform.post_with("/v1/messages", &body, &headers).await;
        assert_eq!(status, StatusCode::CREATED, "{message}");
        assert_eq!(response["x-correlation-id"], "corr-m");
        // The retry: the same answer, nothing new.
        let (status, again, replayed) = platform.post_with("/v1/messages", &body, &headers).await;
        assert_eq!((status, &again), (StatusCode::CREATED, &message));
        assert_eq!(replayed["idempotent-replayed"], "true");
        sent.push(message);
    }
    assert_eq!(sent[0]["conversation_id"], ab.as_str());
    assert_eq!(sent[1]["conversation_id"], ab.as_str(), "either way round");
    assert_ne!(sent[2]["conversation_id"], ab.as_str());

    let events = platform
        .events("messaging.events", 4, Duration::from_secs(10))
        .await;
    assert_eq!(events.len(), 4, "one event per message: {events:?}");
    // The reader sees other conversations' events interleaved as the bus delivers them;
    // order is promised per conversation (checked below).
    for message in &sent {
        let event = events
            .iter()
            .find(|e| data(e)["message_id"] == message["id"])
            .unwrap_or_else(|| panic!("no event for {message}: {events:?}"));
        assert_eq!(event.ty, "message.sent");
        assert_eq!(
            event.subject.as_deref(),
            message["conversation_id"].as_str()
        );
        assert_eq!(event.partition_key(), event.subject.as_deref());
        assert_eq!(event.extension_str("correlationid"), Some("corr-m"));
        assert_eq!(
            event.dataschema.as_deref(),
            Some("urn:ovasabi:schema:message.sent:1")
        );
        let payload = data(event);
        assert_eq!(payload["message_id"], message["id"]);
        assert_eq!(payload["sender_id"], message["from_user_id"]);
        assert_eq!(payload["recipient_ids"], json!([message["to_user_id"]]));
        assert_eq!(payload["body"], message["body"]);
    }
    let in_ab: Vec<Value> = events
        .iter()
        .filter(|e| e.subject.as_deref() == Some(ab.as_str()))
        .map(|e| data(e)["body"].clone())
        .collect();
    assert_eq!(
        in_ab,
        [json!("message 0"), json!("message 1"), json!("message 3")]
    );
    platform.stop().await;
}

async fn bad_messages_name_the_field_and_publish_nothing(db: Db) {
    let Some(platform) = start(
        vec![Arc::new(MessagingService)],
        db,
        "messaging: bad_messages_name_the_field_and_publish_nothing",
    )
    .await
    else {
        return;
    };
    let url = "https://cdn.example.com/a.png";
    for (body, field) in [
        (json!({"from_user_id": "ada", "to_user_id": "bo"}), "body"),
        (
            json!({"from_user_id": "ada", "to_user_id": "bo", "body": "  "}),
            "body",
        ),
        (
            json!({"from_user_id": "ada", "to_user_id": "bo", "body": "x".repeat(10_001)}),
            "body",
        ),
        (
            json!({"from_user_id": "", "to_user_id": "bo", "body": "hi"}),
            "from_user_id",
        ),
        (json!({"to_user_id": "bo", "body": "hi"}), "from_user_id"),
        (
            json!({"from_user_id": "ada", "to_user_id": "bo", "body": 5}),
            "body",
        ),
        (
            json!({"from_user_id": "ada", "to_user_id": "bo", "body": "hi", "attachment_urls": "x"}),
            "attachment_urls",
        ),
        (
            json!({"from_user_id": "ada", "to_user_id": "ada", "body": "hi"}),
            "to_user_id",
        ),
        (
            json!({"from_user_id": "ada", "to_user_id": "bo", "body": "hi", "attachment_urls": ["not a url"]}),
            "attachment_urls",
        ),
        (
            json!({"from_user_id": "ada", "to_user_id": "bo", "body": "hi", "attachment_urls": vec![url; 11]}),
            "attachment_urls",
        ),
        (
            json!({"from_user_id": "ada", "to_user_id": "bo", "body": "hi", "subject": "x"}),
            "subject",
        ),
    ] {
        let (status, err, _) = platform.post("/v1/messages", &body, None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {err}");
        assert_eq!(err["error"]["field"], field, "{body}: {err}");
    }
    for (query, field) in [
        ("", "user_id"),
        ("?user_id=", "user_id"),
        ("?user_id=ada&limit=0", "limit"),
        ("?user_id=ada&cursor=zz", "cursor"),
        ("?user_id=ada&conversation=1", "conversation"),
    ] {
        let (status, err) = platform.get(&format!("/v1/messages{query}")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {err}");
        assert_eq!(err["error"]["field"], field, "{query}: {err}");
    }
    // One valid message (with an attachment) after the refused ones: the only event.
    let (status, ok, _) = platform
        .post(
            "/v1/messages",
            &json!({"from_user_id": "ada", "to_user_id": "bo", "body": "hi", "attachment_urls": [url]}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ok}");
    assert_eq!(ok["attachment_urls"], json!([url]));
    let events = platform
        .events("messaging.events", 1, Duration::from_secs(10))
        .await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(data(&events[0])["attachment_urls"], json!([url]));
    let (_, doc) = platform.get("/openapi.json").await;
    assert!(doc["paths"]["/v1/messages"]["post"].is_object(), "{doc}");
    assert!(doc["paths"]["/v1/messages"]["get"].is_object(), "{doc}");
    platform.stop().await;
}

async fn a_users_messages_are_walked_page_by_page_each_once(db: Db) {
    let Some(platform) = start(
        vec![Arc::new(MessagingService)],
        db,
        "messaging: a_users_messages_are_walked_page_by_page_each_once",
    )
    .await
    else {
        return;
    };
    let mut mine = Vec::new();
    for i in 0..7 {
        let (from, to) = if i % 2 == 0 {
            ("ada", "bo")
        } else {
            ("cy", "ada")
        };
        mine.push(send(&platform, from, to, &format!("m{i}")).await["id"].clone());
        // Others' conversations are not Ada's.
        send(&platform, "bo", "cy", &format!("other {i}")).await;
    }
    mine.reverse(); // newest first

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..5 {
        let path = match &cursor {
            Some(c) => format!("/v1/messages?user_id=ada&limit=3&cursor={c}"),
            None => "/v1/messages?user_id=ada&limit=3".to_owned(),
        };
        let (status, page) = platform.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 3, "{page}");
        for item in items {
            assert!(
                item["from_user_id"] == "ada" || item["to_user_id"] == "ada",
                "{item}"
            );
            seen.push(item["id"].clone());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => {
                cursor = None;
                break;
            }
        }
    }
    assert!(cursor.is_none(), "the walk did not end");
    assert_eq!(seen, mine);
    platform.stop().await;
}

async fn messages_from_or_to_deleted_users_are_refused_once_the_projection_knows(db: Db) {
    let Some(platform) = start(
        vec![Arc::new(UsersService), Arc::new(MessagingService)],
        db,
        "messaging: messages_from_or_to_deleted_users_are_refused_once_the_projection_knows",
    )
    .await
    else {
        return;
    };
    let (status, ada, _) = platform
        .post("/v1/users", &json!({"email": "ada@example.com"}), None)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, bo, _) = platform
        .post("/v1/users", &json!({"email": "bo@example.com"}), None)
        .await;
    let (ada, bo) = (ada["id"].as_str().unwrap(), bo["id"].as_str().unwrap());
    send(&platform, ada, bo, "before").await;
    let response = platform
        .client
        .delete(format!("{}/v1/users/{bo}", platform.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // The projection follows user.events: wait for it to learn of the deletion.
    let deadline = Instant::now() + Duration::from_secs(10);
    let err = loop {
        let (status, answer, _) = platform
            .post(
                "/v1/messages",
                &json!({"from_user_id": ada, "to_user_id": bo, "body": "after"}),
                None,
            )
            .await;
        if status == StatusCode::UNPROCESSABLE_ENTITY {
            break answer;
        }
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        assert!(
            Instant::now() < deadline,
            "the deletion never reached messaging"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(err["error"]["field"], "to_user_id", "{err}");
    let (status, err, _) = platform
        .post(
            "/v1/messages",
            &json!({"from_user_id": bo, "to_user_id": ada, "body": "from the grave"}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["field"], "from_user_id", "{err}");
    // Users it has not heard of are accepted: messaging cannot check that they exist.
    send(&platform, ada, "someone-unknown", "hello?").await;
    platform.stop().await;
}

on_both!(
    messages_publish_in_conversation_order_once_per_key,
    bad_messages_name_the_field_and_publish_nothing,
    a_users_messages_are_walked_page_by_page_each_once,
    messages_from_or_to_deleted_users_are_refused_once_the_projection_knows,
);
