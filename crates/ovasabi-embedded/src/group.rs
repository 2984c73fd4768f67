//! A consumer group: who gets which event next, what is in flight, what is acked.
//!
//! All of a group's state sits behind one mutex and every operation on it is synchronous,
//! so a member's `next()` either claims a delivery and returns it, or claims nothing: the
//! future can be dropped at any await without losing an event.
//!
//! Per topic the group keeps a cursor (the lowest unacked offset) and the offsets acked above
//! it; that pair is what the writer persists. Loaded events wait in two queues: `free` for
//! events that may go in any order (no partition key, or `Ordering::None`), and one queue per
//! partition key, of which only the head may be in flight. A key is *busy* while its head is
//! in flight, waiting for a redelivery, or on its way to the dead-letter topic.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ovasabi_core::{BusError, Ordering, TopicPattern};
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use crate::log::{Stored, TopicLog};
use crate::store::PositionSource;

/// Settings the group's members agreed on (the latest subscriber's win).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    pub(crate) ack_timeout: Duration,
    pub(crate) max_deliveries: u32,
    pub(crate) ordering: Ordering,
}

/// An event loaded for the group, with its delivery history.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) stored: Arc<Stored>,
    /// Deliveries so far; also the attempt number of the latest, so numbers never repeat.
    pub(crate) attempts: u32,
    /// Deliveries not counted against `max_deliveries`: their member left before its ack
    /// timeout, so the handler did not fail them.
    pub(crate) forgiven: u32,
    pub(crate) last_error: Option<String>,
}

impl Entry {
    /// Deliveries that count against `max_deliveries`.
    fn charged(&self) -> u32 {
        self.attempts - self.forgiven
    }
}

struct InFlight {
    entry: Entry,
    member: u64,
    attempt: u32,
    deadline: Instant,
}

#[derive(Default)]
struct KeyState {
    queue: VecDeque<Entry>,
    busy: bool,
    listed: bool,
}

/// The group's standing in one topic.
pub(crate) struct TopicCursor {
    pub(crate) log: Arc<TopicLog>,
    pub(crate) cursor: u64,
    acked: BTreeSet<u64>,
    next_fetch: u64,
    fetching: bool,
    free: VecDeque<Entry>,
    keys: HashMap<Arc<str>, KeyState>,
    runnable: VecDeque<Arc<str>>,
    loaded: usize,
    in_flight: HashMap<u64, InFlight>,
    deadlines: BinaryHeap<Reverse<(Instant, u64, u32)>>,
    retry: BTreeMap<(Instant, u64), Entry>,
    retry_at: HashMap<u64, Instant>,
    /// Offsets on their way to the dead-letter topic, with their partition key.
    dead_lettering: HashMap<u64, Option<Arc<str>>>,
    /// Callers of `dead_letter` waiting for a dead-letter write already under way.
    dead_letter_waiters: HashMap<u64, Vec<oneshot::Sender<Result<(), BusError>>>>,
    persist_waiters: Vec<oneshot::Sender<Result<(), BusError>>>,
    committing: Vec<oneshot::Sender<Result<(), BusError>>>,
    persist_queued: bool,
}

impl TopicCursor {
    pub(crate) fn new(log: Arc<TopicLog>, cursor: u64, acked: Vec<u64>) -> Self {
        let acked: BTreeSet<u64> = acked.into_iter().filter(|&o| o > cursor).collect();
        TopicCursor {
            log,
            cursor,
            acked,
            next_fetch: cursor,
            fetching: false,
            free: VecDeque::new(),
            keys: HashMap::new(),
            runnable: VecDeque::new(),
            loaded: 0,
            in_flight: HashMap::new(),
            deadlines: BinaryHeap::new(),
            retry: BTreeMap::new(),
            retry_at: HashMap::new(),
            dead_lettering: HashMap::new(),
            dead_letter_waiters: HashMap::new(),
            persist_waiters: Vec::new(),
            committing: Vec::new(),
            persist_queued: false,
        }
    }

