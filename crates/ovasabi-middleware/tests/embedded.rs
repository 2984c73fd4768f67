//! End to end on the embedded bus: a [`Consumer`] with layers handles events, publishes
//! derived events carrying correlation, causation and trace context, retries then
//! dead-letters a poison event, and a graceful shutdown mid-stream loses nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ovasabi_core::{Bus, Event, Publisher, StartFrom, SubscribeOptions, Subscriber};
use ovasabi_embedded::{EmbeddedBus, EmbeddedConfig};
use ovasabi_middleware::{
    handler_fn, ConstantBackoff, Consumer, HandlerBuilder, HandlerError, Message, Outgoing,
    RedeliveryPolicy, TraceParent,
};
use tokio_util::sync::CancellationToken;

const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

async fn open(dir: &tempfile::TempDir) -> Arc<EmbeddedBus> {
    Arc::new(
        EmbeddedBus::open(EmbeddedConfig::new(dir.path()))
            .await
            .unwrap(),
    )
}

/// The next offset of `topic` and the lag of `group` in it (0, 0 if unknown).
async fn counts(bus: &EmbeddedBus, topic: &str, group: &str) -> (u64, u64) {
    let topics = bus.topics().await.unwrap();
    let Some(t) = topics.iter().find(|t| t.topic == topic) else {
        return (0, 0);
    };
    let lag = t
        .groups
        .iter()
        .find(|g| g.group == group)
        .map_or(t.next_offset, |g| g.lag);
    (t.next_offset, lag)
}

