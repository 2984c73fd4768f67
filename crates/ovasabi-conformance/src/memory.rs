//! A reference backend held in memory, keeping the whole contract of `ovasabi_core::bus`
//! simply (one lock, linear scans). It exists to test the suite: every scenario must pass on
//! it. "Restart" opens a new bus handle on the same shared state.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ovasabi_core::dead_letter;
use ovasabi_core::naming::{dead_letter_topic, validate_topic};
use ovasabi_core::{
    Acknowledger, Bus, BusError, DeadLetter, Delivery, DeliveryInfo, DeliverySource, Event,
    GroupInfo, Ordering, Published, Publisher, StartFrom, SubscribeOptions, Subscriber,
    Subscription, TopicInfo, TopicPattern,
};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::{Backend, Capabilities};

const MAX_DATA: usize = 1024 * 1024;

pub(crate) struct MemoryBackend {
    shared: Arc<Shared>,
    caps: Capabilities,
}

/// Bugs the reference backend can be told to have, to prove the suite catches them.
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct Faults {
    /// Every nth publish returns Ok but stores nothing (0: never).
    pub(crate) lose_every_nth_publish: usize,
    pub(crate) drop_sequence_extension: bool,
    pub(crate) ignore_key_order: bool,
    pub(crate) ignore_nack_delay: bool,
    pub(crate) omit_dead_letter_attempts: bool,
    pub(crate) ignore_acks: bool,
    pub(crate) latest_as_beginning: bool,
    pub(crate) ignore_max_in_flight: bool,
    /// Closing the bus marks its outstanding deliveries done instead of returning them.
    pub(crate) lose_leased_on_close: bool,
}

impl MemoryBackend {
    pub(crate) fn new() -> Self {
        Self::with(Faults::default(), Capabilities::all("memory"))
    }

    pub(crate) fn with(faults: Faults, caps: Capabilities) -> Self {
        MemoryBackend {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                notify: Notify::new(),
                faults,
            }),
            caps,
        }
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    async fn open(&self) -> Result<Arc<dyn Bus>, BusError> {
        let handle = {
            let mut state = self.shared.lock();
            state.next_id += 1;
            state.next_id
        };
        Ok(Arc::new(MemoryBus {
            shared: self.shared.clone(),
            handle,
        }))
    }

    fn capabilities(&self) -> Capabilities {
        self.caps.clone()
    }
}

struct Shared {
    state: Mutex<State>,
    notify: Notify,
    faults: Faults,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("memory state lock")
    }
}

#[derive(Default)]
struct State {
    topics: BTreeMap<String, Vec<Stored>>,
    groups: HashMap<String, Group>,
    subs: HashMap<u64, Sub>,
    closed_handles: HashSet<u64>,
    next_id: u64,
    publishes: usize,
}

struct Stored {
    event: Arc<Event>,
    at: DateTime<Utc>,
}

struct Group {
    patterns: Vec<TopicPattern>,
    ephemeral: bool,
    cursors: BTreeMap<String, Cursor>,
}

#[derive(Default)]
struct Cursor {
    slots: Vec<Slot>,
    first_open: usize,
}

#[derive(Clone)]
struct Slot {
    state: SlotState,
    deliveries: u32,
    last_error: Option<String>,
}

#[derive(Clone, PartialEq)]
enum SlotState {
    Ready(Option<Instant>),
    Leased {
        lease: u64,
        sub: u64,
        until: Instant,
    },
    Done,
}

struct Sub {
    handle: u64,
    group: String,
    patterns: Vec<TopicPattern>,
    ordering: Ordering,
    max_in_flight: usize,
    ack_timeout: Duration,
    max_deliveries: u32,
    in_flight: usize,
    closed: bool,
}

impl Slot {
    fn ready() -> Self {
        Slot {
            state: SlotState::Ready(None),
            deliveries: 0,
            last_error: None,
        }
    }
    fn done() -> Self {
        Slot {
            state: SlotState::Done,
            deliveries: 0,
            last_error: None,
        }
    }
}