    fn is_done(&self, offset: u64) -> bool {
        offset < self.cursor || self.acked.contains(&offset)
    }

    fn mark_acked(&mut self, offset: u64) {
        if offset < self.cursor {
            return;
        }
        if offset == self.cursor {
            self.cursor += 1;
            while self.acked.remove(&self.cursor) {
                self.cursor += 1;
            }
        } else {
            self.acked.insert(offset);
        }
    }

    /// Moves the position to `offset`, forgetting everything loaded (a replay).
    pub(crate) fn seek(&mut self, offset: u64) {
        self.cursor = offset;
        self.acked.clear();
        self.next_fetch = offset;
        self.free.clear();
        self.keys.clear();
        self.runnable.clear();
        self.loaded = 0;
        self.in_flight.clear();
        self.deadlines.clear();
        self.retry.clear();
        self.retry_at.clear();
    }

    fn load(&mut self, stored: Arc<Stored>, ordering: Ordering) {
        if self.is_done(stored.offset) {
            return;
        }
        let entry = Entry {
            stored,
            attempts: 0,
            forgiven: 0,
            last_error: None,
        };
        self.loaded += 1;
        match (&entry.stored.key, ordering) {
            (Some(key), Ordering::PerKey) => {
                let key = key.clone();
                let ks = self.keys.entry(key.clone()).or_default();
                ks.queue.push_back(entry);
                if !ks.busy && !ks.listed {
                    ks.listed = true;
                    self.runnable.push_back(key);
                }
            }
            _ => self.free.push_back(entry),
        }
    }

    /// Puts an entry back at the front of its queue, ready now.
    fn requeue(&mut self, entry: Entry, ordering: Ordering) {
        self.loaded += 1;
        match (&entry.stored.key, ordering) {
            (Some(key), Ordering::PerKey) => {
                let key = key.clone();
                let ks = self.keys.entry(key.clone()).or_default();
                ks.queue.push_front(entry);
                ks.busy = false;
                if !ks.listed {
                    ks.listed = true;
                    self.runnable.push_front(key);
                }
            }
            _ => self.free.push_front(entry),
        }
    }

    /// The entry's key is no longer busy: its next event may go.
    fn release_key(&mut self, key: &Option<Arc<str>>, ordering: Ordering) {
        let (Some(key), Ordering::PerKey) = (key, ordering) else {
            return;
        };
        if let Some(ks) = self.keys.get_mut(key) {
            ks.busy = false;
            if ks.queue.is_empty() {
                if !ks.listed {
                    self.keys.remove(key);
                }
            } else if !ks.listed {
                ks.listed = true;
                self.runnable.push_back(key.clone());
            }
        }
    }

    /// Removes a loaded, queued entry (not in flight). Its key stays busy until the caller
    /// settles it, so the key's next event waits, as it would behind a delivery.
    fn extract_queued(&mut self, offset: u64, ordering: Ordering) -> Option<Entry> {
        if let Some(i) = self.free.iter().position(|e| e.stored.offset == offset) {
            self.loaded -= 1;
            return self.free.remove(i);
        }
        let key = self
            .keys
            .iter()
            .find(|(_, ks)| ks.queue.iter().any(|e| e.stored.offset == offset))
            .map(|(k, _)| k.clone())?;
        let ks = self.keys.get_mut(&key)?;
        let i = ks.queue.iter().position(|e| e.stored.offset == offset)?;
        let entry = ks.queue.remove(i)?;
        self.loaded -= 1;
        if ordering == Ordering::PerKey {
            ks.busy = true;
            if ks.listed {
                ks.listed = false;
                self.runnable.retain(|k| k != &key);
            }
        }
        Some(entry)
    }

