//! The [`Consumer`]: runs a handler on every delivery of a subscription.
//!
//! For each delivery the consumer
//! 1. calls the handler (with its layers), at most [`Consumer::concurrency`] at once;
//! 2. on success, publishes the outgoing events (one `publish_batch` per topic, in the order
//!    the handler gave them), **then** acks the input;
//! 3. on failure, asks its [`RedeliveryPolicy`] whether to nack (redeliver later) or
//!    dead-letter. A failure to publish the outgoing events is a failure of the delivery:
//!    transient if the bus failed, permanent (`invalid outgoing event`) if it refused the
//!    events as invalid.
//!
//! # Guarantees
//!
//! - **At-least-once, never dropped.** Every delivery ends acked (after its outgoing events
//!   are durable), nacked, dead-lettered, or left unacked for the bus to redeliver. A crash
//!   between publishing and acking republishes the outgoing events on redelivery; give them
//!   ids derived from the input (see [`crate::handler`]).
//! - **Panics are failures, not crashes.** A handler that panics fails its delivery with the
//!   transient error `handler panicked: <message>`; the consumer keeps going.
//! - **Graceful shutdown.** When the [`CancellationToken`] passed to [`Consumer::run`] is
//!   cancelled, the consumer stops taking deliveries, lets running handlers finish (and
//!   publishes, acks, nacks or dead-letters them as usual) for up to the
//!   [grace period](Consumer::shutdown_grace), then drops the handlers still running. Their
//!   events are not acked, so the bus delivers them again (after the ack timeout) to this
//!   group. Once a handler has returned, its delivery is settled even past the grace period:
//!   stopping then could only cause duplicates.
//!
//! # Logs
//!
//! Each delivery is handled inside a `delivery` [`tracing`] span with the fields
//! `event_id`, `event_type`, `topic`, `group`, `attempt`, `offset`, and — when the event
//! carries them — `correlation_id` (its `correlationid` extension) and `trace_id` (the trace
//! id of its W3C `traceparent` extension). The handler (with its layers) runs in that span,
//! and so does settling the delivery, so every line logged about the event carries them.
//!
//! With an OpenTelemetry layer on the subscriber (see [`crate::otel`]), the `delivery` span
//! is the child of the event's `traceparent` and carries the attributes `event.id`,
//! `event.type`, `messaging.destination`, `messaging.consumer.group` and `attempt`; each
//! outgoing event is published inside its own `publish` span and carries that span's
//! context as its `traceparent`.
//!
//! # Re-driven dead letters
//!
//! An event re-driven from a dead-letter topic (`ovasabi dlq redrive`) carries the extension
//! [`REDRIVEN_FOR`] naming the group that gave up on it; it is meant for that group only.
//! A consumer of another group acks such a delivery without calling its handler (logged at
//! debug) and counts it nowhere in [`RunSummary`] or [`ConsumerStats`].
//!
//! # Counters
//!
//! [`Consumer::stats`] gives a live view of what [`Consumer::run`] counts — deliveries by
//! outcome, by topic and event type, and handler durations (see [`crate::stats`]) — for a
//! metrics endpoint to read while the consumer runs; `run` returns the final
//! [`RunSummary`].

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use ovasabi_core::{Bus, BusError, Delivery, Event, Publisher, SubscribeOptions, Subscriber};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::dead_letter::{FailureDecision, RedeliveryPolicy};
use crate::handler::{Handler, HandlerError, Message, Outgoing};
use crate::otel;
use crate::stats::{ConsumerStats, Counters, Outcome};
use crate::trace_context::TraceParent;

/// The extension a re-driven dead letter carries: the consumer group it is re-driven for.
/// Consumers of other groups ack such an event without handling it.
pub const REDRIVEN_FOR: &str = "redrivenfor";

/// What one [`Consumer::run`] did. Every delivery received is counted in exactly one of
/// `acked`, `nacked`, `dead_lettered`, `unfinished` and `settle_failed`. Re-driven dead
/// letters meant for another group (see [`REDRIVEN_FOR`]) are not counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunSummary {
    /// Deliveries taken from the subscription (but re-driven dead letters for another
    /// group, which are skipped).
    pub received: u64,
    /// Deliveries handled, their outgoing events published, and acked.
    pub acked: u64,
    /// Deliveries nacked for redelivery.
    pub nacked: u64,
    /// Deliveries sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Handlers still running when the grace period ended; their events were left unacked,
    /// for redelivery.
    pub unfinished: u64,
    /// Deliveries whose ack, nack or dead-letter the bus refused; the bus redelivers them.
    pub settle_failed: u64,
    /// Outgoing events published.
    pub published: u64,
    /// Handler calls that panicked (each also counted as nacked or dead-lettered).
    pub panicked: u64,
}

