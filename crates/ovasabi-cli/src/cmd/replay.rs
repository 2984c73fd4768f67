//! `ovasabi replay analytics`: rebuild the analytics from the start of the log.

use std::io::{IsTerminal as _, Write as _};
use std::time::Instant;

use ovasabi_services::analytics::{self, AnalyticsService};
use ovasabi_services::Service as _;
use ovasabi_store::Store;

use crate::cli::{Format, Global, ReplayArgs, ReplayCommand};
use crate::cmd::{open_bus, store_config};
use crate::failure::Failure;
use crate::output::outln;

/// Runs a `replay` command.
pub(crate) async fn run(global: &Global, cmd: ReplayCommand) -> Result<(), Failure> {
    match cmd {
        ReplayCommand::Analytics(args) => replay_analytics(global, args).await,
    }
}

/// Progress on stderr: a bar redrawn in place on a terminal, a line per tenth otherwise.
struct Progress {
    terminal: bool,
    shown: u64,
}

impl Progress {
    fn show(&mut self, done: u64, total: u64) {
        let mut err = std::io::stderr().lock();
        if total == 0 {
            let _ = writeln!(err, "replay: no events to read");
            return;
        }
        let tenth = done * 10 / total;
        if self.terminal {
            if done != total && !done.is_multiple_of(97) {
                return;
            }
            let width = 30;
            let filled = usize::try_from(done * width / total).unwrap_or(0);
            let bar = format!("{}{}", "#".repeat(filled), ".".repeat(30 - filled.min(30)));
            let _ = write!(err, "\rreplay [{bar}] {done}/{total} events");
            if done == total {
                let _ = writeln!(err);
            }
        } else if done == 0 || tenth > self.shown || done == total {
            self.shown = tenth;
            let _ = writeln!(
                err,
                "replay: {done}/{total} events ({}%)",
                done * 100 / total
            );
        }
        let _ = err.flush();
    }
}

async fn replay_analytics(global: &Global, args: ReplayArgs) -> Result<(), Failure> {
    let database = store_config(global)?;
    let store = Store::open(&database, &[AnalyticsService::default().migrations()])
        .await
        .map_err(|e| Failure::runtime(format!("database {database}: {e}")))?;
    let bus = open_bus(global).await?;
    let started = Instant::now();
    let mut progress = Progress {
        terminal: std::io::stderr().is_terminal(),
        shown: 0,
    };
    let outcome = analytics::replay(&*bus, &store, |done, total| progress.show(done, total)).await;
    bus.close().await?;
    let summary = outcome.map_err(|e| {
        Failure::runtime(format!(
            "{e}; the analytics are partly rebuilt: run `ovasabi replay analytics` again"
        ))
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let snapshot = analytics::snapshot(&store, chrono::Utc::now())
        .await
        .map_err(|e| Failure::runtime(format!("reading the analytics back: {e}")))?;
    match args.format {
        Format::Json => outln!(
            "{}",
            serde_json::json!({
                "events": summary.events,
                "counted": summary.counted,
                "seconds": (seconds * 1000.0).round() / 1000.0,
                "totals": snapshot["totals"],
            })
        ),
        Format::Pretty => {
            outln!(
                "replayed {} events ({} counted) in {seconds:.1} s",
                summary.events,
                summary.counted
            );
            if let Some(totals) = snapshot["totals"].as_object() {
                for metric in analytics::METRICS {
                    outln!(
                        "  {metric:<20} {}",
                        totals.get(*metric).cloned().unwrap_or_default()
                    );
                }
                for revenue in totals["revenue"].as_array().into_iter().flatten() {
                    outln!(
                        "  {:<20} {} (minor units)",
                        format!("revenue {}", revenue["currency"].as_str().unwrap_or("?")),
                        revenue["amount_minor"]
                    );
                }
            }
        }
    }
    Ok(())
}
