//! Partner streams (`GET /v1/partners/stream`) over real HTTP: Server-Sent Events carry only
//! the event types the partner is permitted, numbered by `seq`; a reconnect with
//! `Last-Event-ID` resumes without a gap or a repeat; a WebSocket carries the same as JSON
//! messages; a hole in the numbering (a transaction committing late) holds what follows
//! back until it fills or the wait expires; the feed keeps a week; no key, no stream.

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use common::sse::{self, SseReader};
use common::{order_of, Db, Platform};
use futures::StreamExt as _;
use ovasabi_services::webhooks::{self, ManualClock, WebhooksService, GAP_WAIT};
use ovasabi_services::{commerce, users, Service};
use ovasabi_store::{params, Backend, Store};
use ovasabi_webhooks::ssrf::{parse_allowlist, Policy};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

on_both!(
    sse_sends_only_the_permitted_events_numbered,
    a_reconnect_resumes_after_the_last_event_id,
    a_websocket_carries_the_same_events_as_json,
    no_key_no_stream,
    a_hole_holds_later_events_back_until_it_fills_or_the_wait_ends,
    the_feed_keeps_a_week_and_a_late_client_starts_at_the_oldest_kept,
);

fn start_time() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap()
}

fn services(clock: &Arc<ManualClock>) -> Vec<Arc<dyn Service>> {
    let policy = Policy {
        allow_http: true,
        allowlist: parse_allowlist("127.0.0.1/32").unwrap(),
    };
    vec![
        Arc::new(users::UsersService),
        Arc::new(commerce::CommerceService::default_provider().payment_timeout(None)),
        Arc::new(WebhooksService::new(policy).with_clock(clock.clone())),
    ]
}

/// A partner permitted `permit`; its API key.
async fn partner(p: &Platform, name: &str, permit: &[&str]) -> String {
    let store = Store::open(&p.database, &[]).await.unwrap();
    let permit: Vec<String> = permit.iter().map(|s| (*s).to_owned()).collect();
    webhooks::add_partner(&store, name, &permit)
        .await
        .unwrap()
        .1
}

/// Places an order for `customer`; its id.
async fn place_order(p: &Platform, customer: &str, amount_minor: i64) -> String {
    let order = p
        .post_ok("/v1/orders", order_of(customer, amount_minor))
        .await;
    order["id"].as_str().unwrap().to_owned()
}

/// The feed's rows (seq, event type, event id), oldest first.
async fn feed(store: &Store) -> Vec<(i64, String, String)> {
    store
        .query(
            "SELECT seq, event_type, event_id FROM webhook_feed ORDER BY seq",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get("seq").unwrap(),
                r.get("event_type").unwrap(),
                r.get("event_id").unwrap(),
            )
        })
        .collect()
}

/// The feed once `ready` holds for it (panics after 15 s).
async fn feed_when(
    store: &Store,
    ready: impl Fn(&[(i64, String, String)]) -> bool,
) -> Vec<(i64, String, String)> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let rows = feed(store).await;
        if ready(&rows) {
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "the feed never got ready: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What an SSE stream sends: a comment, or an event.
#[derive(Debug)]
enum Frame {
    Comment(String),
    Event { id: i64, ty: String, data: Value },
}

/// A partner's stream.
struct Sse(SseReader);

impl Sse {
    /// `GET /v1/partners/stream<query>` with `key` and maybe `Last-Event-ID`.
    async fn open(p: &Platform, key: &str, query: &str, last_event_id: Option<i64>) -> Sse {
        let mut request = p
            .client
            .get(format!("{}/v1/partners/stream{query}", p.base))
            .bearer_auth(key);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        Sse(SseReader::open(request).await)
    }

    /// The next frame (keep-alives skipped), or `None` when nothing comes `within`.
    async fn frame(&mut self, within: Duration) -> Option<Frame> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            return Some(match self.0.frame(left).await? {
                sse::Frame::Comment(comment) if comment.is_empty() => continue,
                sse::Frame::Comment(comment) => Frame::Comment(comment),
                sse::Frame::Event { id, kind, data } => Frame::Event {
                    id: id.expect("an event has an id").parse().unwrap(),
                    ty: kind.expect("an event has a type"),
                    data: serde_json::from_str(&data).unwrap(),
                },
            });
        }
    }

    /// The first comment (where the stream starts).
    async fn comment(&mut self) -> String {
        match self.frame(Duration::from_secs(10)).await {
            Some(Frame::Comment(text)) => text,
            other => panic!("a first comment, not {other:?}"),
        }
    }

    /// The next event (seq, type, CloudEvent), comments skipped; panics after `within`.
    async fn event(&mut self, within: Duration) -> (i64, String, Value) {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.frame(left).await {
                Some(Frame::Event { id, ty, data }) => return (id, ty, data),
                Some(Frame::Comment(_)) => {}
                None => panic!("no event within {within:?}"),
            }
        }
    }

    /// Panics if an event comes within `within`.
    async fn quiet(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.frame(left).await {
                None => return,
                Some(Frame::Comment(_)) => {}
                Some(event) => panic!("nothing expected, got {event:?}"),
            }
        }
    }
}

