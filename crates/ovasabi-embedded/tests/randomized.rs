//! Seeded randomized (model-based) test of the embedded bus's consumer groups.
//!
//! Each run opens a bus on a fresh directory and lets several publishers (single and batch
//! publishes, a few partition keys, some unkeyed events, two topics) race 2–4 competing
//! subscription slots of one group. Every delivery gets a random fate: acked, acked after a
//! while, nacked (with a small delay and error text), dead-lettered, held past the ack
//! timeout and then acked (or dead-lettered) late, or dropped. Subscriptions are closed or
//! dropped and replaced, `next()` futures are cancelled, and the whole bus is closed and
//! reopened on the same directory between phases (a restart).
//!
//! Everything the test sees goes into a [`Model`] (a trace with a global sequence number):
//! hand-outs, the start and end of every ack/nack/dead-letter call, subscriptions leaving,
//! restarts. Checks made at every hand-out:
//! - nothing is delivered after an ack or dead-letter of it returned `Ok`;
//! - an event is not delivered while an earlier delivery of it is still in flight (not
//!   settled, its subscription still there, its ack timeout not yet expired);
//! - under `Ordering::PerKey`, no two events of one key are in flight at once, and within
//!   one bus lifetime a key's deliveries follow publish (offset) order;
//! - a subscription never holds more than `max_in_flight` live deliveries;
//! - attempts start at 1 and grow by one per redelivery (only a delivery given back by a
//!   leaving subscription before its ack timeout may be handed out again with its number).
//!
//! Checks made at the end, after everything settled:
//! - the group's lag is 0 and its position is the topic's end, on every topic;
//! - every published event is either acked (and not in `<topic>.dlq`) or in `<topic>.dlq`
//!   exactly once with correct `deadletter*` extensions; an ack that returned `Ok` before
//!   anything could dead-letter the event means it must not be in the DLQ; a dead-letter
//!   call that returned `Ok` means it must be there (unless it was acked first);
//! - under `PerKey`, an event's first delivery comes after every earlier event of its key
//!   was acked or dead-lettered (so first completions follow publish order).
//!
//! Tests: `random_runs_per_key` and `random_runs_unordered` run the steady mix (see
//! [`Mix`]); `random_runs_hot_churn`, `random_runs_late_dead_letters` and
//! `random_runs_calls_racing_close` widen it. The `repro_*` tests pin, one each, the bugs
//! this test found and that were fixed: stale deadlines and nacks of a departed member's
//! delivery hitting the redelivery, `dead_letter` returning `Ok` without dead-lettering an
//! event back in its queue or before a write under way was durable, and an ack racing
//! `Bus::close` waiting forever.
//!
//! Thread timing is not reproducible, but the seed fixes every random choice. To rerun one
//! seed: `OVASABI_SEED=<seed> cargo test -p ovasabi-embedded --test randomized <test>`; to
//! hunt longer: `OVASABI_SEEDS=1-200 ...` (the seeds of a test run side by side).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ovasabi_core::naming::dead_letter_topic;
use ovasabi_core::{
    Bus, DeadLetter, Delivery, Event, Ordering, Publisher, SubscribeOptions, Subscriber,
    Subscription,
};
use ovasabi_embedded::{EmbeddedBus, EmbeddedConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};

const TOPICS: [&str; 2] = ["rnd.alpha", "rnd.beta"];
const KEYS: [&str; 5] = ["k0", "k1", "k2", "k3", "k4"];
const GROUP: &str = "g";
const ACK_TIMEOUT: Duration = Duration::from_millis(200);
const MAX_DELIVERIES: u32 = 3;
/// Tolerance for timing-based judgements (recording a hand-out or a call is not atomic with
/// the bus's own clock reading).
const SLACK: Duration = Duration::from_millis(60);
/// How long the final phase may take to bring every event to an outcome.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);
/// The reason and error the handlers give for explicit dead-letters.
const GAVE_UP: &str = "handler gave up";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// An event's place: (index into [`TOPICS`], offset).
type Ev = (usize, u64);

/// What a run exercises.
#[derive(Clone, Copy, Debug)]
struct Mix {
    ordering: Ordering,
    /// Close and reopen the bus between phases.
    restarts: bool,
    /// Let subscriptions leave while they still hold unsettled deliveries. Without it a
    /// subscription leaves only once each of its deliveries was settled by a call that
    /// returned, or expired while the subscription was still polling.
    hot_churn: bool,
    /// Some handlers dead-letter after holding the delivery past its ack timeout. Without
    /// it, a dead-letter that is late anyway (the handler task was slow to run) becomes an
    /// ack.
    late_dead_letters: bool,
    /// Let ack/nack/dead-letter calls and `subscribe` race `Bus::close` at a restart.
    /// Without it, a restart waits for the calls under way and holds new ones back until
    /// the bus is closed (they then fail with `Closed`); deliveries stay held either way.
    racy_close: bool,
}

impl Mix {
    fn steady(ordering: Ordering) -> Self {
        Mix {
            ordering,
            restarts: true,
            hot_churn: false,
            late_dead_letters: false,
            racy_close: false,
        }
    }
}

/// What a handler does with one delivery.
#[derive(Clone, Copy, Debug)]
enum Action {
    Ack {
        after: Duration,
    },
    Nack {
        after: Duration,
        delay: Duration,
        error: bool,
    },
    DeadLetter {
        after: Duration,
    },
    /// Held past the ack timeout, then acked.
    AckLate {
        after: Duration,
    },
    /// Held past the ack timeout, then dead-lettered.
    DeadLetterLate {
        after: Duration,
    },
    /// Never settled.
    Drop,
}

