//! [`EmbeddedBus`]: the Bus API over the store, the writer thread and the groups.

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use ovasabi_core::dead_letter;
use ovasabi_core::naming::{dead_letter_topic, validate_topic};
use ovasabi_core::{
    Acknowledger, Bus, BusError, DeadLetter, Delivery, DeliveryInfo, DeliverySource, Event,
    GroupInfo, Published, Publisher, StartFrom, SubscribeOptions, Subscriber, Subscription,
    TopicInfo,
};
use rusqlite::Connection;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::config::EmbeddedConfig;
use crate::group::{
    Claimed, DeadLetterJob, DeadLetterTake, FetchJob, Group, PositionHandle, Settings, TopicCursor,
};
use crate::log::TopicLog;
use crate::store::{self, Command, Pending, Registry};

/// The embedded durable bus: SQLite in WAL mode in one data directory, no server.
///
/// One process owns a data directory at a time; a second [`EmbeddedBus::open`] on it fails
/// with [`BusError::DataDirLocked`]. Cloning is cheap and shares the bus.
#[derive(Clone)]
pub struct EmbeddedBus {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    config: EmbeddedConfig,
    writer: Mutex<Option<mpsc::Sender<Command>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    topics: RwLock<HashMap<String, Arc<TopicLog>>>,
    groups: Mutex<HashMap<String, Arc<Group>>>,
    readers: Mutex<Vec<Connection>>,
    closed: AtomicBool,
    ephemeral_ids: AtomicU64,
    _lock: Mutex<Option<File>>,
}

impl Registry for Inner {
    fn topic(&self, name: &str) -> Option<Arc<TopicLog>> {
        self.topics.read().unwrap().get(name).cloned()
    }

    fn add_topic(&self, topic: Arc<TopicLog>) {
        self.topics
            .write()
            .unwrap()
            .insert(topic.name.clone(), topic.clone());
        let groups: Vec<Arc<Group>> = self.groups.lock().unwrap().values().cloned().collect();
        for g in groups {
            if g.wants(&topic.name) {
                // A topic born after the subscription: everything in it is new to the group.
                if let Err(e) = self.attach(&g, &topic, &StartFrom::Beginning, false) {
                    tracing::error!(group = %g.name, topic = %topic.name, error = %e, "cannot attach group to new topic");
                }
                g.notify.notify_waiters();
            }
        }
    }

    fn topics(&self) -> Vec<Arc<TopicLog>> {
        self.topics.read().unwrap().values().cloned().collect()
    }
}

/// A Registry handle that does not keep the bus alive from its own writer thread.
struct WeakRegistry(std::sync::Weak<Inner>);

impl Registry for WeakRegistry {
    fn topic(&self, name: &str) -> Option<Arc<TopicLog>> {
        self.0.upgrade().and_then(|i| i.topic(name))
    }
    fn add_topic(&self, topic: Arc<TopicLog>) {
        if let Some(i) = self.0.upgrade() {
            i.add_topic(topic)
        }
    }
    fn topics(&self) -> Vec<Arc<TopicLog>> {
        self.0
            .upgrade()
            .map(|i| Registry::topics(&*i))
            .unwrap_or_default()
    }
}

impl EmbeddedBus {
    /// Opens (creating if needed) the bus in `config.dir`.
    pub async fn open(config: EmbeddedConfig) -> Result<EmbeddedBus, BusError> {
        tokio::task::spawn_blocking(move || Self::open_blocking(config))
            .await
            .map_err(|e| BusError::Storage(format!("open task failed: {e}")))?
    }

