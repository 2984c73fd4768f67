//! `ovasabi dlq list | show | redrive`: the events consumer groups gave up on.
//!
//! When a group gives up on an event, the bus copies it to `<topic>.dlq` with `deadletter*`
//! extensions (reason, error, attempts, group, original topic and offset). These commands
//! read those topics from the beginning with an ephemeral subscription (nothing is stored
//! on the bus), and `redrive` publishes chosen dead letters again onto their original
//! topic.
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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use ovasabi_core::format::json;
use ovasabi_core::naming::{validate_topic, DEAD_LETTER_SUFFIX};
use ovasabi_core::{Bus, Event, StartFrom, SubscribeOptions, TopicInfo};
use ovasabi_store::{params, Migration, MigrationSet, Store};

use crate::cli::{DlqCommand, DlqListArgs, DlqRedriveArgs, DlqShowArgs, Format, Global};
use crate::cmd::{open_bus, store_config};
use crate::failure::Failure;
use crate::output::outln;

/// The table of re-driven dead letters.
const MIGRATIONS: MigrationSet = MigrationSet::new(
    "dlq",
    &[Migration::new(
        1,
        "dlq_redrives",
        "CREATE TABLE dlq_redrives (
            id TEXT PRIMARY KEY,
            redriven_at TIMESTAMPTZ NOT NULL,
            event_id TEXT NOT NULL,
            topic TEXT NOT NULL
        )",
    )],
);

/// The extensions the bus adds to a dead letter; a re-driven event drops them.
const DEAD_LETTER_PREFIX: &str = "deadletter";
/// Extension of a re-driven event: the group that had given up on it.
const EXT_REDRIVEN_FOR: &str = "redrivenfor";
/// Extension of a re-driven event: the dead letter it came from (`<dlq topic>@<offset>`).
const EXT_REDRIVEN_FROM: &str = "redrivenfrom";

/// How long a read waits for the next event before taking the rest as gone.
const IDLE: Duration = Duration::from_secs(2);

/// Runs a `dlq` command.
pub(crate) async fn run(global: &Global, cmd: DlqCommand) -> Result<(), Failure> {
    match cmd {
        DlqCommand::List(args) => list(global, args).await,
        DlqCommand::Show(args) => show(global, args).await,
        DlqCommand::Redrive(args) => redrive(global, args).await,
    }
}

/// One event on a dead-letter topic.
struct DeadLetter {
    /// The dead-letter topic (`<topic>.dlq`).
    dlq_topic: String,
    /// Its offset there.
    dlq_offset: u64,
    /// When the bus stored it there.
    dead_lettered_at: DateTime<Utc>,
    /// The event, with its `deadletter*` extensions.
    event: Event,
}

impl DeadLetter {
    /// `<dlq topic>@<offset>`.
    fn id(&self) -> String {
        format!("{}@{}", self.dlq_topic, self.dlq_offset)
    }

    fn ext(&self, name: &str) -> Option<String> {
        self.event
            .extensions
            .get(name)
            .map(ovasabi_core::ExtensionValue::to_canonical_string)
    }

    /// The topic it was dead-lettered from.
    fn topic(&self) -> String {
        self.ext("deadlettertopic").unwrap_or_else(|| {
            self.dlq_topic
                .strip_suffix(DEAD_LETTER_SUFFIX)
                .unwrap_or(&self.dlq_topic)
                .to_owned()
        })
    }

    fn group(&self) -> Option<String> {
        self.ext("deadlettergroup")
    }

    fn reason(&self) -> Option<String> {
        self.ext("deadletterreason")
    }

    fn to_json(&self) -> serde_json::Value {
        let number = |name: &str| -> serde_json::Value {
            match self.ext(name) {
                Some(text) => text
                    .parse::<u64>()
                    .map(serde_json::Value::from)
                    .unwrap_or(serde_json::Value::String(text)),
                None => serde_json::Value::Null,
            }
        };
        serde_json::json!({
            "id": self.id(),
            "dlq_topic": self.dlq_topic,
            "dlq_offset": self.dlq_offset,
            "topic": self.topic(),
            "offset": number("deadletteroffset"),
            "group": self.group(),
            "type": self.event.ty,
            "event_id": self.event.id,
            "reason": self.reason(),
            "error": self.ext("deadlettererror"),
            "attempts": number("deadletterattempts"),
            "dead_lettered_at": self.dead_lettered_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            "event": json::to_json_value(&self.event),
        })
    }

