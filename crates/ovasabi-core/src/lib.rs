//! OVASABI's core: the event envelope, the Bus API and their errors. No I/O.
//!
//! # Layout
//! - [`event`]: [`Event`], a CloudEvents 1.0 event in memory, and its extension attributes.
//! - [`validate`]: [`Event::validate`], every MUST of CloudEvents 1.0.2 and of the
//!   extensions OVASABI uses, with a [`ValidationError`] that names the attribute; its
//!   docs list each rule and where it is enforced.
//! - [`format`](mod@format): the wire forms of an event. [`format::json`] is the structured mode
//!   (`application/cloudevents+json`) and the JSON batch format; [`format::binary`] is the
//!   binary mode of the HTTP, NATS (`ce-*` headers) and Kafka (`ce_*` headers) bindings.
//!   Decoding validates; errors are [`format::FormatError`].
//! - [`naming`]: topic names and patterns, event-type names, dead-letter topics.
//! - [`dead_letter`]: the attributes a dead-lettered event carries.
//! - [`bus`]: the [`Publisher`], [`Subscriber`] and [`Bus`] traits every backend implements,
//!   and the contract they keep.
//! - [`error`] holds [`BusError`], the error of every bus operation.
//!
//! Backends (`ovasabi-embedded`, brokers) depend on this crate; it depends on none of them.

pub mod bus;
pub mod dead_letter;
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
pub use format::FormatError;
pub use naming::TopicPattern;
pub use validate::ValidationError;
