//! Publishing and delivery: fidelity, fan-out to groups, competing members, topic isolation,
//! size limits, refused input, batches and topic inspection.

use std::collections::BTreeSet;

use bytes::Bytes;
use chrono::DateTime;
use ovasabi_core::event::{EXT_CAUSATIONID, EXT_CORRELATIONID, EXT_TRACEPARENT, EXT_TRACESTATE};
use ovasabi_core::{BusError, Event, ExtensionValue};

use crate::harness::{
    ack_all, join_all_tasks, list, range, run, Context, Ctx, BULK_TIMEOUT, EVENT_TYPE,
};
use crate::{Backend, Failure};

/// 100 JSON events, a binary one and a bare one arrive with every attribute intact, with
/// the right delivery info.
pub async fn publish_subscribe(backend: &dyn Backend) -> Result<(), Failure> {
    run(backend, "publish_subscribe", &[], |ctx, _| async move {
        let topic = ctx.topic("events");
        let options = ctx.options("readers", [&topic])?;
        let group = options.group.clone();
        let mut pump = ctx.pump(options, 1).await?;

        let mut sent: Vec<Event> = (0..100).map(|i| rich_event(&ctx, i)).collect();
        sent.push(binary_event(&ctx, 100));
        // A bare event: no data, no time (publishing fills the time in), no extensions.
        sent.push(Event::new(EVENT_TYPE, ctx.source()).with_id(ctx.event_id(101)));
        let mut offsets = Vec::with_capacity(sent.len());
        for event in &sent {
            offsets.push(ctx.publish(&topic, event.clone()).await?.offset);
        }
        ensure!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "offsets of events published one after another to one topic must grow; got {offsets:?}"
        );

        let tally = ack_all(&ctx, &mut pump, &range(0, sent.len()), ctx.scaled(BULK_TIMEOUT)).await?;
        pump.settle("every event was acked").await?;
        tally.check_duplicates(&ctx)?;
        for (i, want) in sent.iter().enumerate() {
            compare_events(want, &tally.events[&i])
                .map_err(|m| Failure::new(format!("event {i} changed between publish and delivery: {m}")))?;
            ensure!(
                tally.offsets[&i] == offsets[i],
                "event {i} was published at offset {} but delivered with offset {}",
                offsets[i],
                tally.offsets[&i]
            );
        }
        for (i, attempt, _, delivered_topic) in &tally.deliveries {
            ensure!(
                delivered_topic == &topic,
                "event {i} was delivered with topic `{delivered_topic}`, expected `{topic}`"
            );
            ensure!(*attempt == 1, "event {i} was delivered with attempt {attempt}, expected 1 (nothing was nacked and the ack timeout is 30 s)");
        }
        ensure!(
            tally.groups.iter().all(|g| g == &group),
            "deliveries named groups {:?}, expected only `{group}`",
            tally.groups
        );
        pump.close().await
    })
    .await
}

/// 5,000 events from 50 concurrent publishers, 50 competing subscribers in one group: all
/// acked, no duplicate that is not a redelivery.
pub async fn concurrent_subscribe(backend: &dyn Backend) -> Result<(), Failure> {
    const EVENTS: usize = 5000;
    const PUBLISHERS: usize = 50;
    const SUBSCRIBERS: usize = 50;
    run(backend, "concurrent_subscribe", &[], |ctx, _| async move {
        let topic = ctx.topic("events");
        let mut pump = ctx.pump(ctx.options("competing", [&topic])?, SUBSCRIBERS).await?;
        let events = (0..EVENTS).map(|i| ctx.event(i)).collect();
        let all = range(0, EVENTS);
        let (_, tally) = tokio::try_join!(
            ctx.publish_concurrently(&topic, events, PUBLISHERS),
            ack_all(&ctx, &mut pump, &all, ctx.scaled(BULK_TIMEOUT)),
        )?;
        pump.settle("all 5,000 events were acked").await?;
        tally.check_duplicates(&ctx)?;
        let members: BTreeSet<usize> = tally.deliveries.iter().map(|d| d.2).collect();
        println!(
            "note: concurrent_subscribe on {}: {} deliveries spread over {} of {SUBSCRIBERS} members",
            ctx.caps().name,
            tally.deliveries.len(),
            members.len()
        );
        pump.close().await
    })
    .await
}

