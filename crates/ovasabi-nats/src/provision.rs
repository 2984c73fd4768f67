//! Provisioning and inspection, for `ovasabi bus provision` and `ovasabi bus status`.
//!
//! [`provision`] creates or updates the streams of the named topics so they match a
//! [`ProvisionConfig`], idempotently: running it twice reports every stream
//! [`Unchanged`](ProvisionAction::Unchanged) the second time. [`status`] lists the bus's
//! streams and consumers with their counts.
//!
//! The bus also creates a topic's stream by itself on first publish or subscribe, with the
//! settings its [`NatsConfig::streams`](crate::NatsConfig::streams) gives that topic, so
//! provisioning is needed only to set things up ahead of time or to change limits.
//!
//! Retention is always JetStream's `limits` policy: events stay until they are older than
//! `max_age` or the stream is over `max_bytes` (oldest first), whether or not every group has
//! read them, as on the embedded bus and Kafka. The `interest` and `workqueue` policies would
//! break replay and "every group gets every event".
//!
//! ```no_run
//! # async fn demo() -> Result<(), ovasabi_core::BusError> {
//! use ovasabi_nats::provision::{provision, status, ProvisionConfig};
//! use ovasabi_nats::{NatsBus, NatsConfig};
//!
//! let bus = NatsBus::connect(NatsConfig::default()).await?;
//! for change in provision(&bus, &ProvisionConfig::default(), &["user.events"]).await? {
//!     println!("{change}"); // created user.events (stream OVASABI_user_events)…
//! }
//! println!("{}", status(&bus).await?);
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use futures::StreamExt;
use ovasabi_core::naming::{dead_letter_topic, validate_topic};
use ovasabi_core::{BusError, TopicPattern};
use serde::Serialize;

use crate::api::ApiError;
use crate::layout::{self, Lane};
use crate::NatsBus;

/// Where a stream keeps its events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// On the server's disk (the default): survives a server restart.
    File,
    /// In the server's memory: lost when the server stops.
    Memory,
}

impl Storage {
    fn to_nats(self) -> StorageType {
        match self {
            Storage::File => StorageType::File,
            Storage::Memory => StorageType::Memory,
        }
    }

    fn from_nats(storage: StorageType) -> Self {
        match storage {
            StorageType::File => Storage::File,
            StorageType::Memory => Storage::Memory,
        }
    }
}

/// How one topic's stream is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSettings {
    /// Partitions (subjects `<topic>.p0` …): how many partition keys are consumed
    /// concurrently inside one group. Fixed when the stream is created. Default 16.
    pub partitions: u32,
    /// Copies of the stream in a cluster. Default 1 (a single server).
    pub replicas: usize,
    /// Events older than this are removed. Default 7 days; `None` keeps them forever.
    pub max_age: Option<Duration>,
    /// Once the stream holds more bytes, the oldest events are removed. Default `None`.
    pub max_bytes: Option<u64>,
    /// A publish repeating an event's `source` and `id` within this window is stored once.
    /// Default 2 minutes.
    pub duplicate_window: Duration,
    /// Where events are kept. Default [`Storage::File`].
    pub storage: Storage,
}

impl Default for TopicSettings {
    fn default() -> Self {
        TopicSettings {
            partitions: 16,
            replicas: 1,
            max_age: Some(Duration::from_secs(7 * 24 * 3600)),
            max_bytes: None,
            duplicate_window: Duration::from_secs(120),
            storage: Storage::File,
        }
    }
}

/// Stream settings for every topic: defaults, overridden for topics matching a pattern.
#[derive(Clone, Debug)]
pub struct ProvisionConfig {
    /// Settings of topics no override matches.
    pub defaults: TopicSettings,
    /// Settings of topics matching a pattern; the first match wins.
    pub overrides: Vec<(TopicPattern, TopicSettings)>,
    /// Whether [`provision`] also sets up each topic's dead-letter topic (`<topic>.dlq`).
    /// Default true.
    pub dead_letter_topics: bool,
}

