//! Subscriptions: a group's consumers on each topic, one member's pull loops ("lanes"), its
//! buffer, and the acknowledger of each delivery.
//!
//! A member runs one pull loop per consumer it reads (per topic: one per partition plus one
//! for unkeyed events with [`Ordering::PerKey`], or one for the whole topic with
//! [`Ordering::None`]). Each loop sends pull requests and puts what arrives in the member's
//! buffer (a channel); [`Subscription::next`] takes from the buffer, so dropping a `next()`
//! future loses nothing. Messages still buffered when the subscription closes or is dropped
//! are nak'ed: they go back to the group at once. The pull loops of a closed subscription
//! send no new request but read their open ones to the end (see
//! [`MemberShared::delayed_nak`] for why).
//!
//! Flow control ([`MemberShared::room`]): the buffer stays within a prefetch that starts
//! small (`pull_batch`), grows while the handler waits for events the server has and
//! shrinks as soon as events wait for the handler ([`MemberShared::window`]), and `next()`
//! hands out a delivery only while fewer than `max_in_flight` are unsettled.
//!
//! Attempts: the server counts every delivery; the bus subtracts those that never reached a
//! handler (buffered, then handed back) and does not hold against `max_deliveries` those a
//! handler handed back unsettled within the ack timeout (see
//! [`DeliveryCounts`](crate::bus::DeliveryCounts)).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer, ReplayPolicy};
use async_nats::jetstream::{self, consumer};
use async_nats::Subject;
use async_trait::async_trait;
use futures::StreamExt;
use ovasabi_core::{
    Acknowledger, BusError, DeadLetter, Delivery, DeliveryInfo, DeliverySource, Event, Ordering,
    StartFrom, SubscribeOptions, Subscription, TopicPattern,
};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::ApiError;
use crate::bus::{Inner, MessageKey, TopicMeta};
use crate::codec;
use crate::dead_letter::{dead_letter, dead_letter_raw, DeadLetterJob};
use crate::layout::{self, Lane};

/// What a subscription asked for, fixed for its lifetime.
struct GroupSpec {
    group: String,
    ordering: Ordering,
    ack_timeout: Duration,
    max_deliveries: u32,
    max_in_flight: usize,
    /// Set for an ephemeral group: makes its consumer names unique to this subscription.
    ephemeral_tag: Option<String>,
    patterns: Vec<TopicPattern>,
}

/// One consumer a member pulls from.
struct LaneCtx {
    topic: String,
    stream: String,
    consumer: String,
    lane: Lane,
    /// `stream/consumer`, the first half of its messages' [`MessageKey`]s.
    consumer_key: Arc<str>,
}

impl LaneCtx {
    /// Names one message of this consumer.
    fn message_key(&self, sequence: u64) -> MessageKey {
        (self.consumer_key.clone(), sequence)
    }
}

/// A message taken from the server, waiting in the member's buffer.
struct Incoming {
    msg: jetstream::Message,
    lane: Arc<LaneCtx>,
    arrived: Instant,
}

/// The state one member (subscription) shares with its pull loops and its deliveries.
pub(crate) struct MemberShared {
    id: u64,
    bus: Arc<Inner>,
    spec: GroupSpec,
    cancel: CancellationToken,
    tx: mpsc::UnboundedSender<Incoming>,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Incoming>>,
    /// Deliveries handed out and not yet settled (acked, nacked, dead-lettered or dropped).
    outstanding: AtomicUsize,
    /// Messages in the buffer.
    buffered: AtomicUsize,
    /// Messages asked for by pull requests of unordered lanes, not yet arrived.
    requested: AtomicUsize,
    /// Pull loops running on consumers without per-key order.
    unordered_lanes: AtomicUsize,
    /// The prefetch of unordered lanes: see [`MemberShared::window`].
    window: AtomicUsize,
    /// Set when a pull request of an unordered lane came back full: the server may hold
    /// more, so a handler left waiting is waiting on the prefetch.
    pulled_full: AtomicBool,
    /// Wakes pull loops waiting for room: the buffer, what was asked for or the prefetch
    /// changed, or the member stops.
    flow: Notify,
    /// Wakes `next()` and partition lanes waiting for a delivery to be settled.
    settled: Notify,
    /// Ack subjects of deliveries handed out and not settled, for [`Bus::close`].
    ///
    /// [`Bus::close`]: ovasabi_core::Bus::close
    handed: Mutex<HashMap<u64, Handed>>,
    next_delivery: AtomicU64,
    /// Streams this member reads.
    known: Mutex<HashSet<String>>,
    /// Streams a wildcard pattern's subject filter found that are not topics it matches.
    skipped: Mutex<HashSet<String>>,
    /// An ephemeral group's consumers, deleted on shutdown: (stream, consumer).
    ephemeral_consumers: Mutex<Vec<(String, String)>>,
    shut: AtomicBool,
    /// When the member's last pull request was sent: after shutdown, the server may hold it
    /// until `pull_expiry` later (see [`MemberShared::delayed_nak`]).
    last_pull: Mutex<Option<Instant>>,
}

