//! Behaviour only the NATS backend has: what a plain NATS client sees in a stream, publish
//! deduplication, the size limit derived from the server, per-group ordering layout,
//! foreign messages, ephemeral consumers.
//!
//! Needs a NATS server with JetStream (`OVASABI_TEST_NATS_URL`, default `nats://127.0.0.1:4222`);
//! skips without one unless `OVASABI_REQUIRE_SERVICES=1`. Every stream a test creates is
//! deleted at its end, passed or failed.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use ovasabi_core::{
    Bus, BusError, Event, Ordering, Publisher, SubscribeOptions, Subscriber, Subscription,
};
use ovasabi_nats::async_nats::jetstream;
use ovasabi_nats::layout;
use ovasabi_nats::testing::server_or_skip;
use ovasabi_nats::{NatsBus, NatsConfig};

/// Connects, runs `body` with a unique topic prefix, then deletes the topics it names (and
/// their dead-letter topics).
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
    let prefix = format!("test.nats.{token}");
    let outcome = AssertUnwindSafe(body(bus.clone(), prefix.clone()))
        .catch_unwind()
        .await;
    for topic in topics {
        for name in [
            format!("{prefix}.{topic}"),
            format!("{prefix}.{topic}.dlq"),
            format!("{prefix}.{topic}.dlq.dlq"),
        ] {
            let _ = bus.delete_topic(&name).await;
        }
    }
    bus.close().await.expect("closing");
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn next(sub: &mut Subscription) -> ovasabi_core::Delivery {
    tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("a delivery within 10 s")
        .expect("the subscription is open")
        .expect("no error")
}