    fn open_blocking(config: EmbeddedConfig) -> Result<EmbeddedBus, BusError> {
        std::fs::create_dir_all(&config.dir).map_err(|e| {
            BusError::Storage(format!(
                "cannot create data directory {}: {e}",
                config.dir.display()
            ))
        })?;
        let lock_path = config.dir.join("LOCK");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| BusError::Storage(format!("cannot open {}: {e}", lock_path.display())))?;
        if let Err(e) = lock.try_lock() {
            return Err(BusError::DataDirLocked {
                path: config.dir.display().to_string(),
                detail: e.to_string(),
            });
        }
        let conn = store::open_connection(&config.dir, config.durability, true)?;
        store::migrate(&conn)?;
        let checkpointer = store::open_connection(&config.dir, config.durability, true)?;
        let logs = store::load_topics(&conn, config.cache_bytes_per_topic)?;
        let topics = logs
            .into_iter()
            .map(|l| (l.name.clone(), Arc::new(l)))
            .collect();
        let (tx, rx) = mpsc::channel();
        let inner = Arc::new(Inner {
            config: config.clone(),
            writer: Mutex::new(Some(tx)),
            writer_thread: Mutex::new(None),
            topics: RwLock::new(topics),
            groups: Mutex::new(HashMap::new()),
            readers: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            ephemeral_ids: AtomicU64::new(0),
            _lock: Mutex::new(Some(lock)),
        });
        let registry: Arc<dyn Registry> = Arc::new(WeakRegistry(Arc::downgrade(&inner)));
        let thread = std::thread::Builder::new()
            .name("ovasabi-bus-writer".into())
            .spawn(move || store::run_writer(conn, checkpointer, rx, registry, config))
            .map_err(|e| BusError::Storage(format!("cannot start the writer thread: {e}")))?;
        *inner.writer_thread.lock().unwrap() = Some(thread);
        Ok(EmbeddedBus { inner })
    }

    /// The configuration the bus runs with.
    pub fn config(&self) -> &EmbeddedConfig {
        &self.inner.config
    }
}

impl Inner {
    fn send(&self, cmd: Command) -> Result<(), BusError> {
        if self.closed.load(AtomicOrdering::Acquire) {
            return Err(BusError::Closed);
        }
        match &*self.writer.lock().unwrap() {
            Some(tx) => tx.send(cmd).map_err(|_| BusError::Closed),
            None => Err(BusError::Closed),
        }
    }

