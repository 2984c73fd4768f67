//! The embedded durable bus: OVASABI's default backend, needing no server.
//!
//! Events live in SQLite (WAL mode) in one data directory that one process owns. Publishing
//! returns once the event is committed; concurrent publishers share one commit through a
//! single writer thread (group commit). Consumer-group positions are stored in the same
//! database, so an acked event is never redelivered to its group after a restart.
//!
//! # Layout
//! - [`config`]: [`EmbeddedConfig`], [`Durability`], [`Retention`].
//! - `bus`: [`EmbeddedBus`], the Bus API over everything below.
//! - `group`: a consumer group's state: cursors, in-flight deliveries, per-key ordering,
//!   redelivery timers, dead-lettering.
//! - `store`: the SQLite schema, reads, and the writer thread.
//! - `log`: a topic's committed range and its cache of recent events.
//! - `codec`: the compact storage encoding of an event.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ovasabi_core::BusError> {
//! use ovasabi_core::{Bus, Event, Publisher, SubscribeOptions, Subscriber};
//! use ovasabi_embedded::{EmbeddedBus, EmbeddedConfig};
//!
//! let bus = EmbeddedBus::open(EmbeddedConfig::new("/tmp/ovasabi-demo")).await?;
//! let event = Event::new("user.registered", "/users").with_json(&serde_json::json!({"user_id": "u1"}));
//! bus.publish("user.events", event).await?;
//! let mut sub = bus.subscribe(SubscribeOptions::new("welcome", ["user.events"])?).await?;
//! if let Some(Ok(delivery)) = sub.next().await {
//!     delivery.ack().await?;
//! }
//! bus.close().await
//! # }
//! ```

mod bus;
mod codec;
pub mod config;
mod group;
mod log;
mod store;

pub use bus::EmbeddedBus;
pub use config::{Durability, EmbeddedConfig, Retention};