    /// The event to publish again: the same event without the `deadletter*` extensions,
    /// marked with the group it is meant for and the dead letter it comes from.
    fn redriven(&self) -> Event {
        let mut event = self.event.clone();
        event
            .extensions
            .retain(|name, _| !name.starts_with(DEAD_LETTER_PREFIX));
        if let Some(group) = self.group() {
            event
                .extensions
                .insert(EXT_REDRIVEN_FOR.into(), group.into());
        } else {
            event.extensions.remove(EXT_REDRIVEN_FOR);
        }
        event
            .extensions
            .insert(EXT_REDRIVEN_FROM.into(), self.id().into());
        event
    }
}

/// `T` or `T.dlq` → `T.dlq`, checked.
fn dlq_topic_of(flag: &str, text: &str) -> Result<String, Failure> {
    let text = text.trim();
    let topic = if text.ends_with(DEAD_LETTER_SUFFIX) {
        text.to_owned()
    } else {
        format!("{text}{DEAD_LETTER_SUFFIX}")
    };
    validate_topic(&topic).map_err(|e| Failure::usage(format!("{flag} `{text}`: {e}")))?;
    Ok(topic)
}

/// Parses `<dlq topic>@<offset>`.
fn parse_id(text: &str) -> Result<(String, u64), Failure> {
    let text = text.trim();
    let bad = |why: &str| {
        Failure::usage(format!(
            "`{text}` is not a dead letter's ID: {why}; IDs look like `user.events.dlq@12` (`ovasabi dlq list` shows them)"
        ))
    };
    let (topic, offset) = text
        .rsplit_once('@')
        .ok_or_else(|| bad("it has no `@<offset>`"))?;
    if !topic.ends_with(DEAD_LETTER_SUFFIX) {
        return Err(bad("its topic does not end in `.dlq`"));
    }
    validate_topic(topic).map_err(|e| bad(&e.to_string()))?;
    let offset = offset
        .parse::<u64>()
        .map_err(|_| bad("its offset is not a whole number"))?;
    Ok((topic.to_owned(), offset))
}

/// The dead-letter topics on the bus that hold events, by name.
async fn dlq_topics(bus: &dyn Bus) -> Result<BTreeMap<String, TopicInfo>, Failure> {
    Ok(bus
        .topics()
        .await?
        .into_iter()
        .filter(|t| t.topic.ends_with(DEAD_LETTER_SUFFIX) && t.retained > 0)
        .map(|t| (t.topic.clone(), t))
        .collect())
}

/// Every event of a dead-letter topic, oldest first, read with an ephemeral subscription.
async fn read_topic(bus: &dyn Bus, info: &TopicInfo) -> Result<Vec<DeadLetter>, Failure> {
    let options = SubscribeOptions::new("dlq", [info.topic.as_str()])?
        .start(StartFrom::Beginning)
        .ephemeral(true)
        .ordering(ovasabi_core::Ordering::None)
        .max_in_flight(64);
    let mut sub = bus.subscribe(options).await?;
    let mut found: BTreeMap<u64, DeadLetter> = BTreeMap::new();
    let wanted = info.next_offset.saturating_sub(info.first_offset);
    let result = loop {
        // Everything below the end read (offsets may have holes: retention, a purge).
        let below_end = found.range(..info.next_offset).count() as u64;
        if below_end >= wanted.min(info.retained) {
            break Ok(());
        }
        let delivery = match tokio::time::timeout(IDLE, sub.next()).await {
            Ok(Some(Ok(d))) => d,
            Ok(Some(Err(e))) => break Err(Failure::from(e)),
            // Closed, or idle: what remains was removed by retention meanwhile.
            Ok(None) | Err(_) => break Ok(()),
        };
        let info = delivery.info().clone();
        found.entry(info.offset).or_insert_with(|| DeadLetter {
            dlq_topic: info.topic.clone(),
            dlq_offset: info.offset,
            dead_lettered_at: info.published_at,
            event: delivery.event().clone(),
        });
        if let Err(e) = delivery.ack().await {
            break Err(e.into());
        }
    };
    sub.close().await;
    result.map(|()| found.into_values().collect())
}

/// The dead letters of the named dead-letter topics (all of them for `None`), oldest first
/// per topic, topics by name.
async fn read_all(bus: &dyn Bus, only: Option<&str>) -> Result<Vec<DeadLetter>, Failure> {
    let mut all = Vec::new();
    for (name, info) in dlq_topics(bus).await? {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        all.extend(read_topic(bus, &info).await?);
    }
    Ok(all)
}

