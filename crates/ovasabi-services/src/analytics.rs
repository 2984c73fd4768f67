//! `analytics`: live counters and time windows of the platform's activity, updated per
//! event, served over HTTP and pushed live; rebuilt from the log by [`replay`]
//! (`ovasabi replay analytics`).
//!
//! | event | counts |
//! | --- | --- |
//! | `user.registered` | `signups`; the user is active |
//! | `content.posted` | `posts`; the author is active |
//! | `comment.added` | `comments`; the content's engagement +1; the author is active |
//! | `reaction.added` | `reactions`; the content's engagement +1; the user is active |
//! | `order.placed` | `orders`; the customer is active |
//! | `payment.completed` | `payments_completed`; `revenue` in the payment's currency |
//! | `payment.failed` | `payments_failed` |
//! | `message.sent` | `messages`; the sender is active |
//! | `fraud.hold_placed` | `fraud_holds` |
//!
//! Every count goes into the minute of the event's own `time` (when it happened, not when it
//! was handled), so a replay of the same log reaches the same numbers, and numbers do not
//! depend on how late a consumer runs. The consumer is a [`Reactor`] with
//! [`Order::Unordered`]: counts commute, and each event is counted once by its id.
//!
//! # HTTP
//!
//! - `GET /v1/analytics?at=` — a snapshot: all-time totals, the last hour's sums, the last
//!   hour minute by minute, active users (distinct users active in the last 5 minutes and
//!   the last hour), and the 10 most engaging pieces of content of the last hour. Windows
//!   end at `at` (default now).
//! - `GET /v1/analytics/stream` — the same snapshot as Server-Sent Events (`event:
//!   analytics`), sent at once, after each commit of the consumer in this process (at most 4
//!   a second), and every 5 seconds in any case (windows slide).
//!
//! # Tables
//!
//! `analytics_minutes (metric, minute, value)`, `analytics_active (user_id, minute)`,
//! `analytics_engagement (content_id, minute, score)`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, DurationRound, Utc};
use ovasabi_core::{Bus, BusError, DeliveryInfo, Event, Ordering, StartFrom, SubscribeOptions};
use ovasabi_events::commerce::{OrderPlaced, PaymentCompleted, PaymentFailed};
use ovasabi_events::content::{CommentAdded, ContentPosted, ReactionAdded};
use ovasabi_events::messaging::MessageSent;
use ovasabi_events::moderation::FraudHoldPlaced;
use ovasabi_events::users::UserRegistered;
use ovasabi_events::DomainEvent;
use ovasabi_middleware::{Handler, HandlerError, Message};
use ovasabi_store::inbox::Order;
use ovasabi_store::{params, Inbox, Migration, MigrationSet, Store, StoreError, Transaction};
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::http::ApiError;
use crate::reactor::{Reaction, Reactor};
use crate::runtime::{ConsumerSpec, Context, Service, ServiceError};
use crate::users::paging;
use crate::wallet::{payload, store_failure};

/// The consumer group, and its inbox name.
pub const GROUP: &str = "analytics";
/// The counters, in the order snapshots list them (revenue is per currency, apart).
pub const METRICS: &[&str] = &[
    "signups",
    "posts",
    "comments",
    "reactions",
    "orders",
    "payments_completed",
    "payments_failed",
    "messages",
    "fraud_holds",
];
/// Pieces of content in a snapshot's top list.
const TOP: i64 = 10;
/// The most snapshots a stream sends a second, and the longest it stays silent.
const STREAM_MIN_GAP: Duration = Duration::from_millis(250);
const STREAM_MAX_GAP: Duration = Duration::from_secs(5);

const MIGRATIONS: MigrationSet = MigrationSet::new(
    "analytics",
    &[Migration::new(
        1,
        "analytics_minutes, analytics_active, analytics_engagement",
        "CREATE TABLE analytics_minutes (
            metric TEXT NOT NULL,
            minute TIMESTAMPTZ NOT NULL,
            value BIGINT NOT NULL,
            PRIMARY KEY (metric, minute)
        );
        CREATE INDEX analytics_minutes_minute ON analytics_minutes (minute);
        CREATE TABLE analytics_active (
            user_id TEXT NOT NULL,
            minute TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (user_id, minute)
        );
        CREATE INDEX analytics_active_minute ON analytics_active (minute);
        CREATE TABLE analytics_engagement (
            content_id TEXT NOT NULL,
            minute TIMESTAMPTZ NOT NULL,
            score BIGINT NOT NULL,
            PRIMARY KEY (content_id, minute)
        );
        CREATE INDEX analytics_engagement_minute ON analytics_engagement (minute);",
    )],
);