    /// Takes the next deliverable entry, lowest offset first between the two queues.
    fn take(&mut self) -> Option<Entry> {
        loop {
            let free_off = self.free.front().map(|e| e.stored.offset);
            let key_off = self
                .runnable
                .front()
                .and_then(|k| self.keys.get(k))
                .and_then(|ks| ks.queue.front())
                .map(|e| e.stored.offset);
            let from_free = match (free_off, key_off) {
                (None, None) => {
                    // A listed key whose queue emptied (its entries were acked late).
                    if let Some(k) = self.runnable.pop_front() {
                        if let Some(ks) = self.keys.get_mut(&k) {
                            ks.listed = false;
                            if ks.queue.is_empty() && !ks.busy {
                                self.keys.remove(&k);
                            }
                        }
                        continue;
                    }
                    return None;
                }
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some(f), Some(k)) => f < k,
            };
            if from_free {
                let entry = self.free.pop_front()?;
                self.loaded -= 1;
                if self.is_done(entry.stored.offset) {
                    continue;
                }
                return Some(entry);
            }
            let key = self.runnable.pop_front()?;
            let ks = self.keys.get_mut(&key)?;
            ks.listed = false;
            let Some(entry) = ks.queue.pop_front() else {
                continue;
            };
            self.loaded -= 1;
            let done =
                entry.stored.offset < self.cursor || self.acked.contains(&entry.stored.offset);
            let ks = self.keys.get_mut(&key)?;
            if done {
                if !ks.queue.is_empty() {
                    ks.listed = true;
                    self.runnable.push_front(key);
                } else if !ks.busy {
                    self.keys.remove(&key);
                }
                continue;
            }
            ks.busy = true;
            return Some(entry);
        }
    }
}

/// What a member's `next()` should do when nothing is ready.
pub(crate) struct FetchJob {
    pub(crate) topic: usize,
    pub(crate) log: Arc<TopicLog>,
    pub(crate) from: u64,
    pub(crate) limit: usize,
}

/// An event that must go to the dead-letter topic.
pub(crate) struct DeadLetterJob {
    pub(crate) topic: usize,
    pub(crate) entry: Entry,
    pub(crate) reason: String,
}

/// What an explicit dead-letter request found.
pub(crate) enum DeadLetterTake {
    /// The entry, now marked as on its way to the dead-letter topic.
    Take(Entry),
    /// Already acked or dead-lettered for the group.
    Done,
    /// A dead-letter write of it is under way; this answers when it is durable.
    Pending(oneshot::Receiver<Result<(), BusError>>),
    /// The group does not hold it (a replay moved the group past it).
    NotHeld,
}

/// A delivery claimed by a member.
pub(crate) struct Claimed {
    pub(crate) stored: Arc<Stored>,
    pub(crate) topic_name: String,
    pub(crate) attempt: u32,
}

struct Member {
    patterns: Arc<[TopicPattern]>,
    in_flight: usize,
    max_in_flight: usize,
}

/// The group's state behind its mutex.
pub(crate) struct GroupState {
    pub(crate) settings: Settings,
    pub(crate) topics: Vec<TopicCursor>,
    pub(crate) index: HashMap<String, usize>,
    members: HashMap<u64, Member>,
    next_member: u64,
    rr: usize,
    pub(crate) closed: bool,
}

/// A consumer group.
pub(crate) struct Group {
    pub(crate) name: String,
    pub(crate) durable: bool,
    pub(crate) notify: Arc<Notify>,
    pub(crate) state: Mutex<GroupState>,
}

/// How many events a group loads ahead of its deliveries, per topic.
const PREFETCH: usize = 4096;
/// How many events one read from disk brings.
pub(crate) const READ_BATCH: usize = 2048;

impl Group {
    pub(crate) fn new(name: String, durable: bool, settings: Settings) -> Self {
        Group {
            name,
            durable,
            notify: Arc::new(Notify::new()),
            state: Mutex::new(GroupState {
                settings,
                topics: Vec::new(),
                index: HashMap::new(),
                members: HashMap::new(),
                next_member: 1,
                rr: 0,
                closed: false,
            }),
        }
    }

    /// Whether any member's patterns match `topic`.
    pub(crate) fn wants(&self, topic: &str) -> bool {
        let st = self.state.lock().unwrap();
        st.members
            .values()
            .any(|m| m.patterns.iter().any(|p| p.matches(topic)))
    }