/// 20 topics × 100 events at once; each topic's subscriber gets exactly its own 100.
pub async fn many_topics(backend: &dyn Backend) -> Result<(), Failure> {
    const TOPICS: usize = 20;
    const PER_TOPIC: usize = 100;
    run(backend, "many_topics", &[], |ctx, _| async move {
        let tasks: Vec<_> = (0..TOPICS)
            .map(|t| {
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    let topic = ctx.topic(&format!("t{t}"));
                    let mut pump = ctx.pump(ctx.options(&format!("g{t}"), [&topic])?, 1).await?;
                    // Each topic has its own indexes, so a stray event is recognised.
                    let first = t * PER_TOPIC;
                    let events = (first..first + PER_TOPIC).map(|i| ctx.event(i)).collect();
                    ctx.publish_concurrently(&topic, events, 4).await?;
                    let tally = ack_all(
                        &ctx,
                        &mut pump,
                        &range(first, first + PER_TOPIC),
                        ctx.scaled(BULK_TIMEOUT),
                    )
                    .await?;
                    pump.settle("the topic's 100 events were acked").await?;
                    for (i, _, _, delivered_topic) in &tally.deliveries {
                        ensure!(
                            delivered_topic == &topic,
                            "event {i} was delivered with topic `{delivered_topic}`, expected `{topic}`"
                        );
                    }
                    pump.close().await.context(format!("topic `{topic}`"))
                })
            })
            .collect();
        for outcome in join_all_tasks(tasks, "a topic's task").await? {
            outcome?;
        }
        Ok(())
    })
    .await
}

/// Two groups of three competing members each receive all 1,000 events.
pub async fn two_groups_each_get_all(backend: &dyn Backend) -> Result<(), Failure> {
    const EVENTS: usize = 1000;
    run(
        backend,
        "two_groups_each_get_all",
        &[],
        |ctx, _| async move {
            let topic = ctx.topic("events");
            let mut first = ctx.pump(ctx.options("first", [&topic])?, 3).await?;
            let mut second = ctx.pump(ctx.options("second", [&topic])?, 3).await?;
            let all = range(0, EVENTS);
            let within = ctx.scaled(BULK_TIMEOUT);
            let events = (0..EVENTS).map(|i| ctx.event(i)).collect();
            let (_, first_tally, second_tally) = tokio::try_join!(
                ctx.publish_concurrently(&topic, events, 10),
                async {
                    ack_all(&ctx, &mut first, &all, within)
                        .await
                        .context("group `first`")
                },
                async {
                    ack_all(&ctx, &mut second, &all, within)
                        .await
                        .context("group `second`")
                },
            )?;
            first.settle("group `first` acked every event").await?;
            second.settle("group `second` acked every event").await?;
            first_tally
                .check_duplicates(&ctx)
                .context("group `first`")?;
            second_tally
                .check_duplicates(&ctx)
                .context("group `second`")?;
            first.close().await?;
            second.close().await
        },
    )
    .await
}

/// A subscriber of one topic sees only that topic; `*` matches one level, `>` all levels,
/// including topics that appear after the subscription.
pub async fn topic_isolation(backend: &dyn Backend) -> Result<(), Failure> {
    run(backend, "topic_isolation", &[], |ctx, _| async move {
        let prefix = ctx.topic_prefix();
        let a = ctx.topic("a");
        let b = ctx.topic("b");
        let deep = ctx.topic("a.deep");
        let one_level = format!("{prefix}.*");
        let all_levels = format!("{prefix}.>");
        let mut only_a = ctx.pump(ctx.options("only-a", [&a])?, 1).await?;
        let mut only_b = ctx.pump(ctx.options("only-b", [&b])?, 1).await?;
        let mut star = ctx.pump(ctx.options("one-level", [&one_level])?, 1).await?;
        let mut rest = ctx.pump(ctx.options("all-levels", [&all_levels])?, 1).await?;

        // Events 0..10 go to a, 10..20 to b, 20..30 to a.deep.
        let topic_of = |i: usize| match i / 10 {
            0 => a.clone(),
            1 => b.clone(),
            _ => deep.clone(),
        };
        let publishing: Vec<_> = (0..30)
            .map(|i| {
                let ctx = ctx.clone();
                let topic = topic_of(i);
                tokio::spawn(async move { ctx.publish(&topic, ctx.event(i)).await })
            })
            .collect();
        for outcome in join_all_tasks(publishing, "a publishing task").await? {
            outcome?;
        }

        let within = ctx.scaled(BULK_TIMEOUT);
        let checks = [
            (&mut only_a, a.clone(), range(0, 10)),
            (&mut only_b, b.clone(), range(10, 20)),
            (&mut star, one_level.clone(), range(0, 20)),
            (&mut rest, all_levels.clone(), range(0, 30)),
        ];
        for (pump, subscribed, want) in checks {
            let tally = ack_all(&ctx, pump, &want, within)
                .await
                .context(format!("subscriber of `{subscribed}`"))?;
            pump.settle(format!("the subscriber of `{subscribed}` acked every event it matches"))
                .await?;
            for (i, _, _, delivered_topic) in &tally.deliveries {
                ensure!(
                    delivered_topic == &topic_of(*i),
                    "event {i} was delivered to the subscriber of `{subscribed}` with topic `{delivered_topic}`; it was published to `{}`",
                    topic_of(*i)
                );
            }
        }
        only_a.close().await?;
        only_b.close().await?;
        star.close().await?;
        rest.close().await
    })
    .await
}