/// Subscribes a new member of `options.group`.
pub(crate) async fn subscribe(
    bus: Arc<Inner>,
    options: SubscribeOptions,
) -> Result<Subscription, BusError> {
    let ephemeral_tag = options.ephemeral.then(|| {
        let id = uuid::Uuid::new_v4().simple().to_string();
        id[..12].to_owned()
    });
    let spec = GroupSpec {
        group: options.group.clone(),
        ordering: options.ordering,
        ack_timeout: options.ack_timeout,
        max_deliveries: options.max_deliveries,
        max_in_flight: options.max_in_flight,
        ephemeral_tag,
        patterns: options.topics.clone(),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(MemberShared {
        id: bus.new_member_id(),
        bus: bus.clone(),
        spec,
        cancel: CancellationToken::new(),
        tx,
        rx: tokio::sync::Mutex::new(rx),
        outstanding: AtomicUsize::new(0),
        buffered: AtomicUsize::new(0),
        requested: AtomicUsize::new(0),
        unordered_lanes: AtomicUsize::new(0),
        window: AtomicUsize::new(0),
        pulled_full: AtomicBool::new(false),
        flow: Notify::new(),
        settled: Notify::new(),
        handed: Mutex::new(HashMap::new()),
        next_delivery: AtomicU64::new(0),
        known: Mutex::new(HashSet::new()),
        skipped: Mutex::new(HashSet::new()),
        ephemeral_consumers: Mutex::new(Vec::new()),
        shut: AtomicBool::new(false),
        last_pull: Mutex::new(None),
    });
    shared
        .window
        .store(shared.prefetch_bounds().0, AtomicOrdering::Release);
    bus.register_member(shared.id, &shared);
    if let Err(e) = shared.start(&options.start).await {
        shared.shutdown(false).await;
        return Err(e);
    }
    Ok(Subscription::new(Box::new(Member {
        shared,
        closed: false,
    })))
}

impl MemberShared {
    fn durable(&self) -> bool {
        self.spec.ephemeral_tag.is_none()
    }

    /// Attaches every topic the patterns name now; starts discovery for wildcards.
    async fn start(self: &Arc<Self>, start: &StartFrom) -> Result<(), BusError> {
        for pattern in &self.spec.patterns {
            if !pattern.is_wildcard() {
                let meta = self.bus.ensure_topic(pattern.as_str()).await?;
                self.attach(&meta, start).await?;
            }
        }
        if self.spec.patterns.iter().any(TopicPattern::is_wildcard) {
            self.discover(start).await?;
            let me = self.clone();
            tokio::spawn(async move { me.discovery_loop().await });
        }
        Ok(())
    }

    /// Every `discovery_interval`, attaches topics created since the last look. Everything
    /// in a topic born after the subscription is new to the group, so they are read from
    /// their beginning.
    async fn discovery_loop(self: Arc<Self>) {
        let interval = self.bus.config.discovery_interval;
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            if let Err(e) = self.discover(&StartFrom::Beginning).await {
                tracing::warn!(group = %self.spec.group, error = %e, "looking for new topics failed; trying again");
            }
        }
    }

    async fn discover(self: &Arc<Self>, start: &StartFrom) -> Result<(), BusError> {
        let api = &self.bus.api;
        for pattern in self.spec.patterns.iter().filter(|p| p.is_wildcard()) {
            // In a namespace, the pattern is looked for among the namespace's subjects.
            let filter = layout::pattern_filter(&self.bus.stored(pattern.as_str()));
            let names = api
                .stream_names(Some(&filter))
                .await
                .map_err(|e| e.into_bus(&format!("listing streams for `{pattern}`")))?;
            for name in names {
                if self.known.lock().unwrap().contains(&name)
                    || self.skipped.lock().unwrap().contains(&name)
                {
                    continue;
                }
                let info = match api.stream_info(&name).await {
                    Ok(info) => info,
                    Err(ApiError::NotFound(_)) => continue,
                    Err(e) => return Err(e.into_bus(&format!("reading stream {name}"))),
                };
                // Only streams of the bus's own namespace (or of none, without one).
                let description = info.config.description.as_deref();
                match layout::parse_stream_description_in(description, self.bus.namespace()) {
                    Some((topic, _)) if pattern.matches(&topic) => {
                        let meta = self.bus.meta_from_info(&topic, &info)?;
                        self.attach(&meta, start).await?;
                    }
                    _ => {
                        self.skipped.lock().unwrap().insert(name);
                    }
                }
            }
        }
        Ok(())
    }

    /// Makes sure the group's consumers on `meta`'s stream exist (moving them for a seek)
    /// and starts a pull loop on each.
    async fn attach(self: &Arc<Self>, meta: &TopicMeta, start: &StartFrom) -> Result<(), BusError> {
        if !self.known.lock().unwrap().insert(meta.stream.clone()) {
            return Ok(());
        }
        let result = self.attach_lanes(meta, start).await;
        if result.is_err() {
            self.known.lock().unwrap().remove(&meta.stream);
        }
        result
    }

    async fn attach_lanes(
        self: &Arc<Self>,
        meta: &TopicMeta,
        start: &StartFrom,
    ) -> Result<(), BusError> {
        let lanes = Lane::for_ordering(self.spec.ordering, meta.partitions);
        if self.durable() {
            self.check_layout(meta).await?;
        }
        let infos = futures::future::join_all(
            lanes
                .iter()
                .map(|lane| self.ensure_consumer(meta, *lane, start)),
        )
        .await;
        let mut ready = Vec::with_capacity(lanes.len());
        let mut failure = None;
        for (lane, info) in lanes.into_iter().zip(infos) {
            match info {
                Ok(info) => {
                    if !self.durable() {
                        self.ephemeral_consumers
                            .lock()
                            .unwrap()
                            .push((meta.stream.clone(), info.name.clone()));
                    }
                    ready.push((lane, info));
                }
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        for (lane, info) in ready {
            let ctx = Arc::new(LaneCtx {
                topic: meta.topic.clone(),
                stream: meta.stream.clone(),
                consumer: info.name.clone(),
                lane,
                consumer_key: format!("{}/{}", meta.stream, info.name).into(),
            });
            let consumer = self.bus.api.pull_handle(info)?;
            if !lane.is_ordered() {
                self.unordered_lanes.fetch_add(1, AtomicOrdering::AcqRel);
            }
            let me = self.clone();
            tokio::spawn(async move { me.run_lane(ctx, consumer).await });
        }
        Ok(())
    }

    /// A group reads a topic either per partition or whole; the other layout's consumers
    /// would deliver every event a second time, so switching is refused.
    async fn check_layout(&self, meta: &TopicMeta) -> Result<(), BusError> {
        let (other, other_name) = match self.spec.ordering {
            Ordering::PerKey => (Lane::All, "Ordering::None"),
            Ordering::None => (Lane::Unkeyed, "Ordering::PerKey"),
        };
        let name = layout::consumer_name(&self.spec.group, other);
        match self.bus.api.consumer_info(&meta.stream, &name).await {
            Ok(_) => Err(BusError::InvalidOptions(format!(
                "group `{}` already reads `{}` with {other_name} (consumer {name} of stream {}); on NATS a group's ordering is fixed per topic: subscribe with {other_name}, use another group name, or delete the group's consumers",
                self.spec.group, meta.topic, meta.stream
            ))),
            Err(ApiError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into_bus(&format!("reading consumer {name} of {}", meta.stream))),
        }
    }

    fn desired_config(&self, meta: &TopicMeta, lane: Lane, start: &StartFrom) -> pull::Config {
        let deliver_policy = match start {
            StartFrom::Beginning => DeliverPolicy::All,
            StartFrom::Latest => DeliverPolicy::New,
            StartFrom::Offset(n) => DeliverPolicy::ByStartSequence {
                start_sequence: n.saturating_add(1),
            },
            StartFrom::Time(t) => DeliverPolicy::ByStartTime { start_time: *t },
        };
        let name = match &self.spec.ephemeral_tag {
            None => layout::consumer_name(&self.spec.group, lane),
            Some(tag) => layout::ephemeral_consumer_name(&self.spec.group, tag, lane),
        };
        let durable = self.durable();
        pull::Config {
            durable_name: durable.then(|| name.clone()),
            name: (!durable).then_some(name),
            description: Some(layout::consumer_description(&self.spec.group)),
            deliver_policy,
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.spec.ack_timeout,
            // Unlimited: the bus counts deliveries itself and dead-letters an event once it
            // exceeds max_deliveries, so no event is ever dropped by the server unnoticed.
            max_deliver: -1,
            filter_subject: lane.filter(&meta.stored),
            replay_policy: ReplayPolicy::Instant,
            max_ack_pending: if lane.is_ordered() {
                1
            } else {
                self.bus.config.max_ack_pending
            },
            inactive_threshold: if durable {
                Duration::ZERO
            } else {
                self.bus.config.ephemeral_inactive_threshold
            },
            ..Default::default()
        }
    }

    async fn ensure_consumer(
        &self,
        meta: &TopicMeta,
        lane: Lane,
        start: &StartFrom,
    ) -> Result<consumer::Info, BusError> {
        let api = &self.bus.api;
        let desired = self.desired_config(meta, lane, start);
        let name = desired
            .durable_name
            .clone()
            .or_else(|| desired.name.clone())
            .unwrap_or_default();
        let what = |verb: &str| format!("{verb} consumer {name} of stream {}", meta.stream);
        if !self.durable() {
            return api
                .create_consumer(&meta.stream, desired)
                .await
                .map_err(|e| e.into_bus(&what("creating")));
        }
        if start.is_seek() {
            // Replay: a consumer's start cannot be changed, so the group's consumer is
            // replaced by one starting at the new position.
            match api.delete_consumer(&meta.stream, &name).await {
                Ok(()) | Err(ApiError::NotFound(_)) => {}
                Err(e) => return Err(e.into_bus(&what("moving"))),
            }
            return api
                .create_consumer(&meta.stream, desired)
                .await
                .map_err(|e| e.into_bus(&what("creating")));
        }
        let existing = match api.consumer_info(&meta.stream, &name).await {
            Ok(info) => info,
            Err(ApiError::NotFound(_)) => {
                match api.create_consumer(&meta.stream, desired.clone()).await {
                    Ok(info) => return Ok(info),
                    // Created meanwhile by another member.
                    Err(ApiError::Exists(_)) => api
                        .consumer_info(&meta.stream, &name)
                        .await
                        .map_err(|e| e.into_bus(&what("reading")))?,
                    Err(e) => return Err(e.into_bus(&what("creating"))),
                }
            }
            Err(e) => return Err(e.into_bus(&what("reading"))),
        };
        // The group exists: keep its position, take the latest subscriber's settings.
        let have = &existing.config;
        if have.ack_wait == desired.ack_wait
            && have.max_ack_pending == desired.max_ack_pending
            && have.max_deliver == desired.max_deliver
            && have.description == desired.description
        {
            return Ok(existing);
        }
        let mut update = pull::Config {
            durable_name: have.durable_name.clone(),
            name: have.name.clone(),
            description: desired.description.clone(),
            deliver_policy: have.deliver_policy,
            ack_policy: have.ack_policy,
            ack_wait: desired.ack_wait,
            max_deliver: desired.max_deliver,
            filter_subject: have.filter_subject.clone(),
            replay_policy: have.replay_policy,
            max_ack_pending: desired.max_ack_pending,
            max_waiting: have.max_waiting,
            ..Default::default()
        };
        update.inactive_threshold = have.inactive_threshold;
        api.create_consumer(&meta.stream, update)
            .await
            .map_err(|e| e.into_bus(&what("updating")))
    }

    /// The smallest and largest prefetch: `pull_batch` and `max_prefetch`, both at most
    /// `max_in_flight`.
    fn prefetch_bounds(&self) -> (usize, usize) {
        let max_in_flight = self.spec.max_in_flight.max(1);
        let low = self.bus.config.pull_batch.clamp(1, max_in_flight);
        let high = self.bus.config.max_prefetch.clamp(low, max_in_flight);
        (low, high)
    }

    /// The current prefetch of unordered lanes: how many messages the buffer and their open
    /// pull requests may hold together.
    ///
    /// It starts at `pull_batch` and doubles, up to `max_prefetch`, each time `next()` finds
    /// the buffer empty while it could hand out a delivery after a pull request came back
    /// full: the handler waits for events the server has, and a pull request's round trip is
    /// what holds it back. It halves, down to `pull_batch`, whenever a message waited in the
    /// buffer longer than [`MemberShared::waited_too_long`]: events wait for the handler,
    /// and would better wait at the server, where other members can take them. So a busy
    /// handler pulls in large batches and a slow one keeps the small prefetch.
    fn window(&self) -> usize {
        self.window.load(AtomicOrdering::Acquire)
    }

    fn grow_window(&self) {
        if !self.pulled_full.swap(false, AtomicOrdering::AcqRel) {
            return;
        }
        let (_, high) = self.prefetch_bounds();
        let grown =
            self.window
                .fetch_update(AtomicOrdering::AcqRel, AtomicOrdering::Acquire, |w| {
                    (w < high).then(|| w.saturating_mul(2).min(high))
                });
        if grown.is_ok() {
            self.flow.notify_waiters();
        }
    }

    fn shrink_window(&self) {
        let (low, _) = self.prefetch_bounds();
        let _ = self
            .window
            .fetch_update(AtomicOrdering::AcqRel, AtomicOrdering::Acquire, |w| {
                (w > low).then(|| (w / 2).max(low))
            });
    }

    /// How long a message may wait in the buffer before the prefetch shrinks: a hundredth
    /// of the ack timeout, at most 100 ms (a busy member's buffer holds a few milliseconds'
    /// worth of events).
    fn waited_too_long(&self) -> Duration {
        (self.spec.ack_timeout / 100).min(Duration::from_millis(100))
    }

    /// How many messages a lane may ask for now, waiting until there is room; `None` once
    /// the member stops.
    ///
    /// The buffer plus what unordered lanes asked for stays within the prefetch
    /// ([`MemberShared::window`]: `pull_batch` to `max_prefetch`, at most `max_in_flight`),
    /// so a subscription whose owner is slow to call `next()` does not sit on events other
    /// members could take (every event taken counts as a delivery at the server, and times
    /// out there). Each unordered lane asks for its share of the prefetch (at least one
    /// message), so a quiet topic's open request never starves a busy one. A partition lane
    /// asks for one message whenever the member holds fewer than `max_in_flight` and the
    /// buffer is below `pull_batch`, reserving nothing.
    async fn room(&self, lane: Lane) -> Option<usize> {
        loop {
            let flow = self.flow.notified();
            let settled = self.settled.notified();
            tokio::pin!(flow, settled);
            flow.as_mut().enable();
            settled.as_mut().enable();
            if self.cancel.is_cancelled() {
                return None;
            }
            if lane.is_ordered() {
                if self.partition_room() {
                    return Some(1);
                }
            } else if let Some(room) = self.unordered_room() {
                return Some(room);
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return None,
                _ = &mut flow => {}
                _ = &mut settled, if lane.is_ordered() => {}
                // A safety net for a wake-up missed between the check and the wait.
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Whether a partition lane may ask for a message: the member holds fewer than
    /// `max_in_flight` and its buffer is below `pull_batch`.
    fn partition_room(&self) -> bool {
        let buffered = self.buffered.load(AtomicOrdering::Acquire);
        let held = self.outstanding.load(AtomicOrdering::Acquire) + buffered;
        held < self.spec.max_in_flight && buffered < self.prefetch_bounds().0
    }

    /// How many messages an unordered lane may ask for: its share of the prefetch not yet
    /// buffered or asked for, once that is at least a quarter of the share (so a member
    /// whose buffer is full asks for a batch, not for each message `next()` takes).
    fn unordered_room(&self) -> Option<usize> {
        let buffered = self.buffered.load(AtomicOrdering::Acquire);
        let lanes = self.unordered_lanes.load(AtomicOrdering::Acquire).max(1);
        let cap = self.window().max(lanes);
        let share = (cap / lanes).max(1);
        let requested = self.requested.load(AtomicOrdering::Acquire);
        let room = cap.saturating_sub(buffered + requested).min(share);
        (room > 0 && room >= share / 4).then_some(room)
    }

    /// One pull loop: asks the consumer for messages while the member has room, puts them in
    /// the buffer, renews the request when it expires or the connection comes back, and
    /// backs off on errors.
    ///
    /// When the member stops, the loop sends no new request but keeps reading the current
    /// one until it ends (at most `pull_expiry`), handing back what still arrives with a
    /// delayed nak: a request the server holds for a reader that is gone is what trips
    /// nats-server 2.9 (see [`MemberShared::delayed_nak`]). When the bus closes it stops at once.
    async fn run_lane(self: Arc<Self>, ctx: Arc<LaneCtx>, consumer: PullConsumer) {
        let mut connections = self.bus.connections.clone();
        let mut backoff = Backoff::default();
        let expiry = self.bus.config.pull_expiry;
        let ordered = ctx.lane.is_ordered();
        let closing = self.bus.closing.clone();
        // Counted when spawned (see `attach_lanes`); uncounted however the loop ends.
        let _counted = UnorderedLane(if ordered { None } else { Some(&self) });
        loop {
            let Some(want) = self.room(ctx.lane).await else {
                return;
            };
            let mut reserved = Reserved::new(&self, if ordered { 0 } else { want });
            connections.borrow_and_update();
            *self.last_pull.lock().unwrap() = Some(Instant::now());
            // Not abandoned when the member stops: a request sent and then forgotten would
            // wait at the server for a reader that is gone (see `MemberShared::delayed_nak`).
            let batch = tokio::select! {
                _ = closing.cancelled() => return,
                batch = consumer.batch().max_messages(want).expires(expiry).messages() => batch,
            };
            let mut batch = match batch {
                Ok(batch) => batch,
                Err(e) => {
                    drop(reserved);
                    backoff.note(&ctx, &e.to_string());
                    if !backoff.wait(&self.cancel).await {
                        return;
                    }
                    continue;
                }
            };
            let mut failed = false;
            let mut draining = false;
            loop {
                tokio::select! {
                    biased;
                    _ = closing.cancelled() => return,
                    _ = self.cancel.cancelled(), if !draining => draining = true,
                    changed = connections.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        // A new connection: this request died with the old one.
                        break;
                    }
                    item = batch.next() => match item {
                        Some(Ok(msg)) if draining => {
                            reserved.arrived();
                            self.hand_back(&msg, &ctx, self.delayed_nak()).await;
                        }
                        Some(Ok(msg)) => {
                            reserved.arrived();
                            backoff.reset();
                            self.buffered.fetch_add(1, AtomicOrdering::AcqRel);
                            let incoming = Incoming { msg, lane: ctx.clone(), arrived: Instant::now() };
                            if let Err(mpsc::error::SendError(incoming)) = self.tx.send(incoming) {
                                self.buffered.fetch_sub(1, AtomicOrdering::AcqRel);
                                self.hand_back(&incoming.msg, &incoming.lane, self.nak()).await;
                            }
                        }
                        Some(Err(e)) => {
                            if !draining {
                                backoff.note(&ctx, &e.to_string());
                                failed = true;
                            }
                            break;
                        }
                        None => break,
                    }
                }
            }
            if !ordered && reserved.left == 0 && !failed {
                // Every message asked for came: the server may hold more.
                self.pulled_full.store(true, AtomicOrdering::Release);
            }
            drop(reserved);
            if draining || self.cancel.is_cancelled() {
                return;
            }
            if failed && !backoff.wait(&self.cancel).await {
                return;
            }
        }
    }

    /// The next delivery from the buffer; waits while `max_in_flight` deliveries are
    /// unsettled. Cancel-safe: nothing is taken from the buffer until it is returned.
    async fn next(self: &Arc<Self>) -> Option<Result<Delivery, BusError>> {
        let mut rx = tokio::select! {
            _ = self.cancel.cancelled() => return None,
            rx = self.rx.lock() => rx,
        };
        loop {
            if self.cancel.is_cancelled() {
                return None;
            }
            if self.outstanding.load(AtomicOrdering::Acquire) >= self.spec.max_in_flight {
                let notified = self.settled.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.outstanding.load(AtomicOrdering::Acquire) >= self.spec.max_in_flight {
                    tokio::select! {
                        _ = self.cancel.cancelled() => return None,
                        _ = notified => {}
                    }
                }
                continue;
            }
            if rx.is_empty() {
                // The handler could take a delivery and none is here.
                self.grow_window();
            }
            let incoming = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return None,
                incoming = rx.recv() => incoming?,
            };
            self.buffered.fetch_sub(1, AtomicOrdering::AcqRel);
            // Wake the pull loops only when one of them may now ask for more.
            if self.partition_room() || self.unordered_room().is_some() {
                self.flow.notify_waiters();
            }
            if let Some(delivery) = self.admit(incoming) {
                return Some(Ok(delivery));
            }
        }
    }

    /// Turns a buffered message into a delivery, or deals with it here: an event past its
    /// deliveries is dead-lettered, a message that is not a CloudEvent is dead-lettered as
    /// it is, and one that waited in the buffer nearly as long as the ack timeout is left
    /// to the server's redelivery (handing it out would race that redelivery).
    fn admit(self: &Arc<Self>, incoming: Incoming) -> Option<Delivery> {
        let Incoming { msg, lane, arrived } = incoming;
        let info = match msg.info() {
            Ok(info) => info,
            Err(e) => {
                tracing::warn!(stream = %lane.stream, error = %e, "a pulled message has no JetStream metadata; ignored");
                return None;
            }
        };
        let offset = info.stream_sequence.saturating_sub(1);
        // Deliveries that sat in a buffer and were handed back never reached a handler.
        let message = lane.message_key(info.stream_sequence);
        let counts = self.bus.counts(&message);
        let attempt = u32::try_from(info.delivered.max(1))
            .unwrap_or(u32::MAX)
            .saturating_sub(counts.unused)
            .max(1);
        tracing::trace!(
            consumer = info.consumer,
            sequence = info.stream_sequence,
            delivered = info.delivered,
            attempt,
            "delivery"
        );
        let published_at = info.published;
        let reply = msg.reply.clone()?;
        let group = self.spec.group.clone();
        let event = match codec::decode(msg.headers.as_ref(), &msg.payload) {
            Ok(event) => event,
            Err(why) => {
                tracing::warn!(topic = %lane.topic, offset, reason = %why, "a message is not a valid CloudEvent; moving it to the dead-letter topic");
                let bus = self.bus.clone();
                let (headers, body) = (msg.headers.clone(), msg.payload.clone());
                tokio::spawn(async move {
                    let job = DeadLetterJob {
                        group: &group,
                        topic: &lane.topic,
                        offset,
                        attempts: attempt,
                        reason: "invalid CloudEvent",
                        error: Some(why),
                    };
                    if let Err(e) = dead_letter_raw(&bus, &reply, headers.as_ref(), body, job).await
                    {
                        tracing::error!(topic = %lane.topic, offset, error = %e, "dead-lettering failed; the message will come back");
                    }
                });
                return None;
            }
        };
        if attempt.saturating_sub(counts.forgiven) > self.spec.max_deliveries {
            // Its last delivery timed out (or was dropped): out of deliveries.
            let bus = self.bus.clone();
            let error = bus.last_error(&group, &lane.topic, offset);
            tokio::spawn(async move {
                let job = DeadLetterJob {
                    group: &group,
                    topic: &lane.topic,
                    offset,
                    attempts: attempt - 1,
                    reason: "max deliveries reached",
                    error,
                };
                match dead_letter(&bus, &reply, &event, job).await {
                    Ok(()) => bus.forget_counts(&message),
                    Err(e) => {
                        tracing::error!(topic = %lane.topic, offset, error = %e, "dead-lettering failed; the event will come back")
                    }
                }
            });
            return None;
        }
        let age = arrived.elapsed();
        if age > self.waited_too_long() {
            self.shrink_window();
        }
        let timeout = self.spec.ack_timeout;
        if age >= timeout.mul_f64(0.9) {
            self.bus.count(&message, |c| c.unused += 1);
            tracing::debug!(topic = %lane.topic, offset, ?age, "a buffered message outlived its ack timeout; leaving it to the redelivery");
            return None;
        }
        if age > timeout / 4 {
            // Give the handler a whole ack timeout from now.
            self.bus
                .signal(reply.clone(), bytes::Bytes::from_static(b"+WPI"));
        }
        let key = self.next_delivery.fetch_add(1, AtomicOrdering::Relaxed);
        self.outstanding.fetch_add(1, AtomicOrdering::AcqRel);
        let handed_at = Instant::now();
        self.handed.lock().unwrap().insert(
            key,
            Handed {
                reply: reply.clone(),
                message: message.clone(),
                at: handed_at,
            },
        );
        let acker = Arc::new(NatsAcker {
            member: self.clone(),
            message,
            handed_at,
            reply,
            event: Arc::new(event),
            key,
            done: AtomicBool::new(false),
        });
        Some(Delivery::new(
            acker.event.clone(),
            DeliveryInfo {
                topic: lane.topic.clone(),
                offset,
                group: self.spec.group.clone(),
                attempt,
                published_at,
            },
            acker,
        ))
    }

    /// The nak that hands a message back to the group at once; delayed only once the bus
    /// is closing (see [`MemberShared::delayed_nak`]).
    fn nak(&self) -> bytes::Bytes {
        if self.bus.is_closed() {
            self.delayed_nak()
        } else {
            bytes::Bytes::from_static(b"-NAK")
        }
    }

    /// A nak whose redelivery waits until this member's pull requests have expired.
    ///
    /// nats-server 2.9 mishandles a redelivery that finds only pull requests whose reader
    /// is gone (those of a closed connection): it rolls the consumer back one message, so
    /// the last event it delivered is delivered again as if new, even if it was acked, while
    /// the nak'ed event waits for its ack timeout. A closing member's pull loops keep their
    /// requests open until they expire, handing back what still arrives with this nak, and
    /// a closing bus uses it for everything it hands back: the redelivery then happens once
    /// those requests are gone.
    fn delayed_nak(&self) -> bytes::Bytes {
        let expiry = self.bus.config.pull_expiry + Duration::from_millis(250);
        let left = match *self.last_pull.lock().unwrap() {
            Some(sent) => (sent + expiry).saturating_duration_since(Instant::now()),
            None => Duration::ZERO,
        };
        if left.is_zero() {
            bytes::Bytes::from_static(b"-NAK")
        } else {
            bytes::Bytes::from(format!("-NAK {{\"delay\":{}}}", left.as_nanos()))
        }
    }

    /// Hands back a message that never reached a handler, so its delivery does not count as
    /// an attempt.
    async fn hand_back(&self, msg: &jetstream::Message, lane: &LaneCtx, payload: bytes::Bytes) {
        let Some(reply) = msg.reply.clone() else {
            return;
        };
        if let Ok(info) = msg.info() {
            self.bus
                .count(&lane.message_key(info.stream_sequence), |c| c.unused += 1);
        }
        let _ = self.bus.client.publish(reply, payload).await;
    }

    fn settle(&self, key: u64) {
        self.handed.lock().unwrap().remove(&key);
        self.outstanding.fetch_sub(1, AtomicOrdering::AcqRel);
        self.settled.notify_waiters();
    }

    /// Wakes everything waiting in this member (it stops).
    fn wake_all(&self) {
        self.flow.notify_waiters();
        self.settled.notify_waiters();
    }

    /// Stops the member: its pull loops send no more requests (they finish the current ones
    /// in the background), buffered messages are nak'ed (and, with `nak_handed`, deliveries
    /// handed out and not settled too), an ephemeral group's consumers are deleted.
    pub(crate) async fn shutdown(self: &Arc<Self>, nak_handed: bool) {
        if self.shut.swap(true, AtomicOrdering::AcqRel) {
            return;
        }
        self.cancel.cancel();
        self.wake_all();
        if let Ok(mut rx) = tokio::time::timeout(Duration::from_secs(1), self.rx.lock()).await {
            rx.close();
            while let Ok(incoming) = rx.try_recv() {
                self.buffered.fetch_sub(1, AtomicOrdering::AcqRel);
                self.hand_back(&incoming.msg, &incoming.lane, self.nak())
                    .await;
            }
        }
        let client = &self.bus.client;
        if nak_handed {
            let handed: Vec<Handed> = self
                .handed
                .lock()
                .unwrap()
                .drain()
                .map(|(_, h)| h)
                .collect();
            for h in handed {
                if h.at.elapsed() < self.spec.ack_timeout {
                    self.bus.count(&h.message, |c| c.forgiven += 1);
                }
                let _ = client.publish(h.reply, self.nak()).await;
            }
        }
        let ephemeral = std::mem::take(&mut *self.ephemeral_consumers.lock().unwrap());
        for (stream, name) in ephemeral {
            let deleting = self.bus.api.delete_consumer(&stream, &name);
            let _ = tokio::time::timeout(Duration::from_secs(2), deleting).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), client.flush()).await;
        self.bus.unregister_member(self.id);
    }

    /// Stops taking new pull requests (the first step of [`Bus::close`]).
    ///
    /// [`Bus::close`]: ovasabi_core::Bus::close
    pub(crate) fn stop_pulling(&self) {
        self.cancel.cancel();
        self.wake_all();
    }
}

/// A delivery handed out and not settled.
struct Handed {
    reply: Subject,
    message: MessageKey,
    at: Instant,
}

/// Uncounts an unordered pull loop when it ends.
struct UnorderedLane<'a>(Option<&'a MemberShared>);

impl Drop for UnorderedLane<'_> {
    fn drop(&mut self) {
        if let Some(member) = self.0 {
            member.unordered_lanes.fetch_sub(1, AtomicOrdering::AcqRel);
            member.flow.notify_waiters();
        }
    }
}

