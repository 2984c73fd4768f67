//! The users service over real HTTP on the embedded bus and SQLite: registration publishes
//! `user.registered` once, with the request's correlation id; a retried request with the same
//! `Idempotency-Key` changes and publishes nothing; bad input is a 4xx naming the field.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Platform;
use ovasabi_services::users::UsersService;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_publishes_user_registered_once_per_idempotency_key() {
    let platform = Platform::embedded(vec![Arc::new(UsersService)]).await;
    let body = json!({"email": "Ada@Example.com", "display_name": "Ada", "locale": "en"});
    let (status, user, headers) = platform
        .post_with(
            "/v1/users",
            &body,
            &[("Idempotency-Key", "k1"), ("X-Correlation-Id", "corr-1")],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    assert_eq!(user["email"], "ada@example.com");
    assert_eq!(headers["x-correlation-id"], "corr-1");

    // The retry: the first answer, nothing new.
    let (status, again, headers) = platform.post("/v1/users", &body, Some("k1")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(again, user);
    assert_eq!(headers["idempotent-replayed"], "true");
    // The same key for another body is refused.
    let (status, err, _) = platform
        .post("/v1/users", &json!({"email": "bo@example.com"}), Some("k1"))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["code"], "idempotency_key_reused");

    let events = platform
        .events("user.events", 1, Duration::from_secs(10))
        .await;
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(event.ty, "user.registered");
    assert_eq!(event.subject.as_deref(), user["id"].as_str());
    assert_eq!(event.extension_str("correlationid"), Some("corr-1"));
    assert!(event.extension_str("traceparent").is_some());
    assert_eq!(
        event.dataschema.as_deref(),
        Some("urn:ovasabi:schema:user.registered:3")
    );

    let (status, fetched) = platform
        .get(&format!("/v1/users/{}", user["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched["email"], "ada@example.com");
    platform.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_answered_with_the_field_and_publishes_nothing() {
    let platform = Platform::embedded(vec![Arc::new(UsersService)]).await;
    for (body, field) in [
        (json!({"email": "not-an-email"}), "email"),
        (json!({"email": "a@b.c", "locale": "en US"}), "locale"),
        (json!({"display_name": "no email"}), "email"),
        (json!({"email": "a@b.c", "nickname": "x"}), "nickname"),
    ] {
        let (status, err, _) = platform.post("/v1/users", &body, None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {err}");
        assert_eq!(err["error"]["field"], field, "{body}: {err}");
    }
    let (status, _, _) = platform
        .post("/v1/users", &json!({"email": "ada@example.com"}), None)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, err, _) = platform
        .post("/v1/users", &json!({"email": "ADA@example.com"}), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    let (status, err) = platform.get("/v1/users/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");
    let (status, err) = platform.get("/v1/nothing").await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("no_route"))
    );
    let events = platform
        .events("user.events", 1, Duration::from_secs(5))
        .await;
    assert_eq!(events.len(), 1, "only the valid registration: {events:?}");
    let (status, doc) = platform.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["paths"]["/v1/users"]["post"].is_object(), "{doc}");
    platform.stop().await;
}