/// 64 KiB and exactly-the-limit payloads round trip; one byte more is refused with
/// `EventTooLarge` and nothing is written, alone or in a batch.
pub async fn large_events(backend: &dyn Backend) -> Result<(), Failure> {
    run(backend, "large_events", &[], |ctx, _| async move {
        let max = ctx.caps().max_data_bytes;
        let topic = ctx.topic("large");
        let mut pump = ctx.pump(ctx.options("large", [&topic])?, 1).await?;
        let payload =
            |len: usize| Bytes::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
        let sent = [
            ctx.event(0)
                .with_data("application/octet-stream", payload(64 * 1024)),
            ctx.event(1)
                .with_data("application/octet-stream", payload(max)),
        ];
        for event in &sent {
            ctx.publish(&topic, event.clone())
                .await
                .context(format!("an event of {} bytes of data", event.data_len()))?;
        }

        let too_large = ctx
            .event(2)
            .with_data("application/octet-stream", payload(max + 1));
        let refused = ctx
            .refused(
                format!("publishing {} bytes of data (the limit is {max})", max + 1),
                ctx.bus().publish(&topic, too_large.clone()),
            )
            .await?;
        check_too_large(refused, max, "publish")?;
        let batch = vec![ctx.event(3), too_large];
        let refused = ctx
            .refused(
                "publishing a batch holding one event over the limit",
                ctx.bus().publish_batch(&topic, batch),
            )
            .await?;
        check_too_large(refused, max, "publish_batch")?;

        let tally = ack_all(&ctx, &mut pump, &range(0, 2), ctx.scaled(BULK_TIMEOUT)).await?;
        pump.settle("the events over the limit were refused, so nothing else was written")
            .await?;
        for (i, want) in sent.iter().enumerate() {
            compare_events(want, &tally.events[&i])
                .map_err(|m| Failure::new(format!("event {i} changed in transit: {m}")))?;
        }
        pump.close().await
    })
    .await
}

fn check_too_large(error: BusError, max: usize, call: &str) -> Result<(), Failure> {
    match error {
        BusError::EventTooLarge { size, max: limit } => {
            ensure!(
                size == max + 1 && limit == max,
                "{call} refused the event with EventTooLarge {{ size: {size}, max: {limit} }}, expected size {} and max {max}",
                max + 1
            );
            Ok(())
        }
        other => fail!(
            "{call} of an event over the limit returned `{other}` (code {}), expected EventTooLarge",
            other.code()
        ),
    }
}