/// Counts the messages an unordered lane asked for until they arrive or the request ends.
struct Reserved<'a> {
    member: &'a MemberShared,
    left: usize,
}

impl<'a> Reserved<'a> {
    fn new(member: &'a MemberShared, count: usize) -> Self {
        member.requested.fetch_add(count, AtomicOrdering::AcqRel);
        Reserved {
            member,
            left: count,
        }
    }

    fn arrived(&mut self) {
        if self.left > 0 {
            self.left -= 1;
            self.member.requested.fetch_sub(1, AtomicOrdering::AcqRel);
        }
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        if self.left > 0 {
            self.member
                .requested
                .fetch_sub(self.left, AtomicOrdering::AcqRel);
            self.member.flow.notify_waiters();
        }
    }
}

/// Exponential backoff of a pull loop after errors: 50 ms doubling to 2 s.
#[derive(Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn note(&mut self, lane: &LaneCtx, error: &str) {
        self.failures += 1;
        if self.failures == 1 {
            tracing::debug!(stream = %lane.stream, consumer = %lane.consumer, error, "pull request failed; retrying");
        } else if self.failures.is_multiple_of(20) {
            tracing::warn!(stream = %lane.stream, consumer = %lane.consumer, error, failures = self.failures, "pull requests keep failing; retrying");
        }
    }

    fn reset(&mut self) {
        self.failures = 0;
    }

    /// Waits before the next try; false if the member stopped meanwhile.
    async fn wait(&self, cancel: &CancellationToken) -> bool {
        let exp = self.failures.saturating_sub(1).min(6);
        let delay = Duration::from_millis(50 * (1u64 << exp)).min(Duration::from_secs(2));
        tokio::select! {
            _ = cancel.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }
}

