//! Dead letters: the events consumer groups gave up on, listed, read and re-driven — one
//! implementation for `ovasabi dlq list | show | redrive` and the runtime's `/v1/dlq…`
//! routes.
//!
//! When a group gives up on an event, the bus copies it to `<topic>.dlq` with `deadletter*`
//! extensions (reason, error, attempts, group, original topic and offset). [`list`] and
//! [`show`] read those topics from the beginning with an ephemeral subscription (nothing is
//! stored on the bus); [`redrive`] publishes chosen dead letters again onto their original
//! topic. A dead letter's ID is `<dlq topic>@<offset>` ([`DeadLetterId`]).
//!
//! # Re-driving once
//!
//! Each re-driven dead letter's ID is recorded in the services' database (table
//! `dlq_redrives`, [`MIGRATIONS`], component `dlq`). Per dead letter, the record is inserted
//! first (`ON CONFLICT DO NOTHING`: an ID already there is skipped), then the event is
//! published, and the record is deleted again if the publish fails. A crash between the
//! insert and the publish leaves a record without a publish: later runs report that dead
//! letter as re-driven already, and `force` re-drives it. The other order (publish, then
//! record) would turn the same crash into a second re-drive; recording first keeps "at most
//! once" and leaves the rare doubtful case to a person, who can see the record's time.
//!
//! # HTTP
//!
//! [`routes`] (served by the runtime):
//!
//! - `GET /v1/dlq?topic=&reason=&group=&limit=&pending=` — `{"items": [...]}`, each item a
//!   [`DeadLetterItem`] (the objects `ovasabi dlq list --format json` prints) with
//!   `redriven_at` (null until re-driven); `pending=true` leaves out those re-driven;
//! - `GET /v1/dlq/{id}` — one [`DeadLetterItem`], with `redriven_at`; 422 naming `id` when
//!   it is not an ID, 404 naming it when there is no such dead letter;
//! - `POST /v1/dlq/redrive` `{"ids": [...]} | {"topic": "..."} | {"all": true}`, optional
//!   `"dry_run": true` and `"force": true` — a [`RedriveReport`]
//!   (`{"redriven", "skipped", "failed", "dry_run"}`); 422 naming `ids` when nothing is
//!   selected.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, SecondsFormat, Utc};
use ovasabi_core::dead_letter;
use ovasabi_core::format::json;
use ovasabi_core::naming::{validate_topic, DEAD_LETTER_SUFFIX};
use ovasabi_core::{Bus, BusError, Event, StartFrom, SubscribeOptions, TopicInfo};
use ovasabi_store::{params, Migration, MigrationSet, Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::http::{ApiError, JsonBody};

/// The table of re-driven dead letters (component `dlq`).
pub const MIGRATIONS: MigrationSet = MigrationSet::new(
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

/// Extension of a re-driven event: the group that had given up on it.
pub const EXT_REDRIVEN_FOR: &str = "redrivenfor";
/// Extension of a re-driven event: the dead letter it came from (`<dlq topic>@<offset>`).
pub const EXT_REDRIVEN_FROM: &str = "redrivenfrom";

/// How long a read waits for the next event before taking the rest as gone.
const IDLE: Duration = Duration::from_secs(2);

/// Why a dead-letter operation failed: the caller's mistake ([`DlqError::is_client_error`])
/// or the bus's or database's failure.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DlqError {
    /// The text is not a dead letter's ID.
    #[error("`{id}` is not a dead letter's ID: {why}; IDs look like `user.events.dlq@12`")]
    BadId {
        /// The text given (trimmed).
        id: String,
        /// What is wrong with it.
        why: String,
    },
    /// The topic is not a topic name.
    #[error("topic `{topic}`: {why}")]
    BadTopic {
        /// The text given (trimmed).
        topic: String,
        /// What is wrong with it.
        why: String,
    },
    /// A re-drive selected nothing: no IDs, no topic, not all.
    #[error("say which dead letters to re-drive: ids, a topic, or all")]
    NoSelector,
    /// These dead letters do not exist (on `topic`, when the request kept to one topic).
    #[error(
        "no such dead letter{}: {}{}",
        if ids.len() == 1 { "" } else { "s" },
        ids.join(", "),
        match topic { Some(t) => format!(" (on {t})"), None => String::new() }
    )]
    NotFound {
        /// The IDs not found.
        ids: Vec<String>,
        /// The dead-letter topic the request kept to.
        topic: Option<String>,
    },
    /// The bus refused the request as wrong (e.g. an invalid name).
    #[error("{0}")]
    Rejected(String),
    /// The bus or the database failed.
    #[error("{0}")]
    Failed(String),
}

