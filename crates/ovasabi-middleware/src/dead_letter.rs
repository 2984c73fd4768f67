//! Dead letter (poison queue): what the [`Consumer`](crate::Consumer) does with an event whose
//! handler failed.
//!
//! The decision is made by a [`RedeliveryPolicy`], below all layers, once per delivery:
//!
//! | the handler's error                          | decision                                              |
//! |----------------------------------------------|-------------------------------------------------------|
//! | permanent                                    | dead-letter now, reason from the error (or `permanent error`) |
//! | transient, `attempt >= max_deliveries`       | dead-letter, reason `max deliveries reached`          |
//! | transient, the backoff policy gives up       | dead-letter, reason `retry policy gave up`            |
//! | transient otherwise                          | nack: redeliver after the policy's backoff            |
//!
//! Dead letters carry the handler's error text; the bus moves the event to `<topic>.dlq`.
//! Nothing here drops an event: every failure ends in a nack or a dead letter.

use std::sync::Arc;
use std::time::Duration;

use ovasabi_core::{DeadLetter, DeliveryInfo};

use crate::handler::HandlerError;
use crate::retry::{ExponentialBackoff, RetryPolicy};

/// The dead-letter reason when deliveries ran out.
pub const REASON_MAX_DELIVERIES: &str = "max deliveries reached";
/// The dead-letter reason when the backoff policy gave up before deliveries ran out.
pub const REASON_RETRIES_EXHAUSTED: &str = "retry policy gave up";

/// What to do with a delivery whose handling failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailureDecision {
    /// Ask the bus to deliver the event again after `delay`; `error` becomes its last error.
    Nack {
        /// The wait before redelivery.
        delay: Duration,
        /// The handler's error text.
        error: String,
    },
    /// Move the event to the dead-letter topic now.
    DeadLetter(DeadLetter),
}

/// Decides between redelivery and dead-lettering after a failure.
///
/// ```
/// use std::time::Duration;
/// use ovasabi_core::DeliveryInfo;
/// use ovasabi_middleware::{ConstantBackoff, FailureDecision, HandlerError, RedeliveryPolicy};
///
/// let policy = RedeliveryPolicy::new(ConstantBackoff { delay: Duration::from_secs(5), max_retries: u32::MAX });
/// let info = |attempt| DeliveryInfo {
///     topic: "order.events".into(), offset: 7, group: "shipping".into(), attempt,
///     published_at: chrono::Utc::now(),
/// };
/// let down = HandlerError::transient("warehouse API down");
///
/// assert_eq!(
///     policy.decide(&info(1), 3, &down),
///     FailureDecision::Nack { delay: Duration::from_secs(5), error: "warehouse API down".into() },
/// );
/// let FailureDecision::DeadLetter(dead) = policy.decide(&info(3), 3, &down) else { panic!() };
/// assert_eq!(dead.reason, "max deliveries reached");
/// assert_eq!(dead.error.as_deref(), Some("warehouse API down"));
///
/// let FailureDecision::DeadLetter(dead) = policy.decide(&info(1), 3, &HandlerError::invalid_payload("no items"))
/// else { panic!() };
/// assert_eq!(dead.reason, "invalid payload");
/// ```
#[derive(Clone)]
pub struct RedeliveryPolicy {
    backoff: Arc<dyn RetryPolicy>,
    max_deliveries: Option<u32>,
}

impl std::fmt::Debug for RedeliveryPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedeliveryPolicy")
            .field("max_deliveries", &self.max_deliveries)
            .finish_non_exhaustive()
    }
}

impl Default for RedeliveryPolicy {
    /// Redelivery after 1 s, doubling up to 5 min, ±20 % jitter, until the subscription's
    /// `max_deliveries` runs out.
    fn default() -> Self {
        RedeliveryPolicy::new(ExponentialBackoff {
            initial: Duration::from_secs(1),
            multiplier: 2.0,
            max: Duration::from_secs(300),
            jitter: 0.2,
            max_retries: u32::MAX,
        })
    }
}

impl RedeliveryPolicy {
    /// Redelivers after the waits `backoff` answers for the delivery attempt that failed.
    /// `backoff` answering `None` dead-letters.
    pub fn new(backoff: impl RetryPolicy) -> Self {
        RedeliveryPolicy {
            backoff: Arc::new(backoff),
            max_deliveries: None,
        }
    }