/// A subscription's source of deliveries.
struct Member {
    shared: Arc<MemberShared>,
    closed: bool,
}

#[async_trait]
impl DeliverySource for Member {
    async fn next(&mut self) -> Option<Result<Delivery, BusError>> {
        if self.closed {
            return None;
        }
        self.shared.next().await
    }

    async fn close(&mut self) {
        self.closed = true;
        self.shared.shutdown(false).await;
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        self.shared.cancel.cancel();
        self.shared.wake_all();
        let shared = self.shared.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move { shared.shutdown(false).await });
        }
    }
}

/// Acks, nacks and dead-letters one delivery.
struct NatsAcker {
    member: Arc<MemberShared>,
    /// Where [`DeliveryCounts`](crate::bus::DeliveryCounts) are kept for it.
    message: MessageKey,
    /// When it was handed out: handed back within the ack timeout, it is forgiven.
    handed_at: Instant,
    reply: Subject,
    event: Arc<Event>,
    key: u64,
    done: AtomicBool,
}

impl NatsAcker {
    fn finish(&self) {
        if !self.done.swap(true, AtomicOrdering::AcqRel) {
            self.member.settle(self.key);
        }
    }

    /// The event is done for the group: forget what was counted about it.
    fn done_with(&self, info: &DeliveryInfo) {
        let bus = self.bus();
        bus.forget_error(&info.group, &info.topic, info.offset);
        bus.forget_counts(&self.message);
        self.finish();
    }

