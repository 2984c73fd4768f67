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
//! - **Nothing wedged, nothing dropped**: when the bus refuses an event as bad (it breaks
//!   its contract, or is too large; only a service's bug writes one), the relay publishes
//!   the pass again one event at a time, and parks each refused event on its topic's
//!   dead-letter topic (`<topic>.dlq`) with `deadletterreason` [`REASON_REFUSED`],
//!   `deadlettererror` the bus's answer and `deadlettertopic`, logs it as an error, and
//!   goes on with the rows behind it. `ovasabi dlq list` and `ovasabi status` show it;
//!   `ovasabi dlq redrive` publishes it again once it is fixed (the bus checks it again).
//!   Consumers that apply a subject's events in order ([`Order::HoldBack`]) stop at the gap
//!   it leaves until then; the others go on.
//! - **An unreadable row is set aside, not a wall**: a row whose event no longer decodes
//!   (edited by hand, or corrupted) is set aside in the outbox with why
//!   ([`Outbox::set_aside`](ovasabi_store::Outbox::set_aside)), logged as an error, and
//!   counted (`ovasabi_outbox_unreadable`, `ovasabi status`); the rows behind it go out. It
//!   stays in the table, never published, until corrected by hand.
//! - **Traced**: each event is published inside a `publish` span, the child of the event's
//!   `traceparent`; with OpenTelemetry on, the event goes on the bus carrying that span's
//!   context, so consumers' spans are its children (see [`ovasabi_middleware::otel`]).

use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use ovasabi_core::dead_letter;
use ovasabi_core::naming::dead_letter_topic;
use ovasabi_core::{BusError, Event, Publisher};
#[cfg(doc)]
use ovasabi_store::inbox::Order;
use ovasabi_store::{params, OutboxRecord, Store, StoreError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The `deadletterreason` of an event the relay parked because the bus refused it.
pub const REASON_REFUSED: &str = "refused on publish";

/// Wakes the relay and reads its counters; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct RelayHandle {
    inner: Arc<RelayShared>,
}

#[derive(Debug, Default)]
struct RelayShared {
    wake: Notify,
    published: AtomicU64,
    parked: AtomicU64,
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

    /// Events this process's relay parked on a dead-letter topic because the bus refused
    /// them.
    pub fn parked(&self) -> u64 {
        self.inner.parked.load(AtomicOrdering::Relaxed)
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
    async fn publish(&self, rows: Vec<OutboxRecord>) -> Result<usize, PassError> {
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
            if let Err(e) = self.bus.publish_batch(&topic, events).await {
                let error = format!("publishing to {topic}: {e}");
                return Err(if refuses_the_event(&e) {
                    PassError::Refused(error)
                } else {
                    PassError::Failed(error)
                });
            }
            self.mark(&seqs).await?;
            self.count(&topic, counted);
        }
        Ok(total)
    }

    /// Publishes one fetch's rows one at a time, in order, parking each event the bus
    /// refuses (see the module's documentation). Returns how many rows it settled.
    async fn publish_each(&self, rows: Vec<OutboxRecord>) -> Result<usize, PassError> {
        let total = rows.len();
        for row in rows {
            let mut event = row.event;
            let span = ovasabi_middleware::otel::publish_span(&mut event, &row.topic);
            let copy = event.clone();
            match self.bus.publish(&row.topic, event).await {
                Ok(_) => {
                    drop(span);
                    self.mark(&[row.seq]).await?;
                    self.count(&row.topic, vec![(copy.ty, 1)]);
                }
                Err(e) if refuses_the_event(&e) => {
                    drop(span);
                    self.park(&row.topic, copy, &e).await?;
                    self.mark(&[row.seq]).await?;
                    self.handle
                        .inner
                        .parked
                        .fetch_add(1, AtomicOrdering::Relaxed);
                }
                Err(e) => {
                    return Err(PassError::Failed(format!(
                        "publishing to {}: {e}",
                        row.topic
                    )))
                }
            }
        }
        Ok(total)
    }

    /// Puts `event`, which the bus refused for `topic`, on that topic's dead-letter topic.
    async fn park(
        &self,
        topic: &str,
        mut event: Event,
        refusal: &BusError,
    ) -> Result<(), PassError> {
        let dlq = dead_letter_topic(topic);
        let (id, ty) = (event.id.clone(), event.ty.clone());
        let error = dead_letter::error_text(&refusal.to_string());
        event
            .extensions
            .insert(dead_letter::REASON.into(), REASON_REFUSED.into());
        event
            .extensions
            .insert(dead_letter::ERROR.into(), error.into());
        event
            .extensions
            .insert(dead_letter::TOPIC.into(), topic.into());
        self.bus.publish(&dlq, event).await.map_err(|e| {
            PassError::Failed(format!(
                "parking event {id} ({ty}), which {topic} refused ({refusal}), on {dlq}: {e}"
            ))
        })?;
        tracing::error!(
            event_id = %id,
            event_type = %ty,
            %topic,
            dead_letter_topic = %dlq,
            error = %refusal,
            "outbox relay: the bus refused an event; parked it on the dead-letter topic (`ovasabi dlq list`), going on with the rest"
        );
        Ok(())
    }