impl State {
    fn append(&mut self, topic: &str, event: Event) -> Published {
        let log = self.topics.entry(topic.to_owned()).or_default();
        let offset = log.len() as u64;
        log.push(Stored {
            event: Arc::new(event),
            at: Utc::now(),
        });
        let len = log.len();
        for group in self.groups.values_mut() {
            if group.patterns.iter().any(|p| p.matches(topic)) {
                let cursor = group.cursors.entry(topic.to_owned()).or_default();
                while cursor.slots.len() < len {
                    cursor.slots.push(Slot::ready());
                }
            }
        }
        Published {
            topic: topic.to_owned(),
            offset,
        }
    }

    fn release_sub(&mut self, sub_id: u64) {
        for group in self.groups.values_mut() {
            for cursor in group.cursors.values_mut() {
                for slot in &mut cursor.slots {
                    if matches!(slot.state, SlotState::Leased { sub, .. } if sub == sub_id) {
                        slot.state = SlotState::Ready(None);
                    }
                }
            }
        }
        if let Some(sub) = self.subs.get_mut(&sub_id) {
            sub.in_flight = 0;
        }
    }

    fn end_sub(&mut self, sub_id: u64) {
        self.release_sub(sub_id);
        if let Some(sub) = self.subs.remove(&sub_id) {
            let ephemeral = self.groups.get(&sub.group).is_some_and(|g| g.ephemeral);
            let members = self.subs.values().any(|s| s.group == sub.group);
            if ephemeral && !members {
                self.groups.remove(&sub.group);
            }
        }
    }

    fn lease_ended(&mut self, sub_id: u64) {
        if let Some(sub) = self.subs.get_mut(&sub_id) {
            sub.in_flight = sub.in_flight.saturating_sub(1);
        }
    }

    fn dead_letter(
        &mut self,
        group: &str,
        topic: &str,
        offset: usize,
        why: DeadLetter,
        attempts: u32,
        faults: Faults,
    ) {
        let original = &self.topics[topic][offset].event;
        let mut event = (**original).clone();
        if !faults.omit_dead_letter_attempts {
            event = event.with_extension(dead_letter::ATTEMPTS, attempts.to_string());
        }
        event = event
            .with_extension(dead_letter::REASON, why.reason)
            .with_extension(dead_letter::GROUP, group.to_owned())
            .with_extension(dead_letter::TOPIC, topic.to_owned());
        if let Some(error) = why.error {
            event = event.with_extension(dead_letter::ERROR, error);
        }
        self.append(&dead_letter_topic(topic), event);
    }

    /// Expires leases; dead-letters what has run out of deliveries.
    fn expire(&mut self, now: Instant, max_of: &HashMap<u64, u32>, faults: Faults) {
        let mut dead = Vec::new();
        for (name, group) in &mut self.groups {
            for (topic, cursor) in &mut group.cursors {
                for (offset, slot) in cursor.slots.iter_mut().enumerate().skip(cursor.first_open) {
                    if let SlotState::Leased { sub, until, .. } = slot.state {
                        if until <= now {
                            let max = max_of.get(&sub).copied().unwrap_or(u32::MAX);
                            if slot.deliveries >= max {
                                slot.state = SlotState::Done;
                                dead.push((
                                    name.clone(),
                                    topic.clone(),
                                    offset,
                                    slot.last_error.clone(),
                                    slot.deliveries,
                                    sub,
                                ));
                            } else {
                                slot.state = SlotState::Ready(None);
                                dead.push((String::new(), String::new(), 0, None, 0, sub));
                            }
                        }
                    }
                }
            }
        }
        for (group, topic, offset, error, attempts, sub) in dead {
            self.lease_ended(sub);
            if !group.is_empty() {
                let why = DeadLetter {
                    reason: "max deliveries reached".to_owned(),
                    error,
                };
                self.dead_letter(&group, &topic, offset, why, attempts, faults);
            }
        }
    }
}

struct MemoryBus {
    shared: Arc<Shared>,
    handle: u64,
}

impl MemoryBus {
    fn check_open(&self, state: &State) -> Result<(), BusError> {
        if state.closed_handles.contains(&self.handle) {
            Err(BusError::Closed)
        } else {
            Ok(())
        }
    }
}

fn check_event(event: &Event) -> Result<(), BusError> {
    event.validate()?;
    if event.data_len() > MAX_DATA {
        return Err(BusError::EventTooLarge {
            size: event.data_len(),
            max: MAX_DATA,
        });
    }
    Ok(())
}