    pub(crate) fn add_member(&self, patterns: Vec<TopicPattern>, max_in_flight: usize) -> u64 {
        let mut st = self.state.lock().unwrap();
        let id = st.next_member;
        st.next_member += 1;
        st.members.insert(
            id,
            Member {
                patterns: patterns.into(),
                in_flight: 0,
                max_in_flight,
            },
        );
        id
    }

    /// Removes a member; its unacked deliveries go back to the group at once. Returns
    /// whether members remain.
    pub(crate) fn remove_member(&self, member: u64) -> bool {
        let mut st = self.state.lock().unwrap();
        st.members.remove(&member);
        let now = Instant::now();
        for tc in &mut st.topics {
            let mine: Vec<u64> = tc
                .in_flight
                .iter()
                .filter(|(_, f)| f.member == member)
                .map(|(o, _)| *o)
                .collect();
            for offset in mine {
                if let Some(f) = tc.in_flight.remove(&offset) {
                    // Due for redelivery now, under the next attempt number (numbers never
                    // repeat, so a stale deadline or a late nack of this delivery can never be
                    // mistaken for the next holder's). The delivery is not held against the
                    // event unless its ack timeout had already passed; one out of attempts
                    // goes to the dead-letter topic when the queue is next drained.
                    let mut entry = f.entry;
                    if f.deadline > now {
                        entry.forgiven += 1;
                    }
                    tc.retry_at.insert(offset, now);
                    tc.retry.insert((now, offset), entry);
                }
            }
        }
        let remaining = !st.members.is_empty();
        drop(st);
        self.notify.notify_waiters();
        remaining
    }
}

