//! The consumer's decisions, checked against a recording test double of the bus
//! (`support::RecordingBus`): what it publishes, acks, nacks and dead-letters, in what order,
//! and what it leaves for redelivery on shutdown.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ovasabi_core::{BusError, DeadLetter, Event, SubscribeOptions};
use ovasabi_middleware::{
    handler_fn, ConstantBackoff, Consumer, Handler, HandlerBuilder, HandlerError, Message,
    Outgoing, RedeliveryPolicy, RunSummary,
};
use support::{Record, RecordingBus};
use tokio_util::sync::CancellationToken;

const REDELIVERY_DELAY: Duration = Duration::from_secs(3);

fn options(max_deliveries: u32) -> SubscribeOptions {
    SubscribeOptions::new("test-group", ["order.events"])
        .unwrap()
        .max_deliveries(max_deliveries)
}

fn order(id: &str) -> Event {
    Event::new("order.placed", "/shop").with_id(id)
}

fn shipped(msg: &Message) -> Outgoing {
    Outgoing::new(
        "shipping.events",
        Event::new("order.shipped", "/shipping").with_id(format!("{}-shipped", msg.event().id)),
    )
}

fn consumer<H: Handler>(bus: &RecordingBus, max_deliveries: u32, handler: H) -> Consumer<H> {
    Consumer::new(
        bus.subscriber(),
        bus.publisher(),
        options(max_deliveries),
        handler,
    )
    .redelivery_policy(RedeliveryPolicy::new(ConstantBackoff {
        delay: REDELIVERY_DELAY,
        max_retries: u32::MAX,
    }))
}

async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..100_000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Runs `consumer` until the bus's input is drained and every handler has finished.
async fn run_to_end<H: Handler>(bus: &RecordingBus, consumer: Consumer<H>) -> RunSummary {
    bus.end_input();
    consumer.run(CancellationToken::new()).await.unwrap()
}

fn dead(offset: u64, attempt: u32, reason: &str, error: &str) -> Record {
    Record::DeadLettered {
        offset,
        attempt,
        why: DeadLetter {
            reason: reason.into(),
            error: Some(error.into()),
        },
    }
}

fn nacked(offset: u64, attempt: u32, error: &str) -> Record {
    Record::Nacked {
        offset,
        attempt,
        delay: REDELIVERY_DELAY,
        error: Some(error.into()),
    }
}

#[tokio::test]
async fn outgoing_events_are_published_per_topic_before_the_input_is_acked() {
    let bus = RecordingBus::new();
    bus.deliver("order.events", order("o-1"));
    let handler = handler_fn(|msg: Message| async move {
        let id = &msg.event().id;
        let ev = |ty: &str, suffix: &str| Event::new(ty, "/svc").with_id(format!("{id}-{suffix}"));
        Ok(vec![
            Outgoing::new("shipping.events", ev("order.shipped", "shipped")),
            Outgoing::new("billing.events", ev("invoice.created", "invoice")),
            Outgoing::new("shipping.events", ev("parcel.labelled", "label")),
        ])
    });

    let summary = run_to_end(&bus, consumer(&bus, 5, handler)).await;

    assert_eq!(
        bus.timeline(),
        [
            Record::Published {
                topic: "shipping.events".into(),
                ids: vec!["o-1-shipped".into(), "o-1-label".into()],
            },
            Record::Published {
                topic: "billing.events".into(),
                ids: vec!["o-1-invoice".into()],
            },
            Record::Acked {
                offset: 0,
                attempt: 1
            },
        ]
    );
    assert_eq!(
        (summary.received, summary.acked, summary.published),
        (1, 1, 3)
    );
    assert_eq!(bus.subscribed()[0].group, "test-group");
}

#[tokio::test]
async fn a_handler_with_nothing_to_say_is_just_acked() {
    let bus = RecordingBus::new();
    bus.deliver("order.events", order("o-1"));
    bus.deliver("order.events", order("o-2"));
    let summary = run_to_end(
        &bus,
        consumer(&bus, 5, handler_fn(|_msg: Message| async { Ok(vec![]) })),
    )
    .await;
    let mut acked = bus.acked();
    acked.sort();
    assert_eq!(acked, [0, 1]);
    assert_eq!(summary.published, 0);
    assert!(bus
        .timeline()
        .iter()
        .all(|r| matches!(r, Record::Acked { .. })));
}