fn stamped(mut event: Event, faults: Faults) -> Event {
    if event.time.is_none() {
        event.time = Some(Utc::now());
    }
    if faults.drop_sequence_extension {
        event.extensions.remove(ovasabi_core::event::EXT_SEQUENCE);
    }
    event
}

#[async_trait]
impl Publisher for MemoryBus {
    async fn publish(&self, topic: &str, event: Event) -> Result<Published, BusError> {
        validate_topic(topic)?;
        check_event(&event)?;
        let published = {
            let mut state = self.shared.lock();
            self.check_open(&state)?;
            state.publishes += 1;
            let n = self.shared.faults.lose_every_nth_publish;
            if n > 0 && state.publishes.checked_rem(n) == Some(0) {
                let offset = state.topics.get(topic).map_or(0, Vec::len) as u64;
                return Ok(Published {
                    topic: topic.to_owned(),
                    offset,
                });
            }
            state.append(topic, stamped(event, self.shared.faults))
        };
        self.shared.notify.notify_waiters();
        Ok(published)
    }

    async fn publish_batch(
        &self,
        topic: &str,
        events: Vec<Event>,
    ) -> Result<Vec<Published>, BusError> {
        validate_topic(topic)?;
        for event in &events {
            check_event(event)?;
        }
        let published = {
            let mut state = self.shared.lock();
            self.check_open(&state)?;
            let faults = self.shared.faults;
            events
                .into_iter()
                .map(|e| state.append(topic, stamped(e, faults)))
                .collect()
        };
        self.shared.notify.notify_waiters();
        Ok(published)
    }
}