impl GroupState {
    /// Handles expired ack timeouts and due redeliveries; returns events to dead-letter.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<DeadLetterJob> {
        let settings = self.settings;
        let mut jobs = Vec::new();
        for (ti, tc) in self.topics.iter_mut().enumerate() {
            while let Some(Reverse((deadline, offset, attempt))) = tc.deadlines.peek().copied() {
                if deadline > now {
                    break;
                }
                tc.deadlines.pop();
                if tc
                    .in_flight
                    .get(&offset)
                    .is_none_or(|f| f.attempt != attempt)
                {
                    continue;
                }
                let f = tc.in_flight.remove(&offset).expect("checked above");
                if let Some(m) = self.members.get_mut(&f.member) {
                    m.in_flight -= 1;
                }
                let mut entry = f.entry;
                if entry.last_error.is_none() {
                    entry.last_error = Some(format!(
                        "not acked within the ack timeout ({:?})",
                        settings.ack_timeout
                    ));
                }
                if let Some(job) = redeliver(tc, ti, entry, Duration::ZERO, now, settings) {
                    jobs.push(job);
                }
            }
            while let Some((&(at, offset), _)) = tc.retry.first_key_value() {
                if at > now {
                    break;
                }
                let entry = tc.retry.remove(&(at, offset)).expect("present");
                tc.retry_at.remove(&offset);
                if let Some(job) = redeliver(tc, ti, entry, Duration::ZERO, now, settings) {
                    jobs.push(job);
                }
            }
        }
        jobs
    }

    /// The earliest timer: an ack deadline or a redelivery.
    pub(crate) fn next_timer(&self) -> Option<Instant> {
        self.topics
            .iter()
            .flat_map(|tc| {
                let d = tc.deadlines.peek().map(|Reverse((d, _, _))| *d);
                let r = tc.retry.first_key_value().map(|((at, _), _)| *at);
                d.into_iter().chain(r)
            })
            .min()
    }

    /// Claims a delivery for `member`, refilling from the cached log as needed; when the
    /// next events are only on disk, returns the jobs that read them (one per topic).
    pub(crate) fn claim(&mut self, member: u64, now: Instant) -> (Option<Claimed>, Vec<FetchJob>) {
        let Some(m) = self.members.get(&member) else {
            return (None, Vec::new());
        };
        if m.in_flight >= m.max_in_flight {
            return (None, Vec::new());
        }
        let patterns = Arc::clone(&m.patterns);
        let settings = self.settings;
        let n = self.topics.len();
        let mut fetch = Vec::new();
        for step in 0..n {
            let ti = (self.rr + step) % n;
            let tc = &mut self.topics[ti];
            if !patterns.iter().any(|p| p.matches(&tc.log.name)) {
                continue;
            }
            if let Some(job) = refill(tc, ti, settings.ordering) {
                fetch.push(job);
            }
            if let Some(mut entry) = tc.take() {
                entry.attempts += 1;
                let attempt = entry.attempts;
                let stored = entry.stored.clone();
                let deadline = now + settings.ack_timeout;
                tc.deadlines
                    .push(Reverse((deadline, stored.offset, attempt)));
                tc.in_flight.insert(
                    stored.offset,
                    InFlight {
                        entry,
                        member,
                        attempt,
                        deadline,
                    },
                );
                let topic_name = tc.log.name.clone();
                self.rr = (ti + 1) % n;
                if let Some(m) = self.members.get_mut(&member) {
                    m.in_flight += 1;
                }
                // A disk read planned by this refill must still run, or `fetching` stays set.
                return (
                    Some(Claimed {
                        stored,
                        topic_name,
                        attempt,
                    }),
                    fetch,
                );
            }
        }
        (None, fetch)
    }

    /// Loads events read from disk by a [`FetchJob`].
    pub(crate) fn fetched(&mut self, topic: usize, from: u64, events: Vec<Arc<Stored>>) {
        let ordering = self.settings.ordering;
        let Some(tc) = self.topics.get_mut(topic) else {
            return;
        };
        tc.fetching = false;
        if tc.next_fetch != from {
            return; // a seek moved the cursor meanwhile
        }
        for s in events {
            if s.offset < tc.next_fetch {
                continue;
            }
            tc.next_fetch = s.offset + 1;
            tc.load(s, ordering);
        }
    }

    pub(crate) fn fetch_failed(&mut self, topic: usize) {
        if let Some(tc) = self.topics.get_mut(topic) {
            tc.fetching = false;
        }
    }

    /// Takes `offset` out of flight or out of the redelivery queue, wherever it is.
    fn settle(&mut self, topic: usize, offset: u64) -> Option<Entry> {
        let tc = &mut self.topics[topic];
        if let Some(f) = tc.in_flight.remove(&offset) {
            if let Some(m) = self.members.get_mut(&f.member) {
                m.in_flight -= 1;
            }
            return Some(f.entry);
        }
        if let Some(at) = tc.retry_at.remove(&offset) {
            return tc.retry.remove(&(at, offset));
        }
        None
    }

    /// Acks `offset`. Returns whether the group's position changed (it must be persisted).
    pub(crate) fn ack(&mut self, topic: usize, offset: u64) -> bool {
        let ordering = self.settings.ordering;
        let tc = &self.topics[topic];
        if tc.is_done(offset) || tc.dead_lettering.contains_key(&offset) {
            return false;
        }
        let entry = self.settle(topic, offset);
        let tc = &mut self.topics[topic];
        tc.mark_acked(offset);
        if let Some(entry) = entry {
            tc.release_key(&entry.stored.key, ordering);
        }
        true
    }

    /// Nacks the delivery `attempt` of `offset`: redeliver after `delay`.
    pub(crate) fn nack(
        &mut self,
        topic: usize,
        offset: u64,
        attempt: u32,
        delay: Duration,
        error: Option<String>,
        now: Instant,
    ) -> Option<DeadLetterJob> {
        let settings = self.settings;
        let tc = &mut self.topics[topic];
        if tc
            .in_flight
            .get(&offset)
            .is_none_or(|f| f.attempt != attempt)
        {
            return None; // a stale delivery: the event was redelivered or is done
        }
        let f = tc.in_flight.remove(&offset).expect("checked above");
        if let Some(m) = self.members.get_mut(&f.member) {
            m.in_flight -= 1;
        }
        let mut entry = f.entry;
        if error.is_some() {
            entry.last_error = error;
        }
        redeliver(&mut self.topics[topic], topic, entry, delay, now, settings)
    }

    /// Takes `offset` for an explicit dead-letter, wherever the group holds it: in flight,
    /// waiting for a redelivery, or back in its queue (its subscription closed, or its ack
    /// timeout passed, before the handler decided).
    pub(crate) fn take_for_dead_letter(
        &mut self,
        topic: usize,
        offset: u64,
        error: Option<String>,
    ) -> DeadLetterTake {
        let ordering = self.settings.ordering;
        let tc = &mut self.topics[topic];
        if tc.is_done(offset) {
            return DeadLetterTake::Done;
        }
        if tc.dead_lettering.contains_key(&offset) {
            let (tx, rx) = oneshot::channel();
            tc.dead_letter_waiters.entry(offset).or_default().push(tx);
            return DeadLetterTake::Pending(rx);
        }
        let entry = match self.settle(topic, offset) {
            Some(entry) => Some(entry),
            None => self.topics[topic].extract_queued(offset, ordering),
        };
        let Some(mut entry) = entry else {
            return DeadLetterTake::NotHeld;
        };
        if error.is_some() {
            entry.last_error = error;
        }
        let key = entry.stored.key.clone();
        self.topics[topic].dead_lettering.insert(offset, key);
        DeadLetterTake::Take(entry)
    }

    /// The dead-letter write of an entry failed: try it again in a second.
    pub(crate) fn dead_letter_failed(
        &mut self,
        topic: usize,
        entry: Entry,
        now: Instant,
        error: &BusError,
    ) {
        let tc = &mut self.topics[topic];
        let offset = entry.stored.offset;
        tc.dead_lettering.remove(&offset);
        for w in tc.dead_letter_waiters.remove(&offset).unwrap_or_default() {
            let _ = w.send(Err(BusError::Storage(error.to_string())));
        }
        let at = now + Duration::from_secs(1);
        tc.retry_at.insert(offset, at);
        tc.retry.insert((at, offset), entry);
    }

    /// Fails every waiter of a persist or a dead-letter: the bus is closed and their writes
    /// will never come.
    pub(crate) fn fail_waiters(&mut self) {
        for tc in &mut self.topics {
            tc.persist_queued = false;
            for w in tc.persist_waiters.drain(..).chain(tc.committing.drain(..)) {
                let _ = w.send(Err(BusError::Closed));
            }
            for (_, ws) in tc.dead_letter_waiters.drain() {
                for w in ws {
                    let _ = w.send(Err(BusError::Closed));
                }
            }
        }
    }

    /// A persist command could not be sent: answer the waiters that relied on it.
    pub(crate) fn persist_not_sent(&mut self, topic: usize) {
        let tc = &mut self.topics[topic];
        tc.persist_queued = false;
        for w in tc.persist_waiters.drain(..) {
            let _ = w.send(Err(BusError::Closed));
        }
    }

    /// Queues `waiter` for the next persist of `topic`; returns whether a persist command
    /// must be sent (none is queued yet).
    pub(crate) fn wait_persist(
        &mut self,
        topic: usize,
        waiter: oneshot::Sender<Result<(), BusError>>,
    ) -> bool {
        let tc = &mut self.topics[topic];
        tc.persist_waiters.push(waiter);
        !std::mem::replace(&mut tc.persist_queued, true)
    }

    /// Counts unacked events of a topic (for lag).
    pub(crate) fn lag(&self, topic: usize) -> u64 {
        let tc = &self.topics[topic];
        let next = tc.log.range().1;
        next.saturating_sub(tc.cursor)
            .saturating_sub(tc.acked.len() as u64)
    }
}

