//! `ovasabi dlq list | show | redrive`: the events consumer groups gave up on.
//!
//! When a group gives up on an event, the bus copies it to `<topic>.dlq` with `deadletter*`
//! extensions (reason, error, attempts, group, original topic and offset). These commands
//! read those topics from the beginning with an ephemeral subscription (nothing is stored
//! on the bus), and `redrive` publishes chosen dead letters again onto their original
//! topic. The bus and database work is [`ovasabi_services::dlq`]'s, which the runtime's
//! `/v1/dlq…` routes share; this module parses the flags and prints. While a running
//! `ovasabi up` holds the embedded bus, the commands ask its API instead (`--api`), and
//! print the same.
//!
//! # Re-driving once
//!
//! Each re-driven dead letter's ID (`<dlq topic>@<offset>`) is recorded in the services'
//! database (table `dlq_redrives`, component `dlq`). Per dead letter, the record is
//! inserted first (`ON CONFLICT DO NOTHING`: an ID already there is skipped), then the event
//! is published, and the record is deleted again if the publish fails. A crash between the
//! insert and the publish leaves a record without a publish: later runs report that dead
//! letter as re-driven already, and `--force` re-drives it. The other order (publish, then
//! record) would turn the same crash into a second re-drive; recording first keeps "at most
//! once" and leaves the rare doubtful case to a person, who can see the record's time.

use chrono::SecondsFormat;
use ovasabi_core::dead_letter;
use ovasabi_services::dlq::{
    self, DeadLetterId, DlqError, ListFilter, RedriveItem, RedriveOptions, RedriveStatus,
    Selection, MIGRATIONS,
};
use ovasabi_store::Store;

use crate::cli::{DlqCommand, DlqListArgs, DlqRedriveArgs, DlqShowArgs, Format, Global};
use crate::cmd::{ask_api, open_bus_unless_held, query_value, store_config};
use crate::failure::Failure;
use crate::output::outln;

/// Runs a `dlq` command.
pub(crate) async fn run(global: &Global, cmd: DlqCommand) -> Result<(), Failure> {
    match cmd {
        DlqCommand::List(args) => list(global, args).await,
        DlqCommand::Show(args) => show(global, args).await,
        DlqCommand::Redrive(args) => redrive(global, args).await,
    }
}

/// The command's failure for `e`: a usage failure (exit 2) when the input is at fault, a
/// runtime failure (exit 1) otherwise; messages name the flags.
fn failure(e: DlqError) -> Failure {
    match e {
        DlqError::BadId { id, why } => Failure::usage(format!(
            "`{id}` is not a dead letter's ID: {why}; IDs look like `user.events.dlq@12` (`ovasabi dlq list` shows them)"
        )),
        DlqError::BadTopic { topic, why } => Failure::usage(format!("--topic `{topic}`: {why}")),
        DlqError::NoSelector => Failure::usage(
            "say which dead letters to re-drive: --id <dlq topic>@<offset> (repeatable, as \
             `ovasabi dlq list` shows them), --topic <topic> (every dead letter of that topic), \
             or --all (every dead letter); add --dry-run to see what would happen",
        ),
        DlqError::NotFound { ids, topic } => Failure::usage(format!(
            "no such dead letter{}: {}{}; `ovasabi dlq list` shows the dead letters there are",
            if ids.len() == 1 { "" } else { "s" },
            ids.join(", "),
            match topic {
                Some(t) => format!(" (on {t}, as --topic asks)"),
                None => String::new(),
            }
        )),
        DlqError::Failed(message) => Failure::runtime(message),
        e @ DlqError::Rejected(_) => Failure::usage(e.to_string()),
        e => Failure::runtime(e.to_string()),
    }
}