impl DlqError {
    /// Whether the caller can fix it (everything but [`DlqError::Failed`]).
    pub fn is_client_error(&self) -> bool {
        !matches!(self, DlqError::Failed(_))
    }
}

impl From<BusError> for DlqError {
    fn from(e: BusError) -> Self {
        if e.is_user_error() {
            DlqError::Rejected(e.to_string())
        } else {
            DlqError::Failed(e.to_string())
        }
    }
}

/// A dead letter's ID: `<dlq topic>@<offset>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeadLetterId {
    /// The dead-letter topic (`<topic>.dlq`).
    pub topic: String,
    /// The offset there.
    pub offset: u64,
}

impl DeadLetterId {
    /// Parses `<dlq topic>@<offset>` (surrounding blanks ignored).
    pub fn parse(text: &str) -> Result<DeadLetterId, DlqError> {
        let text = text.trim();
        let bad = |why: &str| DlqError::BadId {
            id: text.to_owned(),
            why: why.to_owned(),
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
        Ok(DeadLetterId {
            topic: topic.to_owned(),
            offset,
        })
    }
}

impl std::fmt::Display for DeadLetterId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.topic, self.offset)
    }
}

/// `T` or `T.dlq` → `T.dlq`, checked.
pub fn dlq_topic(text: &str) -> Result<String, DlqError> {
    let text = text.trim();
    let topic = if text.ends_with(DEAD_LETTER_SUFFIX) {
        text.to_owned()
    } else {
        format!("{text}{DEAD_LETTER_SUFFIX}")
    };
    validate_topic(&topic).map_err(|e| DlqError::BadTopic {
        topic: text.to_owned(),
        why: e.to_string(),
    })?;
    Ok(topic)
}

/// One event on a dead-letter topic.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    /// The dead-letter topic (`<topic>.dlq`).
    pub dlq_topic: String,
    /// Its offset there.
    pub dlq_offset: u64,
    /// When the bus stored it there.
    pub dead_lettered_at: DateTime<Utc>,
    /// The event, with its `deadletter*` extensions.
    pub event: Event,
}

impl DeadLetter {
    /// `<dlq topic>@<offset>`.
    pub fn id(&self) -> String {
        format!("{}@{}", self.dlq_topic, self.dlq_offset)
    }

    /// The event's extension `name`, as text.
    pub fn ext(&self, name: &str) -> Option<String> {
        self.event
            .extensions
            .get(name)
            .map(ovasabi_core::ExtensionValue::to_canonical_string)
    }

    /// The topic it was dead-lettered from.
    pub fn topic(&self) -> String {
        self.ext(dead_letter::TOPIC).unwrap_or_else(|| {
            self.dlq_topic
                .strip_suffix(DEAD_LETTER_SUFFIX)
                .unwrap_or(&self.dlq_topic)
                .to_owned()
        })
    }

    /// The consumer group that gave up on it.
    pub fn group(&self) -> Option<String> {
        self.ext(dead_letter::GROUP)
    }

    /// Why the group gave up (`max deliveries reached`, `invalid payload`…).
    pub fn reason(&self) -> Option<String> {
        self.ext(dead_letter::REASON)
    }