impl Default for ProvisionConfig {
    fn default() -> Self {
        ProvisionConfig {
            defaults: TopicSettings::default(),
            overrides: Vec::new(),
            dead_letter_topics: true,
        }
    }
}

impl ProvisionConfig {
    /// The settings of `topic`.
    pub fn settings_for(&self, topic: &str) -> &TopicSettings {
        self.overrides
            .iter()
            .find(|(pattern, _)| pattern.matches(topic))
            .map_or(&self.defaults, |(_, settings)| settings)
    }

    /// Adds an override for topics matching `pattern` (`*` and `>` allowed).
    pub fn with_override(
        mut self,
        pattern: &str,
        settings: TopicSettings,
    ) -> Result<Self, BusError> {
        self.overrides
            .push((TopicPattern::parse(pattern)?, settings));
        Ok(self)
    }

    /// Sets the defaults.
    pub fn with_defaults(mut self, settings: TopicSettings) -> Self {
        self.defaults = settings;
        self
    }
}

/// The stream configuration of `topic` in `namespace` (`None`: no namespace) with
/// `settings`.
pub(crate) fn stream_config(
    namespace: Option<&str>,
    topic: &str,
    settings: &TopicSettings,
) -> stream::Config {
    let stored = layout::qualified_topic(namespace, topic);
    stream::Config {
        name: layout::stream_name(&stored),
        description: Some(layout::stream_description_in(
            namespace,
            topic,
            settings.partitions.max(1),
        )),
        subjects: vec![layout::stream_subjects(&stored)],
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::Old,
        storage: settings.storage.to_nats(),
        num_replicas: settings.replicas.max(1),
        max_age: settings.max_age.unwrap_or(Duration::ZERO),
        max_bytes: settings
            .max_bytes
            .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX)),
        max_messages: -1,
        max_messages_per_subject: -1,
        max_consumers: -1,
        duplicate_window: settings.duplicate_window,
        ..Default::default()
    }
}

/// What [`provision`] did to one topic's stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "action")]
pub enum ProvisionAction {
    /// The stream did not exist and was created.
    Created,
    /// The stream existed with other settings, now changed.
    Updated {
        /// The settings that changed, as `name: old -> new`.
        changed: Vec<String>,
    },
    /// The stream already had these settings.
    Unchanged,
}

/// One topic's outcome in [`provision`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProvisionChange {
    /// The topic.
    pub topic: String,
    /// Its stream's name.
    pub stream: String,
    /// What was done.
    #[serde(flatten)]
    pub action: ProvisionAction,
}

impl fmt::Display for ProvisionChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.action {
            ProvisionAction::Created => {
                write!(f, "created {} (stream {})", self.topic, self.stream)
            }
            ProvisionAction::Updated { changed } => write!(
                f,
                "updated {} (stream {}): {}",
                self.topic,
                self.stream,
                changed.join(", ")
            ),
            ProvisionAction::Unchanged => {
                write!(f, "unchanged {} (stream {})", self.topic, self.stream)
            }
        }
    }
}

/// Creates or updates the streams of `topics` (and their dead-letter topics, when
/// `config.dead_letter_topics`) so they have the settings `config` gives them. The streams
/// are those of the bus's [`namespace`](crate::NatsConfig#structfield.namespace); topics
/// are reported by their plain names.
///
/// Idempotent: a stream that already matches is left alone and reported
/// [`Unchanged`](ProvisionAction::Unchanged). The partition count and the storage type are
/// fixed once a stream exists (changing them would reorder keys or need a copy): asking for
/// other values is refused with [`BusError::InvalidOptions`], naming the stream.
pub async fn provision<S: AsRef<str>>(
    bus: &NatsBus,
    config: &ProvisionConfig,
    topics: &[S],
) -> Result<Vec<ProvisionChange>, BusError> {
    let mut wanted: Vec<String> = Vec::new();
    for topic in topics {
        let topic = topic.as_ref();
        validate_topic(topic)?;
        wanted.push(topic.to_owned());
        if config.dead_letter_topics && !topic.ends_with(ovasabi_core::naming::DEAD_LETTER_SUFFIX) {
            wanted.push(dead_letter_topic(topic));
        }
    }
    wanted.dedup();
    let mut changes = Vec::with_capacity(wanted.len());
    for topic in wanted {
        let settings = config.settings_for(&topic);
        changes.push(provision_one(bus, &topic, settings).await?);
    }
    Ok(changes)
}

