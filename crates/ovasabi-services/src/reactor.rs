//! Reactors: consumers whose effect happens once per event, whatever the bus does.
//!
//! The bus delivers at least once, and an event nacked for a retry can come back after
//! later events of its subject. A [`Reactor`] wraps a [`Reaction`] so that each delivery
//! runs in one database transaction that holds both the inbox record
//! ([`Inbox::admit`](ovasabi_store::Inbox::admit)) and the reaction's state change (and the
//! events it appends to the outbox): the effect commits once, or not at all.
//!
//! The reaction declares how it treats a subject's order ([`Order`]):
//!
//! - [`Order::Unordered`]: effects that commute (counters, notifications, ledger credits
//!   keyed by their cause). Duplicates are recognized by event id.
//! - [`Order::LastWriteWins`]: only a subject's latest state counts (a moderation verdict,
//!   a status). An event older than the last applied one is ignored.
//! - [`Order::HoldBack`]: a subject's events apply one after the other. An event that
//!   arrives ahead of a missing one is rolled back and nacked (redelivered after the
//!   consumer's backoff) until the missing one has been applied; if it keeps waiting longer
//!   than the reactor's [hold-back timeout](Reactor::hold_back_timeout) (default 60 s), it is
//!   dead-lettered with the reason `sequence gap`, naming the sequence it waited for.
//!
//! Events the reaction does not care about ([`Reaction::plan`] answers `None`) are acked
//! without a record, except under [`Order::HoldBack`]: there they are admitted (and change
//! nothing), so the subject's sequence has no holes on the consumer's side.
//!
//! The waiting time of a held event is measured in this process (a restart starts it
//! again). Its redeliveries count against the consumer's `max_deliveries`, so a hold-back
//! consumer should allow enough of them to cover the timeout at its backoff.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ovasabi_middleware::{Handler, HandlerError, Message, Outgoing};
use ovasabi_store::inbox::{Admission, Order};
use ovasabi_store::{Inbox, Store, StoreError, Transaction};

use crate::relay::RelayHandle;

/// The dead-letter reason of an event whose predecessor never came.
pub const REASON_SEQUENCE_GAP: &str = "sequence gap";

/// What a [`Reactor`] does with each event.
#[async_trait]
pub trait Reaction: Send + Sync + 'static {
    /// What [`Reaction::plan`] reads out of an event for [`Reaction::apply`].
    type Plan: Send;

    /// Reads the event before any transaction starts: `Ok(None)` when the reaction does not
    /// care about it, an error when its payload cannot be understood (a
    /// [permanent](HandlerError::permanent) error dead-letters it).
    fn plan(&self, msg: &Message) -> Result<Option<Self::Plan>, HandlerError>;

    /// Applies the effect in `tx`, which commits afterwards together with the inbox record.
    /// Returns whether it appended events to the outbox (the relay is woken then). An error
    /// rolls everything back.
    async fn apply(
        &self,
        tx: &mut Transaction,
        msg: &Message,
        plan: Self::Plan,
    ) -> Result<bool, HandlerError>;

    /// Called after the transaction of an applied event committed (to wake readers of the
    /// new state); nothing by default.
    fn committed(&self, msg: &Message) {
        let _ = msg;
    }
}

/// A [`Handler`] that applies a [`Reaction`] once per event, under an [`Order`].
pub struct Reactor<R> {
    name: String,
    order: Order,
    store: Store,
    relay: Option<RelayHandle>,
    hold_back_timeout: Duration,
    reaction: R,
    /// Events held back by a gap: when each was first held.
    held: Mutex<HashMap<String, Instant>>,
}

impl<R: Reaction> Reactor<R> {
    /// The default of [`Reactor::hold_back_timeout`].
    pub const DEFAULT_HOLD_BACK_TIMEOUT: Duration = Duration::from_secs(60);

    /// A reactor recording its inbox under `name` (usually its consumer group) in `store`.
    pub fn new(name: impl Into<String>, order: Order, store: Store, reaction: R) -> Self {
        Reactor {
            name: name.into(),
            order,
            store,
            relay: None,
            hold_back_timeout: Self::DEFAULT_HOLD_BACK_TIMEOUT,
            reaction,
            held: Mutex::new(HashMap::new()),
        }
    }

