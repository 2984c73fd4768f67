//! Every reactor reaches the same state from a shuffled stream with duplicates as from the
//! same events delivered once, in order — on SQLite and on PostgreSQL.
//!
//! The reactors are fed directly (no bus), the way a bus that redelivers and reorders
//! would: an event answered with a transient error (held back by a gap, or waiting for a
//! cause from another topic) goes back into the stream at a random later place, as a
//! redelivery with the next attempt number.

#[macro_use]
mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use ovasabi_core::{DeliveryInfo, Event, TopicPattern};
use ovasabi_events::commerce::{
    OrderCancelled, OrderPlaced, OrderShipped, PaymentCompleted, PaymentFailed,
};
use ovasabi_events::content::{ContentPosted, ReactionAdded};
use ovasabi_events::messaging::MessageSent;
use ovasabi_events::moderation::{
    ContentFlagged, Decision, FraudHoldPlaced, FraudHoldReleased, ModerationDecided,
    ModerationTarget,
};
use ovasabi_events::users::{UserDeleted, UserRegistered};
use ovasabi_events::{DomainEvent, Money};
use ovasabi_middleware::{Handler, HandlerError, Message};
use ovasabi_services::http::Api;
use ovasabi_services::reactor::{Reaction, Reactor, REASON_SEQUENCE_GAP};
use ovasabi_services::relay::RelayHandle;
use ovasabi_services::{Context, Service, Settings};
use ovasabi_store::inbox::Order;
use ovasabi_store::{
    params, Migration, MigrationSet, Store, StoreConfig, Transaction, Value as StoreValue,
};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{json, Value};

use common::Db;

on_both!(
    every_reactor_reaches_the_same_state_from_any_order,
    hold_back_and_last_write_wins_reach_the_in_order_state,
    an_event_held_back_too_long_is_dead_lettered_naming_the_gap,
);

/// A fresh database with `sets` applied; the guard keeps it alive.
async fn fresh_store(db: Db, sets: &[MigrationSet], test: &str) -> Option<(Store, Guard)> {
    match db {
        Db::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(&StoreConfig::sqlite(dir.path().join("db.sqlite")), sets)
                .await
                .unwrap();
            Some((store, Guard::Dir(dir)))
        }
        Db::Postgres | Db::NatsPostgres => {
            let schema = ovasabi_store::testing::postgres_or_skip(test).await?;
            let store = Store::open(&schema.config(), sets).await.unwrap();
            Some((store, Guard::Schema(schema)))
        }
    }
}

#[allow(dead_code)]
enum Guard {
    Dir(tempfile::TempDir),
    Schema(ovasabi_store::testing::TestSchema),
}

/// Numbers events per (topic, subject) as the outbox does.
#[derive(Default)]
struct Numbering(HashMap<(String, String), u64>);

impl Numbering {
    fn event<E: DomainEvent>(&mut self, payload: &E, source: &str, id: String) -> (String, Event) {
        // A fixed time: the analytics count each event in the minute of its time (or, without
        // one, of its delivery), which must not depend on when the test runs.
        let mut event = payload.to_event(source).with_id(id).with_time(at(30));
        let subject = event
            .subject
            .clone()
            .expect("services' events have a subject");
        let n = self.0.entry((E::TOPIC.to_owned(), subject)).or_default();
        *n += 1;
        event.set_sequence(*n);
        (E::TOPIC.to_owned(), event)
    }
}

fn at(minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 10, minute, 0).unwrap()
}