async fn provision_one(
    bus: &NatsBus,
    topic: &str,
    settings: &TopicSettings,
) -> Result<ProvisionChange, BusError> {
    let api = bus.api();
    let want = stream_config(bus.namespace(), topic, settings);
    let stream = want.name.clone();
    let change = |action| ProvisionChange {
        topic: topic.to_owned(),
        stream: stream.clone(),
        action,
    };
    let existing = match api.stream_info(&stream).await {
        Ok(info) => info,
        Err(ApiError::NotFound(_)) => {
            return match api.create_stream(&want).await {
                Ok(_) => {
                    bus.forget_topic(topic);
                    Ok(change(ProvisionAction::Created))
                }
                Err(e) => Err(e.into_bus(&format!("creating stream {stream} for `{topic}`"))),
            };
        }
        Err(e) => return Err(e.into_bus(&format!("reading stream {stream}"))),
    };
    let have = existing.config;
    if let Some((_, partitions)) =
        layout::parse_stream_description_in(have.description.as_deref(), bus.namespace())
    {
        if partitions != settings.partitions.max(1) {
            return Err(BusError::InvalidOptions(format!(
                "topic `{topic}` (stream {stream}) has {partitions} partitions; the count is fixed when the stream is created (changing it would move keys between partitions and break their order), so {} cannot be applied: keep {partitions}, or move to a new topic",
                settings.partitions
            )));
        }
    } else {
        return Err(BusError::InvalidOptions(format!(
            "stream {stream} exists but was not created by OVASABI (its description is {:?}); remove it or pick another topic name",
            have.description
        )));
    }
    if have.storage != want.storage {
        return Err(BusError::InvalidOptions(format!(
            "topic `{topic}` (stream {stream}) is stored in {:?}; JetStream cannot change a stream's storage in place, so {:?} cannot be applied",
            Storage::from_nats(have.storage),
            settings.storage
        )));
    }
    let mut changed = Vec::new();
    let mut update = have.clone();
    let mut diff = |name: &str, old: String, new: String| {
        if old != new {
            changed.push(format!("{name}: {old} -> {new}"));
        }
    };
    let age = |d: Duration| {
        if d.is_zero() {
            "unlimited".to_owned()
        } else {
            format!("{d:?}")
        }
    };
    let bytes = |b: i64| {
        if b < 0 {
            "unlimited".to_owned()
        } else {
            b.to_string()
        }
    };
    diff("max_age", age(have.max_age), age(want.max_age));
    update.max_age = want.max_age;
    diff("max_bytes", bytes(have.max_bytes), bytes(want.max_bytes));
    update.max_bytes = want.max_bytes;
    diff(
        "duplicate_window",
        format!("{:?}", have.duplicate_window),
        format!("{:?}", want.duplicate_window),
    );
    update.duplicate_window = want.duplicate_window;
    diff(
        "replicas",
        have.num_replicas.max(1).to_string(),
        want.num_replicas.to_string(),
    );
    update.num_replicas = want.num_replicas;
    diff("subjects", have.subjects.join(","), want.subjects.join(","));
    update.subjects = want.subjects.clone();
    if changed.is_empty() {
        return Ok(change(ProvisionAction::Unchanged));
    }
    api.update_stream(&update)
        .await
        .map_err(|e| e.into_bus(&format!("updating stream {stream} of `{topic}`")))?;
    bus.forget_topic(topic);
    Ok(change(ProvisionAction::Updated { changed }))
}

/// The whole bus as the server sees it: every OVASABI stream with its consumers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Status {
    /// The streams, sorted by topic.
    pub streams: Vec<StreamStatus>,
}

