//! [`NatsBus`]: the Bus API over a NATS connection: publishing, topic streams, inspection
//! and closing. Subscriptions live in `member`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, stream};
use async_nats::{Client, ConnectOptions, Request, RequestErrorKind, Subject};
use async_trait::async_trait;
use chrono::Utc;
use ovasabi_core::naming::validate_topic;
use ovasabi_core::{
    Bus, BusError, Event, GroupInfo, Published, Publisher, SubscribeOptions, Subscriber,
    Subscription, TopicInfo,
};
use tokio::sync::{watch, Notify, OnceCell};
use tokio_util::sync::CancellationToken;

use crate::api::{Api, ApiError};
use crate::codec;
use crate::config::{data_limit, NatsConfig};
use crate::layout;
use crate::member::MemberShared;
use crate::provision::{self, stream_config};

/// The NATS JetStream bus: one stream per topic, durable pull consumers per group.
///
/// Every piece of state (events, group positions, unacked deliveries) lives in the server,
/// so a bus is only a connection: [`Bus::close`] then [`NatsBus::connect`] again is a
/// restart that loses nothing. Cloning is cheap and shares the connection.
#[derive(Clone)]
pub struct NatsBus {
    pub(crate) inner: Arc<Inner>,
}

/// A topic's stream, as the bus uses it.
#[derive(Clone, Debug)]
pub(crate) struct TopicMeta {
    /// The topic as users name it.
    pub(crate) topic: String,
    /// The name its subjects are built on: the topic, in the bus's namespace
    /// ([`layout::qualified_topic`]).
    pub(crate) stored: String,
    pub(crate) stream: String,
    pub(crate) partitions: u32,
    /// The subject of each partition, then the unkeyed subject (`partitions + 1` of them),
    /// built once rather than on every publish.
    subjects: Arc<[Subject]>,
}

impl TopicMeta {
    fn new(topic: &str, stored: &str, stream: String, partitions: u32) -> Self {
        let subjects = (0..partitions)
            .map(|p| Subject::from(layout::partition_subject(stored, p)))
            .chain([Subject::from(layout::unkeyed_subject(stored))])
            .collect();
        TopicMeta {
            topic: topic.to_owned(),
            stored: stored.to_owned(),
            stream,
            partitions,
            subjects,
        }
    }

    /// The subject an event with partition key `key` (or none) goes to: the same as
    /// [`layout::subject_for`].
    fn subject_for(&self, key: Option<&str>) -> Subject {
        let index = match key {
            Some(key) => layout::partition_of(key, self.partitions) as usize,
            None => self.partitions as usize,
        };
        self.subjects[index].clone()
    }

    /// The subject of events without a partition key.
    pub(crate) fn unkeyed_subject(&self) -> Subject {
        self.subjects[self.partitions as usize].clone()
    }
}

pub(crate) struct Inner {
    pub(crate) config: NatsConfig,
    pub(crate) client: Client,
    pub(crate) api: Api,
    /// The server's limit on a whole message.
    pub(crate) max_payload: usize,
    /// The largest `data` accepted: see [`data_limit`].
    pub(crate) max_data: usize,
    topics: Mutex<HashMap<String, Arc<OnceCell<Arc<TopicMeta>>>>>,
    closed: AtomicBool,
    publishing: AtomicUsize,
    published: Notify,
    members: Mutex<HashMap<u64, Weak<MemberShared>>>,
    next_member: AtomicU64,
    /// Fired by [`Bus::close`]: pull loops stop at once.
    pub(crate) closing: CancellationToken,
    /// Bumped each time the connection is (re)established, so pull loops renew their pull
    /// requests at once instead of waiting for them to expire.
    pub(crate) connections: watch::Receiver<u64>,
    /// The last error a handler gave when nacking, by `group/topic/offset`: it goes into the
    /// dead-letter copy. Kept in memory only.
    last_errors: Mutex<HashMap<String, String>>,
    /// What the server's delivery count of a message does not tell, by message. Kept in
    /// memory only.
    counts: Mutex<HashMap<MessageKey, DeliveryCounts>>,
}

