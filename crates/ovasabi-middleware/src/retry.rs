//! Retry: call the handler again, in-process, after a transient error.
//!
//! A [`RetryPolicy`] answers one question: after this failed attempt, how long to wait before
//! the next one — or `None`, give up. [`ExponentialBackoff`] is the usual answer. The same
//! policy type drives redelivery by the bus ([`crate::RedeliveryPolicy`]).
//!
//! In-process retries and redeliveries multiply: with 3 retries per delivery and 5 deliveries
//! a handler may run 20 times for one event. Keep in-process retries for short blips (a
//! connection reset) and let redelivery handle longer outages: a retrying handler holds its
//! delivery (and, with ordering per key, the events behind it) while it waits.

use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;

use crate::handler::{Handler, HandlerError, Message, Outgoing};
use crate::layer::Layer;

/// Decides whether and when to try again after a failure.
pub trait RetryPolicy: Send + Sync + 'static {
    /// The wait before the next attempt, after attempt number `attempt` (1 for the first)
    /// failed with `error`; `None` to give up.
    fn backoff(&self, attempt: u32, error: &HandlerError) -> Option<Duration>;
}

impl<P: RetryPolicy + ?Sized> RetryPolicy for std::sync::Arc<P> {
    fn backoff(&self, attempt: u32, error: &HandlerError) -> Option<Duration> {
        (**self).backoff(attempt, error)
    }
}

impl<P: RetryPolicy + ?Sized> RetryPolicy for Box<P> {
    fn backoff(&self, attempt: u32, error: &HandlerError) -> Option<Duration> {
        (**self).backoff(attempt, error)
    }
}

/// Waits `initial`, then `initial × multiplier`, `initial × multiplier²`… capped at `max`,
/// each wait spread by ± `jitter` (a fraction: 0.2 means ±20 %) so that many consumers
/// failing together do not retry together. Gives up after `max_retries` retries, and at
/// once on a permanent error.
///
/// ```
/// use std::time::Duration;
/// use ovasabi_middleware::{ExponentialBackoff, HandlerError, RetryPolicy};
///
/// let policy = ExponentialBackoff {
///     initial: Duration::from_millis(100),
///     multiplier: 2.0,
///     max: Duration::from_secs(1),
///     jitter: 0.0,
///     max_retries: 5,
/// };
/// let blip = HandlerError::transient("connection reset");
/// assert_eq!(policy.backoff(1, &blip), Some(Duration::from_millis(100)));
/// assert_eq!(policy.backoff(3, &blip), Some(Duration::from_millis(400)));
/// assert_eq!(policy.backoff(5, &blip), Some(Duration::from_secs(1))); // capped
/// assert_eq!(policy.backoff(6, &blip), None); // 5 retries done
/// assert_eq!(policy.backoff(1, &HandlerError::permanent("bad")), None);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct ExponentialBackoff {
    /// The first wait.
    pub initial: Duration,
    /// The growth of each wait over the previous one (at least 1).
    pub multiplier: f64,
    /// The longest wait.
    pub max: Duration,
    /// Random spread of each wait, as a fraction of it, between 0 and 1.
    pub jitter: f64,
    /// Retries before giving up (`u32::MAX` to leave the limit to someone else).
    pub max_retries: u32,
}

impl Default for ExponentialBackoff {
    /// 100 ms, doubling, at most 10 s, ±20 % jitter, 3 retries: for short blips.
    fn default() -> Self {
        ExponentialBackoff {
            initial: Duration::from_millis(100),
            multiplier: 2.0,
            max: Duration::from_secs(10),
            jitter: 0.2,
            max_retries: 3,
        }
    }
}

impl ExponentialBackoff {
    /// Sets the number of retries before giving up.
    pub fn with_max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// Sets the jitter fraction.
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }
}

impl RetryPolicy for ExponentialBackoff {
    fn backoff(&self, attempt: u32, error: &HandlerError) -> Option<Duration> {
        if error.is_permanent() || attempt > self.max_retries {
            return None;
        }
        let max = self.max.as_secs_f64();
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let base = self.initial.as_secs_f64() * self.multiplier.max(1.0).powi(exponent);
        // An overflowing product (a long outage with a large multiplier) means "the cap".
        let base = if base.is_finite() { base.min(max) } else { max };
        let jitter = if self.jitter.is_finite() {
            self.jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let factor = if jitter > 0.0 {
            rand::thread_rng().gen_range(1.0 - jitter..=1.0 + jitter)
        } else {
            1.0
        };
        Some(Duration::from_secs_f64((base * factor).clamp(0.0, max)))
    }
}

/// Waits the same `delay` before each of at most `max_retries` retries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConstantBackoff {
    /// The wait before each retry.
    pub delay: Duration,
    /// Retries before giving up.
    pub max_retries: u32,
}

impl RetryPolicy for ConstantBackoff {
    fn backoff(&self, attempt: u32, error: &HandlerError) -> Option<Duration> {
        (error.is_transient() && attempt <= self.max_retries).then_some(self.delay)
    }
}

/// Wraps handlers in [`Retry`].
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::sync::Arc;
/// use std::time::Duration;
/// use ovasabi_core::Event;
/// use ovasabi_middleware::{handler_fn, ConstantBackoff, Handler, HandlerError, Layer, Message, RetryLayer};
///
/// let calls = Arc::new(AtomicU32::new(0));
/// let counter = calls.clone();
/// let flaky = handler_fn(move |_msg: Message| {
///     let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
///     async move {
///         if n < 3 { Err(HandlerError::transient("connection reset")) } else { Ok(vec![]) }
///     }
/// });
/// let handler = RetryLayer::new(ConstantBackoff { delay: Duration::from_millis(1), max_retries: 5 })
///     .layer(flaky);
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// handler.handle(&Message::local("t", Event::new("a.happened", "/s"))).await.unwrap();
/// assert_eq!(calls.load(Ordering::SeqCst), 3);
/// # });
/// ```
#[derive(Clone, Debug)]
pub struct RetryLayer<P> {
    policy: P,
}