    /// What the API and `dlq list --format json` show of it.
    pub fn item(&self) -> DeadLetterItem {
        let number = |name: &str| -> Value {
            match self.ext(name) {
                Some(text) => text
                    .parse::<u64>()
                    .map(Value::from)
                    .unwrap_or(Value::String(text)),
                None => Value::Null,
            }
        };
        DeadLetterItem {
            id: self.id(),
            dlq_topic: self.dlq_topic.clone(),
            dlq_offset: self.dlq_offset,
            topic: self.topic(),
            offset: number(dead_letter::OFFSET),
            group: self.group(),
            ty: self.event.ty.clone(),
            event_id: self.event.id.clone(),
            reason: self.reason(),
            error: self.ext(dead_letter::ERROR),
            attempts: number(dead_letter::ATTEMPTS),
            dead_lettered_at: self
                .dead_lettered_at
                .to_rfc3339_opts(SecondsFormat::Millis, true),
            event: json::to_json_value(&self.event),
        }
    }

    /// The event to publish again: the same event without the `deadletter*` extensions,
    /// marked with the group it is meant for and the dead letter it comes from.
    pub fn redriven(&self) -> Event {
        let mut event = self.event.clone();
        event
            .extensions
            .retain(|name, _| !name.starts_with(dead_letter::PREFIX));
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

/// A dead letter as the API answers it (and `ovasabi dlq list --format json` prints it).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeadLetterItem {
    /// `<dlq topic>@<offset>`.
    pub id: String,
    /// The dead-letter topic.
    pub dlq_topic: String,
    /// Its offset there.
    pub dlq_offset: u64,
    /// The topic it was dead-lettered from.
    pub topic: String,
    /// Its offset there (a number; the text as found if not one; null if unknown).
    pub offset: Value,
    /// The group that gave up on it.
    pub group: Option<String>,
    /// The event's type.
    #[serde(rename = "type")]
    pub ty: String,
    /// The event's id.
    pub event_id: String,
    /// Why the group gave up.
    pub reason: Option<String>,
    /// The handler's last error.
    pub error: Option<String>,
    /// Deliveries attempted (a number; the text as found if not one; null if unknown).
    pub attempts: Value,
    /// When it was dead-lettered (RFC 3339, milliseconds, UTC).
    pub dead_lettered_at: String,
    /// The whole event (structured CloudEvents JSON, with its `deadletter*` extensions).
    pub event: Value,
}

/// The dead-letter topics on the bus that hold events, by name.
async fn dlq_topics(bus: &dyn Bus) -> Result<BTreeMap<String, TopicInfo>, DlqError> {
    Ok(bus
        .topics()
        .await?
        .into_iter()
        .filter(|t| t.topic.ends_with(DEAD_LETTER_SUFFIX) && t.retained > 0)
        .map(|t| (t.topic.clone(), t))
        .collect())
}

/// Every event of a dead-letter topic, oldest first, read with an ephemeral subscription.
async fn read_topic(bus: &dyn Bus, info: &TopicInfo) -> Result<Vec<DeadLetter>, DlqError> {
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
            Ok(Some(Err(e))) => break Err(DlqError::from(e)),
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

/// The dead letters of the named dead-letter topic (all of them for `None`), oldest first
/// per topic, topics by name.
async fn read_all(bus: &dyn Bus, only: Option<&str>) -> Result<Vec<DeadLetter>, DlqError> {
    let mut all = Vec::new();
    for (name, info) in dlq_topics(bus).await? {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        all.extend(read_topic(bus, &info).await?);
    }
    Ok(all)
}

/// Which dead letters [`list`] returns.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ListFilter {
    /// Only those of this topic (`T` or `T.dlq`).
    pub topic: Option<String>,
    /// Only those whose reason contains this text (case-insensitive).
    pub reason: Option<String>,
    /// Only those of this consumer group.
    pub group: Option<String>,
    /// At most this many (the first ones, in the order of [`list`]).
    pub limit: Option<usize>,
}

/// The dead letters `filter` selects: topics by name, oldest first per topic.
pub async fn list(bus: &dyn Bus, filter: &ListFilter) -> Result<Vec<DeadLetter>, DlqError> {
    let only = filter.topic.as_deref().map(dlq_topic).transpose()?;
    let reason = filter.reason.as_deref().map(str::to_lowercase);
    Ok(read_all(bus, only.as_deref())
        .await?
        .into_iter()
        .filter(|d| {
            reason.as_deref().is_none_or(|r| {
                d.reason()
                    .is_some_and(|have| have.to_lowercase().contains(r))
            })
        })
        .filter(|d| {
            filter
                .group
                .as_deref()
                .is_none_or(|g| d.group().as_deref() == Some(g))
        })
        .take(filter.limit.unwrap_or(usize::MAX))
        .collect())
}

/// The dead letters with these IDs, in the order asked (each once); an ID not on the bus
/// (or not on `only`, when given) is [`DlqError::NotFound`].
async fn find(
    bus: &dyn Bus,
    ids: &[DeadLetterId],
    only: Option<&str>,
) -> Result<Vec<DeadLetter>, DlqError> {
    let topics = dlq_topics(bus).await?;
    let mut wanted: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    for id in ids {
        wanted.entry(&id.topic).or_default().insert(id.offset);
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
        return Err(DlqError::NotFound {
            ids: missing,
            topic: only.map(str::to_owned),
        });
    }
    let mut letters = Vec::new();
    for id in ids {
        if let Some(d) = found.remove(&(id.topic.clone(), id.offset)) {
            letters.push(d);
        }
    }
    Ok(letters)
}

/// The dead letter `id`; [`DlqError::NotFound`] if there is none.
pub async fn show(bus: &dyn Bus, id: &DeadLetterId) -> Result<DeadLetter, DlqError> {
    find(bus, std::slice::from_ref(id), None)
        .await?
        .pop()
        .ok_or_else(|| DlqError::NotFound {
            ids: vec![id.to_string()],
            topic: None,
        })
}

/// Which dead letters [`redrive`] re-drives: the ones named (kept to `topic` when one is
/// given too), else every one of `topic`, else every one when `all`.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// The dead letters named.
    pub ids: Vec<DeadLetterId>,
    /// The dead-letter topic (`T.dlq`).
    pub topic: Option<String>,
    /// Every dead letter of every `*.dlq` topic.
    pub all: bool,
}