impl Action {
    fn pick(rng: &mut StdRng, mix: Mix) -> Action {
        let late = ACK_TIMEOUT + ms(rng.gen_range(80..200));
        match rng.gen_range(0..100) {
            0..=44 => Action::Ack {
                after: ms(rng.gen_range(0..40)),
            },
            45..=54 => Action::Ack {
                after: ms(rng.gen_range(40..100)),
            },
            55..=74 => Action::Nack {
                after: ms(rng.gen_range(0..30)),
                delay: ms(rng.gen_range(0..40)),
                error: rng.gen_bool(0.7),
            },
            75..=78 => Action::DeadLetter {
                after: ms(rng.gen_range(0..30)),
            },
            79..=89 if mix.late_dead_letters && rng.gen_bool(0.5) => {
                Action::DeadLetterLate { after: late }
            }
            79..=89 => Action::AckLate { after: late },
            _ => Action::Drop,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Ack,
    Nack,
    DeadLetter,
}

/// One delivery handed to a subscription.
struct Handout {
    epoch: u32,
    sub: usize,
    ev: Ev,
    key: Option<String>,
    id: String,
    attempt: u32,
    seq: u64,
    at: Instant,
    utc: DateTime<Utc>,
    dropped: bool,
    /// The first ack/nack/dead-letter call made on this delivery.
    first_call: Option<usize>,
}

/// One ack/nack/dead-letter call.
struct Call {
    handout: usize,
    op: Op,
    start_seq: u64,
    start: Instant,
    end: Option<(Instant, Result<(), String>)>,
}

/// One subscription (member of the group).
struct Sub {
    epoch: u32,
    max_in_flight: usize,
    gone: Option<Instant>,
    /// When it last entered `next()` (which first expires overdue deliveries).
    last_poll: Option<Instant>,
}

/// One record read back from a dead-letter topic.
#[derive(Debug)]
struct DlqRecord {
    published_at: DateTime<Utc>,
    reason: String,
    error: Option<String>,
    attempts: u32,
    id: String,
}

#[derive(Debug, Default)]
struct Stats {
    published: usize,
    deliveries: usize,
    redeliveries: usize,
    acks: usize,
    nacks: usize,
    dead_letter_calls: usize,
    /// Calls made after the delivery's ack timeout.
    late_calls: usize,
    /// Events in the DLQ at the end.
    dead_lettered: usize,
    subscriptions: usize,
    restarts: usize,
    cancelled_polls: usize,
    /// Late acks that returned `Ok` for an event the bus dead-lettered anyway (allowed: the
    /// ack came after the event's last delivery had timed out).
    late_acks_absorbed: usize,
}

/// The first ack or dead-letter call of an event that returned `Ok`.
#[derive(Clone, Copy)]
struct DoneOk {
    epoch: u32,
    returned: Instant,
    op: Op,
    /// The call's delivery: its attempt, and how long after its hand-out the call started.
    attempt: u32,
    held: Duration,
}

/// Everything the test saw, and the invariants checked on it.
struct Model {
    mix: Mix,
    seq: u64,
    published: BTreeMap<Ev, (String, Option<String>)>,
    handouts: Vec<Handout>,
    calls: Vec<Call>,
    subs: Vec<Sub>,
    /// Events an ack or dead-letter call was started for, per bus lifetime.
    completing: HashSet<(u32, Ev)>,
    /// The first ack or dead-letter call that returned `Ok`, per event.
    done_ok: HashMap<Ev, DoneOk>,
    /// Per bus lifetime, topic and key: the highest offset handed out so far.
    key_high: HashMap<(u32, usize, String), u64>,
    violations: Vec<String>,
    stats: Stats,
}

impl Model {
    fn new(mix: Mix) -> Self {
        Model {
            mix,
            seq: 0,
            published: BTreeMap::new(),
            handouts: Vec::new(),
            calls: Vec::new(),
            subs: Vec::new(),
            completing: HashSet::new(),
            done_ok: HashMap::new(),
            key_high: HashMap::new(),
            violations: Vec::new(),
            stats: Stats::default(),
        }
    }

    fn tick(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn violation(&mut self, text: String) {
        if self.violations.len() < 50 {
            self.violations.push(text);
        }
    }

    fn sub_joined(&mut self, epoch: u32, max_in_flight: usize) -> usize {
        self.stats.subscriptions += 1;
        self.subs.push(Sub {
            epoch,
            max_in_flight,
            gone: None,
            last_poll: None,
        });
        self.subs.len() - 1
    }

    fn polling(&mut self, sub: usize) {
        self.subs[sub].last_poll = Some(Instant::now());
    }

    fn sub_left(&mut self, sub: usize) {
        self.subs[sub].gone.get_or_insert_with(Instant::now);
    }

    /// Whether delivery `p` came back because its subscription left before its ack timeout,
    /// with no call made on it before then.
    fn returned_by_leave(&self, p: &Handout) -> bool {
        self.subs[p.sub].gone.is_some_and(|g| {
            g < p.at + ACK_TIMEOUT + SLACK && p.first_call.is_none_or(|c| self.calls[c].start > g)
        })
    }

    /// Whether delivery `h` is in flight from the bus's point of view at `at`, in `epoch`,
    /// by every account the test has: no call made on it, its subscription still there, its
    /// event not being acked or dead-lettered, and its ack timeout surely not expired.
    fn live(&self, h: &Handout, epoch: u32, at: Instant) -> bool {
        h.epoch == epoch
            && h.first_call.is_none()
            && self.subs[h.sub].gone.is_none()
            && h.at + ACK_TIMEOUT > at + SLACK
            && !self.completing.contains(&(epoch, h.ev))
    }

    /// Records a delivery and checks it against everything seen so far; returns its index
    /// (`None` for a delivery from a topic the test does not know, itself a violation).
    fn handout(&mut self, epoch: u32, sub: usize, d: &Delivery, dropped: bool) -> Option<usize> {
        let at = Instant::now();
        let utc = Utc::now();
        let seq = self.tick();
        let info = d.info();
        let Some(topic) = TOPICS.iter().position(|t| *t == info.topic) else {
            self.violation(format!("delivered from unexpected topic {}", info.topic));
            return None;
        };
        let ev = (topic, info.offset);
        let key = d.event().partition_key().map(str::to_owned);
        let name = describe(ev, info.attempt);
        self.stats.deliveries += 1;
        if info.attempt > 1 {
            self.stats.redeliveries += 1;
        }
        if info.group != GROUP {
            self.violation(format!("{name} names group {}", info.group));
        }
        // Deliveries whose subscription left before their ack timeout are not held against
        // the event: only the others count towards max_deliveries.
        let forgiven = self
            .handouts
            .iter()
            .filter(|p| p.epoch == epoch && p.ev == ev && self.returned_by_leave(p))
            .count() as u32;
        if info.attempt == 0 || info.attempt > MAX_DELIVERIES + forgiven {
            self.violation(format!(
                "{name}: attempt outside 1..={} (max_deliveries {MAX_DELIVERIES} plus {forgiven} deliveries returned by a leaving subscription)",
                MAX_DELIVERIES + forgiven
            ));
        }
        if let Some(done) = self.done_ok.get(&ev).copied() {
            if done.epoch < epoch || at > done.returned + SLACK {
                self.violation(format!(
                    "{name} delivered {:?} after a {:?} of it returned Ok (bus lifetime {} -> {epoch}; that call was made on attempt {}, {:?} after its hand-out)",
                    at.saturating_duration_since(done.returned),
                    done.op,
                    done.epoch,
                    done.attempt,
                    done.held,
                ));
            }
        }

        // Attempts: 1 first, then one more per delivery; numbers never repeat.
        let previous = self
            .handouts
            .iter()
            .rev()
            .find(|p| p.epoch == epoch && p.ev == ev);
        match previous {
            None if info.attempt != 1 => self.violation(format!(
                "{name} is the first delivery of the event since the bus opened, expected attempt 1"
            )),
            None => {}
            Some(p) => {
                let ok = info.attempt == p.attempt + 1;
                if !ok {
                    let text = format!(
                        "{name} follows attempt {} (handed out {:?} earlier to subscription {}{}): attempt not increased by one",
                        p.attempt,
                        at.saturating_duration_since(p.at),
                        p.sub,
                        if self.subs[p.sub].gone.is_some() { ", which has left" } else { "" },
                    );
                    self.violation(text);
                }
            }
        }

        // In-flight overlaps and the in-flight bound.
        let mut mine = 1;
        let mut overlaps = Vec::new();
        for (i, y) in self.handouts.iter().enumerate() {
            if !self.live(y, epoch, at) {
                continue;
            }
            if y.sub == sub {
                mine += 1;
            }
            let what = if y.ev == ev {
                "the same event"
            } else if self.mix.ordering == Ordering::PerKey
                && key.is_some()
                && y.key == key
                && y.ev.0 == ev.0
            {
                "an event of the same key"
            } else {
                continue;
            };
            overlaps.push(format!(
                "{name} (key {key:?}) handed out while {what}, {} (delivery #{i}, subscription {}), was still in flight: handed out {:?} earlier, ack timeout {ACK_TIMEOUT:?}, not settled",
                describe(y.ev, y.attempt),
                y.sub,
                at.saturating_duration_since(y.at)
            ));
        }
        for o in overlaps {
            self.violation(o);
        }
        let max = self.subs[sub].max_in_flight;
        if mine > max {
            self.violation(format!(
                "{name}: subscription {sub} now holds {mine} live deliveries, max_in_flight is {max}"
            ));
        }

        // Per-key publish order within one bus lifetime.
        if let (Ordering::PerKey, Some(k)) = (self.mix.ordering, &key) {
            let high = self.key_high.entry((epoch, ev.0, k.clone())).or_insert(0);
            if ev.1 < *high {
                let high = *high;
                self.violation(format!(
                    "{name} (key {k}) delivered after offset {high} of the same key: out of publish order"
                ));
            } else {
                *high = ev.1;
            }
        }

        self.handouts.push(Handout {
            epoch,
            sub,
            ev,
            key,
            id: d.event().id.clone(),
            attempt: info.attempt,
            seq,
            at,
            utc,
            dropped,
            first_call: None,
        });
        Some(self.handouts.len() - 1)
    }

    fn call_started(&mut self, handout: usize, op: Op) -> usize {
        let seq = self.tick();
        let call = self.calls.len();
        match op {
            Op::Ack => self.stats.acks += 1,
            Op::Nack => self.stats.nacks += 1,
            Op::DeadLetter => self.stats.dead_letter_calls += 1,
        }
        if Instant::now() > self.handouts[handout].at + ACK_TIMEOUT {
            self.stats.late_calls += 1;
        }
        let h = &mut self.handouts[handout];
        h.first_call.get_or_insert(call);
        if op != Op::Nack {
            self.completing.insert((h.epoch, h.ev));
        }
        self.calls.push(Call {
            handout,
            op,
            start_seq: seq,
            start: Instant::now(),
            end: None,
        });
        call
    }

    fn call_ended(&mut self, call: usize, result: Result<(), String>) {
        let now = Instant::now();
        let c = &self.calls[call];
        let h = &self.handouts[c.handout];
        if result.is_ok() && c.op != Op::Nack {
            self.done_ok.entry(h.ev).or_insert(DoneOk {
                epoch: h.epoch,
                returned: now,
                op: c.op,
                attempt: h.attempt,
                held: c.start.saturating_duration_since(h.at),
            });
        }
        self.calls[call].end = Some((now, result));
    }

    /// Whether the bus surely holds none of the deliveries in `mine` in flight any more: a
    /// call on each returned, or it was dropped and some live subscription entered `next()`
    /// after its ack deadline (which expires it).
    fn quiet(&self, mine: &[usize]) -> bool {
        mine.iter().all(|&i| {
            let h = &self.handouts[i];
            let returned = h.first_call.is_some_and(|c| self.calls[c].end.is_some());
            let expired = h.dropped
                && self.subs.iter().any(|s| {
                    s.epoch == h.epoch
                        && s.gone.is_none()
                        && s.last_poll.is_some_and(|p| p > h.at + ACK_TIMEOUT + ms(20))
                });
            returned || expired
        })
    }

    /// The checks made once everything settled.
    fn check_end(&mut self, dlq: &BTreeMap<Ev, DlqRecord>) {
        self.stats.dead_lettered = dlq.len();
        let mut problems = Vec::new();

        for (ev, rec) in dlq {
            match self.published.get(ev) {
                None => problems.push(format!(
                    "{} is in the DLQ but was never published",
                    describe_ev(*ev)
                )),
                Some((id, _)) if *id != rec.id => problems.push(format!(
                    "{} is in the DLQ with event id {}, published as {id}",
                    describe_ev(*ev),
                    rec.id
                )),
                Some(_) => {}
            }
        }

        let mut by_ev: HashMap<Ev, Vec<usize>> = HashMap::new();
        for (i, h) in self.handouts.iter().enumerate() {
            by_ev.entry(h.ev).or_default().push(i);
            match self.published.get(&h.ev) {
                None => problems.push(format!(
                    "{} was delivered but never published",
                    describe(h.ev, h.attempt)
                )),
                Some((id, key)) if *id != h.id || *key != h.key => problems.push(format!(
                    "{} was delivered as event {} key {:?}, published as {id} key {key:?}",
                    describe(h.ev, h.attempt),
                    h.id,
                    h.key
                )),
                Some(_) => {}
            }
        }
        let mut calls_of: HashMap<Ev, Vec<&Call>> = HashMap::new();
        for c in &self.calls {
            calls_of
                .entry(self.handouts[c.handout].ev)
                .or_default()
                .push(c);
        }

        for (&ev, _) in self.published.iter() {
            let name = describe_ev(ev);
            let calls = calls_of.get(&ev).map(Vec::as_slice).unwrap_or_default();
            let acks = || calls.iter().filter(|c| c.op == Op::Ack);
            let ok = |c: &&&Call| matches!(c.end, Some((_, Ok(()))));
            if !by_ev.contains_key(&ev) {
                problems.push(format!(
                    "{name} was published but never delivered (yet the group's lag is 0)"
                ));
                continue;
            }
            match dlq.get(&ev) {
                Some(rec) => {
                    // The earliest moment anything could have started dead-lettering it.
                    let handouts = &by_ev[&ev];
                    let could_dead_letter = calls
                        .iter()
                        .filter(|c| {
                            c.op == Op::DeadLetter
                                || (c.op == Op::Nack
                                    && self.handouts[c.handout].attempt >= MAX_DELIVERIES)
                        })
                        .map(|c| c.start)
                        .chain(
                            handouts
                                .iter()
                                .map(|&i| &self.handouts[i])
                                .filter(|h| h.attempt >= MAX_DELIVERIES)
                                .map(|h| h.at + ACK_TIMEOUT),
                        )
                        .min();
                    for ack in acks().filter(ok) {
                        match could_dead_letter {
                            Some(t) if ack.start + SLACK >= t => {
                                self.stats.late_acks_absorbed += 1;
                            }
                            _ => problems.push(format!(
                                "{name} is in the DLQ ({}) although an ack of {} started before anything could dead-letter it and returned Ok",
                                rec.reason,
                                describe(ev, self.handouts[ack.handout].attempt)
                            )),
                        }
                    }
                    let explicit = rec.reason == GAVE_UP;
                    if explicit {
                        if rec.error.as_deref() != Some(GAVE_UP) {
                            problems.push(format!(
                                "{name}: explicit dead-letter carries error {:?}",
                                rec.error
                            ));
                        }
                        if rec.attempts == 0 {
                            problems.push(format!(
                                "{name}: explicit dead-letter with deadletterattempts {}",
                                rec.attempts
                            ));
                        }
                    } else if !rec.reason.starts_with("max deliveries reached")
                        // Every delivery counts in deadletterattempts, including those a
                        // leaving subscription returned, which max_deliveries forgives.
                        || rec.attempts < MAX_DELIVERIES
                    {
                        problems.push(format!(
                            "{name}: dead-lettered with reason {:?} and deadletterattempts {}, expected max deliveries reached after {MAX_DELIVERIES}",
                            rec.reason, rec.attempts
                        ));
                    }
                }
                None => {
                    if acks().next().is_none() {
                        problems.push(format!(
                            "{name} is done for the group (lag 0) and not in the DLQ, but was never acked"
                        ));
                    }
                    for dl in calls.iter().filter(|c| c.op == Op::DeadLetter) {
                        let Some((end, Ok(()))) = &dl.end else {
                            continue;
                        };
                        if !acks().any(|a| a.start < *end + SLACK) {
                            problems.push(format!(
                                "{name}: dead_letter of {} returned Ok but the event never reached the DLQ; it was acked {} later instead",
                                describe(ev, self.handouts[dl.handout].attempt),
                                acks()
                                    .map(|a| format!("{:?}", a.start.saturating_duration_since(*end)))
                                    .next()
                                    .unwrap_or_else(|| "never".into())
                            ));
                        }
                    }
                }
            }
        }

        if self.mix.ordering == Ordering::PerKey {
            problems.extend(self.check_key_predecessors(dlq, &by_ev, &calls_of));
        }
        for p in problems {
            self.violation(p);
        }
    }

    /// Under `PerKey`: when an event is first delivered in a bus lifetime, every earlier
    /// event of its key must already be acked or dead-lettered.
    fn check_key_predecessors(
        &self,
        dlq: &BTreeMap<Ev, DlqRecord>,
        by_ev: &HashMap<Ev, Vec<usize>>,
        calls_of: &HashMap<Ev, Vec<&Call>>,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        let mut per_key: BTreeMap<(usize, &str), Vec<u64>> = BTreeMap::new();
        for (&(topic, offset), (_, key)) in &self.published {
            if let Some(k) = key {
                per_key.entry((topic, k)).or_default().push(offset);
            }
        }
        for ((topic, key), offsets) in per_key {
            for (j, &b) in offsets.iter().enumerate() {
                let mut firsts: BTreeMap<u32, &Handout> = BTreeMap::new();
                for &i in by_ev
                    .get(&(topic, b))
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                {
                    let h = &self.handouts[i];
                    firsts.entry(h.epoch).or_insert(h);
                }
                for (epoch, first) in firsts {
                    for &a in &offsets[..j] {
                        let ea = (topic, a);
                        let delivered_now = by_ev
                            .get(&ea)
                            .is_some_and(|hs| hs.iter().any(|&i| self.handouts[i].epoch == epoch));
                        let by_call = calls_of.get(&ea).is_some_and(|cs| {
                            cs.iter().any(|c| {
                                let ce = self.handouts[c.handout].epoch;
                                c.op != Op::Nack
                                    && if delivered_now {
                                        ce == epoch && c.start_seq < first.seq
                                    } else {
                                        ce < epoch
                                    }
                            })
                        });
                        let by_dlq = dlq.get(&ea).is_some_and(|r| r.published_at <= first.utc);
                        if !(by_call || by_dlq) {
                            problems.push(format!(
                                "key {key}: {} was first delivered (bus lifetime {epoch}) before offset {a} of the same key was acked or dead-lettered",
                                describe(first.ev, first.attempt)
                            ));
                        }
                    }
                }
            }
        }
        problems
    }
}

fn describe_ev(ev: Ev) -> String {
    format!("{}@{}", TOPICS[ev.0], ev.1)
}

fn describe(ev: Ev, attempt: u32) -> String {
    format!("{} attempt {attempt}", describe_ev(ev))
}

/// A deterministic generator for one part of a run.
fn rng_for(seed: u64, parts: &[u64]) -> StdRng {
    let mut h = DefaultHasher::new();
    seed.hash(&mut h);
    parts.hash(&mut h);
    StdRng::seed_from_u64(h.finish())
}

/// What the tasks of one run share.
struct Ctx {
    seed: u64,
    mix: Mix,
    model: Mutex<Model>,
    /// Set in the final phase: subscriptions stop leaving so everything can settle.
    draining: AtomicBool,
    /// Handler tasks still running.
    busy_handlers: AtomicUsize,
    handlers: Mutex<Vec<JoinHandle<()>>>,
    /// Held shared by calls and subscribes, and exclusively around a restart's close (unless
    /// `Mix::racy_close`).
    gate: tokio::sync::RwLock<()>,
}

impl Ctx {
    fn model(&self) -> std::sync::MutexGuard<'_, Model> {
        self.model.lock().unwrap()
    }

    fn options(&self, max_in_flight: usize) -> SubscribeOptions {
        SubscribeOptions::new(GROUP, TOPICS)
            .unwrap()
            .ack_timeout(ACK_TIMEOUT)
            .max_deliveries(MAX_DELIVERIES)
            .ordering(self.mix.ordering)
            .max_in_flight(max_in_flight)
    }

    /// Waits for the handler tasks; a call that never returns is a violation.
    async fn join_handlers(&self) {
        let handles: Vec<_> = std::mem::take(&mut *self.handlers.lock().unwrap());
        let joined = join_within(handles, HANG_LIMIT).await;
        self.busy_handlers.store(0, AtomicOrdering::SeqCst);
        if !joined {
            let mut m = self.model();
            let now = Instant::now();
            let hung: Vec<String> = m
                .calls
                .iter()
                .filter(|c| c.end.is_none())
                .map(|c| {
                    let h = &m.handouts[c.handout];
                    format!(
                        "{:?} of {} (bus lifetime {}) has not returned after {:?}",
                        c.op,
                        describe(h.ev, h.attempt),
                        h.epoch,
                        now.saturating_duration_since(c.start)
                    )
                })
                .collect();
            m.violation(format!("handler calls hung: {hung:?}"));
        }
    }
}

/// How long a task may take to finish once nothing should keep it any more.
const HANG_LIMIT: Duration = Duration::from_secs(5);

/// Waits for `tasks` to finish within `limit`; aborts the rest and returns false if some
/// did not.
async fn join_within(tasks: Vec<JoinHandle<()>>, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut all = true;
    for mut t in tasks {
        match tokio::time::timeout_at(deadline, &mut t).await {
            Ok(r) => r.expect("task panicked"),
            Err(_) => {
                t.abort();
                all = false;
            }
        }
    }
    all
}

/// Closes the bus; a close that hangs is a violation.
async fn close_bus(ctx: &Ctx, bus: &EmbeddedBus) {
    match timeout(HANG_LIMIT, bus.close()).await {
        Ok(r) => r.expect("close the bus"),
        Err(_) => ctx
            .model()
            .violation(format!("Bus::close did not return within {HANG_LIMIT:?}")),
    }
}

/// Runs one ack/nack/dead-letter call on `d`, recording it. `nack` is the delay and
/// whether to give an error, for a nack.
async fn settle_call(ctx: &Ctx, h: usize, d: &Delivery, op: Op, nack: (Duration, bool)) {
    let _permit = match ctx.mix.racy_close {
        false => Some(ctx.gate.read().await),
        true => None,
    };
    let call = ctx.model().call_started(h, op);
    let result = match op {
        Op::Ack => d.ack().await,
        Op::Nack => {
            let (delay, error) = nack;
            let error = error.then(|| format!("handler failed on attempt {}", d.attempt()));
            d.nack(delay, error).await
        }
        Op::DeadLetter => {
            d.dead_letter(DeadLetter {
                reason: GAVE_UP.into(),
                error: Some(GAVE_UP.into()),
            })
            .await
        }
    };
    ctx.model()
        .call_ended(call, result.map_err(|e| e.to_string()));
}

/// A handler: does `action` with the delivery.
async fn handle(ctx: Arc<Ctx>, d: Delivery, h: usize, action: Action) {
    match action {
        Action::Drop => drop(d),
        Action::Ack { after } | Action::AckLate { after } => {
            sleep(after).await;
            settle_call(&ctx, h, &d, Op::Ack, Default::default()).await;
        }
        Action::Nack {
            after,
            delay,
            error,
        } => {
            sleep(after).await;
            settle_call(&ctx, h, &d, Op::Nack, (delay, error)).await;
        }
        Action::DeadLetter { after } | Action::DeadLetterLate { after } => {
            sleep(after).await;
            let late = Instant::now() + SLACK > ctx.model().handouts[h].at + ACK_TIMEOUT;
            let op = match late && !ctx.mix.late_dead_letters {
                true => Op::Ack,
                false => Op::DeadLetter,
            };
            settle_call(&ctx, h, &d, op, Default::default()).await;
        }
    }
    ctx.busy_handlers.fetch_sub(1, AtomicOrdering::SeqCst);
}

/// `next()`, sometimes cancelled after a moment (it must be cancel-safe): `None` when the
/// poll was cancelled.
async fn poll_next(
    sub: &mut Subscription,
    rng: &mut StdRng,
) -> Option<Option<Result<Delivery, ovasabi_core::BusError>>> {
    if rng.gen_bool(0.2) {
        timeout(ms(rng.gen_range(1..40)), sub.next()).await.ok()
    } else {
        Some(sub.next().await)
    }
}

/// Waits (without taking deliveries) until the bus holds none of `mine` in flight; gives up
/// after a while or when told to stop.
async fn wait_quiet(ctx: &Ctx, mine: &[usize], stop: &mut watch::Receiver<bool>) -> bool {
    let give_up = Instant::now() + ms(600);
    while Instant::now() < give_up && !*stop.borrow() {
        if ctx.model().quiet(mine) {
            return true;
        }
        tokio::select! {
            _ = stop.changed() => return false,
            _ = sleep(ms(10)) => {}
        }
    }
    false
}

/// One competing consumer slot: subscribes, consumes, and now and then leaves (closing or
/// dropping its subscription) and joins again as a new member.
async fn run_slot(
    ctx: Arc<Ctx>,
    bus: EmbeddedBus,
    epoch: u32,
    slot: u64,
    mut stop: watch::Receiver<bool>,
) {
    let mut rng = rng_for(ctx.seed, &[1, u64::from(epoch), slot]);
    loop {
        let max_in_flight = rng.gen_range(1..=3);
        let subscribed = {
            let _permit = match ctx.mix.racy_close {
                false => Some(ctx.gate.read().await),
                true => None,
            };
            bus.subscribe(ctx.options(max_in_flight)).await
        };
        let Ok(mut sub) = subscribed else {
            return; // the bus closed
        };
        let me = ctx.model().sub_joined(epoch, max_in_flight);
        let mut budget: u32 = rng.gen_range(3..=12);
        let mut mine: Vec<usize> = Vec::new();
        let leave = loop {
            if *stop.borrow() {
                break false;
            }
            if budget == 0 && !ctx.draining.load(AtomicOrdering::SeqCst) {
                if ctx.mix.hot_churn || wait_quiet(&ctx, &mine, &mut stop).await {
                    break true;
                }
                budget = rng.gen_range(1..=6); // not quiet yet: consume a little more
            }
            ctx.model().polling(me);
            let got = tokio::select! {
                _ = stop.changed() => break false,
                got = poll_next(&mut sub, &mut rng) => got,
            };
            match got {
                None => ctx.model().stats.cancelled_polls += 1,
                Some(None) => {
                    ctx.model().sub_left(me);
                    return; // the bus closed
                }
                Some(Some(Err(e))) => {
                    let mut m = ctx.model();
                    m.violation(format!("next() failed: {e}"));
                    m.sub_left(me);
                    return;
                }
                Some(Some(Ok(d))) => {
                    let action = Action::pick(&mut rng, ctx.mix);
                    let dropped = matches!(action, Action::Drop);
                    let Some(h) = ctx.model().handout(epoch, me, &d, dropped) else {
                        continue;
                    };
                    mine.push(h);
                    budget = budget.saturating_sub(1);
                    ctx.busy_handlers.fetch_add(1, AtomicOrdering::SeqCst);
                    let task = tokio::spawn(handle(ctx.clone(), d, h, action));
                    ctx.handlers.lock().unwrap().push(task);
                }
            }
        };
        // Recorded before the bus learns of it: deliveries come back to the group after this.
        ctx.model().sub_left(me);
        if rng.gen_bool(0.5) {
            sub.close().await;
        } else {
            drop(sub);
        }
        if !leave {
            return;
        }
        sleep(ms(rng.gen_range(0..30))).await;
    }
}

/// One publisher: `n` events over both topics, single and batch publishes.
async fn run_publisher(ctx: Arc<Ctx>, bus: EmbeddedBus, epoch: u32, publisher: u64, n: usize) {
    let mut rng = rng_for(ctx.seed, &[2, u64::from(epoch), publisher]);
    let mut made = 0;
    while made < n {
        let topic = rng.gen_range(0..TOPICS.len());
        let size = if rng.gen_bool(0.3) {
            rng.gen_range(2..=5).min(n - made)
        } else {
            1
        };
        let meta: Vec<(String, Option<String>)> = (0..size)
            .map(|i| {
                let id = format!("s{}-e{epoch}-p{publisher}-{}", ctx.seed, made + i);
                let key = rng
                    .gen_bool(0.75)
                    .then(|| KEYS[rng.gen_range(0..KEYS.len())].to_owned());
                (id, key)
            })
            .collect();
        let events: Vec<Event> = meta
            .iter()
            .map(|(id, key)| {
                let e = Event::new("test.happened", "/randomized")
                    .with_id(id.clone())
                    .with_json(&serde_json::json!({ "id": id }));
                match key {
                    Some(k) => e.with_partition_key(k.clone()),
                    None => e,
                }
            })
            .collect();
        let result = if size == 1 {
            let e = events.into_iter().next().expect("one event");
            bus.publish(TOPICS[topic], e).await.map(|p| vec![p])
        } else {
            bus.publish_batch(TOPICS[topic], events).await
        };
        {
            let mut m = ctx.model();
            match result {
                Ok(published) => {
                    for (p, (id, key)) in published.into_iter().zip(meta) {
                        m.stats.published += 1;
                        if m.published.insert((topic, p.offset), (id, key)).is_some() {
                            m.violation(format!("offset {} of {} given twice", p.offset, p.topic));
                        }
                    }
                }
                Err(e) => m.violation(format!("publish failed: {e}")),
            }
        }
        made += size;
        sleep(ms(rng.gen_range(0..15))).await;
    }
}

/// Waits until the group has no lag on any topic and no handler is running.
async fn settle(ctx: &Ctx, bus: &EmbeddedBus) -> Result<(), String> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let topics = bus.topics().await.map_err(|e| format!("topics(): {e}"))?;
        let mut pending = Vec::new();
        for t in topics.iter().filter(|t| TOPICS.contains(&t.topic.as_str())) {
            match t.groups.iter().find(|g| g.group == GROUP) {
                Some(g) if g.lag == 0 && g.position == t.next_offset => {}
                Some(g) => pending.push(format!(
                    "{}: position {} of {}, lag {}",
                    t.topic, g.position, t.next_offset, g.lag
                )),
                None if t.next_offset == 0 => {}
                None => pending.push(format!("{}: no stored position for the group", t.topic)),
            }
        }
        let handlers = ctx.busy_handlers.load(AtomicOrdering::SeqCst);
        if pending.is_empty() && handlers == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "not settled after {SETTLE_TIMEOUT:?}: {pending:?}, {handlers} handlers running"
            ));
        }
        sleep(ms(50)).await;
    }
}