/// Empty id, source or type, and bad topic names, are refused with the right error and
/// write nothing, alone or in a batch.
pub async fn invalid_input(backend: &dyn Backend) -> Result<(), Failure> {
    run(backend, "invalid_input", &[], |ctx, _| async move {
        let topic = ctx.topic("guarded");
        let mut pump = ctx.pump(ctx.options("guarded", [&topic])?, 1).await?;
        let bus = ctx.bus();

        let mut no_source = ctx.event(1);
        no_source.source.clear();
        let mut no_type = ctx.event(2);
        no_type.ty.clear();
        let cases = [
            ("an empty id", ctx.event(0).with_id(""), "id"),
            ("an empty source", no_source, "source"),
            ("an empty type", no_type, "type"),
        ];
        for (what, event, attribute) in cases {
            let error = ctx
                .refused(format!("publishing an event with {what}"), bus.publish(&topic, event))
                .await?;
            check_invalid_event(error, attribute, &format!("publishing an event with {what}"))?;
        }

        let long = "a".repeat(250);
        let bad_topics = [
            "",
            "Conf.upper",
            "conf..empty",
            ".conf",
            "conf.",
            "conf.wild.*",
            "conf.rest.>",
            "conf.with space",
            "conf/slash",
            long.as_str(),
        ];
        for bad in bad_topics {
            let error = ctx
                .refused(format!("publishing to topic `{bad}`"), bus.publish(bad, ctx.event(10)))
                .await?;
            ensure!(
                matches!(error, BusError::InvalidTopic { .. }),
                "publishing to topic `{bad}` returned `{error}` (code {}), expected InvalidTopic",
                error.code()
            );
        }

        let batch = vec![ctx.event(20), ctx.event(21), ctx.event(22).with_id("")];
        let error = ctx
            .refused("publishing a batch whose third event has an empty id", bus.publish_batch(&topic, batch))
            .await?;
        check_invalid_event(error, "id", "publishing a batch whose third event has an empty id")?;
        let error = ctx
            .refused("publishing a batch to topic `Bad.Topic`", bus.publish_batch("Bad.Topic", vec![ctx.event(23)]))
            .await?;
        ensure!(
            matches!(error, BusError::InvalidTopic { .. }),
            "publishing a batch to `Bad.Topic` returned `{error}`, expected InvalidTopic"
        );

        // Nothing refused was written: the first good event takes the topic's first offset.
        let sentinel = ctx.publish(&topic, ctx.event(30)).await?;
        ensure!(
            sentinel.offset == 0,
            "the first event accepted on a new topic landed at offset {}, expected 0: refused events took offsets",
            sentinel.offset
        );
        ack_all(&ctx, &mut pump, &range(30, 31), ctx.scaled(BULK_TIMEOUT)).await?;
        pump.settle("every refused event must have written nothing").await?;
        pump.close().await
    })
    .await
}

fn check_invalid_event(error: BusError, attribute: &str, what: &str) -> Result<(), Failure> {
    match error {
        BusError::InvalidEvent(v) => {
            ensure!(
                v.attribute == attribute,
                "{what} was refused naming attribute `{}` ({}), expected `{attribute}`",
                v.attribute,
                v.reason
            );
            Ok(())
        }
        other => fail!(
            "{what} returned `{other}` (code {}), expected InvalidEvent naming `{attribute}`",
            other.code()
        ),
    }
}

/// `publish_batch` of 500 returns 500 offsets in order; an empty batch is fine; one key's
/// events are delivered in publish order.
pub async fn batch_publish(backend: &dyn Backend) -> Result<(), Failure> {
    const BATCH: usize = 500;
    run(backend, "batch_publish", &[], |ctx, _| async move {
        let topic = ctx.topic("batched");
        let mut pump = ctx.pump(ctx.options("batched", [&topic])?, 1).await?;
        let bus = ctx.bus();
        let keyed = |i: usize| ctx.event(i).with_partition_key("one-key");

        let batch = (0..BATCH).map(keyed).collect();
        let published = ctx.op("publishing a batch of 500", bus.publish_batch(&topic, batch)).await?;
        check_batch_offsets(&published, &topic, 0, BATCH)?;
        let empty = ctx.op("publishing an empty batch", bus.publish_batch(&topic, Vec::new())).await?;
        ensure!(empty.is_empty(), "an empty batch returned {} results", empty.len());
        let more = (BATCH..BATCH + 3).map(keyed).collect();
        let published = ctx.op("publishing a second batch of 3", bus.publish_batch(&topic, more)).await?;
        check_batch_offsets(&published, &topic, BATCH as u64, 3)?;

        let tally = ack_all(&ctx, &mut pump, &range(0, BATCH + 3), ctx.scaled(BULK_TIMEOUT)).await?;
        pump.settle("every batched event was acked").await?;
        tally.check_duplicates(&ctx)?;
        if !ctx.skip_part("delivery order of one key", crate::harness::Need::OrderPerKey) {
            let order = tally.first_delivery_order();
            if let Some(at) = order.iter().enumerate().position(|(n, i)| n != *i) {
                fail!(
                    "events of one partition key were delivered out of publish order: position {at} got event {}, expected {at}; deliveries around it: {}",
                    order[at],
                    list(order[at.saturating_sub(3)..].iter().copied())
                );
            }
        }
        pump.close().await
    })
    .await
}