async fn sse_sends_only_the_permitted_events_numbered(db: Db) {
    let clock = Arc::new(ManualClock::new(start_time()));
    let Some(p) = common::start(services(&clock), db, "partner_stream_sse").await else {
        return;
    };
    let store = Store::open(&p.database, &[]).await.unwrap();
    let key = partner(&p, "miniapp", &["order.*"]).await;
    let mut sse = Sse::open(&p, &key, "?after=0", None).await;
    let first = sse.comment().await;
    assert!(first.contains("after seq 0"), "{first}");

    let ada = p.register("ada@example.com").await;
    let order = place_order(&p, &ada, 2500).await;

    let (seq, ty, event) = sse.event(Duration::from_secs(10)).await;
    assert_eq!(ty, "order.placed");
    assert_eq!(event["type"], "order.placed", "{event}");
    assert_eq!(event["specversion"], "1.0", "{event}");
    assert_eq!(event["data"]["order_id"], order.as_str(), "{event}");
    // The feed has the user's registration too, before the order: never sent.
    let rows = feed_when(&store, |rows| rows.iter().any(|r| r.1 == "order.placed")).await;
    let registered = rows.iter().find(|r| r.1 == "user.registered").unwrap();
    let placed = rows.iter().find(|r| r.1 == "order.placed").unwrap();
    assert!(registered.0 < placed.0, "{rows:?}");
    assert_eq!(seq, placed.0, "id: is the feed's seq");
    assert_eq!(event["id"], placed.2.as_str());
    sse.quiet(Duration::from_millis(1500)).await;
    p.stop().await;
}

async fn a_reconnect_resumes_after_the_last_event_id(db: Db) {
    let clock = Arc::new(ManualClock::new(start_time()));
    let Some(p) = common::start(services(&clock), db, "partner_stream_resume").await else {
        return;
    };
    let store = Store::open(&p.database, &[]).await.unwrap();
    let key = partner(&p, "miniapp", &["order.*"]).await;
    let ada = p.register("ada@example.com").await;
    // An order before the stream opens: without `after`, the stream starts now.
    let before = place_order(&p, &ada, 1000).await;
    feed_when(&store, |rows| rows.iter().any(|r| r.1 == "order.placed")).await;

    let mut sse = Sse::open(&p, &key, "", None).await;
    let first = sse.comment().await;
    assert!(first.contains("new events only"), "{first}");
    let one = place_order(&p, &ada, 1100).await;
    let (seen, _, event) = sse.event(Duration::from_secs(10)).await;
    assert_eq!(
        event["data"]["order_id"],
        one.as_str(),
        "not {before}: {event}"
    );
    drop(sse);

    // Two more while away (the second once the first is recorded: the intake takes
    // concurrent events in any order, and the feed numbers them as recorded).
    let placed = |n: usize| {
        move |rows: &[(i64, String, String)]| {
            rows.iter().filter(|r| r.1 == "order.placed").count() == n
        }
    };
    let two = place_order(&p, &ada, 1200).await;
    feed_when(&store, placed(3)).await;
    let three = place_order(&p, &ada, 1300).await;
    let mut sse = Sse::open(&p, &key, "?after=0", Some(seen)).await;
    let first = sse.comment().await;
    assert!(first.contains(&format!("after seq {seen}")), "{first}");
    let (a, ty_a, event_a) = sse.event(Duration::from_secs(10)).await;
    let (b, ty_b, event_b) = sse.event(Duration::from_secs(10)).await;
    assert_eq!(
        (ty_a.as_str(), ty_b.as_str()),
        ("order.placed", "order.placed")
    );
    assert_eq!(event_a["data"]["order_id"], two.as_str(), "{event_a}");
    assert_eq!(event_b["data"]["order_id"], three.as_str(), "{event_b}");
    assert!(seen < a && a < b, "{seen} < {a} < {b}");
    sse.quiet(Duration::from_millis(1500)).await;
    p.stop().await;
}

