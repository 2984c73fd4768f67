//! Configuration of the embedded bus.

use std::path::PathBuf;
use std::time::Duration;

/// How far a returned publish (or ack) is durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// Committed to the write-ahead log in the operating system's cache (SQLite
    /// `synchronous=NORMAL`): survives the process being killed at any moment (`kill -9`,
    /// panic, OOM); the last commits may be lost if the whole machine loses power.
    #[default]
    Process,
    /// Also fsync'd on every commit (SQLite `synchronous=FULL`): survives power loss.
    /// Concurrent publishers share one fsync per commit (group commit).
    Machine,
}

impl Durability {
    /// Parses `process` / `normal` or `machine` / `full` / `fsync`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "process" | "normal" => Ok(Durability::Process),
            "machine" | "full" | "fsync" => Ok(Durability::Machine),
            _ => Err(format!(
                "unknown durability `{text}`: use `process` (survives kill -9) or `machine` (fsync, survives power loss)"
            )),
        }
    }
}

/// Retention of a topic's events: the oldest go once either limit is passed. Retention
/// removes events whether or not every group has consumed them, like Kafka's; a group
/// behind the oldest retained event continues from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Events older than this go (by publish time). `None`: no age limit.
    pub max_age: Option<Duration>,
    /// A topic's stored events beyond this many bytes go, oldest first. `None`: no limit.
    pub max_bytes: Option<u64>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_age: Some(Duration::from_secs(7 * 24 * 3600)),
            max_bytes: None,
        }
    }
}

/// Settings of an [`EmbeddedBus`](crate::EmbeddedBus).
#[derive(Clone, Debug)]
pub struct EmbeddedConfig {
    /// The data directory; one process owns it at a time.
    pub dir: PathBuf,
    /// Durability of publishes and acks.
    pub durability: Durability,
    /// Largest payload (`data`) accepted, in bytes. Default 1 MiB.
    pub max_event_bytes: usize,
    /// Retention of every topic.
    pub retention: Retention,
    /// How often retention runs.
    pub retention_interval: Duration,
    /// Bytes of recent events kept in memory per topic so consumers close to the head never
    /// read the disk.
    pub cache_bytes_per_topic: usize,
}

impl EmbeddedConfig {
    /// Default largest payload: 1 MiB.
    pub const DEFAULT_MAX_EVENT_BYTES: usize = 1024 * 1024;

    /// The defaults, on `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        EmbeddedConfig {
            dir: dir.into(),
            durability: Durability::default(),
            max_event_bytes: Self::DEFAULT_MAX_EVENT_BYTES,
            retention: Retention::default(),
            retention_interval: Duration::from_secs(10),
            cache_bytes_per_topic: 32 * 1024 * 1024,
        }
    }

    /// Sets the durability.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Sets the largest payload accepted.
    pub fn max_event_bytes(mut self, max: usize) -> Self {
        self.max_event_bytes = max;
        self
    }

    /// Sets the retention.
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }
}
