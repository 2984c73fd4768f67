//! [`ConsumerStats`]: a running [`Consumer`](crate::Consumer)'s counters, read live.
//!
//! A consumer counts what happens to its deliveries in atomics: how many it received, acked,
//! nacked, dead-lettered…, a histogram of how long its handler took, and the same outcomes by
//! topic and event type. [`Consumer::stats`](crate::Consumer::stats) hands out a cheap clone
//! of the handle before [`Consumer::run`](crate::Consumer::run) starts, so a metrics endpoint
//! can read them while the consumer runs; [`Consumer::run`](crate::Consumer::run) still
//! returns the final [`RunSummary`].
//!
//! Reading is lock-free but for the counts by event type (one short mutex). The counters are
//! read one at a time, so a snapshot taken while deliveries are settled may be off by the
//! deliveries in flight; each counter only ever grows.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::consumer::RunSummary;

/// Upper bounds, in seconds, of the buckets of [`ConsumerStats::handler_duration`]; a last
/// bucket (`+Inf`) takes what is slower.
pub const HANDLER_DURATION_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// At most this many (topic, event type) pairs are counted apart; deliveries of further
/// pairs are counted under topic and type [`OTHER`], so a stream of odd types cannot grow
/// the memory (or a metrics page) without bound.
pub const MAX_EVENT_KINDS: usize = 256;

/// The topic and type under which the pairs past [`MAX_EVENT_KINDS`] are counted.
pub const OTHER: &str = "_other";

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) received: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) nacked: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) unfinished: AtomicU64,
    pub(crate) settle_failed: AtomicU64,
    pub(crate) published: AtomicU64,
    pub(crate) panicked: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, AtomicOrdering::Relaxed);
    }

    fn summary(&self) -> RunSummary {
        let get = |c: &AtomicU64| c.load(AtomicOrdering::Relaxed);
        RunSummary {
            received: get(&self.received),
            acked: get(&self.acked),
            nacked: get(&self.nacked),
            dead_lettered: get(&self.dead_lettered),
            unfinished: get(&self.unfinished),
            settle_failed: get(&self.settle_failed),
            published: get(&self.published),
            panicked: get(&self.panicked),
        }
    }
}

/// Handler durations: a count per bucket of [`HANDLER_DURATION_BUCKETS`] (not cumulative)
/// plus one for `+Inf`, and the sum in microseconds.
#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; HANDLER_DURATION_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let index = HANDLER_DURATION_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(HANDLER_DURATION_BUCKETS.len());
        self.buckets[index].fetch_add(1, AtomicOrdering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, AtomicOrdering::Relaxed);
    }

    fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0u64;
        let mut buckets = Vec::with_capacity(self.buckets.len());
        for (i, count) in self.buckets.iter().enumerate() {
            cumulative += count.load(AtomicOrdering::Relaxed);
            let bound = HANDLER_DURATION_BUCKETS
                .get(i)
                .copied()
                .unwrap_or(f64::INFINITY);
            buckets.push((bound, cumulative));
        }
        HistogramSnapshot {
            buckets,
            sum_seconds: self.sum_micros.load(AtomicOrdering::Relaxed) as f64 / 1e6,
            count: cumulative,
        }
    }
}

/// A histogram as read at one moment.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct HistogramSnapshot {
    /// `(upper bound in seconds, observations at or below it)`, cumulative, in increasing
    /// order of bounds; the last bound is `f64::INFINITY` and its count is [`Self::count`].
    pub buckets: Vec<(f64, u64)>,
    /// The sum of the observations, in seconds (kept in microseconds).
    pub sum_seconds: f64,
    /// How many observations.
    pub count: u64,
}

/// What happened to one (topic, event type)'s deliveries in one consumer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventCounts {
    /// The topic the events were delivered from ([`OTHER`] past [`MAX_EVENT_KINDS`]).
    pub topic: String,
    /// The events' type ([`OTHER`] past [`MAX_EVENT_KINDS`]).
    pub event_type: String,
    /// Deliveries taken.
    pub received: u64,
    /// Deliveries handled and acked.
    pub acked: u64,
    /// Deliveries nacked for redelivery.
    pub nacked: u64,
    /// Deliveries dead-lettered.
    pub dead_lettered: u64,
}

/// What can happen to a delivery, as counted by event type.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Outcome {
    Received,
    Acked,
    Nacked,
    DeadLettered,
}

#[derive(Default)]
struct Inner {
    counters: Counters,
    handler: Histogram,
    /// topic → type → counts, indexed by [`Outcome`].
    by_event: Mutex<HashMap<String, HashMap<String, [u64; 4]>>>,
}