/// What the producers would publish: registrations, posts and reactions, orders and their
/// payments, shipments and cancellations, messages, moderation decisions and fraud holds,
/// deletions.
fn producers_stream() -> Vec<(String, Event)> {
    let mut numbering = Numbering::default();
    let mut stream = Vec::new();
    for u in 0..8 {
        let mut registered = UserRegistered::examples().remove(0);
        registered.user_id = format!("u{u}");
        registered.email = format!("user{u}@example.com");
        registered.registered_at = at(u);
        stream.push(numbering.event(&registered, "/ovasabi/users", format!("reg-{u}")));
    }
    for o in 0..10u32 {
        let customer = format!("u{}", o % 6);
        let mut placed = OrderPlaced::examples().remove(0);
        placed.order_id = format!("o{o}");
        placed.customer_id = customer;
        placed.placed_at = at(10 + o);
        stream.push(numbering.event(&placed, "/ovasabi/commerce", format!("placed-{o}")));
        if o % 3 != 2 {
            let mut paid = PaymentCompleted::examples().remove(0);
            paid.order_id = format!("o{o}");
            paid.payment_id = format!("p{o}");
            paid.amount = Money::new(1_000 * i64::from(o + 1), "USD");
            paid.completed_at = at(30 + o);
            stream.push(numbering.event(&paid, "/ovasabi/commerce", format!("paid-{o}")));
        }
    }
    for c in 0..4u32 {
        let mut posted = ContentPosted::examples().remove(0);
        posted.content_id = format!("post{c}");
        posted.author_id = format!("u{c}");
        posted.posted_at = at(20 + c);
        stream.push(numbering.event(&posted, "/ovasabi/content", format!("posted-{c}")));
        for r in 0..c {
            let mut reacted = ReactionAdded::examples().remove(0);
            reacted.reaction_id = format!("r{c}-{r}");
            reacted.content_id = format!("post{c}");
            reacted.comment_id = None;
            reacted.user_id = format!("u{r}");
            stream.push(numbering.event(&reacted, "/ovasabi/content", format!("reacted-{c}-{r}")));
        }
    }
    for (m, (from, to)) in [(0, 1), (1, 0), (2, 3), (7, 6)].into_iter().enumerate() {
        let mut sent = MessageSent::examples().remove(0);
        sent.message_id = format!("m{m}");
        sent.conversation_id = format!("c{from}-{to}");
        sent.sender_id = format!("u{from}");
        sent.recipient_ids = vec![format!("u{to}")];
        sent.body = format!("message {m}");
        sent.attachment_urls = None;
        stream.push(numbering.event(&sent, "/ovasabi/messaging", format!("sent-{m}")));
    }
    for o in 0..10u32 {
        if o % 3 == 2 {
            let mut failed = PaymentFailed::examples().remove(0);
            failed.order_id = format!("o{o}");
            failed.payment_id = format!("pf{o}");
            stream.push(numbering.event(&failed, "/ovasabi/commerce", format!("failed-{o}")));
            let mut cancelled = OrderCancelled::examples().remove(0);
            cancelled.order_id = format!("o{o}");
            stream.push(numbering.event(&cancelled, "/ovasabi/commerce", format!("cancelled-{o}")));
        } else if o % 2 == 0 {
            let mut shipped = OrderShipped::examples().remove(0);
            shipped.order_id = format!("o{o}");
            shipped.shipment_id = format!("s{o}");
            stream.push(numbering.event(&shipped, "/ovasabi/commerce", format!("shipped-{o}")));
        }
    }
    // Moderation: post0 flagged then approved, post1 flagged; order o0 held then released,
    // o3 held (neither is cancelled: a second closure of an order's coins would be judged in
    // arrival order).
    for (c, approved) in [(0, true), (1, false)] {
        let mut flagged = ContentFlagged::examples().remove(0);
        flagged.flag_id = format!("flag{c}");
        flagged.target_kind = ModerationTarget::Content;
        flagged.target_id = format!("post{c}");
        stream.push(numbering.event(&flagged, "/ovasabi/moderation", format!("flagged-{c}")));
        if approved {
            let mut decided = ModerationDecided::examples().remove(0);
            decided.decision_id = format!("decision{c}");
            decided.flag_id = Some(format!("flag{c}"));
            decided.target_kind = ModerationTarget::Content;
            decided.target_id = format!("post{c}");
            decided.decision = Decision::Approve;
            stream.push(numbering.event(&decided, "/ovasabi/moderation", format!("decided-{c}")));
        }
    }
    for (o, released) in [(0, true), (3, false)] {
        let mut hold = FraudHoldPlaced::examples().remove(0);
        hold.hold_id = format!("hold{o}");
        hold.target_id = format!("o{o}");
        stream.push(numbering.event(&hold, "/ovasabi/moderation", format!("held-{o}")));
        if released {
            let mut release = FraudHoldReleased::examples().remove(0);
            release.hold_id = format!("hold{o}");
            release.target_id = format!("o{o}");
            stream.push(numbering.event(&release, "/ovasabi/moderation", format!("released-{o}")));
        }
    }
    for u in [1, 6] {
        let mut deleted = UserDeleted::examples().remove(0);
        deleted.user_id = format!("u{u}");
        deleted.deleted_at = at(50 + u);
        deleted.purge_after = None;
        stream.push(numbering.event(&deleted, "/ovasabi/users", format!("del-{u}")));
    }
    stream
}