/// One message of one consumer: `stream/consumer` (shared by the consumer's messages, so
/// naming a message allocates nothing) and the stream sequence.
pub(crate) type MessageKey = (Arc<str>, u64);

/// Deliveries of one message the bus does not hold against it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DeliveryCounts {
    /// Deliveries that never reached a handler (taken into a subscription's buffer and
    /// handed back): they are not attempts at all, so they are subtracted from the server's
    /// delivery count to give the attempt number.
    pub(crate) unused: u32,
    /// Deliveries a handler got and handed back unsettled within the ack timeout (a dropped
    /// delivery, a closing subscription): attempts, but not counted towards
    /// `max_deliveries`, as on the embedded bus.
    pub(crate) forgiven: u32,
}

/// Most last-errors kept; past it the map is cleared (they only enrich dead letters).
const MAX_LAST_ERRORS: usize = 100_000;

impl NatsBus {
    /// Connects to the server(s) in `config.url` and checks that JetStream is enabled.
    ///
    /// The client reconnects by itself after a connection loss; subscriptions renew their
    /// pull requests when it does, and publishes or acks attempted while it is down fail
    /// with [`BusError::Unavailable`] (a publish may be retried as is: see
    /// [`Publisher::publish`] on this type).
    ///
    /// A [`namespace`](NatsConfig#structfield.namespace) that is not a valid namespace is
    /// refused with [`BusError::InvalidOptions`] before anything is sent.
    pub async fn connect(config: NatsConfig) -> Result<NatsBus, BusError> {
        if let Some(ns) = &config.namespace {
            layout::validate_namespace(ns)
                .map_err(|why| BusError::InvalidOptions(format!("NatsConfig::namespace: {why}")))?;
        }
        let (connected_tx, connections) = watch::channel(0u64);
        let connected_tx = Arc::new(connected_tx);
        let options = ConnectOptions::new()
            .name(config.connection_name.clone())
            .request_timeout(Some(config.request_timeout))
            .event_callback(move |event| {
                let connected_tx = connected_tx.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!("connected to NATS");
                            connected_tx.send_modify(|n| *n += 1);
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!("disconnected from NATS; reconnecting")
                        }
                        other => tracing::debug!(event = %other, "NATS connection event"),
                    }
                }
            });
        let client = options.connect(config.url.as_str()).await.map_err(|e| {
            BusError::Unavailable(format!(
                "cannot connect to NATS at {}: {e}; start a server with JetStream (`nats-server -js`) or pass its URL with --bus / OVASABI_BUS",
                config.url
            ))
        })?;
        let info = client.server_info();
        let js = jetstream::ContextBuilder::new()
            .timeout(config.request_timeout)
            .build(client.clone());
        let api = Api { js };
        if let Err(e) = api.account_info().await {
            return Err(BusError::Unavailable(format!(
                "the NATS server at {} (version {}) does not answer JetStream requests ({e}); start it with JetStream enabled (`nats-server -js`)",
                config.url, info.version
            )));
        }
        let max_payload = info.max_payload;
        let max_data = data_limit(config.max_data_bytes, max_payload);
        if max_data < config.max_data_bytes {
            tracing::info!(
                max_payload,
                max_data,
                configured = config.max_data_bytes,
                "the NATS server's max_payload ({max_payload} bytes) limits an event's data to {max_data} bytes (64 KiB stay for its attributes); set `max_payload` higher in the server's configuration to accept {} bytes",
                config.max_data_bytes
            );
        }
        Ok(NatsBus {
            inner: Arc::new(Inner {
                api,
                client,
                max_payload,
                max_data,
                topics: Mutex::new(HashMap::new()),
                closed: AtomicBool::new(false),
                publishing: AtomicUsize::new(0),
                published: Notify::new(),
                members: Mutex::new(HashMap::new()),
                next_member: AtomicU64::new(0),
                connections,
                closing: CancellationToken::new(),
                last_errors: Mutex::new(HashMap::new()),
                counts: Mutex::new(HashMap::new()),
                config,
            }),
        })
    }

    /// The configuration the bus runs with.
    pub fn config(&self) -> &NatsConfig {
        &self.inner.config
    }

    /// The largest payload (`data`) this bus accepts: the configured maximum, lowered to fit
    /// the server's `max_payload` (see [`crate::config::data_limit`]).
    pub fn max_data_bytes(&self) -> usize {
        self.inner.max_data
    }

    /// The underlying NATS client, for what the Bus API does not cover.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The namespace the bus's topics live in (the configured
    /// [`namespace`](NatsConfig#structfield.namespace)).
    pub fn namespace(&self) -> Option<&str> {
        self.inner.namespace()
    }

    /// Deletes `topic`'s stream (in the bus's namespace) with its events and every group's
    /// consumers of it. Returns whether there was one.
    pub async fn delete_topic(&self, topic: &str) -> Result<bool, BusError> {
        validate_topic(topic)?;
        self.inner.check_open()?;
        let stream = layout::stream_name(&self.inner.stored(topic));
        self.forget_topic(topic);
        match self.inner.api.delete_stream(&stream).await {
            Ok(()) => Ok(true),
            Err(ApiError::NotFound(_)) => Ok(false),
            Err(e) => Err(e.into_bus(&format!("deleting stream {stream} of `{topic}`"))),
        }
    }

    pub(crate) fn api(&self) -> &Api {
        &self.inner.api
    }

    /// Drops what the bus remembers of `topic`'s stream, so the next use reads it again.
    pub(crate) fn forget_topic(&self, topic: &str) {
        self.inner.forget_topic(topic);
    }
}