#[tokio::test]
async fn a_plain_nats_client_sees_binary_mode_cloudevents() {
    with_bus(
        "a_plain_nats_client_sees_binary_mode_cloudevents",
        &["plain"],
        |bus, prefix| async move {
            let topic = format!("{prefix}.plain");
            let event = Event::new("order.placed", "/orders")
                .with_id("e-1")
                .with_subject("o 1")
                .with_partition_key("o1")
                .with_json(&serde_json::json!({"order_id": "o1"}));
            let published = bus.publish(&topic, event).await.unwrap();
            assert_eq!(published.offset, 0);

            let js = jetstream::new(bus.client().clone());
            let stream = js.get_stream(layout::stream_name(&topic)).await.unwrap();
            let raw = stream.get_raw_message(1).await.unwrap();
            assert_eq!(
                raw.subject.as_str(),
                layout::subject_for(&topic, Some("o1"), 16)
            );
            let header = |name: &str| raw.headers.get(name).map(|v| v.to_string());
            assert_eq!(header("ce-specversion").as_deref(), Some("1.0"));
            assert_eq!(header("ce-id").as_deref(), Some("e-1"));
            assert_eq!(header("ce-type").as_deref(), Some("order.placed"));
            assert_eq!(header("ce-source").as_deref(), Some("/orders"));
            assert_eq!(header("ce-subject").as_deref(), Some("o%201"));
            assert_eq!(header("ce-partitionkey").as_deref(), Some("o1"));
            assert_eq!(
                header("ce-datacontenttype").as_deref(),
                Some("application/json")
            );
            assert!(header("ce-time").is_some(), "publishing fills the time in");
            assert_eq!(header("Nats-Msg-Id").as_deref(), Some("/orders e-1"));
            assert_eq!(&raw.payload[..], br#"{"order_id":"o1"}"#);
        },
    )
    .await;
}

#[tokio::test]
async fn publishing_an_event_again_stores_it_once() {
    with_bus(
        "publishing_an_event_again_stores_it_once",
        &["dedup"],
        |bus, prefix| async move {
            let topic = format!("{prefix}.dedup");
            let event = Event::new("order.placed", "/orders").with_id("same");
            let first = bus.publish(&topic, event.clone()).await.unwrap();
            let again = bus.publish(&topic, event.clone()).await.unwrap();
            assert_eq!(first.offset, again.offset);
            // The same id from another source is another event.
            let other = bus
                .publish(
                    &topic,
                    event
                        .clone()
                        .with_extension("x", "y")
                        .with_id("same")
                        .with_subject("s"),
                )
                .await
                .unwrap();
            assert_eq!(
                other.offset, first.offset,
                "same source and id: the same event"
            );
            let mut from_elsewhere = event;
            from_elsewhere.source = "/elsewhere".to_owned();
            let elsewhere = bus.publish(&topic, from_elsewhere).await.unwrap();
            assert_eq!(elsewhere.offset, first.offset + 1);
            // A batch repeated after an error is stored once too.
            let batch: Vec<Event> = (0..3)
                .map(|i| Event::new("a.b", "/b").with_id(format!("b{i}")))
                .collect();
            let once = bus.publish_batch(&topic, batch.clone()).await.unwrap();
            let twice = bus.publish_batch(&topic, batch).await.unwrap();
            assert_eq!(once, twice);
            let info = bus
                .topics()
                .await
                .unwrap()
                .into_iter()
                .find(|t| t.topic == topic)
                .unwrap();
            assert_eq!(info.retained, 5);
        },
    )
    .await;
}

#[tokio::test]
async fn the_size_limit_leaves_room_for_headers_in_max_payload() {
    with_bus(
        "the_size_limit_leaves_room_for_headers_in_max_payload",
        &["large"],
        |bus, prefix| async move {
            let topic = format!("{prefix}.large");
            let max = bus.max_data_bytes();
            let max_payload = bus.client().server_info().max_payload;
            assert_eq!(
                max,
                ovasabi_nats::config::data_limit(1024 * 1024, max_payload)
            );
            let fits =
                Event::new("a.b", "/s").with_data("application/octet-stream", vec![7u8; max]);
            bus.publish(&topic, fits).await.unwrap();
            let over =
                Event::new("a.b", "/s").with_data("application/octet-stream", vec![7u8; max + 1]);
            match bus.publish(&topic, over).await {
                Err(BusError::EventTooLarge { size, max: limit }) => {
                    assert_eq!((size, limit), (max + 1, max));
                }
                other => panic!("expected EventTooLarge, got {other:?}"),
            }
            // Huge attributes next to data that fits are refused by the whole-message check.
            let bulky = Event::new("a.b", "/s")
                .with_extension("big", "€".repeat(20_000))
                .with_data("application/octet-stream", vec![7u8; max]);
            match bus.publish(&topic, bulky).await {
                Err(BusError::EventTooLarge { size, max: limit }) => {
                    assert_eq!(size, max);
                    assert!(limit < max, "{limit}");
                }
                other => panic!("expected EventTooLarge, got {other:?}"),
            }
        },
    )
    .await;
}

#[tokio::test]
async fn a_group_keeps_its_ordering_per_topic() {
    with_bus(
        "a_group_keeps_its_ordering_per_topic",
        &["ordered"],
        |bus, prefix| async move {
            let topic = format!("{prefix}.ordered");
            let per_key = SubscribeOptions::new("fixed", [&topic]).unwrap();
            bus.subscribe(per_key).await.unwrap().close().await;
            let unordered = SubscribeOptions::new("fixed", [&topic])
                .unwrap()
                .ordering(Ordering::None);
            let refused = bus.subscribe(unordered).await.err().expect("refused");
            assert!(matches!(refused, BusError::InvalidOptions(_)), "{refused}");
            assert!(
                refused.to_string().contains("Ordering::PerKey"),
                "{refused}"
            );
        },
    )
    .await;
}

#[tokio::test]
async fn a_message_that_is_no_cloudevent_goes_to_the_dead_letter_topic() {
    with_bus(
        "a_message_that_is_no_cloudevent_goes_to_the_dead_letter_topic",
        &["foreign"],
        |bus, prefix| async move {
            let topic = format!("{prefix}.foreign");
            let dlq = format!("{topic}.dlq");
            let mut sub = bus
                .subscribe(SubscribeOptions::new("readers", [&topic]).unwrap())
                .await
                .unwrap();
            let js = jetstream::new(bus.client().clone());
            js.publish(layout::unkeyed_subject(&topic), "not a cloudevent".into())
                .await
                .unwrap()
                .await
                .unwrap();
            bus.publish(&topic, Event::new("a.b", "/s").with_id("good"))
                .await
                .unwrap();
            let good = next(&mut sub).await;
            assert_eq!(good.event().id, "good");
            assert_eq!(good.info().offset, 1);
            good.ack().await.unwrap();
            sub.close().await;

            // The copy keeps the body and says why, exactly once.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            let stream = loop {
                if let Ok(stream) = js.get_stream(layout::stream_name(&dlq)).await {
                    if stream.cached_info().state.messages > 0 {
                        break stream;
                    }
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "nothing reached {dlq}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            let copy = stream.get_raw_message(1).await.unwrap();
            assert_eq!(&copy.payload[..], b"not a cloudevent");
            let header = |name: &str| copy.headers.get(name).map(|v| v.to_string());
            assert_eq!(
                header("ce-deadletterreason").as_deref(),
                Some("invalid%20CloudEvent")
            );
            assert_eq!(header("ce-deadletteroffset").as_deref(), Some("0"));
            // Acked right after the copy landed: it counts as done for the group.
            loop {
                let topics = bus.topics().await.unwrap();
                let lag = topics
                    .iter()
                    .find(|t| t.topic == topic)
                    .and_then(|t| t.groups.iter().find(|g| g.group == "readers"))
                    .map(|g| g.lag);
                if lag == Some(0) {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "group lag stays {lag:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        },
    )
    .await;
}

#[tokio::test]
async fn an_ephemeral_group_leaves_no_consumers_behind() {
    with_bus(
        "an_ephemeral_group_leaves_no_consumers_behind",
        &["passing"],
        |bus, prefix| async move {
            let topic = format!("{prefix}.passing");
            let options = SubscribeOptions::new("passing", [&topic])
                .unwrap()
                .ephemeral(true);
            let sub = bus.subscribe(options).await.unwrap();
            let js = jetstream::new(bus.client().clone());
            let mut stream = js.get_stream(layout::stream_name(&topic)).await.unwrap();
            assert_eq!(stream.info().await.unwrap().state.consumer_count, 17);
            let listed = bus.topics().await.unwrap();
            let info = listed.iter().find(|t| t.topic == topic).unwrap();
            assert!(
                info.groups.is_empty(),
                "ephemeral groups are not listed: {:?}",
                info.groups
            );
            sub.close().await;
            assert_eq!(stream.info().await.unwrap().state.consumer_count, 0);
        },
    )
    .await;
}