/// `stream` delivered once each, in order.
fn in_order(stream: &[(String, Event)]) -> Vec<(String, Event)> {
    stream.to_vec()
}

/// `stream` shuffled, with 30% of its events delivered twice more or less at once.
fn shuffled_with_duplicates(stream: &[(String, Event)], rng: &mut StdRng) -> Vec<(String, Event)> {
    let mut out = stream.to_vec();
    for item in stream {
        if rng.gen_bool(0.3) {
            out.push(item.clone());
        }
    }
    for i in (1..out.len()).rev() {
        out.swap(i, rng.gen_range(0..=i));
    }
    out
}

/// Feeds `deliveries` to `handlers` (each handler sees the events of its topics); an event
/// answered with a transient error comes back later. Fails on a permanent error.
async fn feed(
    handlers: &[(Vec<TopicPattern>, Arc<dyn Handler>)],
    deliveries: Vec<(String, Event)>,
    rng: &mut StdRng,
) {
    let mut queue: Vec<(String, Event, u32)> = deliveries
        .into_iter()
        .map(|(topic, event)| (topic, event, 1))
        .collect();
    let mut offset = 0u64;
    let mut handled = 0usize;
    while !queue.is_empty() {
        let (topic, event, attempt) = queue.remove(0);
        handled += 1;
        assert!(handled < 100_000, "the stream never drains: {queue:?}");
        offset += 1;
        let msg = Message::new(
            Arc::new(event.clone()),
            DeliveryInfo {
                topic: topic.clone(),
                offset,
                group: "test".to_owned(),
                attempt,
                published_at: at(31),
            },
        );
        let mut again = false;
        for (topics, handler) in handlers {
            if !topics.iter().any(|p| p.matches(&topic)) {
                continue;
            }
            match handler.handle(&msg).await {
                Ok(out) => assert!(out.is_empty(), "reactors publish through the outbox"),
                Err(e) if e.is_transient() => again = true,
                Err(e) => panic!("event {} ({}) was refused: {e}", event.id, event.ty),
            }
        }
        if again {
            let at = rng.gen_range(0..=queue.len());
            queue.insert(at, (topic, event, attempt + 1));
        }
    }
}

/// A table's rows as JSON, in a stable order, leaving out the named columns (times, running
/// balances: what depends on when or in which order the effect ran).
async fn rows(store: &Store, sql: &str, skip: &[&str]) -> Vec<Value> {
    let mut out: Vec<Value> = store
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|row| {
            let mut o = serde_json::Map::new();
            for (i, name) in row.columns().iter().enumerate() {
                if skip.contains(&name.as_str()) {
                    continue;
                }
                let v = match row.value(i).expect("a column") {
                    StoreValue::Text(text) => json!(text),
                    other => json!(format!("{other:?}")),
                };
                o.insert(name.clone(), v);
            }
            Value::Object(o)
        })
        .collect();
    out.sort_by_key(|v| v.to_string());
    out
}