    /// Dead-letters after `n` deliveries, if that is below the subscription's
    /// `max_deliveries` (the bus dead-letters at its own limit anyway).
    pub fn max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = Some(n.max(1));
        self
    }

    /// The decision for delivery `info` failing with `error`, where the subscription allows
    /// `max_deliveries` deliveries.
    pub fn decide(
        &self,
        info: &DeliveryInfo,
        max_deliveries: u32,
        error: &HandlerError,
    ) -> FailureDecision {
        let dead = |reason: &str| {
            FailureDecision::DeadLetter(DeadLetter {
                reason: reason.to_owned(),
                error: Some(error.to_string()),
            })
        };
        if error.is_permanent() {
            return dead(
                error
                    .reason()
                    .unwrap_or(HandlerError::DEFAULT_PERMANENT_REASON),
            );
        }
        let max = self
            .max_deliveries
            .map_or(max_deliveries, |own| own.min(max_deliveries));
        if info.attempt >= max {
            return dead(REASON_MAX_DELIVERIES);
        }
        match self.backoff.backoff(info.attempt, error) {
            Some(delay) => FailureDecision::Nack {
                delay,
                error: error.to_string(),
            },
            None => dead(REASON_RETRIES_EXHAUSTED),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::ConstantBackoff;

    fn info(attempt: u32) -> DeliveryInfo {
        DeliveryInfo {
            topic: "t".into(),
            offset: 0,
            group: "g".into(),
            attempt,
            published_at: chrono::Utc::now(),
        }
    }

    fn constant(max_retries: u32) -> RedeliveryPolicy {
        RedeliveryPolicy::new(ConstantBackoff {
            delay: Duration::from_secs(2),
            max_retries,
        })
    }

    fn dead(reason: &str, error: &str) -> FailureDecision {
        FailureDecision::DeadLetter(DeadLetter {
            reason: reason.into(),
            error: Some(error.into()),
        })
    }

    #[test]
    fn permanent_errors_are_dead_lettered_at_once() {
        let p = constant(u32::MAX);
        assert_eq!(
            p.decide(&info(1), 5, &HandlerError::permanent("unknown type")),
            dead("permanent error", "unknown type")
        );
        assert_eq!(
            p.decide(&info(1), 5, &HandlerError::invalid_payload("no id")),
            dead("invalid payload", "no id")
        );
    }

    #[test]
    fn transient_errors_are_redelivered_until_deliveries_run_out() {
        let p = constant(u32::MAX);
        let e = HandlerError::transient("down");
        for attempt in 1..5 {
            assert_eq!(
                p.decide(&info(attempt), 5, &e),
                FailureDecision::Nack {
                    delay: Duration::from_secs(2),
                    error: "down".into()
                }
            );
        }
        assert_eq!(
            p.decide(&info(5), 5, &e),
            dead(REASON_MAX_DELIVERIES, "down")
        );
        // A redelivery past the limit (the bus raced us) is dead-lettered too.
        assert_eq!(
            p.decide(&info(9), 5, &e),
            dead(REASON_MAX_DELIVERIES, "down")
        );
    }

    #[test]
    fn the_policy_may_lower_the_limit_but_not_raise_it() {
        let e = HandlerError::transient("down");
        let lower = constant(u32::MAX).max_deliveries(2);
        assert_eq!(
            lower.decide(&info(2), 5, &e),
            dead(REASON_MAX_DELIVERIES, "down")
        );
        let higher = constant(u32::MAX).max_deliveries(10);
        assert_eq!(
            higher.decide(&info(5), 5, &e),
            dead(REASON_MAX_DELIVERIES, "down")
        );
    }

    #[test]
    fn a_backoff_that_gives_up_dead_letters() {
        let e = HandlerError::transient("down");
        let p = constant(1);
        assert!(matches!(
            p.decide(&info(1), 5, &e),
            FailureDecision::Nack { .. }
        ));
        assert_eq!(
            p.decide(&info(2), 5, &e),
            dead(REASON_RETRIES_EXHAUSTED, "down")
        );
    }

    #[test]
    fn the_default_waits_grow() {
        let p = RedeliveryPolicy::default();
        let e = HandlerError::transient("down");
        let delay = |attempt| match p.decide(&info(attempt), 100, &e) {
            FailureDecision::Nack { delay, .. } => delay,
            other => panic!("{other:?}"),
        };
        assert!(delay(1) <= Duration::from_millis(1200));
        assert!(delay(6) >= Duration::from_secs(25));
        assert!(delay(60) <= Duration::from_secs(300));
    }
}
