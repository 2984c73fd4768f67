//! Re-driven dead letters on the embedded bus: an event carrying `redrivenfor=<group>`
//! reaches the handler of that group only; the other groups ack it unhandled.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ovasabi_core::{Bus, Event, Publisher, StartFrom, SubscribeOptions};
use ovasabi_embedded::{EmbeddedBus, EmbeddedConfig};
use ovasabi_middleware::{handler_fn, Consumer, Message, RunSummary, REDRIVEN_FOR};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const TOPIC: &str = "redrive.events";

/// The ids of the events a handler was called with.
type Handled = Arc<Mutex<Vec<String>>>;
/// A consumer's run.
type Run = JoinHandle<Result<RunSummary, ovasabi_core::BusError>>;

/// Runs a consumer of `group` on [`TOPIC`] from the beginning, recording the ids it handles.
fn consume(bus: &Arc<EmbeddedBus>, group: &str, shutdown: &CancellationToken) -> (Handled, Run) {
    let handled = Arc::new(Mutex::new(Vec::new()));
    let seen = handled.clone();
    let handler = handler_fn(move |msg: Message| {
        seen.lock().unwrap().push(msg.event().id.clone());
        async move { Ok(Vec::new()) }
    });
    let options = SubscribeOptions::new(group, [TOPIC])
        .unwrap()
        .start(StartFrom::Beginning);
    let run = tokio::spawn(Consumer::on_bus(bus.clone(), options, handler).run(shutdown.clone()));
    (handled, run)
}

/// The lag of `group` in [`TOPIC`] (`None` until the group exists).
async fn lag(bus: &EmbeddedBus, group: &str) -> Option<u64> {
    let topics = bus.topics().await.unwrap();
    let topic = topics.iter().find(|t| t.topic == TOPIC)?;
    topic
        .groups
        .iter()
        .find(|g| g.group == group)
        .map(|g| g.lag)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redriven_dead_letter_reaches_only_the_group_it_is_redriven_for() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Arc::new(
        EmbeddedBus::open(EmbeddedConfig::new(dir.path()))
            .await
            .unwrap(),
    );
    bus.publish(
        TOPIC,
        Event::new("thing.happened", "/test").with_id("plain"),
    )
    .await
    .unwrap();
    bus.publish(
        TOPIC,
        Event::new("thing.happened", "/test")
            .with_id("for-a")
            .with_extension(REDRIVEN_FOR, "a"),
    )
    .await
    .unwrap();
    bus.publish(TOPIC, Event::new("thing.happened", "/test").with_id("last"))
        .await
        .unwrap();

    let shutdown = CancellationToken::new();
    let (handled_a, run_a) = consume(&bus, "a", &shutdown);
    let (handled_b, run_b) = consume(&bus, "b", &shutdown);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !(lag(&bus, "a").await == Some(0) && lag(&bus, "b").await == Some(0)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the groups did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    let (a, b) = (run_a.await.unwrap().unwrap(), run_b.await.unwrap().unwrap());

    let mut got_a = handled_a.lock().unwrap().clone();
    got_a.sort();
    assert_eq!(got_a, ["for-a", "last", "plain"]);
    let mut got_b = handled_b.lock().unwrap().clone();
    got_b.sort();
    assert_eq!(got_b, ["last", "plain"], "b acks the one for a unhandled");
    assert_eq!((a.received, a.acked), (3, 3), "{a:?}");
    assert_eq!(
        (b.received, b.acked, b.nacked, b.dead_lettered),
        (2, 2, 0, 0),
        "the skipped event is neither received nor failed: {b:?}"
    );
    bus.close().await.unwrap();
}