/// Every reactor's state (wallet, messaging, notifications, analytics, content's and
/// commerce's moderation projections), without times, running balances and per-user
/// numbers (all set by the order effects ran in). Left out: an order's history in commerce
/// (it lists the events as they were applied: a stale hold event is skipped, by design of
/// last-write-wins), and moderation and the audit trail, which judge and record events in
/// arrival order by design (rates and histories; an append-only log).
async fn reactor_state(store: &Store) -> Value {
    json!({
        "balances": rows(store, "SELECT user_id, balance, closed_at IS NOT NULL AS closed FROM wallet_balances", &[]).await,
        "ledger": rows(store, "SELECT user_id, delta, kind, reason, reference_id FROM wallet_ledger", &[]).await,
        "orders": rows(store, "SELECT order_id, customer_id FROM wallet_orders", &[]).await,
        "order_coins": rows(store, "SELECT order_id, closed_reason, cause_event_id FROM wallet_order_coins", &[]).await,
        "outbox": rows(store, "SELECT event_id, topic, aggregate FROM outbox", &[]).await,
        "messaging_users": rows(store, "SELECT user_id, registered_at, deleted_at FROM messaging_users", &[]).await,
        "notifications": rows(store, "SELECT id, user_id, category, title, body, cause_event_id FROM notifications", &[]).await,
        "dispatch": rows(store, "SELECT notification_id, channel, status FROM notification_dispatch", &[]).await,
        "notification_orders": rows(store, "SELECT order_id, customer_id FROM notification_orders", &[]).await,
        "analytics_minutes": rows(store, "SELECT metric, minute, value FROM analytics_minutes", &[]).await,
        "analytics_active": rows(store, "SELECT user_id, minute FROM analytics_active", &[]).await,
        "analytics_engagement": rows(store, "SELECT content_id, minute, score FROM analytics_engagement", &[]).await,
        "content_moderation": rows(store, "SELECT content_id, state, reason FROM content_moderation", &[]).await,
        "commerce_holds": rows(store, "SELECT order_id, hold_id, reason, state FROM commerce_holds", &[]).await,
    })
}

/// Every reactor's consumer on a fresh database, fed `deliveries`; their final state.
async fn run_services(db: Db, deliveries: Vec<(String, Event)>, rng: &mut StdRng) -> Option<Value> {
    let services: Vec<Arc<dyn Service>> = vec![
        Arc::new(ovasabi_services::wallet::WalletService),
        Arc::new(ovasabi_services::messaging::MessagingService),
        Arc::new(ovasabi_services::notifications::NotificationsService::default()),
        Arc::new(ovasabi_services::analytics::AnalyticsService::default()),
        Arc::new(ovasabi_services::content::ContentService),
        Arc::new(ovasabi_services::commerce::CommerceService::default_provider()),
    ];
    let sets: Vec<MigrationSet> = services.iter().map(|s| s.migrations()).collect();
    let (store, _guard) = fresh_store(db, &sets, "reactors_services").await?;
    let bus_dir = tempfile::tempdir().unwrap();
    let bus: Arc<dyn ovasabi_core::Bus> = Arc::new(
        ovasabi_embedded::EmbeddedBus::open(ovasabi_embedded::EmbeddedConfig::new(bus_dir.path()))
            .await
            .unwrap(),
    );
    let ctx = Context {
        bus,
        store: store.clone(),
        settings: Settings::default(),
        api: Api {
            store: store.clone(),
            relay: RelayHandle::default(),
            publish: true,
        },
    };
    let mut handlers = Vec::new();
    for service in &services {
        for spec in service.consumers(&ctx).unwrap() {
            handlers.push((spec.options.topics.clone(), spec.handler));
        }
    }
    assert_eq!(
        handlers.len(),
        6,
        "the wallet's, messaging's, notifications', analytics', content's and commerce's consumers"
    );
    feed(&handlers, deliveries, rng).await;
    Some(reactor_state(&store).await)
}

