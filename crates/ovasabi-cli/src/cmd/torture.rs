//! `ovasabi torture publish | consume`: processes for crash tests (hidden from `--help`).
//!
//! Each prints a line on stdout only after the bus said the operation is durable, so a test
//! that kills the process with SIGKILL at any moment can check that everything printed
//! survived: `publish` prints the id of every event whose publish returned; `consume` prints
//! `offset id` of every delivery whose ack returned.

use std::io::Write;

use ovasabi_core::{Event, SubscribeOptions};

use crate::cli::{Global, TortureCommand};
use crate::cmd::open_bus;
use crate::failure::Failure;

/// Runs a `torture` command until killed (or, for `consume`, until `--limit`).
pub(crate) async fn run(global: &Global, cmd: TortureCommand) -> Result<(), Failure> {
    let bus = open_bus(global).await?;
    match cmd {
        TortureCommand::Publish { topic, publishers } => {
            let mut tasks = Vec::new();
            for p in 0..publishers.max(1) {
                let bus = bus.clone();
                let topic = topic.clone();
                tasks.push(tokio::spawn(async move {
                    let mut n = 0u64;
                    for round in 0u64.. {
                        // Alternate single publishes and batches of 10.
                        let k = if round.is_multiple_of(2) { 1 } else { 10 };
                        let events: Vec<Event> = (0..k)
                            .map(|i| {
                                Event::new("torture.published", "/ovasabi/torture")
                                    .with_json(&serde_json::json!({ "publisher": p, "n": n + i }))
                                    .with_partition_key(format!("p{p}"))
                            })
                            .collect();
                        let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
                        bus.publish_batch(&topic, events).await?;
                        let mut out = std::io::stdout().lock();
                        for id in ids {
                            let _ = writeln!(out, "{id}");
                        }
                        let _ = out.flush();
                        n += k;
                    }
                    Ok::<(), ovasabi_core::BusError>(())
                }));
            }
            for t in tasks {
                t.await.map_err(|e| Failure::runtime(e.to_string()))??;
            }
            Ok(())
        }
        TortureCommand::Consume {
            topic,
            group,
            limit,
        } => {
            let mut sub = bus
                .subscribe(SubscribeOptions::new(group, [topic.as_str()])?)
                .await?;
            let mut seen = 0usize;
            while let Some(d) = sub.next().await {
                let d = d?;
                d.ack().await?;
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{} {}", d.info().offset, d.event().id);
                let _ = out.flush();
                seen += 1;
                if limit.is_some_and(|l| seen >= l) {
                    break;
                }
            }
            Ok(())
        }
    }
}