/// A live view of a consumer's counters; cheap to clone, shared with the consumer that
/// counts. See the [module docs](self).
#[derive(Clone, Default)]
pub struct ConsumerStats {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ConsumerStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerStats")
            .field("summary", &self.snapshot())
            .finish_non_exhaustive()
    }
}

impl ConsumerStats {
    /// Counters at zero, not attached to a consumer (a consumer makes its own: see
    /// [`Consumer::stats`](crate::Consumer::stats)).
    pub fn new() -> ConsumerStats {
        ConsumerStats::default()
    }

    /// The counters now, in the shape [`Consumer::run`](crate::Consumer::run) returns at the
    /// end.
    pub fn snapshot(&self) -> RunSummary {
        self.inner.counters.summary()
    }

    /// How long handler calls took (those that returned or panicked; not those abandoned at
    /// shutdown), in the buckets of [`HANDLER_DURATION_BUCKETS`].
    pub fn handler_duration(&self) -> HistogramSnapshot {
        self.inner.handler.snapshot()
    }

    /// Received, acked, nacked and dead-lettered deliveries by topic and event type, sorted
    /// by topic then type.
    pub fn by_event(&self) -> Vec<EventCounts> {
        let map = self.lock();
        let mut out: Vec<EventCounts> = map
            .iter()
            .flat_map(|(topic, types)| {
                types.iter().map(move |(ty, c)| EventCounts {
                    topic: topic.clone(),
                    event_type: ty.clone(),
                    received: c[Outcome::Received as usize],
                    acked: c[Outcome::Acked as usize],
                    nacked: c[Outcome::Nacked as usize],
                    dead_lettered: c[Outcome::DeadLettered as usize],
                })
            })
            .collect();
        drop(map);
        out.sort_by(|a, b| (&a.topic, &a.event_type).cmp(&(&b.topic, &b.event_type)));
        out
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    pub(crate) fn observe_handler(&self, took: Duration) {
        self.inner.handler.observe(took);
    }

    pub(crate) fn count_event(&self, topic: &str, event_type: &str, outcome: Outcome) {
        let mut map = self.lock();
        let known = map
            .get(topic)
            .is_some_and(|types| types.contains_key(event_type));
        let (topic, event_type) =
            if known || map.values().map(HashMap::len).sum::<usize>() < MAX_EVENT_KINDS {
                (topic, event_type)
            } else {
                (OTHER, OTHER)
            };
        let counts = match map.get_mut(topic) {
            Some(types) => types.entry(event_type.to_owned()).or_default(),
            None => map
                .entry(topic.to_owned())
                .or_default()
                .entry(event_type.to_owned())
                .or_default(),
        };
        counts[outcome as usize] += 1;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<String, [u64; 4]>>> {
        self.inner
            .by_event
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_is_cumulative_and_ends_with_the_count() {
        let stats = ConsumerStats::new();
        for ms in [0, 1, 3, 40, 700, 20_000] {
            stats.observe_handler(Duration::from_millis(ms));
        }
        let h = stats.handler_duration();
        assert_eq!(h.count, 6);
        assert_eq!(h.buckets.len(), HANDLER_DURATION_BUCKETS.len() + 1);
        assert_eq!(h.buckets[0], (0.001, 2));
        assert_eq!(h.buckets[1], (0.005, 3));
        assert_eq!(h.buckets[4], (0.05, 4));
        assert_eq!(h.buckets[8], (1.0, 5));
        assert_eq!(h.buckets[11], (10.0, 5));
        assert_eq!(*h.buckets.last().unwrap(), (f64::INFINITY, 6));
        assert!(h.buckets.windows(2).all(|w| w[0].1 <= w[1].1));
        assert!((h.sum_seconds - 20.744).abs() < 1e-9, "{}", h.sum_seconds);
    }

    #[test]
    fn events_are_counted_by_topic_and_type_up_to_a_bound() {
        let stats = ConsumerStats::new();
        stats.count_event("t", "a", Outcome::Received);
        stats.count_event("t", "a", Outcome::Acked);
        stats.count_event("t", "b", Outcome::Received);
        stats.count_event("t", "b", Outcome::DeadLettered);
        let counts = stats.by_event();
        assert_eq!(counts.len(), 2);
        assert_eq!(
            (
                counts[0].event_type.as_str(),
                counts[0].received,
                counts[0].acked
            ),
            ("a", 1, 1)
        );
        assert_eq!(
            (counts[1].event_type.as_str(), counts[1].dead_lettered),
            ("b", 1)
        );
        for i in 0..MAX_EVENT_KINDS + 10 {
            stats.count_event("u", &format!("type-{i}"), Outcome::Received);
        }
        let counts = stats.by_event();
        assert_eq!(counts.len(), MAX_EVENT_KINDS + 1);
        let other = counts.iter().find(|c| c.topic == OTHER).unwrap();
        assert_eq!(other.received, 12);
    }
}
