//! `ovasabi bench contracts`: what checking payloads against their schemas costs, in one run.
//!
//! - checking alone: parsing and validating a `user.registered` payload, against parsing
//!   the same bytes only;
//! - publishing through the contract check (`ValidatingBus`) against publishing the same
//!   events on the same kind of bus without it (embedded bus, each in its own data
//!   directory, same durability, same number of publishers).

use std::sync::Arc;
use std::time::Instant;

use ovasabi_core::{Bus, Event};
use ovasabi_embedded::{EmbeddedBus, EmbeddedConfig};
use ovasabi_events::{users::UserRegistered, DomainEvent};
use ovasabi_schema::{Contracts, Registry, Upcasters, ValidatingBus};

use super::{print_table, progress, Row};
use crate::cli::{BenchContractsArgs, Format};
use crate::failure::Failure;
use crate::output::outln;

fn events(n: usize) -> Vec<Event> {
    let examples = UserRegistered::examples();
    (0..n)
        .map(|i| {
            let mut payload = examples[i % examples.len()].clone();
            payload.user_id = format!("u{i}");
            payload.to_event("/ovasabi/bench")
        })
        .collect()
}

async fn publish_all(
    bus: Arc<dyn Bus>,
    events: Vec<Event>,
    publishers: usize,
) -> Result<f64, Failure> {
    let n = events.len();
    let per = n.div_ceil(publishers.max(1));
    let mut chunks: Vec<Vec<Event>> = Vec::new();
    let mut rest = events;
    while !rest.is_empty() {
        let tail = rest.split_off(per.min(rest.len()));
        chunks.push(rest);
        rest = tail;
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for chunk in chunks {
        let bus = bus.clone();
        tasks.push(tokio::spawn(async move {
            for event in chunk {
                bus.publish("user.events", event).await?;
            }
            Ok::<_, ovasabi_core::BusError>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| Failure::runtime(e.to_string()))??;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    bus.close().await?;
    Ok(rate)
}

/// Rounds of the publish comparison.
const ROUNDS: usize = 3;

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

pub(super) async fn bench_contracts(args: BenchContractsArgs) -> Result<(), Failure> {
    let registry = Arc::new(Registry::builtin().map_err(crate::cmd::load_failure)?);
    let contracts = Contracts::new(registry.clone(), Upcasters::new());
    let format = args.format;
    let mut rows = Vec::new();

    progress(format, "checking payloads alone");
    let sample = events(1_000);
    let version = registry
        .version(UserRegistered::TYPE, UserRegistered::VERSION)
        .ok_or_else(|| Failure::runtime("user.registered has no schema"))?;
    let iterations = args.events;
    let start = Instant::now();
    for i in 0..iterations {
        let data = sample[i % sample.len()].data.as_deref().unwrap_or_default();
        let value: serde_json::Value =
            serde_json::from_slice(data).map_err(|e| Failure::runtime(e.to_string()))?;
        std::hint::black_box(&value);
    }
    let parse_rate = iterations as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    for i in 0..iterations {
        let data = sample[i % sample.len()].data.as_deref().unwrap_or_default();
        let value: serde_json::Value =
            serde_json::from_slice(data).map_err(|e| Failure::runtime(e.to_string()))?;
        version
            .validate(UserRegistered::TYPE, &value)
            .map_err(|e| Failure::runtime(e.to_string()))?;
    }
    let check_rate = iterations as f64 / start.elapsed().as_secs_f64();
    rows.push(Row {
        measure: "parse + validate a user.registered payload".to_owned(),
        value: check_rate,
        unit: "ops/s",
        baseline: "parse only".to_owned(),
        baseline_value: parse_rate,
        ratio: check_rate / parse_rate,
    });

    // Alternating rounds, each on a fresh data directory; the median of each side.
    let mut plain_rates = Vec::new();
    let mut checked_rates = Vec::new();
    for round in 1..=ROUNDS {
        progress(
            format,
            &format!("publish unchecked, then checked (round {round} of {ROUNDS})"),
        );
        let dir = tempfile::tempdir().map_err(|e| Failure::runtime(e.to_string()))?;
        let plain: Arc<dyn Bus> =
            Arc::new(EmbeddedBus::open(EmbeddedConfig::new(dir.path())).await?);
        plain_rates.push(publish_all(plain, events(args.events), args.publishers).await?);
        let dir = tempfile::tempdir().map_err(|e| Failure::runtime(e.to_string()))?;
        let inner: Arc<dyn Bus> =
            Arc::new(EmbeddedBus::open(EmbeddedConfig::new(dir.path())).await?);
        let checked: Arc<dyn Bus> = Arc::new(ValidatingBus::new(inner, contracts.clone()));
        checked_rates.push(publish_all(checked, events(args.events), args.publishers).await?);
    }
    let plain_rate = median(&mut plain_rates);
    let checked_rate = median(&mut checked_rates);
    rows.push(Row {
        measure: format!(
            "publish user.registered, checked ({} publishers, embedded bus, median of {ROUNDS})",
            args.publishers
        ),
        value: checked_rate,
        unit: "ev/s",
        baseline: "the same, unchecked".to_owned(),
        baseline_value: plain_rate,
        ratio: checked_rate / plain_rate,
    });

    match format {
        Format::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "rows": rows })).unwrap_or_default()
        ),
        Format::Pretty => print_table(&rows),
    }
    Ok(())
}
