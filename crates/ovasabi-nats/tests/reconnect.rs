//! The reconnect scenario: 10,000 events from 100 concurrent publishers while the NATS server
//! is restarted; every event reaches the consumer group.
//!
//! The test stops and starts the local server itself, so it runs only against
//! `nats://127.0.0.1:4222` (or `localhost`) on a machine where it may do so:
//!
//! ```text
//! stop:  start-stop-daemon --stop --oknodo --exec /usr/sbin/nats-server
//!        (then wait until port 4222 is closed)
//! start: start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
//!            -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
//!        (then wait until port 4222 answers)
//! ```
//!
//! A guard restarts the server when the test ends, passed or failed, so the server is left
//! running. Publishers retry a publish that failed with `Unavailable`, keeping the event (its
//! source and id), so the stream's deduplication stores it once; the consumer counts events by
//! id, so redeliveries (acks lost with the connection) are not counted twice.
//!
//! Skipped (with the reason printed) when the server is unreachable or cannot be restarted
//! from here, unless `OVASABI_REQUIRE_SERVICES=1`, where that is a failure.

use std::collections::HashSet;
use std::net::{SocketAddr, TcpStream};
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use ovasabi_core::{Bus, BusError, Event, Publisher, SubscribeOptions, Subscriber};
use ovasabi_nats::testing::{required, server_or_skip, REQUIRE_ENV};
use ovasabi_nats::{NatsBus, NatsConfig};

const EVENTS: usize = 10_000;
const PUBLISHERS: usize = 100;
const SERVER: &str = "/usr/sbin/nats-server";
const PORT: u16 = 4222;

fn port_open() -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], PORT));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

