//! `ovasabi events publish | tail | topics`.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use ovasabi_core::format::json;
use ovasabi_core::naming::{validate_event_type, validate_topic};
use ovasabi_core::{Bus, Event, StartFrom, SubscribeOptions, TopicPattern};

use crate::cli::{EventsCommand, Format, Global, PublishArgs, TailArgs, TopicsArgs};
use crate::cmd::{ask_api, open_bus, open_bus_unless_held, query_value};
use crate::failure::Failure;
use crate::output::outln;

/// Runs an `events` command.
pub(crate) async fn run(global: &Global, cmd: EventsCommand) -> Result<(), Failure> {
    match cmd {
        EventsCommand::Publish(args) => publish(global, args).await,
        EventsCommand::Tail(args) => tail(global, args).await,
        EventsCommand::Topics(args) => topics(global, args).await,
    }
}

/// Builds the event from the arguments; every problem is a usage failure, found before the
/// bus is opened, so nothing is written.
fn build_event(args: &PublishArgs, max_event_bytes: usize) -> Result<Event, Failure> {
    validate_topic(&args.topic).map_err(|e| Failure::usage(e.to_string()))?;
    validate_event_type(&args.ty).map_err(Failure::usage)?;
    let value: serde_json::Value = serde_json::from_str(&args.data).map_err(|e| {
        Failure::usage(format!(
            "--data is not valid JSON: {e} (e.g. --data '{{\"user_id\":\"u1\"}}')"
        ))
    })?;
    let mut event = Event::new(&args.ty, &args.source);
    // Keep the payload's bytes as given (minus surrounding space), not a re-serialisation.
    event.data = Some(Bytes::from(args.data.trim().to_owned()));
    event.datacontenttype = Some("application/json".into());
    drop(value);
    if let Some(id) = &args.id {
        event.id = id.clone();
    }
    if let Some(key) = &args.key {
        event = event.with_partition_key(key);
    }
    event.subject = args.subject.clone();
    event
        .validate()
        .map_err(|e| Failure::usage(format!("invalid event: {e}")))?;
    if event.data_len() > max_event_bytes {
        return Err(Failure::usage(format!(
            "event too large: --data is {} bytes and the maximum is {max_event_bytes} (--max-event-bytes)",
            event.data_len()
        )));
    }
    Ok(event)
}

async fn publish(global: &Global, args: PublishArgs) -> Result<(), Failure> {
    let event = build_event(&args, global.max_event_bytes)?;
    let id = event.id.clone();
    let (topic, offset) = match open_bus_unless_held(global).await? {
        Some(bus) => {
            let result = bus.publish(&args.topic, event).await;
            bus.close().await?;
            let published = result?;
            (published.topic, published.offset)
        }
        None => publish_through_api(&args.api, &args.topic, &event).await?,
    };
    match args.format {
        Format::Json => outln!(
            "{}",
            serde_json::json!({"id": id, "topic": topic, "offset": offset})
        ),
        Format::Pretty => outln!("published {id} to {topic} at offset {offset}"),
    }
    Ok(())
}

/// `POST <api>/v1/events?topic=` of the running platform that holds the embedded bus; its
/// topic and offset.
async fn publish_through_api(
    api: &str,
    topic: &str,
    event: &Event,
) -> Result<(String, u64), Failure> {
    let path = format!("/v1/events?topic={}", query_value(topic));
    let answer = ask_api(
        api,
        reqwest::Method::POST,
        &path,
        Some(&json::to_json_value(event)),
    )
    .await?;
    match (answer["topic"].as_str(), answer["offset"].as_u64()) {
        (Some(topic), Some(offset)) => Ok((topic.to_owned(), offset)),
        _ => Err(Failure::runtime(format!(
            "the platform at {api} answered without a topic and offset: {answer}"
        ))),
    }
}

async fn tail(global: &Global, args: TailArgs) -> Result<(), Failure> {
    let pattern = TopicPattern::parse(&args.topic).map_err(|e| Failure::usage(e.to_string()))?;
    let start = StartFrom::parse(&args.from).map_err(|e| Failure::usage(format!("--from: {e}")))?;
    if let Some(0) = args.limit {
        return Ok(());
    }
    let bus = open_bus(global).await?;
    let result = tail_bus(&*bus, &args, pattern, start).await;
    bus.close().await?;
    result
}

