//! OVASABI's event contracts: one JSON Schema per event type and version (in `schemas/` at
//! the repository's root, compiled in), validation of payloads when published and consumed,
//! compatibility checks between versions, and upcasting of old events.
//!
//! ```no_run
//! use std::sync::Arc;
//! use ovasabi_schema::{Contracts, Registry, Upcasters, ValidatingBus};
//! # fn demo(bus: Arc<dyn ovasabi_core::Bus>) -> Result<(), Box<dyn std::error::Error>> {
//! let registry = Arc::new(Registry::builtin().map_err(|e| format!("{e:?}"))?);
//! let contracts = Contracts::new(registry, Upcasters::new());
//! let bus = ValidatingBus::new(bus, contracts); // refuses payloads that break their schema
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`registry`] — [`Registry`]: the schemas, loaded and compiled; [`PayloadError`] names
//!   each failing field and rule.
//! - [`contracts`] — [`Contracts`], [`ValidatingBus`] (checks on publish), [`ContractLayer`]
//!   (checks on consume, dead-letters what breaks its contract, upcasts), [`Upcasters`].
//! - [`compat`] — compatibility modes and the checker between two schemas.
//! - [`check`] — `ovasabi schema check`: every type's history under its mode, and against a
//!   released state.
//! - [`asyncapi`] — the registry as an AsyncAPI 3.0 document (channels per topic, operations
//!   per service, a message per type and version), as JSON or YAML.
//! - [`catalog`] — the registry as a Markdown catalog for people: fields, changes, examples.
//! - [`protobuf`] — Protobuf (`application/protobuf`) as a second encoding: a version's
//!   `v<N>.proto` compiled without `protoc`, payloads decoded, mapped to JSON and held to the
//!   same JSON Schema, and the wire-compatibility rules between versions.

pub mod asyncapi;
pub mod catalog;
pub mod check;
pub mod compat;
pub mod contracts;
pub mod protobuf;
pub mod registry;

pub use contracts::{
    ContractChecked, ContractError, ContractLayer, Contracts, Upcasters, ValidatingBus,
    SCHEMA_VIOLATION_REASON,
};
pub use registry::{EventSchema, LoadError, PayloadError, Registry, TypeMeta, Version};