/// Reads every dead-letter topic back with a fresh group.
async fn read_dead_letters(bus: &EmbeddedBus) -> Result<BTreeMap<Ev, DlqRecord>, String> {
    let dlq_topics: Vec<String> = TOPICS.iter().map(|t| dead_letter_topic(t)).collect();
    let expected: u64 = bus
        .topics()
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .filter(|t| dlq_topics.contains(&t.topic))
        .map(|t| t.next_offset)
        .sum();
    let mut out = BTreeMap::new();
    if expected == 0 {
        return Ok(out);
    }
    let mut sub = bus
        .subscribe(SubscribeOptions::new("dlq-check", &dlq_topics).map_err(|e| e.to_string())?)
        .await
        .map_err(|e| e.to_string())?;
    let mut read = 0;
    while read < expected {
        let d = match timeout(Duration::from_secs(5), sub.next()).await {
            Ok(Some(Ok(d))) => d,
            other => {
                return Err(format!(
                    "reading the DLQ: got {read} of {expected} records, then {other:?}"
                ))
            }
        };
        read += 1;
        let e = d.event();
        let ext = |name: &str| e.extension_str(name).map(str::to_owned);
        let topic = ext("deadlettertopic").unwrap_or_default();
        let Some(t) = TOPICS.iter().position(|x| *x == topic) else {
            return Err(format!("DLQ record with deadlettertopic {topic:?}: {e:?}"));
        };
        if d.info().topic != dead_letter_topic(&topic) {
            return Err(format!(
                "DLQ record for {topic} found in {}",
                d.info().topic
            ));
        }
        if ext("deadlettergroup").as_deref() != Some(GROUP) {
            return Err(format!("DLQ record of another group: {e:?}"));
        }
        let number = |name: &str| ext(name).and_then(|v| v.parse::<u64>().ok());
        let (Some(offset), Some(attempts), Some(reason)) = (
            number("deadletteroffset"),
            number("deadletterattempts"),
            ext("deadletterreason"),
        ) else {
            return Err(format!("DLQ record without deadletter* extensions: {e:?}"));
        };
        let rec = DlqRecord {
            published_at: d.info().published_at,
            reason,
            error: ext("deadlettererror"),
            attempts: attempts as u32,
            id: e.id.clone(),
        };
        if let Some(first) = out.insert((t, offset), rec) {
            return Err(format!(
                "{} is in the DLQ twice (first: {first:?})",
                describe_ev((t, offset))
            ));
        }
        d.ack().await.map_err(|e| e.to_string())?;
    }
    sub.close().await;
    Ok(out)
}

