//! The outbox relay: publishes what services wrote to the outbox, in `seq` order, and marks
//! it published.
//!
//! - **Order per aggregate**: rows are fetched in `seq` order (the store makes that commit
//!   order within an aggregate) and published in that order, consecutive rows of one topic
//!   as one batch.
//! - **Nothing skipped**: a row that commits late is unpublished when it appears, and the
//!   next fetch takes it (the store keeps no cursor).
//! - **At least once, once after dedup**: a relay stopped between publishing and marking
//!   publishes those rows again on restart. The event keeps its id, so NATS JetStream drops
//!   the copy inside its duplicate window (`Nats-Msg-Id`), and consumers recording ids in
//!   their inbox ignore it on any bus.
//! - **One relay per database**: several processes may share a database; the relay runs only
//!   while it holds the lease in `outbox_relay_lease` (renewed every poll, taken over when
//!   it expires), so two relays never publish one aggregate's events concurrently.
//! - **Prompt**: a service that commits an outbox row wakes the relay ([`RelayHandle::wake`]);
//!   otherwise it polls every [`Relay::POLL`], which also picks up rows written by other
//!   processes.
//! - **Traced**: each event is published inside a `publish` span, the child of the event's
//!   `traceparent`; with OpenTelemetry on, the event goes on the bus carrying that span's
//!   context, so consumers' spans are its children (see [`ovasabi_middleware::otel`]).

use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use ovasabi_core::Publisher;
use ovasabi_store::{params, OutboxRecord, Store, StoreError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Wakes the relay and reads its counters; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct RelayHandle {
    inner: Arc<RelayShared>,
}

#[derive(Debug, Default)]
struct RelayShared {
    wake: Notify,
    published: AtomicU64,
    /// Published events by (topic, type).
    by_type: std::sync::Mutex<std::collections::BTreeMap<(String, String), u64>>,
}

impl RelayHandle {
    /// Asks the relay to look at the outbox now (after a commit that appended rows).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Events this process's relay has published.
    pub fn published(&self) -> u64 {
        self.inner.published.load(AtomicOrdering::Relaxed)
    }

    /// Events this process's relay has published, by topic and event type.
    pub fn published_by_type(&self) -> Vec<((String, String), u64)> {
        self.inner
            .by_type
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, n)| (k.clone(), *n))
            .collect()
    }
}

/// The relay of one store's outbox to one bus.
pub struct Relay {
    store: Store,
    bus: Arc<dyn Publisher>,
    owner: String,
    handle: RelayHandle,
    delay: Duration,
    /// When the held lease is next renewed (`None`: not held).
    renew_at: Mutex<Option<Instant>>,
}

impl Relay {
    /// How often an idle relay looks at the outbox.
    pub const POLL: Duration = Duration::from_millis(200);
    /// How long a lease lasts without renewal.
    pub const LEASE: Duration = Duration::from_secs(10);
    /// Rows per fetch.
    pub const BATCH: usize = 256;
    /// How long a relay that just published waits for more rows before its next pass.
    pub const GATHER: Duration = Duration::from_millis(2);

    /// A relay from `store` to `bus`; `owner` names this process in the lease.
    pub fn new(store: Store, bus: Arc<dyn Publisher>, owner: impl Into<String>) -> Relay {
        Relay {
            store,
            bus,
            owner: owner.into(),
            handle: RelayHandle::default(),
            delay: Duration::ZERO,
            renew_at: Mutex::new(None),
        }
    }

    /// Waits `delay` before each pass over the outbox (crash tests use it to hold committed
    /// events back from the bus).
    pub fn with_delay(mut self, delay: Duration) -> Relay {
        self.delay = delay;
        self
    }

    /// Its handle.
    pub fn handle(&self) -> RelayHandle {
        self.handle.clone()
    }

    /// Takes or renews the lease; whether this process holds it. A lease renewed less than
    /// a third of [`Relay::LEASE`] ago is held without asking the database: no other
    /// process can take it before it expires.
    async fn lease(&self) -> Result<bool, StoreError> {
        let due = *self.renew_at.lock().unwrap_or_else(|p| p.into_inner());
        if due.is_some_and(|due| Instant::now() < due) {
            return Ok(true);
        }
        let asked = Instant::now();
        let held = self.take_lease().await?;
        *self.renew_at.lock().unwrap_or_else(|p| p.into_inner()) =
            held.then(|| asked + Self::LEASE / 3);
        Ok(held)
    }

    async fn take_lease(&self) -> Result<bool, StoreError> {
        let now = Utc::now();
        let until = now + chrono::Duration::from_std(Self::LEASE).unwrap_or_default();
        self.store
            .execute(
                "INSERT INTO outbox_relay_lease (id, owner, expires_at) VALUES (1, $1, $2)
                 ON CONFLICT (id) DO NOTHING",
                params![self.owner.as_str(), until],
            )
            .await?;
        let renewed = self
            .store
            .execute(
                "UPDATE outbox_relay_lease SET owner = $1, expires_at = $2
                 WHERE id = 1 AND (owner = $1 OR expires_at < $3)",
                params![self.owner.as_str(), until, now],
            )
            .await?;
        Ok(renewed == 1)
    }