    /// Sets the unreadable row `seq` aside, so the rows behind it go out; whether it was
    /// still waiting.
    async fn set_aside(&self, seq: i64, why: &str) -> Result<bool, PassError> {
        let set_aside = self
            .store
            .outbox()
            .set_aside(seq, why)
            .await
            .map_err(|e| PassError::Failed(format!("setting aside outbox row {seq}: {e}")))?;
        if let Some(event_id) = &set_aside {
            tracing::error!(
                seq,
                %event_id,
                error = %why,
                "outbox relay: an outbox row does not decode: set it aside (column `unreadable`), going on with the rest; to publish it, correct its `event` and set `published_at` and `unreadable` to NULL"
            );
        }
        Ok(set_aside.is_some())
    }

    async fn mark(&self, seqs: &[i64]) -> Result<u64, PassError> {
        self.store
            .outbox()
            .mark_published(seqs)
            .await
            .map_err(|e| PassError::Failed(format!("marking published: {e}")))
    }

    /// Counts events published on `topic`, by type.
    fn count(&self, topic: &str, counted: Vec<(String, u64)>) {
        let published: u64 = counted.iter().map(|(_, n)| n).sum();
        self.handle
            .inner
            .published
            .fetch_add(published, AtomicOrdering::Relaxed);
        let mut by_type = self
            .handle
            .inner
            .by_type
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (ty, n) in counted {
            *by_type.entry((topic.to_owned(), ty)).or_default() += n;
        }
    }

    /// One pass: fetches ready rows and publishes them, one at a time if `careful`.
    async fn pass(&self, careful: bool) -> Result<usize, PassError> {
        if !self
            .lease()
            .await
            .map_err(|e| PassError::Failed(format!("lease: {e}")))?
        {
            return Ok(0);
        }
        let outbox = self.store.outbox();
        let rows = loop {
            match outbox.fetch_ready(Self::BATCH).await {
                Ok(rows) => break rows,
                Err(StoreError::CorruptOutboxRow { seq, source }) => {
                    if !self.set_aside(seq, &source.to_string()).await? {
                        return Err(PassError::Failed(format!(
                            "outbox row {seq} does not decode ({source}) and was no longer waiting when set aside"
                        )));
                    }
                }
                Err(e) => return Err(PassError::Failed(format!("reading the outbox: {e}"))),
            }
        };
        if careful {
            self.publish_each(rows).await
        } else {
            self.publish(rows).await
        }
    }

    /// Runs until `stop`, then publishes what is already committed (for up to `grace`) and
    /// gives up the lease.
    pub async fn run(self, stop: CancellationToken, grace: Duration) {
        let mut backoff = Duration::from_millis(50);
        // After the bus refused an event, the next pass goes one row at a time.
        let mut careful = false;
        loop {
            if !self.delay.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(self.delay) => {}
                    _ = stop.cancelled() => break,
                }
            }
            let pass = self.pass(careful);
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
                    careful = false;
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
                Err(PassError::Refused(error)) => {
                    tracing::warn!(%error, "outbox relay: the bus refused an event; publishing the next rows one at a time to park it");
                    careful = true;
                }
                Err(PassError::Failed(error)) => {
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
            loop {
                match self.pass(careful).await {
                    Ok(0) => break,
                    Ok(_) => careful = false,
                    Err(PassError::Refused(_)) => careful = true,
                    Err(PassError::Failed(error)) => {
                        tracing::warn!(%error, "outbox relay: stopping with rows unpublished; they go out at the next start");
                        break;
                    }
                }
            }
        };
        let _ = tokio::time::timeout(grace, drain).await;
        self.release().await;
    }
}

/// Why a pass over the outbox stopped.
enum PassError {
    /// The bus refused an event as bad: the next pass goes one row at a time and parks it.
    Refused(String),
    /// The bus or the database failed: the pass is tried again after a backoff.
    Failed(String),
}

/// Whether `error` is the bus refusing the event itself, which no retry changes.
fn refuses_the_event(error: &BusError) -> bool {
    matches!(
        error,
        BusError::InvalidEvent(_) | BusError::EventTooLarge { .. }
    )
}