/// One whole run; returns its statistics, or the violations found.
async fn run(seed: u64, mix: Mix) -> Result<Stats, Vec<String>> {
    let dir = tempfile::tempdir().expect("a temporary data directory");
    let ctx = Arc::new(Ctx {
        seed,
        mix,
        model: Mutex::new(Model::new(mix)),
        draining: AtomicBool::new(false),
        busy_handlers: AtomicUsize::new(0),
        handlers: Mutex::new(Vec::new()),
        gate: tokio::sync::RwLock::new(()),
    });
    let mut plan = rng_for(seed, &[0]);
    let epochs: u32 = if mix.restarts {
        plan.gen_range(2..=3)
    } else {
        1
    };
    let mut failure: Option<String> = None;
    for epoch in 0..epochs {
        let last = epoch + 1 == epochs;
        let bus = EmbeddedBus::open(EmbeddedConfig::new(dir.path()))
            .await
            .expect("open the bus");
        let (stop_tx, stop_rx) = watch::channel(false);
        let slots: Vec<_> = (0..plan.gen_range(2..=4))
            .map(|s| {
                tokio::spawn(run_slot(
                    ctx.clone(),
                    bus.clone(),
                    epoch,
                    s,
                    stop_rx.clone(),
                ))
            })
            .collect();
        let publishers: Vec<_> = (0..3)
            .map(|p| {
                let n = plan.gen_range(6..=16);
                tokio::spawn(run_publisher(ctx.clone(), bus.clone(), epoch, p, n))
            })
            .collect();
        if !join_within(publishers, SETTLE_TIMEOUT).await {
            ctx.model().violation("a publish hung".into());
        }
        if last {
            ctx.draining.store(true, AtomicOrdering::SeqCst);
            if let Err(e) = settle(&ctx, &bus).await {
                failure = Some(e);
            }
            let _ = stop_tx.send(true);
        } else {
            // Restart while deliveries are in flight.
            sleep(ms(plan.gen_range(50..300))).await;
            let exclusive = match mix.racy_close {
                false => match timeout(HANG_LIMIT, ctx.gate.write()).await {
                    Ok(g) => Some(g),
                    Err(_) => {
                        ctx.model()
                            .violation("calls under way did not return".into());
                        None
                    }
                },
                true => None,
            };
            close_bus(&ctx, &bus).await;
            drop(exclusive);
            ctx.model().stats.restarts += 1;
        }
        if !join_within(slots, HANG_LIMIT).await {
            ctx.model().violation(format!(
                "a subscription did not end within {HANG_LIMIT:?} of the bus closing or being told to stop (stuck in subscribe, next or close)"
            ));
        }
        ctx.join_handlers().await;
        if last {
            let dlq = if failure.is_none() {
                match read_dead_letters(&bus).await {
                    Ok(dlq) => Some(dlq),
                    Err(e) => {
                        failure = Some(e);
                        None
                    }
                }
            } else {
                None
            };
            close_bus(&ctx, &bus).await;
            if let Some(dlq) = dlq {
                ctx.model().check_end(&dlq);
            }
        }
    }
    let mut m = ctx.model();
    let mut violations = std::mem::take(&mut m.violations);
    if let Some(f) = failure {
        violations.push(f);
    }
    if violations.is_empty() {
        Ok(std::mem::take(&mut m.stats))
    } else {
        Err(violations)
    }
}

