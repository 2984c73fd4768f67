//! The Bus API: [`Publisher`], [`Subscriber`], [`Subscription`] and [`Delivery`].
//!
//! # Contract every backend keeps
//!
//! - **Durable publish.** `publish` and `publish_batch` return `Ok` only once the events are
//!   durable in the backend (on disk for the embedded bus, acknowledged by the stream for a
//!   broker). A batch is written whole or not at all. Invalid events are refused before
//!   anything is written.
//! - **Consumer groups.** Every subscription names a group. Subscriptions of one group
//!   compete: each event goes to one of them. Every group gets every event.
//! - **At-least-once.** An event is delivered until it is acked or dead-lettered. A delivery
//!   neither acked nor nacked within the ack timeout is delivered again, with `attempt`
//!   increased. An event whose deliveries reach `max_deliveries` without an ack goes to the
//!   dead-letter topic (`<topic>.dlq`) with the reason, the handler's last error and the
//!   attempt count, exactly once, and counts as done for its group. A delivery handed back
//!   unsettled before its ack timeout (its subscription closed or was dropped) still gets an
//!   attempt number, since numbers never repeat, but does not count towards
//!   `max_deliveries`: no handler failed it.
//! - **Order per key.** With [`Ordering::PerKey`] (the default), the next event of a
//!   partition key is not delivered to anyone in the group before the previous one is acked
//!   or dead-lettered; events of different keys, and events without a key, flow
//!   concurrently. (On a partitioned backend such as NATS JetStream, keys that share a
//!   partition wait for each other; the backend documents its partitioning.)
//! - **Thread safety.** Publishers and subscribers are `Send + Sync` and meant to be shared
//!   (`Arc`). A [`Delivery`] may be acked from any task.
//! - **Cancellation.** [`Subscription::next`] is cancel-safe: dropping its future loses no
//!   event. Dropping a [`Subscription`] or a [`Delivery`] without acking leaves the event to
//!   be redelivered, never lost.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::BusError;
use crate::event::Event;
use crate::naming::TopicPattern;

/// Where an event landed: its topic and its position (offset) there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// The topic.
    pub topic: String,
    /// The event's offset in the topic; offsets start at 0 and only grow.
    pub offset: u64,
}

/// Publishes events durably.
#[async_trait]
pub trait Publisher: Send + Sync {
    /// Publishes one event to `topic`; returns once it is durable.
    async fn publish(&self, topic: &str, event: Event) -> Result<Published, BusError>;

    /// Publishes events to `topic` as one atomic write; returns once all are durable.
    async fn publish_batch(
        &self,
        topic: &str,
        events: Vec<Event>,
    ) -> Result<Vec<Published>, BusError>;
}

/// Where a group with no stored position in a topic starts reading it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum StartFrom {
    /// From the oldest retained event (the default: a new service sees history).
    #[default]
    Beginning,
    /// Only events published after the subscription.
    Latest,
    /// From this offset. Moves an existing group's position too (replay).
    Offset(u64),
    /// From the first event published at or after this time. Moves an existing group's
    /// position too (replay).
    Time(DateTime<Utc>),
}

impl StartFrom {
    /// Parses `beginning`, `latest`, an offset or an RFC 3339 time.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "beginning" | "earliest" => Ok(StartFrom::Beginning),
            "latest" | "end" => Ok(StartFrom::Latest),
            _ => {
                if let Ok(n) = text.parse::<u64>() {
                    return Ok(StartFrom::Offset(n));
                }
                DateTime::parse_from_rfc3339(text)
                    .map(|t| StartFrom::Time(t.with_timezone(&Utc)))
                    .map_err(|_| {
                        format!("`{text}` is not `beginning`, `latest`, an offset or an RFC 3339 time such as 2026-11-27T10:00:00Z")
                    })
            }
        }
    }

    /// Whether this start position moves an existing group (a replay).
    pub fn is_seek(&self) -> bool {
        matches!(self, StartFrom::Offset(_) | StartFrom::Time(_))
    }
}

/// How a group orders deliveries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Ordering {
    /// Strict order within one partition key; concurrency across keys (the default).
    #[default]
    PerKey,
    /// No ordering promise: every event may be in flight at once.
    None,
}

