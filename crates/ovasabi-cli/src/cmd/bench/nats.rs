//! `ovasabi bench nats`: the NATS JetStream bus beside raw async-nats doing the same work,
//! measured in the same run against the same server.
//!
//! Each round, on two fresh streams provisioned alike (`bench.nats.<token>.r<n>.raw` and
//! `….bus`, file storage, no partition key so every event goes to the `.u` subject):
//! - **publish**: raw `jetstream::Context::send_publish` with the headers our bus sends
//!   (binary-mode CloudEvents `ce-*`, `Nats-Msg-Id`, `Nats-Expected-Stream`) and
//!   `--in-flight` PubAck futures outstanding, against `NatsBus::publish` with as many
//!   publishes outstanding. Both count an event once its PubAck arrived.
//! - **consume + ack**: on the stream our bus just filled, a raw durable pull consumer
//!   (`Consumer::messages()`, its defaults) acking each message the way our bus acks a
//!   delivery, `+ACK` sent as a request whose reply confirms it, against a group of our bus
//!   (`Ordering::None`, `max_in_flight = --in-flight`) doing `next()` then `ack()`. Both keep
//!   at most `--in-flight` messages unacked. A second baseline acks without confirmation
//!   (`Message::ack`), to show what the confirmation costs.
//!
//! The raw messages' ids are shaped like the UUIDv7 ids our events get, so both sides send
//! headers of the same sizes (shorter ids made the server's work per message, its
//! deduplication, about 10% lighter for raw).
//!
//! Raw and ours take turns going first, each on its own connection. The table shows the
//! median of the rounds for each figure and, as the ratio, the median of the rounds' own
//! ratios (each pairs two measurements taken seconds apart, which a noisy machine disturbs
//! less than two medians of measurements taken further apart). The streams are deleted after
//! each round, when the command fails and on Ctrl-C; streams of a run that was killed are
//! deleted by the next run once they are ten minutes old.

use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt, TryStreamExt};
use ovasabi_core::{Bus as _, Event, Ordering, Publisher, StartFrom, SubscribeOptions, Subscriber};
use ovasabi_nats::async_nats::jetstream::context::PublishAckFuture;
use ovasabi_nats::async_nats::jetstream::{self, consumer, message::PublishMessage};
use ovasabi_nats::async_nats::{self, HeaderMap, Subject};
use ovasabi_nats::{layout, provision, NatsBus, NatsConfig, ProvisionConfig};
use serde::Serialize;

use super::{print_table, progress, Row};
use crate::cli::{BenchNatsArgs, Format, Global};
use crate::failure::Failure;
use crate::output::outln;

const EVENT_TYPE: &str = "bench.measured";
const SOURCE: &str = "/ovasabi/bench";
const CONTENT_TYPE: &str = "application/octet-stream";
/// Prefix of every topic this command creates.
const TOPIC_PREFIX: &str = "bench.nats";
/// Streams of an earlier run older than this are left over from a run that was killed.
const STALE_AFTER: Duration = Duration::from_secs(10 * 60);

/// One round's figures, events per second (`None`: not measured, see `--only`).
#[derive(Clone, Copy, Debug, Default, Serialize)]
struct Round {
    round: usize,
    raw_publish: Option<f64>,
    bus_publish: Option<f64>,
    raw_consume_confirmed: Option<f64>,
    raw_consume_unconfirmed: Option<f64>,
    bus_consume: Option<f64>,
}

/// The streams this run created and has not deleted yet.
#[derive(Clone)]
struct Scratch {
    js: jetstream::Context,
    streams: Arc<Mutex<Vec<String>>>,
}

impl Scratch {
    fn note(&self, topic: &str) {
        self.streams
            .lock()
            .unwrap()
            .push(layout::stream_name(topic));
    }

    /// Deletes every stream noted so far.
    async fn clean(&self) {
        let streams = std::mem::take(&mut *self.streams.lock().unwrap());
        for stream in streams {
            let deleting = self.js.delete_stream(&stream);
            if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(5), deleting).await {
                if !e.to_string().contains("not found") {
                    eprintln!("warning: could not delete the benchmark's stream {stream}: {e}");
                }
            }
        }
    }
}