/// The seeds to run: `OVASABI_SEED=<n>` alone, `OVASABI_SEEDS=<from>-<to>` for a longer
/// hunt, else `default`.
fn seeds(default: std::ops::RangeInclusive<u64>) -> Vec<u64> {
    if let Ok(s) = std::env::var("OVASABI_SEED") {
        return vec![s.parse().expect("OVASABI_SEED is a number")];
    }
    if let Ok(s) = std::env::var("OVASABI_SEEDS") {
        let (from, to) = s.split_once('-').expect("OVASABI_SEEDS is <from>-<to>");
        return (from.parse().expect("a number")..=to.parse().expect("a number")).collect();
    }
    default.collect()
}

async fn run_seeds(test: &str, mix: Mix, default: std::ops::RangeInclusive<u64>) {
    // The runs mostly wait on timers, so the seeds run side by side.
    let runs: Vec<_> = seeds(default)
        .into_iter()
        .map(|seed| {
            let started = std::time::Instant::now();
            (
                seed,
                tokio::spawn(async move { (run(seed, mix).await, started.elapsed()) }),
            )
        })
        .collect();
    let mut failed = Vec::new();
    for (seed, run) in runs {
        match run.await.expect("run task") {
            (Ok(stats), took) => println!("{test} seed {seed}: ok in {took:?}: {stats:?}"),
            (Err(violations), _) => {
                let text = format!(
                    "{test} seed {seed} ({mix:?}): {} violation(s):\n  - {}\n  reproduce: OVASABI_SEED={seed} cargo test -p ovasabi-embedded --test randomized {test} -- --include-ignored",
                    violations.len(),
                    violations.join("\n  - ")
                );
                eprintln!("{text}");
                failed.push(text);
            }
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

// ---------------------------------------------------------------------------------------
// The randomized runs.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_runs_per_key() {
    run_seeds("random_runs_per_key", Mix::steady(Ordering::PerKey), 1..=8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_runs_unordered() {
    run_seeds(
        "random_runs_unordered",
        Mix::steady(Ordering::None),
        101..=104,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_runs_hot_churn() {
    let mix = Mix {
        hot_churn: true,
        ..Mix::steady(Ordering::PerKey)
    };
    run_seeds("random_runs_hot_churn", mix, 1..=4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_runs_late_dead_letters() {
    let mix = Mix {
        late_dead_letters: true,
        ..Mix::steady(Ordering::PerKey)
    };
    run_seeds("random_runs_late_dead_letters", mix, 1..=8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_runs_calls_racing_close() {
    let mix = Mix {
        racy_close: true,
        ..Mix::steady(Ordering::PerKey)
    };
    run_seeds("random_runs_calls_racing_close", mix, 1..=8).await;
}

// ---------------------------------------------------------------------------------------
// Minimal reproductions of what the runs found. Each asserts the contract and fails today.

async fn one_event_bus() -> (tempfile::TempDir, EmbeddedBus) {
    let dir = tempfile::tempdir().expect("a temporary data directory");
    let bus = EmbeddedBus::open(EmbeddedConfig::new(dir.path()))
        .await
        .expect("open the bus");
    bus.publish("p.events", Event::new("test.happened", "/repro"))
        .await
        .expect("publish");
    (dir, bus)
}

fn repro_options(ack_timeout: Duration) -> SubscribeOptions {
    SubscribeOptions::new("g", ["p.events"])
        .unwrap()
        .ack_timeout(ack_timeout)
}

async fn next_delivery(sub: &mut Subscription) -> Delivery {
    timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("a delivery in time")
        .expect("subscription open")
        .expect("no error")
}

/// Events in `p.events.dlq`.
async fn dead_lettered(bus: &EmbeddedBus) -> u64 {
    let topics = bus.topics().await.expect("topics");
    let dlq = dead_letter_topic("p.events");
    topics
        .iter()
        .find(|t| t.topic == dlq)
        .map_or(0, |t| t.next_offset)
}

/// A member leaves holding attempt 1; the event is handed out again as attempt 1 (the leave
/// "un-counts" the attempt), and the departed delivery's ack deadline, still queued as
/// (offset, attempt 1), expires the new delivery when it falls due: 200 ms into a 400 ms ack
/// timeout.
#[tokio::test]
async fn repro_stale_deadline_expires_the_redelivery_early() {
    let (_dir, bus) = one_event_bus().await;
    let mut a = bus.subscribe(repro_options(ms(400))).await.unwrap();
    let _held = next_delivery(&mut a).await;
    sleep(ms(200)).await;
    drop(a);
    let mut b = bus.subscribe(repro_options(ms(400))).await.unwrap();
    let second = next_delivery(&mut b).await;
    let handed_out = Instant::now();
    let again = timeout(ms(350), b.next()).await;
    assert!(
        again.is_err(),
        "delivered again {:?} after attempt {} although that delivery's ack timeout is 400 ms: {again:?}",
        handed_out.elapsed(),
        second.attempt()
    );
    bus.close().await.unwrap();
}

/// Same cause: a nack from the departed member's delivery matches the redelivery's (offset,
/// attempt) and sends the event out again while the new holder is still on it.
#[tokio::test]
async fn repro_stale_nack_hits_the_redelivery() {
    let (_dir, bus) = one_event_bus().await;
    let mut a = bus.subscribe(repro_options(ms(400))).await.unwrap();
    let first = next_delivery(&mut a).await;
    a.close().await;
    let mut b = bus.subscribe(repro_options(ms(400))).await.unwrap();
    let _second = next_delivery(&mut b).await;
    first
        .nack(Duration::ZERO, Some("stale".into()))
        .await
        .unwrap();
    let again = timeout(ms(150), b.next()).await;
    assert!(
        again.is_err(),
        "a nack of the departed member's delivery redelivered the event while the new delivery is held and within its ack timeout: {again:?}"
    );
    bus.close().await.unwrap();
}

/// A delivery whose ack timeout expired before its member left is not counted as an attempt
/// when nobody had polled in between: with `max_deliveries(1)` the event is handed out again
/// (as attempt 1) instead of going to the DLQ.
#[tokio::test]
async fn repro_expired_delivery_of_a_leaving_member_is_not_counted() {
    let (_dir, bus) = one_event_bus().await;
    let options = repro_options(ms(100)).max_deliveries(1);
    let mut a = bus.subscribe(options.clone()).await.unwrap();
    let _held = next_delivery(&mut a).await;
    sleep(ms(250)).await; // the ack timeout passes; `a` does not poll again
    drop(a);
    let mut b = bus.subscribe(options).await.unwrap();
    let again = timeout(ms(300), b.next()).await;
    assert!(
        again.is_err(),
        "the only allowed delivery timed out, yet the event was delivered again: {again:?}"
    );
    assert_eq!(
        dead_lettered(&bus).await,
        1,
        "the event should be in the DLQ"
    );
    bus.close().await.unwrap();
}

/// `dead_letter` of a delivery whose member left returns `Ok`, but the event was back in the
/// group's queue: nothing is dead-lettered and the event is delivered again. (An `ack` in
/// the same spot is taken.)
#[tokio::test]
async fn repro_dead_letter_after_the_subscription_closed_is_ignored() {
    let (_dir, bus) = one_event_bus().await;
    let mut a = bus.subscribe(repro_options(ms(400))).await.unwrap();
    let d = next_delivery(&mut a).await;
    a.close().await;
    let why = DeadLetter {
        reason: GAVE_UP.into(),
        error: None,
    };
    d.dead_letter(why).await.expect("dead_letter returns Ok");
    let mut b = bus.subscribe(repro_options(ms(400))).await.unwrap();
    let again = timeout(ms(300), b.next()).await;
    assert!(
        again.is_err(),
        "dead-lettered, yet delivered again: {again:?}"
    );
    assert_eq!(
        dead_lettered(&bus).await,
        1,
        "the event should be in the DLQ"
    );
    bus.close().await.unwrap();
}

/// The same with a delivery held past its ack timeout while every member is full: the
/// expired event waits in the queue, and the late `dead_letter` returns `Ok` and does
/// nothing.
#[tokio::test]
async fn repro_late_dead_letter_of_a_queued_event_is_ignored() {
    let (_dir, bus) = one_event_bus().await;
    let options = repro_options(ms(200)).max_in_flight(1);
    let mut a = bus.subscribe(options.clone()).await.unwrap();
    let late = next_delivery(&mut a).await;
    bus.publish("p.events", Event::new("test.happened", "/repro"))
        .await
        .unwrap();
    let mut b = bus.subscribe(options).await.unwrap();
    sleep(ms(150)).await;
    let other = next_delivery(&mut b).await; // offset 1; b is now full
    sleep(ms(100)).await;
    // `b` polls: the overdue offset 0 is expired and requeued, but `b` cannot take it.
    let _ = timeout(ms(20), b.next()).await;
    let why = DeadLetter {
        reason: GAVE_UP.into(),
        error: None,
    };
    late.dead_letter(why).await.expect("dead_letter returns Ok");
    other.ack().await.unwrap();
    let again = timeout(ms(300), b.next()).await;
    assert!(
        again.is_err(),
        "dead-lettered, yet delivered again: {again:?}"
    );
    assert_eq!(
        dead_lettered(&bus).await,
        1,
        "the event should be in the DLQ"
    );
    bus.close().await.unwrap();
}

/// `dead_letter` while the bus's own dead-letter of the event is on its way returns `Ok`
/// at once, before anything is written; closing the bus then loses the write, and after a
/// restart the event is delivered again. (Single-threaded runtime: the bus's dead-letter
/// task cannot run before `close`.)
#[tokio::test]
async fn repro_dead_letter_returns_before_the_write_under_way_is_durable() {
    use std::future::Future;
    let (dir, bus) = one_event_bus().await;
    let options = repro_options(ms(100)).max_deliveries(1);
    let mut a = bus.subscribe(options.clone()).await.unwrap();
    let d = next_delivery(&mut a).await;
    sleep(ms(150)).await;
    {
        // One poll of `next()`: it expires the delivery and spawns the dead-letter write.
        let mut next = std::pin::pin!(a.next());
        std::future::poll_fn(|cx| {
            let _ = next.as_mut().poll(cx);
            std::task::Poll::Ready(())
        })
        .await;
    }
    let why = DeadLetter {
        reason: GAVE_UP.into(),
        error: None,
    };
    d.dead_letter(why).await.expect("dead_letter returns Ok");
    bus.close().await.unwrap();
    drop(a);
    let bus = EmbeddedBus::open(EmbeddedConfig::new(dir.path()))
        .await
        .unwrap();
    let mut b = bus.subscribe(options).await.unwrap();
    let again = timeout(ms(300), b.next()).await;
    assert!(
        again.is_err(),
        "dead_letter returned Ok, yet the event came back after a restart: {again:?}"
    );
    assert_eq!(
        dead_lettered(&bus).await,
        1,
        "the event should be in the DLQ"
    );
    bus.close().await.unwrap();
}

/// Acks racing `Bus::close` on several threads: some never return. A persist whose command
/// could not be sent leaves `persist_queued` set, so later waiters never send their own and
/// nothing ever answers them.
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn repro_ack_racing_close_never_returns() {
    for round in 0..50 {
        let dir = tempfile::tempdir().unwrap();
        let bus = EmbeddedBus::open(EmbeddedConfig::new(dir.path()))
            .await
            .unwrap();
        let events = (0..100)
            .map(|i| Event::new("test.happened", "/repro").with_id(format!("e{i}")))
            .collect();
        bus.publish_batch("p.events", events).await.unwrap();
        let mut sub = bus
            .subscribe(repro_options(Duration::from_secs(30)).max_in_flight(100))
            .await
            .unwrap();
        let mut acks = Vec::new();
        for i in 0..100 {
            let d = next_delivery(&mut sub).await;
            acks.push(tokio::spawn(async move {
                if i % 2 == 0 {
                    tokio::task::yield_now().await;
                }
                let _ = d.ack().await;
            }));
        }
        let closing = bus.clone();
        let closed = tokio::spawn(async move { closing.close().await });
        let mut hung = 0;
        for a in acks {
            if timeout(Duration::from_secs(5), a).await.is_err() {
                hung += 1;
            }
        }
        closed.await.unwrap().unwrap();
        assert_eq!(hung, 0, "round {round}: {hung} acks never returned");
    }
}