    /// Gives the lease up (at shutdown), so another process takes over at once.
    async fn release(&self) {
        *self.renew_at.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let _ = self
            .store
            .execute(
                "UPDATE outbox_relay_lease SET expires_at = $2 WHERE id = 1 AND owner = $1",
                params![self.owner.as_str(), Utc::now()],
            )
            .await;
    }

    /// Publishes one fetch's rows: consecutive rows of one topic as one batch, in order.
    /// Returns how many were published.
    async fn publish(&self, rows: Vec<OutboxRecord>) -> Result<usize, String> {
        let total = rows.len();
        let mut rows = rows.into_iter().peekable();
        while let Some(first) = rows.next() {
            // Sized for the rest of the rows, so the batch is never moved while it grows.
            let room = rows.len() + 1;
            let topic = first.topic;
            let mut seqs = Vec::with_capacity(room);
            let mut events = Vec::with_capacity(room);
            seqs.push(first.seq);
            events.push(first.event);
            while let Some(next) = rows.next_if(|r| r.topic == topic) {
                seqs.push(next.seq);
                events.push(next.event);
            }
            let mut counted: Vec<(String, u64)> = Vec::new();
            for event in &events {
                match counted.iter_mut().find(|(ty, _)| *ty == event.ty) {
                    Some((_, n)) => *n += 1,
                    None => counted.push((event.ty.clone(), 1)),
                }
            }
            // One `publish` span per event, open until the batch is on the bus; the event
            // goes out carrying its span's context (when OpenTelemetry is on).
            let _spans: Vec<tracing::Span> = events
                .iter_mut()
                .map(|event| ovasabi_middleware::otel::publish_span(event, &topic))
                .collect();
            self.bus
                .publish_batch(&topic, events)
                .await
                .map_err(|e| format!("publishing to {topic}: {e}"))?;
            self.store
                .outbox()
                .mark_published(&seqs)
                .await
                .map_err(|e| format!("marking published: {e}"))?;
            self.handle
                .inner
                .published
                .fetch_add(seqs.len() as u64, AtomicOrdering::Relaxed);
            let mut by_type = self
                .handle
                .inner
                .by_type
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for (ty, n) in counted {
                *by_type.entry((topic.clone(), ty)).or_default() += n;
            }
        }
        Ok(total)
    }

    /// Runs until `stop`, then publishes what is already committed (for up to `grace`) and
    /// gives up the lease.
    pub async fn run(self, stop: CancellationToken, grace: Duration) {
        let mut backoff = Duration::from_millis(50);
        loop {
            if !self.delay.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(self.delay) => {}
                    _ = stop.cancelled() => break,
                }
            }
            let pass = async {
                if !self.lease().await.map_err(|e| format!("lease: {e}"))? {
                    return Ok::<_, String>(0);
                }
                let rows = self
                    .store
                    .outbox()
                    .fetch_ready(Self::BATCH)
                    .await
                    .map_err(|e| format!("reading the outbox: {e}"))?;
                self.publish(rows).await
            };
            tokio::pin!(pass);
            let outcome = tokio::select! {
                outcome = &mut pass => outcome,
                _ = stop.cancelled() => {
                    // Finish the pass under way: its rows may be on the bus already, and
                    // dropping it before they are marked would send them again below.
                    let _ = tokio::time::timeout(grace, &mut pass).await;
                    break;
                }
            };
            match outcome {
                Ok(n) => {
                    backoff = Duration::from_millis(50);
                    if n == Self::BATCH {
                        continue;
                    }
                    tokio::select! {
                        _ = self.handle.inner.wake.notified() => {}
                        _ = tokio::time::sleep(Self::POLL) => {}
                        _ = stop.cancelled() => break,
                    }
                    if n > 0 {
                        // Rows keep coming: let a few more commit, so the next pass
                        // publishes them in one batch instead of one pass each.
                        tokio::select! {
                            _ = tokio::time::sleep(Self::GATHER) => {}
                            _ = stop.cancelled() => break,
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, retry_ms = backoff.as_millis() as u64, "outbox relay: will retry");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.cancelled() => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        // Drain what committed before the stop, so an accepted request's event goes out.
        let drain = async {
            while let Ok(true) = self.lease().await {
                match self.store.outbox().fetch_ready(Self::BATCH).await {
                    Ok(rows) if !rows.is_empty() => {
                        if let Err(error) = self.publish(rows).await {
                            tracing::warn!(%error, "outbox relay: stopping with rows unpublished; they go out at the next start");
                            break;
                        }
                    }
                    _ => break,
                }
            }
        };
        let _ = tokio::time::timeout(grace, drain).await;
        self.release().await;
    }
}