    fn with_reader<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, BusError>,
    ) -> Result<T, BusError> {
        let conn = self.readers.lock().unwrap().pop();
        let conn = match conn {
            Some(c) => c,
            None => store::open_connection(&self.config.dir, self.config.durability, false)?,
        };
        let out = f(&conn);
        if !self.closed.load(AtomicOrdering::Acquire) {
            self.readers.lock().unwrap().push(conn);
        }
        out
    }

    fn prepare(&self, topic: &str, mut event: Event) -> Result<Pending, BusError> {
        validate_topic(topic)?;
        event.validate()?;
        if event.data_len() > self.config.max_event_bytes {
            return Err(BusError::EventTooLarge {
                size: event.data_len(),
                max: self.config.max_event_bytes,
            });
        }
        if event.time.is_none() {
            event.time = Some(Utc::now());
        }
        let body = crate::codec::encode(&event);
        Ok(Pending {
            event: Arc::new(event),
            body,
        })
    }

    async fn append(&self, topic: &str, events: Vec<Pending>) -> Result<Vec<u64>, BusError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Append {
            topic: topic.to_owned(),
            events,
            reply,
        })?;
        rx.await.map_err(|_| BusError::Closed)?
    }

    /// Adds `log` to `group` with a position from storage, or from `start`.
    fn attach(
        &self,
        group: &Arc<Group>,
        log: &Arc<TopicLog>,
        start: &StartFrom,
        subscribing: bool,
    ) -> Result<bool, BusError> {
        let stored = if group.durable {
            self.with_reader(|c| store::load_position(c, &group.name, log.id))?
        } else {
            None
        };
        let (first, next) = log.range();
        let seek_to = |start: &StartFrom| -> Result<u64, BusError> {
            Ok(match start {
                StartFrom::Beginning => first,
                StartFrom::Latest => next,
                StartFrom::Offset(o) => (*o).clamp(first, next),
                StartFrom::Time(t) => {
                    self.with_reader(|c| store::offset_at_time(c, log.id, first, next, *t))?
                }
            })
        };
        let mut st = group.state.lock().unwrap();
        if let Some(&ti) = st.index.get(&log.name) {
            if subscribing && start.is_seek() {
                let to = seek_to(start)?;
                st.topics[ti].seek(to);
                return Ok(true);
            }
            return Ok(false);
        }
        let (cursor, acked, changed) = match stored {
            Some((cursor, deltas)) if !(subscribing && start.is_seek()) => {
                (cursor, store::absolute(cursor, deltas), false)
            }
            _ => (seek_to(start)?, Vec::new(), true),
        };
        let ti = st.topics.len();
        st.topics.push(TopicCursor::new(log.clone(), cursor, acked));
        st.index.insert(log.name.clone(), ti);
        drop(st);
        log.watch(group.notify.clone());
        Ok(changed)
    }

    async fn persist(&self, group: &Arc<Group>, topic: usize) -> Result<(), BusError> {
        if !group.durable {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        let (must_send, topic_id) = {
            let mut st = group.state.lock().unwrap();
            let id = st.topics[topic].log.id;
            (st.wait_persist(topic, tx), id)
        };
        if must_send {
            let sent = self.send(Command::Persist(Arc::new(PositionHandle {
                group: group.clone(),
                topic,
                topic_id,
            })));
            if sent.is_err() {
                // Other acks wait on this command too: answer them rather than leave them.
                group.state.lock().unwrap().persist_not_sent(topic);
            }
        }
        rx.await.map_err(|_| BusError::Closed)?
    }

    fn spawn_dead_letters(self: &Arc<Self>, group: &Arc<Group>, jobs: Vec<DeadLetterJob>) {
        for job in jobs {
            let reason = job.reason.clone();
            let inner = self.clone();
            let group = group.clone();
            tokio::spawn(async move {
                // A failed write is logged and retried by the group itself.
                let _ = inner
                    .dead_letter(&group, job.topic, job.entry, reason)
                    .await;
            });
        }
    }

    /// Writes `entry` to its topic's dead-letter topic and marks it done for the group, in
    /// one transaction.
    async fn dead_letter(
        &self,
        group: &Arc<Group>,
        topic: usize,
        entry: crate::group::Entry,
        reason: String,
    ) -> Result<(), BusError> {
        let (topic_name, topic_id) = {
            let st = group.state.lock().unwrap();
            (st.topics[topic].log.name.clone(), st.topics[topic].log.id)
        };
        let mut event = (*entry.stored.event).clone();
        event
            .extensions
            .insert(dead_letter::REASON.into(), reason.clone().into());
        if let Some(err) = &entry.last_error {
            event.extensions.insert(
                dead_letter::ERROR.into(),
                dead_letter::error_text(err).into(),
            );
        }
        event.extensions.insert(
            dead_letter::ATTEMPTS.into(),
            entry.attempts.to_string().into(),
        );
        event
            .extensions
            .insert(dead_letter::GROUP.into(), group.name.clone().into());
        event
            .extensions
            .insert(dead_letter::TOPIC.into(), topic_name.clone().into());
        event.extensions.insert(
            dead_letter::OFFSET.into(),
            entry.stored.offset.to_string().into(),
        );
        let body = crate::codec::encode(&event);
        let (reply, rx) = oneshot::channel();
        let offset = entry.stored.offset;
        let sent = self.send(Command::DeadLetter {
            topic: dead_letter_topic(&topic_name),
            event: Pending {
                event: Arc::new(event),
                body,
            },
            source: Arc::new(PositionHandle {
                group: group.clone(),
                topic,
                topic_id,
            }),
            offset,
            reply,
        });
        let result = match sent {
            Ok(()) => rx.await.unwrap_or(Err(BusError::Closed)),
            Err(e) => Err(e),
        };
        match &result {
            Ok(()) => {
                tracing::warn!(group = %group.name, topic = %topic_name, offset, %reason, error = ?entry.last_error, "event dead-lettered")
            }
            Err(e) => {
                tracing::error!(group = %group.name, topic = %topic_name, offset, error = %e, "dead-letter write failed; will retry");
                group
                    .state
                    .lock()
                    .unwrap()
                    .dead_letter_failed(topic, entry, Instant::now(), e);
            }
        }
        group.notify.notify_waiters();
        result
    }

    fn run_fetch(self: &Arc<Self>, group: &Arc<Group>, job: FetchJob) {
        let inner = self.clone();
        let group = group.clone();
        tokio::spawn(async move {
            let reader = inner.clone();
            let (id, from, limit) = (job.log.id, job.from, job.limit);
            let read = tokio::task::spawn_blocking(move || {
                reader.with_reader(|c| store::read_range(c, id, from, limit))
            })
            .await;
            {
                let mut st = group.state.lock().unwrap();
                match read {
                    Ok(Ok(events)) => st.fetched(job.topic, from, events),
                    Ok(Err(e)) => {
                        tracing::error!(topic = %job.log.name, error = %e, "reading events failed");
                        st.fetch_failed(job.topic);
                    }
                    Err(e) => {
                        tracing::error!(topic = %job.log.name, error = %e, "read task failed");
                        st.fetch_failed(job.topic);
                    }
                }
            }
            group.notify.notify_waiters();
        });
    }
}