async fn tail_bus(
    bus: &dyn Bus,
    args: &TailArgs,
    pattern: TopicPattern,
    start: StartFrom,
) -> Result<(), Failure> {
    // Without --follow, stop at the end of what exists now.
    let ends: HashMap<String, u64> = bus
        .topics()
        .await?
        .into_iter()
        .filter(|t| pattern.matches(&t.topic))
        .map(|t| (t.topic, t.next_offset))
        .collect();
    if !args.follow && ends.is_empty() {
        let known: Vec<String> = bus.topics().await?.into_iter().map(|t| t.topic).collect();
        return Err(Failure::usage(format!(
            "no topic matches `{}`; known topics: {}",
            args.topic,
            if known.is_empty() {
                "none yet".to_owned()
            } else {
                known.join(", ")
            }
        )));
    }
    let (group, ephemeral) = match &args.group {
        Some(g) => (g.clone(), false),
        None => ("tail".to_owned(), true),
    };
    let options = SubscribeOptions::new(group, [args.topic.as_str()])?
        .start(start)
        .ephemeral(ephemeral)
        .ordering(ovasabi_core::Ordering::None)
        .max_in_flight(1);
    let mut sub = bus.subscribe(options).await?;
    let mut remaining: HashMap<String, u64> =
        ends.into_iter().filter(|(_, end)| *end > 0).collect();
    // Per topic: the lowest offset printed and how many were printed below the end, so the
    // tail stops only once every offset from the first printed to the end was printed, even
    // when a bus hands events of different keys out of offset order.
    let mut seen: HashMap<String, (u64, u64)> = HashMap::new();
    let mut printed = 0usize;
    let stdout = std::io::stdout();
    loop {
        if !args.follow && remaining.is_empty() {
            break;
        }
        let next = if args.follow {
            tokio::select! {
                d = sub.next() => d,
                _ = tokio::signal::ctrl_c() => None,
            }
        } else {
            // Idle for a second with nothing left to read: the rest was removed by retention
            // or already consumed by the group.
            match tokio::time::timeout(Duration::from_secs(1), sub.next()).await {
                Ok(d) => d,
                Err(_) => break,
            }
        };
        let Some(delivery) = next else { break };
        let delivery = delivery?;
        let info = delivery.info().clone();
        {
            let mut out = stdout.lock();
            let line = match args.format {
                Format::Json => json::to_json_string(delivery.event()),
                Format::Pretty => pretty(delivery.event(), &info),
            };
            if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
                return Ok(()); // stdout closed (e.g. piped into `head`)
            }
        }
        delivery.ack().await?;
        printed += 1;
        if let Some(&end) = remaining.get(&info.topic) {
            if info.offset < end {
                let (low, count) = seen.entry(info.topic.clone()).or_insert((info.offset, 0));
                *low = (*low).min(info.offset);
                *count += 1;
                if *count >= end - *low {
                    remaining.remove(&info.topic);
                }
            }
        }
        if args.limit.is_some_and(|l| printed >= l) {
            break;
        }
    }
    sub.close().await;
    Ok(())
}

fn pretty(event: &Event, info: &ovasabi_core::DeliveryInfo) -> String {
    let time = event
        .time
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default();
    let mut head = format!(
        "{} #{}  {}  {}  id={}",
        info.topic, info.offset, time, event.ty, event.id
    );
    if let Some(s) = &event.subject {
        head.push_str(&format!("  subject={s}"));
    }
    if let Some(k) = event.partition_key() {
        head.push_str(&format!("  key={k}"));
    }
    let body = match (&event.data, event.data_is_json()) {
        (Some(d), true) => String::from_utf8_lossy(d).into_owned(),
        (Some(d), false) => format!(
            "<{} bytes of {}>",
            d.len(),
            event.datacontenttype.as_deref().unwrap_or("data")
        ),
        (None, _) => "<no data>".to_owned(),
    };
    format!("{head}\n  {body}")
}

async fn topics(global: &Global, args: TopicsArgs) -> Result<(), Failure> {
    let bus = open_bus(global).await?;
    let result = bus.topics().await;
    bus.close().await?;
    let topics = result?;
    match args.format {
        Format::Json => {
            outln!(
                "{}",
                serde_json::to_string(&serde_json::json!({ "topics": topics })).unwrap_or_default()
            );
        }
        Format::Pretty => {
            if topics.is_empty() {
                outln!("no topics yet: publish one with `ovasabi events publish --topic user.events --type user.registered --data '{{}}'`");
                return Ok(());
            }
            let width = topics
                .iter()
                .map(|t| t.topic.len())
                .max()
                .unwrap_or(5)
                .max(5);
            outln!(
                "{:width$}  {:>10}  {:>10}  {:>10}  GROUPS (lag)",
                "TOPIC",
                "EVENTS",
                "FIRST",
                "NEXT"
            );
            for t in &topics {
                let groups = if t.groups.is_empty() {
                    "-".to_owned()
                } else {
                    t.groups
                        .iter()
                        .map(|g| format!("{} ({})", g.group, g.lag))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                outln!(
                    "{:width$}  {:>10}  {:>10}  {:>10}  {groups}",
                    t.topic,
                    t.retained,
                    t.first_offset,
                    t.next_offset
                );
            }
        }
    }
    Ok(())
}