#[async_trait]
impl Subscriber for MemoryBus {
    async fn subscribe(&self, options: SubscribeOptions) -> Result<Subscription, BusError> {
        options.validate()?;
        let mut state = self.shared.lock();
        self.check_open(&state)?;
        let topics: Vec<(String, Vec<DateTime<Utc>>)> = state
            .topics
            .iter()
            .filter(|(t, _)| options.topics.iter().any(|p| p.matches(t)))
            .map(|(t, log)| (t.clone(), log.iter().map(|s| s.at).collect()))
            .collect();
        let group = state
            .groups
            .entry(options.group.clone())
            .or_insert_with(|| Group {
                patterns: Vec::new(),
                ephemeral: options.ephemeral,
                cursors: BTreeMap::new(),
            });
        for p in &options.topics {
            if !group.patterns.contains(p) {
                group.patterns.push(p.clone());
            }
        }
        for (topic, times) in topics {
            let len = times.len();
            let start = match &options.start {
                StartFrom::Beginning => 0,
                StartFrom::Latest if !self.shared.faults.latest_as_beginning => len,
                StartFrom::Latest => 0,
                StartFrom::Offset(n) => (*n as usize).min(len),
                StartFrom::Time(t) => times.iter().position(|at| at >= t).unwrap_or(len),
            };
            let exists = group.cursors.contains_key(&topic);
            if exists && !options.start.is_seek() {
                continue;
            }
            let cursor = group.cursors.entry(topic).or_default();
            cursor.slots = (0..len)
                .map(|i| {
                    if i < start {
                        Slot::done()
                    } else {
                        Slot::ready()
                    }
                })
                .collect();
            cursor.first_open = 0;
        }
        state.next_id += 1;
        let id = state.next_id;
        state.subs.insert(
            id,
            Sub {
                handle: self.handle,
                group: options.group.clone(),
                patterns: options.topics.clone(),
                ordering: options.ordering,
                max_in_flight: options.max_in_flight,
                ack_timeout: options.ack_timeout,
                max_deliveries: options.max_deliveries,
                in_flight: 0,
                closed: false,
            },
        );
        drop(state);
        self.shared.notify.notify_waiters();
        Ok(Subscription::new(Box::new(MemorySource {
            shared: self.shared.clone(),
            id,
            ended: false,
        })))
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn topics(&self) -> Result<Vec<TopicInfo>, BusError> {
        let state = self.shared.lock();
        self.check_open(&state)?;
        Ok(state
            .topics
            .iter()
            .map(|(topic, log)| TopicInfo {
                topic: topic.clone(),
                retained: log.len() as u64,
                first_offset: 0,
                next_offset: log.len() as u64,
                groups: {
                    let mut groups: Vec<GroupInfo> = state
                        .groups
                        .iter()
                        .filter(|(_, g)| !g.ephemeral)
                        .filter_map(|(name, g)| {
                            let cursor = g.cursors.get(topic)?;
                            let open = |s: &&Slot| s.state != SlotState::Done;
                            Some(GroupInfo {
                                group: name.clone(),
                                position: cursor
                                    .slots
                                    .iter()
                                    .position(|s| open(&s))
                                    .unwrap_or(cursor.slots.len())
                                    as u64,
                                lag: cursor.slots.iter().filter(open).count() as u64,
                            })
                        })
                        .collect();
                    groups.sort_by(|a, b| a.group.cmp(&b.group));
                    groups
                },
            })
            .collect())
    }

    async fn close(&self) -> Result<(), BusError> {
        {
            let mut state = self.shared.lock();
            if !state.closed_handles.insert(self.handle) {
                return Err(BusError::Closed);
            }
            let mine: Vec<u64> = state
                .subs
                .iter()
                .filter(|(_, s)| s.handle == self.handle)
                .map(|(id, _)| *id)
                .collect();
            for id in mine {
                if self.shared.faults.lose_leased_on_close {
                    for group in state.groups.values_mut() {
                        for cursor in group.cursors.values_mut() {
                            for slot in &mut cursor.slots {
                                if matches!(slot.state, SlotState::Leased { sub, .. } if sub == id)
                                {
                                    slot.state = SlotState::Done;
                                }
                            }
                        }
                    }
                }
                state.release_sub(id);
                if let Some(sub) = state.subs.get_mut(&id) {
                    sub.closed = true;
                }
            }
        }
        self.shared.notify.notify_waiters();
        Ok(())
    }
}

struct MemorySource {
    shared: Arc<Shared>,
    id: u64,
    ended: bool,
}

enum Next {
    Found(Delivery),
    Wait(Option<Instant>),
    End,
}

impl MemorySource {
    fn try_next(&self) -> Next {
        let mut state = self.shared.lock();
        let now = Instant::now();
        let max_of: HashMap<u64, u32> = state
            .subs
            .iter()
            .map(|(id, s)| (*id, s.max_deliveries))
            .collect();
        state.expire(now, &max_of, self.shared.faults);
        let Some(sub) = state.subs.get(&self.id) else {
            return Next::End;
        };
        if sub.closed {
            return Next::End;
        }
        let (group_name, patterns, ordering, ack_timeout) = (
            sub.group.clone(),
            sub.patterns.clone(),
            sub.ordering,
            sub.ack_timeout,
        );
        if sub.in_flight >= sub.max_in_flight && !self.shared.faults.ignore_max_in_flight {
            return Next::Wait(None);
        }
        let mut wake: Option<Instant> = None;
        let mut found = None;
        let state_ref = &mut *state;
        let group = state_ref
            .groups
            .get_mut(&group_name)
            .expect("the group of a live subscription");
        'topics: for (topic, cursor) in group.cursors.iter_mut() {
            if !patterns.iter().any(|p| p.matches(topic)) {
                continue;
            }
            while cursor.first_open < cursor.slots.len()
                && cursor.slots[cursor.first_open].state == SlotState::Done
            {
                cursor.first_open += 1;
            }
            let log = &state_ref.topics[topic];
            let mut blocked: HashSet<&str> = HashSet::new();
            for (offset, slot) in cursor.slots.iter_mut().enumerate().skip(cursor.first_open) {
                let key = log[offset].event.partition_key();
                let key_blocked = ordering == Ordering::PerKey
                    && !self.shared.faults.ignore_key_order
                    && key.is_some_and(|k| blocked.contains(k));
                let deliverable = match &slot.state {
                    SlotState::Done => continue,
                    SlotState::Leased { until, .. } => {
                        wake = Some(wake.map_or(*until, |w| w.min(*until)));
                        false
                    }
                    SlotState::Ready(Some(at)) if *at > now => {
                        wake = Some(wake.map_or(*at, |w| w.min(*at)));
                        false
                    }
                    SlotState::Ready(_) => !key_blocked,
                };
                if let Some(k) = key {
                    blocked.insert(k);
                }
                if deliverable {
                    state_ref.next_id += 1;
                    let lease = state_ref.next_id;
                    slot.deliveries += 1;
                    slot.state = SlotState::Leased {
                        lease,
                        sub: self.id,
                        until: now + ack_timeout,
                    };
                    let info = DeliveryInfo {
                        topic: topic.clone(),
                        offset: offset as u64,
                        group: group_name.clone(),
                        attempt: slot.deliveries,
                        published_at: log[offset].at,
                    };
                    let acker = MemoryAcker {
                        shared: self.shared.clone(),
                        lease,
                        sub: self.id,
                    };
                    found = Some(Delivery::new(
                        log[offset].event.clone(),
                        info,
                        Arc::new(acker),
                    ));
                    break 'topics;
                }
            }
        }
        match found {
            Some(delivery) => {
                if let Some(sub) = state.subs.get_mut(&self.id) {
                    sub.in_flight += 1;
                }
                Next::Found(delivery)
            }
            None => Next::Wait(wake),
        }
    }
}

