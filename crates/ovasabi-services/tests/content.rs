//! The content service over real HTTP on the embedded bus and SQLite (and PostgreSQL when
//! it is there): a post's thread (posted, updated, comments, reactions, deleted) reaches the
//! bus in order with the content id as subject, the request's correlation id and a valid
//! schema; retries and repeated reactions publish nothing new; deleted content refuses
//! changes naming why; bad input is a 422 naming the field; pagination walks each item
//! once.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Platform;
use ovasabi_core::Event;
use ovasabi_services::content::ContentService;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn start() -> Platform {
    Platform::embedded(vec![Arc::new(ContentService)]).await
}

/// Any request, with a JSON body when given and extra headers.
async fn send(
    platform: &Platform,
    method: Method,
    path: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> (StatusCode, Value, HeaderMap) {
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

async fn post_content(platform: &Platform, author: &str, body: &str) -> String {
    let (status, content, _) = platform
        .post(
            "/v1/content",
            &json!({"author_id": author, "kind": "post", "body": body}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{content}");
    content["id"].as_str().unwrap().to_owned()
}

/// The events on `content.events` once at least `expected` arrived, each checked against
/// its schema.
async fn events(platform: &Platform, expected: usize) -> Vec<Event> {
    let events = platform
        .events("content.events", expected, Duration::from_secs(15))
        .await;
    for event in &events {
        common::contracts()
            .check(event)
            .unwrap_or_else(|e| panic!("{} breaks its schema: {e}", event.ty));
        assert_eq!(event.source, "/ovasabi/content");
    }
    events
}

fn data(event: &Event) -> Value {
    event.data_json().expect("JSON data")
}

/// Post, edit, comment, reply, react (twice the same), delete: the thread's events in order.
/// Shared by the SQLite and PostgreSQL tests.
async fn lifecycle(platform: &Platform) {
    let body = json!({
        "author_id": "user-ada", "kind": "article", "title": "Notes on the Analytical Engine",
        "body": "It weaves algebraic patterns.", "tags": ["history", "Computing"],
        "media_urls": ["https://cdn.ovasabi.example/media/engine.jpg"]
    });
    let (status, posted, headers) = platform
        .post_with(
            "/v1/content",
            &body,
            &[
                ("Idempotency-Key", "post-1"),
                ("X-Correlation-Id", "corr-post"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{posted}");
    assert_eq!(headers["x-correlation-id"], "corr-post");
    assert_eq!(posted["tags"], json!(["history", "computing"]));
    assert_eq!(posted["visibility"], "public");
    assert_eq!(posted["revision"], 1);
    let id = posted["id"].as_str().unwrap().to_owned();
    let (status, again, headers) = platform.post("/v1/content", &body, Some("post-1")).await;
    assert_eq!((status, &again), (StatusCode::CREATED, &posted));
    assert_eq!(headers["idempotent-replayed"], "true");

    let path = format!("/v1/content/{id}");
    let edit = json!({"editor_id": "user-mod", "title": "Notes on the Analytical Engine",
                      "body": "It weaves algebraic patterns, as the loom weaves flowers.",
                      "tags": ["history", "computing", "looms"]});
    let (status, edited, _) = send(
        platform,
        Method::PATCH,
        &path,
        Some(&edit),
        &[
            ("Idempotency-Key", "edit-1"),
            ("X-Correlation-Id", "corr-edit"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{edited}");
    assert_eq!(edited["revision"], 2);
    // The same edit again (another key): nothing changes, nothing is published.
    let (status, same, _) = send(platform, Method::PATCH, &path, Some(&edit), &[]).await;
    assert_eq!(status, StatusCode::OK, "{same}");
    assert_eq!(same["revision"], 2);

    let comments = format!("{path}/comments");
    let (status, comment, _) = platform
        .post_with(
            &comments,
            &json!({"author_id": "user-bo", "body": "Lovely read!"}),
            &[("X-Correlation-Id", "corr-comment")],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{comment}");
    let (status, reply, _) = platform
        .post(
            &comments,
            &json!({"author_id": "user-ada", "body": "Thank you.", "parent_comment_id": comment["id"]}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    assert_eq!(reply["parent_comment_id"], comment["id"]);

    let reactions = format!("{path}/reactions");
    let like = json!({"user_id": "user-bo", "kind": "like"});
    let (status, first, _) = platform
        .post_with(&reactions, &like, &[("X-Correlation-Id", "corr-like")])
        .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    // The same user and kind again: 200 with the reaction there is, no event.
    let (status, repeat, _) = platform.post(&reactions, &like, None).await;
    assert_eq!(status, StatusCode::OK, "{repeat}");
    assert_eq!(repeat["id"], first["id"]);
    let (status, love, _) = platform
        .post(
            &reactions,
            &json!({"user_id": "user-bo", "kind": "love"}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{love}");

    let (status, fetched) = platform.get(&path).await;
    assert_eq!(status, StatusCode::OK, "{fetched}");
    assert_eq!(fetched["comment_count"], 2);
    assert_eq!(fetched["reactions"], json!({"like": 1, "love": 1}));
    assert_eq!(fetched["body"], edit["body"]);

    let (status, deleted, _) = send(
        platform,
        Method::DELETE,
        &path,
        None,
        &[
            ("Idempotency-Key", "delete-1"),
            ("X-Correlation-Id", "corr-delete"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(deleted["deleted"], true);
    let (status, _, headers) = send(
        platform,
        Method::DELETE,
        &path,
        None,
        &[("Idempotency-Key", "delete-1")],
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the retried delete answers as the first"
    );
    assert_eq!(headers["idempotent-replayed"], "true");

    let events = events(platform, 7).await;
    let mine: Vec<&Event> = events
        .iter()
        .filter(|e| e.subject.as_deref() == Some(id.as_str()))
        .collect();
    let types: Vec<&str> = mine.iter().map(|e| e.ty.as_str()).collect();
    assert_eq!(
        types,
        [
            "content.posted",
            "content.updated",
            "comment.added",
            "comment.added",
            "reaction.added",
            "reaction.added",
            "content.deleted"
        ],
        "{events:?}"
    );
    assert_eq!(events.len(), 7);
    for (event, correlation) in [
        (0, "corr-post"),
        (1, "corr-edit"),
        (2, "corr-comment"),
        (4, "corr-like"),
        (6, "corr-delete"),
    ] {
        assert_eq!(
            mine[event].extension_str("correlationid"),
            Some(correlation)
        );
        assert_eq!(mine[event].partition_key(), Some(id.as_str()));
    }
    let posted_event = data(mine[0]);
    assert_eq!(posted_event["kind"], "article");
    assert_eq!(posted_event["tags"], json!(["history", "computing"]));
    let updated = data(mine[1]);
    assert_eq!(updated["changed_fields"], json!(["body", "tags"]));
    assert_eq!(updated["revision"], 2);
    assert_eq!(updated["editor_id"], "user-mod");
    assert_eq!(updated["author_id"], "user-ada");
    assert!(
        updated.get("title").is_none(),
        "the title did not change: {updated}"
    );
    assert_eq!(data(mine[3])["parent_comment_id"], comment["id"]);
    assert_eq!(data(mine[4])["reaction"], "like");
    assert_eq!(data(mine[4])["reaction_id"], first["id"]);
    assert_eq!(data(mine[5])["reaction"], "love");
    let deleted_event = data(mine[6]);
    assert_eq!(deleted_event["reason"], "author_request");
    assert_eq!(deleted_event["deleted_by"], "user-ada");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_is_published_in_order_once_per_change() {
    let platform = start().await;
    lifecycle(&platform).await;
    platform.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lifecycle_on_postgresql() {
    let Some(db) = ovasabi_store::testing::postgres_or_skip("content lifecycle").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bus: Arc<dyn ovasabi_core::Bus> = Arc::new(
        ovasabi_embedded::EmbeddedBus::open(ovasabi_embedded::EmbeddedConfig::new(
            dir.path().join("bus"),
        ))
        .await
        .unwrap(),
    );
    let platform = Platform::start(vec![Arc::new(ContentService)], bus, db.config()).await;
    lifecycle(&platform).await;
    platform.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_content_refuses_changes_naming_why() {
    let platform = start().await;
    let id = post_content(&platform, "user-ada", "Short-lived").await;
    let path = format!("/v1/content/{id}");
    let (status, _, _) = send(
        &platform,
        Method::DELETE,
        &path,
        Some(&json!({"deleted_by": "user-mod", "reason": "moderation"})),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    for (method, suffix, body) in [
        (Method::PATCH, "", Some(json!({"body": "new"}))),
        (Method::DELETE, "", None),
        (
            Method::POST,
            "/comments",
            Some(json!({"author_id": "u", "body": "hi"})),
        ),
        (
            Method::POST,
            "/reactions",
            Some(json!({"user_id": "u", "kind": "like"})),
        ),
    ] {
        let (status, err, _) = send(
            &platform,
            method.clone(),
            &format!("{path}{suffix}"),
            body.as_ref(),
            &[],
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT, "{method} {suffix}: {err}");
        assert_eq!(err["error"]["code"], "content_deleted", "{err}");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("was deleted") && message.contains("moderation"),
            "{message}"
        );
    }
    for read in [path.clone(), format!("{path}/comments")] {
        let (status, err) = platform.get(&read).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{read}: {err}");
        assert_eq!(err["error"]["code"], "content_deleted");
    }
    let (_, page) = platform.get("/v1/content?author_id=user-ada").await;
    assert_eq!(page["items"], json!([]));
    let (status, err, _) = send(
        &platform,
        Method::PATCH,
        "/v1/content/nope",
        Some(&json!({"body": "x"})),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");

    let events = events(&platform, 2).await;
    let types: Vec<&str> = events.iter().map(|e| e.ty.as_str()).collect();
    assert_eq!(types, ["content.posted", "content.deleted"]);
    assert_eq!(data(&events[1])["reason"], "moderation");
    assert_eq!(data(&events[1])["deleted_by"], "user-mod");
    platform.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_422_naming_the_field_and_publishes_nothing() {
    let platform = start().await;
    let post = |extra: Value| {
        let mut body = json!({"author_id": "user-ada", "kind": "post", "body": "Hello"});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        body
    };
    for (body, field) in [
        (post(json!({"kind": "blog"})), "kind"),
        (post(json!({"kind": "article"})), "title"),
        (post(json!({"title": "x".repeat(301)})), "title"),
        (post(json!({"body": "  "})), "body"),
        (post(json!({"body": 42})), "body"),
        (post(json!({"kind": "image", "body": ""})), "media_urls"),
        (
            post(json!({"media_urls": ["https://ok.example/a.png", "ftp://nope"]})),
            "media_urls[1]",
        ),
        (post(json!({"tags": ["fine", "not fine"]})), "tags[1]"),
        (post(json!({"tags": ["dup", "DUP"]})), "tags[1]"),
        (post(json!({"visibility": "secret"})), "visibility"),
        (post(json!({"author_id": "two words"})), "author_id"),
        (post(json!({"mood": "happy"})), "mood"),
        (json!({"author_id": "user-ada", "kind": "post"}), "body"),
    ] {
        let (status, err, _) = platform.post("/v1/content", &body, None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {err}");
        assert_eq!(err["error"]["field"], field, "{body}: {err}");
    }
    let id = post_content(&platform, "user-ada", "Hello").await;
    let path = format!("/v1/content/{id}");
    for (method, suffix, body, field) in [
        (Method::PATCH, "", json!({"body": ""}), "body"),
        (Method::PATCH, "", json!({"pinned": true}), "pinned"),
        (Method::PATCH, "", json!({"tags": ["#hash"]}), "tags[0]"),
        (Method::DELETE, "", json!({"reason": "spite"}), "reason"),
        (
            Method::POST,
            "/comments",
            json!({"author_id": "u", "body": " "}),
            "body",
        ),
        (
            Method::POST,
            "/comments",
            json!({"author_id": "u", "body": "hi", "parent_comment_id": "c-none"}),
            "parent_comment_id",
        ),
        (
            Method::POST,
            "/reactions",
            json!({"user_id": "u", "kind": "meh"}),
            "kind",
        ),
        (
            Method::POST,
            "/reactions",
            json!({"kind": "like"}),
            "user_id",
        ),
    ] {
        let (status, err, _) = send(
            &platform,
            method.clone(),
            &format!("{path}{suffix}"),
            Some(&body),
            &[],
        )
        .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{method} {suffix} {body}: {err}"
        );
        assert_eq!(
            err["error"]["field"], field,
            "{method} {suffix} {body}: {err}"
        );
    }
    for (query, field) in [
        ("/v1/content?limit=0", "limit"),
        ("/v1/content?limit=1000", "limit"),
        ("/v1/content?cursor=zz", "cursor"),
        ("/v1/content?sort=new", "sort"),
    ] {
        let (status, err) = platform.get(query).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {err}");
        assert_eq!(err["error"]["field"], field, "{query}: {err}");
    }
    let (status, err) = platform.get(&format!("{path}/comments?limit=x")).await;
    assert_eq!(
        (status, err["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("limit"))
    );

    let events = events(&platform, 1).await;
    let types: Vec<&str> = events.iter().map(|e| e.ty.as_str()).collect();
    assert_eq!(types, ["content.posted"], "only the valid post");
    let (_, doc) = platform.get("/openapi.json").await;
    assert!(
        doc["paths"]["/v1/content/{id}/reactions"]["post"].is_object(),
        "{doc}"
    );
    platform.stop().await;
}

/// Walks `first` page by page; the ids in order, and how many pages.
async fn walk(platform: &Platform, first: &str) -> (Vec<String>, usize) {
    let mut ids = Vec::new();
    let mut pages = 0;
    let mut path = first.to_owned();
    loop {
        let (status, page) = platform.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {page}");
        pages += 1;
        for item in page["items"].as_array().unwrap() {
            ids.push(item["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("{first}&cursor={cursor}"),
            None => return (ids, pages),
        }
        assert!(pages < 20, "the walk does not end");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_walks_each_item_once() {
    let platform = start().await;
    let mut ada = Vec::new();
    for i in 0..5 {
        ada.push(post_content(&platform, "user-ada", &format!("post {i}")).await);
        if i % 2 == 0 {
            post_content(&platform, "user-bo", &format!("bo {i}")).await;
        }
    }
    let (ids, pages) = walk(&platform, "/v1/content?author_id=user-ada&limit=2").await;
    let mut newest_first = ada.clone();
    newest_first.reverse();
    assert_eq!(ids, newest_first, "each of Ada's posts once, newest first");
    assert_eq!(pages, 3);
    let (all, _) = walk(&platform, "/v1/content?limit=3").await;
    assert_eq!(all.len(), 8);

    let comments = format!("/v1/content/{}/comments", ada[0]);
    let mut written = Vec::new();
    for i in 0..5 {
        let (status, comment, _) = platform
            .post(
                &comments,
                &json!({"author_id": "user-bo", "body": format!("comment {i}")}),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{comment}");
        written.push(comment["id"].as_str().unwrap().to_owned());
    }
    let (ids, pages) = walk(&platform, &format!("{comments}?limit=2")).await;
    assert_eq!(ids, written, "each comment once, oldest first");
    assert_eq!(pages, 3);
    platform.stop().await;
}
