//! The NATS JetStream bus: OVASABI's backend for deployments of several processes.
//!
//! [`NatsBus`] implements [`ovasabi_core::Publisher`], [`ovasabi_core::Subscriber`] and
//! [`ovasabi_core::Bus`] on a NATS server with JetStream (2.9 or later) and passes the
//! conformance suite. All state (events, group positions, unacked deliveries) lives in the
//! server: a process restart is a reconnect.
//!
//! # Layout
//! - [`config`]: [`NatsConfig`], the connection and the streams' defaults.
//! - `bus`: [`NatsBus`]: connecting, publishing, [`Bus::topics`](ovasabi_core::Bus::topics),
//!   closing.
//! - `member`: subscriptions: a group's consumers, one member's pull loops and buffer, the
//!   acknowledger of each delivery.
//! - `dead_letter`: copies to `<topic>.dlq`, exactly once per group.
//! - [`layout`]: how topics, keys and groups map to streams, subjects and consumers.
//! - `codec`: events as binary-mode CloudEvents messages (`ce-*` headers).
//! - `api`: the JetStream API calls, with errors sorted into what the bus acts on.
//! - [`provision`]: creating and updating streams ahead of time, and the status report.
//! - [`testing`]: the one check tests use to find (or skip without) a server.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ovasabi_core::BusError> {
//! use ovasabi_core::{Bus, Event, Publisher, SubscribeOptions, Subscriber};
//! use ovasabi_nats::{NatsBus, NatsConfig};
//!
//! let bus = NatsBus::connect(NatsConfig::new("nats://127.0.0.1:4222")).await?;
//! let event = Event::new("user.registered", "/users")
//!     .with_json(&serde_json::json!({"user_id": "u1"}))
//!     .with_partition_key("u1");
//! bus.publish("user.events", event).await?; // returns once JetStream stored it
//! let mut sub = bus.subscribe(SubscribeOptions::new("welcome", ["user.events"])?).await?;
//! if let Some(Ok(delivery)) = sub.next().await {
//!     delivery.ack().await?; // returns once the server confirmed the ack
//! }
//! bus.close().await
//! # }
//! ```
//!
#![doc = include_str!("../README.md")]

mod api;
mod bus;
mod codec;
pub mod config;
mod dead_letter;
pub mod layout;
mod member;
pub mod provision;
pub mod testing;

/// The NATS client this crate is built on, for what the Bus API does not cover
/// ([`NatsBus::client`]).
pub use async_nats;
pub use bus::NatsBus;
pub use config::NatsConfig;
pub use provision::{ProvisionConfig, Storage, TopicSettings};