impl<P> RetryLayer<P> {
    /// Retries per `policy`.
    pub fn new(policy: P) -> Self {
        RetryLayer { policy }
    }
}

impl<H, P: Clone> Layer<H> for RetryLayer<P> {
    type Handler = Retry<H, P>;

    fn layer(&self, inner: H) -> Retry<H, P> {
        Retry::new(inner, self.policy.clone())
    }
}

/// Calls `inner` again after a transient error, waiting what the policy says, until it
/// succeeds, fails permanently or the policy gives up; then returns the last result.
#[derive(Clone, Debug)]
pub struct Retry<H, P> {
    inner: H,
    policy: P,
}

impl<H, P> Retry<H, P> {
    /// `inner`, retried per `policy`.
    pub fn new(inner: H, policy: P) -> Self {
        Retry { inner, policy }
    }
}

#[async_trait]
impl<H: Handler, P: RetryPolicy> Handler for Retry<H, P> {
    async fn handle(&self, msg: &Message) -> Result<Vec<Outgoing>, HandlerError> {
        let mut attempt = 1u32;
        loop {
            let error = match self.inner.handle(msg).await {
                Ok(outgoing) => return Ok(outgoing),
                Err(error) => error,
            };
            if error.is_permanent() {
                return Err(error);
            }
            let Some(wait) = self.policy.backoff(attempt, &error) else {
                return Err(error);
            };
            tracing::debug!(
                event_id = %msg.event().id,
                attempt,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                error = %error,
                "handler failed; retrying in-process"
            );
            tokio::time::sleep(wait).await;
            attempt = attempt.saturating_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use ovasabi_core::Event;

    use super::*;
    use crate::handler_fn;

    /// A handler failing with `error` for its first `failures` calls, counting calls.
    fn failing(failures: u32, error: HandlerError) -> (impl Handler, Arc<AtomicU32>) {
        let calls = Arc::new(AtomicU32::new(0));
        let counter = calls.clone();
        let h = handler_fn(move |_msg: Message| {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            let error = error.clone();
            async move {
                if n <= failures {
                    Err(error)
                } else {
                    Ok(vec![])
                }
            }
        });
        (h, calls)
    }

    fn msg() -> Message {
        Message::local("t", Event::new("a.happened", "/s"))
    }

    fn no_jitter() -> ExponentialBackoff {
        ExponentialBackoff {
            initial: Duration::from_secs(1),
            multiplier: 2.0,
            max: Duration::from_secs(30),
            jitter: 0.0,
            max_retries: 3,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_errors_with_the_policys_waits() {
        let (h, calls) = failing(2, HandlerError::transient("blip"));
        let h = RetryLayer::new(no_jitter()).layer(h);
        let start = tokio::time::Instant::now();
        h.handle(&msg()).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // 1 s after the first failure, 2 s after the second.
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_when_the_policy_does_and_returns_the_last_error() {
        let (h, calls) = failing(10, HandlerError::transient("still down"));
        let h = RetryLayer::new(no_jitter()).layer(h);
        let err = h.handle(&msg()).await.unwrap_err();
        assert_eq!(err, HandlerError::transient("still down"));
        assert_eq!(calls.load(Ordering::SeqCst), 4, "first call + 3 retries");
    }

    #[tokio::test(start_paused = true)]
    async fn never_retries_permanent_errors() {
        let (h, calls) = failing(10, HandlerError::invalid_payload("no amount"));
        let h = RetryLayer::new(no_jitter().with_max_retries(100)).layer(h);
        let err = h.handle(&msg()).await.unwrap_err();
        assert!(err.is_permanent());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn backoff_grows_caps_and_spreads() {
        let blip = HandlerError::transient("x");
        let p = no_jitter().with_max_retries(u32::MAX);
        assert_eq!(p.backoff(1, &blip), Some(Duration::from_secs(1)));
        assert_eq!(p.backoff(2, &blip), Some(Duration::from_secs(2)));
        assert_eq!(p.backoff(5, &blip), Some(Duration::from_secs(16)));
        assert_eq!(p.backoff(6, &blip), Some(Duration::from_secs(30)));
        assert_eq!(p.backoff(u32::MAX, &blip), Some(Duration::from_secs(30)));

        let jittery = p.with_jitter(0.5);
        for _ in 0..200 {
            let d = jittery.backoff(2, &blip).unwrap();
            assert!(
                d >= Duration::from_secs(1) && d <= Duration::from_secs(3),
                "{d:?}"
            );
            // Jitter never pushes a wait past the cap.
            assert!(jittery.backoff(10, &blip).unwrap() <= Duration::from_secs(30));
        }
    }

    #[test]
    fn constant_backoff_counts_retries() {
        let p = ConstantBackoff {
            delay: Duration::from_millis(5),
            max_retries: 2,
        };
        let blip = HandlerError::transient("x");
        assert_eq!(p.backoff(2, &blip), Some(Duration::from_millis(5)));
        assert_eq!(p.backoff(3, &blip), None);
        assert_eq!(p.backoff(1, &HandlerError::permanent("x")), None);
    }
}
