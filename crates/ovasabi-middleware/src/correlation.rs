//! Correlation: stamp outgoing events with the flow they belong to and the event that caused
//! them.
//!
//! Every outgoing event of a successful call gets
//! - `correlationid` ([`EXT_CORRELATIONID`]): the incoming event's correlation id, or its id
//!   when it has none (it started the flow), and
//! - `causationid` ([`EXT_CAUSATIONID`]): the incoming event's id,
//!
//! unless the handler set them itself.

use async_trait::async_trait;
use ovasabi_core::event::{EXT_CAUSATIONID, EXT_CORRELATIONID};
use ovasabi_core::{Event, ExtensionValue};

use crate::handler::{Handler, HandlerError, Message, Outgoing};
use crate::layer::Layer;

/// Wraps handlers in [`Correlation`].
///
/// ```
/// use ovasabi_core::Event;
/// use ovasabi_middleware::{handler_fn, CorrelationLayer, Handler, Layer, Message, Outgoing};
///
/// let handler = CorrelationLayer::new().layer(handler_fn(|msg: Message| async move {
///     let id = format!("{}-paid", msg.event().id);
///     Ok(vec![Outgoing::new("payment.events", Event::new("payment.captured", "/pay").with_id(id))])
/// }));
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let placed = Event::new("order.placed", "/shop")
///     .with_id("o-1")
///     .with_extension("correlationid", "checkout-42");
/// let out = handler.handle(&Message::local("order.events", placed)).await.unwrap();
/// assert_eq!(out[0].event.correlation_id(), Some("checkout-42"));
/// assert_eq!(out[0].event.causation_id(), Some("o-1"));
/// # });
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct CorrelationLayer;

impl CorrelationLayer {
    /// The layer.
    pub fn new() -> Self {
        CorrelationLayer
    }
}

impl<H> Layer<H> for CorrelationLayer {
    type Handler = Correlation<H>;

    fn layer(&self, inner: H) -> Correlation<H> {
        Correlation::new(inner)
    }
}

/// `inner`, its outgoing events stamped with correlation and causation ids.
#[derive(Clone, Debug)]
pub struct Correlation<H> {
    inner: H,
}

impl<H> Correlation<H> {
    /// Wraps `inner`.
    pub fn new(inner: H) -> Self {
        Correlation { inner }
    }
}

/// Stamps `outgoing` as caused by `incoming`: sets `correlationid` and `causationid` where
/// absent.
pub fn stamp_correlation(incoming: &Event, outgoing: &mut Event) {
    let correlation = incoming.correlation_id().unwrap_or(&incoming.id);
    outgoing
        .extensions
        .entry(EXT_CORRELATIONID.to_owned())
        .or_insert_with(|| ExtensionValue::String(correlation.to_owned()));
    outgoing
        .extensions
        .entry(EXT_CAUSATIONID.to_owned())
        .or_insert_with(|| ExtensionValue::String(incoming.id.clone()));
}

#[async_trait]
impl<H: Handler> Handler for Correlation<H> {
    async fn handle(&self, msg: &Message) -> Result<Vec<Outgoing>, HandlerError> {
        let mut outgoing = self.inner.handle(msg).await?;
        for out in &mut outgoing {
            stamp_correlation(msg.event(), &mut out.event);
        }
        Ok(outgoing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler_fn;

    fn emitting(events: Vec<Event>) -> impl Handler {
        handler_fn(move |_msg: Message| {
            let events = events.clone();
            async move {
                Ok(events
                    .into_iter()
                    .map(|e| Outgoing::new("out", e))
                    .collect())
            }
        })
    }

    #[tokio::test]
    async fn the_first_event_of_a_flow_becomes_its_correlation_id() {
        let h = CorrelationLayer::new().layer(emitting(vec![
            Event::new("a.done", "/s").with_id("d1"),
            Event::new("b.done", "/s").with_id("d2"),
        ]));
        let out = h
            .handle(&Message::local(
                "in",
                Event::new("a.happened", "/s").with_id("root"),
            ))
            .await
            .unwrap();
        for o in &out {
            assert_eq!(o.event.correlation_id(), Some("root"));
            assert_eq!(o.event.causation_id(), Some("root"));
        }
    }

    #[tokio::test]
    async fn the_flows_correlation_id_is_carried_on() {
        let h = CorrelationLayer::new().layer(emitting(vec![Event::new("a.done", "/s")]));
        let incoming = Event::new("a.happened", "/s")
            .with_id("mid")
            .with_extension(EXT_CORRELATIONID, "root")
            .with_extension(EXT_CAUSATIONID, "before-mid");
        let out = h.handle(&Message::local("in", incoming)).await.unwrap();
        assert_eq!(out[0].event.correlation_id(), Some("root"));
        assert_eq!(out[0].event.causation_id(), Some("mid"));
    }

    #[tokio::test]
    async fn ids_the_handler_set_are_kept() {
        let h = CorrelationLayer::new().layer(emitting(vec![Event::new("a.done", "/s")
            .with_extension(EXT_CORRELATIONID, "mine")
            .with_extension(EXT_CAUSATIONID, "also-mine")]));
        let out = h
            .handle(&Message::local("in", Event::new("a.happened", "/s")))
            .await
            .unwrap();
        assert_eq!(out[0].event.correlation_id(), Some("mine"));
        assert_eq!(out[0].event.causation_id(), Some("also-mine"));
    }

    #[tokio::test]
    async fn errors_pass_through() {
        let h = CorrelationLayer::new().layer(handler_fn(|_msg: Message| async {
            Err(HandlerError::transient("x"))
        }));
        assert!(h
            .handle(&Message::local("in", Event::new("a.happened", "/s")))
            .await
            .is_err());
    }
}