async fn list(global: &Global, args: DlqListArgs) -> Result<(), Failure> {
    let only = args
        .topic
        .as_deref()
        .map(dlq::dlq_topic)
        .transpose()
        .map_err(failure)?;
    let filter = ListFilter {
        topic: only.clone(),
        reason: args.reason,
        group: args.group,
        limit: None,
    };
    let letters = match open_bus_unless_held(global).await? {
        Some(bus) => {
            let read = dlq::list(&*bus, &filter).await;
            bus.close().await?;
            read.map_err(failure)?
        }
        None => {
            let query: Vec<String> = [
                ("topic", &filter.topic),
                ("reason", &filter.reason),
                ("group", &filter.group),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", query_value(v))))
            .collect();
            let answer = ask_api(
                &args.api,
                reqwest::Method::GET,
                &format!("/v1/dlq?{}", query.join("&")),
                None,
            )
            .await?;
            answer["items"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(letter_of)
                .collect::<Result<Vec<_>, _>>()?
        }
    };
    match args.format {
        Format::Json => {
            for d in &letters {
                outln!("{}", item_json(d));
            }
        }
        Format::Pretty => {
            if letters.is_empty() {
                eprintln!(
                    "no dead letters{}",
                    match &only {
                        Some(t) => format!(" on {t}"),
                        None => String::new(),
                    }
                );
                return Ok(());
            }
            let rows: Vec<[String; 8]> = letters
                .iter()
                .map(|d| {
                    [
                        d.id(),
                        d.topic(),
                        d.group().unwrap_or_else(|| "-".into()),
                        d.event.ty.clone(),
                        d.event.id.clone(),
                        d.reason().unwrap_or_else(|| "-".into()),
                        d.ext(dead_letter::ATTEMPTS).unwrap_or_else(|| "-".into()),
                        d.dead_lettered_at
                            .format("%Y-%m-%d %H:%M:%S%.3f")
                            .to_string(),
                    ]
                })
                .collect();
            let head = [
                "ID", "TOPIC", "GROUP", "TYPE", "EVENT ID", "REASON", "ATTEMPTS", "TIME",
            ];
            let mut widths = head.map(str::len);
            for row in &rows {
                for (w, cell) in widths.iter_mut().zip(row) {
                    *w = (*w).max(cell.chars().count());
                }
            }
            let line = |cells: [&str; 8]| {
                let mut text = String::new();
                for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                    if i == 6 {
                        text.push_str(&format!("{cell:>w$}  "));
                    } else if i == 7 {
                        text.push_str(cell);
                    } else {
                        text.push_str(&format!("{cell:<w$}  "));
                    }
                }
                text
            };
            outln!("{}", line(head));
            for row in &rows {
                outln!("{}", line(row.each_ref().map(String::as_str)));
            }
        }
    }
    Ok(())
}

/// A dead letter as the running platform's API answers it (`GET /v1/dlq…`), read back.
fn letter_of(item: &serde_json::Value) -> Result<dlq::DeadLetter, Failure> {
    let bad = |what: &str| {
        Failure::runtime(format!(
            "the platform answered a dead letter without {what}: {item}"
        ))
    };
    Ok(dlq::DeadLetter {
        dlq_topic: item["dlq_topic"]
            .as_str()
            .ok_or_else(|| bad("dlq_topic"))?
            .to_owned(),
        dlq_offset: item["dlq_offset"]
            .as_u64()
            .ok_or_else(|| bad("dlq_offset"))?,
        dead_lettered_at: item["dead_lettered_at"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .ok_or_else(|| bad("dead_lettered_at"))?
            .with_timezone(&chrono::Utc),
        event: ovasabi_core::format::json::from_json_slice(item["event"].to_string().as_bytes())
            .map_err(|e| bad(&format!("a readable event ({e})")))?,
    })
}

/// A dead letter as one JSON line (the API's item: the same fields, keys in the same
/// order as ever).
fn item_json(d: &dlq::DeadLetter) -> serde_json::Value {
    serde_json::to_value(d.item()).unwrap_or_default()
}

async fn show(global: &Global, args: DlqShowArgs) -> Result<(), Failure> {
    let id = DeadLetterId::parse(&args.id).map_err(failure)?;
    let d = match open_bus_unless_held(global).await? {
        Some(bus) => {
            let found = dlq::show(&*bus, &id).await;
            bus.close().await?;
            found.map_err(failure)?
        }
        None => {
            let path = format!("/v1/dlq/{}", query_value(&args.id));
            letter_of(&ask_api(&args.api, reqwest::Method::GET, &path, None).await?)?
        }
    };
    if args.format == Format::Json {
        outln!("{}", item_json(&d));
        return Ok(());
    }
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    outln!("dead letter {}", d.id());
    outln!(
        "  from:           {}@{}",
        d.topic(),
        or_dash(d.ext(dead_letter::OFFSET))
    );
    outln!("  group:          {}", or_dash(d.group()));
    outln!("  reason:         {}", or_dash(d.reason()));
    outln!(
        "  attempts:       {}",
        or_dash(d.ext(dead_letter::ATTEMPTS))
    );
    outln!(
        "  dead-lettered:  {}",
        d.dead_lettered_at
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    );
    outln!("  error:          {}", or_dash(d.ext(dead_letter::ERROR)));
    let e = &d.event;
    outln!("event");
    outln!("  id:               {}", e.id);
    outln!("  type:             {}", e.ty);
    outln!("  source:           {}", e.source);
    outln!(
        "  subject:          {}",
        e.subject.as_deref().unwrap_or("-")
    );
    outln!(
        "  time:             {}",
        e.time
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
            .unwrap_or_else(|| "-".into())
    );
    outln!(
        "  datacontenttype:  {}",
        e.datacontenttype.as_deref().unwrap_or("-")
    );
    if let Some(schema) = &e.dataschema {
        outln!("  dataschema:       {schema}");
    }
    for (name, value) in &e.extensions {
        if !name.starts_with(dead_letter::PREFIX) {
            outln!(
                "  {:<17} {}",
                format!("{name}:"),
                value.to_canonical_string()
            );
        }
    }
    outln!("data");
    match (&e.data, e.data_json()) {
        (None, _) => outln!("  <no data>"),
        (Some(_), Some(value)) => {
            let text = serde_json::to_string_pretty(&value).unwrap_or_default();
            for line in text.lines() {
                outln!("  {line}");
            }
        }
        (Some(bytes), None) => match std::str::from_utf8(bytes) {
            Ok(text) => {
                for line in text.lines() {
                    outln!("  {line}");
                }
            }
            _ => outln!(
                "  <{} bytes of {}>",
                bytes.len(),
                e.datacontenttype.as_deref().unwrap_or("data")
            ),
        },
    }
    Ok(())
}

async fn open_store(global: &Global) -> Result<Store, Failure> {
    let database = store_config(global)?;
    Store::open(&database, &[MIGRATIONS])
        .await
        .map_err(|e| Failure::runtime(format!("database {database}: {e}")))
}

async fn redrive(global: &Global, args: DlqRedriveArgs) -> Result<(), Failure> {
    let selection =
        Selection::parse(&args.ids, args.topic.as_deref(), args.all).map_err(failure)?;
    // The store first: a database that does not open fails the command before the bus is
    // read (and, for the embedded bus, held).
    let store = open_store(global).await?;
    let (done, failed) = match open_bus_unless_held(global).await? {
        Some(bus) => {
            let result = redrive_on(&*bus, &store, &args, &selection).await;
            let closed = bus.close().await;
            let counts = result?;
            closed?;
            counts
        }
        None => redrive_through_api(&args).await?,
    };
    if failed > 0 {
        return Err(Failure::runtime(format!(
            "{failed} dead letter{} could not be re-driven (see above); {done} {} re-driven; \
             run the command again once the problem is solved: re-driven ones are skipped",
            if failed == 1 { "" } else { "s" },
            if done == 1 { "was" } else { "were" },
        )));
    }
    Ok(())
}

/// `POST <api>/v1/dlq/redrive` of the running platform; prints each outcome and returns how
/// many were re-driven and how many failed.
async fn redrive_through_api(args: &DlqRedriveArgs) -> Result<(usize, usize), Failure> {
    let body = serde_json::json!({
        "ids": args.ids,
        "topic": args.topic,
        "all": args.all,
        "dry_run": args.dry_run,
        "force": args.force,
    });
    let answer = ask_api(
        &args.api,
        reqwest::Method::POST,
        "/v1/dlq/redrive",
        Some(&body),
    )
    .await?;
    let report: dlq::RedriveReport = serde_json::from_value(answer.clone()).map_err(|e| {
        Failure::runtime(format!(
            "the platform's re-drive report does not read ({e}): {answer}"
        ))
    })?;
    for item in report
        .redriven
        .iter()
        .chain(&report.skipped)
        .chain(&report.failed)
    {
        print_outcome(args.format, item);
    }
    if report.total() == 0 && args.format == Format::Pretty {
        outln!("no dead letters to re-drive");
    }
    Ok((report.redriven.len(), report.failed.len()))
}

/// Prints one dead letter's outcome as `format` asks.
fn print_outcome(format: Format, item: &RedriveItem) {
    match format {
        Format::Json => outln!("{}", serde_json::to_value(item).unwrap_or_default()),
        Format::Pretty => {
            let what = match item.event_type.as_str() {
                "" => format!(
                    "{} (event {}, group {})",
                    item.id,
                    item.event_id,
                    item.group.as_deref().unwrap_or("-")
                ),
                ty => format!(
                    "{} (event {}, {ty}, group {})",
                    item.id,
                    item.event_id,
                    item.group.as_deref().unwrap_or("-")
                ),
            };
            match item.status {
                RedriveStatus::Redriven => outln!(
                    "re-drove {what} to {}@{}",
                    item.topic,
                    item.offset.map(|o| o.to_string()).unwrap_or_default()
                ),
                RedriveStatus::WouldRedrive => outln!("would re-drive {what} to {}", item.topic),
                RedriveStatus::Skipped => outln!(
                    "skipped {what}: already re-driven{}; --force re-drives it again",
                    item.redriven_at
                        .as_deref()
                        .map(|t| format!(" at {t}"))
                        .unwrap_or_default()
                ),
                RedriveStatus::Failed => eprintln!(
                    "failed to re-drive {what}: {}",
                    item.error.as_deref().unwrap_or("?")
                ),
            }
        }
    }
}

/// Re-drives what `selection` selects; returns how many were re-driven and how many failed.
async fn redrive_on(
    bus: &dyn ovasabi_core::Bus,
    store: &Store,
    args: &DlqRedriveArgs,
    selection: &Selection,
) -> Result<(usize, usize), Failure> {
    let options = RedriveOptions {
        dry_run: args.dry_run,
        force: args.force,
    };
    let format = args.format;
    let report = dlq::redrive_each(bus, store, selection, options, |item| {
        print_outcome(format, item)
    })
    .await
    .map_err(failure)?;
    if report.total() == 0 {
        if args.format == Format::Pretty {
            outln!(
                "no dead letters to re-drive{}",
                match &selection.topic {
                    Some(t) => format!(" on {t}"),
                    None => String::new(),
                }
            );
        }
        return Ok((0, 0));
    }
    let (redriven, skipped, failed) = (
        report.redriven.len(),
        report.skipped.len(),
        report.failed.len(),
    );
    if args.format == Format::Pretty {
        let verb = if args.dry_run {
            "would re-drive"
        } else {
            "re-drove"
        };
        outln!(
            "{verb} {redriven}, skipped {skipped} (already re-driven){}",
            if failed > 0 {
                format!(", {failed} failed")
            } else {
                String::new()
            }
        );
    }
    Ok((if args.dry_run { 0 } else { redriven }, failed))
}