impl Selection {
    /// Checks a selection as given: [`DlqError::NoSelector`] when it selects nothing, then
    /// the topic, then each ID.
    pub fn parse<S: AsRef<str>>(
        ids: &[S],
        topic: Option<&str>,
        all: bool,
    ) -> Result<Selection, DlqError> {
        if topic.is_none() && ids.is_empty() && !all {
            return Err(DlqError::NoSelector);
        }
        let topic = topic.map(dlq_topic).transpose()?;
        let ids = ids
            .iter()
            .map(|i| DeadLetterId::parse(i.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Selection { ids, topic, all })
    }
}

/// How [`redrive`] re-drives.
#[derive(Clone, Copy, Debug, Default)]
pub struct RedriveOptions {
    /// Publish and record nothing: say what would be re-driven and what skipped.
    pub dry_run: bool,
    /// Re-drive also the dead letters recorded as re-driven already.
    pub force: bool,
}

/// What became of one dead letter in a re-drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RedriveStatus {
    /// Published again.
    Redriven,
    /// A dry run: it would be published again.
    WouldRedrive,
    /// Re-driven already (and not forced).
    Skipped,
    /// It could not be published (its record was removed, so a later run tries again).
    Failed,
}

/// One dead letter's outcome (what `ovasabi dlq redrive --format json` prints per line).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RedriveItem {
    /// The dead letter's ID.
    pub id: String,
    /// What became of it.
    pub status: RedriveStatus,
    /// The topic it was (or would be) published to.
    pub topic: String,
    /// Its offset there, once published.
    pub offset: Option<u64>,
    /// The event's id.
    pub event_id: String,
    /// The group that had given up on it.
    pub group: Option<String>,
    /// For a skipped one, when it was re-driven (RFC 3339, milliseconds, UTC).
    pub redriven_at: Option<String>,
    /// For a failed one, why.
    pub error: Option<String>,
    /// The event's type (not serialized; for printing).
    #[serde(skip_serializing, default)]
    pub event_type: String,
}