/// Marks a publish in progress, so [`Bus::close`] waits for it.
struct PublishGuard<'a>(&'a Inner);

impl Drop for PublishGuard<'_> {
    fn drop(&mut self) {
        if self.0.publishing.fetch_sub(1, AtomicOrdering::AcqRel) == 1 {
            self.0.published.notify_waiters();
        }
    }
}

impl Inner {
    /// The namespace the bus's topics live in.
    pub(crate) fn namespace(&self) -> Option<&str> {
        self.config.namespace.as_deref()
    }

    /// The name `topic` (or a pattern) is stored under: see [`layout::qualified_topic`].
    pub(crate) fn stored<'a>(&self, topic: &'a str) -> std::borrow::Cow<'a, str> {
        layout::qualified_topic(self.namespace(), topic)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(AtomicOrdering::Acquire)
    }

    pub(crate) fn check_open(&self) -> Result<(), BusError> {
        if self.is_closed() {
            Err(BusError::Closed)
        } else {
            Ok(())
        }
    }

    fn begin_publish(&self) -> Result<PublishGuard<'_>, BusError> {
        self.publishing.fetch_add(1, AtomicOrdering::AcqRel);
        let guard = PublishGuard(self);
        self.check_open()?;
        Ok(guard)
    }

    pub(crate) fn forget_topic(&self, topic: &str) {
        self.topics.lock().unwrap().remove(topic);
    }

    /// `topic`'s stream if the bus already uses it (its name was checked then).
    fn known_topic(&self, topic: &str) -> Option<Arc<TopicMeta>> {
        let topics = self.topics.lock().unwrap();
        topics.get(topic).and_then(|cell| cell.get().cloned())
    }

    /// `topic`'s stream, created with the configured settings if it does not exist yet.
    pub(crate) async fn ensure_topic(&self, topic: &str) -> Result<Arc<TopicMeta>, BusError> {
        let cell = self
            .topics
            .lock()
            .unwrap()
            .entry(topic.to_owned())
            .or_insert_with(|| Arc::new(OnceCell::new()))
            .clone();
        cell.get_or_try_init(|| async { self.open_topic(topic).await.map(Arc::new) })
            .await
            .cloned()
    }

    async fn open_topic(&self, topic: &str) -> Result<TopicMeta, BusError> {
        let want = stream_config(
            self.namespace(),
            topic,
            self.config.streams.settings_for(topic),
        );
        let info = match self.api.stream_info(&want.name).await {
            Ok(info) => info,
            Err(ApiError::NotFound(_)) => match self.api.create_stream(&want).await {
                Ok(info) => {
                    tracing::info!(topic, stream = %want.name, "created stream");
                    info
                }
                // Created meanwhile by another process.
                Err(ApiError::Exists(_)) => self
                    .api
                    .stream_info(&want.name)
                    .await
                    .map_err(|e| e.into_bus(&format!("reading stream {}", want.name)))?,
                Err(ApiError::Refused { message, .. }) if message.contains("overlap") => {
                    return Err(BusError::Storage(format!(
                        "cannot create stream {} for topic `{topic}`: another stream on the server already takes subjects `{}` ({message}); remove or narrow that stream",
                        want.name,
                        layout::stream_subjects(&self.stored(topic))
                    )))
                }
                Err(e) => {
                    return Err(
                        e.into_bus(&format!("creating stream {} for `{topic}`", want.name))
                    )
                }
            },
            Err(e) => return Err(e.into_bus(&format!("reading stream {}", want.name))),
        };
        self.meta_from_info(topic, &info)
    }

    pub(crate) fn meta_from_info(
        &self,
        topic: &str,
        info: &stream::Info,
    ) -> Result<TopicMeta, BusError> {
        let description = info.config.description.as_deref();
        match layout::parse_stream_description_in(description, self.namespace()) {
            Some((named, partitions)) if named == topic => Ok(TopicMeta::new(
                topic,
                &self.stored(topic),
                info.config.name.clone(),
                partitions.max(1),
            )),
            _ => Err(BusError::Storage(format!(
                "stream {} exists but does not hold OVASABI topic `{topic}`{} (its description is {:?}); remove it or use another topic name",
                info.config.name,
                match self.namespace() {
                    Some(ns) => format!(" of namespace `{ns}`"),
                    None => String::new(),
                },
                info.config.description
            ))),
        }
    }

    /// Checks an event and fills in its time; nothing is sent.
    fn prepare(&self, mut event: Event) -> Result<Event, BusError> {
        event.validate()?;
        if event.data_len() > self.max_data {
            return Err(BusError::EventTooLarge {
                size: event.data_len(),
                max: self.max_data,
            });
        }
        if event.time.is_none() {
            event.time = Some(Utc::now());
        }
        Ok(event)
    }

    /// Publishes events already checked to `topic`, in order, each with its deduplication
    /// id; returns once every PubAck arrived. Not atomic: see the crate docs.
    pub(crate) async fn send(
        &self,
        topic: &str,
        known: Option<Arc<TopicMeta>>,
        events: &[(Event, String)],
    ) -> Result<Vec<Published>, BusError> {
        // `ensure_topic`'s future is large (the JetStream requests that may create the
        // stream) and rarely needed: boxed, it stays out of every publish's future, which is
        // otherwise allocated and copied at that size on each call.
        let mut meta = match known {
            Some(meta) => meta,
            None => Box::pin(self.ensure_topic(topic)).await?,
        };
        let mut retried = false;
        loop {
            let outcome = self.send_to(&meta, events).await;
            match outcome {
                Err(SendError::StreamMissing) if !retried => {
                    // Deleted behind our back: create it again and resend (the ids keep
                    // events already stored from being stored twice).
                    retried = true;
                    self.forget_topic(topic);
                    meta = Box::pin(self.ensure_topic(topic)).await?;
                }
                Err(SendError::StreamMissing) => {
                    // The stream exists, yet nothing answers on its subjects: JetStream is
                    // not serving it yet (a restarted server recovering its streams).
                    return Err(BusError::Unavailable(format!(
                        "JetStream does not answer on `{}` although stream {} exists; the server may be starting up (publishing again is safe)",
                        layout::stream_subjects(&meta.stored),
                        meta.stream
                    )));
                }
                Err(SendError::Bus(e)) => return Err(e),
                Ok(published) => return Ok(published),
            }
        }
    }

    async fn send_to(
        &self,
        meta: &TopicMeta,
        events: &[(Event, String)],
    ) -> Result<Vec<Published>, SendError> {
        let mut acks: Vec<PublishAckFuture> = Vec::with_capacity(events.len());
        for (event, msg_id) in events {
            let encoded = codec::encode(event, &meta.stream, msg_id, self.max_payload)?;
            let subject = meta.subject_for(event.partition_key());
            let message = PublishMessage::build()
                .payload(encoded.body)
                .headers(encoded.headers);
            // Sent one after another on one connection, so the server stores them in this
            // order; the acks are awaited together below.
            let ack = self
                .api
                .js
                .send_publish(subject, message)
                .await
                .map_err(|e| self.publish_error(meta, e.kind(), &e.to_string()))?;
            acks.push(ack);
        }
        let outcomes = if acks.len() == 1 {
            // A single publish, the common case: no need to join.
            let ack = acks.pop().expect("one ack");
            vec![ack.await]
        } else {
            futures::future::join_all(acks.into_iter().map(std::future::IntoFuture::into_future))
                .await
        };
        let mut published = Vec::with_capacity(outcomes.len());
        let mut failure = None;
        for outcome in outcomes {
            match outcome {
                Ok(ack) => published.push(Published {
                    topic: meta.topic.clone(),
                    offset: ack.sequence.saturating_sub(1),
                }),
                Err(e) => {
                    let err = self.publish_error(meta, e.kind(), &e.to_string());
                    if failure.is_none() || matches!(err, SendError::StreamMissing) {
                        failure = Some(err);
                    }
                }
            }
        }
        match failure {
            Some(err) => Err(err),
            None => Ok(published),
        }
    }

    fn publish_error(&self, meta: &TopicMeta, kind: PublishErrorKind, detail: &str) -> SendError {
        let topic = &meta.topic;
        SendError::Bus(match kind {
            PublishErrorKind::StreamNotFound => return SendError::StreamMissing,
            PublishErrorKind::TimedOut => BusError::Unavailable(format!(
                "no acknowledgement from JetStream for `{topic}` (stream {}) within {:?}; the event may or may not be stored: publishing it again is safe, the stream stores one copy of a source and id within its duplicate window",
                meta.stream, self.config.request_timeout
            )),
            PublishErrorKind::MaxPayloadExceeded => BusError::Storage(format!(
                "publishing to `{topic}`: {detail}; the server's max_payload is smaller than when the bus connected"
            )),
            PublishErrorKind::BrokenPipe | PublishErrorKind::MaxAckPending => {
                BusError::Unavailable(format!(
                    "publishing to `{topic}`: {detail}; the connection to NATS was lost (publishing again is safe)"
                ))
            }
            PublishErrorKind::Other if self.is_closed() => BusError::Closed,
            _ if detail.contains("(code 503") => BusError::Unavailable(format!(
                "publishing to `{topic}`: {detail} (publishing again is safe)"
            )),
            _ if detail.contains("error code") => {
                BusError::Storage(format!("JetStream refused the event for `{topic}`: {detail}"))
            }
            _ => BusError::Unavailable(format!(
                "publishing to `{topic}`: {detail} (publishing again is safe)"
            )),
        })
    }

    /// Sends `payload` to a message's ack subject and waits for the server's confirmation.
    pub(crate) async fn confirm(
        &self,
        reply: &Subject,
        payload: &'static str,
    ) -> Result<(), BusError> {
        self.confirm_bytes(reply, bytes::Bytes::from_static(payload.as_bytes()))
            .await
    }

    pub(crate) async fn confirm_bytes(
        &self,
        reply: &Subject,
        payload: bytes::Bytes,
    ) -> Result<(), BusError> {
        self.check_open()?;
        let request = Request::new()
            .payload(payload)
            .timeout(Some(self.config.request_timeout));
        match self.client.send_request(reply.clone(), request).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == RequestErrorKind::NoResponders => Err(BusError::Unavailable(
                "the server did not take the acknowledgement: the group's consumer no longer exists (the group was moved with StartFrom::Offset/Time, or deleted); the event will be delivered again from the group's new position".to_owned(),
            )),
            Err(e) if e.kind() == RequestErrorKind::TimedOut => Err(BusError::Unavailable(format!(
                "no confirmation of the acknowledgement from NATS within {:?}; the event may be delivered again",
                self.config.request_timeout
            ))),
            Err(_) if self.is_closed() => Err(BusError::Closed),
            Err(e) => Err(BusError::Unavailable(format!(
                "acknowledging: {e}; the event may be delivered again"
            ))),
        }
    }

    /// Sends `payload` to a message's ack subject from a task of its own, without waiting
    /// (a nak for a delivery dropped unsettled).
    pub(crate) fn signal(&self, reply: Subject, payload: bytes::Bytes) {
        let client = self.client.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = client.publish(reply, payload).await;
            });
        }
    }

    fn error_key(group: &str, topic: &str, offset: u64) -> String {
        format!("{group}/{topic}/{offset}")
    }

    pub(crate) fn remember_error(&self, group: &str, topic: &str, offset: u64, error: &str) {
        let mut errors = self.last_errors.lock().unwrap();
        if errors.len() >= MAX_LAST_ERRORS {
            errors.clear();
        }
        errors.insert(Self::error_key(group, topic, offset), error.to_owned());
    }

    pub(crate) fn last_error(&self, group: &str, topic: &str, offset: u64) -> Option<String> {
        self.last_errors
            .lock()
            .unwrap()
            .get(&Self::error_key(group, topic, offset))
            .cloned()
    }

    pub(crate) fn forget_error(&self, group: &str, topic: &str, offset: u64) {
        let mut errors = self.last_errors.lock().unwrap();
        if !errors.is_empty() {
            errors.remove(&Self::error_key(group, topic, offset));
        }
    }

    /// Updates what is counted about the message `key`.
    pub(crate) fn count(&self, key: &MessageKey, update: impl FnOnce(&mut DeliveryCounts)) {
        let mut counts = self.counts.lock().unwrap();
        if counts.len() >= MAX_LAST_ERRORS {
            counts.clear();
        }
        update(counts.entry(key.clone()).or_default());
    }

    pub(crate) fn counts(&self, key: &MessageKey) -> DeliveryCounts {
        let counts = self.counts.lock().unwrap();
        if counts.is_empty() {
            return DeliveryCounts::default();
        }
        counts.get(key).copied().unwrap_or_default()
    }

    pub(crate) fn forget_counts(&self, key: &MessageKey) {
        let mut counts = self.counts.lock().unwrap();
        if !counts.is_empty() {
            counts.remove(key);
        }
    }

    pub(crate) fn new_member_id(&self) -> u64 {
        self.next_member.fetch_add(1, AtomicOrdering::Relaxed)
    }

    pub(crate) fn register_member(&self, id: u64, member: &Arc<MemberShared>) {
        self.members
            .lock()
            .unwrap()
            .insert(id, Arc::downgrade(member));
    }

    pub(crate) fn unregister_member(&self, id: u64) {
        self.members.lock().unwrap().remove(&id);
    }
}

