//! `ovasabi bench bus`: the embedded bus beside baselines measured in the same run
//! (`ovasabi bench nats`, the NATS JetStream bus beside raw async-nats, is in [`nats`]).
//!
//! Every figure is printed with a baseline taken in the same process minutes apart, and the
//! ratio between them, because these machines are noisy and absolute numbers travel badly:
//! - publish throughput (one event per call, and batches of 100) and publish+consume+ack
//!   throughput, against raw SQLite inserts of the same encoded bytes, 100 rows per
//!   transaction, in the same durability mode;
//! - publish→durable latency (p50/p99) of a single publisher, against a raw single-row
//!   SQLite commit in the same mode, for both durability modes;
//! - delivery throughput against a raw tokio channel carrying the same bytes.

use std::time::Instant;

use futures::stream::{FuturesUnordered, StreamExt};
use ovasabi_core::{Bus as _, Event, Ordering, Publisher, SubscribeOptions, Subscriber};
use ovasabi_embedded::{Durability, EmbeddedBus, EmbeddedConfig};
use rusqlite::Connection;
use serde::Serialize;

use crate::cli::{BenchBusArgs, BenchCommand, Format, Global};
use crate::failure::Failure;
use crate::output::outln;

mod contracts;
mod http;
mod nats;

/// Runs a `bench` command.
pub(crate) async fn run(global: &Global, cmd: BenchCommand) -> Result<(), Failure> {
    match cmd {
        BenchCommand::Bus(args) => bench_bus(args).await,
        BenchCommand::Nats(args) => nats::bench_nats(global, args).await,
        BenchCommand::Contracts(args) => contracts::bench_contracts(args).await,
        BenchCommand::Http(args) => http::bench_http(global, args).await,
    }
}

#[derive(Debug, Serialize)]
struct Row {
    measure: String,
    value: f64,
    unit: &'static str,
    baseline: String,
    baseline_value: f64,
    /// value / baseline_value for throughputs; baseline_value / value for latencies, so
    /// higher is better in both.
    ratio: f64,
}

fn event(payload: &[u8], n: usize) -> Event {
    let mut e = Event::new("bench.measured", "/ovasabi/bench")
        .with_data("application/octet-stream", payload.to_vec());
    e.subject = Some(format!("s{}", n % 64));
    e
}

fn progress(format: Format, what: &str) {
    if format == Format::Pretty {
        eprintln!("  measuring {what}…");
    }
}

fn open_raw(dir: &std::path::Path, durability: Durability) -> Result<Connection, Failure> {
    let conn =
        Connection::open(dir.join("raw.sqlite3")).map_err(|e| Failure::runtime(e.to_string()))?;
    let sync = match durability {
        Durability::Process => "NORMAL",
        Durability::Machine => "FULL",
    };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync}; DROP TABLE IF EXISTS raw; CREATE TABLE raw(id INTEGER PRIMARY KEY, body BLOB NOT NULL);"
    ))
    .map_err(|e| Failure::runtime(e.to_string()))?;
    Ok(conn)
}

