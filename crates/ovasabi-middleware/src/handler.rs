//! The [`Handler`] trait: what reacts to one delivered event.
//!
//! A handler gets a [`Message`] (the event and facts about its delivery) and answers with the
//! events it wants published as a consequence ([`Outgoing`]), or with a [`HandlerError`]
//! saying whether trying again can help.
//!
//! # At-least-once, and what it asks of a handler
//!
//! The [`Consumer`](crate::Consumer) publishes a handler's outgoing events *before* it acks the
//! input. A crash (or a failed ack) between the two leads to the input being delivered again,
//! the handler running again and its outgoing events being published again. Nothing is lost,
//! but a handler may run more than once for one event, and its outgoing events may be
//! published more than once. So:
//!
//! - side effects of a handler should be idempotent (keyed by the input's id), and
//! - outgoing events should carry ids derived from the input (say `format!("{}-shipped",
//!   input.id)`), so that consumers downstream can recognise a republished event as the same
//!   event. Choosing those ids is the handler's job; the runner does not rewrite them.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use ovasabi_core::{BusError, DeliveryInfo, Event};

/// Reacts to one delivered event.
///
/// Implement it with `#[async_trait]`, or wrap an async closure with [`handler_fn`].
/// Layers ([`crate::Layer`]) wrap a handler in another handler.
///
/// ```
/// use async_trait::async_trait;
/// use ovasabi_core::Event;
/// use ovasabi_middleware::{Handler, HandlerError, Message, Outgoing};
///
/// struct Shipper;
///
/// #[async_trait]
/// impl Handler for Shipper {
///     async fn handle(&self, msg: &Message) -> Result<Vec<Outgoing>, HandlerError> {
///         let order = msg.event();
///         let shipped = Event::new("order.shipped", "/shipping")
///             // Derived from the input, so a redelivery republishes the same event.
///             .with_id(format!("{}-shipped", order.id));
///         Ok(vec![Outgoing::new("shipping.events", shipped)])
///     }
/// }
/// ```
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Handles one event. `Ok` carries the events to publish before the input is acked
    /// (possibly none); `Err` says whether the event may be tried again.
    async fn handle(&self, msg: &Message) -> Result<Vec<Outgoing>, HandlerError>;
}

#[async_trait]
impl<H: Handler + ?Sized> Handler for Arc<H> {
    async fn handle(&self, msg: &Message) -> Result<Vec<Outgoing>, HandlerError> {
        (**self).handle(msg).await
    }
}

#[async_trait]
impl<H: Handler + ?Sized> Handler for Box<H> {
    async fn handle(&self, msg: &Message) -> Result<Vec<Outgoing>, HandlerError> {
        (**self).handle(msg).await
    }
}

/// One delivered event handed to a handler: the event, shared, and its [`DeliveryInfo`].
///
/// Cloning is cheap (the event is behind an [`Arc`]).
#[derive(Clone, Debug)]
pub struct Message {
    event: Arc<Event>,
    info: DeliveryInfo,
}

impl Message {
    /// A message for `event` as delivered per `info`.
    pub fn new(event: Arc<Event>, info: DeliveryInfo) -> Self {
        Message { event, info }
    }

    /// A message that no bus delivered: `event` in `topic`, offset 0, group `local`, first
    /// attempt, published now. For tests, and for calling a handler directly.
    pub fn local(topic: impl Into<String>, event: Event) -> Self {
        Message {
            event: Arc::new(event),
            info: DeliveryInfo {
                topic: topic.into(),
                offset: 0,
                group: "local".to_owned(),
                attempt: 1,
                published_at: chrono::Utc::now(),
            },
        }
    }

    /// The same message as delivery attempt `attempt`.
    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.info.attempt = attempt;
        self
    }

    /// The event.
    pub fn event(&self) -> &Event {
        &self.event
    }
    /// The event, shared.
    pub fn event_arc(&self) -> &Arc<Event> {
        &self.event
    }
    /// Facts about this delivery.
    pub fn info(&self) -> &DeliveryInfo {
        &self.info
    }
    /// The topic the event was delivered from.
    pub fn topic(&self) -> &str {
        &self.info.topic
    }
    /// The event's offset in its topic.
    pub fn offset(&self) -> u64 {
        self.info.offset
    }
    /// The consumer group it was delivered to.
    pub fn group(&self) -> &str {
        &self.info.group
    }
    /// The delivery attempt: 1 for the first delivery, 2 for the first redelivery…
    pub fn attempt(&self) -> u32 {
        self.info.attempt
    }
}

/// An event a handler wants published to `topic` as a consequence of the one it handled.
#[derive(Clone, Debug, PartialEq)]
pub struct Outgoing {
    /// The topic to publish to.
    pub topic: String,
    /// The event. Give it an id derived from the input's, so that a redelivery republishes
    /// the same event rather than a new one.
    pub event: Event,
}

impl Outgoing {
    /// An event to publish to `topic`.
    pub fn new(topic: impl Into<String>, event: Event) -> Self {
        Outgoing {
            topic: topic.into(),
            event,
        }
    }
}

/// Whether trying a failed event again can help.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Might work next time (a dependency was down, a timeout, a panic): retry, then
    /// redeliver, then dead-letter when deliveries run out.
    Transient,
    /// Will never work (invalid payload, unknown type): dead-letter at once.
    Permanent,
}