fn check_batch_offsets(
    published: &[ovasabi_core::Published],
    topic: &str,
    first: u64,
    count: usize,
) -> Result<(), Failure> {
    ensure!(
        published.len() == count,
        "a batch of {count} returned {} results",
        published.len()
    );
    for (n, p) in published.iter().enumerate() {
        ensure!(
            p.topic == topic,
            "batch result {n} names topic `{}`, expected `{topic}`",
            p.topic
        );
        ensure!(
            p.offset == first + n as u64,
            "batch result {n} has offset {}, expected {} (a batch on a topic nobody else writes lands contiguously, in order, starting at {first})",
            p.offset,
            first + n as u64
        );
    }
    Ok(())
}

/// `Bus::topics` reports retained events, offsets, and a durable group's position and lag
/// after partial acks; ephemeral groups are not listed; topics are sorted.
pub async fn topics_report_counts(backend: &dyn Backend) -> Result<(), Failure> {
    run(backend, "topics_report_counts", &[], |ctx, _| async move {
        let topic = ctx.topic("counted");
        let durable = ctx.options("counted", [&topic])?;
        let ephemeral = ctx.options("passing", [&topic])?.ephemeral(true);
        let (durable_group, ephemeral_group) = (durable.group.clone(), ephemeral.group.clone());
        let mut pump = ctx.pump(durable, 1).await?;
        let passing = ctx.pump(ephemeral, 1).await?;
        for i in 0..10 {
            ctx.publish(&topic, ctx.event(i).with_partition_key("k")).await?;
        }
        // One key, so the group's deliveries come in order: ack offsets 0..4.
        for i in 0..4 {
            let seen = pump.expect(format!("event {i}")).await?;
            ensure!(seen.index == i, "expected event {i} (one key, in order), got {}", seen.describe());
            seen.ack(&ctx).await?;
        }
        pump.close().await?;

        let topics = ctx.op("listing topics", ctx.bus().topics()).await?;
        ensure!(
            topics.windows(2).all(|w| w[0].topic < w[1].topic),
            "Bus::topics must be sorted by name"
        );
        let Some(info) = topics.iter().find(|t| t.topic == topic) else {
            fail!("Bus::topics does not list `{topic}`, which holds 10 events");
        };
        ensure!(
            (info.retained, info.first_offset, info.next_offset) == (10, 0, 10),
            "topic `{topic}`: retained {}, first_offset {}, next_offset {}; expected 10, 0, 10",
            info.retained,
            info.first_offset,
            info.next_offset
        );
        let Some(group) = info.groups.iter().find(|g| g.group == durable_group) else {
            fail!("Bus::topics does not list group `{durable_group}` under `{topic}`; it lists {:?}", info.groups);
        };
        ensure!(
            (group.position, group.lag) == (4, 6),
            "group `{durable_group}` acked offsets 0..4 of 10: expected position 4 and lag 6, got position {} and lag {}",
            group.position,
            group.lag
        );
        ensure!(
            info.groups.iter().all(|g| g.group != ephemeral_group),
            "ephemeral group `{ephemeral_group}` is listed by Bus::topics, which lists durable groups only"
        );
        passing.close().await
    })
    .await
}

