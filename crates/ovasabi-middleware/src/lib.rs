//! OVASABI's handler layer: the [`Handler`] trait, middleware as [`Layer`]s, and the
//! [`Consumer`] that runs a handler on a bus.
//!
//! A handler reacts to one delivered event and answers with the events to publish as a
//! consequence. Layers wrap a handler in another to add one concern each, tower-style. The
//! consumer pulls deliveries from a [`Subscriber`](ovasabi_core::Subscriber), runs the handler
//! on them concurrently, publishes what it returns, then acks — or nacks or dead-letters per
//! a [`RedeliveryPolicy`] — and shuts down without losing an event.
//!
//! ```text
//!   Subscriber ──delivery──▶ Consumer ──Message──▶ [correlation ▸ trace ▸ retry ▸ timeout ▸ handler]
//!        ▲                      │                                            │
//!        └── ack / nack / dead-letter ◀── publish_batch(outgoing) ◀── Vec<Outgoing> / HandlerError
//! ```
//!
//! # Layout
//! - [`handler`] — [`Handler`], [`Message`], [`Outgoing`], [`HandlerError`], [`handler_fn`],
//!   and what at-least-once delivery asks of a handler.
//! - [`layer`] — [`Layer`] and [`HandlerBuilder`], which stacks layers.
//! - One module per middleware, each with its tests beside it:
//!   - [`retry`] — [`RetryPolicy`] (its answer is the backoff), [`ExponentialBackoff`],
//!     [`RetryLayer`]: retries transient errors in-process.
//!   - [`timeout`] — [`TimeoutLayer`]: bounds a call; a timeout is a transient error.
//!   - [`correlation`] — [`CorrelationLayer`]: `correlationid` and `causationid` on outgoing
//!     events.
//!   - [`trace_context`] — [`TraceContextLayer`], [`TraceParent`]: W3C `traceparent` and
//!     `tracestate` on outgoing events.
//!   - [`dedup`] — [`DeduplicatorLayer`]: answers recently handled events from memory.
//!   - [`dead_letter`] — [`RedeliveryPolicy`]: redeliver or dead-letter a failure; used by the
//!     consumer, below all layers.
//! - [`consumer`] — [`Consumer`] and [`RunSummary`]: the runner and its guarantees, the
//!   span each delivery is logged in, and [`REDRIVEN_FOR`] (re-driven dead letters).
//! - [`otel`] — OpenTelemetry: spans joined to the events' W3C trace (parents, the
//!   `publish` span, the `traceparent` of caused events).
//! - [`stats`] — [`ConsumerStats`]: a running consumer's counters and handler durations,
//!   read live (for metrics).

pub mod consumer;
pub mod correlation;
pub mod dead_letter;
pub mod dedup;
pub mod handler;
pub mod layer;
pub mod otel;
pub mod retry;
pub mod stats;
pub mod timeout;
pub mod trace_context;

pub use consumer::{Consumer, RunSummary, REDRIVEN_FOR};
pub use correlation::{Correlation, CorrelationLayer};
pub use dead_letter::{FailureDecision, RedeliveryPolicy};
pub use dedup::{Deduplicator, DeduplicatorLayer};
pub use handler::{handler_fn, ErrorKind, Handler, HandlerError, HandlerFn, Message, Outgoing};
pub use layer::{HandlerBuilder, Identity, Layer, Stack};
pub use retry::{ConstantBackoff, ExponentialBackoff, Retry, RetryLayer, RetryPolicy};
pub use stats::{ConsumerStats, EventCounts, HistogramSnapshot};
pub use timeout::{Timeout, TimeoutLayer};
pub use trace_context::{TraceContext, TraceContextLayer, TraceParent};