/// Runs a [`Handler`] on the deliveries of one subscription; see the [module
/// docs](crate::consumer) for what it guarantees.
///
/// ```no_run
/// use std::sync::Arc;
/// use std::time::Duration;
/// use ovasabi_core::{Bus, Event, SubscribeOptions};
/// use ovasabi_middleware::{handler_fn, Consumer, ExponentialBackoff, HandlerBuilder, Message, Outgoing};
/// use tokio_util::sync::CancellationToken;
///
/// async fn ship_orders<B: Bus + 'static>(bus: Arc<B>, shutdown: CancellationToken) -> Result<(), ovasabi_core::BusError> {
///     let handler = HandlerBuilder::new()
///         .correlation()
///         .trace_context()
///         .retry(ExponentialBackoff::default())
///         .timeout(Duration::from_secs(5))
///         .handler(handler_fn(|msg: Message| async move {
///             let id = format!("{}-shipped", msg.event().id);
///             Ok(vec![Outgoing::new("shipping.events", Event::new("order.shipped", "/shipping").with_id(id))])
///         }));
///     let options = SubscribeOptions::new("shipping", ["order.events"])?;
///     let summary = Consumer::on_bus(bus, options, handler)
///         .concurrency(8)
///         .run(shutdown)
///         .await?;
///     tracing::info!(?summary, "shipping consumer stopped");
///     Ok(())
/// }
/// ```
pub struct Consumer<H> {
    subscriber: Arc<dyn Subscriber>,
    publisher: Arc<dyn Publisher>,
    options: SubscribeOptions,
    handler: Arc<H>,
    concurrency: usize,
    redelivery: RedeliveryPolicy,
    grace: Duration,
    subscribed: Option<tokio::sync::oneshot::Sender<()>>,
    stats: ConsumerStats,
}

impl<H> std::fmt::Debug for Consumer<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("options", &self.options)
            .field("concurrency", &self.concurrency)
            .field("redelivery", &self.redelivery)
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

impl<H: Handler> Consumer<H> {
    /// Handlers running at once unless [`Consumer::concurrency`] says otherwise.
    pub const DEFAULT_CONCURRENCY: usize = 16;
    /// How long running handlers get to finish after shutdown is asked for, by default.
    pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

    /// A consumer of `options` from `subscriber`, publishing outgoing events to `publisher`.
    pub fn new(
        subscriber: Arc<dyn Subscriber>,
        publisher: Arc<dyn Publisher>,
        options: SubscribeOptions,
        handler: H,
    ) -> Self {
        Consumer {
            subscriber,
            publisher,
            options,
            handler: Arc::new(handler),
            concurrency: Self::DEFAULT_CONCURRENCY,
            redelivery: RedeliveryPolicy::default(),
            grace: Self::DEFAULT_SHUTDOWN_GRACE,
            subscribed: None,
            stats: ConsumerStats::new(),
        }
    }

