//! Timeout: bound a handler call by a duration.
//!
//! A call that runs past the bound is dropped (cancelled at its next `.await`) and fails with
//! a *transient* [`HandlerError`] naming the bound, so it is retried or redelivered. Put the
//! timeout inside a [`crate::RetryLayer`] to bound each attempt, outside to bound them all.
//!
//! Keep the bound below the subscription's ack timeout: a handler still running when the ack
//! timeout passes has its event delivered to someone else too.

use std::time::Duration;

use async_trait::async_trait;

use crate::handler::{Handler, HandlerError, Message, Outgoing};
use crate::layer::Layer;

/// Wraps handlers in [`Timeout`].
///
/// ```
/// use std::time::Duration;
/// use ovasabi_core::Event;
/// use ovasabi_middleware::{handler_fn, Handler, HandlerError, Layer, Message, TimeoutLayer};
///
/// let slow = handler_fn(|_msg: Message| async {
///     tokio::time::sleep(Duration::from_secs(60)).await;
///     Ok::<_, HandlerError>(vec![])
/// });
/// let handler = TimeoutLayer::new(Duration::from_millis(10)).layer(slow);
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let err = handler.handle(&Message::local("t", Event::new("a.happened", "/s"))).await.unwrap_err();
/// assert!(err.is_transient());
/// assert_eq!(err.to_string(), "handler timed out after 10ms");
/// # });
/// ```
#[derive(Clone, Copy, Debug)]
pub struct TimeoutLayer {
    timeout: Duration,
}

impl TimeoutLayer {
    /// Bounds each call by `timeout`.
    pub fn new(timeout: Duration) -> Self {
        TimeoutLayer { timeout }
    }
}

impl<H> Layer<H> for TimeoutLayer {
    type Handler = Timeout<H>;

    fn layer(&self, inner: H) -> Timeout<H> {
        Timeout::new(inner, self.timeout)
    }
}

/// `inner`, each call bounded by a duration.
#[derive(Clone, Debug)]
pub struct Timeout<H> {
    inner: H,
    timeout: Duration,
}

impl<H> Timeout<H> {
    /// `inner`, each call bounded by `timeout`.
    pub fn new(inner: H, timeout: Duration) -> Self {
        Timeout { inner, timeout }
    }

    /// The error a call that ran past `timeout` fails with.
    pub fn error(timeout: Duration) -> HandlerError {
        HandlerError::transient(format!("handler timed out after {timeout:?}"))
    }
}

#[async_trait]
impl<H: Handler> Handler for Timeout<H> {
    async fn handle(&self, msg: &Message) -> Result<Vec<Outgoing>, HandlerError> {
        match tokio::time::timeout(self.timeout, self.inner.handle(msg)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(Self::error(self.timeout)),
        }
    }
}

#[cfg(test)]
mod tests {
    use ovasabi_core::Event;

    use super::*;
    use crate::handler_fn;

    fn sleeper(d: Duration) -> impl Handler {
        handler_fn(move |_msg: Message| async move {
            tokio::time::sleep(d).await;
            Ok(vec![Outgoing::new("out", Event::new("a.done", "/s"))])
        })
    }

    fn msg() -> Message {
        Message::local("t", Event::new("a.happened", "/s"))
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_within_the_bound_passes_through() {
        let h = TimeoutLayer::new(Duration::from_secs(2)).layer(sleeper(Duration::from_secs(1)));
        assert_eq!(h.handle(&msg()).await.unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_past_the_bound_fails_transiently_naming_it() {
        let h = TimeoutLayer::new(Duration::from_secs(2)).layer(sleeper(Duration::from_secs(3)));
        let start = tokio::time::Instant::now();
        let err = h.handle(&msg()).await.unwrap_err();
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert!(err.is_transient());
        assert_eq!(err.message(), "handler timed out after 2s");
    }

    #[tokio::test(start_paused = true)]
    async fn errors_of_the_inner_handler_are_kept() {
        let h =
            TimeoutLayer::new(Duration::from_secs(2)).layer(handler_fn(|_msg: Message| async {
                Err(HandlerError::invalid_payload("nope"))
            }));
        assert_eq!(
            h.handle(&msg()).await.unwrap_err(),
            HandlerError::invalid_payload("nope")
        );
    }
}
