//! [`Layer`]: wraps a handler in another, and [`HandlerBuilder`] to stack layers.
//!
//! Layers stack like tower's `ServiceBuilder`: the first layer added is the outermost, the
//! one that sees the message first and the result last.

use std::time::Duration;

use crate::correlation::CorrelationLayer;
use crate::dedup::DeduplicatorLayer;
use crate::handler::Handler;
use crate::retry::{RetryLayer, RetryPolicy};
use crate::timeout::TimeoutLayer;
use crate::trace_context::TraceContextLayer;

/// Wraps a handler `H` in another handler that adds behaviour (retry, timeout…).
pub trait Layer<H> {
    /// The wrapping handler.
    type Handler;

    /// Wraps `inner`.
    fn layer(&self, inner: H) -> Self::Handler;
}

/// The layer that adds nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Identity;

impl<H> Layer<H> for Identity {
    type Handler = H;

    fn layer(&self, inner: H) -> H {
        inner
    }
}

/// Two layers, `outer` around `inner`.
#[derive(Clone, Debug)]
pub struct Stack<Inner, Outer> {
    inner: Inner,
    outer: Outer,
}

impl<Inner, Outer> Stack<Inner, Outer> {
    /// `outer` around `inner`.
    pub fn new(inner: Inner, outer: Outer) -> Self {
        Stack { inner, outer }
    }
}

impl<H, Inner, Outer> Layer<H> for Stack<Inner, Outer>
where
    Inner: Layer<H>,
    Outer: Layer<Inner::Handler>,
{
    type Handler = Outer::Handler;

    fn layer(&self, handler: H) -> Self::Handler {
        self.outer.layer(self.inner.layer(handler))
    }
}

/// Stacks layers around a handler. The first layer added is the outermost.
///
/// A sensible order: correlation and trace context outermost (they only touch the outgoing
/// events of a success), then an overall timeout if wanted, then retry, then a timeout per
/// attempt.
///
/// ```
/// use std::time::Duration;
/// use ovasabi_core::Event;
/// use ovasabi_middleware::{handler_fn, ExponentialBackoff, Handler, HandlerBuilder, Message, Outgoing};
///
/// let handler = HandlerBuilder::new()
///     .correlation()
///     .trace_context()
///     .retry(ExponentialBackoff::default())
///     .timeout(Duration::from_secs(5)) // per attempt: inside the retry
///     .handler(handler_fn(|msg: Message| async move {
///         Ok(vec![Outgoing::new(
///             "shipping.events",
///             Event::new("order.shipped", "/shipping").with_id(format!("{}-shipped", msg.event().id)),
///         )])
///     }));
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let placed = Event::new("order.placed", "/shop").with_id("o-1");
/// let out = handler.handle(&Message::local("order.events", placed)).await.unwrap();
/// assert_eq!(out[0].event.correlation_id(), Some("o-1"));
/// assert_eq!(out[0].event.causation_id(), Some("o-1"));
/// assert!(out[0].event.traceparent().is_some());
/// # });
/// ```
#[derive(Clone, Debug)]
pub struct HandlerBuilder<L> {
    layer: L,
}

impl Default for HandlerBuilder<Identity> {
    fn default() -> Self {
        Self::new()
    }
}

impl HandlerBuilder<Identity> {
    /// A builder with no layers.
    pub fn new() -> Self {
        HandlerBuilder { layer: Identity }
    }
}

impl<L> HandlerBuilder<L> {
    /// Adds `layer` inside the layers added so far.
    pub fn layer<T>(self, layer: T) -> HandlerBuilder<Stack<T, L>> {
        HandlerBuilder {
            layer: Stack::new(layer, self.layer),
        }
    }

    /// Adds a [`RetryLayer`] retrying transient errors in-process per `policy`.
    pub fn retry<P: RetryPolicy + Clone>(
        self,
        policy: P,
    ) -> HandlerBuilder<Stack<RetryLayer<P>, L>> {
        self.layer(RetryLayer::new(policy))
    }

    /// Adds a [`TimeoutLayer`] bounding each call below it by `timeout`.
    pub fn timeout(self, timeout: Duration) -> HandlerBuilder<Stack<TimeoutLayer, L>> {
        self.layer(TimeoutLayer::new(timeout))
    }

    /// Adds a [`CorrelationLayer`] stamping outgoing events with correlation and causation ids.
    pub fn correlation(self) -> HandlerBuilder<Stack<CorrelationLayer, L>> {
        self.layer(CorrelationLayer::new())
    }

    /// Adds a [`TraceContextLayer`] carrying the W3C trace context to outgoing events.
    pub fn trace_context(self) -> HandlerBuilder<Stack<TraceContextLayer, L>> {
        self.layer(TraceContextLayer::new())
    }

    /// Adds a [`DeduplicatorLayer`] remembering the last `capacity` handled events.
    pub fn deduplicate(self, capacity: usize) -> HandlerBuilder<Stack<DeduplicatorLayer, L>> {
        self.layer(DeduplicatorLayer::new(capacity))
    }

    /// Wraps `handler` in the layers.
    pub fn handler<H>(self, handler: H) -> L::Handler
    where
        L: Layer<H>,
        L::Handler: Handler,
    {
        self.layer.layer(handler)
    }

    /// The stacked layers, to apply to several handlers.
    pub fn into_layer(self) -> L {
        self.layer
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;
    use ovasabi_core::Event;

    use super::*;
    use crate::handler::{HandlerError, Message, Outgoing};

    /// Records its name on the way in, to check the order layers run in.
    struct Mark<H> {
        name: &'static str,
        log: Arc<Mutex<Vec<&'static str>>>,
        inner: H,
    }
    #[async_trait]
    impl<H: Handler> Handler for Mark<H> {
        async fn handle(&self, msg: &Message) -> Result<Vec<Outgoing>, HandlerError> {
            self.log.lock().unwrap().push(self.name);
            self.inner.handle(msg).await
        }
    }
    struct MarkLayer(&'static str, Arc<Mutex<Vec<&'static str>>>);
    impl<H> Layer<H> for MarkLayer {
        type Handler = Mark<H>;
        fn layer(&self, inner: H) -> Mark<H> {
            Mark {
                name: self.0,
                log: self.1.clone(),
                inner,
            }
        }
    }

    #[tokio::test]
    async fn first_layer_added_runs_first() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let inner_log = log.clone();
        let handler = HandlerBuilder::new()
            .layer(MarkLayer("outer", log.clone()))
            .layer(MarkLayer("inner", log.clone()))
            .handler(crate::handler_fn(move |_msg: Message| {
                let log = inner_log.clone();
                async move {
                    log.lock().unwrap().push("handler");
                    Ok(vec![])
                }
            }));
        handler
            .handle(&Message::local("t", Event::new("a.b", "/s")))
            .await
            .unwrap();
        assert_eq!(*log.lock().unwrap(), ["outer", "inner", "handler"]);
    }
}