/// Loads more events into `tc` from the cache; returns a disk read when the cache does not
/// reach back far enough.
fn refill(tc: &mut TopicCursor, ti: usize, ordering: Ordering) -> Option<FetchJob> {
    if tc.loaded >= PREFETCH / 2 || tc.fetching {
        return None;
    }
    let st = tc.log.state.lock().unwrap();
    if tc.next_fetch < st.first_offset {
        // Retention removed events the group had not read: continue from the oldest kept.
        let first = st.first_offset;
        tc.next_fetch = first;
        if tc.cursor < first {
            tc.cursor = first;
            tc.acked.retain(|&o| o > first);
        }
    }
    if tc.next_fetch >= st.next_offset {
        return None;
    }
    let want = PREFETCH - tc.loaded;
    match st.cached_from(tc.next_fetch, want) {
        Some(events) => {
            drop(st);
            for s in events {
                tc.next_fetch = s.offset + 1;
                tc.load(s, ordering);
            }
            None
        }
        None => {
            drop(st);
            tc.fetching = true;
            Some(FetchJob {
                topic: ti,
                log: tc.log.clone(),
                from: tc.next_fetch,
                limit: READ_BATCH.min(want),
            })
        }
    }
}

fn redeliver(
    tc: &mut TopicCursor,
    ti: usize,
    entry: Entry,
    delay: Duration,
    now: Instant,
    settings: Settings,
) -> Option<DeadLetterJob> {
    if entry.charged() >= settings.max_deliveries {
        tc.dead_lettering
            .insert(entry.stored.offset, entry.stored.key.clone());
        return Some(DeadLetterJob {
            topic: ti,
            reason: format!(
                "max deliveries reached ({} of {})",
                entry.charged(),
                settings.max_deliveries
            ),
            entry,
        });
    }
    if delay.is_zero() {
        tc.requeue(entry, settings.ordering);
    } else {
        let at = now + delay;
        tc.retry_at.insert(entry.stored.offset, at);
        tc.retry.insert((at, entry.stored.offset), entry);
    }
    None
}