/// Event `i` with every attribute set, and extensions of every type.
fn rich_event(ctx: &Ctx, i: usize) -> Event {
    let time = DateTime::from_timestamp_millis(1_795_000_000_000 + i as i64 * 1_001)
        .expect("a valid time");
    let mut event = ctx
        .event(i)
        .with_subject(format!("item-{i}"))
        .with_json(&serde_json::json!({
            "n": i,
            "text": "héllo ✓ \"quoted\"",
            "nested": { "list": [1, 2, 3], "none": null, "flag": true },
        }))
        .with_extension(
            EXT_TRACEPARENT,
            format!("00-{:032x}-{:016x}-01", i + 1, i + 7),
        )
        .with_extension(EXT_TRACESTATE, "ovasabi=conformance")
        .with_extension(EXT_CORRELATIONID, format!("flow-{}", i / 10))
        .with_extension(EXT_CAUSATIONID, format!("cause-{i}"))
        .with_partition_key(format!("key-{}", i % 7))
        .with_extension(
            "conformancecustom",
            "a value with spaces, ünïcode & symbols",
        )
        .with_extension("conformanceint", i as i64)
        .with_extension("conformanceflag", i & 1 == 0);
    event.time = Some(time);
    event.dataschema = Some("https://schemas.ovasabi.dev/conformance/tested/v1.json".to_owned());
    event.set_sequence(i as u64 + 1);
    if i == 50 {
        // JSON a re-serialiser would change (spacing, key order, `2.50`): it must arrive as sent.
        event.data = Some(Bytes::from_static(b"{ \"b\" : 1,\n  \"a\": [ 1, 2.50 ] }"));
        event.datacontenttype = Some("application/json; charset=utf-8".to_owned());
    }
    event
}

/// Event `i` with an opaque payload holding every byte value (not UTF-8).
fn binary_event(ctx: &Ctx, i: usize) -> Event {
    let data: Vec<u8> = (0..1024u32).map(|b| (b * 37 % 256) as u8).collect();
    ctx.event(i)
        .with_subject("binary")
        .with_data("application/octet-stream", data)
        .with_extension("conformancecustom", "binary")
}

/// What differs between the event sent and the event delivered. Extensions of type Integer
/// or Boolean may arrive as their canonical string (binary modes carry every extension as a
/// string); everything else must be equal, `data` byte for byte. An event sent without a
/// time must arrive with one.
pub(crate) fn compare_events(sent: &Event, got: &Event) -> Result<(), String> {
    let mut diffs = Vec::new();
    let mut field = |name: &str, a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug, same: bool| {
        if !same {
            diffs.push(format!("{name}: sent {a:?}, got {b:?}"));
        }
    };
    field("id", &sent.id, &got.id, sent.id == got.id);
    field(
        "source",
        &sent.source,
        &got.source,
        sent.source == got.source,
    );
    field("type", &sent.ty, &got.ty, sent.ty == got.ty);
    field(
        "subject",
        &sent.subject,
        &got.subject,
        sent.subject == got.subject,
    );
    field(
        "datacontenttype",
        &sent.datacontenttype,
        &got.datacontenttype,
        sent.datacontenttype == got.datacontenttype,
    );
    field(
        "dataschema",
        &sent.dataschema,
        &got.dataschema,
        sent.dataschema == got.dataschema,
    );
    match sent.time {
        Some(t) => field("time", &sent.time, &got.time, got.time == Some(t)),
        None => field(
            "time (filled in on publish)",
            &"Some(_)",
            &got.time,
            got.time.is_some(),
        ),
    }
    match (&sent.data, &got.data) {
        (Some(a), Some(b)) if a != b => {
            let at = a
                .iter()
                .zip(b.iter())
                .position(|(x, y)| x != y)
                .unwrap_or(a.len().min(b.len()));
            diffs.push(format!(
                "data: sent {} bytes, got {} bytes, first difference at byte {at}",
                a.len(),
                b.len()
            ));
        }
        (Some(_), None) | (None, Some(_)) => diffs.push(format!(
            "data: sent {:?} bytes, got {:?} bytes",
            sent.data.as_ref().map(Bytes::len),
            got.data.as_ref().map(Bytes::len)
        )),
        _ => {}
    }
    for (name, value) in &sent.extensions {
        match got.extensions.get(name) {
            None => diffs.push(format!("extension `{name}` is missing (sent {value:?})")),
            Some(g) if g == value => {}
            Some(ExtensionValue::String(s))
                if !matches!(value, ExtensionValue::String(_))
                    && *s == value.to_canonical_string() => {}
            Some(g) => diffs.push(format!("extension `{name}`: sent {value:?}, got {g:?}")),
        }
    }
    for name in got.extensions.keys() {
        if !sent.extensions.contains_key(name) {
            diffs.push(format!("extension `{name}` was added in transit"));
        }
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(diffs.join("; "))
    }
}
