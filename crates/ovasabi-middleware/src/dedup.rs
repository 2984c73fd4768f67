//! Deduplicator: don't run a handler twice for an event it recently handled.
//!
//! At-least-once delivery means a handler can see one event more than once: after a crash
//! between publishing and acking, after an ack timeout, or because a producer published it
//! twice. The deduplicator remembers, in memory, the last `capacity` events (by `source` and
//! `id`, which CloudEvents makes unique) that the handler handled successfully, *with their
//! outgoing events*. A repeat is answered from memory without running the handler: the same
//! outgoing events are returned, so the runner republishes them (with their same ids) and
//! then acks. Replaying rather than returning nothing matters: if publishing failed the first
//! time, the outgoing events must still go out.
//!
//! What it does not promise: memory is per process and per handler, bounded (least recently
//! seen entries are forgotten first), and lost on restart; two deliveries of one event
//! running at the same moment both run the handler. Handlers still need idempotent effects;
//! this only saves repeated work in the common case.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::handler::{Handler, HandlerError, Message, Outgoing};
use crate::layer::Layer;

/// Wraps handlers in [`Deduplicator`]s. Each handler wrapped gets its own memory.
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::sync::Arc;
/// use ovasabi_core::Event;
/// use ovasabi_middleware::{handler_fn, DeduplicatorLayer, Handler, Layer, Message, Outgoing};
///
/// let calls = Arc::new(AtomicU32::new(0));
/// let counter = calls.clone();
/// let handler = DeduplicatorLayer::new(10_000).layer(handler_fn(move |msg: Message| {
///     counter.fetch_add(1, Ordering::SeqCst);
///     let id = format!("{}-billed", msg.event().id);
///     async move { Ok(vec![Outgoing::new("billing.events", Event::new("order.billed", "/billing").with_id(id))]) }
/// }));
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let msg = Message::local("order.events", Event::new("order.placed", "/shop").with_id("o-1"));
/// let first = handler.handle(&msg).await.unwrap();
/// let again = handler.handle(&msg.clone().with_attempt(2)).await.unwrap();
/// assert_eq!(first, again);
/// assert_eq!(calls.load(Ordering::SeqCst), 1);
/// # });
/// ```
#[derive(Clone, Copy, Debug)]
pub struct DeduplicatorLayer {
    capacity: usize,
}

impl DeduplicatorLayer {
    /// Remembers the last `capacity` (at least 1) handled events per handler.
    pub fn new(capacity: usize) -> Self {
        DeduplicatorLayer {
            capacity: capacity.max(1),
        }
    }
}

impl<H> Layer<H> for DeduplicatorLayer {
    type Handler = Deduplicator<H>;

    fn layer(&self, inner: H) -> Deduplicator<H> {
        Deduplicator::new(inner, self.capacity)
    }
}

/// `inner`, answering repeats of recently handled events from memory.
#[derive(Debug)]
pub struct Deduplicator<H> {
    inner: H,
    seen: Mutex<Lru>,
}

impl<H> Deduplicator<H> {
    /// `inner`, remembering the last `capacity` (at least 1) handled events.
    pub fn new(inner: H, capacity: usize) -> Self {
        Deduplicator {
            inner,
            seen: Mutex::new(Lru::new(capacity.max(1))),
        }
    }