/// Runs `ovasabi bench nats`.
pub(super) async fn bench_nats(global: &Global, args: BenchNatsArgs) -> Result<(), Failure> {
    if args.events < 1000 || args.payload == 0 || args.in_flight == 0 || args.rounds == 0 {
        return Err(Failure::usage(
            "use --events ≥ 1000, --payload ≥ 1, --in-flight ≥ 1 and --rounds ≥ 1",
        ));
    }
    let url = args.url.clone().unwrap_or_else(|| {
        let bus = global.bus.trim();
        if bus.starts_with("nats://") || bus.starts_with("tls://") {
            bus.to_owned()
        } else {
            NatsConfig::DEFAULT_URL.to_owned()
        }
    });
    let client = async_nats::ConnectOptions::new()
        .name("ovasabi-bench-raw")
        .connect(url.as_str())
        .await
        .map_err(|e| {
            Failure::runtime(format!(
                "cannot connect to NATS at {url}: {e}; start a server with JetStream or pass --url"
            ))
        })?;
    let version = client.server_info().version;
    let scratch = Scratch {
        js: jetstream::new(client.clone()),
        streams: Arc::new(Mutex::new(Vec::new())),
    };
    remove_stale_streams(&scratch.js).await;
    let bus = NatsBus::connect(NatsConfig::new(&url).connection_name("ovasabi-bench")).await?;
    let f = args.format;
    if f == Format::Pretty {
        eprintln!(
            "ovasabi bench nats: {} events of {} payload bytes per measurement, {} in flight, {} round(s), nats-server {version} at {url}",
            args.events, args.payload, args.in_flight, args.rounds
        );
    }
    let measured = tokio::select! {
        rounds = measure(&args, &bus, &client, &scratch) => rounds,
        _ = tokio::signal::ctrl_c() => Err(Failure::runtime(
            "interrupted; the benchmark's streams were deleted",
        )),
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), bus.close()).await;
    scratch.clean().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), client.flush()).await;
    let rounds = measured?;
    report(&args, &url, &version, &rounds);
    Ok(())
}

/// Every round, one after another.
async fn measure(
    args: &BenchNatsArgs,
    bus: &NatsBus,
    client: &async_nats::Client,
    scratch: &Scratch,
) -> Result<Vec<Round>, Failure> {
    let token = run_token();
    let payload: Bytes = (0..args.payload)
        .map(|i| b'a' + (i % 26) as u8)
        .collect::<Vec<u8>>()
        .into();
    let mut rounds = Vec::with_capacity(args.rounds);
    for r in 0..args.rounds {
        let raw_topic = format!("{TOPIC_PREFIX}.{token}.r{r}.raw");
        let bus_topic = format!("{TOPIC_PREFIX}.{token}.r{r}.bus");
        scratch.note(&raw_topic);
        scratch.note(&bus_topic);
        let config = ProvisionConfig {
            dead_letter_topics: false,
            ..ProvisionConfig::default()
        };
        provision::provision(bus, &config, &[&raw_topic, &bus_topic]).await?;
        let f = args.format;
        let n = args.events;
        let k = args.in_flight;
        let raw_first = r % 2 == 0;
        let step = |what: &str| progress(f, &format!("round {}/{}: {what}", r + 1, args.rounds));

        let publish = args.only.as_deref() != Some("consume");
        let consume = args.only.as_deref() != Some("publish");
        let mut round = Round {
            round: r + 1,
            ..Round::default()
        };
        for raw in [raw_first, !raw_first] {
            if raw && publish {
                step("publish, raw async-nats");
                round.raw_publish =
                    Some(publish_raw(&scratch.js, &raw_topic, &token, r, &payload, n, k).await?);
            } else if !raw {
                // Also what the consumers read, so it runs with --only consume too.
                step("publish, NatsBus");
                round.bus_publish =
                    Some(publish_bus(bus, &bus_topic, &payload, n, k).await?).filter(|_| publish);
            }
        }

        // Every consumer reads the stream our bus filled: the same N events.
        let order: [u8; 3] = if raw_first { [0, 1, 2] } else { [2, 0, 1] };
        for which in order.into_iter().filter(|_| consume) {
            match which {
                0 => {
                    step("consume + ack, raw pull consumer, ack confirmed");
                    round.raw_consume_confirmed = Some(
                        consume_raw(client, &scratch.js, &bus_topic, "raw-confirmed", n, k, true)
                            .await?,
                    );
                }
                1 => {
                    step("consume + ack, raw pull consumer, ack not confirmed");
                    round.raw_consume_unconfirmed = Some(
                        consume_raw(
                            client,
                            &scratch.js,
                            &bus_topic,
                            "raw-unconfirmed",
                            n,
                            k,
                            false,
                        )
                        .await?,
                    );
                }
                _ => {
                    step("consume + ack, NatsBus group");
                    round.bus_consume = Some(consume_bus(bus, &bus_topic, n, k).await?);
                }
            }
        }
        rounds.push(round);
        scratch.clean().await;
    }
    Ok(rounds)
}