/// What a re-drive did, by outcome, each list in the order of the selection.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RedriveReport {
    /// Re-driven (in a dry run: would be re-driven).
    pub redriven: Vec<RedriveItem>,
    /// Re-driven already, skipped.
    pub skipped: Vec<RedriveItem>,
    /// Not re-driven for a failure (a later re-drive tries them again).
    pub failed: Vec<RedriveItem>,
    /// Whether it was a dry run (nothing published nor recorded).
    pub dry_run: bool,
}

impl RedriveReport {
    /// How many dead letters the selection held.
    pub fn total(&self) -> usize {
        self.redriven.len() + self.skipped.len() + self.failed.len()
    }
}

/// What became of one dead letter, before it is reported.
enum Outcome {
    Redriven(ovasabi_core::Published),
    WouldRedrive,
    Skipped(Option<DateTime<Utc>>),
    Failed(String),
}

async fn redriven_at(store: &Store, id: &str) -> Result<Option<DateTime<Utc>>, DlqError> {
    let failed = |e: StoreError| DlqError::Failed(format!("reading the re-drive records: {e}"));
    let row = store
        .query_opt(
            "SELECT redriven_at FROM dlq_redrives WHERE id = $1",
            params![id],
        )
        .await
        .map_err(failed)?;
    row.map(|r| r.get::<DateTime<Utc>>("redriven_at"))
        .transpose()
        .map_err(failed)
}

/// Records, publishes, and takes the record back if the publish failed (see the module
/// documentation for why in this order).
async fn redrive_one(
    bus: &dyn Bus,
    store: &Store,
    d: &DeadLetter,
    force: bool,
) -> Result<Outcome, DlqError> {
    let id = d.id();
    let topic = d.topic();
    let db = |e: StoreError| DlqError::Failed(format!("recording the re-drive of {id}: {e}"));
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
    let original: Option<u64> = d.ext(dead_letter::OFFSET).and_then(|o| o.parse().ok());
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

/// Re-drives what `selection` selects, each dead letter at most once (see the module
/// documentation); `store` must have [`MIGRATIONS`] applied.
pub async fn redrive(
    bus: &dyn Bus,
    store: &Store,
    selection: &Selection,
    options: RedriveOptions,
) -> Result<RedriveReport, DlqError> {
    redrive_each(bus, store, selection, options, |_| {}).await
}

/// [`redrive`], calling `on_each` with each dead letter's outcome as soon as it is known.
pub async fn redrive_each(
    bus: &dyn Bus,
    store: &Store,
    selection: &Selection,
    options: RedriveOptions,
    mut on_each: impl FnMut(&RedriveItem) + Send,
) -> Result<RedriveReport, DlqError> {
    let only = selection.topic.as_deref();
    let letters = if selection.ids.is_empty() {
        read_all(bus, only).await?
    } else {
        find(bus, &selection.ids, only).await?
    };
    let mut report = RedriveReport {
        dry_run: options.dry_run,
        ..RedriveReport::default()
    };
    for d in &letters {
        let outcome = if options.dry_run {
            match redriven_at(store, &d.id()).await? {
                Some(at) if !options.force => Outcome::Skipped(Some(at)),
                _ => Outcome::WouldRedrive,
            }
        } else {
            redrive_one(bus, store, d, options.force).await?
        };
        let mut item = RedriveItem {
            id: d.id(),
            status: RedriveStatus::Redriven,
            topic: d.topic(),
            offset: None,
            event_id: d.event.id.clone(),
            group: d.group(),
            redriven_at: None,
            error: None,
            event_type: d.event.ty.clone(),
        };
        let list = match outcome {
            Outcome::Redriven(p) => {
                item.topic = p.topic;
                item.offset = Some(p.offset);
                &mut report.redriven
            }
            Outcome::WouldRedrive => {
                item.status = RedriveStatus::WouldRedrive;
                &mut report.redriven
            }
            Outcome::Skipped(at) => {
                item.status = RedriveStatus::Skipped;
                item.redriven_at = at.map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true));
                &mut report.skipped
            }
            Outcome::Failed(e) => {
                item.status = RedriveStatus::Failed;
                item.error = Some(e);
                &mut report.failed
            }
        };
        on_each(&item);
        list.push(item);
    }
    Ok(report)
}