    /// A consumer subscribing to and publishing on one `bus`.
    pub fn on_bus<B: Bus + 'static>(bus: Arc<B>, options: SubscribeOptions, handler: H) -> Self {
        let subscriber: Arc<dyn Subscriber> = bus.clone();
        let publisher: Arc<dyn Publisher> = bus;
        Self::new(subscriber, publisher, options, handler)
    }

    /// Runs at most `n` (at least 1) handlers at once. Ordering per key is kept by the bus
    /// whatever `n` is. Going above the subscription's `max_in_flight` gains nothing.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Decides between redelivery and dead-lettering after a failure (default:
    /// [`RedeliveryPolicy::default`]).
    pub fn redelivery_policy(mut self, policy: RedeliveryPolicy) -> Self {
        self.redelivery = policy;
        self
    }

    /// How long running handlers get to finish once shutdown is asked for (default 10 s).
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Sends on `tx` once [`Consumer::run`] has subscribed (the group exists on the bus and
    /// deliveries can flow); if subscribing fails, `tx` is dropped instead.
    pub fn notify_subscribed(mut self, tx: tokio::sync::oneshot::Sender<()>) -> Self {
        self.subscribed = Some(tx);
        self
    }

    /// A live view of this consumer's counters and handler durations, shared with it: take
    /// it before [`Consumer::run`] and read it while the consumer runs (see
    /// [`crate::stats`]). Its [`ConsumerStats::snapshot`] at the end is what `run` returns.
    pub fn stats(&self) -> ConsumerStats {
        self.stats.clone()
    }

    /// Subscribes and handles deliveries until `shutdown` is cancelled or the subscription
    /// ends, then shuts down gracefully (see the [module docs](crate::consumer)).
    ///
    /// Returns the subscription's error if subscribing fails, or if taking a delivery fails
    /// with anything but [`BusError::Closed`] (a closed bus ends the run normally); running
    /// handlers are drained first either way. Errors while settling single deliveries are
    /// logged and counted in [`RunSummary::settle_failed`]; the bus redelivers those events.
    pub async fn run(self, shutdown: CancellationToken) -> Result<RunSummary, BusError> {
        let group = self.options.group.clone();
        let max_deliveries = self.options.max_deliveries;
        let mut subscription = self.subscriber.subscribe(self.options.clone()).await?;
        if let Some(tx) = self.subscribed {
            let _ = tx.send(());
        }
        tracing::info!(
            group = %group,
            topics = ?self.options.topics.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
            concurrency = self.concurrency,
            "consumer started"
        );

        let shared = Arc::new(Shared {
            handler: self.handler,
            publisher: self.publisher,
            redelivery: self.redelivery,
            max_deliveries,
            stats: self.stats,
        });
        let tracker = TaskTracker::new();
        let abandon = CancellationToken::new();
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let mut outcome = Ok(());

        loop {
            let permit = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                permit = permits.clone().acquire_owned() => {
                    permit.expect("the semaphore is never closed")
                }
            };
            let next = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                // Cancel-safe: an event whose `next` is dropped here is not lost.
                next = subscription.next() => next,
            };
            match next {
                Some(Ok(delivery)) if redriven_for_another(delivery.event(), &group) => {
                    tracker.spawn(skip(delivery, permit));
                }
                Some(Ok(delivery)) => {
                    Counters::bump(&shared.stats.counters().received, 1);
                    shared.stats.count_event(
                        &delivery.info().topic,
                        &delivery.event().ty,
                        Outcome::Received,
                    );
                    tracker.spawn(process(shared.clone(), delivery, abandon.clone(), permit));
                }
                None | Some(Err(BusError::Closed)) => {
                    tracing::info!(group = %group, "subscription ended");
                    break;
                }
                Some(Err(error)) => {
                    tracing::error!(group = %group, %error, "taking a delivery failed; stopping");
                    outcome = Err(error);
                    break;
                }
            }
        }

        tracker.close();
        if !shutdown.is_cancelled() {
            // The subscription ended by itself: running handlers may take their time, unless
            // shutdown is asked for meanwhile.
            tokio::select! {
                _ = tracker.wait() => {}
                _ = shutdown.cancelled() => {}
            }
        }
        if !tracker.is_empty() {
            tracing::info!(
                group = %group,
                running = tracker.len(),
                grace_ms = u64::try_from(self.grace.as_millis()).unwrap_or(u64::MAX),
                "shutting down; waiting for running handlers"
            );
        }
        if tokio::time::timeout(self.grace, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                group = %group,
                running = tracker.len(),
                "grace period over; abandoning running handlers, their events stay unacked and will be redelivered"
            );
            abandon.cancel();
            tracker.wait().await;
        }
        subscription.close().await;

        let summary = shared.stats.snapshot();
        tracing::info!(group = %group, ?summary, "consumer stopped");
        outcome.map(|()| summary)
    }
}

/// What every delivery task needs.
struct Shared<H> {
    handler: Arc<H>,
    publisher: Arc<dyn Publisher>,
    redelivery: RedeliveryPolicy,
    max_deliveries: u32,
    stats: ConsumerStats,
}

/// Whether `event` is a re-driven dead letter meant for a group other than `group`.
fn redriven_for_another(event: &Event, group: &str) -> bool {
    event
        .extension_str(REDRIVEN_FOR)
        .is_some_and(|target| target != group)
}

/// The span a delivery is handled and settled in; see the [module docs](crate::consumer).
fn delivery_span(delivery: &Delivery) -> tracing::Span {
    let event = delivery.event();
    let info = delivery.info();
    let trace = event.traceparent().and_then(TraceParent::parse);
    let span = tracing::info_span!(
        "delivery",
        event_id = %event.id,
        event_type = %event.ty,
        topic = %info.topic,
        group = %info.group,
        attempt = info.attempt,
        offset = info.offset,
        correlation_id = event.correlation_id(),
        trace_id = trace.as_ref().map(TraceParent::trace_id),
    );
    if !span.is_disabled() {
        if let Some(trace) = &trace {
            let _ = span.set_parent(otel::context_of(trace));
        }
        otel::set_event_attributes(
            &span,
            event,
            &info.topic,
            Some(&info.group),
            Some(info.attempt),
        );
    }
    span
}