async fn a_websocket_carries_the_same_events_as_json(db: Db) {
    let clock = Arc::new(ManualClock::new(start_time()));
    let Some(p) = common::start(services(&clock), db, "partner_stream_ws").await else {
        return;
    };
    let key = partner(&p, "miniapp", &["order.*", "user.registered"]).await;
    let url = format!(
        "{}/v1/partners/stream?after=0",
        p.base.replace("http://", "ws://")
    );
    let mut request = url.as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();

    let ada = p.register("ada@example.com").await;
    let order = place_order(&p, &ada, 2500).await;
    let mut got = Vec::new();
    while got.len() < 2 {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a WebSocket message")
            .unwrap()
            .unwrap();
        let message: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
        got.push(message);
    }
    // Oldest first (the intake may record the two in either order).
    assert!(got[0]["seq"].as_i64().unwrap() < got[1]["seq"].as_i64().unwrap());
    let of = |ty: &str| {
        got.iter()
            .find(|m| m["event"]["type"] == ty)
            .unwrap_or_else(|| panic!("no {ty}: {got:?}"))
    };
    assert_eq!(
        of("user.registered")["event"]["data"]["user_id"],
        ada.as_str()
    );
    assert_eq!(
        of("order.placed")["event"]["data"]["order_id"],
        order.as_str()
    );

    // No key: the upgrade is refused.
    let refused = tokio_tungstenite::connect_async(url.as_str()).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!("401 expected: {other:?}"),
    }
    p.stop().await;
}