#[async_trait]
impl Publisher for EmbeddedBus {
    async fn publish(&self, topic: &str, event: Event) -> Result<Published, BusError> {
        let pending = self.inner.prepare(topic, event)?;
        let offsets = self.inner.append(topic, vec![pending]).await?;
        Ok(Published {
            topic: topic.to_owned(),
            offset: offsets[0],
        })
    }

    async fn publish_batch(
        &self,
        topic: &str,
        events: Vec<Event>,
    ) -> Result<Vec<Published>, BusError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let pending = events
            .into_iter()
            .map(|e| self.inner.prepare(topic, e))
            .collect::<Result<Vec<_>, _>>()?;
        let offsets = self.inner.append(topic, pending).await?;
        Ok(offsets
            .into_iter()
            .map(|offset| Published {
                topic: topic.to_owned(),
                offset,
            })
            .collect())
    }
}

#[async_trait]
impl Subscriber for EmbeddedBus {
    async fn subscribe(&self, options: SubscribeOptions) -> Result<Subscription, BusError> {
        options.validate()?;
        if self.inner.closed.load(AtomicOrdering::Acquire) {
            return Err(BusError::Closed);
        }
        let settings = Settings {
            ack_timeout: options.ack_timeout,
            max_deliveries: options.max_deliveries,
            ordering: options.ordering,
        };
        let group_key = if options.ephemeral {
            let n = self
                .inner
                .ephemeral_ids
                .fetch_add(1, AtomicOrdering::Relaxed);
            format!("{}#ephemeral-{n}", options.group)
        } else {
            options.group.clone()
        };
        let group = {
            let mut groups = self.inner.groups.lock().unwrap();
            groups
                .entry(group_key.clone())
                .or_insert_with(|| {
                    Arc::new(Group::new(
                        options.group.clone(),
                        !options.ephemeral,
                        settings,
                    ))
                })
                .clone()
        };
        group.state.lock().unwrap().settings = settings;
        let member = group.add_member(options.topics.clone(), options.max_in_flight);
        let inner = self.inner.clone();
        let logs: Vec<Arc<TopicLog>> = Registry::topics(&*inner)
            .into_iter()
            .filter(|l| options.topics.iter().any(|p| p.matches(&l.name)))
            .collect();
        let attach = (|| {
            let mut changed = Vec::new();
            for log in &logs {
                if inner.attach(&group, log, &options.start, true)? {
                    changed.push(log.name.clone());
                }
            }
            Ok::<_, BusError>(changed)
        })();
        let changed = match attach {
            Ok(c) => c,
            Err(e) => {
                group.remove_member(member);
                return Err(e);
            }
        };
        // A new or moved position is stored before the subscription starts, so a `Latest`
        // group that restarts does not skip what was published in between.
        for name in changed {
            let ti = group.state.lock().unwrap().index[&name];
            inner.persist(&group, ti).await?;
        }
        group.notify.notify_waiters();
        let acker: Arc<dyn Acknowledger> = Arc::new(GroupAcker {
            inner: inner.clone(),
            group: group.clone(),
        });
        Ok(Subscription::new(Box::new(Member {
            inner,
            group,
            group_key,
            member,
            acker,
            closed: false,
        })))
    }
}