/// Raw SQLite: `n` rows of `body`, `per_tx` rows per transaction. Rows per second.
fn raw_sqlite_throughput(
    dir: &std::path::Path,
    body: &[u8],
    n: usize,
    per_tx: usize,
) -> Result<f64, Failure> {
    let conn = open_raw(dir, Durability::Process)?;
    let err = |e: rusqlite::Error| Failure::runtime(e.to_string());
    let start = Instant::now();
    let mut id = 0i64;
    while (id as usize) < n {
        let tx = conn.unchecked_transaction().map_err(err)?;
        {
            let mut stmt = tx
                .prepare_cached("INSERT INTO raw(id, body) VALUES(?1, ?2)")
                .map_err(err)?;
            for _ in 0..per_tx {
                stmt.execute(rusqlite::params![id, body]).map_err(err)?;
                id += 1;
            }
        }
        tx.commit().map_err(err)?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Raw SQLite: one row per commit; latencies in microseconds, sorted.
fn raw_sqlite_latency(
    dir: &std::path::Path,
    body: &[u8],
    n: usize,
    durability: Durability,
) -> Result<Vec<f64>, Failure> {
    let conn = open_raw(dir, durability)?;
    let err = |e: rusqlite::Error| Failure::runtime(e.to_string());
    let mut lat = Vec::with_capacity(n);
    for id in 0..n as i64 {
        let t = Instant::now();
        let tx = conn.unchecked_transaction().map_err(err)?;
        tx.prepare_cached("INSERT INTO raw(id, body) VALUES(?1, ?2)")
            .map_err(err)?
            .execute(rusqlite::params![id, body])
            .map_err(err)?;
        tx.commit().map_err(err)?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    lat.sort_by(f64::total_cmp);
    Ok(lat)
}

/// Raw tokio channel: `n` messages of `body` from one task to another. Messages per second.
async fn raw_channel(body: &[u8], n: usize) -> f64 {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4096);
    let body = body.to_vec();
    let start = Instant::now();
    let producer = tokio::spawn(async move {
        for _ in 0..n {
            if tx.send(body.clone()).await.is_err() {
                break;
            }
        }
    });
    let mut got = 0;
    while rx.recv().await.is_some() {
        got += 1;
        if got == n {
            break;
        }
    }
    let _ = producer.await;
    n as f64 / start.elapsed().as_secs_f64()
}

async fn open(dir: &std::path::Path, durability: Durability) -> Result<EmbeddedBus, Failure> {
    let _ = std::fs::remove_dir_all(dir);
    Ok(EmbeddedBus::open(EmbeddedConfig::new(dir).durability(durability)).await?)
}

/// Publishes `n` events from `publishers` tasks, `batch` per call. Events per second.
async fn publish_throughput(
    bus: &EmbeddedBus,
    topic: &str,
    payload: &[u8],
    n: usize,
    publishers: usize,
    batch: usize,
) -> Result<f64, Failure> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    let per = n / publishers;
    for p in 0..publishers {
        let bus = bus.clone();
        let topic = topic.to_owned();
        let payload = payload.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut sent = 0;
            while sent < per {
                let k = batch.min(per - sent);
                if k == 1 {
                    bus.publish(&topic, event(&payload, p * per + sent)).await?;
                } else {
                    let events = (0..k)
                        .map(|i| event(&payload, p * per + sent + i))
                        .collect();
                    bus.publish_batch(&topic, events).await?;
                }
                sent += k;
            }
            Ok::<_, ovasabi_core::BusError>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| Failure::runtime(e.to_string()))??;
    }
    Ok((per * publishers) as f64 / start.elapsed().as_secs_f64())
}

/// Publishes `n` events in batches while one consumer group consumes and acks them; events
/// per second from the first publish to the last ack.
async fn end_to_end(
    bus: &EmbeddedBus,
    topic: &str,
    payload: &[u8],
    n: usize,
) -> Result<f64, Failure> {
    let options = SubscribeOptions::new("bench", [topic])?
        .ordering(Ordering::None)
        .max_in_flight(8192);
    let mut sub = bus.subscribe(options).await?;
    let start = Instant::now();
    let publisher = {
        let bus = bus.clone();
        let topic = topic.to_owned();
        let payload = payload.to_vec();
        tokio::spawn(async move { publish_throughput(&bus, &topic, &payload, n, 4, 100).await })
    };
    let mut acks = FuturesUnordered::new();
    let mut done = 0;
    while done < n {
        tokio::select! {
            biased;
            Some(r) = acks.next(), if !acks.is_empty() => {
                let r: Result<(), ovasabi_core::BusError> = r;
                r?;
                done += 1;
            }
            d = sub.next(), if acks.len() < 8192 => {
                let d = d.ok_or_else(|| Failure::runtime("subscription ended early"))??;
                acks.push(async move { d.ack().await });
            }
        }
    }
    let elapsed = start.elapsed();
    publisher
        .await
        .map_err(|e| Failure::runtime(e.to_string()))??;
    sub.close().await;
    Ok(n as f64 / elapsed.as_secs_f64())
}

