//! OVASABI's typed event payloads: one serde struct per event type and version.
//!
//! The contracts live in `schemas/` at the repository's root (see `schemas/README.md`); this
//! crate is their Rust face. Each struct implements [`DomainEvent`], which names its type,
//! version and topic, the aggregate it is about ([`DomainEvent::subject`]) and builds the
//! CloudEvent that carries it ([`DomainEvent::to_event`]). The contract tests
//! (`tests/schemas.rs`) check that every schema version has a struct here and the other way
//! round, and that both sides' examples validate against the schema.
//!
//! # Layout
//! - [`users`], [`content`], [`commerce`], [`wallet`], [`messaging`], [`moderation`]
//!   (moderation decisions and fraud holds), [`notifications`], [`webhooks`]: one module per
//!   producing domain, each holding its events and the enums and nested objects they use.
//! - [`Money`]: the shared money value (`schemas/_defs/money.json`).
//! - [`all_types`]: every struct as a [`TypeInfo`], for tests and tooling that must see all
//!   of them.
//! - [`upcast`]: the platform's upcasters ([`upcasters`]), built on the `From` conversions.
//!
//! # Versions
//! The latest version of a type has the plain name ([`users::UserRegistered`]); older ones
//! carry their version as a suffix ([`users::UserRegisteredV1`]). Where a newer version only
//! adds optional fields, `From` converts the older struct into the newer one (the upcast).
//!
//! # Example
//! ```
//! use ovasabi_events::{users::UserRegistered, DomainEvent};
//!
//! let payload = UserRegistered::examples().remove(0);
//! let event = payload.to_event("/ovasabi/users");
//! assert_eq!(event.ty, "user.registered");
//! assert_eq!(event.dataschema.as_deref(), Some("urn:ovasabi:schema:user.registered:3"));
//! assert_eq!(event.subject.as_deref(), Some(payload.user_id.as_str()));
//! assert_eq!(event.partition_key(), Some(payload.user_id.as_str()));
//! ```

use chrono::{DateTime, Utc};
use ovasabi_core::Event;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub mod commerce;
pub mod content;
pub mod messaging;
pub mod moderation;
pub mod notifications;
pub mod upcast;
pub mod users;
pub mod wallet;
pub mod webhooks;

pub use upcast::upcasters;

/// An event payload with a schema in `schemas/`: its type, version and topic, and how it
/// becomes a CloudEvent.
pub trait DomainEvent: Serialize + DeserializeOwned {
    /// The event type, `<domain>.<past_tense_verb>` (`user.registered`).
    const TYPE: &'static str;
    /// The schema version this struct matches (`v<VERSION>.json`).
    const VERSION: u32;
    /// The topic events of this type are published on (`user.events`).
    const TOPIC: &'static str;

    /// The aggregate the event is about (user id, order id…): the CloudEvent's `subject` and
    /// partition key, so one aggregate's events stay in order.
    fn subject(&self) -> Option<String>;

    /// Sample payloads, at least one; together they set every optional field at least once.
    fn examples() -> Vec<Self>;

    /// The URN of this version's schema, which is also the event's `dataschema`.
    fn dataschema() -> String {
        format!("urn:ovasabi:schema:{}:{}", Self::TYPE, Self::VERSION)
    }

    /// A CloudEvent carrying this payload: type, dataschema, subject, partition key = subject,
    /// JSON data. `source` is the producing service as a URI-reference (`/ovasabi/users`).
    fn to_event(&self, source: &str) -> Event {
        let event = Event::new(Self::TYPE, source)
            .with_dataschema(Self::dataschema())
            .with_data(
                "application/json",
                // Straight from the struct to bytes, in its fields' order.
                serde_json::to_vec(self).expect("event payloads serialize to JSON"),
            );
        match self.subject() {
            Some(subject) => event
                .with_subject(subject.clone())
                .with_partition_key(subject),
            None => event,
        }
    }
}

/// An amount of money (`urn:ovasabi:defs:money`): an integer count of the currency's minor
/// unit and its ISO 4217 code. Closed like its schema: unknown members are rejected.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Money {
    /// The amount in the currency's minor unit: 1999 with `USD` is $19.99.
    pub amount_minor: i64,
    /// ISO 4217 alphabetic code, upper case (`USD`, `EUR`, `JPY`).
    pub currency: String,
}

impl Money {
    /// `amount_minor` minor units of `currency`.
    pub fn new(amount_minor: i64, currency: impl Into<String>) -> Self {
        Money {
            amount_minor,
            currency: currency.into(),
        }
    }
}

/// One event struct seen from outside: its type, version, topic, and functions that work on
/// it through JSON, so code can go over every type without naming each.
#[derive(Debug, Clone, Copy)]
pub struct TypeInfo {
    /// The event type ([`DomainEvent::TYPE`]).
    pub ty: &'static str,
    /// The schema version ([`DomainEvent::VERSION`]).
    pub version: u32,
    /// The topic ([`DomainEvent::TOPIC`]).
    pub topic: &'static str,
    /// The Rust type's path, for messages.
    pub rust_type: &'static str,
    /// The struct's [`DomainEvent::examples`], serialized.
    pub examples: fn() -> Vec<serde_json::Value>,
    /// Deserializes a payload into the struct and serializes it back.
    pub roundtrip: fn(&serde_json::Value) -> Result<serde_json::Value, serde_json::Error>,
    /// The struct's examples as CloudEvents from the given source ([`DomainEvent::to_event`]).
    pub example_events: fn(&str) -> Vec<Event>,
}