/// The topics the analytics read.
pub fn topics() -> Vec<String> {
    let mut topics = vec![
        UserRegistered::TOPIC.to_owned(),
        ContentPosted::TOPIC.to_owned(),
        OrderPlaced::TOPIC.to_owned(),
        MessageSent::TOPIC.to_owned(),
        FraudHoldPlaced::TOPIC.to_owned(),
    ];
    topics.sort();
    topics.dedup();
    topics
}

/// The `analytics` service.
#[derive(Clone, Debug, Default)]
pub struct AnalyticsService {
    committed: Arc<Notify>,
}

#[derive(Clone)]
struct Shared {
    store: Store,
    committed: Arc<Notify>,
}

impl Service for AnalyticsService {
    fn name(&self) -> &'static str {
        "analytics"
    }

    fn about(&self) -> &'static str {
        "live counters and time windows of sign-ups, posts, orders, revenue…, pushed over SSE"
    }

    fn migrations(&self) -> MigrationSet {
        MIGRATIONS
    }

    fn consumers(&self, ctx: &Context) -> Result<Vec<ConsumerSpec>, ServiceError> {
        let topics = topics();
        Ok(vec![ctx.consumer(
            "analytics",
            GROUP,
            &topics,
            Ordering::None,
            Arc::new(reactor(ctx.store.clone(), self.committed.clone())),
        )?])
    }

    fn routes(&self, ctx: &Context) -> Option<Router> {
        Some(
            Router::new()
                .route("/v1/analytics", get(snapshot_handler))
                .route("/v1/analytics/stream", get(stream))
                .with_state(Shared {
                    store: ctx.store.clone(),
                    committed: self.committed.clone(),
                }),
        )
    }

    fn openapi(&self) -> Value {
        openapi()
    }
}

fn reactor(store: Store, committed: Arc<Notify>) -> Reactor<Counter> {
    Reactor::new(GROUP, Order::Unordered, store, Counter { committed })
}

/// What one event adds.
#[derive(Debug, Default)]
struct Counts {
    metrics: Vec<(String, i64)>,
    active: Option<String>,
    engaged: Option<String>,
}

impl Counts {
    fn of(event: &Event) -> Result<Option<Counts>, HandlerError> {
        let one = |metric: &str| vec![(metric.to_owned(), 1)];
        Ok(Some(match event.ty.as_str() {
            UserRegistered::TYPE => {
                let e: UserRegistered = payload(event)?;
                Counts {
                    metrics: one("signups"),
                    active: Some(e.user_id),
                    engaged: None,
                }
            }
            ContentPosted::TYPE => {
                let e: ContentPosted = payload(event)?;
                Counts {
                    metrics: one("posts"),
                    active: Some(e.author_id),
                    engaged: None,
                }
            }
            CommentAdded::TYPE => {
                let e: CommentAdded = payload(event)?;
                Counts {
                    metrics: one("comments"),
                    active: Some(e.author_id),
                    engaged: Some(e.content_id),
                }
            }
            ReactionAdded::TYPE => {
                let e: ReactionAdded = payload(event)?;
                Counts {
                    metrics: one("reactions"),
                    active: Some(e.user_id),
                    engaged: Some(e.content_id),
                }
            }
            OrderPlaced::TYPE => {
                let e: OrderPlaced = payload(event)?;
                Counts {
                    metrics: one("orders"),
                    active: Some(e.customer_id),
                    engaged: None,
                }
            }
            PaymentCompleted::TYPE => {
                let e: PaymentCompleted = payload(event)?;
                let mut metrics = one("payments_completed");
                metrics.push((
                    format!("revenue.{}", e.amount.currency),
                    e.amount.amount_minor,
                ));
                Counts {
                    metrics,
                    ..Counts::default()
                }
            }
            PaymentFailed::TYPE => {
                let _: PaymentFailed = payload(event)?;
                Counts {
                    metrics: one("payments_failed"),
                    ..Counts::default()
                }
            }
            MessageSent::TYPE => {
                let e: MessageSent = payload(event)?;
                Counts {
                    metrics: one("messages"),
                    active: Some(e.sender_id),
                    engaged: None,
                }
            }
            FraudHoldPlaced::TYPE => {
                let _: FraudHoldPlaced = payload(event)?;
                Counts {
                    metrics: one("fraud_holds"),
                    ..Counts::default()
                }
            }
            _ => return Ok(None),
        }))
    }
}