#[tokio::test(start_paused = true)]
async fn transient_failures_are_nacked_then_dead_lettered_when_deliveries_run_out() {
    let bus = RecordingBus::new();
    bus.redeliver_nacks(true);
    bus.deliver("order.events", order("o-1"));
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let handler = handler_fn(move |_msg: Message| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Err(HandlerError::transient("warehouse down")) }
    });
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(consumer(&bus, 3, handler).run(shutdown.clone()));

    wait_until("the event is dead-lettered", || {
        bus.timeline()
            .iter()
            .any(|r| matches!(r, Record::DeadLettered { .. }))
    })
    .await;
    shutdown.cancel();
    let summary = run.await.unwrap().unwrap();

    assert_eq!(
        bus.timeline(),
        [
            nacked(0, 1, "warehouse down"),
            nacked(0, 2, "warehouse down"),
            dead(0, 3, "max deliveries reached", "warehouse down"),
        ]
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        (summary.received, summary.nacked, summary.dead_lettered),
        (3, 2, 1)
    );
}

#[tokio::test]
async fn permanent_failures_are_dead_lettered_at_once() {
    let bus = RecordingBus::new();
    bus.deliver("order.events", order("o-1"));
    let handler = handler_fn(|_msg: Message| async {
        Err(HandlerError::invalid_payload("`items` is missing"))
    });
    let summary = run_to_end(&bus, consumer(&bus, 5, handler)).await;
    assert_eq!(
        bus.timeline(),
        [dead(0, 1, "invalid payload", "`items` is missing")]
    );
    assert_eq!(summary.dead_lettered, 1);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_handler_fails_its_delivery_and_the_consumer_goes_on() {
    let bus = RecordingBus::new();
    bus.redeliver_nacks(true);
    bus.deliver("order.events", order("boom"));
    bus.deliver("order.events", order("fine"));
    let handler = handler_fn(|msg: Message| async move {
        if msg.event().id == "boom" && msg.attempt() == 1 {
            panic!("boom at attempt 1");
        }
        Ok(vec![shipped(&msg)])
    });
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(
        consumer(&bus, 5, handler)
            .concurrency(1)
            .run(shutdown.clone()),
    );
    wait_until("both events are acked", || bus.acked().len() == 2).await;
    shutdown.cancel();
    let summary = run.await.unwrap().unwrap();

    let timeline = bus.timeline();
    assert_eq!(
        timeline[0],
        nacked(0, 1, "handler panicked: boom at attempt 1")
    );
    assert!(timeline.contains(&Record::Acked {
        offset: 0,
        attempt: 2
    }));
    assert!(timeline.contains(&Record::Acked {
        offset: 1,
        attempt: 1
    }));
    assert_eq!((summary.panicked, summary.nacked, summary.acked), (1, 1, 2));
}

#[tokio::test(start_paused = true)]
async fn a_failed_publish_is_a_transient_failure_and_redelivery_republishes_the_same_events() {
    let bus = RecordingBus::new();
    bus.redeliver_nacks(true);
    bus.fail_publishes([BusError::Unavailable("broker down".into())]);
    bus.deliver("order.events", order("o-1"));
    let shutdown = CancellationToken::new();
    let handler = handler_fn(|msg: Message| async move { Ok(vec![shipped(&msg)]) });
    let run = tokio::spawn(consumer(&bus, 5, handler).run(shutdown.clone()));
    wait_until("the event is acked", || !bus.acked().is_empty()).await;
    shutdown.cancel();
    let summary = run.await.unwrap().unwrap();

    assert_eq!(
        bus.timeline(),
        [
            nacked(
                0,
                1,
                "publishing outgoing events failed: broker unavailable: broker down"
            ),
            Record::Published {
                topic: "shipping.events".into(),
                ids: vec!["o-1-shipped".into()],
            },
            Record::Acked {
                offset: 0,
                attempt: 2
            },
        ]
    );
    assert_eq!(
        (summary.nacked, summary.acked, summary.published),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn an_invalid_outgoing_event_dead_letters_the_input() {
    let bus = RecordingBus::new();
    bus.deliver("order.events", order("o-1"));
    let handler = handler_fn(|_msg: Message| async {
        Ok(vec![Outgoing::new(
            "shipping.events",
            Event::new("order.shipped", "/shipping").with_id(""),
        )])
    });
    let summary = run_to_end(&bus, consumer(&bus, 5, handler)).await;
    let timeline = bus.timeline();
    let [Record::DeadLettered {
        offset: 0,
        attempt: 1,
        why,
    }] = timeline.as_slice()
    else {
        panic!("{timeline:?}");
    };
    assert_eq!(why.reason, "invalid outgoing event");
    assert!(
        why.error
            .as_deref()
            .unwrap()
            .starts_with("publishing outgoing events failed: invalid event"),
        "{why:?}"
    );
    assert_eq!(summary.dead_lettered, 1);
}

#[tokio::test(start_paused = true)]
async fn at_most_concurrency_handlers_run_at_once() {
    let bus = RecordingBus::new();
    for i in 0..10 {
        bus.deliver("order.events", order(&format!("o-{i}")));
    }
    let running = Arc::new(AtomicU32::new(0));
    let peak = Arc::new(AtomicU32::new(0));
    let (r, p) = (running.clone(), peak.clone());
    let handler = handler_fn(move |_msg: Message| {
        let (running, peak) = (r.clone(), p.clone());
        async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
            running.fetch_sub(1, Ordering::SeqCst);
            Ok(vec![])
        }
    });
    let summary = run_to_end(&bus, consumer(&bus, 5, handler).concurrency(3)).await;
    assert_eq!(peak.load(Ordering::SeqCst), 3);
    assert_eq!(summary.acked, 10);
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_running_handlers_finish_leaves_stuck_ones_unacked_and_loses_nothing() {
    let bus = RecordingBus::new();
    bus.deliver("order.events", order("fast")); // offset 0
    bus.deliver("order.events", order("stuck")); // offset 1
    bus.deliver("order.events", order("later")); // offset 2

    let started = Arc::new(AtomicU32::new(0));
    let handled = Arc::new(Mutex::new(Vec::new()));
    let make_handler = || {
        let (started, handled) = (started.clone(), handled.clone());
        handler_fn(move |msg: Message| {
            let (started, handled) = (started.clone(), handled.clone());
            async move {
                started.fetch_add(1, Ordering::SeqCst);
                let wait = match (msg.event().id.as_str(), msg.attempt()) {
                    ("fast", _) => Duration::from_millis(100),
                    ("stuck", 1) => Duration::from_secs(3600),
                    _ => Duration::from_millis(10),
                };
                tokio::time::sleep(wait).await;
                handled
                    .lock()
                    .unwrap()
                    .push((msg.event().id.clone(), msg.attempt()));
                Ok(vec![shipped(&msg)])
            }
        })
    };

    // First run: two handlers start, then shutdown is asked for.
    let shutdown = CancellationToken::new();
    let first = consumer(&bus, 5, make_handler())
        .concurrency(2)
        .shutdown_grace(Duration::from_secs(1));
    let run = tokio::spawn(first.run(shutdown.clone()));
    wait_until("two handlers run", || started.load(Ordering::SeqCst) == 2).await;
    let asked = tokio::time::Instant::now();
    shutdown.cancel();
    let summary = run.await.unwrap().unwrap();

    // `fast` finished within the grace period and was published and acked; `stuck` was
    // abandoned at its end, unacked; `later` was never taken.
    assert_eq!(asked.elapsed(), Duration::from_secs(1));
    assert_eq!(
        bus.timeline(),
        [
            Record::Published {
                topic: "shipping.events".into(),
                ids: vec!["fast-shipped".into()],
            },
            Record::Acked {
                offset: 0,
                attempt: 1
            },
        ]
    );
    assert_eq!(
        (summary.received, summary.acked, summary.unfinished),
        (2, 1, 1)
    );
    assert_eq!(bus.unsettled(), [(1, 1)]);

    // The ack timeout passes: the bus delivers `stuck` again. A second run handles the rest.
    assert_eq!(bus.redeliver_unsettled(), [1]);
    let summary = run_to_end(&bus, consumer(&bus, 5, make_handler()).concurrency(2)).await;
    assert_eq!((summary.received, summary.acked), (2, 2));

    let mut acked = bus.acked();
    acked.sort();
    assert_eq!(acked, [0, 1, 2], "every event handled and acked");
    assert!(bus.unsettled().is_empty());
    let mut handled = handled.lock().unwrap().clone();
    handled.sort();
    assert_eq!(
        handled,
        [
            ("fast".to_owned(), 1),
            ("later".to_owned(), 1),
            ("stuck".to_owned(), 2)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn handlers_finishing_within_the_grace_period_are_acked_after_shutdown() {
    let bus = RecordingBus::new();
    for i in 0..4 {
        bus.deliver("order.events", order(&format!("o-{i}")));
    }
    let started = Arc::new(AtomicU32::new(0));
    let s = started.clone();
    let handler = handler_fn(move |msg: Message| {
        s.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Ok(vec![shipped(&msg)])
        }
    });
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(
        consumer(&bus, 5, handler)
            .concurrency(4)
            .shutdown_grace(Duration::from_secs(2))
            .run(shutdown.clone()),
    );
    wait_until("four handlers run", || started.load(Ordering::SeqCst) == 4).await;
    let asked = tokio::time::Instant::now();
    shutdown.cancel();
    let summary = run.await.unwrap().unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "it did not wait out the grace"
    );
    assert_eq!(
        (summary.acked, summary.published, summary.unfinished),
        (4, 4, 0)
    );
    assert!(bus.unsettled().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_failing_subscription_ends_the_run_with_its_error_after_draining() {
    let bus = RecordingBus::new();
    bus.deliver("order.events", order("o-0"));
    let started = Arc::new(AtomicU32::new(0));
    let s = started.clone();
    let handler = handler_fn(move |_msg: Message| {
        s.fetch_add(1, Ordering::SeqCst);
        async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(vec![])
        }
    });
    let run = tokio::spawn(consumer(&bus, 5, handler).run(CancellationToken::new()));
    wait_until("the first handler runs", || {
        started.load(Ordering::SeqCst) == 1
    })
    .await;
    // The consumer is waiting in `next`: the next delivery goes through, the one after fails.
    bus.fail_next_take(BusError::Storage("disk gone".into()));
    bus.deliver("order.events", order("o-1"));
    let error = run.await.unwrap().unwrap_err();
    assert!(
        matches!(error, BusError::Storage(ref m) if m == "disk gone"),
        "{error}"
    );
    let mut acked = bus.acked();
    acked.sort();
    assert_eq!(
        acked,
        [0, 1],
        "running handlers were drained and acked first"
    );
}

#[tokio::test]
async fn a_refused_ack_is_counted_and_left_for_redelivery() {
    let bus = RecordingBus::new();
    bus.fail_acks(1);
    bus.deliver("order.events", order("o-0"));
    let handler = handler_fn(|_msg: Message| async { Ok(vec![]) });
    let summary = run_to_end(&bus, consumer(&bus, 5, handler).concurrency(1)).await;
    assert_eq!(
        (summary.received, summary.settle_failed, summary.acked),
        (1, 1, 0)
    );
    assert_eq!(bus.unsettled(), [(0, 1)]);
}

#[tokio::test(start_paused = true)]
async fn layers_run_inside_the_consumer() {
    let bus = RecordingBus::new();
    bus.deliver(
        "order.events",
        order("o-1").with_extension("correlationid", "checkout-7"),
    );
    let failed_once = Arc::new(AtomicBool::new(false));
    let f = failed_once.clone();
    let handler = HandlerBuilder::new()
        .correlation()
        .trace_context()
        .retry(ConstantBackoff {
            delay: Duration::from_millis(10),
            max_retries: 2,
        })
        .timeout(Duration::from_secs(1))
        .handler(handler_fn(move |msg: Message| {
            let first = !f.swap(true, Ordering::SeqCst);
            async move {
                if first {
                    return Err(HandlerError::transient("blip"));
                }
                Ok(vec![shipped(&msg)])
            }
        }));
    let summary = run_to_end(&bus, consumer(&bus, 5, handler)).await;
    assert_eq!(summary.acked, 1);
    assert_eq!(summary.nacked, 0, "the blip was retried in-process");
    let published = bus.published();
    let (_, event) = &published[0];
    assert_eq!(event.correlation_id(), Some("checkout-7"));
    assert_eq!(event.causation_id(), Some("o-1"));
    assert!(event.traceparent().is_some());
}