/// Acks a re-driven dead letter meant for another group without handling it.
async fn skip(delivery: Delivery, _permit: OwnedSemaphorePermit) {
    async {
        let redriven_for = delivery.event().extension_str(REDRIVEN_FOR).unwrap_or("");
        match delivery.ack().await {
            Ok(()) => tracing::debug!(
                redriven_for,
                "re-driven dead letter for another group; acked without handling"
            ),
            Err(error) => tracing::warn!(
                redriven_for,
                %error,
                "ack of a re-driven dead letter for another group failed; the bus will redeliver the event"
            ),
        }
    }
    .instrument(delivery_span(&delivery))
    .await
}

/// Handles one delivery and settles it, holding a concurrency permit throughout.
async fn process<H: Handler>(
    shared: Arc<Shared<H>>,
    delivery: Delivery,
    abandon: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let msg = Message::new(delivery.event_arc().clone(), delivery.info().clone());
    let span = delivery_span(&delivery);
    async move {
        tracing::debug!("handling");
        let started = Instant::now();
        let call = AssertUnwindSafe(shared.handler.handle(&msg)).catch_unwind();
        let result = tokio::select! {
            biased;
            result = call => {
                shared.stats.observe_handler(started.elapsed());
                result
            }
            _ = abandon.cancelled() => {
                tracing::warn!(
                    event_id = %msg.event().id,
                    "handler still running at the end of the grace period; left unacked for redelivery"
                );
                Counters::bump(&shared.stats.counters().unfinished, 1);
                return;
            }
        };
        let result = result.unwrap_or_else(|panic| {
            Counters::bump(&shared.stats.counters().panicked, 1);
            Err(HandlerError::transient(format!(
                "handler panicked: {}",
                panic_message(panic.as_ref())
            )))
        });
        settle(&shared, &delivery, &msg, result).await;
    }
    .instrument(span)
    .await
}

/// Publishes and acks a success; nacks or dead-letters a failure.
async fn settle<H>(
    shared: &Shared<H>,
    delivery: &Delivery,
    msg: &Message,
    result: Result<Vec<Outgoing>, HandlerError>,
) {
    let counters = shared.stats.counters();
    let event = msg.event();
    let error = match result {
        Ok(outgoing) => {
            let (published, publish_result) =
                publish_outgoing(shared.publisher.as_ref(), outgoing).await;
            Counters::bump(&counters.published, published);
            match publish_result {
                Ok(()) => {
                    match delivery.ack().await {
                        Ok(()) => {
                            Counters::bump(&counters.acked, 1);
                            shared
                                .stats
                                .count_event(msg.topic(), &event.ty, Outcome::Acked);
                            tracing::debug!(
                                event_id = %event.id,
                                event_type = %event.ty,
                                topic = %msg.topic(),
                                group = %msg.group(),
                                attempt = msg.attempt(),
                                published,
                                "handled and acked"
                            );
                        }
                        Err(error) => {
                            Counters::bump(&counters.settle_failed, 1);
                            tracing::warn!(
                                event_id = %event.id,
                                event_type = %event.ty,
                                topic = %msg.topic(),
                                group = %msg.group(),
                                attempt = msg.attempt(),
                                %error,
                                "ack failed; the bus will redeliver the event"
                            );
                        }
                    }
                    return;
                }
                Err(error) if error.is_user_error() => {
                    HandlerError::permanent(format!("publishing outgoing events failed: {error}"))
                        .with_reason("invalid outgoing event")
                }
                Err(error) => {
                    HandlerError::transient(format!("publishing outgoing events failed: {error}"))
                }
            }
        }
        Err(error) => error,
    };

    let decision = shared
        .redelivery
        .decide(msg.info(), shared.max_deliveries, &error);
    let (settled, counter, outcome) = match decision {
        FailureDecision::Nack { delay, error: text } => {
            tracing::warn!(
                event_id = %event.id,
                event_type = %event.ty,
                topic = %msg.topic(),
                group = %msg.group(),
                attempt = msg.attempt(),
                error = %text,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "handler failed; nacking for redelivery"
            );
            (
                delivery.nack(delay, Some(text)).await,
                &counters.nacked,
                Outcome::Nacked,
            )
        }
        FailureDecision::DeadLetter(why) => {
            tracing::error!(
                event_id = %event.id,
                event_type = %event.ty,
                topic = %msg.topic(),
                group = %msg.group(),
                attempt = msg.attempt(),
                reason = %why.reason,
                error = why.error.as_deref().unwrap_or(""),
                "handler failed; dead-lettering"
            );
            (
                delivery.dead_letter(why).await,
                &counters.dead_lettered,
                Outcome::DeadLettered,
            )
        }
    };
    match settled {
        Ok(()) => {
            Counters::bump(counter, 1);
            shared.stats.count_event(msg.topic(), &event.ty, outcome);
        }
        Err(error) => {
            Counters::bump(&counters.settle_failed, 1);
            tracing::warn!(
                event_id = %event.id,
                topic = %msg.topic(),
                group = %msg.group(),
                attempt = msg.attempt(),
                %error,
                "nack or dead-letter failed; the bus will redeliver the event"
            );
        }
    }
}