#[async_trait]
impl DeliverySource for MemorySource {
    async fn next(&mut self) -> Option<Result<Delivery, BusError>> {
        if self.ended {
            return None;
        }
        loop {
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.try_next() {
                Next::Found(delivery) => return Some(Ok(delivery)),
                Next::End => {
                    self.ended = true;
                    return None;
                }
                Next::Wait(Some(at)) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                Next::Wait(None) => {
                    // Leases of other members may expire: look again now and then.
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    }
                }
            }
        }
    }

    async fn close(&mut self) {
        self.ended = true;
        self.shared.lock().end_sub(self.id);
        self.shared.notify.notify_waiters();
    }
}

impl Drop for MemorySource {
    fn drop(&mut self) {
        if let Ok(mut state) = self.shared.state.lock() {
            state.end_sub(self.id);
        }
        self.shared.notify.notify_waiters();
    }
}

struct MemoryAcker {
    shared: Arc<Shared>,
    lease: u64,
    sub: u64,
}

impl MemoryAcker {
    /// Applies `f` to the delivery's slot (`mine`: the slot is still leased to this very
    /// delivery); dead-letters the event if `f` says so.
    fn settle(
        &self,
        info: &DeliveryInfo,
        f: impl FnOnce(&mut Slot, bool, u32) -> Option<DeadLetter>,
    ) -> Result<(), BusError> {
        {
            let mut state = self.shared.lock();
            let max = state
                .subs
                .get(&self.sub)
                .map_or(u32::MAX, |s| s.max_deliveries);
            let Some(slot) = state
                .groups
                .get_mut(&info.group)
                .and_then(|g| g.cursors.get_mut(&info.topic))
                .and_then(|c| c.slots.get_mut(info.offset as usize))
            else {
                return Ok(());
            };
            let before = slot.state.clone();
            let mine = matches!(before, SlotState::Leased { lease, .. } if lease == self.lease);
            let dead = f(slot, mine, max);
            let attempts = slot.deliveries;
            let changed = slot.state != before;
            if let (true, SlotState::Leased { sub, .. }) = (changed, before) {
                state.lease_ended(sub);
            }
            if let Some(why) = dead {
                let faults = self.shared.faults;
                state.dead_letter(
                    &info.group,
                    &info.topic,
                    info.offset as usize,
                    why,
                    attempts,
                    faults,
                );
            }
        }
        self.shared.notify.notify_waiters();
        Ok(())
    }
}

#[async_trait]
impl Acknowledger for MemoryAcker {
    async fn ack(&self, info: &DeliveryInfo) -> Result<(), BusError> {
        if self.shared.faults.ignore_acks {
            return Ok(());
        }
        self.settle(info, |slot, _, _| {
            slot.state = SlotState::Done;
            None
        })
    }

    async fn nack(
        &self,
        info: &DeliveryInfo,
        delay: Duration,
        error: Option<String>,
    ) -> Result<(), BusError> {
        let faults = self.shared.faults;
        self.settle(info, |slot, mine, max| {
            if !mine {
                return None;
            }
            slot.last_error = error.clone();
            if slot.deliveries >= max {
                slot.state = SlotState::Done;
                Some(DeadLetter {
                    reason: "max deliveries reached".to_owned(),
                    error,
                })
            } else {
                let delay = if faults.ignore_nack_delay {
                    Duration::ZERO
                } else {
                    delay
                };
                slot.state = SlotState::Ready(Some(Instant::now() + delay));
                None
            }
        })
    }