async fn list(global: &Global, args: DlqListArgs) -> Result<(), Failure> {
    let only = args
        .topic
        .as_deref()
        .map(|t| dlq_topic_of("--topic", t))
        .transpose()?;
    let bus = open_bus(global).await?;
    let read = read_all(&*bus, only.as_deref()).await;
    bus.close().await?;
    let reason = args.reason.as_deref().map(str::to_lowercase);
    let letters: Vec<DeadLetter> = read?
        .into_iter()
        .filter(|d| {
            reason.as_deref().is_none_or(|r| {
                d.reason()
                    .is_some_and(|have| have.to_lowercase().contains(r))
            })
        })
        .filter(|d| {
            args.group
                .as_deref()
                .is_none_or(|g| d.group().as_deref() == Some(g))
        })
        .collect();
    match args.format {
        Format::Json => {
            for d in &letters {
                outln!("{}", d.to_json());
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
                        d.ext("deadletterattempts").unwrap_or_else(|| "-".into()),
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

/// The dead letters with these IDs, in the order asked; an ID not on the bus is a usage
/// failure.
async fn find(
    bus: &dyn Bus,
    ids: &[(String, u64)],
    only: Option<&str>,
) -> Result<Vec<DeadLetter>, Failure> {
    let topics = dlq_topics(bus).await?;
    let mut wanted: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    for (topic, offset) in ids {
        wanted.entry(topic).or_default().insert(*offset);
    }
    let mut found: HashMap<(String, u64), DeadLetter> = HashMap::new();
    let mut missing = Vec::new();
    for (topic, offsets) in &wanted {
        let in_range = |info: &TopicInfo, o: u64| info.first_offset <= o && o < info.next_offset;
        let info = match topics.get(*topic) {
            Some(info)
                if only.is_none_or(|o| o == *topic)
                    && offsets.iter().any(|&o| in_range(info, o)) =>
            {
                info
            }
            _ => {
                missing.extend(offsets.iter().map(|o| format!("{topic}@{o}")));
                continue;
            }
        };
        for d in read_topic(bus, info).await? {
            if offsets.contains(&d.dlq_offset) {
                found.insert((d.dlq_topic.clone(), d.dlq_offset), d);
            }
        }
        missing.extend(
            offsets
                .iter()
                .filter(|&&o| !found.contains_key(&((*topic).to_owned(), o)))
                .map(|o| format!("{topic}@{o}")),
        );
    }
    if !missing.is_empty() {
        return Err(Failure::usage(format!(
            "no such dead letter{}: {}{}; `ovasabi dlq list` shows the dead letters there are",
            if missing.len() == 1 { "" } else { "s" },
            missing.join(", "),
            match only {
                Some(t) => format!(" (on {t}, as --topic asks)"),
                None => String::new(),
            }
        )));
    }
    let mut letters = Vec::new();
    let mut seen = BTreeSet::new();
    for key in ids {
        if seen.insert(key.clone()) {
            if let Some(d) = found.remove(key) {
                letters.push(d);
            }
        }
    }
    Ok(letters)
}

async fn show(global: &Global, args: DlqShowArgs) -> Result<(), Failure> {
    let id = parse_id(&args.id)?;
    let bus = open_bus(global).await?;
    let found = find(&*bus, std::slice::from_ref(&id), None).await;
    bus.close().await?;
    let Some(d) = found?.pop() else {
        return Err(Failure::usage(format!("no such dead letter: {}", args.id)));
    };
    if args.format == Format::Json {
        outln!("{}", d.to_json());
        return Ok(());
    }
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    outln!("dead letter {}", d.id());
    outln!(
        "  from:           {}@{}",
        d.topic(),
        or_dash(d.ext("deadletteroffset"))
    );
    outln!("  group:          {}", or_dash(d.group()));
    outln!("  reason:         {}", or_dash(d.reason()));
    outln!("  attempts:       {}", or_dash(d.ext("deadletterattempts")));
    outln!(
        "  dead-lettered:  {}",
        d.dead_lettered_at
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    );
    outln!("  error:          {}", or_dash(d.ext("deadlettererror")));
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
        if !name.starts_with(DEAD_LETTER_PREFIX) {
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

/// What became of one dead letter in `redrive`.
enum Outcome {
    /// Published again, at this position.
    Redriven(ovasabi_core::Published),
    /// `--dry-run`: it would be published again.
    WouldRedrive,
    /// Re-driven already, at this time.
    Skipped(Option<DateTime<Utc>>),
    /// It could not be published (the record was removed, so a later run tries again).
    Failed(String),
}

async fn open_store(global: &Global) -> Result<Store, Failure> {
    let database = store_config(global)?;
    Store::open(&database, &[MIGRATIONS])
        .await
        .map_err(|e| Failure::runtime(format!("database {database}: {e}")))
}

async fn redriven_at(store: &Store, id: &str) -> Result<Option<DateTime<Utc>>, Failure> {
    let row = store
        .query_opt(
            "SELECT redriven_at FROM dlq_redrives WHERE id = $1",
            params![id],
        )
        .await
        .map_err(|e| Failure::runtime(format!("reading the re-drive records: {e}")))?;
    row.map(|r| r.get::<DateTime<Utc>>("redriven_at"))
        .transpose()
        .map_err(|e| Failure::runtime(format!("reading the re-drive records: {e}")))
}

/// Records, publishes, and takes the record back if the publish failed (see the module
/// documentation for why in this order).
async fn redrive_one(
    bus: &dyn Bus,
    store: &Store,
    d: &DeadLetter,
    force: bool,
) -> Result<Outcome, Failure> {
    let id = d.id();
    let topic = d.topic();
    let db = |e: ovasabi_store::StoreError| {
        Failure::runtime(format!("recording the re-drive of {id}: {e}"))
    };
    let inserted = store
        .execute(
            "INSERT INTO dlq_redrives (id, redriven_at, event_id, topic) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO NOTHING",
            params![id.as_str(), Utc::now(), d.event.id.as_str(), topic.as_str()],
        )
        .await
        .map_err(db)?
        == 1;
    if !inserted && !force {
        return Ok(Outcome::Skipped(redriven_at(store, &id).await?));
    }
    let original: Option<u64> = d.ext("deadletteroffset").and_then(|o| o.parse().ok());
    let failure = match bus.publish(&topic, d.redriven()).await {
        // A broker that deduplicates by event id (NATS JetStream within its duplicate
        // window) answers with the original's position and stores nothing.
        Ok(p) if original.is_some_and(|o| p.offset <= o) => format!(
            "the bus stored nothing new: it took the event for a duplicate of the original \
             ({}@{}; NATS JetStream drops an event id seen within the stream's duplicate \
             window, 2 minutes by default): run the re-drive again after that window",
            p.topic, p.offset
        ),
        Ok(p) => {
            if !inserted {
                store
                    .execute(
                        "UPDATE dlq_redrives SET redriven_at = $2 WHERE id = $1",
                        params![id.as_str(), Utc::now()],
                    )
                    .await
                    .map_err(db)?;
            }
            return Ok(Outcome::Redriven(p));
        }
        Err(e) => e.to_string(),
    };
    if inserted {
        if let Err(e) = store
            .execute(
                "DELETE FROM dlq_redrives WHERE id = $1",
                params![id.as_str()],
            )
            .await
        {
            return Ok(Outcome::Failed(format!(
                "{failure}; and its re-drive record could not be removed ({e}), so later runs \
                 will skip it: re-drive it with --force"
            )));
        }
    }
    Ok(Outcome::Failed(failure))
}

async fn redrive(global: &Global, args: DlqRedriveArgs) -> Result<(), Failure> {
    if args.topic.is_none() && args.ids.is_empty() && !args.all {
        return Err(Failure::usage(
            "say which dead letters to re-drive: --id <dlq topic>@<offset> (repeatable, as \
             `ovasabi dlq list` shows them), --topic <topic> (every dead letter of that topic), \
             or --all (every dead letter); add --dry-run to see what would happen",
        ));
    }
    let only = args
        .topic
        .as_deref()
        .map(|t| dlq_topic_of("--topic", t))
        .transpose()?;
    let ids = args
        .ids
        .iter()
        .map(|i| parse_id(i))
        .collect::<Result<Vec<_>, _>>()?;
    // The store first: a database that does not open fails the command before the bus is
    // read (and, for the embedded bus, held).
    let store = open_store(global).await?;
    let bus = open_bus(global).await?;
    let result = redrive_on(&*bus, &store, &args, only.as_deref(), &ids).await;
    let closed = bus.close().await;
    let (done, failed) = result?;
    closed?;
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

/// Re-drives what `args` selects; returns how many were re-driven and how many failed.
async fn redrive_on(
    bus: &dyn Bus,
    store: &Store,
    args: &DlqRedriveArgs,
    only: Option<&str>,
    ids: &[(String, u64)],
) -> Result<(usize, usize), Failure> {
    let letters = if ids.is_empty() {
        read_all(bus, only).await?
    } else {
        find(bus, ids, only).await?
    };
    if letters.is_empty() {
        if args.format == Format::Pretty {
            outln!(
                "no dead letters to re-drive{}",
                match only {
                    Some(t) => format!(" on {t}"),
                    None => String::new(),
                }
            );
        }
        return Ok((0, 0));
    }
    let (mut redriven, mut skipped, mut failed) = (0usize, 0usize, 0usize);
    for d in &letters {
        let outcome = if args.dry_run {
            match redriven_at(store, &d.id()).await? {
                Some(at) if !args.force => Outcome::Skipped(Some(at)),
                _ => Outcome::WouldRedrive,
            }
        } else {
            redrive_one(bus, store, d, args.force).await?
        };
        let group = d.group();
        let (status, published, at, error) = match &outcome {
            Outcome::Redriven(p) => ("redriven", Some(p), None, None),
            Outcome::WouldRedrive => ("would-redrive", None, None, None),
            Outcome::Skipped(at) => ("skipped", None, *at, None),
            Outcome::Failed(e) => ("failed", None, None, Some(e.as_str())),
        };
        match outcome {
            Outcome::Redriven(_) | Outcome::WouldRedrive => redriven += 1,
            Outcome::Skipped(_) => skipped += 1,
            Outcome::Failed(_) => failed += 1,
        }
        match args.format {
            Format::Json => outln!(
                "{}",
                serde_json::json!({
                    "id": d.id(),
                    "status": status,
                    "topic": published.map_or_else(|| d.topic(), |p| p.topic.clone()),
                    "offset": published.map(|p| p.offset),
                    "event_id": d.event.id,
                    "group": group,
                    "redriven_at": at.map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true)),
                    "error": error,
                })
            ),
            Format::Pretty => {
                let what = format!(
                    "{} (event {}, {}, group {})",
                    d.id(),
                    d.event.id,
                    d.event.ty,
                    group.as_deref().unwrap_or("-")
                );
                match (status, published, at, error) {
                    ("redriven", Some(p), _, _) => {
                        outln!("re-drove {what} to {}@{}", p.topic, p.offset)
                    }
                    ("would-redrive", ..) => {
                        outln!("would re-drive {what} to {}", d.topic())
                    }
                    ("skipped", _, at, _) => outln!(
                        "skipped {what}: already re-driven{}; --force re-drives it again",
                        at.map(|t| format!(
                            " at {}",
                            t.to_rfc3339_opts(SecondsFormat::Millis, true)
                        ))
                        .unwrap_or_default()
                    ),
                    (_, _, _, error) => {
                        eprintln!("failed to re-drive {what}: {}", error.unwrap_or("?"))
                    }
                }
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_or_say_why_not() {
        assert_eq!(
            parse_id("user.events.dlq@12").unwrap(),
            ("user.events.dlq".to_owned(), 12)
        );
        assert!(parse_id("user.events@12").is_err());
        assert!(parse_id("user.events.dlq").is_err());
        assert!(parse_id("user.events.dlq@x").is_err());
        assert!(parse_id("User Events.dlq@1").is_err());
    }

    #[test]
    fn a_redriven_event_drops_the_dead_letter_extensions() {
        let event = Event::new("user.registered", "/test")
            .with_partition_key("u1")
            .with_extension("deadletterreason", "max deliveries reached")
            .with_extension("deadlettergroup", "mailer")
            .with_extension("deadlettertopic", "user.events")
            .with_extension("deadletteroffset", "3");
        let d = DeadLetter {
            dlq_topic: "user.events.dlq".into(),
            dlq_offset: 0,
            dead_lettered_at: Utc::now(),
            event,
        };
        let again = d.redriven();
        assert_eq!(d.topic(), "user.events");
        assert_eq!(again.partition_key(), Some("u1"));
        assert_eq!(again.extension_str(EXT_REDRIVEN_FOR), Some("mailer"));
        assert_eq!(
            again.extension_str(EXT_REDRIVEN_FROM),
            Some("user.events.dlq@0")
        );
        assert!(!again.extensions.keys().any(|k| k.starts_with("deadletter")));
    }
}