/// One member of a group: a subscription's source of deliveries.
struct Member {
    inner: Arc<Inner>,
    group: Arc<Group>,
    group_key: String,
    member: u64,
    acker: Arc<dyn Acknowledger>,
    closed: bool,
}

impl Member {
    fn deliver(&self, c: Claimed) -> Delivery {
        Delivery::new(
            c.stored.event.clone(),
            DeliveryInfo {
                topic: c.topic_name,
                offset: c.stored.offset,
                group: self.group.name.clone(),
                attempt: c.attempt,
                published_at: c.stored.published_at,
            },
            self.acker.clone(),
        )
    }

    fn leave(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        let remaining = self.group.remove_member(self.member);
        if !remaining && !self.group.durable {
            self.inner.groups.lock().unwrap().remove(&self.group_key);
        }
    }
}

#[async_trait]
impl DeliverySource for Member {
    async fn next(&mut self) -> Option<Result<Delivery, BusError>> {
        loop {
            if self.closed || self.inner.closed.load(AtomicOrdering::Acquire) {
                return None;
            }
            let notified = self.group.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = Instant::now();
            let (claimed, fetch, jobs, timer) = {
                let mut st = self.group.state.lock().unwrap();
                if st.closed {
                    return None;
                }
                let jobs = st.expire(now);
                let (claimed, fetch) = st.claim(self.member, now);
                (claimed, fetch, jobs, st.next_timer())
            };
            if !jobs.is_empty() {
                self.inner.spawn_dead_letters(&self.group, jobs);
            }
            for job in fetch {
                self.inner.run_fetch(&self.group, job);
            }
            if let Some(c) = claimed {
                return Some(Ok(self.deliver(c)));
            }
            match timer {
                Some(at) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    async fn close(&mut self) {
        self.leave();
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.leave();
    }
}

/// Acks, nacks and dead-letters for one group.
struct GroupAcker {
    inner: Arc<Inner>,
    group: Arc<Group>,
}

impl GroupAcker {
    fn topic_index(&self, info: &DeliveryInfo) -> Result<usize, BusError> {
        self.group
            .state
            .lock()
            .unwrap()
            .index
            .get(&info.topic)
            .copied()
            .ok_or_else(|| {
                BusError::InvalidOptions(format!(
                    "group {} does not read topic {}",
                    info.group, info.topic
                ))
            })
    }
}

#[async_trait]
impl Acknowledger for GroupAcker {
    async fn ack(&self, info: &DeliveryInfo) -> Result<(), BusError> {
        if self.inner.closed.load(AtomicOrdering::Acquire) {
            return Err(BusError::Closed);
        }
        let ti = self.topic_index(info)?;
        let changed = self.group.state.lock().unwrap().ack(ti, info.offset);
        if changed {
            self.group.notify.notify_waiters();
        }
        // Even an ack that changed nothing waits for the position that holds it to be stored.
        self.inner.persist(&self.group, ti).await
    }

    async fn nack(
        &self,
        info: &DeliveryInfo,
        delay: Duration,
        error: Option<String>,
    ) -> Result<(), BusError> {
        if self.inner.closed.load(AtomicOrdering::Acquire) {
            return Err(BusError::Closed);
        }
        let ti = self.topic_index(info)?;
        let job = self.group.state.lock().unwrap().nack(
            ti,
            info.offset,
            info.attempt,
            delay,
            error,
            Instant::now(),
        );
        if let Some(job) = job {
            self.inner
                .dead_letter(&self.group, job.topic, job.entry, job.reason)
                .await?;
        }
        self.group.notify.notify_waiters();
        Ok(())
    }

    async fn dead_letter(&self, info: &DeliveryInfo, why: DeadLetter) -> Result<(), BusError> {
        if self.inner.closed.load(AtomicOrdering::Acquire) {
            return Err(BusError::Closed);
        }
        let ti = self.topic_index(info)?;
        let entry =
            self.group
                .state
                .lock()
                .unwrap()
                .take_for_dead_letter(ti, info.offset, why.error);
        match entry {
            DeadLetterTake::Take(entry) => {
                self.inner
                    .dead_letter(&self.group, ti, entry, why.reason)
                    .await
            }
            DeadLetterTake::Done => Ok(()),
            DeadLetterTake::Pending(rx) => rx.await.unwrap_or(Err(BusError::Closed)),
            DeadLetterTake::NotHeld => Err(BusError::InvalidOptions(format!(
                "offset {} of {} is not pending for group {}: a replay moved the group, so it will be delivered again",
                info.offset, info.topic, info.group
            ))),
        }
    }
}

#[async_trait]
impl Bus for EmbeddedBus {
    async fn topics(&self) -> Result<Vec<TopicInfo>, BusError> {
        let inner = self.inner.clone();
        let positions =
            tokio::task::spawn_blocking(move || inner.with_reader(store::all_positions))
                .await
                .map_err(|e| BusError::Storage(e.to_string()))??;
        let live: Vec<Arc<Group>> = self
            .inner
            .groups
            .lock()
            .unwrap()
            .values()
            .filter(|g| g.durable)
            .cloned()
            .collect();
        let mut out: Vec<TopicInfo> = Registry::topics(&*self.inner)
            .into_iter()
            .map(|log| {
                let (first, next) = log.range();
                let mut groups: Vec<GroupInfo> = Vec::new();
                for (name, topic_id, cursor) in &positions {
                    if *topic_id != log.id {
                        continue;
                    }
                    // A running group knows acks newer than its stored row.
                    let live_lag = live.iter().find(|g| &g.name == name).and_then(|g| {
                        let st = g.state.lock().unwrap();
                        st.index
                            .get(&log.name)
                            .map(|&ti| (st.topics[ti].cursor, st.lag(ti)))
                    });
                    let (position, lag) =
                        live_lag.unwrap_or((*cursor, next.saturating_sub((*cursor).max(first))));
                    groups.push(GroupInfo {
                        group: name.clone(),
                        position,
                        lag,
                    });
                }
                groups.sort_by(|a, b| a.group.cmp(&b.group));
                TopicInfo {
                    topic: log.name.clone(),
                    retained: next - first,
                    first_offset: first,
                    next_offset: next,
                    groups,
                }
            })
            .collect();
        out.sort_by(|a, b| a.topic.cmp(&b.topic));
        Ok(out)
    }

    async fn close(&self) -> Result<(), BusError> {
        if self.inner.closed.load(AtomicOrdering::Acquire) {
            return Ok(());
        }
        let (reply, rx) = oneshot::channel();
        let sent = self.inner.send(Command::Close(reply));
        self.inner.closed.store(true, AtomicOrdering::Release);
        if sent.is_ok() {
            let _ = rx.await;
        }
        self.inner.writer.lock().unwrap().take();
        let thread = self.inner.writer_thread.lock().unwrap().take();
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        self.inner.readers.lock().unwrap().clear();
        for g in self.inner.groups.lock().unwrap().values() {
            let mut st = g.state.lock().unwrap();
            st.closed = true;
            // A write that raced the close was never taken by the writer: its waiters learn
            // that the bus is closed (and their events will be delivered again after a
            // restart) instead of waiting forever.
            st.fail_waiters();
            drop(st);
            g.notify.notify_waiters();
        }
        self.inner._lock.lock().unwrap().take();
        Ok(())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The bus was dropped without `close`: let the writer finish what it has and stop.
        self.writer.lock().unwrap().take();
        if let Some(t) = self.writer_thread.lock().unwrap().take() {
            let _ = t.join();
        }
    }
}