/// Publishes `outgoing` as one batch per topic, topics in order of first appearance.
/// Returns how many were published, and the first error (later topics are not tried).
async fn publish_outgoing(
    publisher: &dyn Publisher,
    outgoing: Vec<Outgoing>,
) -> (u64, Result<(), BusError>) {
    let mut by_topic: Vec<(String, Vec<Event>)> = Vec::new();
    for out in outgoing {
        match by_topic.iter_mut().find(|(topic, _)| *topic == out.topic) {
            Some((_, events)) => events.push(out.event),
            None => by_topic.push((out.topic, vec![out.event])),
        }
    }
    let mut published = 0u64;
    for (topic, mut events) in by_topic {
        let n = events.len() as u64;
        // One `publish` span per event, open until the batch is published.
        let _spans: Vec<tracing::Span> = events
            .iter_mut()
            .map(|event| otel::publish_span(event, &topic))
            .collect();
        if let Err(error) = publisher.publish_batch(&topic, events).await {
            return (published, Err(error));
        }
        published += n;
    }
    (published, Ok(()))
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_messages_are_read_from_str_and_string_payloads() {
        let p: Box<dyn Any + Send> = Box::new("boom");
        assert_eq!(panic_message(p.as_ref()), "boom");
        let p: Box<dyn Any + Send> = Box::new(String::from("bang"));
        assert_eq!(panic_message(p.as_ref()), "bang");
        let p: Box<dyn Any + Send> = Box::new(42);
        assert_eq!(panic_message(p.as_ref()), "a non-string panic payload");
    }

    /// The stats taken before `run` count while it runs, by outcome, event type and handler
    /// duration, and end equal to the run's summary.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stats_are_live_while_the_consumer_runs() {
        use ovasabi_core::StartFrom;
        let dir = tempfile::tempdir().unwrap();
        let bus = Arc::new(
            ovasabi_embedded::EmbeddedBus::open(ovasabi_embedded::EmbeddedConfig::new(dir.path()))
                .await
                .unwrap(),
        );
        for (id, ty) in [("e1", "good"), ("e2", "good"), ("e3", "bad")] {
            bus.publish("stats.events", Event::new(ty, "/test").with_id(id))
                .await
                .unwrap();
        }
        let options = SubscribeOptions::new("stats", ["stats.events"])
            .unwrap()
            .start(StartFrom::Beginning);
        let handler = crate::handler_fn(|msg: Message| async move {
            if msg.event().ty == "bad" {
                Err(HandlerError::permanent("bad event"))
            } else {
                Ok(Vec::new())
            }
        });
        let consumer = Consumer::on_bus(bus.clone(), options, handler);
        let stats = consumer.stats();
        let shutdown = CancellationToken::new();
        let run = tokio::spawn(consumer.run(shutdown.clone()));
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !(stats.snapshot().acked == 2 && stats.snapshot().dead_lettered == 1) {
            assert!(std::time::Instant::now() < deadline, "{stats:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let live = stats.snapshot();
        assert_eq!((live.received, live.nacked), (3, 0));
        assert_eq!(stats.handler_duration().count, 3);
        let by_event = stats.by_event();
        assert_eq!(by_event.len(), 2, "{by_event:?}");
        assert_eq!(
            (by_event[0].event_type.as_str(), by_event[0].dead_lettered),
            ("bad", 1)
        );
        assert_eq!(
            (
                by_event[1].event_type.as_str(),
                by_event[1].received,
                by_event[1].acked
            ),
            ("good", 2, 2)
        );
        shutdown.cancel();
        let summary = run.await.unwrap().unwrap();
        assert_eq!(summary, stats.snapshot());
        bus.close().await.unwrap();
    }
}