/// Why a handler failed, and whether trying again can help.
///
/// `Display` shows the message alone; that text becomes the delivery's last error and the
/// dead letter's `error`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    kind: ErrorKind,
    message: String,
    reason: Option<String>,
}

impl HandlerError {
    /// The reason a permanent error is dead-lettered with, when it names none.
    pub const DEFAULT_PERMANENT_REASON: &'static str = "permanent error";
    /// The reason [`HandlerError::invalid_payload`] dead-letters with.
    pub const INVALID_PAYLOAD_REASON: &'static str = "invalid payload";

    /// A failure that may go away: the event is retried, then redelivered.
    pub fn transient(message: impl Into<String>) -> Self {
        HandlerError {
            kind: ErrorKind::Transient,
            message: message.into(),
            reason: None,
        }
    }

    /// A failure that will not go away: the event is dead-lettered at once.
    pub fn permanent(message: impl Into<String>) -> Self {
        HandlerError {
            kind: ErrorKind::Permanent,
            message: message.into(),
            reason: None,
        }
    }

    /// A permanent failure because the payload cannot be understood; dead-lettered with the
    /// reason `invalid payload`.
    pub fn invalid_payload(message: impl Into<String>) -> Self {
        Self::permanent(message).with_reason(Self::INVALID_PAYLOAD_REASON)
    }

    /// Sets the short reason a dead letter carries (`invalid payload`, `unknown customer`…).
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Transient or permanent.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    /// Whether trying again may help.
    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }
    /// Whether the event should be dead-lettered at once.
    pub fn is_permanent(&self) -> bool {
        self.kind == ErrorKind::Permanent
    }
    /// What went wrong, for people.
    pub fn message(&self) -> &str {
        &self.message
    }
    /// The short reason for a dead letter, if one was given.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }
}

/// A bus error met inside a handler (publishing elsewhere, say): the caller's mistakes
/// ([`BusError::is_user_error`]) are permanent, the bus's failures transient.
impl From<BusError> for HandlerError {
    fn from(error: BusError) -> Self {
        if error.is_user_error() {
            HandlerError::permanent(error.to_string()).with_reason(error.code())
        } else {
            HandlerError::transient(error.to_string())
        }
    }
}

/// A [`Handler`] made from an async closure; see [`handler_fn`].
#[derive(Clone)]
pub struct HandlerFn<F> {
    f: F,
}

impl<F> std::fmt::Debug for HandlerFn<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerFn").finish_non_exhaustive()
    }
}

/// Makes a [`Handler`] of an async closure taking the [`Message`] by value (a cheap clone).
///
/// ```
/// use ovasabi_core::Event;
/// use ovasabi_middleware::{handler_fn, Handler, HandlerError, Message, Outgoing};
///
/// let handler = handler_fn(|msg: Message| async move {
///     if msg.event().data.is_none() {
///         return Err(HandlerError::invalid_payload("an order needs a payload"));
///     }
///     Ok::<_, HandlerError>(vec![Outgoing::new(
///         "billing.events",
///         Event::new("invoice.created", "/billing").with_id(format!("{}-invoice", msg.event().id)),
///     )])
/// });
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let err = handler
///     .handle(&Message::local("order.events", Event::new("order.placed", "/shop")))
///     .await
///     .unwrap_err();
/// assert!(err.is_permanent());
/// # });
/// ```
pub fn handler_fn<F, Fut>(f: F) -> HandlerFn<F>
where
    F: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<Outgoing>, HandlerError>> + Send + 'static,
{
    HandlerFn { f }
}

#[async_trait]
impl<F, Fut> Handler for HandlerFn<F>
where
    F: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<Outgoing>, HandlerError>> + Send + 'static,
{
    async fn handle(&self, msg: &Message) -> Result<Vec<Outgoing>, HandlerError> {
        (self.f)(msg.clone()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn closures_and_shared_handlers_are_handlers() {
        let h = handler_fn(|msg: Message| async move {
            Ok(vec![Outgoing::new(
                "out",
                Event::new("x.done", "/t").with_id(format!("{}-done", msg.event().id)),
            )])
        });
        let shared: Arc<dyn Handler> = Arc::new(h);
        let boxed: Box<dyn Handler> = Box::new(shared.clone());
        let msg = Message::local("in", Event::new("x.happened", "/t").with_id("e1"));
        let out = boxed.handle(&msg).await.unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].topic, "out");
        assert_eq!(out[0].event.id, "e1-done");
    }

    #[test]
    fn errors_say_what_to_do() {
        let t = HandlerError::transient("db down");
        assert!(t.is_transient() && !t.is_permanent());
        assert_eq!(t.to_string(), "db down");
        assert_eq!(t.reason(), None);

        let p = HandlerError::invalid_payload("missing `amount`");
        assert!(p.is_permanent());
        assert_eq!(p.reason(), Some("invalid payload"));
        assert_eq!(p.message(), "missing `amount`");

        let from_bus: HandlerError = BusError::Closed.into();
        assert!(from_bus.is_transient());
        let from_bus: HandlerError = BusError::InvalidOptions("x".into()).into();
        assert!(from_bus.is_permanent());
        assert_eq!(from_bus.reason(), Some("invalid_options"));
    }

    #[test]
    fn local_messages_are_first_attempts() {
        let msg = Message::local("t", Event::new("a.b", "/s"));
        assert_eq!(msg.attempt(), 1);
        assert_eq!(msg.group(), "local");
        assert_eq!(msg.topic(), "t");
        assert_eq!(msg.with_attempt(3).attempt(), 3);
    }
}