// ---------------------------------------------------------------------------------------
// HTTP

/// The routes `/v1/dlq`, `/v1/dlq/{id}` and `/v1/dlq/redrive` on `bus` and `store` (which
/// must have [`MIGRATIONS`] applied): see the module documentation.
pub fn routes(bus: Arc<dyn Bus>, store: Store) -> axum::Router {
    let state = Http { bus, store };
    axum::Router::new()
        .route("/v1/dlq", axum::routing::get(http_list))
        .route("/v1/dlq/redrive", axum::routing::post(http_redrive))
        .route("/v1/dlq/{id}", axum::routing::get(http_show))
        .with_state(state)
}

#[derive(Clone)]
struct Http {
    bus: Arc<dyn Bus>,
    store: Store,
}

/// The API's answer to `e`: 422 naming the field, 404, or 503.
fn api_error(e: DlqError, field: &str) -> ApiError {
    match e {
        DlqError::BadId { .. } => ApiError::invalid(field, e.to_string()),
        DlqError::BadTopic { .. } => ApiError::invalid("topic", e.to_string()),
        DlqError::NoSelector => ApiError::invalid(
            "ids",
            "say which dead letters to re-drive: `ids` (IDs as `GET /v1/dlq` lists them), \
             `topic` (every dead letter of that topic) or `all: true` (every dead letter)",
        ),
        DlqError::NotFound { ref ids, .. } => {
            let mut error = ApiError::not_found(match ids.as_slice() {
                [one] => format!("dead letter `{one}`"),
                _ => format!("dead letters {}", ids.join(", ")),
            });
            error.message = format!("{e}; `GET /v1/dlq` lists the dead letters there are");
            error.field = Some(field.to_owned());
            error
        }
        DlqError::Rejected(message) => {
            ApiError::with(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
        }
        DlqError::Failed(message) => {
            tracing::error!(%message, "dead-letter request failed");
            ApiError::with(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }
}

/// `GET /v1/dlq?topic=&reason=&group=&limit=&pending=`.
async fn http_list(
    axum::extract::State(http): axum::extract::State<Http>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let mut query =
        crate::users::paging::query(query, &["topic", "reason", "group", "limit", "pending"])?;
    let pending = match query.remove("pending").as_deref().map(str::trim) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "pending",
                format!("`{other}` is not true or false"),
            ))
        }
    };
    let limit = match query.remove("limit") {
        None => None,
        Some(text) => match text.trim().parse::<usize>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                return Err(ApiError::invalid(
                    "limit",
                    format!("`{text}` is not a whole number of at least 1"),
                ))
            }
        },
    };
    let filter = ListFilter {
        topic: query.remove("topic"),
        reason: query.remove("reason"),
        group: query.remove("group"),
        limit: if pending { None } else { limit },
    };
    let letters = list(http.bus.as_ref(), &filter)
        .await
        .map_err(|e| api_error(e, "topic"))?;
    let redriven = redrive_records(&http.store)
        .await
        .map_err(|e| api_error(e, "topic"))?;
    let items: Vec<Value> = letters
        .iter()
        .map(|letter| {
            let item = letter.item();
            let at = redriven.get(&item.id).copied();
            with_redriven_at(item, at)
        })
        .filter(|item| !pending || item["redriven_at"].is_null())
        .take(limit.unwrap_or(usize::MAX))
        .collect();
    Ok(Json(serde_json::json!({ "items": items })))
}

