//! Provisioning and status against a real NATS server: idempotence, updates, refusals.
//!
//! Needs a NATS server with JetStream (`OVASABI_TEST_NATS_URL`, default `nats://127.0.0.1:4222`);
//! skips without one unless `OVASABI_REQUIRE_SERVICES=1`. Every stream a test creates is
//! deleted at its end, passed or failed.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use ovasabi_core::{Bus, BusError, Event, Publisher, SubscribeOptions, Subscriber};
use ovasabi_nats::provision::{provision, status, ProvisionAction, ProvisionConfig};
use ovasabi_nats::testing::server_or_skip;
use ovasabi_nats::{NatsBus, NatsConfig, TopicSettings};

/// Connects, runs `body` with a unique topic prefix, then deletes the topics it names.
async fn with_bus<F, Fut>(test: &str, topics: &[&str], body: F)
where
    F: FnOnce(NatsBus, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(server) = server_or_skip(test) else {
        return;
    };
    let bus = NatsBus::connect(NatsConfig::new(&server.url))
        .await
        .expect("connecting");
    let token = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let prefix = format!("test.provision.{token}");
    let outcome = AssertUnwindSafe(body(bus.clone(), prefix.clone()))
        .catch_unwind()
        .await;
    for topic in topics {
        for name in [format!("{prefix}.{topic}"), format!("{prefix}.{topic}.dlq")] {
            let _ = bus.delete_topic(&name).await;
        }
    }
    bus.close().await.expect("closing");
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test]
async fn provisioning_twice_changes_nothing_the_second_time() {
    with_bus(
        "provisioning_twice_changes_nothing_the_second_time",
        &["a", "b"],
        |bus, prefix| async move {
            let topics = [format!("{prefix}.a"), format!("{prefix}.b")];
            let config = ProvisionConfig::default();
            let first = provision(&bus, &config, &topics).await.unwrap();
            let names: Vec<&str> = first.iter().map(|c| c.topic.as_str()).collect();
            assert_eq!(
                names,
                [
                    topics[0].clone(),
                    format!("{}.dlq", topics[0]),
                    topics[1].clone(),
                    format!("{}.dlq", topics[1])
                ]
            );
            assert!(
                first.iter().all(|c| c.action == ProvisionAction::Created),
                "{first:?}"
            );
            let second = provision(&bus, &config, &topics).await.unwrap();
            assert!(
                second
                    .iter()
                    .all(|c| c.action == ProvisionAction::Unchanged),
                "{second:?}"
            );
            assert_eq!(
                second[0].to_string(),
                format!("unchanged {} (stream {})", topics[0], second[0].stream)
            );

            // Shorter retention for `a` only: one update, then nothing again.
            let short = TopicSettings {
                max_age: Some(Duration::from_secs(3600)),
                max_bytes: Some(1 << 30),
                ..TopicSettings::default()
            };
            let config = config.with_override(&topics[0], short).unwrap();
            let third = provision(&bus, &config, &topics).await.unwrap();
            match &third[0].action {
                ProvisionAction::Updated { changed } => {
                    assert_eq!(changed.len(), 2, "{changed:?}");
                    assert!(
                        changed[0].starts_with("max_age: 604800s -> 3600s"),
                        "{changed:?}"
                    );
                    assert!(
                        changed[1].starts_with("max_bytes: unlimited -> 1073741824"),
                        "{changed:?}"
                    );
                }
                other => panic!("expected an update of {}, got {other:?}", topics[0]),
            }
            assert!(
                third[1..]
                    .iter()
                    .all(|c| c.action == ProvisionAction::Unchanged),
                "{third:?}"
            );
            let fourth = provision(&bus, &config, &topics).await.unwrap();
            assert!(
                fourth
                    .iter()
                    .all(|c| c.action == ProvisionAction::Unchanged),
                "{fourth:?}"
            );

            // The partition count is fixed once the stream exists.
            let more = TopicSettings {
                partitions: 32,
                ..TopicSettings::default()
            };
            let config = ProvisionConfig::default()
                .with_override(&topics[1], more)
                .unwrap();
            let refused = provision(&bus, &config, &topics[1..]).await.unwrap_err();
            assert!(matches!(refused, BusError::InvalidOptions(_)), "{refused}");
            assert!(refused.to_string().contains("16 partitions"), "{refused}");

            // Bad names are refused before anything is done.
            let refused = provision(&bus, &ProvisionConfig::default(), &["Bad.Name"])
                .await
                .unwrap_err();
            assert!(
                matches!(refused, BusError::InvalidTopic { .. }),
                "{refused}"
            );
        },
    )
    .await;
}

#[tokio::test]
async fn status_and_topics_report_groups_and_lag() {
    with_bus(
        "status_and_topics_report_groups_and_lag",
        &["counted"],
        |bus, prefix| async move {
            let topic = format!("{prefix}.counted");
            for i in 0..5 {
                let event =
                    Event::new("test.counted", "/tests").with_partition_key(format!("k{}", i % 2));
                bus.publish(&topic, event).await.unwrap();
            }
            let mut sub = bus
                .subscribe(SubscribeOptions::new("counter", [&topic]).unwrap())
                .await
                .unwrap();
            let first = tokio::time::timeout(Duration::from_secs(10), sub.next())
                .await
                .expect("a delivery")
                .unwrap()
                .unwrap();
            first.ack().await.unwrap();
            sub.close().await;

            let report = status(&bus).await.unwrap();
            let stream = report
                .streams
                .iter()
                .find(|s| s.topic == topic)
                .expect("the topic's stream is listed");
            assert_eq!(
                (stream.messages, stream.first_offset, stream.next_offset),
                (5, 0, 5)
            );
            assert_eq!(stream.partitions, 16);
            // 16 partition consumers and one for unkeyed events.
            assert_eq!(stream.consumers.len(), 17);
            assert!(stream
                .consumers
                .iter()
                .all(|c| c.group == "counter" && c.durable));
            let lag: u64 = stream.consumers.iter().map(|c| c.lag()).sum();
            assert_eq!(lag, 4);
            let text = report.to_string();
            assert!(
                text.contains(&topic) && text.contains("group counter: 17 consumer(s), lag 4"),
                "{text}"
            );

            let topics = bus.topics().await.unwrap();
            let info = topics.iter().find(|t| t.topic == topic).unwrap();
            assert_eq!(info.groups.len(), 1);
            assert_eq!(info.groups[0].lag, 4);
        },
    )
    .await;
}
