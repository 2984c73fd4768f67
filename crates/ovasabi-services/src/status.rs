//! The platform's state at a glance, for `ovasabi status` and `GET /v1/status`: topics with
//! their event counts and dead letters, consumer groups with their lag, the outbox backlog,
//! and webhook endpoints by state. It reads the bus through [`Bus::topics`], so it says the
//! same on the embedded bus and on NATS JetStream.

use chrono::{DateTime, Utc};
use ovasabi_core::naming::DEAD_LETTER_SUFFIX;
use ovasabi_core::Bus;
use ovasabi_store::Store;
use serde::Serialize;

/// What [`collect`] found.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// When it was read.
    pub at: DateTime<Utc>,
    /// The domain topics (dead-letter topics are counted under theirs), by name.
    pub topics: Vec<TopicStatus>,
    /// Events published and not yet acked, summed over every group and topic.
    pub lag: u64,
    /// Dead letters, summed over every topic.
    pub dead_letters: u64,
    /// The outbox: rows committed and not yet published.
    pub outbox: OutboxStatus,
    /// Webhook endpoints by state (`active`, `paused`, `disabled`); empty where the
    /// webhooks service has no tables.
    pub webhook_endpoints: std::collections::BTreeMap<String, u64>,
}

/// One topic.
#[derive(Clone, Debug, Serialize)]
pub struct TopicStatus {
    /// Its name.
    pub topic: String,
    /// Events retained.
    pub events: u64,
    /// The offset the next event will get.
    pub next_offset: u64,
    /// Events on its dead-letter topic (`<topic>.dlq`).
    pub dead_letters: u64,
    /// Its durable groups, by name.
    pub groups: Vec<GroupStatus>,
}

/// One group on one topic.
#[derive(Clone, Debug, Serialize)]
pub struct GroupStatus {
    /// The group.
    pub group: String,
    /// Events published and not yet acked by it.
    pub lag: u64,
}

/// The outbox's backlog.
#[derive(Clone, Debug, Default, Serialize)]
pub struct OutboxStatus {
    /// Rows not yet published.
    pub backlog: u64,
    /// How long the oldest of them has waited, in seconds (0 when none).
    pub oldest_age_seconds: f64,
    /// Rows set aside because their event does not decode (never published until
    /// corrected by hand).
    pub unreadable: u64,
}

/// The outbox as `GET /v1/status`, `/metrics` and `/readyz` read it.
pub(crate) struct OutboxState {
    /// Rows not yet published.
    pub(crate) backlog: u64,
    /// How long the oldest of them has waited at `now`, in seconds (`None` when none waits).
    pub(crate) oldest_age: Option<f64>,
    /// Rows set aside because their event does not decode.
    pub(crate) unreadable: u64,
}

impl OutboxState {
    /// Reads it from `store`'s outbox, ages counted at `now`.
    pub(crate) async fn read(
        store: &Store,
        now: DateTime<Utc>,
    ) -> Result<OutboxState, ovasabi_store::StoreError> {
        let outbox = store.outbox();
        let backlog = outbox.pending().await?;
        let oldest = outbox.oldest_pending().await?;
        let unreadable = outbox.unreadable().await?;
        let oldest_age = oldest.map(|created| {
            let age = (now - created).num_microseconds().unwrap_or(i64::MAX);
            age.max(0) as f64 / 1e6
        });
        Ok(OutboxState {
            backlog,
            oldest_age,
            unreadable,
        })
    }
}

/// Reads the bus's topics and the database's outbox and webhook endpoints.
pub async fn collect(bus: &dyn Bus, store: &Store) -> Result<Status, String> {
    let at = Utc::now();
    let infos = bus
        .topics()
        .await
        .map_err(|e| format!("reading the bus's topics: {e}"))?;
    let mut topics: Vec<TopicStatus> = Vec::new();
    let mut dead: Vec<(String, u64)> = Vec::new();
    for info in infos {
        if let Some(of) = info.topic.strip_suffix(DEAD_LETTER_SUFFIX) {
            dead.push((of.to_owned(), info.retained));
            continue;
        }
        let mut groups: Vec<GroupStatus> = info
            .groups
            .iter()
            .map(|g| GroupStatus {
                group: g.group.clone(),
                lag: g.lag,
            })
            .collect();
        groups.sort_by(|a, b| a.group.cmp(&b.group));
        topics.push(TopicStatus {
            topic: info.topic,
            events: info.retained,
            next_offset: info.next_offset,
            dead_letters: 0,
            groups,
        });
    }
    for (of, n) in dead {
        match topics.iter_mut().find(|t| t.topic == of) {
            Some(t) => t.dead_letters += n,
            None => topics.push(TopicStatus {
                topic: of,
                events: 0,
                next_offset: 0,
                dead_letters: n,
                groups: Vec::new(),
            }),
        }
    }
    topics.sort_by(|a, b| a.topic.cmp(&b.topic));
    let lag = topics
        .iter()
        .flat_map(|t| t.groups.iter())
        .map(|g| g.lag)
        .sum();
    let dead_letters = topics.iter().map(|t| t.dead_letters).sum();

    let outbox = {
        let state = OutboxState::read(store, at)
            .await
            .map_err(|e| format!("reading the outbox: {e}"))?;
        OutboxStatus {
            backlog: state.backlog,
            unreadable: state.unreadable,
            oldest_age_seconds: state.oldest_age.unwrap_or(0.0),
        }
    };
    // The webhooks service's tables exist only where it has run.
    let mut webhook_endpoints = std::collections::BTreeMap::new();
    if let Ok(rows) = store
        .query(
            "SELECT state, COUNT(*) AS n FROM webhook_endpoints GROUP BY state",
            &[],
        )
        .await
    {
        for row in rows {
            let state: String = row.get("state").map_err(|e| e.to_string())?;
            let n: i64 = row.get("n").map_err(|e| e.to_string())?;
            webhook_endpoints.insert(state, n.unsigned_abs());
        }
    }
    Ok(Status {
        at,
        topics,
        lag,
        dead_letters,
        outbox,
        webhook_endpoints,
    })
}