/// The minute `time` falls in.
fn minute_of(time: DateTime<Utc>) -> DateTime<Utc> {
    time.duration_trunc(chrono::Duration::minutes(1))
        .unwrap_or(time)
}

/// Adds each event's counts to its minute.
struct Counter {
    committed: Arc<Notify>,
}

#[async_trait]
impl Reaction for Counter {
    type Plan = Counts;

    fn plan(&self, msg: &Message) -> Result<Option<Counts>, HandlerError> {
        Counts::of(msg.event())
    }

    async fn apply(
        &self,
        tx: &mut Transaction,
        msg: &Message,
        counts: Counts,
    ) -> Result<bool, HandlerError> {
        let failed = store_failure("analytics");
        let minute = minute_of(msg.event().time.unwrap_or(msg.info().published_at));
        for (metric, value) in &counts.metrics {
            tx.execute(
                "INSERT INTO analytics_minutes (metric, minute, value) VALUES ($1, $2, $3)
                 ON CONFLICT (metric, minute) DO UPDATE
                 SET value = analytics_minutes.value + excluded.value",
                params![metric.as_str(), minute, *value],
            )
            .await
            .map_err(&failed)?;
        }
        if let Some(user) = &counts.active {
            tx.execute(
                "INSERT INTO analytics_active (user_id, minute) VALUES ($1, $2)
                 ON CONFLICT (user_id, minute) DO NOTHING",
                params![user.as_str(), minute],
            )
            .await
            .map_err(&failed)?;
        }
        if let Some(content) = &counts.engaged {
            tx.execute(
                "INSERT INTO analytics_engagement (content_id, minute, score) VALUES ($1, $2, 1)
                 ON CONFLICT (content_id, minute) DO UPDATE
                 SET score = analytics_engagement.score + 1",
                params![content.as_str(), minute],
            )
            .await
            .map_err(&failed)?;
        }
        Ok(false)
    }

    fn committed(&self, _msg: &Message) {
        self.committed.notify_waiters();
    }
}

/// The analytics as of `at`: see the [module documentation](self).
pub async fn snapshot(store: &Store, at: DateTime<Utc>) -> Result<Value, StoreError> {
    let hour_ago = minute_of(at) - chrono::Duration::minutes(59);
    let five_ago = minute_of(at) - chrono::Duration::minutes(4);
    let mut totals: BTreeMap<String, i64> = METRICS.iter().map(|m| ((*m).to_owned(), 0)).collect();
    let mut last_hour = totals.clone();
    let mut revenue_total: BTreeMap<String, i64> = BTreeMap::new();
    let mut revenue_hour: BTreeMap<String, i64> = BTreeMap::new();
    for row in store
        .query(
            "SELECT metric, CAST(SUM(value) AS BIGINT) AS total FROM analytics_minutes WHERE minute <= $1
             GROUP BY metric",
            params![at],
        )
        .await?
    {
        let metric: String = row.get("metric")?;
        let total: i64 = row.get("total")?;
        match metric.strip_prefix("revenue.") {
            Some(currency) => {
                revenue_total.insert(currency.to_owned(), total);
            }
            None => {
                totals.insert(metric, total);
            }
        }
    }
    let mut per_minute: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for row in store
        .query(
            "SELECT metric, minute, value FROM analytics_minutes
             WHERE minute >= $1 AND minute <= $2 ORDER BY metric, minute",
            params![hour_ago, at],
        )
        .await?
    {
        let metric: String = row.get("metric")?;
        let minute: DateTime<Utc> = row.get("minute")?;
        let value: i64 = row.get("value")?;
        match metric.strip_prefix("revenue.") {
            Some(currency) => *revenue_hour.entry(currency.to_owned()).or_default() += value,
            None => *last_hour.entry(metric.clone()).or_default() += value,
        }
        per_minute
            .entry(metric)
            .or_default()
            .push(json!({"minute": minute, "value": value}));
    }
    let active = |from: DateTime<Utc>| {
        let store = store.clone();
        async move {
            store
                .query_one(
                    "SELECT COUNT(DISTINCT user_id) AS n FROM analytics_active
                     WHERE minute >= $1 AND minute <= $2",
                    params![from, at],
                )
                .await?
                .get::<i64>("n")
        }
    };
    let top = store
        .query(
            "SELECT content_id, CAST(SUM(score) AS BIGINT) AS engagement FROM analytics_engagement
             WHERE minute >= $1 AND minute <= $2
             GROUP BY content_id ORDER BY engagement DESC, content_id LIMIT $3",
            params![hour_ago, at, TOP],
        )
        .await?
        .iter()
        .map(|row| {
            Ok(json!({
                "content_id": row.get::<String>("content_id")?,
                "engagement": row.get::<i64>("engagement")?,
            }))
        })
        .collect::<Result<Vec<Value>, StoreError>>()?;
    let money = |by: &BTreeMap<String, i64>| {
        by.iter()
            .map(|(currency, amount)| json!({"currency": currency, "amount_minor": amount}))
            .collect::<Vec<_>>()
    };
    let mut totals_json = json!(totals);
    totals_json["revenue"] = json!(money(&revenue_total));
    let mut hour_json = json!(last_hour);
    hour_json["revenue"] = json!(money(&revenue_hour));
    Ok(json!({
        "at": at,
        "totals": totals_json,
        "last_hour": hour_json,
        "per_minute": per_minute,
        "active_users": {"last_5_minutes": active(five_ago).await?, "last_hour": active(hour_ago).await?},
        "top_content": top,
    }))
}

