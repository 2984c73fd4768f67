//! Crash tests: SIGKILL the `ovasabi` process at random moments and check the bus kept its
//! promises: every event whose publish returned is stored, once; no event whose ack returned
//! is delivered to that group again.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ovasabi_core::{Bus, Publisher as _, SubscribeOptions, Subscriber};
use ovasabi_embedded::{EmbeddedBus, EmbeddedConfig};
use rand::Rng;

const KILLS: usize = 25;

/// A running `ovasabi` whose output is read as it comes (a full pipe would stall it).
struct Running {
    child: Child,
    stdout: std::thread::JoinHandle<String>,
    stderr: std::thread::JoinHandle<String>,
}

fn ovasabi(dir: &Path, args: &[&str]) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ovasabi"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ovasabi");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    Running {
        child,
        stdout: std::thread::spawn(move || {
            let mut text = String::new();
            let _ = out.read_to_string(&mut text);
            text
        }),
        stderr: std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        }),
    }
}

/// Kills `child` with SIGKILL after `after`, and returns the complete lines it printed.
fn kill_after(mut running: Running, after: Duration) -> Vec<String> {
    std::thread::sleep(after);
    running.child.kill().expect("SIGKILL"); // Child::kill sends SIGKILL on Unix
    let _ = running.child.wait();
    let out = running.stdout.join().unwrap();
    let err = running.stderr.join().unwrap();
    assert!(!err.contains("panicked"), "the process panicked: {err}");
    // A line cut by the kill has no newline: it was not fully printed, so it is not counted.
    let complete = out.rfind('\n').map_or("", |i| &out[..i]);
    complete
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Every stored event id of `topic`, with how many times it is stored.
async fn stored_ids(dir: &Path, topic: &str) -> HashMap<String, usize> {
    let bus = EmbeddedBus::open(EmbeddedConfig::new(dir))
        .await
        .expect("reopen after kill");
    let retained = bus
        .topics()
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.topic == topic)
        .map_or(0, |t| t.retained);
    let mut counts = HashMap::new();
    if retained > 0 {
        // Deliveries of different partition keys may come in any order: count them all.
        let options = SubscribeOptions::new("crash-check", [topic])
            .unwrap()
            .ephemeral(true);
        let mut sub = bus.subscribe(options).await.unwrap();
        for _ in 0..retained {
            let d = tokio::time::timeout(Duration::from_secs(10), sub.next())
                .await
                .expect("stored events readable")
                .unwrap()
                .unwrap();
            *counts.entry(d.event().id.clone()).or_insert(0) += 1;
            d.ack().await.unwrap();
        }
    }
    bus_close(bus).await;
    counts
}

async fn bus_close(bus: EmbeddedBus) {
    bus.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_publish_loses_no_returned_publish() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::thread_rng();
    let mut returned: HashSet<String> = HashSet::new();
    for round in 0..KILLS {
        let child = ovasabi(
            dir.path(),
            &["torture", "publish", "--topic", "crash.events"],
        );
        // Random moments, from during start-up to well into steady publishing.
        let after = Duration::from_millis(rng.gen_range(20..400));
        let printed = kill_after(child, after);
        for id in printed {
            assert!(
                returned.insert(id.clone()),
                "round {round}: id {id} printed twice"
            );
        }
    }
    assert!(
        returned.len() > 1000,
        "the publisher got going ({} events)",
        returned.len()
    );
    let stored = stored_ids(dir.path(), "crash.events").await;
    let missing: Vec<&String> = returned
        .iter()
        .filter(|id| !stored.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} returned publishes lost after {KILLS} kills, e.g. {:?}",
        missing.len(),
        returned.len(),
        &missing[..missing.len().min(5)]
    );
    let twice: Vec<(&String, &usize)> = stored.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "events stored more than once: {twice:?}");
    println!(
        "{KILLS} SIGKILLs: {} publishes returned, all stored once ({} stored in all)",
        returned.len(),
        stored.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_consume_never_redelivers_an_acked_event() {
    let dir = tempfile::tempdir().unwrap();
    let total = 20_000u64;
    {
        let bus = EmbeddedBus::open(EmbeddedConfig::new(dir.path()))
            .await
            .unwrap();
        for chunk in 0..(total / 500) {
            let events = (0..500)
                .map(|i| {
                    ovasabi_core::Event::new("torture.published", "/test")
                        .with_json(&serde_json::json!({ "n": chunk * 500 + i }))
                        .with_partition_key(format!("k{}", i % 7))
                })
                .collect();
            bus.publish_batch("consume.events", events).await.unwrap();
        }
        bus_close(bus).await;
    }
    let mut rng = rand::thread_rng();
    let mut acked: HashSet<u64> = HashSet::new();
    for round in 0..KILLS {
        let child = ovasabi(
            dir.path(),
            &[
                "torture",
                "consume",
                "--topic",
                "consume.events",
                "--group",
                "g",
            ],
        );
        let printed = kill_after(child, Duration::from_millis(rng.gen_range(20..300)));
        for line in printed {
            let offset: u64 = line.split(' ').next().unwrap().parse().unwrap();
            assert!(
                acked.insert(offset),
                "round {round}: offset {offset} delivered again after its ack returned"
            );
        }
    }
    // Finish: what is left arrives, and nothing acked before. (A kill between an ack and its
    // printed line leaves an acked event unprinted: at most one per kill.)
    let child = ovasabi(
        dir.path(),
        &[
            "torture",
            "consume",
            "--topic",
            "consume.events",
            "--group",
            "g",
        ],
    );
    for _ in 0..240 {
        if lag(dir.path()).await == Some(0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let printed = kill_after(child, Duration::ZERO);
    for line in printed {
        let offset: u64 = line.split(' ').next().unwrap().parse().unwrap();
        assert!(
            acked.insert(offset),
            "offset {offset} delivered again after its ack returned"
        );
    }
    assert!(
        acked.len() as u64 + KILLS as u64 >= total,
        "only {} of {total} events consumed",
        acked.len()
    );
    assert_eq!(
        lag(dir.path()).await,
        Some(0),
        "the group acked every event"
    );
}

/// The group `g`'s lag on `consume.events`, read from the stored position without opening the
/// bus (the consumer process holds it): `None` while unreadable.
async fn lag(dir: &Path) -> Option<u64> {
    let conn = rusqlite::Connection::open_with_flags(
        dir.join("bus.sqlite3"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .ok()?;
    let (cursor, next): (i64, i64) = conn
        .query_row(
            "SELECT p.cursor, (SELECT MAX(offset) + 1 FROM log_1) FROM positions p WHERE p.grp = 'g'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .ok()?;
    Some((next - cursor) as u64)
}