/// When each dead letter re-driven so far was, by ID.
async fn redrive_records(store: &Store) -> Result<HashMap<String, DateTime<Utc>>, DlqError> {
    store
        .query("SELECT id, redriven_at FROM dlq_redrives", &[])
        .await
        .map_err(|e| DlqError::Failed(format!("reading the re-drive records: {e}")))?
        .iter()
        .map(|row| Ok((row.get("id")?, row.get("redriven_at")?)))
        .collect::<Result<_, StoreError>>()
        .map_err(|e| DlqError::Failed(format!("reading the re-drive records: {e}")))
}

/// `item` as the API answers it: with `redriven_at`, null until it is re-driven.
fn with_redriven_at(item: DeadLetterItem, at: Option<DateTime<Utc>>) -> Value {
    let at = at.map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true));
    let mut value = serde_json::to_value(item).unwrap_or(Value::Null);
    value["redriven_at"] = serde_json::json!(at);
    value
}

/// `GET /v1/dlq/{id}`.
async fn http_show(
    axum::extract::State(http): axum::extract::State<Http>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = DeadLetterId::parse(&id).map_err(|e| api_error(e, "id"))?;
    let found = show(http.bus.as_ref(), &id)
        .await
        .map_err(|e| api_error(e, "id"))?;
    let item = found.item();
    let at = redriven_at(&http.store, &item.id)
        .await
        .map_err(|e| api_error(e, "id"))?;
    Ok(Json(with_redriven_at(item, at)))
}

/// The body of `POST /v1/dlq/redrive`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedriveRequest {
    #[serde(default)]
    ids: Vec<String>,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    all: bool,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    force: bool,
}

/// `POST /v1/dlq/redrive`.
async fn http_redrive(
    axum::extract::State(http): axum::extract::State<Http>,
    JsonBody(request): JsonBody<RedriveRequest>,
) -> Result<Json<RedriveReport>, ApiError> {
    if request.all && request.topic.is_some() {
        return Err(ApiError::invalid(
            "all",
            "`all` re-drives every dead letter: give it without `topic`",
        ));
    }
    if request.all && !request.ids.is_empty() {
        return Err(ApiError::invalid(
            "all",
            "`all` re-drives every dead letter: give it without `ids`",
        ));
    }
    let selection = Selection::parse(&request.ids, request.topic.as_deref(), request.all)
        .map_err(|e| api_error(e, "ids"))?;
    let options = RedriveOptions {
        dry_run: request.dry_run,
        force: request.force,
    };
    let report = redrive(http.bus.as_ref(), &http.store, &selection, options)
        .await
        .map_err(|e| api_error(e, "ids"))?;
    Ok(Json(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_or_say_why_not() {
        assert_eq!(
            DeadLetterId::parse("user.events.dlq@12").unwrap(),
            DeadLetterId {
                topic: "user.events.dlq".to_owned(),
                offset: 12
            }
        );
        assert!(DeadLetterId::parse("user.events@12").is_err());
        assert!(DeadLetterId::parse("user.events.dlq").is_err());
        assert!(DeadLetterId::parse("user.events.dlq@x").is_err());
        assert!(DeadLetterId::parse("User Events.dlq@1").is_err());
    }

    #[test]
    fn a_selection_must_select_something() {
        assert_eq!(
            Selection::parse::<&str>(&[], None, false).unwrap_err(),
            DlqError::NoSelector
        );
        let s = Selection::parse(&["a.events.dlq@1"], Some("a.events"), false).unwrap();
        assert_eq!(s.topic.as_deref(), Some("a.events.dlq"));
        assert_eq!(s.ids[0].offset, 1);
    }

    #[test]
    fn a_redriven_event_drops_the_dead_letter_extensions() {
        let event = Event::new("user.registered", "/test")
            .with_partition_key("u1")
            .with_extension(dead_letter::REASON, "max deliveries reached")
            .with_extension(dead_letter::GROUP, "mailer")
            .with_extension(dead_letter::TOPIC, "user.events")
            .with_extension(dead_letter::OFFSET, "3");
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
        assert_eq!(d.item().offset, Value::from(3u64));
    }
}
