//! The issue "services that publish", end to end: one journey through the HTTP API of every
//! service (register Ada and Bo; Ada posts; Bo comments and reacts; Ada places an order of two
//! items, pays it, it ships; Bo sends Ada a message), then the bus is read back and every
//! event checked:
//!
//! - each expected event is there **exactly once** (a retried request, same
//!   `Idempotency-Key`, publishes nothing: its answer is replayed and no event carries its
//!   correlation id), and no other event of this run is;
//! - an aggregate's events are in request order by their offset on the topic (the order:
//!   placed < completed < shipped; the content: posted < commented < reacted), with the
//!   aggregate as `subject` and partition key;
//! - each names its schema in `dataschema` and validates against it;
//! - each event a request published carries the request's `X-Correlation-Id` as
//!   `correlationid` and continues the request's trace (`traceparent`, same trace id); each
//!   `coin.mined` (signup bonuses, the order reward) has `causationid` = the event that
//!   caused it, that event's `correlationid` and its trace id;
//! - the wallets hold what was minted.
//!
//! The same [`journey`] runs in two tests: `embedded` (the embedded bus and SQLite, as
//! `ovasabi up`) and `nats_and_postgres` (NATS JetStream and PostgreSQL; skipped with the
//! reason when either is missing, a failure instead under `OVASABI_REQUIRE_SERVICES=1`).
//!
//! # Sharing the NATS server
//!
//! The services publish to fixed domain topics (`user.events`, `commerce.events`…) and
//! consume them in fixed durable groups (`wallet`, `messaging`, `audit`), and the NATS bus has
//! no stream-name namespace to give a test topics of its own: the test runs on the server's
//! real domain streams, which other runs (and other tests) share. So it never deletes them,
//! reads each topic from the beginning, and keeps only the events of this run: those whose
//! subject is an id this run created or whose `correlationid` starts with this run's prefix
//! (`journey-<uuid>-`). PostgreSQL is a schema of the test's own, dropped at the end. Two
//! runs of this test at the same moment on one server would share the `wallet` group, so one
//! run's payment could reach the other's wallet, which never saw the order: run it once at
//! a time per server.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Platform;
use ovasabi_core::{Event, Ordering, StartFrom, SubscribeOptions};
use ovasabi_events::commerce::{OrderPlaced, OrderShipped, PaymentCompleted};
use ovasabi_events::content::{CommentAdded, ContentPosted, ReactionAdded};
use ovasabi_events::messaging::MessageSent;
use ovasabi_events::users::UserRegistered;
use ovasabi_events::wallet::CoinMined;
use ovasabi_events::DomainEvent;
use ovasabi_middleware::TraceParent;
use ovasabi_services::wallet::{MINOR_UNITS_PER_COIN, SIGNUP_BONUS};
use ovasabi_services::{commerce, content, messaging, users, wallet};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The topics the journey publishes to.
const TOPICS: [&str; 5] = [
    UserRegistered::TOPIC,
    ContentPosted::TOPIC,
    OrderPlaced::TOPIC,
    MessageSent::TOPIC,
    CoinMined::TOPIC,
];
/// How long the events of the journey may take to reach the bus (the wallet's follow
/// asynchronously).
const DEADLINE: Duration = Duration::from_secs(60);
/// How long the bus must stay quiet, once every expected event arrived, before the reading
/// stops: a duplicate would arrive meanwhile.
const QUIET: Duration = Duration::from_secs(1);

/// A request the journey sent: its step, correlation id and trace id.
#[derive(Clone, Debug)]
struct Sent {
    step: &'static str,
    correlation: String,
    trace_id: String,
}

/// The journey's requests so far, each with its own correlation id, trace and
/// `Idempotency-Key`.
struct Journey<'p> {
    platform: &'p Platform,
    /// `journey-<uuid>`: the prefix of every correlation id and idempotency key of the run.
    run: String,
    sent: Vec<Sent>,
    /// The correlation ids of the retries, which must publish nothing.
    retries: Vec<String>,
}