async fn every_reactor_reaches_the_same_state_from_any_order(db: Db) {
    let stream = producers_stream();
    let mut rng = StdRng::seed_from_u64(0x0A5AB1);
    let Some(expected) = run_services(db, in_order(&stream), &mut rng).await else {
        return;
    };
    // Sanity: the in-order run did what the wallet promises.
    let balances = &expected["balances"];
    assert_eq!(balances.as_array().unwrap().len(), 8, "{balances}");
    assert!(!expected["ledger"].as_array().unwrap().is_empty());
    // 8 welcomes, 4 messages, 3 failed payments, 3 shipments.
    let notifications = expected["notifications"].as_array().unwrap().len();
    assert!(notifications >= 18, "{notifications}");
    let holds = expected["commerce_holds"].to_string();
    assert!(
        holds.contains("released") && holds.contains("held"),
        "{holds}"
    );
    // Counted: 8 sign-ups, 4 posts, 6 reactions, 10 orders…
    let minutes = expected["analytics_minutes"].to_string();
    for metric in ["signups", "posts", "reactions", "orders", "payments_failed"] {
        assert!(
            minutes.contains(&format!("\"{metric}\"")),
            "{metric}: {minutes}"
        );
    }
    for round in 0..6u64 {
        let seed = 1000 + round;
        let mut rng = StdRng::seed_from_u64(seed);
        let deliveries = shuffled_with_duplicates(&stream, &mut rng);
        let got = run_services(db, deliveries, &mut rng).await.unwrap();
        assert_eq!(
            got, expected,
            "seed {seed}: the shuffled run ended elsewhere"
        );
    }
}

/// A toy projection that needs order: each subject's history as a list, and its latest
/// value.
struct History;

const HISTORY: MigrationSet = MigrationSet::new(
    "history",
    &[Migration::new(
        1,
        "history",
        "CREATE TABLE history (subject TEXT PRIMARY KEY, entries TEXT NOT NULL)",
    )],
);

#[async_trait]
impl Reaction for History {
    type Plan = String;

    fn plan(&self, msg: &Message) -> Result<Option<String>, HandlerError> {
        let event = msg.event();
        // Events of type `ignored` advance the sequence but change nothing.
        if event.ty == "test.ignored" {
            return Ok(None);
        }
        Ok(Some(event.id.clone()))
    }

    async fn apply(
        &self,
        tx: &mut Transaction,
        msg: &Message,
        entry: String,
    ) -> Result<bool, HandlerError> {
        let subject = msg.event().subject.clone().unwrap();
        let old = tx
            .query_opt(
                "SELECT entries FROM history WHERE subject = $1",
                params![subject.as_str()],
            )
            .await
            .unwrap();
        let entries = match old {
            Some(row) => format!("{} {entry}", row.get::<String>("entries").unwrap()),
            None => entry,
        };
        tx.execute(
            "INSERT INTO history (subject, entries) VALUES ($1, $2)
             ON CONFLICT (subject) DO UPDATE SET entries = excluded.entries",
            params![subject.as_str(), entries.as_str()],
        )
        .await
        .unwrap();
        Ok(false)
    }
}

fn numbered_stream() -> Vec<(String, Event)> {
    let mut stream = Vec::new();
    for s in 0..5 {
        for n in 1..=8u64 {
            let ty = if n % 4 == 0 {
                "test.ignored"
            } else {
                "test.happened"
            };
            let mut e = Event::new(ty, "/test")
                .with_id(format!("s{s}-{n}"))
                .with_subject(format!("s{s}"));
            e.set_sequence(n);
            stream.push(("test.events".to_owned(), e));
        }
    }
    stream
}