impl TypeInfo {
    /// The entry for `E`.
    pub fn of<E: DomainEvent>() -> Self {
        TypeInfo {
            ty: E::TYPE,
            version: E::VERSION,
            topic: E::TOPIC,
            rust_type: std::any::type_name::<E>(),
            examples: examples_json::<E>,
            roundtrip: roundtrip::<E>,
            example_events: example_events::<E>,
        }
    }

    /// The URN of the schema (`urn:ovasabi:schema:<type>:<version>`).
    pub fn dataschema(&self) -> String {
        format!("urn:ovasabi:schema:{}:{}", self.ty, self.version)
    }
}

/// Every event struct of this crate, every version, grouped by topic.
pub fn all_types() -> Vec<TypeInfo> {
    use commerce::*;
    use content::*;
    use messaging::*;
    use moderation::*;
    use notifications::*;
    use users::*;
    use wallet::*;
    use webhooks::*;
    vec![
        TypeInfo::of::<UserRegisteredV1>(),
        TypeInfo::of::<UserRegisteredV2>(),
        TypeInfo::of::<UserRegistered>(),
        TypeInfo::of::<UserProfileUpdated>(),
        TypeInfo::of::<UserEmailChanged>(),
        TypeInfo::of::<UserDeleted>(),
        TypeInfo::of::<ContentPosted>(),
        TypeInfo::of::<ContentUpdated>(),
        TypeInfo::of::<ContentDeleted>(),
        TypeInfo::of::<CommentAdded>(),
        TypeInfo::of::<ReactionAdded>(),
        TypeInfo::of::<OrderPlacedV1>(),
        TypeInfo::of::<OrderPlaced>(),
        TypeInfo::of::<PaymentCompleted>(),
        TypeInfo::of::<PaymentFailed>(),
        TypeInfo::of::<PaymentRefunded>(),
        TypeInfo::of::<OrderShipped>(),
        TypeInfo::of::<OrderCancelled>(),
        TypeInfo::of::<CoinMined>(),
        TypeInfo::of::<CoinTransferred>(),
        TypeInfo::of::<CoinSpent>(),
        TypeInfo::of::<CoinRefunded>(),
        TypeInfo::of::<MessageSent>(),
        TypeInfo::of::<ContentFlagged>(),
        TypeInfo::of::<ModerationDecided>(),
        TypeInfo::of::<FraudHoldPlaced>(),
        TypeInfo::of::<FraudHoldReleased>(),
        TypeInfo::of::<NotificationSent>(),
        TypeInfo::of::<WebhookEndpointDisabled>(),
    ]
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> serde_json::Value {
    // Payloads are plain structs with string keys: serializing them cannot fail.
    serde_json::to_value(value).expect("event payloads serialize to JSON")
}

fn examples_json<E: DomainEvent>() -> Vec<serde_json::Value> {
    E::examples().iter().map(to_json).collect()
}

fn roundtrip<E: DomainEvent>(
    value: &serde_json::Value,
) -> Result<serde_json::Value, serde_json::Error> {
    let typed: E = serde_json::from_value(value.clone())?;
    serde_json::to_value(&typed)
}

fn example_events<E: DomainEvent>(source: &str) -> Vec<Event> {
    E::examples().iter().map(|e| e.to_event(source)).collect()
}

/// An RFC 3339 timestamp written in an example.
fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339)
        .expect("example timestamps are valid RFC 3339")
        .with_timezone(&Utc)
}

/// Ids used by the examples, shared so examples of different events tell one story.
mod ids {
    pub(crate) const ADA: &str = "01JDQ5W8XJ4C2N7R0B3M9K6T1A";
    pub(crate) const BO: &str = "01JDQ5WB2H8F3Q6V9Y1N4P7S0C";
    pub(crate) const MODERATOR: &str = "01JDQ5WD7K1M4P8R2T5W9Y3B6E";
    pub(crate) const POST: &str = "01JDQ6A1B2C3D4E5F6G7H8J9K0";
    pub(crate) const COMMENT: &str = "01JDQ6C4M7P0R3T6W9Y2B5E8H1";
    pub(crate) const ORDER: &str = "01JDQ7E2P5R8T1W4Y7B0D3G6K9";
    pub(crate) const ORDER_2: &str = "01JDQ7E9T2W5Y8B1D4G7K0N3Q6";
    pub(crate) const PAYMENT: &str = "01JDQ7F6Q9S2V5X8Z1C4F7H0M3";
    pub(crate) const MESSAGE: &str = "01JDQ9N0X3Z6C9F2J5M8Q1S4V7";
    pub(crate) const FLAG: &str = "01JDQAP4Y7B0D3G6K9N2R5T8W1";
    pub(crate) const HOLD: &str = "01JDQBR2B5E8H1K4N7Q0T3W6Y9";
    /// The CloudEvent id of an `order.placed` event.
    pub(crate) const EVENT_ORDER_PLACED: &str = "01936f2e-7c4a-7d2b-9e1f-3a5b7c9d1e2f";
    /// The CloudEvent id of a `user.registered` event.
    pub(crate) const EVENT_USER_REGISTERED: &str = "01936f2a-1b3c-7d4e-8f5a-6b7c8d9e0f1a";
}