/// The writer's view of one group's position in one topic.
pub(crate) struct PositionHandle {
    pub(crate) group: Arc<Group>,
    pub(crate) topic: usize,
    pub(crate) topic_id: i64,
}

impl PositionSource for PositionHandle {
    fn key(&self) -> (&str, i64) {
        (&self.group.name, self.topic_id)
    }

    fn durable(&self) -> bool {
        self.group.durable
    }

    fn snapshot(&self, extra: &[u64]) -> (u64, Vec<u64>) {
        let mut st = self.group.state.lock().unwrap();
        let tc = &mut st.topics[self.topic];
        tc.persist_queued = false;
        let waiters = std::mem::take(&mut tc.persist_waiters);
        tc.committing.extend(waiters);
        if extra.is_empty() {
            return (tc.cursor, tc.acked.iter().copied().collect());
        }
        // Offsets dead-lettered in this transaction count as acked in what is written.
        let mut cursor = tc.cursor;
        let mut acked: BTreeSet<u64> = tc.acked.clone();
        acked.extend(extra.iter().copied().filter(|&o| o >= cursor));
        while acked.remove(&cursor) {
            cursor += 1;
        }
        (cursor, acked.into_iter().collect())
    }

    fn committed(&self, extra: &[u64], result: &Result<(), String>) {
        let waiters = {
            let mut st = self.group.state.lock().unwrap();
            let ordering = st.settings.ordering;
            match st.topics.get_mut(self.topic) {
                Some(tc) => {
                    if result.is_ok() {
                        // Dead-lettered offsets count as acked from the same transaction on,
                        // so no later snapshot can write a position without them.
                        for &o in extra {
                            if let Some(key) = tc.dead_lettering.remove(&o) {
                                tc.mark_acked(o);
                                tc.release_key(&key, ordering);
                            }
                            for w in tc.dead_letter_waiters.remove(&o).unwrap_or_default() {
                                let _ = w.send(Ok(()));
                            }
                        }
                    }
                    let mut w = std::mem::take(&mut tc.committing);
                    if result.is_err() {
                        // Acks queued after the snapshot still need their own write.
                        w.append(&mut tc.persist_waiters);
                        tc.persist_queued = false;
                    }
                    w
                }
                None => Vec::new(),
            }
        };
        for w in waiters {
            let _ = w.send(result.clone().map_err(BusError::Storage));
        }
        if !extra.is_empty() {
            self.group.notify.notify_waiters();
        }
    }
}