    /// How many handled events it remembers now.
    pub fn remembered(&self) -> usize {
        self.lock().entries.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        // The cache holds no invariant a panic elsewhere could break halfway.
        self.seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl<H: Handler> Handler for Deduplicator<H> {
    async fn handle(&self, msg: &Message) -> Result<Vec<Outgoing>, HandlerError> {
        let key = (msg.event().source.clone(), msg.event().id.clone());
        let remembered = self.lock().get(&key);
        if let Some(outgoing) = remembered {
            tracing::debug!(
                event_id = %msg.event().id,
                source = %msg.event().source,
                attempt = msg.attempt(),
                "duplicate of a recently handled event; replaying its outgoing events"
            );
            return Ok(outgoing.to_vec());
        }
        let outgoing = self.inner.handle(msg).await?;
        self.lock().insert(key, outgoing.clone().into());
        Ok(outgoing)
    }
}

type Key = (String, String);

/// A least-recently-used map: `entries` holds each key's last-use stamp and value, `order`
/// the keys by stamp, oldest first.
#[derive(Debug)]
struct Lru {
    capacity: usize,
    clock: u64,
    entries: HashMap<Key, (u64, Arc<[Outgoing]>)>,
    order: BTreeMap<u64, Key>,
}

impl Lru {
    fn new(capacity: usize) -> Self {
        Lru {
            capacity,
            clock: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn get(&mut self, key: &Key) -> Option<Arc<[Outgoing]>> {
        let now = self.tick();
        let (stamp, value) = self.entries.get_mut(key)?;
        let key = self
            .order
            .remove(stamp)
            .expect("every entry is in the order");
        *stamp = now;
        let value = value.clone();
        self.order.insert(now, key);
        Some(value)
    }

    fn insert(&mut self, key: Key, value: Arc<[Outgoing]>) {
        let now = self.tick();
        if let Some((stamp, old)) = self.entries.get_mut(&key) {
            let key = self
                .order
                .remove(stamp)
                .expect("every entry is in the order");
            *stamp = now;
            *old = value;
            self.order.insert(now, key);
            return;
        }
        if self.entries.len() >= self.capacity {
            if let Some((_, oldest)) = self.order.pop_first() {
                self.entries.remove(&oldest);
            }
        }
        self.order.insert(now, key.clone());
        self.entries.insert(key, (now, value));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use ovasabi_core::Event;

    use super::*;
    use crate::handler_fn;

    /// Counts calls; fails transiently while `fail` is set; emits `<id>-done`.
    fn counting(fail: Arc<std::sync::atomic::AtomicBool>) -> (impl Handler, Arc<AtomicU32>) {
        let calls = Arc::new(AtomicU32::new(0));
        let counter = calls.clone();
        let h = handler_fn(move |msg: Message| {
            counter.fetch_add(1, Ordering::SeqCst);
            let fail = fail.load(Ordering::SeqCst);
            async move {
                if fail {
                    return Err(HandlerError::transient("down"));
                }
                Ok(vec![Outgoing::new(
                    "out",
                    Event::new("a.done", "/s").with_id(format!("{}-done", msg.event().id)),
                )])
            }
        });
        (h, calls)
    }

    fn msg(source: &str, id: &str) -> Message {
        Message::local("in", Event::new("a.happened", source).with_id(id))
    }

    #[tokio::test]
    async fn repeats_are_answered_from_memory() {
        let (h, calls) = counting(Default::default());
        let h = DeduplicatorLayer::new(8).layer(h);
        let first = h.handle(&msg("/s", "e1")).await.unwrap();
        let again = h.handle(&msg("/s", "e1").with_attempt(2)).await.unwrap();
        assert_eq!(first, again);
        assert_eq!(again[0].event.id, "e1-done");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Same id from another source is another event.
        h.handle(&msg("/other", "e1")).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn failures_are_not_remembered() {
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (h, calls) = counting(fail.clone());
        let h = DeduplicatorLayer::new(8).layer(h);
        assert!(h.handle(&msg("/s", "e1")).await.is_err());
        fail.store(false, Ordering::SeqCst);
        assert_eq!(h.handle(&msg("/s", "e1")).await.unwrap().len(), 1);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(h.remembered(), 1);
    }

    #[tokio::test]
    async fn the_least_recently_seen_is_forgotten_first() {
        let (h, calls) = counting(Default::default());
        let h = DeduplicatorLayer::new(2).layer(h);
        h.handle(&msg("/s", "a")).await.unwrap();
        h.handle(&msg("/s", "b")).await.unwrap();
        h.handle(&msg("/s", "a")).await.unwrap(); // a is now the most recent
        h.handle(&msg("/s", "c")).await.unwrap(); // forgets b
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(h.remembered(), 2);
        h.handle(&msg("/s", "a")).await.unwrap();
        h.handle(&msg("/s", "c")).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        h.handle(&msg("/s", "b")).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }
}
