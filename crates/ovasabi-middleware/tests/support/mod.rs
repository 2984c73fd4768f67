//! A test double of the bus, for checking the consumer's decisions. Not a backend.
//!
//! [`RecordingBus`] implements `Subscriber`, `Publisher` and `Acknowledger` in memory and
//! records, in order, every publish, ack, nack and dead-letter it is asked for. Tests feed
//! it deliveries by hand ([`RecordingBus::deliver`]) and read the timeline back. It does no
//! ack timeouts, ordering or durability of its own; [`RecordingBus::redeliver_unsettled`]
//! stands in for the ack timeout, and [`RecordingBus::redeliver_nacks`] for redelivery after
//! a nack.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use ovasabi_core::{
    Acknowledger, BusError, DeadLetter, Delivery, DeliveryInfo, DeliverySource, Event, Published,
    Publisher, SubscribeOptions, Subscriber, Subscription,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// One thing the consumer asked the bus to do, in the order it asked.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    Published {
        topic: String,
        ids: Vec<String>,
    },
    Acked {
        offset: u64,
        attempt: u32,
    },
    Nacked {
        offset: u64,
        attempt: u32,
        delay: Duration,
        error: Option<String>,
    },
    DeadLettered {
        offset: u64,
        attempt: u32,
        why: DeadLetter,
    },
}

#[derive(Default)]
struct State {
    timeline: Vec<Record>,
    published: Vec<(String, Event)>,
    /// Every delivery taken by a subscription: (offset, attempt).
    delivered: Vec<(u64, u32)>,
    /// Events fed in, by offset: (topic, event).
    events: Vec<(String, Arc<Event>)>,
    publish_failures: VecDeque<BusError>,
    ack_failures: usize,
    subscribed: Vec<SubscribeOptions>,
    next_failure: Option<BusError>,
}

pub struct Inner {
    me: Weak<Inner>,
    state: Mutex<State>,
    tx: mpsc::UnboundedSender<Delivery>,
    rx: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Delivery>>>,
    input_closed: CancellationToken,
    redeliver_nacks: std::sync::atomic::AtomicBool,
}

/// The recording test double. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct RecordingBus {
    inner: Arc<Inner>,
}

impl Default for RecordingBus {
    fn default() -> Self {
        Self::new()
    }
}

impl RecordingBus {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        RecordingBus {
            inner: Arc::new_cyclic(|me| Inner {
                me: me.clone(),
                state: Mutex::default(),
                tx,
                rx: Arc::new(tokio::sync::Mutex::new(rx)),
                input_closed: CancellationToken::new(),
                redeliver_nacks: Default::default(),
            }),
        }
    }

    pub fn subscriber(&self) -> Arc<dyn Subscriber> {
        Arc::new(self.clone())
    }

    pub fn publisher(&self) -> Arc<dyn Publisher> {
        Arc::new(self.clone())
    }

    /// Feeds `event` in `topic` as a first delivery; returns its offset.
    pub fn deliver(&self, topic: &str, event: Event) -> u64 {
        let offset = {
            let mut state = self.inner.state.lock().unwrap();
            state.events.push((topic.to_owned(), Arc::new(event)));
            state.events.len() as u64 - 1
        };
        self.inner.send(offset, 1);
        offset
    }

    /// Redelivers nacked events at once (the delay is recorded, not waited for).
    pub fn redeliver_nacks(&self, on: bool) {
        self.inner
            .redeliver_nacks
            .store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// Stands in for the ack timeout: every event taken but never acked, nacked or
    /// dead-lettered is delivered again, attempt + 1. Returns the offsets redelivered.
    pub fn redeliver_unsettled(&self) -> Vec<u64> {
        let unsettled = self.unsettled();
        for &(offset, attempt) in &unsettled {
            self.inner.send(offset, attempt + 1);
        }
        unsettled.into_iter().map(|(o, _)| o).collect()
    }

    /// Deliveries taken whose latest attempt was neither acked, nacked nor
    /// dead-lettered: (offset, attempt).
    pub fn unsettled(&self) -> Vec<(u64, u32)> {
        let state = self.inner.state.lock().unwrap();
        let settled: BTreeSet<(u64, u32)> = state
            .timeline
            .iter()
            .filter_map(|r| match r {
                Record::Acked { offset, attempt }
                | Record::Nacked {
                    offset, attempt, ..
                }
                | Record::DeadLettered {
                    offset, attempt, ..
                } => Some((*offset, *attempt)),
                Record::Published { .. } => None,
            })
            .collect();
        let latest: std::collections::BTreeMap<u64, u32> =
            state.delivered.iter().copied().collect();
        latest
            .into_iter()
            .filter(|d| !settled.contains(d))
            .collect()
    }

    /// No more deliveries: the subscription ends once the queue is drained.
    pub fn end_input(&self) {
        self.inner.input_closed.cancel();
    }

    /// The next `publish_batch` calls fail with these errors, in order.
    pub fn fail_publishes(&self, errors: impl IntoIterator<Item = BusError>) {
        self.inner
            .state
            .lock()
            .unwrap()
            .publish_failures
            .extend(errors);
    }

    /// The next `n` acks fail.
    pub fn fail_acks(&self, n: usize) {
        self.inner.state.lock().unwrap().ack_failures = n;
    }

    /// The next `next()` returns this error.
    pub fn fail_next_take(&self, error: BusError) {
        self.inner.state.lock().unwrap().next_failure = Some(error);
    }

    pub fn timeline(&self) -> Vec<Record> {
        self.inner.state.lock().unwrap().timeline.clone()
    }

    pub fn published(&self) -> Vec<(String, Event)> {
        self.inner.state.lock().unwrap().published.clone()
    }

    pub fn delivered(&self) -> Vec<(u64, u32)> {
        self.inner.state.lock().unwrap().delivered.clone()
    }

    pub fn subscribed(&self) -> Vec<SubscribeOptions> {
        self.inner.state.lock().unwrap().subscribed.clone()
    }

    /// Offsets acked, in order.
    pub fn acked(&self) -> Vec<u64> {
        self.timeline()
            .into_iter()
            .filter_map(|r| match r {
                Record::Acked { offset, .. } => Some(offset),
                _ => None,
            })
            .collect()
    }
}

