//! Partner webhooks over real HTTP: a test receiver (an HTTP server on 127.0.0.1, allowed by
//! the test's SSRF allowlist) verifies every delivery's Standard Webhooks signature as the
//! reference libraries do; partners receive only the event types they are permitted and
//! see only their own endpoints; retries follow the schedule on a clock the test moves;
//! `410 Gone` stops delivery after one response; `429` waits as long as asked; a slow
//! endpoint does not hold up another partner's; a restart in the middle of the retries
//! loses nothing; the SSRF guard refuses private targets at registration; the intake,
//! which keeps the endpoints in memory, follows changes another process makes to them.

#[macro_use]
mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::response::IntoResponse;
use chrono::{TimeZone, Utc};
use common::{order_of, Db, Platform};
use ovasabi_services::webhooks::{self, ManualClock, WebhooksService, SCHEDULE};
use ovasabi_services::{commerce, users, Service};
use ovasabi_store::{Store, StoreConfig};
use ovasabi_webhooks::signing::{self, Secret};
use ovasabi_webhooks::ssrf::{parse_allowlist, Policy};
use reqwest::StatusCode;
use serde_json::{json, Value};

on_both!(
    deliveries_are_signed_and_partners_get_only_what_they_may,
    a_restart_in_the_middle_of_the_retries_loses_nothing,
    the_intake_follows_endpoint_changes_made_by_another_process,
);

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: HashMap<String, String>,
    body: String,
}