    fn bus(&self) -> &Inner {
        &self.member.bus
    }
}

#[async_trait]
impl Acknowledger for NatsAcker {
    async fn ack(&self, info: &DeliveryInfo) -> Result<(), BusError> {
        self.bus().confirm(&self.reply, "+ACK").await?;
        self.done_with(info);
        Ok(())
    }

    async fn nack(
        &self,
        info: &DeliveryInfo,
        delay: Duration,
        error: Option<String>,
    ) -> Result<(), BusError> {
        let bus = self.bus();
        bus.check_open()?;
        if let Some(error) = &error {
            bus.remember_error(&info.group, &info.topic, info.offset, error);
        }
        let forgiven = bus.counts(&self.message).forgiven;
        if info.attempt.saturating_sub(forgiven) >= self.member.spec.max_deliveries {
            let error = error.or_else(|| bus.last_error(&info.group, &info.topic, info.offset));
            let job = DeadLetterJob {
                group: &info.group,
                topic: &info.topic,
                offset: info.offset,
                attempts: info.attempt,
                reason: "max deliveries reached",
                error,
            };
            dead_letter(bus, &self.reply, &self.event, job).await?;
            self.done_with(info);
            return Ok(());
        }
        let payload = if delay.is_zero() {
            bytes::Bytes::from_static(b"-NAK")
        } else {
            bytes::Bytes::from(format!("-NAK {{\"delay\":{}}}", delay.as_nanos()))
        };
        bus.confirm_bytes(&self.reply, payload).await?;
        self.finish();
        Ok(())
    }

    async fn dead_letter(&self, info: &DeliveryInfo, why: DeadLetter) -> Result<(), BusError> {
        let bus = self.bus();
        bus.check_open()?;
        let error = why
            .error
            .or_else(|| bus.last_error(&info.group, &info.topic, info.offset));
        let job = DeadLetterJob {
            group: &info.group,
            topic: &info.topic,
            offset: info.offset,
            attempts: info.attempt,
            reason: &why.reason,
            error,
        };
        dead_letter(bus, &self.reply, &self.event, job).await?;
        self.done_with(info);
        Ok(())
    }
}

impl Drop for NatsAcker {
    fn drop(&mut self) {
        if self.done.swap(true, AtomicOrdering::AcqRel) {
            return;
        }
        self.member.settle(self.key);
        // Dropped unsettled: hand it back to the group at once, not held against the event
        // unless its ack timeout had passed (it was delivered again by then).
        if !self.member.bus.is_closed() {
            if self.handed_at.elapsed() < self.member.spec.ack_timeout {
                self.member.bus.count(&self.message, |c| c.forgiven += 1);
            }
            self.member
                .bus
                .signal(self.reply.clone(), self.member.nak());
        }
    }
}
