//! Contracts on a real bus (the embedded one): an invalid payload is refused at publish with
//! the field and rule named; one that slipped past (a foreign publisher) is dead-lettered at
//! consume with the reason, and the consumer goes on; v1 events stored before v2 and v3
//! existed replay into a consumer that reads v3, through declared upcasters.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ovasabi_core::{Bus, BusError, Event, Publisher, SubscribeOptions, Subscriber};
use ovasabi_embedded::{EmbeddedBus, EmbeddedConfig};
use ovasabi_middleware::{handler_fn, Consumer, HandlerBuilder, Message};
use ovasabi_schema::{
    ContractLayer, Contracts, Registry, Upcasters, ValidatingBus, SCHEMA_VIOLATION_REASON,
};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

fn registry() -> Arc<Registry> {
    Arc::new(Registry::builtin().unwrap_or_else(|errors| {
        panic!(
            "the compiled-in schemas load: {}",
            errors
                .iter()
                .map(|e| e.to_string() + "\n")
                .collect::<String>()
        )
    }))
}

async fn bus(dir: &tempfile::TempDir) -> Arc<dyn Bus> {
    Arc::new(
        EmbeddedBus::open(EmbeddedConfig::new(dir.path()))
            .await
            .unwrap(),
    )
}

/// The latest version's first example of `ty`.
fn example(registry: &Registry, ty: &str) -> (u32, Value) {
    let latest = registry.get(ty).unwrap().latest();
    (latest.version, latest.examples()[0].clone())
}

fn first_required(registry: &Registry, ty: &str) -> String {
    registry.get(ty).unwrap().latest().schema["required"][0]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn an_invalid_payload_is_refused_at_publish_naming_the_field_and_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let registry = registry();
    let bus = ValidatingBus::new(
        bus(&dir).await,
        Contracts::new(registry.clone(), Upcasters::new()),
    );
    let ty = "user.registered";
    let (latest, valid) = example(&registry, ty);

    // Valid: published, and its dataschema names the version it was checked against.
    bus.publish("user.events", Event::new(ty, "/test").with_json(&valid))
        .await
        .unwrap();
    let mut sub = bus
        .subscribe(SubscribeOptions::new("check", ["user.events"]).unwrap())
        .await
        .unwrap();
    let delivery = sub.next().await.unwrap().unwrap();
    assert_eq!(
        delivery.event().dataschema.as_deref(),
        Some(format!("urn:ovasabi:schema:{ty}:{latest}").as_str())
    );

    // A required field missing.
    let field = first_required(&registry, ty);
    let mut missing = valid.clone();
    missing.as_object_mut().unwrap().remove(&field);
    let err = bus
        .publish("user.events", Event::new(ty, "/test").with_json(&missing))
        .await
        .unwrap_err();
    let BusError::InvalidEvent(e) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(e.attribute, "data");
    assert!(e.reason.contains("breaks `required`"), "{}", e.reason);
    assert!(e.reason.contains(&field), "{}", e.reason);
    assert!(err.is_user_error());

    // A field of the wrong type.
    let mut wrong = valid.clone();
    wrong[&field] = json!(12345);
    let err = bus
        .publish("user.events", Event::new(ty, "/test").with_json(&wrong))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("field `{field}` breaks `type`")),
        "{err}"
    );

    // A version that does not exist, and another type's schema.
    let mut unknown_version = Event::new(ty, "/test").with_json(&valid);
    unknown_version.dataschema = Some(format!("urn:ovasabi:schema:{ty}:99"));
    let err = bus
        .publish("user.events", unknown_version)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("has no version 99; registered: v1"),
        "{err}"
    );
    let mut other_type = Event::new(ty, "/test").with_json(&valid);
    other_type.dataschema = Some("urn:ovasabi:schema:order.placed:1".to_owned());
    assert!(bus.publish("user.events", other_type).await.is_err());

    // Not JSON.
    let binary =
        Event::new(ty, "/test").with_data("application/octet-stream", b"\x00\x01".to_vec());
    let err = bus.publish("user.events", binary).await.unwrap_err();
    assert!(err.to_string().contains("carry JSON"), "{err}");

    // A batch with one bad event writes nothing.
    let before = bus.topics().await.unwrap()[0].next_offset;
    let batch = vec![
        Event::new(ty, "/test").with_json(&valid),
        Event::new(ty, "/test").with_json(&missing),
    ];
    assert!(bus.publish_batch("user.events", batch).await.is_err());
    assert_eq!(bus.topics().await.unwrap()[0].next_offset, before);

    // A dead-letter topic holds what failed, so it takes the invalid event unchecked.
    bus.publish(
        "user.events.dlq",
        Event::new(ty, "/test").with_json(&missing),
    )
    .await
    .unwrap();
    assert!(bus
        .publish_batch(
            "user.events.dlq",
            vec![Event::new(ty, "/test").with_json(&wrong)]
        )
        .await
        .is_ok());

    // Types without a schema (events from outside) pass unchecked.
    bus.publish(
        "partner.events",
        Event::new("partner.pinged", "/partner").with_json(&json!({"anything": 1})),
    )
    .await
    .unwrap();
    drop(sub);
    bus.close().await.unwrap();
}