/// What a subscription consumes and how.
#[derive(Clone, Debug)]
pub struct SubscribeOptions {
    /// The consumer group.
    pub group: String,
    /// Topics or patterns to consume.
    pub topics: Vec<TopicPattern>,
    /// Where a group with no position starts (see [`StartFrom`]).
    pub start: StartFrom,
    /// How long a delivery may stay unacked before it is delivered again.
    pub ack_timeout: Duration,
    /// Deliveries before an event goes to the dead-letter topic (at least 1).
    pub max_deliveries: u32,
    /// Ordering within the group.
    pub ordering: Ordering,
    /// Most deliveries this subscription holds unacked at once.
    pub max_in_flight: usize,
    /// An ephemeral group keeps no position: it lives as long as the subscription.
    pub ephemeral: bool,
}

impl SubscribeOptions {
    /// Default ack timeout.
    pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default deliveries before dead-lettering.
    pub const DEFAULT_MAX_DELIVERIES: u32 = 5;
    /// Default in-flight bound per subscription.
    pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;

    /// Options for `group` consuming `topics` (names or patterns), with the defaults.
    pub fn new<I, S>(group: impl Into<String>, topics: I) -> Result<Self, BusError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let topics = topics
            .into_iter()
            .map(|t| TopicPattern::parse(t.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        let options = SubscribeOptions {
            group: group.into(),
            topics,
            start: StartFrom::default(),
            ack_timeout: Self::DEFAULT_ACK_TIMEOUT,
            max_deliveries: Self::DEFAULT_MAX_DELIVERIES,
            ordering: Ordering::default(),
            max_in_flight: Self::DEFAULT_MAX_IN_FLIGHT,
            ephemeral: false,
        };
        options.validate()?;
        Ok(options)
    }

    /// Checks the options make sense together.
    pub fn validate(&self) -> Result<(), BusError> {
        let bad = |m: &str| Err(BusError::InvalidOptions(m.to_owned()));
        if self.topics.is_empty() {
            return bad("name at least one topic");
        }
        if self.group.is_empty()
            || !self
                .group
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return bad("the group name must be non-empty ASCII letters, digits, `-`, `_` or `.`");
        }
        if self.max_deliveries == 0 {
            return bad("max_deliveries must be at least 1");
        }
        if self.max_in_flight == 0 {
            return bad("max_in_flight must be at least 1");
        }
        if self.ack_timeout.is_zero() {
            return bad("ack_timeout must be positive");
        }
        Ok(())
    }

    /// Sets the start position.
    pub fn start(mut self, start: StartFrom) -> Self {
        self.start = start;
        self
    }
    /// Sets the ack timeout.
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.ack_timeout = timeout;
        self
    }
    /// Sets the deliveries before dead-lettering.
    pub fn max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = n;
        self
    }
    /// Sets the ordering.
    pub fn ordering(mut self, ordering: Ordering) -> Self {
        self.ordering = ordering;
        self
    }
    /// Sets the in-flight bound.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n;
        self
    }
    /// Makes the group ephemeral.
    pub fn ephemeral(mut self, ephemeral: bool) -> Self {
        self.ephemeral = ephemeral;
        self
    }
}

/// Facts about one delivery of an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryInfo {
    /// The topic the event is in.
    pub topic: String,
    /// Its offset there.
    pub offset: u64,
    /// The consumer group it is delivered to.
    pub group: String,
    /// 1 for the first delivery, 2 for the first redelivery…
    pub attempt: u32,
    /// When the bus stored it.
    pub published_at: DateTime<Utc>,
}

/// Why an event is sent to the dead-letter topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// A short reason (`max deliveries reached`, `invalid payload`…).
    pub reason: String,
    /// The handler's last error, if any.
    pub error: Option<String>,
}

/// The backend side of a delivery's ack, nack and dead-letter.
#[async_trait]
pub trait Acknowledger: Send + Sync {
    /// Marks the event done for the group, durably.
    async fn ack(&self, info: &DeliveryInfo) -> Result<(), BusError>;
    /// Asks for the event again after `delay`; `error` is kept as the last error.
    async fn nack(
        &self,
        info: &DeliveryInfo,
        delay: Duration,
        error: Option<String>,
    ) -> Result<(), BusError>;
    /// Moves the event to the dead-letter topic now, and marks it done for the group.
    async fn dead_letter(&self, info: &DeliveryInfo, why: DeadLetter) -> Result<(), BusError>;
}