/// An HTTP server answering by path: `/ok…` 200, `/fail…` 500, `/gone…` 410, `/busy…` 429
/// with `Retry-After: 120` the first time then 200, `/flaky…` 500 the first time then 200,
/// `/slow…` 200 after 8 s.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start() -> (Receiver, String) {
        let receiver = Receiver::default();
        let app = axum::Router::new()
            .route("/{*path}", axum::routing::post(receive))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, format!("http://{addr}"))
    }

    fn on(&self, path: &str) -> Vec<Received> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// The requests to `path`, once there are `n` (panics after 15 s).
    async fn wait_for(&self, path: &str, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let got = self.on(path);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{path} got {} requests, not {n}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn receive(
    State(receiver): State<Receiver>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: String,
) -> axum::response::Response {
    let path = format!("/{path}");
    let before = receiver.on(&path).len();
    receiver.got.lock().unwrap().push(Received {
        path: path.clone(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
        body,
    });
    let kind = path.trim_start_matches('/');
    if kind.starts_with("ok") {
        AxumStatus::OK.into_response()
    } else if kind.starts_with("fail") {
        AxumStatus::INTERNAL_SERVER_ERROR.into_response()
    } else if kind.starts_with("gone") {
        AxumStatus::GONE.into_response()
    } else if kind.starts_with("busy") && before == 0 {
        (AxumStatus::TOO_MANY_REQUESTS, [("retry-after", "120")]).into_response()
    } else if kind.starts_with("flaky") && before == 0 {
        AxumStatus::SERVICE_UNAVAILABLE.into_response()
    } else if kind.starts_with("slow") {
        tokio::time::sleep(Duration::from_secs(8)).await;
        AxumStatus::OK.into_response()
    } else {
        AxumStatus::OK.into_response()
    }
}

/// The test's SSRF policy: plain http to 127.0.0.1 only.
fn policy() -> Policy {
    Policy {
        allow_http: true,
        allowlist: parse_allowlist("127.0.0.1/32").unwrap(),
    }
}

fn start_time() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap()
}

fn services(clock: &Arc<ManualClock>) -> Vec<Arc<dyn Service>> {
    vec![
        Arc::new(users::UsersService),
        Arc::new(commerce::CommerceService::default_provider().payment_timeout(None)),
        Arc::new(
            WebhooksService::new(policy())
                .with_clock(clock.clone())
                .without_jitter(),
        ),
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

async fn call(
    p: &Platform,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = p.client.request(method, format!("{}{path}", p.base));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn register(p: &Platform, key: &str, url: &str, filters: &[&str]) -> (String, Secret) {
    let (status, endpoint) = call(
        p,
        reqwest::Method::POST,
        "/v1/webhooks",
        Some(key),
        Some(json!({"url": url, "filters": filters})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{endpoint}");
    let secret = Secret::parse(endpoint["secret"].as_str().unwrap()).unwrap();
    (endpoint["id"].as_str().unwrap().to_owned(), secret)
}

/// Verifies `r` as a receiver following the reference libraries does, at `now`.
fn verify(r: &Received, secret: &Secret, now: i64) -> Result<(), signing::VerifyError> {
    signing::verify(
        secret,
        &r.headers[signing::HEADER_ID],
        &r.headers[signing::HEADER_TIMESTAMP],
        &r.headers[signing::HEADER_SIGNATURE],
        r.body.as_bytes(),
        now,
    )
}

/// The endpoint's attempts, oldest first, once there are `n`.
async fn attempts_when(p: &Platform, key: &str, id: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, page) = call(
            p,
            reqwest::Method::GET,
            &format!("/v1/webhooks/{id}/attempts?limit=100"),
            Some(key),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let mut items = page["items"].as_array().unwrap().clone();
        if items.len() >= n {
            items.reverse();
            return items;
        }
        assert!(
            Instant::now() < deadline,
            "{} attempts, not {n}: {items:?}",
            items.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn deliveries_are_signed_and_partners_get_only_what_they_may(db: Db) {
    let clock = Arc::new(ManualClock::new(start_time()));
    let Some(p) = common::start(services(&clock), db, "webhooks_signed").await else {
        return;
    };
    let (receiver, base) = Receiver::start().await;
    let acme = partner(&p, "acme", &["order.*"]).await;
    let globex = partner(&p, "globex", &["user.*", "order.placed"]).await;

    // No key, a wrong key: 401.
    let (status, answer) = call(&p, reqwest::Method::GET, "/v1/webhooks", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    let (status, _) = call(
        &p,
        reqwest::Method::GET,
        "/v1/webhooks",
        Some("ovk_nope"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The SSRF guard and the permissions at registration.
    for url in [
        "http://10.0.0.1/hook",
        "http://127.0.0.2/hook",
        "http://[::ffff:192.168.1.1]/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:1/hook",
        "http://0.0.0.0:1/hook",
    ] {
        let (status, answer) = call(
            &p,
            reqwest::Method::POST,
            "/v1/webhooks",
            Some(&acme),
            Some(json!({"url": url, "filters": ["order.*"]})),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {answer}");
        assert_eq!(answer["error"]["field"], "url", "{url}: {answer}");
    }
    let (status, answer) = call(
        &p,
        reqwest::Method::POST,
        "/v1/webhooks",
        Some(&acme),
        Some(json!({"url": format!("{base}/ok-acme"), "filters": ["user.*"]})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(answer["error"]["field"], "filters", "{answer}");

    // acme asks for everything but may only have order.*; globex asks for user.* and
    // order.placed.
    let (acme_hook, acme_secret) = register(&p, &acme, &format!("{base}/ok-acme"), &["*"]).await;
    let (globex_hook, globex_secret) = register(
        &p,
        &globex,
        &format!("{base}/ok-globex"),
        &["user.*", "order.*"],
    )
    .await;

    // A partner sees only its own endpoints.
    let (status, _) = call(
        &p,
        reqwest::Method::GET,
        &format!("/v1/webhooks/{acme_hook}"),
        Some(&globex),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, listed) = call(
        &p,
        reqwest::Method::GET,
        "/v1/webhooks",
        Some(&globex),
        None,
    )
    .await;
    let ids: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [globex_hook.as_str()]);

    // Ada registers, orders, pays; the order ships.
    let ada = p
        .post_ok("/v1/users", json!({"email": "ada@example.com"}))
        .await;
    let ada = ada["id"].as_str().unwrap().to_owned();
    let order = p.post_ok("/v1/orders", order_of(&ada, 2500)).await;
    let order = order["id"].as_str().unwrap().to_owned();
    p.post_ok(
        &format!("/v1/orders/{order}/pay"),
        json!({"method": "card"}),
    )
    .await;
    p.post_ok(
        &format!("/v1/orders/{order}/ship"),
        json!({"carrier": "royal-mail"}),
    )
    .await;

    let now = clock.now_for_test();
    let acme_got = receiver.wait_for("/ok-acme", 2).await;
    let globex_got = receiver.wait_for("/ok-globex", 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let types = |got: &[Received]| -> Vec<String> {
        let mut t: Vec<String> = got
            .iter()
            .map(|r| {
                serde_json::from_str::<Value>(&r.body).unwrap()["type"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        t.sort();
        t
    };
    assert_eq!(
        types(&receiver.on("/ok-acme")),
        ["order.placed", "order.shipped"],
        "acme may have order.* only"
    );
    assert_eq!(
        types(&receiver.on("/ok-globex")),
        ["order.placed", "user.registered"],
        "globex may have user.* and order.placed only"
    );
    for (got, secret) in [(&acme_got, &acme_secret), (&globex_got, &globex_secret)] {
        for r in got {
            verify(r, secret, now).unwrap_or_else(|e| panic!("{e}: {r:?}"));
            let event: Value = serde_json::from_str(&r.body).unwrap();
            assert_eq!(event["specversion"], "1.0");
            assert_eq!(r.headers[signing::HEADER_ID], event["id"].as_str().unwrap());
            assert_eq!(r.headers[signing::HEADER_TIMESTAMP], now.to_string());
            assert!(r.headers["content-type"].starts_with("application/cloudevents+json"));
            assert!(r.headers.contains_key("traceparent"), "{r:?}");
            // Another partner's secret does not verify it; nor does a changed body.
            let other = if std::ptr::eq(secret, &acme_secret) {
                &globex_secret
            } else {
                &acme_secret
            };
            assert!(verify(r, other, now).is_err());
            let mut changed = r.clone();
            changed.body = changed
                .body
                .replacen("order", "ordex", 1)
                .replacen("user", "usex", 1);
            assert!(verify(&changed, secret, now).is_err());
        }
    }

    // Rotation: during the overlap both signatures are sent, each verifies.
    let (status, rotated) = call(
        &p,
        reqwest::Method::POST,
        &format!("/v1/webhooks/{acme_hook}/rotate-secret"),
        Some(&acme),
        Some(json!({"overlap": "1h"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new_secret = Secret::parse(rotated["secret"].as_str().unwrap()).unwrap();
    p.post_ok("/v1/orders", order_of(&ada, 1200)).await;
    let got = receiver.wait_for("/ok-acme", 3).await;
    let last = &got[2];
    assert_eq!(
        last.headers[signing::HEADER_SIGNATURE].split(' ').count(),
        2
    );
    verify(last, &new_secret, now).unwrap();
    verify(last, &acme_secret, now).unwrap();

    // Attempts are recorded with status and latency.
    let attempts = attempts_when(&p, &acme, &acme_hook, 3).await;
    assert!(
        attempts.iter().all(|a| a["status_code"] == 200),
        "{attempts:?}"
    );
    let (_, shown) = call(
        &p,
        reqwest::Method::GET,
        &format!("/v1/webhooks/{acme_hook}"),
        Some(&acme),
        None,
    )
    .await;
    assert_eq!(shown["deliveries"]["delivered"], 3, "{shown}");
    // The same per endpoint in the Prometheus metrics.
    let metrics = p.text("/metrics").await;
    let line = format!(
        "ovasabi_webhook_endpoint_deliveries{{endpoint=\"{acme_hook}\",status=\"delivered\"}} 3"
    );
    assert!(
        metrics.lines().any(|l| l == line),
        "no {line:?} in:\n{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l == "ovasabi_bus_up 1"),
        "{metrics}"
    );
    p.stop().await;
}

trait NowForTest {
    fn now_for_test(&self) -> i64;
}

impl NowForTest for ManualClock {
    fn now_for_test(&self) -> i64 {
        webhooks::Clock::now(self).timestamp()
    }
}

/// Places an order for a new user (one `order.placed` to deliver).
async fn place_order(p: &Platform, email: &str) {
    let user = p.post_ok("/v1/users", json!({"email": email})).await;
    p.post_ok("/v1/orders", order_of(user["id"].as_str().unwrap(), 1000))
        .await;
}

/// The `order.placed` deliveries queued for `endpoint`, once the intake has handled
/// `placed` such events in all.
async fn queued_after(store: &Store, endpoint: &str, placed: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let handled: i64 = store
            .query_one(
                "SELECT COUNT(*) AS n FROM webhook_feed WHERE event_type = 'order.placed'",
                &[],
            )
            .await
            .unwrap()
            .get("n")
            .unwrap();
        if handled >= placed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the intake handled {handled} orders, not {placed}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    store
        .query_one(
            "SELECT COUNT(*) AS n FROM webhook_deliveries WHERE endpoint_id = $1 AND event_type = 'order.placed'",
            ovasabi_store::params![endpoint],
        )
        .await
        .unwrap()
        .get("n")
        .unwrap()
}

async fn the_intake_follows_endpoint_changes_made_by_another_process(db: Db) {
    let clock = Arc::new(ManualClock::new(start_time()));
    let Some(p) = common::start(services(&clock), db, "webhooks_endpoint_changes").await else {
        return;
    };
    let (_receiver, base) = Receiver::start().await;
    let acme = partner(&p, "acme", &["order.*"]).await;
    let (hook, _) = register(&p, &acme, &format!("{base}/ok-acme"), &["order.*"]).await;
    // Another process's connection to the same database.
    let other = Store::open(&p.database, &[]).await.unwrap();

    place_order(&p, "one@example.com").await;
    assert_eq!(queued_after(&other, &hook, 1).await, 1);

    // Each change made elsewhere, then an order: the endpoint's queued orders after it.
    let partner_of = "(SELECT partner_id FROM webhook_endpoints WHERE id = $1)";
    let steps = [
        (
            "filters changed to a type the partner is not permitted",
            "UPDATE webhook_endpoints SET filters = '[\"user.*\"]' WHERE id = $1".to_owned(),
            1,
        ),
        (
            "filters back to orders",
            "UPDATE webhook_endpoints SET filters = '[\"order.placed\"]' WHERE id = $1".to_owned(),
            2,
        ),
        (
            "the partner's permissions withdrawn",
            format!("UPDATE webhook_partners SET permitted = '[]' WHERE id = {partner_of}"),
            2,
        ),
        (
            "the partner's permissions given back",
            format!(
                "UPDATE webhook_partners SET permitted = '[\"order.*\"]' WHERE id = {partner_of}"
            ),
            3,
        ),
        (
            "disabled",
            "UPDATE webhook_endpoints SET state = 'disabled' WHERE id = $1".to_owned(),
            3,
        ),
        (
            "active again",
            "UPDATE webhook_endpoints SET state = 'active' WHERE id = $1".to_owned(),
            4,
        ),
    ];
    for (n, (what, sql, queued)) in steps.iter().enumerate() {
        other
            .execute(sql, ovasabi_store::params![hook.as_str()])
            .await
            .unwrap();
        place_order(&p, &format!("order-{n}@example.com")).await;
        assert_eq!(
            queued_after(&other, &hook, n as i64 + 2).await,
            *queued,
            "after: {what}"
        );
    }
    // Removed; a second endpoint, created after the others were read, gets the next order.
    let (status, _) = call(
        &p,
        reqwest::Method::DELETE,
        &format!("/v1/webhooks/{hook}"),
        Some(&acme),
        None,
    )
    .await;
    assert!(status.is_success(), "{status}");
    let (second, _) = register(&p, &acme, &format!("{base}/ok-second"), &["order.*"]).await;
    place_order(&p, "last@example.com").await;
    assert_eq!(
        queued_after(&other, &second, steps.len() as i64 + 2).await,
        1
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_follow_the_schedule_then_the_endpoint_is_disabled() {
    let clock = Arc::new(ManualClock::new(start_time()));
    let p = Platform::embedded(services(&clock)).await;
    let (receiver, base) = Receiver::start().await;
    let key = partner(&p, "acme", &["order.placed"]).await;
    let (hook, _) = register(&p, &key, &format!("{base}/fail"), &["order.placed"]).await;
    place_order(&p, "ada@example.com").await;

    // The first attempt at once; each retry when its delay has passed, not before.
    attempts_when(&p, &key, &hook, 1).await;
    for (n, delay) in SCHEDULE.iter().enumerate() {
        clock.advance(*delay - Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(
            receiver.on("/fail").len(),
            n + 1,
            "retry {} came early",
            n + 1
        );
        clock.advance(Duration::from_secs(1));
        attempts_when(&p, &key, &hook, n + 2).await;
    }
    let attempts = attempts_when(&p, &key, &hook, 8).await;
    let times: Vec<chrono::DateTime<Utc>> = attempts
        .iter()
        .map(|a| a["at"].as_str().unwrap().parse().unwrap())
        .collect();
    let gaps: Vec<Duration> = times
        .windows(2)
        .map(|w| (w[1] - w[0]).to_std().unwrap())
        .collect();
    assert_eq!(gaps, SCHEDULE.to_vec());
    assert!(attempts.iter().all(|a| a["status_code"] == 500));

    // Failed through the whole schedule: disabled, and its owner told.
    let shown = p
        .get_when_with(&format!("/v1/webhooks/{hook}"), &key, |e| {
            e["state"] == "disabled"
        })
        .await;
    assert_eq!(shown["disabled_reason"], "consecutive_failures");
    assert_eq!(shown["deliveries"]["failed"], 1);
    let disabled = p.events("webhook.events", 1, Duration::from_secs(10)).await;
    assert_eq!(disabled.len(), 1);
    let data = disabled[0].data_json().unwrap();
    assert_eq!(data["endpoint_id"], hook.as_str());
    assert_eq!(data["reason"], "consecutive_failures");
    assert_eq!(data["last_status_code"], 500);
    // Nothing more goes to it.
    place_order(&p, "bo@example.com").await;
    clock.advance(Duration::from_secs(36_000));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(receiver.on("/fail").len(), 8);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_stops_delivery_after_one_response_and_429_waits_as_asked() {
    let clock = Arc::new(ManualClock::new(start_time()));
    let p = Platform::embedded(services(&clock)).await;
    let (receiver, base) = Receiver::start().await;
    let key = partner(&p, "acme", &["order.placed"]).await;
    let (gone, _) = register(&p, &key, &format!("{base}/gone"), &["order.placed"]).await;
    let (busy, _) = register(&p, &key, &format!("{base}/busy"), &["order.placed"]).await;
    place_order(&p, "ada@example.com").await;
    receiver.wait_for("/gone", 1).await;
    receiver.wait_for("/busy", 1).await;
    let shown = p
        .get_when_with(&format!("/v1/webhooks/{gone}"), &key, |e| {
            e["state"] == "disabled"
        })
        .await;
    assert_eq!(shown["disabled_reason"], "gone");

    // 429 Retry-After: 120 — not retried after the schedule's 5 s, but after 120 s.
    clock.advance(Duration::from_secs(119));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(receiver.on("/busy").len(), 1);
    clock.advance(Duration::from_secs(1));
    receiver.wait_for("/busy", 2).await;
    let attempts = attempts_when(&p, &key, &busy, 2).await;
    assert_eq!(attempts[0]["status_code"], 429);
    assert_eq!(attempts[1]["status_code"], 200);

    // Gone means gone: later events and time bring nothing.
    place_order(&p, "bo@example.com").await;
    receiver.wait_for("/busy", 3).await;
    clock.advance(Duration::from_secs(36_000));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(receiver.on("/gone").len(), 1);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_sends_past_events_again_under_new_message_ids() {
    let clock = Arc::new(ManualClock::new(start_time()));
    let p = Platform::embedded(services(&clock)).await;
    let (receiver, base) = Receiver::start().await;
    let since = Utc::now() - chrono::Duration::minutes(5);
    // Two orders before the endpoint exists, one after.
    place_order(&p, "ada@example.com").await;
    place_order(&p, "bo@example.com").await;
    let key = partner(&p, "acme", &["order.placed"]).await;
    let (hook, secret) = register(&p, &key, &format!("{base}/ok-replay"), &["order.*"]).await;
    place_order(&p, "cy@example.com").await;
    let live = receiver.wait_for("/ok-replay", 1).await;

    let (status, answer) = call(
        &p,
        reqwest::Method::POST,
        &format!(
            "/v1/webhooks/{hook}/replay?from={}",
            since.format("%Y-%m-%dT%H:%M:%SZ")
        ),
        Some(&key),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(
        answer["queued"], 3,
        "every order.placed since then: {answer}"
    );
    // The live deliveries: cy's order, and the earlier ones if the intake had not handled
    // them yet when the endpoint was registered.
    let deadline = Instant::now() + Duration::from_secs(15);
    let replayed = loop {
        let replayed: Vec<Received> = receiver
            .on("/ok-replay")
            .into_iter()
            .filter(|r| r.headers[signing::HEADER_ID].contains(".replay-"))
            .collect();
        if replayed.len() >= 3 || Instant::now() > deadline {
            break replayed;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(replayed.len(), 3);
    for r in &replayed {
        let id = &r.headers[signing::HEADER_ID];
        let event: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(event["type"], "order.placed");
        assert_eq!(
            id,
            &format!(
                "{}.replay-{}",
                event["id"].as_str().unwrap(),
                answer["replay_id"].as_str().unwrap()
            )
        );
        verify(r, &secret, clock.now_for_test()).unwrap();
    }
    assert!(
        replayed.iter().any(|r| r.body == live[0].body),
        "the live event is among those replayed"
    );

    // A bad `from`, and another partner's endpoint, are refused.
    let (status, answer) = call(
        &p,
        reqwest::Method::POST,
        &format!("/v1/webhooks/{hook}/replay?from=yesterday"),
        Some(&key),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(answer["error"]["field"], "from");
    let other = partner(&p, "globex", &["order.placed"]).await;
    let (status, _) = call(
        &p,
        reqwest::Method::POST,
        &format!(
            "/v1/webhooks/{hook}/replay?from={}",
            since.format("%Y-%m-%dT%H:%M:%SZ")
        ),
        Some(&other),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_endpoint_does_not_hold_up_another_partners() {
    let clock = Arc::new(ManualClock::new(start_time()));
    let p = Platform::embedded(services(&clock)).await;
    let (receiver, base) = Receiver::start().await;
    let slow_key = partner(&p, "slowcorp", &["order.placed"]).await;
    let fast_key = partner(&p, "fastcorp", &["order.placed"]).await;
    register(&p, &slow_key, &format!("{base}/slow"), &["order.placed"]).await;
    register(&p, &fast_key, &format!("{base}/ok-fast"), &["order.placed"]).await;
    place_order(&p, "ada@example.com").await;
    place_order(&p, "bo@example.com").await;
    // Both of the fast endpoint's events arrive while the slow one still holds its first
    // (it answers after 8 s).
    let started = Instant::now();
    receiver.wait_for("/ok-fast", 2).await;
    assert_eq!(receiver.on("/slow").len(), 1, "one at a time per endpoint");
    assert!(started.elapsed() < Duration::from_secs(8));
    p.stop().await;
}

async fn a_restart_in_the_middle_of_the_retries_loses_nothing(db: Db) {
    let clock = Arc::new(ManualClock::new(start_time()));
    let (receiver, base) = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let schema = match db {
        Db::Postgres => match ovasabi_store::testing::postgres_or_skip("webhooks_restart").await {
            Some(schema) => Some(schema),
            None => return,
        },
        _ => None,
    };
    let database = match &schema {
        Some(schema) => schema.config(),
        None => StoreConfig::sqlite(dir.path().join("ovasabi.db")),
    };
    let open = || async {
        let bus: Arc<dyn ovasabi_core::Bus> = Arc::new(
            ovasabi_embedded::EmbeddedBus::open(ovasabi_embedded::EmbeddedConfig::new(
                dir.path().join("bus"),
            ))
            .await
            .unwrap(),
        );
        Platform::start(services(&clock), bus, database.clone()).await
    };
    let p = open().await;
    let key = partner(&p, "acme", &["order.placed"]).await;
    let (hook, secret) = register(&p, &key, &format!("{base}/flaky"), &["order.placed"]).await;
    place_order(&p, "ada@example.com").await;
    let first = receiver.wait_for("/flaky", 1).await;
    attempts_when(&p, &key, &hook, 1).await;
    p.stop().await;

    // Restarted, the retry goes out when due: the same message, signed again.
    let p = open().await;
    clock.advance(SCHEDULE[0]);
    let got = receiver.wait_for("/flaky", 2).await;
    assert_eq!(
        got[1].headers[signing::HEADER_ID],
        first[0].headers[signing::HEADER_ID]
    );
    assert_eq!(got[1].body, first[0].body);
    verify(&got[1], &secret, clock.now_for_test()).unwrap();
    let attempts = attempts_when(&p, &key, &hook, 2).await;
    assert_eq!(attempts[1]["status_code"], 200);
    p.stop().await;
}