impl Inner {
    fn send(&self, offset: u64, attempt: u32) {
        let (topic, event) = {
            let state = self.state.lock().unwrap();
            state.events[offset as usize].clone()
        };
        let info = DeliveryInfo {
            topic,
            offset,
            group: "test-group".to_owned(),
            attempt,
            published_at: chrono::Utc::now(),
        };
        let acker: Arc<dyn Acknowledger> = self.me.upgrade().expect("alive");
        self.tx
            .send(Delivery::new(event, info, acker))
            .expect("the receiver lives as long as the bus");
    }

    fn record(&self, record: Record) {
        self.state.lock().unwrap().timeline.push(record);
    }
}

#[async_trait]
impl Acknowledger for Inner {
    async fn ack(&self, info: &DeliveryInfo) -> Result<(), BusError> {
        {
            let mut state = self.state.lock().unwrap();
            if state.ack_failures > 0 {
                state.ack_failures -= 1;
                return Err(BusError::Storage("injected ack failure".into()));
            }
        }
        self.record(Record::Acked {
            offset: info.offset,
            attempt: info.attempt,
        });
        Ok(())
    }

    async fn nack(
        &self,
        info: &DeliveryInfo,
        delay: Duration,
        error: Option<String>,
    ) -> Result<(), BusError> {
        self.record(Record::Nacked {
            offset: info.offset,
            attempt: info.attempt,
            delay,
            error,
        });
        if self
            .redeliver_nacks
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            self.send(info.offset, info.attempt + 1);
        }
        Ok(())
    }

    async fn dead_letter(&self, info: &DeliveryInfo, why: DeadLetter) -> Result<(), BusError> {
        self.record(Record::DeadLettered {
            offset: info.offset,
            attempt: info.attempt,
            why,
        });
        Ok(())
    }
}

struct Source {
    bus: Arc<Inner>,
}

#[async_trait]
impl DeliverySource for Source {
    async fn next(&mut self) -> Option<Result<Delivery, BusError>> {
        if let Some(error) = self.bus.state.lock().unwrap().next_failure.take() {
            return Some(Err(error));
        }
        let mut rx = self.bus.rx.lock().await;
        let delivery = tokio::select! {
            biased;
            delivery = rx.recv() => delivery,
            _ = self.bus.input_closed.cancelled() => rx.try_recv().ok(),
        }?;
        // Counted as delivered once taken: queued events are still the bus's.
        let info = delivery.info();
        self.bus
            .state
            .lock()
            .unwrap()
            .delivered
            .push((info.offset, info.attempt));
        Some(Ok(delivery))
    }

    async fn close(&mut self) {}
}

#[async_trait]
impl Subscriber for RecordingBus {
    async fn subscribe(&self, options: SubscribeOptions) -> Result<Subscription, BusError> {
        options.validate()?;
        self.inner.state.lock().unwrap().subscribed.push(options);
        Ok(Subscription::new(Box::new(Source {
            bus: self.inner.clone(),
        })))
    }
}

#[async_trait]
impl Publisher for RecordingBus {
    async fn publish(&self, topic: &str, event: Event) -> Result<Published, BusError> {
        let mut published = self.publish_batch(topic, vec![event]).await?;
        Ok(published.remove(0))
    }

    async fn publish_batch(
        &self,
        topic: &str,
        events: Vec<Event>,
    ) -> Result<Vec<Published>, BusError> {
        ovasabi_core::naming::validate_topic(topic)?;
        for event in &events {
            event.validate()?;
        }
        let mut state = self.inner.state.lock().unwrap();
        if let Some(error) = state.publish_failures.pop_front() {
            return Err(error);
        }
        state.timeline.push(Record::Published {
            topic: topic.to_owned(),
            ids: events.iter().map(|e| e.id.clone()).collect(),
        });
        let first = state.published.len() as u64;
        let mut out = Vec::new();
        for (i, event) in events.into_iter().enumerate() {
            out.push(Published {
                topic: topic.to_owned(),
                offset: first + i as u64,
            });
            state.published.push((topic.to_owned(), event));
        }
        Ok(out)
    }
}