/// One event handed to one subscription; ack, nack or dead-letter it.
pub struct Delivery {
    event: Arc<Event>,
    info: DeliveryInfo,
    acker: Arc<dyn Acknowledger>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("info", &self.info)
            .field("event", &self.event)
            .finish()
    }
}

impl Delivery {
    /// A delivery, as a backend builds it.
    pub fn new(event: Arc<Event>, info: DeliveryInfo, acker: Arc<dyn Acknowledger>) -> Self {
        Delivery { event, info, acker }
    }
    /// The event.
    pub fn event(&self) -> &Event {
        &self.event
    }
    /// The event, shared.
    pub fn event_arc(&self) -> &Arc<Event> {
        &self.event
    }
    /// Facts about this delivery.
    pub fn info(&self) -> &DeliveryInfo {
        &self.info
    }
    /// The attempt number (1 for the first delivery).
    pub fn attempt(&self) -> u32 {
        self.info.attempt
    }
    /// Acks: the event is done for this group. Returns once the ack is durable. An ack
    /// arriving after the ack timeout is still taken, unless the event is already done for
    /// the group (acked through another delivery, or dead-lettered): then it changes nothing
    /// and returns `Ok`.
    pub async fn ack(&self) -> Result<(), BusError> {
        self.acker.ack(&self.info).await
    }
    /// Nacks: deliver the event again after `delay`.
    pub async fn nack(&self, delay: Duration, error: Option<String>) -> Result<(), BusError> {
        self.acker.nack(&self.info, delay, error).await
    }
    /// Sends the event to the dead-letter topic now.
    pub async fn dead_letter(&self, why: DeadLetter) -> Result<(), BusError> {
        self.acker.dead_letter(&self.info, why).await
    }
}

/// The backend side of a subscription.
#[async_trait]
pub trait DeliverySource: Send {
    /// The next delivery; `None` once the subscription is closed. Must be cancel-safe.
    async fn next(&mut self) -> Option<Result<Delivery, BusError>>;
    /// Stops taking deliveries. Unacked deliveries are redelivered to the group later.
    async fn close(&mut self);
}

/// A stream of deliveries for one member of a consumer group.
pub struct Subscription {
    source: Box<dyn DeliverySource>,
}

impl Subscription {
    /// Wraps a backend's source.
    pub fn new(source: Box<dyn DeliverySource>) -> Self {
        Subscription { source }
    }
    /// The next delivery; `None` once closed. Cancel-safe.
    pub async fn next(&mut self) -> Option<Result<Delivery, BusError>> {
        self.source.next().await
    }
    /// Closes the subscription; deliveries not yet acked go back to the group.
    pub async fn close(mut self) {
        self.source.close().await
    }
}

/// Subscribes to topics in consumer groups.
#[async_trait]
pub trait Subscriber: Send + Sync {
    /// Joins `options.group` on `options.topics`.
    async fn subscribe(&self, options: SubscribeOptions) -> Result<Subscription, BusError>;
}

/// One consumer group's standing in one topic.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct GroupInfo {
    /// The group.
    pub group: String,
    /// Lowest offset not yet acked.
    pub position: u64,
    /// Events published but not yet acked by the group.
    pub lag: u64,
}

/// One topic's contents and groups.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TopicInfo {
    /// The topic.
    pub topic: String,
    /// Events retained.
    pub retained: u64,
    /// Oldest retained offset.
    pub first_offset: u64,
    /// The offset the next event will get.
    pub next_offset: u64,
    /// Durable groups reading it.
    pub groups: Vec<GroupInfo>,
}

/// A whole bus: publishing, subscribing and inspection.
#[async_trait]
pub trait Bus: Publisher + Subscriber {
    /// Every topic with its counts and groups, sorted by name.
    async fn topics(&self) -> Result<Vec<TopicInfo>, BusError>;
    /// Stops the bus: waits for pending writes, then refuses new work with [`BusError::Closed`].
    async fn close(&self) -> Result<(), BusError>;
}