/// One publisher, one event at a time: latencies in microseconds, sorted.
async fn publish_latency(bus: &EmbeddedBus, payload: &[u8], n: usize) -> Result<Vec<f64>, Failure> {
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let e = event(payload, i);
        let t = Instant::now();
        bus.publish("bench.latency", e).await?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    lat.sort_by(f64::total_cmp);
    Ok(lat)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn bench_bus(args: BenchBusArgs) -> Result<(), Failure> {
    if args.events < 1000 || args.payload == 0 || args.latency_samples < 100 {
        return Err(Failure::usage(
            "use --events ≥ 1000, --payload ≥ 1 and --latency-samples ≥ 100",
        ));
    }
    let scratch = tempfile::tempdir()
        .map_err(|e| Failure::runtime(format!("cannot make a scratch directory: {e}")))?;
    let payload: Vec<u8> = (0..args.payload).map(|i| b'a' + (i % 26) as u8).collect();
    let body = {
        // The raw baselines insert exactly the bytes the bus stores for one event.
        let bus = open(&scratch.path().join("probe"), Durability::Process).await?;
        bus.publish("bench.probe", event(&payload, 0)).await?;
        bus.close().await?;
        let conn = Connection::open(scratch.path().join("probe/bus.sqlite3"))
            .map_err(|e| Failure::runtime(e.to_string()))?;
        let table: String = conn
            .query_row(
                "SELECT 'log_' || id FROM topics WHERE name = 'bench.probe'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| Failure::runtime(e.to_string()))?;
        let body: Vec<u8> = conn
            .query_row(&format!("SELECT body FROM {table}"), [], |r| r.get(0))
            .map_err(|e| Failure::runtime(e.to_string()))?;
        body
    };
    let n = args.events;
    let f = args.format;
    if f == Format::Pretty {
        eprintln!(
            "ovasabi bench bus: {n} events of {} payload bytes ({} bytes stored each), {} latency samples",
            args.payload,
            body.len(),
            args.latency_samples
        );
    }
    let mut rows = Vec::new();

    progress(
        f,
        "raw SQLite baseline (100 rows per transaction, synchronous=NORMAL)",
    );
    let raw = raw_sqlite_throughput(scratch.path(), &body, n, 100)?;
    progress(f, "raw tokio channel baseline");
    let chan = raw_channel(&body, n).await;

    let dir = scratch.path().join("bus");
    if args.only_end_to_end {
        let bus = open(&dir, Durability::Process).await?;
        progress(f, "publish + consume + ack");
        let e2e = end_to_end(&bus, "bench.e2e", &payload, n).await?;
        bus.close().await?;
        let row = Row {
            measure: "publish+consume+ack".into(),
            value: e2e,
            unit: "events/s",
            baseline: "raw SQLite insert, 100/tx, NORMAL".into(),
            baseline_value: raw,
            ratio: e2e / raw,
        };
        match f {
            Format::Json => outln!("{}", serde_json::json!({ "rows": [row] })),
            Format::Pretty => print_table(&[row]),
        }
        return Ok(());
    }
    let bus = open(&dir, Durability::Process).await?;
    progress(f, "publish, one event per call, 64 publishers");
    let single = publish_throughput(&bus, "bench.single", &payload, n, 64, 1).await?;
    progress(f, "publish, batches of 100, 4 publishers");
    let batched = publish_throughput(&bus, "bench.batched", &payload, n, 4, 100).await?;
    bus.close().await?;
    // Each of the next measurements starts on a fresh bus, as the raw baseline starts on a
    // fresh table.
    let bus = open(&dir, Durability::Process).await?;
    progress(f, "publish + consume + ack");
    let e2e = end_to_end(&bus, "bench.e2e", &payload, n).await?;
    bus.close().await?;
    let bus = open(&dir, Durability::Process).await?;
    progress(f, "publish latency (durability process)");
    let lat_process = publish_latency(&bus, &payload, args.latency_samples).await?;
    bus.close().await?;
    let raw_lat_process = raw_sqlite_latency(
        scratch.path(),
        &body,
        args.latency_samples,
        Durability::Process,
    )?;

    progress(f, "publish latency (durability machine: fsync per commit)");
    let bus = open(&dir, Durability::Machine).await?;
    let lat_machine = publish_latency(&bus, &payload, args.latency_samples).await?;
    bus.close().await?;
    let bus = open(&dir, Durability::Machine).await?;
    progress(f, "publish + consume + ack (durability machine)");
    let e2e_machine = end_to_end(&bus, "bench.e2e", &payload, n / 4).await?;
    bus.close().await?;
    let raw_lat_machine = raw_sqlite_latency(
        scratch.path(),
        &body,
        args.latency_samples,
        Durability::Machine,
    )?;

    let raw_name = "raw SQLite insert, 100/tx, NORMAL".to_owned();
    let tp = |measure: &str, value: f64, baseline: &str, base: f64| Row {
        measure: measure.to_owned(),
        value,
        unit: "events/s",
        baseline: baseline.to_owned(),
        baseline_value: base,
        ratio: value / base,
    };
    rows.push(tp(
        "publish (1 event/call, 64 publishers)",
        single,
        &raw_name,
        raw,
    ));
    rows.push(tp("publish (batches of 100)", batched, &raw_name, raw));
    rows.push(tp("publish+consume+ack", e2e, &raw_name, raw));
    rows.push(tp("publish+consume+ack", e2e, "raw tokio channel", chan));
    rows.push(tp(
        "publish+consume+ack (machine: fsync)",
        e2e_machine,
        &raw_name,
        raw,
    ));
    for (label, lat, raw_lat, base_label) in [
        (
            "process",
            &lat_process,
            &raw_lat_process,
            "raw SQLite 1-row commit, NORMAL",
        ),
        (
            "machine",
            &lat_machine,
            &raw_lat_machine,
            "raw SQLite 1-row commit, FULL",
        ),
    ] {
        for (p, name) in [(0.5, "p50"), (0.99, "p99")] {
            let v = pct(lat, p);
            let b = pct(raw_lat, p);
            rows.push(Row {
                measure: format!("publish latency {name} ({label})"),
                value: v,
                unit: "µs",
                baseline: base_label.to_owned(),
                baseline_value: b,
                ratio: b / v,
            });
        }
    }
    match f {
        Format::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "rows": rows })).unwrap_or_default()
        ),
        Format::Pretty => print_table(&rows),
    }
    Ok(())
}

fn print_table(rows: &[Row]) {
    let w0 = rows
        .iter()
        .map(|r| r.measure.chars().count())
        .max()
        .unwrap_or(0);
    let w3 = rows
        .iter()
        .map(|r| r.baseline.chars().count())
        .max()
        .unwrap_or(0);
    outln!(
        "{:w0$}  {:>12}  {:8}  {:w3$}  {:>12}  {:>6}",
        "MEASURE",
        "VALUE",
        "UNIT",
        "BASELINE (same run)",
        "BASELINE",
        "RATIO"
    );
    for r in rows {
        outln!(
            "{:w0$}  {:>12}  {:8}  {:w3$}  {:>12}  {:>6.2}",
            r.measure,
            human(r.value),
            r.unit,
            r.baseline,
            human(r.baseline_value),
            r.ratio
        );
    }
    outln!("ratio: value/baseline for throughput, baseline/value for latency (higher is better)");
}

fn human(v: f64) -> String {
    if v >= 100.0 {
        let s = format!("{:.0}", v);
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else {
        format!("{v:.1}")
    }
}