/// One topic's stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StreamStatus {
    /// The topic.
    pub topic: String,
    /// The stream's name.
    pub stream: String,
    /// Its partition count.
    pub partitions: u32,
    /// Where it keeps events.
    pub storage: Storage,
    /// Its replica count.
    pub replicas: usize,
    /// Events retained.
    pub messages: u64,
    /// Bytes retained.
    pub bytes: u64,
    /// Oldest retained offset.
    pub first_offset: u64,
    /// The offset the next event will get.
    pub next_offset: u64,
    /// Its consumers, sorted by group then name.
    pub consumers: Vec<ConsumerStatus>,
}

/// One consumer (one lane of one group) of a stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConsumerStatus {
    /// The group it belongs to (from its description; its name if it is not ours).
    pub group: String,
    /// The consumer's name.
    pub consumer: String,
    /// Which events it reads: `p<n>` (partition n), `u` (unkeyed) or `all`.
    pub lane: String,
    /// Whether it is durable (an ephemeral group's consumers are not).
    pub durable: bool,
    /// Events matching it not yet delivered.
    pub pending: u64,
    /// Events delivered and not yet acked.
    pub ack_pending: u64,
    /// Events delivered more than once, currently unacked.
    pub redelivered: u64,
    /// Pull requests waiting at the server (roughly: subscribers connected).
    pub waiting: u64,
    /// The stream sequence up to which every event it reads is acked (0: none yet).
    pub ack_floor_sequence: u64,
}

impl ConsumerStatus {
    /// Events not yet acked: pending plus delivered-but-unacked.
    pub fn lag(&self) -> u64 {
        self.pending + self.ack_pending
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.streams.is_empty() {
            return writeln!(f, "no OVASABI streams on this server");
        }
        for s in &self.streams {
            writeln!(
                f,
                "{}  stream {}  {} events ({} bytes), offsets {}..{}, {} partitions, {:?} storage, {} replica(s)",
                s.topic,
                s.stream,
                s.messages,
                s.bytes,
                s.first_offset,
                s.next_offset,
                s.partitions,
                s.storage,
                s.replicas
            )?;
            let mut groups: BTreeMap<(&str, bool), Vec<&ConsumerStatus>> = BTreeMap::new();
            for c in &s.consumers {
                groups.entry((&c.group, c.durable)).or_default().push(c);
            }
            for ((group, durable), consumers) in groups {
                let sum =
                    |f: fn(&ConsumerStatus) -> u64| consumers.iter().map(|c| f(c)).sum::<u64>();
                writeln!(
                    f,
                    "  group {group}{}: {} consumer(s), lag {} (pending {}, unacked {}), redelivered {}, waiting pulls {}",
                    if durable { "" } else { " (ephemeral)" },
                    consumers.len(),
                    sum(ConsumerStatus::lag),
                    sum(|c| c.pending),
                    sum(|c| c.ack_pending),
                    sum(|c| c.redelivered),
                    sum(|c| c.waiting),
                )?;
            }
        }
        Ok(())
    }
}

