//! Namespaces ([`NatsConfig::namespace`]): buses of different namespaces on one server share
//! nothing (streams, subjects, groups, patterns, dead-letter topics, listings), and a bus
//! without a namespace sees none of theirs, while everything user-facing keeps the plain topic
//! names.
//!
//! Needs a NATS server with JetStream (`OVASABI_TEST_NATS_URL`, default `nats://127.0.0.1:4222`);
//! skips without one unless `OVASABI_REQUIRE_SERVICES=1`. Every stream a test creates is
//! deleted at its end, passed or failed.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use ovasabi_core::{
    Bus, BusError, DeadLetter, Delivery, Event, Publisher, SubscribeOptions, Subscriber,
    Subscription,
};
use ovasabi_nats::async_nats::jetstream;
use ovasabi_nats::layout;
use ovasabi_nats::provision::status;
use ovasabi_nats::testing::server_or_skip;
use ovasabi_nats::{NatsBus, NatsConfig};

/// Three buses on the test server: namespaces `a` and `b` (random, `t-…`) and none.
struct Buses {
    a: NatsBus,
    b: NatsBus,
    plain: NatsBus,
    ns_a: String,
    ns_b: String,
}

fn token() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// Connects the three buses, runs `body` with a topic prefix unique to the run
/// (`ns.test.<token>`), then deletes the topics it names (and their dead-letter topics) in
/// every namespace.
async fn with_buses<F, Fut>(test: &str, topics: &[&str], body: F)
where
    F: FnOnce(Buses, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(server) = server_or_skip(test) else {
        return;
    };
    let (ns_a, ns_b) = (format!("t-{}", token()), format!("t-{}", token()));
    let config = || {
        let mut config =
            NatsConfig::new(&server.url).discovery_interval(Duration::from_millis(200));
        config.pull_expiry = Duration::from_secs(1);
        config
    };
    let connect =
        |config: NatsConfig| async move { NatsBus::connect(config).await.expect("connecting") };
    let a = connect(config().namespace(&ns_a)).await;
    let b = connect(config().namespace(ns_b.clone())).await;
    let plain = connect(config()).await;
    assert_eq!(a.namespace(), Some(ns_a.as_str()));
    assert_eq!(plain.namespace(), None);
    let prefix = format!("ns.test.{}", token());
    let buses = Buses {
        a: a.clone(),
        b: b.clone(),
        plain: plain.clone(),
        ns_a,
        ns_b,
    };
    let outcome = AssertUnwindSafe(body(buses, prefix.clone()))
        .catch_unwind()
        .await;
    for bus in [&a, &b, &plain] {
        for topic in topics {
            for name in [format!("{prefix}.{topic}"), format!("{prefix}.{topic}.dlq")] {
                let _ = bus.delete_topic(&name).await;
            }
        }
        bus.close().await.expect("closing");
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn next(sub: &mut Subscription) -> Delivery {
    tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("a delivery within 10 s")
        .expect("the subscription is open")
        .expect("no error")
}

/// Takes `n` deliveries, acks them, and checks nothing else comes within `quiet`; returns
/// their (topic, event id) in arrival order.
async fn take_exactly(sub: &mut Subscription, n: usize, quiet: Duration) -> Vec<(String, String)> {
    let mut got = Vec::new();
    for _ in 0..n {
        let d = next(sub).await;
        got.push((d.info().topic.clone(), d.event().id.clone()));
        d.ack().await.unwrap();
    }
    if let Ok(extra) = tokio::time::timeout(quiet, sub.next()).await {
        let extra = extra.map(|d| d.map(|d| (d.info().topic.clone(), d.event().id.clone())));
        panic!("after {got:?}, an unexpected delivery: {extra:?}");
    }
    got
}

async fn publish_ids(bus: &NatsBus, topic: &str, tag: &str, n: usize) {
    for i in 0..n {
        let event = Event::new("test.published", "/ns-test")
            .with_id(format!("{tag}-{i}"))
            .with_partition_key(format!("k{i}"));
        let published = bus.publish(topic, event).await.unwrap();
        assert_eq!(published.topic, topic, "publishing reports the plain topic");
        assert_eq!(
            published.offset, i as u64,
            "each namespace's topic starts at 0"
        );
    }
}

fn sorted_ids(got: &[(String, String)]) -> Vec<String> {
    let mut ids: Vec<String> = got.iter().map(|(_, id)| id.clone()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn namespaces_keep_topics_groups_and_patterns_apart() {
    with_buses(
        "namespaces_keep_topics_groups_and_patterns_apart",
        &["events", "only-b"],
        |buses, prefix| async move {
            let Buses {
                a,
                b,
                plain,
                ns_a,
                ns_b,
            } = buses;
            let topic = format!("{prefix}.events");
            let only_b = format!("{prefix}.only-b");
            let pattern = format!("{prefix}.*");
            let quiet = Duration::from_millis(1500);

            // The same group name on the same topic name in each namespace and in none.
            let mut subs = Vec::new();
            for bus in [&a, &b, &plain] {
                let options = SubscribeOptions::new("workers", [&topic]).unwrap();
                subs.push(bus.subscribe(options).await.unwrap());
            }
            let mut pattern_a = a
                .subscribe(SubscribeOptions::new("watchers", [&pattern]).unwrap())
                .await
                .unwrap();
            let mut pattern_plain = plain
                .subscribe(SubscribeOptions::new("watchers", [&pattern]).unwrap())
                .await
                .unwrap();

            publish_ids(&a, &topic, "a", 3).await;
            publish_ids(&b, &topic, "b", 4).await;
            publish_ids(&plain, &topic, "plain", 2).await;
            // A topic only namespace b has, created after the pattern subscriptions began.
            publish_ids(&b, &only_b, "only-b", 2).await;

            for ((sub, tag), n) in subs.iter_mut().zip(["a", "b", "plain"]).zip([3, 4, 2]) {
                let got = take_exactly(sub, n, quiet).await;
                assert!(got.iter().all(|(t, _)| *t == topic), "{got:?}");
                let want: Vec<String> = (0..n).map(|i| format!("{tag}-{i}")).collect();
                assert_eq!(sorted_ids(&got), want, "group `workers` of {tag}");
            }
            // Pattern subscriptions see their own namespace's topics only (`only-b` was
            // created in b, so neither a nor the plain bus may pick it up).
            let got = take_exactly(&mut pattern_a, 3, quiet).await;
            assert!(got.iter().all(|(t, _)| *t == topic), "{got:?}");
            assert_eq!(sorted_ids(&got), ["a-0", "a-1", "a-2"]);
            let got = take_exactly(&mut pattern_plain, 2, quiet).await;
            assert!(got.iter().all(|(t, _)| *t == topic), "{got:?}");
            assert_eq!(sorted_ids(&got), ["plain-0", "plain-1"]);
            // While a pattern subscription in b finds both of b's topics.
            let mut pattern_b = b
                .subscribe(SubscribeOptions::new("watchers", [&pattern]).unwrap())
                .await
                .unwrap();
            let got = take_exactly(&mut pattern_b, 6, quiet).await;
            assert_eq!(
                sorted_ids(&got),
                ["b-0", "b-1", "b-2", "b-3", "only-b-0", "only-b-1"]
            );
            assert!(got.iter().all(|(t, _)| *t == topic || *t == only_b));

            // The streams are the namespace's own, and hold only its events.
            let js = jetstream::new(plain.client().clone());
            for (ns, count) in [(Some(ns_a.as_str()), 3), (Some(&ns_b), 4), (None, 2)] {
                let stored = layout::qualified_topic(ns, &topic);
                let mut stream = js.get_stream(layout::stream_name(&stored)).await.unwrap();
                let info = stream.info().await.unwrap().clone();
                assert_eq!(info.state.messages, count, "{ns:?}");
                assert_eq!(info.config.subjects, [layout::stream_subjects(&stored)]);
                if let Some(ns) = ns {
                    assert!(info.config.name.starts_with(&format!("OVASABI___ns_{ns}_")));
                    assert_eq!(
                        info.config.description.as_deref(),
                        Some(
                            format!("ovasabi topic={topic} partitions=16 namespace={ns}").as_str()
                        )
                    );
                } else {
                    assert_eq!(info.config.name, layout::stream_name(&topic));
                    assert_eq!(
                        info.config.description.as_deref(),
                        Some(format!("ovasabi topic={topic} partitions=16").as_str())
                    );
                }
            }

            // Listings: plain topic names, each bus its own namespace's streams only.
            let listed = |infos: Vec<ovasabi_core::TopicInfo>| -> Vec<(String, u64)> {
                infos
                    .into_iter()
                    .filter(|t| t.topic.starts_with(&prefix) || t.topic.starts_with("_ns"))
                    .map(|t| (t.topic, t.next_offset))
                    .collect()
            };
            assert_eq!(listed(a.topics().await.unwrap()), [(topic.clone(), 3)]);
            assert_eq!(
                listed(b.topics().await.unwrap()),
                [(topic.clone(), 4), (only_b.clone(), 2)]
            );
            assert_eq!(listed(plain.topics().await.unwrap()), [(topic.clone(), 2)]);
            let groups: Vec<String> = a
                .topics()
                .await
                .unwrap()
                .into_iter()
                .find(|t| t.topic == topic)
                .unwrap()
                .groups
                .into_iter()
                .map(|g| g.group)
                .collect();
            assert_eq!(groups, ["watchers", "workers"]);
            for s in status(&a).await.unwrap().streams {
                assert!(
                    s.stream.starts_with(&format!("OVASABI___ns_{ns_a}_")),
                    "{}",
                    s.stream
                );
                assert!(!s.topic.starts_with("_ns"), "{}", s.topic);
            }
            for s in status(&plain).await.unwrap().streams {
                assert!(!s.stream.starts_with("OVASABI___ns_"), "{}", s.stream);
            }

            // Deleting a topic deletes it in the bus's namespace only.
            assert!(a.delete_topic(&topic).await.unwrap());
            assert!(!a.delete_topic(&topic).await.unwrap());
            assert_eq!(listed(b.topics().await.unwrap()).len(), 2);
            assert_eq!(listed(plain.topics().await.unwrap()).len(), 1);

            for sub in subs {
                sub.close().await;
            }
            for sub in [pattern_a, pattern_b, pattern_plain] {
                sub.close().await;
            }
        },
    )
    .await;
}

#[tokio::test]
async fn dead_letters_stay_in_their_namespace() {
    with_buses(
        "dead_letters_stay_in_their_namespace",
        &["orders", "orders.dlq"],
        |buses, prefix| async move {
            let Buses {
                a, b, plain, ns_a, ..
            } = buses;
            let topic = format!("{prefix}.orders");
            let dlq = format!("{topic}.dlq");
            let quiet = Duration::from_millis(1000);
            let mut sub = a
                .subscribe(SubscribeOptions::new("billing", [&topic]).unwrap())
                .await
                .unwrap();
            a.publish(&topic, Event::new("order.placed", "/orders").with_id("bad"))
                .await
                .unwrap();
            let d = next(&mut sub).await;
            assert_eq!(d.info().topic, topic);
            d.dead_letter(DeadLetter {
                reason: "invalid payload".to_owned(),
                error: Some("no amount".to_owned()),
            })
            .await
            .unwrap();
            // A message that is no CloudEvent, published straight to a's stream, goes to the
            // same dead-letter topic as it is.
            let js = jetstream::new(a.client().clone());
            let stored = layout::qualified_topic(Some(&ns_a), &topic);
            let stored_dlq = layout::qualified_topic(Some(&ns_a), &dlq);
            js.publish(layout::unkeyed_subject(&stored), "not a cloudevent".into())
                .await
                .unwrap()
                .await
                .unwrap();
            // It is dead-lettered when the subscription reaches it, on the way to the next.
            a.publish(
                &topic,
                Event::new("order.placed", "/orders").with_id("good"),
            )
            .await
            .unwrap();
            let good = next(&mut sub).await;
            assert_eq!((good.event().id.as_str(), good.info().offset), ("good", 2));
            good.ack().await.unwrap();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            let stream = loop {
                if let Ok(stream) = js.get_stream(layout::stream_name(&stored_dlq)).await {
                    if stream.cached_info().state.messages >= 2 {
                        break stream;
                    }
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the raw message did not reach {dlq} of namespace {ns_a}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            sub.close().await;
            let raw = stream.get_raw_message(2).await.unwrap();
            assert_eq!(&raw.payload[..], b"not a cloudevent");
            assert_eq!(raw.subject.as_str(), layout::unkeyed_subject(&stored_dlq));
            let header = |name: &str| raw.headers.get(name).map(|v| v.to_string());
            assert_eq!(
                header("ce-deadlettertopic").as_deref(),
                Some(topic.as_str())
            );

            // Read back through the bus: plain topic names.
            let mut dead = a
                .subscribe(SubscribeOptions::new("billing", [&dlq]).unwrap())
                .await
                .unwrap();
            let first = next(&mut dead).await;
            assert_eq!(first.info().topic, dlq, "delivered with its plain topic");
            assert_eq!(first.info().offset, 0);
            let event = first.event();
            assert_eq!(event.id, "bad");
            assert_eq!(event.extension_str("deadlettertopic"), Some(topic.as_str()));
            assert_eq!(
                event.extension_str("deadletterreason"),
                Some("invalid payload")
            );
            assert_eq!(event.extension_str("deadlettergroup"), Some("billing"));
            first.ack().await.unwrap();
            // (The raw copy at offset 1 is left unread: reading it would dead-letter it on.)
            dead.close().await;

            // The same group in b and on the plain bus finds an empty dead-letter topic.
            for bus in [&b, &plain] {
                let mut other = bus
                    .subscribe(SubscribeOptions::new("billing", [&dlq]).unwrap())
                    .await
                    .unwrap();
                take_exactly(&mut other, 0, quiet).await;
                other.close().await;
            }
            let names = |infos: Vec<ovasabi_core::TopicInfo>| -> Vec<(String, u64)> {
                infos
                    .into_iter()
                    .filter(|t| t.topic.starts_with(&prefix))
                    .map(|t| (t.topic, t.retained))
                    .collect()
            };
            assert_eq!(
                names(a.topics().await.unwrap()),
                [(topic.clone(), 3), (dlq.clone(), 2)]
            );
            assert_eq!(names(plain.topics().await.unwrap()), [(dlq.clone(), 0)]);
            assert_eq!(names(b.topics().await.unwrap()), [(dlq.clone(), 0)]);
        },
    )
    .await;
}

#[tokio::test]
async fn an_invalid_namespace_is_refused_when_connecting() {
    // Checked before connecting: no server needed.
    for bad in ["", "Prod", "a.b", "a_b", "-a", "a b", "a>", &"n".repeat(65)] {
        let config = NatsConfig::new("nats://127.0.0.1:1").namespace(bad);
        match NatsBus::connect(config).await {
            Err(BusError::InvalidOptions(why)) => {
                assert!(why.contains(&format!("{bad:?}")), "{why}");
                assert!(
                    why.contains("lower-case ASCII letters, digits and `-`"),
                    "{why}"
                );
            }
            Err(other) => panic!("{bad:?}: expected InvalidOptions, got {other}"),
            Ok(_) => panic!("{bad:?} was accepted"),
        }
    }
    assert_eq!(NatsConfig::default().namespace, None);
    assert_eq!(
        NatsConfig::default()
            .namespace("prod-eu")
            .namespace
            .as_deref(),
        Some("prod-eu")
    );
}