    /// Wakes `relay` after a transaction that appended events to the outbox.
    pub fn with_relay(mut self, relay: RelayHandle) -> Self {
        self.relay = Some(relay);
        self
    }

    /// How long an event may wait for a missing predecessor ([`Order::HoldBack`]) before
    /// it is dead-lettered.
    pub fn hold_back_timeout(mut self, timeout: Duration) -> Self {
        self.hold_back_timeout = timeout;
        self
    }

    /// The reaction.
    pub fn reaction(&self) -> &R {
        &self.reaction
    }

    fn failed(&self) -> impl Fn(StoreError) -> HandlerError + '_ {
        move |e| HandlerError::transient(format!("{} database: {e}", self.name))
    }

    fn held_key(msg: &Message) -> String {
        let event = msg.event();
        format!("{} {} {}", msg.topic(), event.source, event.id)
    }

    fn release(&self, msg: &Message) {
        let mut held = self.held.lock().unwrap();
        if !held.is_empty() {
            held.remove(&Self::held_key(msg));
        }
    }

    /// The answer to an event held back by a gap: try again later, or give up.
    fn gap(&self, msg: &Message, expected: u64, got: u64) -> HandlerError {
        let event = msg.event();
        let subject = event.subject.as_deref().unwrap_or_default();
        let key = Self::held_key(msg);
        let now = Instant::now();
        let waited = {
            let mut held = self.held.lock().unwrap();
            let since = *held.entry(key.clone()).or_insert(now);
            let waited = now.saturating_duration_since(since);
            if waited >= self.hold_back_timeout {
                held.remove(&key);
            }
            waited
        };
        let what = format!(
            "event {} is sequence {got} of subject `{subject}` on `{}`, but {} waits for \
             sequence {expected}",
            event.id,
            msg.topic(),
            self.name
        );
        if waited >= self.hold_back_timeout {
            tracing::warn!(
                event_id = %event.id,
                subject,
                expected,
                got,
                "{}: gave up waiting for a missing event after {waited:?}",
                self.name
            );
            HandlerError::permanent(format!(
                "{what}, which did not arrive within {:?}; redrive this event once the missing \
                 one has been handled",
                self.hold_back_timeout
            ))
            .with_reason(REASON_SEQUENCE_GAP)
        } else {
            tracing::debug!(event_id = %event.id, subject, expected, got, "{}: held back", self.name);
            HandlerError::transient(format!("{what}: held back until it arrives"))
        }
    }
}

#[async_trait]
impl<R: Reaction> Handler for Reactor<R> {
    async fn handle(&self, msg: &Message) -> Result<Vec<Outgoing>, HandlerError> {
        let plan = self.reaction.plan(msg)?;
        if plan.is_none() && self.order != Order::HoldBack {
            return Ok(Vec::new());
        }
        let failed = self.failed();
        let mut tx = self.store.begin().await.map_err(&failed)?;
        let admission = Inbox::admit(&mut tx, &self.name, self.order, msg.topic(), msg.event())
            .await
            .map_err(&failed)?;
        let appended = match admission {
            Admission::Apply => match plan {
                Some(plan) => match self.reaction.apply(&mut tx, msg, plan).await {
                    Ok(appended) => appended,
                    Err(error) => {
                        let _ = tx.rollback().await;
                        return Err(error);
                    }
                },
                // Admitted only to advance the subject's sequence.
                None => false,
            },
            Admission::Duplicate | Admission::Stale { .. } => {
                let _ = tx.rollback().await;
                self.release(msg);
                tracing::debug!(
                    event_id = %msg.event().id,
                    attempt = msg.attempt(),
                    "{}: {admission:?}; acking it without effect",
                    self.name
                );
                return Ok(Vec::new());
            }
            Admission::Gap { expected, got } => {
                let _ = tx.rollback().await;
                return Err(self.gap(msg, expected, got));
            }
        };
        tx.commit().await.map_err(&failed)?;
        self.release(msg);
        self.reaction.committed(msg);
        if appended {
            if let Some(relay) = &self.relay {
                relay.wake();
            }
        }
        Ok(Vec::new())
    }
}