async fn history_of(
    db: Db,
    order: Order,
    deliveries: Vec<(String, Event)>,
    rng: &mut StdRng,
) -> Option<Vec<Value>> {
    let (store, _guard) = fresh_store(db, &[HISTORY], "reactors_history").await?;
    let reactor = Reactor::new("history", order, store.clone(), History);
    let topics = vec![TopicPattern::parse("test.events").unwrap()];
    let handlers: Vec<(Vec<TopicPattern>, Arc<dyn Handler>)> = vec![(topics, Arc::new(reactor))];
    feed(&handlers, deliveries, rng).await;
    Some(rows(&store, "SELECT subject, entries FROM history", &[]).await)
}

async fn hold_back_and_last_write_wins_reach_the_in_order_state(db: Db) {
    let stream = numbered_stream();
    let mut rng = StdRng::seed_from_u64(7);
    let Some(expected) = history_of(db, Order::HoldBack, in_order(&stream), &mut rng).await else {
        return;
    };
    assert!(
        expected[0]
            .to_string()
            .contains("s0-1 s0-2 s0-3 s0-5 s0-6 s0-7"),
        "{expected:?}"
    );
    for seed in 0..5u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let deliveries = shuffled_with_duplicates(&stream, &mut rng);
        let got = history_of(db, Order::HoldBack, deliveries, &mut rng)
            .await
            .unwrap();
        assert_eq!(got, expected, "hold back, seed {seed}");
    }

    // Last write wins: the history holds whatever was applied, but it only ever grows
    // with newer events, and ends with each subject's newest event that is not ignored
    // (an ignored event does not count as a write).
    for seed in 0..5u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let deliveries = shuffled_with_duplicates(&stream, &mut rng);
        let got = history_of(db, Order::LastWriteWins, deliveries, &mut rng)
            .await
            .unwrap();
        assert_eq!(got.len(), 5);
        for row in got {
            let entries = row["entries"]
                .as_str()
                .unwrap()
                .trim_matches('"')
                .to_owned();
            let numbers: Vec<u64> = entries
                .split(' ')
                .map(|id| id.rsplit('-').next().unwrap().parse().unwrap())
                .collect();
            assert!(
                numbers.windows(2).all(|w| w[0] < w[1]),
                "seed {seed}: {entries}"
            );
            assert_eq!(*numbers.last().unwrap(), 7, "seed {seed}: {entries}");
        }
    }
}

async fn an_event_held_back_too_long_is_dead_lettered_naming_the_gap(db: Db) {
    let Some((store, _guard)) = fresh_store(db, &[HISTORY], "reactors_gap").await else {
        return;
    };
    let reactor = Reactor::new("history", Order::HoldBack, store.clone(), History)
        .hold_back_timeout(Duration::from_millis(200));
    let mut second = Event::new("test.happened", "/test")
        .with_id("x-2")
        .with_subject("x");
    second.set_sequence(2);
    let msg = |attempt| {
        Message::new(
            Arc::new(second.clone()),
            DeliveryInfo {
                topic: "test.events".to_owned(),
                offset: 1,
                group: "history".to_owned(),
                attempt,
                published_at: Utc::now(),
            },
        )
    };
    let held = reactor.handle(&msg(1)).await.unwrap_err();
    assert!(held.is_transient(), "{held}");
    assert!(held.message().contains("waits for sequence 1"), "{held}");
    tokio::time::sleep(Duration::from_millis(250)).await;
    let dead = reactor.handle(&msg(2)).await.unwrap_err();
    assert!(dead.is_permanent(), "{dead}");
    assert_eq!(dead.reason(), Some(REASON_SEQUENCE_GAP));
    assert!(
        dead.message().contains("sequence 2 of subject `x`")
            && dead.message().contains("waits for sequence 1"),
        "{dead}"
    );
    let rows = rows(&store, "SELECT subject FROM history", &[]).await;
    assert!(rows.is_empty(), "nothing applied: {rows:?}");
}