async fn no_key_no_stream(db: Db) {
    let clock = Arc::new(ManualClock::new(start_time()));
    let Some(p) = common::start(services(&clock), db, "partner_stream_401").await else {
        return;
    };
    let key = partner(&p, "miniapp", &["order.*"]).await;
    let url = format!("{}/v1/partners/stream?after=0", p.base);
    let response = p.client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = p
        .client
        .get(&url)
        .bearer_auth("ovk_nope")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = p
        .client
        .get(format!("{}/v1/partners/stream?after=soon", p.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"]["field"], "after", "{answer}");
    let (_, doc) = p.get("/openapi.json").await;
    let documented = &doc["paths"]["/v1/partners/stream"]["get"];
    let parameters = documented["parameters"].to_string();
    assert!(
        parameters.contains("\"after\"") && parameters.contains("Last-Event-ID"),
        "{documented}"
    );
    p.stop().await;
}

/// Records an `order.placed` feed row numbered `seq` directly (as a late transaction would).
async fn insert_row(store: &Store, seq: i64, id: &str) {
    let sql = match store.backend() {
        Backend::Postgres => {
            "INSERT INTO webhook_feed (seq, event_id, event_type, body, at)
             OVERRIDING SYSTEM VALUE VALUES ($1, $2, 'order.placed', $3, $4)"
        }
        _ => {
            "INSERT INTO webhook_feed (seq, event_id, event_type, body, at)
             VALUES ($1, $2, 'order.placed', $3, $4)"
        }
    };
    let body = json!({"specversion": "1.0", "id": id, "source": "/test", "type": "order.placed"});
    store
        .execute(sql, params![seq, id, body.to_string(), start_time()])
        .await
        .unwrap();
}

async fn a_hole_holds_later_events_back_until_it_fills_or_the_wait_ends(db: Db) {
    let clock = Arc::new(ManualClock::new(start_time()));
    let Some(p) = common::start(services(&clock), db, "partner_stream_gap").await else {
        return;
    };
    let store = Store::open(&p.database, &[]).await.unwrap();
    let key = partner(&p, "miniapp", &["order.*"]).await;
    let mut sse = Sse::open(&p, &key, "", None).await;
    sse.comment().await;
    let mut m = feed(&store).await.last().map_or(0, |r| r.0);

    if store.backend() == Backend::Postgres {
        // Two intake-like transactions: the lower seq commits last.
        let body = |id: &str| {
            json!({"specversion": "1.0", "id": id, "source": "/test", "type": "order.placed"})
                .to_string()
        };
        let insert = "INSERT INTO webhook_feed (event_id, event_type, body, at)
                      VALUES ($1, 'order.placed', $2, $3) RETURNING seq";
        let mut late = store.begin().await.unwrap();
        let low: i64 = late
            .query_one(insert, params!["late", body("late"), start_time()])
            .await
            .unwrap()
            .get("seq")
            .unwrap();
        let high: i64 = store
            .query_one(insert, params!["early", body("early"), start_time()])
            .await
            .unwrap()
            .get("seq")
            .unwrap();
        assert_eq!(high, low + 1);
        sse.quiet(Duration::from_millis(800)).await;
        late.commit().await.unwrap();
        let (a, _, event_a) = sse.event(Duration::from_secs(3)).await;
        let (b, _, event_b) = sse.event(Duration::from_secs(3)).await;
        assert_eq!((a, b), (low, high));
        assert_eq!(
            (&event_a["id"], &event_b["id"]),
            (&json!("late"), &json!("early"))
        );
        m = high;
    }

    // m+1 and m+3: m+1 goes out, m+3 waits for m+2.
    insert_row(&store, m + 1, "gap-1").await;
    insert_row(&store, m + 3, "gap-3").await;
    let (seq, _, event) = sse.event(Duration::from_secs(3)).await;
    assert_eq!((seq, &event["id"]), (m + 1, &json!("gap-1")));
    sse.quiet(Duration::from_millis(800)).await;
    insert_row(&store, m + 2, "gap-2").await;
    let (seq, _, event) = sse.event(Duration::from_secs(3)).await;
    assert_eq!((seq, &event["id"]), (m + 2, &json!("gap-2")));
    let (seq, _, event) = sse.event(Duration::from_secs(3)).await;
    assert_eq!((seq, &event["id"]), (m + 3, &json!("gap-3")));

    // m+5 without m+4 (a transaction rolled back): it goes out once the wait ends.
    let inserted = Instant::now();
    insert_row(&store, m + 5, "gap-5").await;
    let (seq, _, event) = sse.event(Duration::from_secs(10)).await;
    assert_eq!((seq, &event["id"]), (m + 5, &json!("gap-5")));
    let waited = inserted.elapsed();
    assert!(
        waited >= GAP_WAIT - Duration::from_millis(100) && waited < Duration::from_secs(6),
        "{waited:?}"
    );
    // Then the stream goes on from there, live.
    insert_row(&store, m + 6, "gap-6").await;
    let (seq, _, _) = sse.event(Duration::from_secs(3)).await;
    assert_eq!(seq, m + 6);
    p.stop().await;
}

async fn the_feed_keeps_a_week_and_a_late_client_starts_at_the_oldest_kept(db: Db) {
    let clock = Arc::new(ManualClock::new(start_time()));
    let Some(p) = common::start(services(&clock), db, "partner_stream_retention").await else {
        return;
    };
    let store = Store::open(&p.database, &[]).await.unwrap();
    let key = partner(&p, "miniapp", &["order.*"]).await;
    let ada = p.register("ada@example.com").await;
    place_order(&p, &ada, 1000).await;
    let old = feed_when(&store, |rows| rows.iter().any(|r| r.1 == "order.placed")).await;
    // A client that saw the first event, then went away for eight days.
    let seen = old[0].0;

    // Six days on: still kept. Eight: pruned.
    clock.advance(Duration::from_secs(6 * 86_400));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(feed(&store).await.len(), old.len());
    clock.advance(Duration::from_secs(2 * 86_400));
    feed_when(&store, <[_]>::is_empty).await;

    let order = place_order(&p, &ada, 1100).await;
    let rows = feed_when(&store, |rows| rows.iter().any(|r| r.1 == "order.placed")).await;
    let oldest = rows[0].0;
    let mut sse = Sse::open(&p, &key, "", Some(seen)).await;
    let first = sse.comment().await;
    assert!(
        first.contains(&format!("starting from the oldest kept, seq {oldest}")),
        "{first}"
    );
    let (_, _, event) = sse.event(Duration::from_secs(10)).await;
    assert_eq!(event["data"]["order_id"], order.as_str(), "{event}");
    p.stop().await;
}