#[tokio::test]
async fn an_invalid_event_consumed_is_dead_lettered_with_the_reason_and_the_consumer_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let registry = registry();
    let raw = bus(&dir).await;
    let ty = "user.registered";
    let (_, valid) = example(&registry, ty);
    let field = first_required(&registry, ty);
    let mut invalid = valid.clone();
    invalid.as_object_mut().unwrap().remove(&field);
    // A foreign publisher, unchecked: the invalid event is on the topic before the valid one.
    raw.publish(
        "user.events",
        Event::new(ty, "/foreign")
            .with_json(&invalid)
            .with_id("bad"),
    )
    .await
    .unwrap();
    raw.publish(
        "user.events",
        Event::new(ty, "/test").with_json(&valid).with_id("good"),
    )
    .await
    .unwrap();

    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorder = seen.clone();
    let handler = HandlerBuilder::new()
        .layer(ContractLayer::new(Contracts::new(
            registry,
            Upcasters::new(),
        )))
        .handler(handler_fn(move |msg: Message| {
            let recorder = recorder.clone();
            async move {
                recorder.lock().unwrap().push(msg.event().id.clone());
                Ok(Vec::new())
            }
        }));
    let stop = CancellationToken::new();
    let consumer = Consumer::new(
        raw.clone(),
        raw.clone(),
        SubscribeOptions::new("reactor", ["user.events"]).unwrap(),
        handler,
    );
    let running = tokio::spawn(consumer.run(stop.clone()));

    let mut dlq = raw
        .subscribe(SubscribeOptions::new("inspect", ["user.events.dlq"]).unwrap())
        .await
        .unwrap();
    let dead = tokio::time::timeout(Duration::from_secs(10), dlq.next())
        .await
        .expect("dead-lettered within 10 s")
        .unwrap()
        .unwrap();
    assert_eq!(dead.event().id, "bad");
    assert_eq!(
        dead.event().extension_str("deadletterreason"),
        Some(SCHEMA_VIOLATION_REASON)
    );
    let error = dead.event().extension_str("deadlettererror").unwrap();
    assert!(
        error.contains(&format!("field `{field}` breaks `required`")),
        "{error}"
    );
    for _ in 0..100 {
        if !seen.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        *seen.lock().unwrap(),
        ["good"],
        "the handler never sees the bad event"
    );
    stop.cancel();
    let summary = running.await.unwrap().unwrap();
    assert_eq!((summary.acked, summary.dead_lettered), (1, 1));
    drop(dlq);
    raw.close().await.unwrap();
}

#[tokio::test]
async fn v1_events_stored_before_v2_replay_into_a_v3_consumer_through_upcasters() {
    let dir = tempfile::tempdir().unwrap();
    let registry = registry();
    let ty = "user.registered";
    let v1 = registry.version(ty, 1).expect("user.registered v1");
    assert!(registry.version(ty, 3).is_some(), "user.registered has v3");

    // Yesterday: producers wrote v1.
    let raw = bus(&dir).await;
    for (i, example) in v1.examples().iter().cycle().take(5).enumerate() {
        let mut event = Event::new(ty, "/ovasabi/users")
            .with_json(example)
            .with_id(format!("v1-{i}"));
        event.dataschema = Some(format!("urn:ovasabi:schema:{ty}:1"));
        raw.publish("user.events", event).await.unwrap();
    }

    // Today: a consumer written for v3 replays the topic from the beginning.
    let v2_fields: Vec<String> = new_fields(&registry, ty, 1, 2);
    let v3_fields: Vec<String> = new_fields(&registry, ty, 2, 3);
    let upcasters = Upcasters::new()
        .register(ty, 1, {
            let fields = v2_fields.clone();
            move |mut data| {
                for f in &fields {
                    data[f] = json!(format!("filled by v1→v2 for {f}"));
                }
                Ok(data)
            }
        })
        .register(ty, 2, {
            let fields = v3_fields.clone();
            move |mut data| {
                for f in &fields {
                    data[f] = json!("en");
                }
                Ok(data)
            }
        });
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorder = seen.clone();
    let handler = HandlerBuilder::new()
        .layer(ContractLayer::new(Contracts::new(registry.clone(), upcasters)).reads(ty, 3))
        .handler(handler_fn(move |msg: Message| {
            let recorder = recorder.clone();
            async move {
                recorder.lock().unwrap().push(msg.event().clone());
                Ok(Vec::new())
            }
        }));
    let stop = CancellationToken::new();
    let consumer = Consumer::new(
        raw.clone(),
        raw.clone(),
        SubscribeOptions::new("v3-reader", ["user.events"]).unwrap(),
        handler,
    );
    let running = tokio::spawn(consumer.run(stop.clone()));
    for _ in 0..200 {
        if seen.lock().unwrap().len() == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    stop.cancel();
    let summary = running.await.unwrap().unwrap();
    assert_eq!(summary.acked, 5, "{summary:?}");
    let v3 = registry.version(ty, 3).unwrap();
    for event in seen.lock().unwrap().iter() {
        assert_eq!(
            event.dataschema.as_deref(),
            Some(format!("urn:ovasabi:schema:{ty}:3").as_str())
        );
        let data: Value = serde_json::from_slice(event.data.as_ref().unwrap()).unwrap();
        v3.validate(ty, &data).unwrap();
        for f in v2_fields.iter().chain(&v3_fields) {
            assert!(data.get(f).is_some(), "{f} filled in: {data}");
        }
    }
    raw.close().await.unwrap();
}

/// Properties version `to` declares that version `from` does not.
fn new_fields(registry: &Registry, ty: &str, from: u32, to: u32) -> Vec<String> {
    let props = |v: u32| -> Vec<String> {
        registry.version(ty, v).unwrap().schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    let old = props(from);
    props(to).into_iter().filter(|p| !old.contains(p)).collect()
}