fn wait_port(open: bool, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if port_open() == open {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn stop_server() {
    let status = Command::new("start-stop-daemon")
        .args(["--stop", "--oknodo", "--exec", SERVER])
        .status()
        .expect("running start-stop-daemon --stop");
    assert!(status.success(), "stopping nats-server: {status}");
    assert!(
        wait_port(false, Duration::from_secs(30)),
        "nats-server still listens on {PORT} 30 s after being stopped"
    );
}

fn start_server() {
    let status = Command::new("start-stop-daemon")
        .args([
            "--start",
            "--oknodo",
            "--background",
            "--exec",
            SERVER,
            "--",
        ])
        .args(["-a", "127.0.0.1", "-p", "4222", "-js"])
        .args([
            "-sd",
            "/var/lib/nats-server",
            "-l",
            "/var/log/nats-server.log",
        ])
        .status()
        .expect("running start-stop-daemon --start");
    assert!(status.success(), "starting nats-server: {status}");
    assert!(
        wait_port(true, Duration::from_secs(30)),
        "nats-server does not listen on {PORT} 30 s after being started"
    );
}

/// Starts the server again when dropped, if it is not running: the test never leaves it
/// stopped.
struct ServerGuard;

impl Drop for ServerGuard {
    fn drop(&mut self) {
        if !port_open() {
            let _ = Command::new("start-stop-daemon")
                .args([
                    "--start",
                    "--oknodo",
                    "--background",
                    "--exec",
                    SERVER,
                    "--",
                ])
                .args(["-a", "127.0.0.1", "-p", "4222", "-js"])
                .args([
                    "-sd",
                    "/var/lib/nats-server",
                    "-l",
                    "/var/log/nats-server.log",
                ])
                .status();
            if !wait_port(true, Duration::from_secs(30)) {
                eprintln!("nats-server did not come back on port {PORT}: start it by hand");
            }
        }
    }
}

/// Why this machine's server cannot be restarted by the test, if it cannot.
fn cannot_restart(url: &str) -> Option<String> {
    let local = [
        "nats://127.0.0.1:4222",
        "nats://localhost:4222",
        "127.0.0.1:4222",
        "localhost:4222",
    ];
    if !local.contains(&url.trim()) {
        return Some(format!(
            "the server is {url}, not the local one this test restarts"
        ));
    }
    if !Path::new(SERVER).exists() {
        return Some(format!("{SERVER} is not installed"));
    }
    let daemon = Command::new("start-stop-daemon").arg("--version").output();
    if !daemon.is_ok_and(|o| o.status.success()) {
        return Some("start-stop-daemon is not available".to_owned());
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_across_a_server_restart() {
    let test = "every_event_arrives_across_a_server_restart";
    let Some(server) = server_or_skip(test) else {
        return;
    };
    if let Some(why) = cannot_restart(&server.url) {
        assert!(
            !required(),
            "{test}: {why} ({REQUIRE_ENV}=1 makes that a failure)"
        );
        println!("skipped: {test}: {why}");
        return;
    }
    let guard = ServerGuard;
    let started = Instant::now();
    let config = NatsConfig::new(&server.url).request_timeout(Duration::from_secs(2));
    let bus = NatsBus::connect(config).await.expect("connecting");
    let token = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let topic = format!("test.reconnect.{token}.events");
    let outcome = AssertUnwindSafe(run(bus.clone(), topic.clone()))
        .catch_unwind()
        .await;
    // The server is back (the scenario waits for it); clean up, then restore it if needed.
    let _ = bus.delete_topic(&topic).await;
    let _ = bus.delete_topic(&format!("{topic}.dlq")).await;
    let _ = bus.close().await;
    drop(guard);
    println!("{test}: {:.1?} in all", started.elapsed());
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn run(bus: NatsBus, topic: String) {
    let deadline = Instant::now() + Duration::from_secs(180);
    let options = SubscribeOptions::new("reconnect", [&topic])
        .unwrap()
        .ack_timeout(Duration::from_secs(5))
        .max_deliveries(100);
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let deliveries = Arc::new(AtomicUsize::new(0));
    let mut consumers = Vec::new();
    for _ in 0..2 {
        let mut sub = bus.subscribe(options.clone()).await.expect("subscribing");
        let (seen, deliveries) = (seen.clone(), deliveries.clone());
        consumers.push(tokio::spawn(async move {
            while let Some(item) = sub.next().await {
                let delivery = item.expect("a delivery");
                deliveries.fetch_add(1, AtomicOrdering::Relaxed);
                seen.lock().unwrap().insert(delivery.event().id.clone());
                // An ack lost with the connection only means a redelivery.
                tokio::spawn(async move {
                    let _ = delivery.ack().await;
                });
            }
        }));
    }

    let published = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicUsize::new(0));
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let (bus, topic) = (bus.clone(), topic.clone());
            let (published, retries) = (published.clone(), retries.clone());
            tokio::spawn(async move {
                for i in (p..EVENTS).step_by(PUBLISHERS) {
                    let event = Event::new("test.reconnected", "/tests/reconnect")
                        .with_id(format!("e{i}"))
                        .with_json(&serde_json::json!({ "n": i }));
                    loop {
                        match bus.publish(&topic, event.clone()).await {
                            Ok(_) => break,
                            Err(BusError::Unavailable(why)) => {
                                assert!(Instant::now() < deadline, "event {i} still not published: {why}");
                                retries.fetch_add(1, AtomicOrdering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                            Err(other) => panic!("publishing event {i} failed with `{other}` ({}), not a connection error", other.code()),
                        }
                    }
                    published.fetch_add(1, AtomicOrdering::Relaxed);
                    // Paced, so publishing outlasts the restart (stopping a server with many
                    // streams takes a second or two).
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect();

    // Restart the server once a tenth of the events are in.
    while published.load(AtomicOrdering::Relaxed) < EVENTS / 10 {
        assert!(
            Instant::now() < deadline,
            "publishing stalled before the restart"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let at_stop = published.load(AtomicOrdering::Relaxed);
    let restart = tokio::task::spawn_blocking(|| {
        let began = Instant::now();
        stop_server();
        let stopped = began.elapsed();
        start_server();
        (stopped, began.elapsed())
    });
    let (stopped, restarted) = restart.await.expect("restarting the server");
    let at_start = published.load(AtomicOrdering::Relaxed);
    println!(
        "server stopped after {at_stop} publishes ({stopped:.1?} to stop, {restarted:.1?} until it listened again, {at_start} publishes by then)"
    );
    assert!(
        at_start < EVENTS,
        "all publishes finished before the server was back: the restart did not interrupt publishing"
    );

    for publisher in publishers {
        publisher.await.expect("a publisher");
    }
    println!(
        "all {EVENTS} publishes returned Ok; {} retries after connection errors",
        retries.load(AtomicOrdering::Relaxed)
    );
    loop {
        let got = seen.lock().unwrap().len();
        if got == EVENTS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {got} of {EVENTS} events reached the group within 180 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ids = seen.lock().unwrap().clone();
    assert!((0..EVENTS).all(|i| ids.contains(&format!("e{i}"))));
    println!(
        "every event arrived: {} deliveries for {EVENTS} events",
        deliveries.load(AtomicOrdering::Relaxed)
    );
    // JetStream may still be recovering other streams: ask until it answers.
    let js = ovasabi_nats::async_nats::jetstream::new(bus.client().clone());
    let stream_name = ovasabi_nats::layout::stream_name(&topic);
    let stored = loop {
        match js.get_stream(&stream_name).await {
            Ok(stream) => break stream.cached_info().state.messages,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "reading stream {stream_name}: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(
        stored, EVENTS as u64,
        "deduplication stored each event once"
    );
    for consumer in consumers {
        consumer.abort();
    }
}