/// `?at=` or now.
fn at_of(query: &HashMap<String, String>) -> Result<DateTime<Utc>, ApiError> {
    match query.get("at").map(|s| s.trim()) {
        None | Some("") => Ok(Utc::now()),
        Some(text) => DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| {
                ApiError::invalid(
                    "at",
                    format!("`{text}` is not an RFC 3339 time ({e}), e.g. 2026-11-27T10:00:00Z"),
                )
            }),
    }
}

async fn snapshot_handler(
    State(shared): State<Shared>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let query = paging::query(query, &["at"])?;
    let at = at_of(&query)?;
    Ok(Json(snapshot(&shared.store, at).await?))
}

async fn stream(
    State(shared): State<Shared>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<axum::response::Response, ApiError> {
    paging::query(query, &[])?;
    let (tx, events) = crate::http::sse_channel(4);
    tokio::spawn(async move {
        loop {
            let woken = shared.committed.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            match snapshot(&shared.store, Utc::now()).await {
                Ok(snapshot) => {
                    let event = SseEvent::default()
                        .event("analytics")
                        .data(snapshot.to_string());
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!("analytics stream: {e}"),
            }
            tokio::select! {
                _ = tx.closed() => return,
                _ = &mut woken => {}
                _ = tokio::time::sleep(STREAM_MAX_GAP) => {}
            }
            tokio::time::sleep(STREAM_MIN_GAP).await;
        }
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// What a [`replay`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReplaySummary {
    /// Events read from the log.
    pub events: u64,
    /// Events counted (the others are of types the analytics do not count).
    pub counted: u64,
}

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The bus failed.
    #[error("reading the log: {0}")]
    Bus(#[from] BusError),
    /// The database failed.
    #[error("the analytics database: {0}")]
    Store(#[from] StoreError),
    /// An event could not be counted even after retries.
    #[error("event {id} ({ty}) at {topic} offset {offset} could not be counted: {error}")]
    Event {
        /// Its id.
        id: String,
        /// Its type.
        ty: String,
        /// Its topic.
        topic: String,
        /// Its offset.
        offset: u64,
        /// Why.
        error: String,
    },
}

/// Rebuilds the analytics from the start of the log: forgets every count (and the inbox of
/// the `analytics` consumer), then reads each topic from its oldest retained event to its
/// end as it is now, counting every event once. `progress(done, total)` is called as it
/// goes. Run it while the `analytics` service is stopped (its consumer would count into
/// the tables being rebuilt); the service's position is left as it was, and what it reads
/// next is recognized by the inbox.
pub async fn replay(
    bus: &dyn Bus,
    store: &Store,
    mut progress: impl FnMut(u64, u64),
) -> Result<ReplaySummary, ReplayError> {
    let topics = topics();
    let ends: HashMap<String, (u64, u64)> = bus
        .topics()
        .await?
        .into_iter()
        .filter(|t| topics.contains(&t.topic) && t.next_offset > t.first_offset)
        .map(|t| (t.topic, (t.first_offset, t.next_offset)))
        .collect();
    let total: u64 = ends.values().map(|(first, end)| end - first).sum();
    let mut tx = store.begin().await?;
    for table in [
        "analytics_minutes",
        "analytics_active",
        "analytics_engagement",
    ] {
        tx.execute(&format!("DELETE FROM {table}"), &[]).await?;
    }
    Inbox::reset(&mut tx, GROUP).await?;
    tx.commit().await?;
    let mut summary = ReplaySummary::default();
    progress(0, total);
    if total == 0 {
        return Ok(summary);
    }
    let handler = reactor(store.clone(), Arc::new(Notify::new()));
    let options = SubscribeOptions::new("analytics-replay", &topics)?
        .start(StartFrom::Beginning)
        .ephemeral(true)
        .ordering(Ordering::None)
        .max_in_flight(256);
    let mut sub = bus.subscribe(options).await?;
    let mut remaining: HashMap<String, u64> = ends
        .iter()
        .map(|(t, (first, end))| (t.clone(), end - first))
        .collect();
    while !remaining.is_empty() {
        let next = tokio::time::timeout(Duration::from_secs(5), sub.next()).await;
        let delivery = match next {
            Ok(Some(delivery)) => delivery?,
            // Nothing for a while: retention removed the rest.
            Ok(None) | Err(_) => break,
        };
        let info: DeliveryInfo = delivery.info().clone();
        let msg = Message::new(delivery.event_arc().clone(), info.clone());
        let counted = Counts::of(msg.event()).ok().flatten().is_some();
        let mut tries = 0;
        loop {
            match handler.handle(&msg).await {
                Ok(_) => break,
                Err(e) if e.is_transient() && tries < 5 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(200 * tries)).await;
                }
                Err(e) if e.is_transient() => {
                    return Err(ReplayError::Event {
                        id: msg.event().id.clone(),
                        ty: msg.event().ty.clone(),
                        topic: info.topic.clone(),
                        offset: info.offset,
                        error: e.to_string(),
                    })
                }
                // A payload the analytics cannot read is skipped, as the live consumer
                // dead-letters it.
                Err(e) => {
                    tracing::warn!(event_id = %msg.event().id, "replay: not counted: {e}");
                    break;
                }
            }
        }
        delivery.ack().await?;
        summary.events += 1;
        summary.counted += u64::from(counted);
        if let Some((_, end)) = ends.get(&info.topic) {
            if info.offset < *end {
                if let Some(left) = remaining.get_mut(&info.topic) {
                    *left -= 1;
                    if *left == 0 {
                        remaining.remove(&info.topic);
                    }
                }
            }
        }
        progress(summary.events, total);
    }
    sub.close().await;
    Ok(summary)
}

fn openapi() -> Value {
    let error = |description: &str| json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let count_map = json!({"type": "object", "additionalProperties": true, "description": "One count per metric (signups, posts, comments, reactions, orders, payments_completed, payments_failed, messages, fraud_holds) and `revenue`: [{currency, amount_minor}]"});
    json!({
        "paths": {
            "/v1/analytics": {"get": {
                "summary": "The platform's analytics: totals, the last hour (sums and minute by minute), active users, top content by engagement",
                "parameters": [{"name": "at", "in": "query", "required": false, "schema": {"type": "string", "format": "date-time"}, "description": "Windows end here (default now)"}],
                "responses": {
                    "200": {"description": "A snapshot", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Analytics"}}}},
                    "422": error("`at` is not an RFC 3339 time")
                }
            }},
            "/v1/analytics/stream": {"get": {
                "summary": "The same snapshot live, as Server-Sent Events (`analytics`), after each change and every 5 s",
                "responses": {"200": {"description": "text/event-stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}}}
            }}
        },
        "schemas": {
            "Analytics": {"type": "object", "required": ["at", "totals", "last_hour", "per_minute", "active_users", "top_content"], "properties": {
                "at": {"type": "string", "format": "date-time"},
                "totals": count_map,
                "last_hour": count_map,
                "per_minute": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "object", "properties": {"minute": {"type": "string", "format": "date-time"}, "value": {"type": "integer"}}}}},
                "active_users": {"type": "object", "properties": {"last_5_minutes": {"type": "integer"}, "last_hour": {"type": "integer"}}},
                "top_content": {"type": "array", "items": {"type": "object", "properties": {"content_id": {"type": "string"}, "engagement": {"type": "integer"}}}}
            }}
        }
    })
}