impl<'p> Journey<'p> {
    fn new(platform: &'p Platform) -> Self {
        Journey {
            platform,
            run: format!("journey-{}", uuid::Uuid::new_v4().simple()),
            sent: Vec::new(),
            retries: Vec::new(),
        }
    }

    fn key(&self, step: &str) -> String {
        format!("{}-{step}", self.run)
    }

    /// POSTs `body` as step `step` (correlation id `<run>-<step>`, a new trace, idempotency
    /// key `<run>-<step>`); checks the status and that the correlation id came back.
    async fn post(
        &mut self,
        step: &'static str,
        path: &str,
        body: &Value,
        expected: StatusCode,
    ) -> Value {
        let correlation = format!("{}-{step}", self.run);
        let trace = TraceParent::new_root();
        let (status, answer, headers) = self
            .platform
            .post_with(
                path,
                body,
                &[
                    ("X-Correlation-Id", &correlation),
                    ("Idempotency-Key", &self.key(step)),
                    ("traceparent", &trace.to_string()),
                ],
            )
            .await;
        assert_eq!(status, expected, "{step}: POST {path}: {answer}");
        assert_eq!(
            headers["x-correlation-id"], correlation,
            "{step}: the response names the request's correlation id"
        );
        assert!(
            headers.get("idempotent-replayed").is_none(),
            "{step}: a first request is not a replay"
        );
        self.sent.push(Sent {
            step,
            correlation,
            trace_id: trace.trace_id().to_owned(),
        });
        answer
    }

    /// Sends step `step`'s request again (same key and body; a correlation id and trace of its
    /// own): the first answer comes back, replayed.
    async fn retry(
        &mut self,
        step: &'static str,
        path: &str,
        body: &Value,
        expected: StatusCode,
        first: &Value,
    ) {
        let correlation = format!("{}-{step}-retry", self.run);
        let (status, answer, headers) = self
            .platform
            .post_with(
                path,
                body,
                &[
                    ("X-Correlation-Id", &correlation),
                    ("Idempotency-Key", &self.key(step)),
                    ("traceparent", &TraceParent::new_root().to_string()),
                ],
            )
            .await;
        assert_eq!(status, expected, "{step} retried: {answer}");
        assert_eq!(&answer, first, "{step} retried: the first answer");
        assert_eq!(
            headers["idempotent-replayed"], "true",
            "{step} retried: a replay"
        );
        self.retries.push(correlation);
    }

    fn sent(&self, step: &str) -> &Sent {
        self.sent
            .iter()
            .find(|s| s.step == step)
            .unwrap_or_else(|| panic!("no request {step}"))
    }
}

// Indices in the journey's list of expected events.
const REGISTERED_ADA: usize = 0;
const REGISTERED_BO: usize = 1;
const ORDER_PLACED: usize = 5;
const PAYMENT_COMPLETED: usize = 6;
const ORDER_SHIPPED: usize = 7;
const MINED_SIGNUP_ADA: usize = 9;
const MINED_SIGNUP_BO: usize = 10;
const MINED_ORDER_REWARD: usize = 11;

/// Where an expected event comes from.
#[derive(Clone, Copy, Debug)]
enum Origin {
    /// The request of this step published it.
    Request(&'static str),
    /// The consumer of the expected event at this index reacted to it.
    Cause(usize),
}

/// An event the journey must publish exactly once.
#[derive(Clone, Debug)]
struct Expected {
    topic: &'static str,
    ty: &'static str,
    version: u32,
    source: &'static str,
    /// The aggregate: the event's subject and partition key.
    subject: String,
    origin: Origin,
    /// What tells it from another of the same type and subject: a member of its data and
    /// its value.
    data: Option<(&'static str, Value)>,
}

impl Expected {
    /// An event of type `E` from `source` about `subject`.
    fn of<E: DomainEvent>(source: &'static str, subject: &str, origin: Origin) -> Expected {
        Expected {
            topic: E::TOPIC,
            ty: E::TYPE,
            version: E::VERSION,
            source,
            subject: subject.to_owned(),
            origin,
            data: None,
        }
    }

