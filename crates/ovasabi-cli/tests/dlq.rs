//! `ovasabi dlq list | show | redrive` on real dead letters of the embedded bus: events
//! published with `ovasabi events publish`, then dead-lettered by two consumer groups of
//! this test process.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use ovasabi_core::bus::DeadLetter;
use ovasabi_core::{Bus as _, SubscribeOptions, Subscriber as _};
use ovasabi_embedded::{EmbeddedBus, EmbeddedConfig};

const TOPIC: &str = "dlqtest.events";

fn ovasabi(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ovasabi"))
        .env_remove("OVASABI_DATA_DIR")
        .env_remove("OVASABI_DB")
        .env_remove("OVASABI_BUS")
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("run ovasabi")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs a command that must succeed; returns its stdout.
fn ok(dir: &Path, args: &[&str]) -> String {
    let out = ovasabi(dir, args);
    assert!(
        out.status.success(),
        "{args:?} failed ({}):\n{}",
        out.status,
        stderr(&out)
    );
    stdout(&out)
}

/// One JSON object per line.
fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn publish(dir: &Path, id: &str, key: &str) {
    ok(
        dir,
        &[
            "events",
            "publish",
            "--topic",
            TOPIC,
            "--type",
            "dlqtest.happened",
            "--data",
            &format!(r#"{{"n":"{id}"}}"#),
            "--key",
            key,
            "--subject",
            key,
            "--id",
            id,
        ],
    );
}

/// Subscribes as `group` and dead-letters the event `fail` (acking the others).
async fn fail_one(bus: &EmbeddedBus, group: &str, fail: &str, reason: &str, error: &str) {
    let options = SubscribeOptions::new(group, [TOPIC])
        .unwrap()
        .ordering(ovasabi_core::Ordering::None);
    let mut sub = bus.subscribe(options).await.unwrap();
    for _ in 0..2 {
        let delivery = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("a delivery")
            .unwrap()
            .unwrap();
        if delivery.event().id == fail {
            delivery
                .dead_letter(DeadLetter {
                    reason: reason.into(),
                    error: Some(error.into()),
                })
                .await
                .unwrap();
        } else {
            delivery.ack().await.unwrap();
        }
    }
    sub.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_shown_and_redriven_once() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    publish(dir, "evt-a", "ka");
    publish(dir, "evt-b", "kb");

    // Two groups give up, each on one event.
    {
        let bus = EmbeddedBus::open(EmbeddedConfig::new(dir)).await.unwrap();
        fail_one(
            &bus,
            "mailer",
            "evt-a",
            "max deliveries reached",
            "smtp refused",
        )
        .await;
        fail_one(&bus, "indexer", "evt-b", "invalid payload", "no field x").await;
        bus.close().await.unwrap();
    }

    // list: both, oldest first, with group and reason.
    let listed = json_lines(&ok(dir, &["dlq", "list", "--format", "json"]));
    assert_eq!(listed.len(), 2, "{listed:?}");
    let a = &listed[0];
    assert_eq!(a["id"], "dlqtest.events.dlq@0");
    assert_eq!(a["topic"], TOPIC);
    assert_eq!(a["offset"], 0);
    assert_eq!(a["group"], "mailer");
    assert_eq!(a["reason"], "max deliveries reached");
    assert_eq!(a["error"], "smtp refused");
    assert_eq!(a["event_id"], "evt-a");
    assert_eq!(a["type"], "dlqtest.happened");
    assert_eq!(a["event"]["id"], "evt-a");
    assert_eq!(listed[1]["group"], "indexer");
    assert_eq!(listed[1]["event_id"], "evt-b");

    // Filters: reason (substring, any case), group, topic.
    let by_reason = json_lines(&ok(
        dir,
        &["dlq", "list", "--reason", "MAX DELIV", "--format", "json"],
    ));
    assert_eq!(by_reason.len(), 1);
    assert_eq!(by_reason[0]["event_id"], "evt-a");
    let by_group = json_lines(&ok(
        dir,
        &["dlq", "list", "--group", "indexer", "--format", "json"],
    ));
    assert_eq!(by_group.len(), 1);
    assert_eq!(by_group[0]["event_id"], "evt-b");
    assert!(json_lines(&ok(
        dir,
        &["dlq", "list", "--topic", "other.events", "--format", "json"]
    ))
    .is_empty());
    let table = ok(dir, &["dlq", "list"]);
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains("dlqtest.events.dlq@1"), "{table}");
    assert!(table.contains("invalid payload"), "{table}");

    // show: the whole dead letter.
    let shown = ok(dir, &["dlq", "show", "dlqtest.events.dlq@0"]);
    for needle in [
        "dead letter dlqtest.events.dlq@0",
        "mailer",
        "max deliveries reached",
        "smtp refused",
        "evt-a",
        "\"n\": \"evt-a\"",
    ] {
        assert!(shown.contains(needle), "show lacks {needle:?}:\n{shown}");
    }
    let shown = json_lines(&ok(
        dir,
        &["dlq", "show", "dlqtest.events.dlq@1", "--format", "json"],
    ));
    assert_eq!(shown[0]["group"], "indexer");

    // Usage errors: exit 2, saying what is wrong.
    for (args, phrase) in [
        (vec!["dlq", "redrive"], "--all"),
        (
            vec!["dlq", "show", "dlqtest.events@0"],
            "not a dead letter's ID",
        ),
        (
            vec!["dlq", "show", "dlqtest.events.dlq@9"],
            "no such dead letter",
        ),
        (
            vec!["dlq", "redrive", "--id", "dlqtest.events.dlq@9"],
            "no such dead letter",
        ),
    ] {
        let out = ovasabi(dir, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(phrase),
            "{args:?}: {:?} lacks {phrase:?}",
            stderr(&out)
        );
    }

    // A dry run changes nothing.
    let dry = json_lines(&ok(
        dir,
        &["dlq", "redrive", "--all", "--dry-run", "--format", "json"],
    ));
    assert!(
        dry.iter().all(|d| d["status"] == "would-redrive"),
        "{dry:?}"
    );

    // redrive --all: both go back to the original topic, once.
    let first = ok(dir, &["dlq", "redrive", "--all"]);
    assert!(first.contains("re-drove 2, skipped 0"), "{first}");
    let second = ok(dir, &["dlq", "redrive", "--all"]);
    assert!(second.contains("re-drove 0, skipped 2"), "{second}");
    assert!(second.contains("already re-driven"), "{second}");
    let third = json_lines(&ok(
        dir,
        &[
            "dlq",
            "redrive",
            "--id",
            "dlqtest.events.dlq@0",
            "--format",
            "json",
        ],
    ));
    assert_eq!(third.len(), 1);
    assert_eq!(third[0]["status"], "skipped");

    let events = json_lines(&ok(dir, &["events", "tail", TOPIC, "--format", "json"]));
    assert_eq!(events.len(), 4, "{events:?}");
    let again: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e.get("redrivenfor").is_some())
        .collect();
    assert_eq!(again.len(), 2, "{events:?}");
    let a = again
        .iter()
        .find(|e| e["id"] == "evt-a")
        .expect("evt-a again");
    assert_eq!(a["redrivenfor"], "mailer");
    assert_eq!(a["redrivenfrom"], "dlqtest.events.dlq@0");
    assert_eq!(a["partitionkey"], "ka");
    assert_eq!(a["subject"], "ka");
    assert_eq!(a["type"], "dlqtest.happened");
    assert_eq!(a["data"]["n"], "evt-a");
    assert!(
        a.as_object()
            .unwrap()
            .keys()
            .all(|k| !k.starts_with("deadletter")),
        "{a}"
    );

    // The group that gave up gets it again.
    let bus = EmbeddedBus::open(EmbeddedConfig::new(dir)).await.unwrap();
    let mut sub = bus
        .subscribe(
            SubscribeOptions::new("mailer", [TOPIC])
                .unwrap()
                .ordering(ovasabi_core::Ordering::None),
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Ok(Some(d)) = tokio::time::timeout(Duration::from_secs(2), sub.next()).await {
        let d = d.unwrap();
        got.push((
            d.event().id.clone(),
            d.event().extension_str("redrivenfor").map(str::to_owned),
        ));
        d.ack().await.unwrap();
    }
    sub.close().await;
    bus.close().await.unwrap();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("evt-a".to_owned(), Some("mailer".to_owned())),
            ("evt-b".to_owned(), Some("indexer".to_owned())),
        ]
    );

    // --force re-drives one recorded already.
    let forced = json_lines(&ok(
        dir,
        &[
            "dlq",
            "redrive",
            "--id",
            "dlqtest.events.dlq@0",
            "--force",
            "--format",
            "json",
        ],
    ));
    assert_eq!(forced[0]["status"], "redriven", "{forced:?}");
    assert_eq!(forced[0]["topic"], TOPIC);
    assert_eq!(forced[0]["offset"], 4);
}