/// Every OVASABI stream on the server with its consumers and counts: those of the bus's
/// [`namespace`](crate::NatsConfig#structfield.namespace) with one (listed by their plain
/// topic names), those of no namespace without.
pub async fn status(bus: &NatsBus) -> Result<Status, BusError> {
    let api = bus.api();
    let namespace = bus.namespace();
    // A namespace's streams all take subjects under `_ns.<namespace>.`.
    let filter = namespace.map(|_| layout::qualified_topic(namespace, ">"));
    let infos = api
        .streams(filter.as_deref())
        .await
        .map_err(|e| e.into_bus("listing streams"))?;
    let ours: Vec<(String, u32, stream::Info)> = infos
        .into_iter()
        .filter_map(|info| {
            layout::parse_stream_description_in(info.config.description.as_deref(), namespace)
                .map(|(topic, partitions)| (topic, partitions, info))
        })
        .collect();
    // A few requests at a time: a server may hold thousands of streams.
    let names: Vec<String> = ours.iter().map(|(_, _, i)| i.config.name.clone()).collect();
    let listed: Vec<_> = futures::stream::iter(names)
        .map(|name| {
            let api = api.clone();
            async move { api.consumers(&name).await }
        })
        .buffered(16)
        .collect()
        .await;
    let mut streams = Vec::with_capacity(ours.len());
    for ((topic, partitions, info), consumers) in ours.into_iter().zip(listed) {
        let consumers = match consumers {
            Ok(c) => c,
            // Deleted between the two calls.
            Err(ApiError::NotFound(_)) => continue,
            Err(e) => return Err(e.into_bus(&format!("listing consumers of {}", info.config.name))),
        };
        let state = &info.state;
        let next_offset = state.last_sequence;
        let first_offset = if state.messages == 0 {
            next_offset
        } else {
            state.first_sequence.saturating_sub(1)
        };
        let mut consumers: Vec<ConsumerStatus> = consumers
            .into_iter()
            .map(|c| ConsumerStatus {
                group: layout::description_field(c.config.description.as_deref(), "group")
                    .map_or_else(|| c.name.clone(), str::to_owned),
                lane: layout::lane_of_consumer(&c.name)
                    .map_or_else(|| "?".to_owned(), Lane::suffix),
                durable: c.config.durable_name.is_some(),
                pending: c.num_pending,
                ack_pending: c.num_ack_pending as u64,
                redelivered: c.num_redelivered as u64,
                waiting: c.num_waiting as u64,
                ack_floor_sequence: c.ack_floor.stream_sequence,
                consumer: c.name,
            })
            .collect();
        consumers.sort_by(|a, b| (&a.group, &a.consumer).cmp(&(&b.group, &b.consumer)));
        streams.push(StreamStatus {
            topic,
            stream: info.config.name.clone(),
            partitions,
            storage: Storage::from_nats(info.config.storage),
            replicas: info.config.num_replicas.max(1),
            messages: state.messages,
            bytes: state.bytes,
            first_offset,
            next_offset,
            consumers,
        });
    }
    streams.sort_by(|a, b| a.topic.cmp(&b.topic));
    Ok(Status { streams })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_pick_the_first_match() {
        let small = TopicSettings {
            partitions: 4,
            ..TopicSettings::default()
        };
        let config = ProvisionConfig::default()
            .with_override("audit.>", small.clone())
            .unwrap();
        assert_eq!(config.settings_for("audit.log").partitions, 4);
        assert_eq!(config.settings_for("user.events").partitions, 16);
        assert!(ProvisionConfig::default()
            .with_override("Bad", small)
            .is_err());
    }

    #[test]
    fn stream_config_follows_the_settings() {
        let c = stream_config(None, "user.events", &TopicSettings::default());
        assert_eq!(c.name, "OVASABI_user_events");
        assert_eq!(c.subjects, vec!["user.events.*".to_owned()]);
        assert_eq!(c.max_bytes, -1);
        assert_eq!(c.duplicate_window, Duration::from_secs(120));
        assert_eq!(
            layout::parse_stream_description(c.description.as_deref()),
            Some(("user.events".to_owned(), 16))
        );
        let forever = stream_config(
            None,
            "t",
            &TopicSettings {
                max_age: None,
                max_bytes: Some(10),
                ..TopicSettings::default()
            },
        );
        assert_eq!(forever.max_age, Duration::ZERO);
        assert_eq!(forever.max_bytes, 10);
    }

    #[test]
    fn stream_config_in_a_namespace() {
        let c = stream_config(Some("prod-eu"), "user.events", &TopicSettings::default());
        assert_eq!(c.name, "OVASABI___ns_prod-eu_user_events");
        assert_eq!(c.subjects, vec!["_ns.prod-eu.user.events.*".to_owned()]);
        assert_eq!(
            c.description.as_deref(),
            Some("ovasabi topic=user.events partitions=16 namespace=prod-eu")
        );
        assert_eq!(
            layout::parse_stream_description_in(c.description.as_deref(), Some("prod-eu")),
            Some(("user.events".to_owned(), 16))
        );
        assert_eq!(
            layout::parse_stream_description_in(c.description.as_deref(), None),
            None
        );
    }
}