    /// Only the one whose data has `member` = `value`.
    fn with(mut self, member: &'static str, value: Value) -> Expected {
        self.data = Some((member, value));
        self
    }

    fn matches(&self, seen: &Seen) -> bool {
        let event = &seen.event;
        seen.topic == self.topic
            && event.ty == self.ty
            && event.subject.as_deref() == Some(self.subject.as_str())
            && self.data.as_ref().is_none_or(|(member, value)| {
                event
                    .data_json()
                    .is_some_and(|data| &data[*member] == value)
            })
    }

    fn describe(&self) -> String {
        match &self.data {
            Some((member, value)) => format!(
                "{} on {} about {} with {member} = {value}",
                self.ty, self.topic, self.subject
            ),
            None => format!("{} on {} about {}", self.ty, self.topic, self.subject),
        }
    }
}

/// An event read from the bus, with where it is.
#[derive(Clone, Debug)]
struct Seen {
    topic: String,
    offset: u64,
    event: Event,
}

fn describe(seen: &Seen) -> String {
    format!(
        "{}@{} {} {} subject={:?} correlationid={:?} causationid={:?}",
        seen.topic,
        seen.offset,
        seen.event.ty,
        seen.event.id,
        seen.event.subject,
        seen.event.correlation_id(),
        seen.event.causation_id()
    )
}

/// The W3C trace id: the second dash-separated field of a `traceparent`.
fn trace_id(traceparent: &str) -> &str {
    traceparent.split('-').nth(1).unwrap_or_default()
}

fn string(value: &Value, field: &str) -> String {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("`{field}` in {value}"))
        .to_owned()
}

/// Reads [`TOPICS`] from the beginning (one ephemeral group) until `complete` holds for what
/// was read, or [`DEADLINE`] passes, and then until the bus is [`QUIET`]. Events are keyed by
/// topic and offset, so a redelivery to the reader is not counted twice.
async fn read_bus(
    platform: &Platform,
    complete: impl Fn(&BTreeMap<(String, u64), Seen>) -> bool,
) -> Vec<Seen> {
    let options = SubscribeOptions::new(
        format!("journey-reader-{}", uuid::Uuid::new_v4().simple()),
        TOPICS,
    )
    .unwrap()
    .start(StartFrom::Beginning)
    .ordering(Ordering::None)
    .ephemeral(true);
    let mut subscription = platform.bus.subscribe(options).await.unwrap();
    let mut seen = BTreeMap::new();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let wait = if complete(&seen) {
            QUIET
        } else {
            deadline.saturating_duration_since(Instant::now())
        };
        match tokio::time::timeout(wait, subscription.next()).await {
            Ok(Some(Ok(delivery))) => {
                let info = delivery.info().clone();
                seen.insert(
                    (info.topic.clone(), info.offset),
                    Seen {
                        topic: info.topic,
                        offset: info.offset,
                        event: delivery.event().clone(),
                    },
                );
                delivery.ack().await.unwrap();
            }
            Ok(Some(Err(e))) => panic!("reading the bus: {e}"),
            Ok(None) => panic!("the reader's subscription ended"),
            Err(_) => break,
        }
    }
    subscription.close().await;
    seen.into_values().collect()
}

