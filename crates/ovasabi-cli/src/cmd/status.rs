//! `ovasabi status`: the platform at a glance ([`ovasabi_services::status`]), read from the
//! bus and the services' database, or — on the embedded bus while `ovasabi up` holds the
//! data directory — asked of the running platform's `GET /v1/status`.

use ovasabi_services::status;
use ovasabi_store::Store;
use serde_json::Value;

use crate::cli::{Format, Global, PlatformStatusArgs};
use crate::cmd::{ask_api, open_bus_unless_held, store_config};
use crate::failure::Failure;
use crate::output::outln;

/// Runs `ovasabi status`.
pub(crate) async fn run(global: &Global, args: PlatformStatusArgs) -> Result<(), Failure> {
    let status: Value = match open_bus_unless_held(global).await? {
        Some(bus) => {
            let database = store_config(global)?;
            let store = Store::open(&database, &[])
                .await
                .map_err(|e| Failure::runtime(format!("database {database}: {e}")))?;
            let result = status::collect(bus.as_ref(), &store).await;
            let _ = bus.close().await;
            serde_json::to_value(result.map_err(Failure::runtime)?).unwrap_or_default()
        }
        None => ask_api(&args.api, reqwest::Method::GET, "/v1/status", None).await?,
    };
    match args.format {
        Format::Json => outln!("{status}"),
        Format::Pretty => print(&status),
    }
    Ok(())
}

fn print(status: &Value) {
    let topics = status["topics"].as_array().cloned().unwrap_or_default();
    if topics.is_empty() {
        outln!("no topics yet: start the platform with `ovasabi up`, or publish with `ovasabi events publish`");
    } else {
        let width = topics
            .iter()
            .filter_map(|t| t["topic"].as_str())
            .map(str::len)
            .max()
            .unwrap_or(5)
            .max(5);
        outln!(
            "{:width$}  {:>8}  {:>6}  GROUPS (lag)",
            "TOPIC",
            "EVENTS",
            "DEAD"
        );
        for t in &topics {
            let groups: Vec<String> = t["groups"]
                .as_array()
                .map(|g| {
                    g.iter()
                        .map(|g| format!("{} {}", g["group"].as_str().unwrap_or("?"), g["lag"]))
                        .collect()
                })
                .unwrap_or_default();
            outln!(
                "{:width$}  {:>8}  {:>6}  {}",
                t["topic"].as_str().unwrap_or("?"),
                t["events"].as_u64().unwrap_or(0),
                t["dead_letters"].as_u64().unwrap_or(0),
                if groups.is_empty() {
                    "-".to_owned()
                } else {
                    groups.join(", ")
                }
            );
        }
    }
    let webhooks = status["webhook_endpoints"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(state, n)| format!("{n} {state}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "none".to_owned());
    // Shown only when there are some: each needs a person to correct it.
    let unreadable = match status["outbox"]["unreadable"].as_u64().unwrap_or(0) {
        0 => String::new(),
        n => format!(", {n} unreadable set aside"),
    };
    outln!(
        "lag {} · dead letters {} · outbox {} pending (oldest {:.1} s{}) · webhook endpoints: {}",
        status["lag"],
        status["dead_letters"],
        status["outbox"]["backlog"],
        status["outbox"]["oldest_age_seconds"]
            .as_f64()
            .unwrap_or(0.0),
        unreadable,
        webhooks
    );
}
