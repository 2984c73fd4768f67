//! `ovasabi audit list|verify` and `ovasabi trace`: the audit trail, read from the services'
//! database (it works while `ovasabi up` runs).

use ovasabi_services::audit::{self, AuditFilter, Verdict};
use ovasabi_services::Service as _;
use ovasabi_store::Store;

use crate::cli::{AuditCommand, AuditListArgs, AuditVerifyArgs, Format, Global, TraceArgs};
use crate::cmd::store_config;
use crate::failure::Failure;
use crate::output::outln;

/// Runs an `audit` command.
pub(crate) async fn run(global: &Global, cmd: AuditCommand) -> Result<(), Failure> {
    match cmd {
        AuditCommand::List(args) => list(global, args).await,
        AuditCommand::Verify(args) => verify(global, args).await,
    }
}

async fn open(global: &Global) -> Result<Store, Failure> {
    let database = store_config(global)?;
    let migrations = [ovasabi_services::AuditService::default().migrations()];
    Store::open(&database, &migrations)
        .await
        .map_err(|e| Failure::runtime(format!("database {database}: {e}")))
}

async fn verify(global: &Global, args: AuditVerifyArgs) -> Result<(), Failure> {
    let store = open(global).await?;
    let verdict = audit::verify(&store)
        .await
        .map_err(|e| Failure::runtime(format!("reading the audit trail: {e}")))?;
    match (&verdict, args.format) {
        (Verdict::Intact { entries, pending }, Format::Json) => {
            outln!(
                "{}",
                serde_json::json!({"intact": true, "entries": entries, "pending": pending})
            );
        }
        (Verdict::Intact { entries, pending }, Format::Pretty) => {
            outln!("audit trail intact: {entries} entries, each hash matching its content and the one before");
            if *pending > 0 {
                outln!(
                    "{pending} more recorded but not chained yet: a running audit service \
                     chains them within a second (or when `ovasabi serve audit` runs again)"
                );
            }
        }
        (Verdict::Broken { position, reason }, Format::Json) => {
            outln!(
                "{}",
                serde_json::json!({"intact": false, "position": position, "reason": reason})
            );
        }
        (Verdict::Broken { .. }, Format::Pretty) => {}
    }
    match verdict {
        Verdict::Intact { .. } => Ok(()),
        Verdict::Broken { position, reason } => Err(Failure::check(format!(
            "the audit trail is broken at entry {position}: {reason}. Entries from {position} \
             on cannot be trusted: find out who could write to the database, and compare \
             those entries with a backup or with the events still on the bus \
             (`ovasabi audit list --format json` shows what is stored)"
        ))),
    }
}

async fn list(global: &Global, args: AuditListArgs) -> Result<(), Failure> {
    let store = open(global).await?;
    let filter = AuditFilter {
        subject: args.subject,
        event_type: args.ty,
        limit: args.limit,
    };
    let records = audit::recent(&store, &filter)
        .await
        .map_err(|e| Failure::runtime(format!("reading the audit trail: {e}")))?;
    match args.format {
        Format::Json => {
            for r in &records {
                let event: serde_json::Value = serde_json::from_str(&r.event_json)
                    .unwrap_or_else(|_| serde_json::Value::String(r.event_json.clone()));
                let line = serde_json::json!({
                    "seq": r.seq,
                    "recorded_at": r.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                    "recorded_by": r.recorded_by,
                    "topic": r.topic,
                    "offset": r.offset,
                    "attempt": r.attempt,
                    "event": event,
                });
                outln!("{line}");
            }
        }
        Format::Pretty => {
            if records.is_empty() {
                eprintln!(
                    "no events recorded yet: the audit service records the events of `*.events` \
                     topics while `ovasabi up` (or `ovasabi serve audit`) runs"
                );
                return Ok(());
            }
            outln!(
                "{:<24}  {:<24}  {:<16}  {:<24}  {:>7}  BY",
                "RECORDED",
                "TYPE",
                "SUBJECT",
                "TOPIC@OFFSET",
                "ATTEMPT"
            );
            for r in &records {
                outln!(
                    "{:<24}  {:<24}  {:<16}  {:<24}  {:>7}  {}",
                    r.recorded_at.format("%Y-%m-%d %H:%M:%S%.3f"),
                    r.event_type,
                    r.subject.as_deref().unwrap_or("-"),
                    format!("{}@{}", r.topic, r.offset),
                    r.attempt,
                    r.recorded_by
                );
            }
        }
    }
    Ok(())
}

/// `ovasabi trace ID`: the causal tree around an event or a correlation, as a tree for
/// people (one line per event: time since the first, type, publishing service, subject,
/// topic and offset; redeliveries marked) or one JSON object.
pub(crate) async fn trace(global: &Global, args: TraceArgs) -> Result<(), Failure> {
    let store = open(global).await?;
    let trace = audit::trace(&store, args.id.trim())
        .await
        .map_err(|e| Failure::runtime(format!("reading the audit trail: {e}")))?
        .ok_or_else(|| {
            Failure::usage(format!(
                "the audit trail holds no event with id or correlation id `{}` (`ovasabi audit list` shows what it holds; the audit service records events as they pass)",
                args.id.trim()
            ))
        })?;
    if matches!(args.format, Format::Json) {
        outln!("{}", serde_json::to_string(&trace).unwrap_or_default());
        return Ok(());
    }
    let start = trace
        .events
        .iter()
        .map(|e| e.time.unwrap_or(e.recorded_at))
        .min()
        .unwrap_or_default();
    let end = trace
        .events
        .iter()
        .map(|e| e.time.unwrap_or(e.recorded_at))
        .max()
        .unwrap_or_default();
    outln!(
        "trace of {}: {} event{} over {} ms{}",
        trace.asked,
        trace.events.len(),
        if trace.events.len() == 1 { "" } else { "s" },
        (end - start).num_milliseconds(),
        match &trace.correlation_id {
            Some(c) if *c != trace.asked => format!(", correlation {c}"),
            _ => String::new(),
        }
    );
    let by_id: std::collections::HashMap<&str, &audit::TraceEvent> =
        trace.events.iter().map(|e| (e.id.as_str(), e)).collect();
    fn line(
        event: &audit::TraceEvent,
        by_id: &std::collections::HashMap<&str, &audit::TraceEvent>,
        start: chrono::DateTime<chrono::Utc>,
        lead: &str,
        branch: &str,
    ) {
        let at = (event.time.unwrap_or(event.recorded_at) - start).num_milliseconds();
        let service = event.source.rsplit('/').next().unwrap_or(&event.source);
        let redelivered = if event.attempt > 1 {
            format!("  (attempt {})", event.attempt)
        } else {
            String::new()
        };
        outln!(
            "{lead}{branch}+{at} ms  {}  {}  {}  {}@{}  {}{redelivered}",
            event.ty,
            service,
            event.subject.as_deref().unwrap_or("-"),
            event.topic,
            event.offset,
            event.id
        );
        let below = match branch {
            "├─ " => format!("{lead}│  "),
            "└─ " => format!("{lead}   "),
            _ => lead.to_owned(),
        };
        for (i, child) in event.caused.iter().enumerate() {
            if let Some(child) = by_id.get(child.as_str()) {
                let last = i + 1 == event.caused.len();
                line(
                    child,
                    by_id,
                    start,
                    &below,
                    if last { "└─ " } else { "├─ " },
                );
            }
        }
    }
    for root in &trace.roots {
        if let Some(event) = by_id.get(root.as_str()) {
            line(event, &by_id, start, "", "");
        }
    }
    Ok(())
}