/// The journey and every check on what it published; see the module documentation.
async fn journey(platform: &Platform) {
    let started = Instant::now();
    let mut j = Journey::new(platform);
    let run = j.run.clone();

    // Users.
    let ada_body =
        json!({"email": format!("ada-{run}@example.com"), "display_name": "Ada", "locale": "en"});
    let ada = j
        .post("register-ada", "/v1/users", &ada_body, StatusCode::CREATED)
        .await;
    let bo_body = json!({"email": format!("bo-{run}@example.com"), "display_name": "Bo"});
    let bo = j
        .post("register-bo", "/v1/users", &bo_body, StatusCode::CREATED)
        .await;
    j.retry(
        "register-ada",
        "/v1/users",
        &ada_body,
        StatusCode::CREATED,
        &ada,
    )
    .await;
    let ada = string(&ada, "id");
    let bo = string(&bo, "id");

    // Content.
    let posted = j
        .post(
            "post",
            "/v1/content",
            &json!({"author_id": ada, "kind": "post", "body": "Notes on the Analytical Engine", "tags": ["engines"]}),
            StatusCode::CREATED,
        )
        .await;
    let post = string(&posted, "id");
    j.post(
        "comment",
        &format!("/v1/content/{post}/comments"),
        &json!({"author_id": bo, "body": "It weaves algebraic patterns!"}),
        StatusCode::CREATED,
    )
    .await;
    j.post(
        "react",
        &format!("/v1/content/{post}/reactions"),
        &json!({"user_id": bo, "kind": "love"}),
        StatusCode::CREATED,
    )
    .await;

    // Commerce: 2 × 12.50 + 1 × 9.99 = 34.99 USD.
    let order_body = json!({
        "customer_id": ada,
        "items": [
            {"sku": "BOOK-ENGINE", "name": "The Engine", "quantity": 2, "unit_price": {"amount_minor": 1250, "currency": "USD"}},
            {"sku": "MUG-OVA", "quantity": 1, "unit_price": {"amount_minor": 999, "currency": "USD"}}
        ],
        "shipping_address": {"recipient": "Ada Lovelace", "line1": "12 St James's Square",
                             "city": "London", "postal_code": "SW1Y 4JH", "country": "GB"}
    });
    let order = j
        .post("order", "/v1/orders", &order_body, StatusCode::CREATED)
        .await;
    let order = string(&order, "id");
    let total = 3499;
    let pay_path = format!("/v1/orders/{order}/pay");
    let pay_body = json!({"method": "card"});
    let paid = j.post("pay", &pay_path, &pay_body, StatusCode::OK).await;
    assert_eq!(paid["order"]["status"], "paid", "{paid}");
    assert_eq!(paid["payment"]["amount"]["amount_minor"], total, "{paid}");
    j.retry("pay", &pay_path, &pay_body, StatusCode::OK, &paid)
        .await;
    let shipped = j
        .post(
            "ship",
            &format!("/v1/orders/{order}/ship"),
            &json!({"carrier": "royal-mail"}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(shipped["status"], "shipped", "{shipped}");

    // Messaging.
    let message_body = json!({"from_user_id": bo, "to_user_id": ada, "body": "Lovely notes, Ada."});
    let message = j
        .post(
            "message",
            "/v1/messages",
            &message_body,
            StatusCode::CREATED,
        )
        .await;
    j.retry(
        "message",
        "/v1/messages",
        &message_body,
        StatusCode::CREATED,
        &message,
    )
    .await;
    let conversation = string(&message, "conversation_id");
    let requests_took = started.elapsed();

    // What must be on the bus, once each.
    let expected = vec![
        Expected::of::<UserRegistered>(users::SOURCE, &ada, Origin::Request("register-ada")),
        Expected::of::<UserRegistered>(users::SOURCE, &bo, Origin::Request("register-bo")),
        Expected::of::<ContentPosted>(content::SOURCE, &post, Origin::Request("post")),
        Expected::of::<CommentAdded>(content::SOURCE, &post, Origin::Request("comment")),
        Expected::of::<ReactionAdded>(content::SOURCE, &post, Origin::Request("react")),
        Expected::of::<OrderPlaced>(commerce::SOURCE, &order, Origin::Request("order")),
        Expected::of::<PaymentCompleted>(commerce::SOURCE, &order, Origin::Request("pay")),
        Expected::of::<OrderShipped>(commerce::SOURCE, &order, Origin::Request("ship")),
        Expected::of::<MessageSent>(messaging::SOURCE, &conversation, Origin::Request("message")),
        Expected::of::<CoinMined>(wallet::SOURCE, &ada, Origin::Cause(REGISTERED_ADA))
            .with("reason", json!("signup_bonus")),
        Expected::of::<CoinMined>(wallet::SOURCE, &bo, Origin::Cause(REGISTERED_BO))
            .with("reason", json!("signup_bonus")),
        Expected::of::<CoinMined>(wallet::SOURCE, &ada, Origin::Cause(ORDER_SHIPPED))
            .with("reason", json!("order_reward")),
    ];

    // This run's events: about an aggregate it created, or in one of its correlations.
    let aggregates: HashSet<String> = [&ada, &bo, &post, &order, &conversation]
        .into_iter()
        .cloned()
        .collect();
    let prefix = format!("{run}-");
    let ours = |seen: &Seen| {
        seen.event
            .subject
            .as_deref()
            .is_some_and(|s| aggregates.contains(s))
            || seen
                .event
                .correlation_id()
                .is_some_and(|c| c.starts_with(&prefix))
    };
    let read_started = Instant::now();
    let all = read_bus(platform, |seen| {
        expected
            .iter()
            .all(|ex| seen.values().any(|s| ex.matches(s)))
    })
    .await;
    let reading_took = read_started.elapsed();
    let mine: Vec<Seen> = all.iter().filter(|s| ours(s)).cloned().collect();
    let listing = mine.iter().map(describe).collect::<Vec<_>>().join("\n  ");

    // Exactly once each, and nothing else.
    let mut found: Vec<&Seen> = Vec::with_capacity(expected.len());
    for ex in &expected {
        let matching: Vec<&Seen> = mine.iter().filter(|s| ex.matches(s)).collect();
        assert_eq!(
            matching.len(),
            1,
            "expected {} exactly once; this run's events:\n  {listing}",
            ex.describe()
        );
        found.push(matching[0]);
    }
    for seen in &mine {
        assert!(
            expected.iter().any(|ex| ex.matches(seen)),
            "an event this run should not have published: {}\nthis run's events:\n  {listing}",
            describe(seen)
        );
    }
    for retry in &j.retries {
        assert!(
            !mine
                .iter()
                .any(|s| s.event.correlation_id() == Some(retry.as_str())),
            "the retry {retry} published:\n  {listing}"
        );
    }
    let ids: HashSet<&str> = found.iter().map(|s| s.event.id.as_str()).collect();
    assert_eq!(ids.len(), found.len(), "event ids are unique:\n  {listing}");

    // Schema, source, subject and partition key, trace context.
    let contracts = common::contracts();
    for (ex, seen) in expected.iter().zip(&found) {
        let event = &seen.event;
        let what = describe(seen);
        assert_eq!(event.source, ex.source, "{what}");
        assert_eq!(
            event.dataschema.as_deref(),
            Some(format!("urn:ovasabi:schema:{}:{}", ex.ty, ex.version).as_str()),
            "{what}: dataschema"
        );
        match contracts.check(event) {
            Ok(Some(version)) => assert_eq!(version, ex.version, "{what}: checked version"),
            Ok(None) => panic!("{what}: no registered schema checked it"),
            Err(e) => panic!("{what} breaks its schema: {e}"),
        }
        assert_eq!(
            event.partition_key(),
            Some(ex.subject.as_str()),
            "{what}: partition key"
        );
        let traceparent = event
            .traceparent()
            .unwrap_or_else(|| panic!("{what}: no traceparent"));
        assert!(
            TraceParent::parse(traceparent).is_some(),
            "{what}: traceparent {traceparent:?} is not W3C"
        );
    }

    // Correlation, causation, trace.
    for (ex, seen) in expected.iter().zip(&found) {
        let event = &seen.event;
        let what = describe(seen);
        let trace = trace_id(event.traceparent().unwrap_or_default());
        match ex.origin {
            Origin::Request(step) => {
                let sent = j.sent(step);
                assert_eq!(
                    event.correlation_id(),
                    Some(sent.correlation.as_str()),
                    "{what}: the request's correlation id"
                );
                assert_eq!(trace, sent.trace_id, "{what}: the request's trace");
                assert_eq!(
                    event.causation_id(),
                    None,
                    "{what}: a request's event has no cause"
                );
            }
            Origin::Cause(index) => {
                let cause = &found[index].event;
                assert_eq!(
                    event.causation_id(),
                    Some(cause.id.as_str()),
                    "{what}: caused by {}",
                    describe(found[index])
                );
                assert!(cause.correlation_id().is_some(), "{what}: cause correlated");
                assert_eq!(
                    event.correlation_id(),
                    cause.correlation_id(),
                    "{what}: the cause's correlation id"
                );
                assert_eq!(
                    trace,
                    trace_id(cause.traceparent().unwrap_or_default()),
                    "{what}: the cause's trace"
                );
                assert_ne!(
                    event.traceparent(),
                    cause.traceparent(),
                    "{what}: a span of its own"
                );
                let data = event.data_json().unwrap();
                assert_eq!(data["cause_event_id"], cause.id.as_str(), "{what}");
                assert_eq!(data["user_id"], ex.subject.as_str(), "{what}");
            }
        }
    }

    // An aggregate's events are in request order on its topic.
    let mut by_aggregate: BTreeMap<(&str, &str), Vec<(&'static str, u64)>> = BTreeMap::new();
    for (ex, seen) in expected.iter().zip(&found) {
        if let Origin::Request(_) = ex.origin {
            by_aggregate
                .entry((ex.topic, ex.subject.as_str()))
                .or_default()
                .push((ex.ty, seen.offset));
        }
    }
    for ((topic, subject), events) in &by_aggregate {
        assert!(
            events.windows(2).all(|w| w[0].1 < w[1].1),
            "{topic}, {subject}: out of request order: {events:?}"
        );
    }
    assert_eq!(
        by_aggregate[&(OrderPlaced::TOPIC, order.as_str())]
            .iter()
            .map(|(ty, _)| *ty)
            .collect::<Vec<_>>(),
        [
            OrderPlaced::TYPE,
            PaymentCompleted::TYPE,
            OrderShipped::TYPE
        ]
    );

    // What the events say, and what the wallets hold.
    let reward = total / MINOR_UNITS_PER_COIN;
    let amount = |i: usize| found[i].event.data_json().unwrap()["amount"].clone();
    assert_eq!(amount(MINED_SIGNUP_ADA), json!(SIGNUP_BONUS));
    assert_eq!(amount(MINED_SIGNUP_BO), json!(SIGNUP_BONUS));
    assert_eq!(amount(MINED_ORDER_REWARD), json!(reward));
    let completed = found[PAYMENT_COMPLETED].event.data_json().unwrap();
    assert_eq!(completed["amount"]["amount_minor"], total);
    assert_eq!(
        completed["payment_id"], paid["payment"]["id"],
        "the payment answered is the one published"
    );
    let placed = found[ORDER_PLACED].event.data_json().unwrap();
    assert_eq!(
        placed["items"].as_array().map(Vec::len),
        Some(2),
        "{placed}"
    );
    for (user, balance) in [
        (&ada, SIGNUP_BONUS as i64 + reward),
        (&bo, SIGNUP_BONUS as i64),
    ] {
        let (status, wallet) = platform.get(&format!("/v1/wallets/{user}")).await;
        assert_eq!(status, StatusCode::OK, "{wallet}");
        assert_eq!(wallet["balance"], balance, "{wallet}");
    }

    println!(
        "journey {run}: {} requests in {requests_took:?}; {} events of this run among {} read in {reading_took:?}",
        j.sent.len() + j.retries.len(),
        mine.len(),
        all.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded() {
    let platform = Platform::embedded(ovasabi_services::catalog(&Default::default())).await;
    journey(&platform).await;
    platform.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_and_postgres() {
    let Some(nats) = ovasabi_nats::testing::server_or_skip("platform::nats_and_postgres") else {
        return;
    };
    let Some(db) = ovasabi_store::testing::postgres_or_skip("platform::nats_and_postgres").await
    else {
        return;
    };
    let bus = ovasabi_nats::NatsBus::connect(
        ovasabi_nats::NatsConfig::new(&nats.url).connection_name("ovasabi-services-platform-test"),
    )
    .await
    .unwrap_or_else(|e| panic!("connecting to NATS at {}: {e}", nats.url));
    let platform = Platform::start(
        ovasabi_services::catalog(&Default::default()),
        Arc::new(bus),
        db.config(),
    )
    .await;
    journey(&platform).await;
    platform.stop().await;
}
