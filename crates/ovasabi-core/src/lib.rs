//! OVASABI's core: the event envelope, the Bus API and their errors. No I/O.
//!
//! # Layout
//! - [`event`]: [`Event`], a CloudEvents 1.0 event in memory, and its extension attributes.
//! - [`validate`]: every MUST of CloudEvents 1.0, with errors that name the attribute.
//! - [`format`]: the structured JSON mode and the binary modes (`ce-*` headers for HTTP and
//!   NATS, `ce_*` for Kafka).
//! - [`naming`]: topic names and patterns, event-type names, dead-letter topics.
//! - [`bus`]: the [`Publisher`], [`Subscriber`] and [`Bus`] traits every backend implements,
//!   and the contract they keep.
//! - [`error`]: [`BusError`].
//!
//! Backends (`ovasabi-embedded`, brokers) depend on this crate; it depends on none of them.

pub mod bus;
pub mod error;
pub mod event;
pub mod format;
pub mod naming;
pub mod validate;

pub use bus::{
    Acknowledger, Bus, DeadLetter, Delivery, DeliveryInfo, DeliverySource, GroupInfo, Ordering,
    Published, Publisher, StartFrom, SubscribeOptions, Subscriber, Subscription, TopicInfo,
};
pub use error::BusError;
pub use event::{Event, ExtensionValue};
pub use naming::TopicPattern;
pub use validate::ValidationError;
