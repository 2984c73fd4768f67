//! The users service over real HTTP on the embedded bus and SQLite: registration publishes
//! `user.registered` once, with the request's correlation id; a retried request with the same
//! `Idempotency-Key` changes and publishes nothing; bad input is a 4xx naming the field.

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{start, Db, Platform};
use ovasabi_services::users::UsersService;
use reqwest::StatusCode;
use serde_json::json;

async fn register_publishes_user_registered_once_per_idempotency_key(db: Db) {
    let Some(platform) = start(
        vec![Arc::new(UsersService)],
        db,
        "users: register_publishes_user_registered_once_per_idempotency_key",
    )
    .await
    else {
        return;
    };
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

async fn bad_input_is_answered_with_the_field_and_publishes_nothing(db: Db) {
    let Some(platform) = start(
        vec![Arc::new(UsersService)],
        db,
        "users: bad_input_is_answered_with_the_field_and_publishes_nothing",
    )
    .await
    else {
        return;
    };
    for (body, field) in [
        (json!({"email": "not-an-email"}), "email"),
        (json!({"email": "a@b.c", "locale": "en US"}), "locale"),
        (json!({"display_name": "no email"}), "email"),
        (json!({"email": "a@b.c", "nickname": "x"}), "nickname"),
        (json!({"email": 5}), "email"),
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
    assert_eq!(err["error"]["field"], "email", "{err}");
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

// ---------------------------------------------------------------------------------------
// Profile, email, deletion, listing.

use ovasabi_core::Event;
use reqwest::Method;
use serde_json::Value;

/// Any method, with an optional JSON body and extra headers.
async fn call(
    platform: &Platform,
    method: Method,
    path: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    let mut request = platform
        .client
        .request(method, format!("{}{path}", platform.base));
    if let Some(body) = body {
        request = request.json(body);
    }
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (
        status,
        response.json().await.unwrap_or(Value::Null),
        headers,
    )
}

fn data(event: &Event) -> Value {
    event.data_json().expect("JSON payload")
}

async fn profile_email_and_deletion_publish_in_order_once_per_key(db: Db) {
    let Some(platform) = start(
        vec![Arc::new(UsersService)],
        db,
        "users: profile_email_and_deletion_publish_in_order_once_per_key",
    )
    .await
    else {
        return;
    };
    let corr = [("X-Correlation-Id", "corr-u")];
    let (status, ada, _) = platform
        .post_with("/v1/users", &json!({"email": "ada@example.com"}), &corr)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ada}");
    let id = ada["id"].as_str().unwrap().to_owned();
    let bo = platform.register("bo@example.com").await;
    let user_path = format!("/v1/users/{id}");

    // PATCH: changes two fields; the retry replays; setting the same values changes nothing.
    let patch = json!({"display_name": "Ada L.", "bio": "Engines", "locale": null});
    let headers = [("Idempotency-Key", "p1"), ("X-Correlation-Id", "corr-u")];
    let (status, patched, _) =
        call(&platform, Method::PATCH, &user_path, Some(&patch), &headers).await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["display_name"], "Ada L.");
    assert_eq!(patched["bio"], "Engines");
    let (status, again, replayed) =
        call(&platform, Method::PATCH, &user_path, Some(&patch), &headers).await;
    assert_eq!((status, &again), (StatusCode::OK, &patched));
    assert_eq!(replayed["idempotent-replayed"], "true");
    let (status, same, _) = call(
        &platform,
        Method::PATCH,
        &user_path,
        Some(&json!({"display_name": "Ada L."})),
        &corr,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{same}");

    // Email: taken by Bo is a conflict naming the field; a free one changes it.
    let email_path = format!("{user_path}/email");
    let (status, err, _) = call(
        &platform,
        Method::POST,
        &email_path,
        Some(&json!({"email": "BO@example.com"})),
        &corr,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert_eq!(err["error"]["field"], "email");
    let email_headers = [("Idempotency-Key", "e1"), ("X-Correlation-Id", "corr-u")];
    let new_email = json!({"email": "ada@lovelace.example"});
    let (status, changed, _) = call(
        &platform,
        Method::POST,
        &email_path,
        Some(&new_email),
        &email_headers,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["email"], "ada@lovelace.example");
    let (status, again, _) = call(
        &platform,
        Method::POST,
        &email_path,
        Some(&new_email),
        &email_headers,
    )
    .await;
    assert_eq!((status, &again), (StatusCode::OK, &changed));

    // DELETE: soft; the retry replays; then the user is gone for changes, visible to GET.
    let delete_headers = [("Idempotency-Key", "d1"), ("X-Correlation-Id", "corr-u")];
    let (status, deleted, _) =
        call(&platform, Method::DELETE, &user_path, None, &delete_headers).await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(deleted["deleted"], true);
    let (status, again, replayed) =
        call(&platform, Method::DELETE, &user_path, None, &delete_headers).await;
    assert_eq!((status, &again), (StatusCode::OK, &deleted));
    assert_eq!(replayed["idempotent-replayed"], "true");
    let (status, fetched) = platform.get(&user_path).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched["deleted"], true, "{fetched}");
    let (status, err, _) = call(
        &platform,
        Method::PATCH,
        &user_path,
        Some(&json!({"bio": "x"})),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");
    assert_eq!(err["error"]["field"], "id", "{err}");
    let (status, err, _) = call(
        &platform,
        Method::POST,
        &email_path,
        Some(&json!({"email": "ada2@example.com"})),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");
    let (status, err, _) = call(&platform, Method::DELETE, &user_path, None, &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");
    // The deleted user's address is free again.
    platform.register("ada@lovelace.example").await;

    let events = platform
        .events("user.events", 6, Duration::from_secs(10))
        .await;
    let ada_events: Vec<&Event> = events
        .iter()
        .filter(|e| e.subject.as_deref() == Some(id.as_str()))
        .collect();
    let types: Vec<&str> = ada_events.iter().map(|e| e.ty.as_str()).collect();
    assert_eq!(
        types,
        [
            "user.registered",
            "user.profile_updated",
            "user.email_changed",
            "user.deleted"
        ],
        "one event per change, in order: {events:?}"
    );
    for event in &ada_events {
        assert_eq!(
            event.extension_str("correlationid"),
            Some("corr-u"),
            "{event:?}"
        );
        assert_eq!(event.partition_key(), Some(id.as_str()));
    }
    let profile = data(ada_events[1]);
    assert_eq!(profile["changed_fields"], json!(["display_name", "bio"]));
    assert_eq!(profile["display_name"], "Ada L.");
    assert_eq!(profile["bio"], "Engines");
    assert!(profile.get("locale").is_none(), "{profile}");
    let email = data(ada_events[2]);
    assert_eq!(email["old_email"], "ada@example.com");
    assert_eq!(email["new_email"], "ada@lovelace.example");
    let gone = data(ada_events[3]);
    assert_eq!(gone["reason"], "user_request");
    assert_eq!(gone["deleted_by"], id.as_str());
    // Everything else: Bo's registration and the new account.
    assert_eq!(events.len(), 6, "{events:?}");
    assert!(events
        .iter()
        .any(|e| e.subject.as_deref() == Some(bo.as_str())));
    platform.stop().await;
}

async fn bad_changes_name_the_field_and_publish_nothing(db: Db) {
    let Some(platform) = start(
        vec![Arc::new(UsersService)],
        db,
        "users: bad_changes_name_the_field_and_publish_nothing",
    )
    .await
    else {
        return;
    };
    let id = platform.register("ada@example.com").await;
    platform.register("bo@example.com").await;
    let user_path = format!("/v1/users/{id}");
    for (body, field) in [
        (json!({"display_name": "  "}), "display_name"),
        (json!({"display_name": "x".repeat(65)}), "display_name"),
        (json!({"avatar_url": "not a url"}), "avatar_url"),
        (
            json!({"avatar_url": "ftp://example.com/a.png"}),
            "avatar_url",
        ),
        (json!({"bio": "b".repeat(501)}), "bio"),
        (json!({"locale": "en US"}), "locale"),
        (json!({"locale": "e"}), "locale"),
        (json!({"nickname": "x"}), "nickname"),
        (json!({"display_name": 5}), "display_name"),
        (json!({"bio": "ok", "locale": ["en"]}), "locale"),
    ] {
        let (status, err, _) = call(&platform, Method::PATCH, &user_path, Some(&body), &[]).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {err}");
        assert_eq!(err["error"]["field"], field, "{body}: {err}");
    }
    let email_path = format!("{user_path}/email");
    for (body, status, field) in [
        (
            json!({"email": "nope"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "email",
        ),
        (json!({}), StatusCode::UNPROCESSABLE_ENTITY, "email"),
        (
            json!({"email": "bo@example.com"}),
            StatusCode::CONFLICT,
            "email",
        ),
    ] {
        let (got, err, _) = call(&platform, Method::POST, &email_path, Some(&body), &[]).await;
        assert_eq!(got, status, "{body}: {err}");
        assert_eq!(err["error"]["field"], field, "{body}: {err}");
    }
    for (query, field) in [
        ("?reason=bored", "reason"),
        ("?deleted_by=", "none"),
        ("?purge=now", "purge"),
    ] {
        let (status, err, _) = call(
            &platform,
            Method::DELETE,
            &format!("{user_path}{query}"),
            None,
            &[],
        )
        .await;
        if field == "none" {
            // An empty deleted_by means the user; covered by the next request being a 404.
            assert_eq!(status, StatusCode::OK, "{query}: {err}");
            continue;
        }
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {err}");
        assert_eq!(err["error"]["field"], field, "{query}: {err}");
    }
    for (query, field) in [
        ("?limit=0", "limit"),
        ("?limit=201", "limit"),
        ("?limit=many", "limit"),
        ("?cursor=zz", "cursor"),
        ("?cursor=6331", "cursor"),
        ("?page=2", "page"),
    ] {
        let (status, err) = platform.get(&format!("/v1/users{query}")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {err}");
        assert_eq!(err["error"]["field"], field, "{query}: {err}");
    }
    // Unknown users: 404 for every change.
    let (status, _, _) = call(
        &platform,
        Method::PATCH,
        "/v1/users/nobody",
        Some(&json!({"bio": "x"})),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Two registrations and the one deletion, nothing else.
    let events = platform
        .events("user.events", 3, Duration::from_secs(10))
        .await;
    let types: Vec<&str> = events.iter().map(|e| e.ty.as_str()).collect();
    assert_eq!(
        types,
        ["user.registered", "user.registered", "user.deleted"],
        "{events:?}"
    );
    let (_, doc) = platform.get("/openapi.json").await;
    for (path, method) in [
        ("/v1/users", "get"),
        ("/v1/users/{id}", "patch"),
        ("/v1/users/{id}", "delete"),
        ("/v1/users/{id}/email", "post"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{path} {method}");
    }
    platform.stop().await;
}

async fn listing_walks_every_live_user_once(db: Db) {
    let Some(platform) = start(
        vec![Arc::new(UsersService)],
        db,
        "users: listing_walks_every_live_user_once",
    )
    .await
    else {
        return;
    };
    let mut ids = Vec::new();
    for n in 0..7 {
        ids.push(platform.register(&format!("user{n}@example.com")).await);
    }
    let (status, _, _) = call(
        &platform,
        Method::DELETE,
        &format!("/v1/users/{}", ids[3]),
        None,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let deleted = ids.remove(3);

    let mut seen = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/users?limit=2&cursor={c}"),
            None => "/v1/users?limit=2".to_owned(),
        };
        let (status, page) = platform.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2, "{page}");
        seen.extend(items.iter().map(|u| u["id"].as_str().unwrap().to_owned()));
        pages += 1;
        assert!(pages <= 4, "the walk does not end: {seen:?}");
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    // UUIDv7 ids: registration order; each once; the deleted one left out.
    assert_eq!(seen, ids);
    assert!(!seen.contains(&deleted));
    assert_eq!(pages, 3);
    let (_, all) = platform.get("/v1/users").await;
    assert_eq!(all["items"].as_array().unwrap().len(), 6);
    assert_eq!(all["next_cursor"], Value::Null);
    platform.stop().await;
}

on_both!(
    register_publishes_user_registered_once_per_idempotency_key,
    bad_input_is_answered_with_the_field_and_publishes_nothing,
    profile_email_and_deletion_publish_in_order_once_per_key,
    bad_changes_name_the_field_and_publish_nothing,
    listing_walks_every_live_user_once,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_contracts_are_served_over_http() {
    let platform = Platform::embedded(vec![Arc::new(UsersService)]).await;
    let (status, list) = platform.get("/v1/schemas").await;
    assert_eq!(status, StatusCode::OK);
    let registered = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["event_type"] == "user.registered")
        .expect("user.registered is listed");
    assert_eq!(registered["versions"], json!([1, 2, 3]));
    assert_eq!(registered["topic"], "user.events");
    let (status, v2) = platform.get("/v1/schemas/user.registered/2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v2["$id"], "urn:ovasabi:schema:user.registered:2");
    let (status, err) = platform.get("/v1/schemas/user.registered/9").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("v1, v2, v3"),
        "{err}"
    );
    let (status, err) = platform.get("/v1/schemas/user.registered/two").await;
    assert_eq!(
        (status, err["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("version"))
    );
    let yaml = platform
        .client
        .get(format!("{}/asyncapi.yaml", platform.base))
        .send()
        .await
        .unwrap();
    assert_eq!(yaml.headers()["content-type"], "application/yaml");
    let text = yaml.text().await.unwrap();
    assert!(
        text.starts_with("asyncapi: \"3.0.0\""),
        "{}",
        &text[..80.min(text.len())]
    );
    platform.stop().await;
}