    async fn dead_letter(&self, info: &DeliveryInfo, why: DeadLetter) -> Result<(), BusError> {
        self.settle(info, |slot, _, _| {
            if slot.state == SlotState::Done {
                return None;
            }
            slot.state = SlotState::Done;
            Some(why)
        })
    }
}

#[cfg(test)]
mod suite_catches {
    //! Each fault of the reference backend must fail the scenario that covers it, with a
    //! message that says what went wrong; capabilities a backend lacks skip, never fail.
    use super::{dead_letter, Faults, MemoryBackend};
    use crate::{Capabilities, SCENARIOS};

    async fn caught(faults: Faults, scenario: &str, expected: &str) {
        // A quarter of the usual waits: faults show as quickly, and timeouts come sooner.
        let caps = Capabilities {
            time_scale: 0.25,
            ..Capabilities::all("faulty-memory")
        };
        let backend = MemoryBackend::with(faults, caps);
        let run = SCENARIOS
            .iter()
            .find(|s| s.name == scenario)
            .expect("a known scenario")
            .run;
        let failure = run(&backend)
            .await
            .expect_err(&format!("{scenario} must catch {faults:?}"));
        println!("{failure}");
        let text = failure.to_string();
        assert!(
            text.contains(scenario) && text.contains("faulty-memory") && text.contains(expected),
            "the failure should name the scenario, the backend and contain {expected:?}: {text}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lost_publishes() {
        let faults = Faults {
            lose_every_nth_publish: 997,
            ..Faults::default()
        };
        caught(
            faults,
            "concurrent_subscribe",
            "of 5000 expected events were not acked",
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropped_extension() {
        let faults = Faults {
            drop_sequence_extension: true,
            ..Faults::default()
        };
        caught(
            faults,
            "publish_subscribe",
            "extension `sequence` is missing",
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn broken_key_order() {
        let faults = Faults {
            ignore_key_order: true,
            ..Faults::default()
        };
        caught(faults, "order_per_key", "still unacked").await;
        caught(faults, "no_ack_holds_next", "still unacked").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nack_delay_ignored() {
        let faults = Faults {
            ignore_nack_delay: true,
            ..Faults::default()
        };
        caught(faults, "resend_on_nack", "before the nack's delay").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dead_letter_without_attempts() {
        let faults = Faults {
            omit_dead_letter_attempts: true,
            ..Faults::default()
        };
        caught(
            faults,
            "dead_letter_after_max_deliveries",
            dead_letter::ATTEMPTS,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acks_ignored() {
        let faults = Faults {
            ignore_acks: true,
            ..Faults::default()
        };
        caught(faults, "ack_after_timeout", "after the late ack").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn latest_replays_history() {
        let faults = Faults {
            latest_as_beginning: true,
            ..Faults::default()
        };
        caught(
            faults,
            "new_subscriber_replays_history",
            "must not get history",
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_flight_unbounded() {
        let faults = Faults {
            ignore_max_in_flight: true,
            ..Faults::default()
        };
        caught(faults, "max_in_flight_bound", "max_in_flight is 5").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn outstanding_lost_on_close() {
        let faults = Faults {
            lose_leased_on_close: true,
            ..Faults::default()
        };
        caught(faults, "restart", "never delivered: [1, 3, 5").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn missing_capabilities_skip() {
        let caps = Capabilities {
            persistent: false,
            restart: false,
            order_per_key: false,
            concurrent_keys: false,
            replay: false,
            ..Capabilities::all("limited-memory")
        };
        let backend = MemoryBackend::with(Faults::default(), caps);
        for name in [
            "restart",
            "order_per_key",
            "no_ack_holds_next",
            "new_subscriber_replays_history",
            "replay_from_offset_and_time",
            "publisher_close",
            "batch_publish",
        ] {
            let scenario = SCENARIOS.iter().find(|s| s.name == name).expect("known");
            (scenario.run)(&backend)
                .await
                .unwrap_or_else(|f| panic!("{f}"));
        }
    }
}