enum SendError {
    StreamMissing,
    Bus(BusError),
}

impl From<BusError> for SendError {
    fn from(e: BusError) -> Self {
        SendError::Bus(e)
    }
}

#[async_trait]
impl Publisher for NatsBus {
    /// Publishes one event; returns once JetStream acknowledged it (stored in the stream).
    ///
    /// The event's `source` and `id` are its `Nats-Msg-Id`: publishing the same event again
    /// within the stream's duplicate window (2 minutes by default) stores nothing new and
    /// returns the first copy's offset, so retrying after an `Unavailable` error is safe.
    async fn publish(&self, topic: &str, event: Event) -> Result<Published, BusError> {
        let known = self.inner.known_topic(topic);
        if known.is_none() {
            validate_topic(topic)?;
        }
        let event = self.inner.prepare(event)?;
        let _guard = self.inner.begin_publish()?;
        let msg_id = codec::publish_message_id(&event);
        let mut published = self.inner.send(topic, known, &[(event, msg_id)]).await?;
        Ok(published.remove(0))
    }

    /// Publishes events in order; returns once every one was acknowledged.
    ///
    /// Every event is checked before anything is sent, so an invalid or oversized event
    /// writes nothing. JetStream 2.9 has no atomic batch, though: if the connection fails
    /// midway, some events may be stored and others not. Publishing the same batch again is
    /// safe (each event is stored once within the duplicate window) and completes it.
    async fn publish_batch(
        &self,
        topic: &str,
        events: Vec<Event>,
    ) -> Result<Vec<Published>, BusError> {
        validate_topic(topic)?;
        let prepared = events
            .into_iter()
            .map(|e| {
                self.inner.prepare(e).map(|e| {
                    let id = codec::publish_message_id(&e);
                    (e, id)
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if prepared.is_empty() {
            self.inner.check_open()?;
            return Ok(Vec::new());
        }
        let _guard = self.inner.begin_publish()?;
        self.inner.send(topic, None, &prepared).await
    }
}

#[async_trait]
impl Subscriber for NatsBus {
    async fn subscribe(&self, options: SubscribeOptions) -> Result<Subscription, BusError> {
        options.validate()?;
        self.inner.check_open()?;
        crate::member::subscribe(self.inner.clone(), options).await
    }
}

#[async_trait]
impl Bus for NatsBus {
    /// Every OVASABI stream of the bus's namespace (or of none, without one) with its counts,
    /// and each durable group's position (the ack floor of its consumers: a lower bound when
    /// acks are out of order) and lag (events pending plus delivered-but-unacked, summed over
    /// the group's consumers).
    async fn topics(&self) -> Result<Vec<TopicInfo>, BusError> {
        self.inner.check_open()?;
        let status = provision::status(self).await?;
        Ok(status
            .streams
            .into_iter()
            .map(|s| {
                let mut groups: BTreeMap<String, (Option<u64>, u64)> = BTreeMap::new();
                for c in s.consumers.iter().filter(|c| c.durable) {
                    let entry = groups.entry(c.group.clone()).or_insert((None, 0));
                    entry.1 += c.lag();
                    if c.lag() > 0 {
                        let floor = c.ack_floor_sequence;
                        entry.0 = Some(entry.0.map_or(floor, |p: u64| p.min(floor)));
                    }
                }
                TopicInfo {
                    topic: s.topic,
                    retained: s.messages,
                    first_offset: s.first_offset,
                    next_offset: s.next_offset,
                    groups: groups
                        .into_iter()
                        .map(|(group, (position, lag))| GroupInfo {
                            group,
                            position: position
                                .unwrap_or(s.next_offset)
                                .clamp(s.first_offset, s.next_offset),
                            lag,
                        })
                        .collect(),
                }
            })
            .collect())
    }

    /// Stops the bus: waits for publishes in progress, hands every unacked delivery back to
    /// its group (a nak, so it is redelivered at once), then flushes and drains the
    /// connection. Afterwards every call returns [`BusError::Closed`].
    async fn close(&self) -> Result<(), BusError> {
        if self.inner.closed.swap(true, AtomicOrdering::AcqRel) {
            return Ok(());
        }
        let inner = &self.inner;
        let waited = tokio::time::timeout(inner.config.request_timeout * 2, async {
            loop {
                let notified = inner.published.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if inner.publishing.load(AtomicOrdering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        })
        .await;
        if waited.is_err() {
            tracing::warn!("publishes still in progress when the bus closed");
        }
        let members: Vec<Arc<MemberShared>> = inner
            .members
            .lock()
            .unwrap()
            .drain()
            .filter_map(|(_, m)| m.upgrade())
            .collect();
        // No new pull requests; let what the server already sent arrive (a flush is a round
        // trip, so it comes after them) and be handed back, then stop the pull loops.
        for member in &members {
            member.stop_pulling();
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), inner.client.flush()).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        inner.closing.cancel();
        for member in members {
            member.shutdown(true).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), inner.client.flush()).await;
        let _ = inner.client.drain().await;
        Ok(())
    }
}
