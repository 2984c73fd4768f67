//! Behaviour specific to the embedded backend: the data-directory lock, retention, stored
//! positions, durability modes. The shared Bus contract is in `conformance.rs`.

use std::time::Duration;

use ovasabi_core::{Bus, BusError, Event, Publisher, StartFrom, SubscribeOptions, Subscriber};
use ovasabi_embedded::{Durability, EmbeddedBus, EmbeddedConfig, Retention};

fn event(n: u64) -> Event {
    Event::new("test.happened", "/test").with_json(&serde_json::json!({ "n": n }))
}

async fn drain(bus: &EmbeddedBus, group: &str, topic: &str, n: usize) -> Vec<u64> {
    let mut sub = bus
        .subscribe(SubscribeOptions::new(group, [topic]).unwrap())
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < n {
        let d = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("delivery in time")
            .unwrap()
            .unwrap();
        seen.push(d.info().offset);
        d.ack().await.unwrap();
    }
    sub.close().await;
    seen
}

#[tokio::test]
async fn a_second_process_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let bus = EmbeddedBus::open(EmbeddedConfig::new(dir.path()))
        .await
        .unwrap();
    let err = EmbeddedBus::open(EmbeddedConfig::new(dir.path()))
        .await
        .err()
        .expect("locked");
    assert!(matches!(err, BusError::DataDirLocked { .. }), "{err}");
    assert!(
        err.to_string().contains("in use by another process"),
        "{err}"
    );
    bus.close().await.unwrap();
    let again = EmbeddedBus::open(EmbeddedConfig::new(dir.path()))
        .await
        .unwrap();
    again.close().await.unwrap();
}

#[tokio::test]
async fn positions_and_events_survive_reopen_in_both_durability_modes() {
    for durability in [Durability::Process, Durability::Machine] {
        let dir = tempfile::tempdir().unwrap();
        let config = EmbeddedConfig::new(dir.path()).durability(durability);
        let bus = EmbeddedBus::open(config.clone()).await.unwrap();
        for n in 0..10 {
            bus.publish("t.events", event(n)).await.unwrap();
        }
        assert_eq!(drain(&bus, "g", "t.events", 4).await, vec![0, 1, 2, 3]);
        bus.close().await.unwrap();

        let bus = EmbeddedBus::open(config).await.unwrap();
        let topics = bus.topics().await.unwrap();
        assert_eq!(topics[0].next_offset, 10);
        assert_eq!(topics[0].groups[0].position, 4);
        assert_eq!(topics[0].groups[0].lag, 6);
        assert_eq!(
            drain(&bus, "g", "t.events", 6).await,
            vec![4, 5, 6, 7, 8, 9]
        );
        let p = bus.publish("t.events", event(10)).await.unwrap();
        assert_eq!(p.offset, 10, "offsets continue after a reopen");
        bus.close().await.unwrap();
    }
}

#[tokio::test]
async fn retention_by_size_drops_the_oldest_and_groups_continue() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EmbeddedConfig::new(dir.path()).retention(Retention {
        max_age: None,
        max_bytes: Some(2_000),
    });
    config.retention_interval = Duration::from_millis(50);
    let bus = EmbeddedBus::open(config.clone()).await.unwrap();
    for n in 0..100 {
        bus.publish("r.events", event(n)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let info = &bus.topics().await.unwrap()[0];
    assert!(info.first_offset > 0, "old events removed: {info:?}");
    assert!(info.retained < 100);
    assert_eq!(info.next_offset, 100);
    let seen = drain(&bus, "late", "r.events", info.retained as usize).await;
    assert_eq!(seen.first(), Some(&info.first_offset));
    bus.close().await.unwrap();
    // The next offset survives even when retention emptied the topic before a reopen.
    let bus = EmbeddedBus::open(config).await.unwrap();
    assert_eq!(bus.publish("r.events", event(0)).await.unwrap().offset, 100);
    bus.close().await.unwrap();
}

#[tokio::test]
async fn retention_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EmbeddedConfig::new(dir.path()).retention(Retention {
        max_age: Some(Duration::from_millis(200)),
        max_bytes: None,
    });
    config.retention_interval = Duration::from_millis(50);
    let bus = EmbeddedBus::open(config).await.unwrap();
    for n in 0..5 {
        bus.publish("a.events", event(n)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    bus.publish("a.events", event(5)).await.unwrap();
    let info = &bus.topics().await.unwrap()[0];
    assert_eq!((info.first_offset, info.retained), (5, 1), "{info:?}");
    bus.close().await.unwrap();
}

#[tokio::test]
async fn replay_from_a_time_moves_an_existing_group() {
    let dir = tempfile::tempdir().unwrap();
    let bus = EmbeddedBus::open(EmbeddedConfig::new(dir.path()))
        .await
        .unwrap();
    for n in 0..3 {
        bus.publish("p.events", event(n)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mark = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    for n in 3..6 {
        bus.publish("p.events", event(n)).await.unwrap();
    }
    assert_eq!(drain(&bus, "g", "p.events", 6).await.len(), 6);
    let mut sub = bus
        .subscribe(
            SubscribeOptions::new("g", ["p.events"])
                .unwrap()
                .start(StartFrom::Time(mark)),
        )
        .await
        .unwrap();
    let d = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(d.info().offset, 3);
    bus.close().await.unwrap();
}

#[tokio::test]
async fn a_pattern_subscription_reads_every_topic_from_disk_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let bus = EmbeddedBus::open(EmbeddedConfig::new(dir.path()))
        .await
        .unwrap();
    // More than one disk read's worth in one topic, a keyed event in another.
    let batch: Vec<Event> = (0..3000).map(event).collect();
    bus.publish_batch("a.events", batch).await.unwrap();
    bus.publish("b.events", event(0).with_partition_key("k"))
        .await
        .unwrap();
    bus.publish("c.events", event(0)).await.unwrap();
    bus.close().await.unwrap();

    // After a reopen the cache is empty: every topic is read from disk.
    let bus = EmbeddedBus::open(EmbeddedConfig::new(dir.path()))
        .await
        .unwrap();
    let options = SubscribeOptions::new("all", ["*.events"])
        .unwrap()
        .max_in_flight(1);
    let mut sub = bus.subscribe(options).await.unwrap();
    let mut per_topic = std::collections::BTreeMap::new();
    for _ in 0..3002 {
        let d = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap_or_else(|_| panic!("stalled after {per_topic:?}"))
            .unwrap()
            .unwrap();
        *per_topic.entry(d.info().topic.clone()).or_insert(0) += 1;
        d.ack().await.unwrap();
    }
    assert_eq!(
        per_topic.into_iter().collect::<Vec<_>>(),
        vec![
            ("a.events".to_owned(), 3000),
            ("b.events".to_owned(), 1),
            ("c.events".to_owned(), 1)
        ]
    );
    bus.close().await.unwrap();
}