/// A token unique to this run, for topic names.
fn run_token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{:x}{:06x}", std::process::id(), (nanos as u64) & 0xff_ffff)
}

/// An event id shaped like the UUIDv7 `Event::new` gives (36 characters, the time in its
/// first 48 bits), unique to this run, round and index: the raw messages then carry
/// headers of the very sizes ours do, and the server's deduplication keys them alike.
fn uuid_shaped(salt: u16, round: usize, i: usize) -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    format!(
        "{:08x}-{:04x}-7{:03x}-{:04x}-{:012x}",
        (millis >> 16) as u32,
        (millis & 0xffff) as u16,
        round & 0xfff,
        0x8000 | (salt & 0x3fff),
        i as u64 & 0xffff_ffff_ffff
    )
}

/// Raw async-nats: `n` messages with the headers our bus would send for the same event, at
/// most `in_flight` PubAcks awaited at once. Messages per second, once every PubAck arrived.
async fn publish_raw(
    js: &jetstream::Context,
    topic: &str,
    token: &str,
    round: usize,
    payload: &Bytes,
    n: usize,
    in_flight: usize,
) -> Result<f64, Failure> {
    let stream = layout::stream_name(topic);
    let subject = Subject::from(layout::unkeyed_subject(topic));
    let salt = token
        .bytes()
        .fold(0u16, |h, b| h.rotate_left(5) ^ u16::from(b));
    let failed = |e: &dyn std::fmt::Display| Failure::runtime(format!("raw publish: {e}"));
    let start = Instant::now();
    let mut acks: FuturesUnordered<<PublishAckFuture as IntoFuture>::IntoFuture> =
        FuturesUnordered::new();
    for i in 0..n {
        if acks.len() >= in_flight {
            if let Some(ack) = acks.next().await {
                ack.map_err(|e| failed(&e))?;
            }
        }
        let id = uuid_shaped(salt, round, i);
        let mut headers = HeaderMap::new();
        headers.insert("ce-specversion", "1.0");
        headers.insert("ce-id", id.as_str());
        headers.insert("ce-source", SOURCE);
        headers.insert("ce-type", EVENT_TYPE);
        headers.insert("ce-subject", format!("s{}", i % 64));
        headers.insert(
            "ce-time",
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        );
        headers.insert("ce-datacontenttype", CONTENT_TYPE);
        headers.insert("Nats-Msg-Id", layout::message_id(SOURCE, &id));
        headers.insert("Nats-Expected-Stream", stream.as_str());
        let message = PublishMessage::build()
            .payload(payload.clone())
            .headers(headers);
        let ack = js
            .send_publish(subject.clone(), message)
            .await
            .map_err(|e| failed(&e))?;
        acks.push(ack.into_future());
    }
    while let Some(ack) = acks.next().await {
        ack.map_err(|e| failed(&e))?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Our bus: `n` events published, at most `in_flight` publishes awaiting their PubAck at
/// once. Events per second.
async fn publish_bus(
    bus: &NatsBus,
    topic: &str,
    payload: &Bytes,
    n: usize,
    in_flight: usize,
) -> Result<f64, Failure> {
    let start = Instant::now();
    let mut publishes = FuturesUnordered::new();
    for i in 0..n {
        if publishes.len() >= in_flight {
            if let Some(published) = publishes.next().await {
                published?;
            }
        }
        let event = Event::new(EVENT_TYPE, SOURCE)
            .with_data(CONTENT_TYPE, payload.clone())
            .with_subject(format!("s{}", i % 64));
        publishes.push(bus.publish(topic, event));
    }
    while let Some(published) = publishes.next().await {
        published?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Raw async-nats: a durable pull consumer of `topic` read with `Consumer::messages()` (its
/// defaults), each message acked, at most `in_flight` unacked at once. With `confirmed`, the
/// ack is what our bus sends for `Delivery::ack`: `+ACK` as a request, done once the server
/// replied; without, a plain `Message::ack` (done once written to the connection). Messages
/// per second, from the first pull to the last ack.
async fn consume_raw(
    client: &async_nats::Client,
    js: &jetstream::Context,
    topic: &str,
    name: &str,
    n: usize,
    in_flight: usize,
    confirmed: bool,
) -> Result<f64, Failure> {
    let failed = |e: &dyn std::fmt::Display| Failure::runtime(format!("raw consume: {e}"));
    let stream = js
        .get_stream(layout::stream_name(topic))
        .await
        .map_err(|e| failed(&e))?;
    let consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(name.to_owned()),
            ack_policy: consumer::AckPolicy::Explicit,
            deliver_policy: consumer::DeliverPolicy::All,
            filter_subject: layout::stream_subjects(topic),
            // As our bus sets up a group's consumer without per-key order.
            max_ack_pending: NatsConfig::default().max_ack_pending,
            max_deliver: -1,
            ..Default::default()
        })
        .await
        .map_err(|e| failed(&e))?;
    let start = Instant::now();
    let mut messages = consumer.messages().await.map_err(|e| failed(&e))?;
    let mut acks = FuturesUnordered::new();
    let mut done = 0;
    while done < n {
        tokio::select! {
            biased;
            Some(acked) = acks.next(), if !acks.is_empty() => {
                let acked: Result<(), Failure> = acked;
                acked?;
                done += 1;
            }
            msg = messages.next(), if acks.len() < in_flight => {
                let msg = msg
                    .ok_or_else(|| Failure::runtime("raw consume: the message stream ended"))?
                    .map_err(|e| failed(&e))?;
                let client = client.clone();
                acks.push(async move {
                    if confirmed {
                        let reply = msg
                            .reply
                            .clone()
                            .ok_or_else(|| Failure::runtime("raw consume: a message without reply subject"))?;
                        client
                            .request(reply, Bytes::from_static(b"+ACK"))
                            .await
                            .map(drop)
                            .map_err(|e| Failure::runtime(format!("raw consume: ack: {e}")))
                    } else {
                        msg.ack()
                            .await
                            .map_err(|e| Failure::runtime(format!("raw consume: ack: {e}")))
                    }
                });
            }
        }
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Our bus: a group (`Ordering::None`, `max_in_flight = in_flight`) reading `topic` from the
/// beginning, `next()` then `ack()` for each event, the acks running concurrently. Events
/// per second, from the subscription's start to the last ack returning.
async fn consume_bus(
    bus: &NatsBus,
    topic: &str,
    n: usize,
    in_flight: usize,
) -> Result<f64, Failure> {
    let options = SubscribeOptions::new("bench", [topic])?
        .ordering(Ordering::None)
        .start(StartFrom::Beginning)
        .max_in_flight(in_flight);
    let mut sub = bus.subscribe(options).await?;
    let start = Instant::now();
    let mut acks = FuturesUnordered::new();
    let mut done = 0;
    while done < n {
        tokio::select! {
            biased;
            Some(acked) = acks.next(), if !acks.is_empty() => {
                let acked: Result<(), ovasabi_core::BusError> = acked;
                acked?;
                done += 1;
            }
            delivery = sub.next(), if acks.len() < in_flight => {
                let delivery = delivery
                    .ok_or_else(|| Failure::runtime("the subscription ended early"))??;
                acks.push(async move { delivery.ack().await });
            }
        }
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    sub.close().await;
    Ok(rate)
}

/// Deletes streams of this command older than [`STALE_AFTER`]: left by a run that was
/// killed before it could clean up (no run takes that long).
async fn remove_stale_streams(js: &jetstream::Context) {
    let prefix = layout::stream_name(TOPIC_PREFIX) + "_";
    let cutoff = chrono::Utc::now() - STALE_AFTER;
    let cleaning = async {
        let Ok(streams) = js.streams().try_collect::<Vec<_>>().await else {
            return;
        };
        for info in streams {
            if info.config.name.starts_with(&prefix) && info.created < cutoff {
                let _ = js.delete_stream(&info.config.name).await;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), cleaning).await;
}

fn median(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let mut values: Vec<f64> = values.collect::<Option<_>>()?;
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    match values.len() {
        0 => None,
        len if len % 2 == 1 => Some(values[mid]),
        _ => Some((values[mid - 1] + values[mid]) / 2.0),
    }
}

fn report(args: &BenchNatsArgs, url: &str, version: &str, rounds: &[Round]) {
    type Pick = fn(&Round) -> Option<f64>;
    let k = args.in_flight;
    let publish = format!("publish ({k} in flight)");
    let consume = format!("consume + ack ({k} in flight)");
    let pairs: [(&String, Pick, String, Pick); 3] = [
        (
            &publish,
            |r| r.bus_publish,
            format!("raw async-nats publish, same headers, {k} in flight"),
            |r| r.raw_publish,
        ),
        (
            &consume,
            |r| r.bus_consume,
            "raw pull consumer, ack confirmed".to_owned(),
            |r| r.raw_consume_confirmed,
        ),
        (
            &consume,
            |r| r.bus_consume,
            "raw pull consumer, ack not confirmed".to_owned(),
            |r| r.raw_consume_unconfirmed,
        ),
    ];
    // Value and baseline are the medians of the rounds; the ratio is the median of the
    // rounds' own ratios, each pairing two measurements taken seconds apart, which a
    // machine's slow moments disturb less than the ratio of two medians.
    let rows: Vec<Row> = pairs
        .into_iter()
        .filter_map(|(measure, ours, baseline, raw)| {
            let value = median(rounds.iter().map(ours))?;
            let base = median(rounds.iter().map(raw))?;
            let ratio = median(rounds.iter().map(|r| Some(ours(r)? / raw(r)?)))?;
            Some(Row {
                measure: measure.clone(),
                value,
                unit: "events/s",
                baseline,
                baseline_value: base,
                ratio,
            })
        })
        .collect();
    match args.format {
        Format::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "server": { "url": url, "version": version },
                "events": args.events,
                "payload": args.payload,
                "in_flight": args.in_flight,
                "rows": rows,
                "rounds": rounds,
            }))
            .unwrap_or_default()
        ),
        Format::Pretty => {
            print_table(&rows);
            outln!("(here the ratio is the median of the rounds' ratios, below)");
            if rounds.len() > 1 {
                outln!("each round (events/s), ours / raw:");
                for r in rounds {
                    let ratio = |ours: Option<f64>, raw: Option<f64>| match (ours, raw) {
                        (Some(o), Some(b)) => {
                            format!("{} / {} = {:.2}", super::human(o), super::human(b), o / b)
                        }
                        _ => "-".to_owned(),
                    };
                    outln!(
                        "  {}: publish {}; consume, ack confirmed {}; ack not confirmed {}",
                        r.round,
                        ratio(r.bus_publish, r.raw_publish),
                        ratio(r.bus_consume, r.raw_consume_confirmed),
                        ratio(r.bus_consume, r.raw_consume_unconfirmed),
                    );
                }
            }
        }
    }
}