/// Waits (up to 20 s) until `$cond`, an expression that may `.await`, holds.
macro_rules! wait_for {
    ($what:expr, $cond:expr) => {{
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if $cond {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting until {}",
                $what
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }};
}

/// Every event in `topic`, read from the start by a fresh ephemeral group.
async fn read_all(bus: &EmbeddedBus, topic: &str, expected: usize) -> Vec<Event> {
    let options = SubscribeOptions::new("reader", [topic])
        .unwrap()
        .start(StartFrom::Beginning)
        .ephemeral(true);
    let mut sub = bus.subscribe(options).await.unwrap();
    let mut events = Vec::new();
    while events.len() < expected {
        let delivery = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("the events are there")
            .unwrap()
            .unwrap();
        delivery.ack().await.unwrap();
        events.push(delivery.event().clone());
    }
    sub.close().await;
    events
}

fn shipped(msg: &Message) -> Outgoing {
    Outgoing::new(
        "shipping.events",
        Event::new("order.shipped", "/shipping").with_id(format!("{}-shipped", msg.event().id)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layered_handlers_derive_events_retry_and_dead_letter_a_poison_event() {
    let dir = tempfile::tempdir().unwrap();
    let bus = open(&dir).await;

    bus.publish(
        "order.events",
        Event::new("order.placed", "/shop")
            .with_id("o-1")
            .with_extension("traceparent", TRACE)
            .with_extension("tracestate", "shop=1"),
    )
    .await
    .unwrap();
    bus.publish(
        "order.events",
        Event::new("order.placed", "/shop")
            .with_id("o-2")
            .with_extension("correlationid", "checkout-9"),
    )
    .await
    .unwrap();
    bus.publish(
        "order.events",
        Event::new("order.placed", "/shop").with_id("o-poison"),
    )
    .await
    .unwrap();
    bus.publish(
        "order.events",
        Event::new("order.placed", "/shop").with_id("o-3"),
    )
    .await
    .unwrap();

    let calls = Arc::new(Mutex::new(HashMap::<String, u32>::new()));
    let seen = calls.clone();
    let handler = HandlerBuilder::new()
        .correlation()
        .trace_context()
        .retry(ConstantBackoff {
            delay: Duration::from_millis(5),
            max_retries: 1,
        })
        .timeout(Duration::from_secs(5))
        .handler(handler_fn(move |msg: Message| {
            *seen
                .lock()
                .unwrap()
                .entry(msg.event().id.clone())
                .or_default() += 1;
            async move {
                if msg.event().id == "o-poison" {
                    return Err(HandlerError::transient("the warehouse rejects o-poison"));
                }
                Ok(vec![shipped(&msg)])
            }
        }));
    let options = SubscribeOptions::new("shipping", ["order.events"])
        .unwrap()
        .max_deliveries(3);
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(
        Consumer::on_bus(bus.clone(), options, handler)
            .concurrency(4)
            .redelivery_policy(RedeliveryPolicy::new(ConstantBackoff {
                delay: Duration::from_millis(20),
                max_retries: u32::MAX,
            }))
            .run(shutdown.clone()),
    );

    wait_for!(
        "3 derived events, 1 dead letter, nothing left",
        counts(&bus, "shipping.events", "-").await.0 == 3
            && counts(&bus, "order.events.dlq", "-").await.0 == 1
            && counts(&bus, "order.events", "shipping").await.1 == 0
    );
    shutdown.cancel();
    let summary = run.await.unwrap().unwrap();

    assert_eq!(summary.acked, 3);
    assert_eq!(summary.nacked, 2, "the poison event's first two deliveries");
    assert_eq!(summary.dead_lettered, 1, "at its third delivery");
    assert_eq!(summary.published, 3);
    assert_eq!(
        calls.lock().unwrap()["o-poison"],
        6,
        "3 deliveries, each tried twice in-process"
    );

    let derived: HashMap<String, Event> = read_all(&bus, "shipping.events", 3)
        .await
        .into_iter()
        .map(|e| (e.id.clone(), e))
        .collect();
    let one = &derived["o-1-shipped"];
    assert_eq!(one.correlation_id(), Some("o-1"));
    assert_eq!(one.causation_id(), Some("o-1"));
    let tp = TraceParent::parse(one.traceparent().unwrap()).unwrap();
    assert_eq!(tp.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(tp.parent_id(), "00f067aa0ba902b7");
    assert_eq!(one.extension_str("tracestate"), Some("shop=1"));

    let two = &derived["o-2-shipped"];
    assert_eq!(two.correlation_id(), Some("checkout-9"));
    assert_eq!(two.causation_id(), Some("o-2"));
    let three = &derived["o-3-shipped"];
    assert_eq!(three.correlation_id(), Some("o-3"));
    let (t2, t3) = (
        TraceParent::parse(two.traceparent().unwrap()).unwrap(),
        TraceParent::parse(three.traceparent().unwrap()).unwrap(),
    );
    assert_ne!(
        t2.trace_id(),
        t3.trace_id(),
        "untraced inputs start their own traces"
    );

    let dead = read_all(&bus, "order.events.dlq", 1).await;
    assert_eq!(dead[0].id, "o-poison");
    assert_eq!(
        dead[0].extension_str("deadletterreason"),
        Some("max deliveries reached")
    );
    assert_eq!(
        dead[0].extension_str("deadlettererror"),
        Some("the warehouse rejects o-poison")
    );
    assert_eq!(dead[0].extension_str("deadletterattempts"), Some("3"));

    bus.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_mid_stream_loses_nothing() {
    const N: usize = 40;
    const STUCK: &str = "o-3";
    let dir = tempfile::tempdir().unwrap();
    let bus = open(&dir).await;
    let events: Vec<Event> = (0..N)
        .map(|i| Event::new("order.placed", "/shop").with_id(format!("o-{i}")))
        .collect();
    bus.publish_batch("order.events", events).await.unwrap();

    // Which run handled (and had acked) each event.
    let handled = Arc::new(Mutex::new(HashMap::<String, Vec<u32>>::new()));
    let stuck_once = Arc::new(AtomicBool::new(true));
    let make_consumer = |run_no: u32| {
        let (handled, stuck_once) = (handled.clone(), stuck_once.clone());
        let handler =
            HandlerBuilder::new()
                .correlation()
                .handler(handler_fn(move |msg: Message| {
                    let (handled, stuck_once) = (handled.clone(), stuck_once.clone());
                    async move {
                        let id = msg.event().id.clone();
                        if id == STUCK && stuck_once.swap(false, Ordering::SeqCst) {
                            // Far longer than the grace period: abandoned at shutdown.
                            tokio::time::sleep(Duration::from_secs(60)).await;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        handled.lock().unwrap().entry(id).or_default().push(run_no);
                        Ok(vec![shipped(&msg)])
                    }
                }));
        Consumer::on_bus(
            bus.clone(),
            SubscribeOptions::new("shipping", ["order.events"]).unwrap(),
            handler,
        )
        .concurrency(4)
        .shutdown_grace(Duration::from_millis(300))
    };

    // Run 1: shut down mid-stream, with the stuck handler running.
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(make_consumer(1).run(shutdown.clone()));
    wait_for!(
        "some events are handled",
        handled.lock().unwrap().len() >= 10
    );
    shutdown.cancel();
    let first = run.await.unwrap().unwrap();
    assert!(first.acked >= 10 && (first.acked as usize) < N, "{first:?}");
    assert_eq!(
        first.unfinished, 1,
        "the stuck handler was abandoned: {first:?}"
    );
    assert_eq!(first.received, first.acked + first.unfinished, "{first:?}");
    assert!(!handled.lock().unwrap().contains_key(STUCK));

    // Run 2 picks up everything not acked, the abandoned event included.
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(make_consumer(2).run(shutdown.clone()));
    wait_for!(
        "the group has caught up",
        counts(&bus, "order.events", "shipping").await.1 == 0
    );
    shutdown.cancel();
    let second = run.await.unwrap().unwrap();

    assert_eq!(first.acked + second.acked, N as u64);
    let handled = handled.lock().unwrap().clone();
    assert_eq!(handled.len(), N, "every event was handled");
    assert!(
        handled.values().all(|runs| runs.len() == 1),
        "and only once, since shutdown only abandons unfinished handlers: {handled:?}"
    );
    assert_eq!(handled[STUCK], [2]);

    // Every derived event was published once, by the run that acked its input.
    let derived = read_all(&bus, "shipping.events", N).await;
    let mut ids: Vec<String> = derived.into_iter().map(|e| e.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), N);
    assert_eq!(counts(&bus, "shipping.events", "-").await.0, N as u64);

    bus.close().await.unwrap();
}
