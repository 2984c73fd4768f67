//! Contracts enforced on the bus: payloads checked when published and when consumed, old
//! versions upcast for consumers written for a newer one.
//!
//! # Which schema an event is checked against
//!
//! | the event | published | consumed |
//! | --- | --- | --- |
//! | `dataschema` = `urn:ovasabi:schema:<its type>:<N>`, version N registered | checked against vN | checked against vN |
//! | no `dataschema`, type registered | `dataschema` set to the latest version, then checked | checked against the latest version |
//! | `dataschema` names our schema of another type, or a version not registered | refused | dead-lettered |
//! | type not registered, or `dataschema` another URI | passed unchecked (events from outside keep their own contracts) | passed unchecked |
//! | any event published to a dead-letter topic (`….dlq`) | passed unchecked (such a topic holds what failed, e.g. an event the outbox relay parks because this check refused it) | as on any topic |
//!
//! A registered type's payload must be JSON (`datacontenttype` absent, `application/json`
//! or `…+json`), or Protobuf (`application/protobuf`, `application/x-protobuf`) when the
//! version has a `.proto`: then it is decoded with the version's message, mapped to JSON and
//! checked against the same JSON Schema ([`crate::protobuf`]). A refused publish is a
//! [`BusError::InvalidEvent`] whose attribute is `data` and whose reason names each failing
//! field and rule; the caller's error, nothing written.
//! An invalid event consumed fails with a permanent [`HandlerError`] (reason
//! [`SCHEMA_VIOLATION_REASON`]), so the consumer dead-letters it with that reason and the
//! message naming the field and rule, at once, and goes on with the next event.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use ovasabi_core::naming::is_dead_letter_topic;
use ovasabi_core::{
    Bus, BusError, Event, Published, Publisher, SubscribeOptions, Subscriber, Subscription,
    TopicInfo, ValidationError,
};
use ovasabi_middleware::{Handler, HandlerError, Layer, Message, Outgoing};
use serde_json::Value;

use crate::protobuf;
use crate::registry::{parse_schema_uri, schema_uri, PayloadError, Registry, Version};

/// The `deadletterreason` of an event dead-lettered because it breaks its contract.
pub const SCHEMA_VIOLATION_REASON: &str = "schema violation";

/// Why an event does not meet its contract.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    /// The payload does not match the schema.
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// The envelope names a schema that cannot apply.
    #[error("{0}")]
    Envelope(String),
}

/// A conversion of one type's payload from version `from` to `from + 1`.
pub type UpcastFn = Arc<dyn Fn(Value) -> Result<Value, String> + Send + Sync>;

/// The upcasters, per event type and source version.
#[derive(Clone, Default)]
pub struct Upcasters {
    steps: BTreeMap<(String, u32), UpcastFn>,
}

impl std::fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.steps.keys()).finish()
    }
}

impl Upcasters {
    /// No upcasters.
    pub fn new() -> Upcasters {
        Upcasters::default()
    }

    /// Declares how `event_type`'s payload goes from version `from` to `from + 1`.
    pub fn register(
        mut self,
        event_type: &str,
        from: u32,
        step: impl Fn(Value) -> Result<Value, String> + Send + Sync + 'static,
    ) -> Upcasters {
        self.steps
            .insert((event_type.to_owned(), from), Arc::new(step));
        self
    }

    /// Converts `data` from version `from` to version `to` through every step between; a
    /// missing step is an error naming it.
    pub fn upcast(
        &self,
        event_type: &str,
        from: u32,
        to: u32,
        mut data: Value,
    ) -> Result<Value, String> {
        for version in from..to {
            let step = self
                .steps
                .get(&(event_type.to_owned(), version))
                .ok_or_else(|| {
                    format!(
                        "no upcaster declared for {event_type} v{version} → v{}",
                        version + 1
                    )
                })?;
            data = step(data).map_err(|e| {
                format!("upcasting {event_type} v{version} → v{}: {e}", version + 1)
            })?;
        }
        Ok(data)
    }
}

/// The registry and the upcasters, shared by publishers and consumers.
#[derive(Clone, Debug)]
pub struct Contracts {
    registry: Arc<Registry>,
    upcasters: Upcasters,
}

impl Contracts {
    /// Contracts from `registry`, with `upcasters`.
    pub fn new(registry: Arc<Registry>, upcasters: Upcasters) -> Contracts {
        Contracts {
            registry,
            upcasters,
        }
    }

    /// The registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The version `event` is checked against: `None` when its type is not registered or its
    /// `dataschema` is not ours (unchecked).
    pub fn version_of(&self, event: &Event) -> Result<Option<u32>, ContractError> {
        let named = event
            .dataschema
            .as_deref()
            .map(|uri| (uri, parse_schema_uri(uri)));
        match named {
            Some((_, None)) => Ok(None),
            Some((uri, Some((ty, version)))) => {
                if ty != event.ty {
                    return Err(ContractError::Envelope(format!(
                        "dataschema `{uri}` is the schema of `{ty}`, but the event's type is `{}`",
                        event.ty
                    )));
                }
                let Some(schema) = self.registry.get(ty) else {
                    return Err(ContractError::Envelope(format!(
                        "dataschema `{uri}` names a type with no registered schema"
                    )));
                };
                if !schema.versions.contains_key(&version) {
                    return Err(ContractError::Envelope(format!(
                        "dataschema `{uri}`: {ty} has no version {version}; registered: {}",
                        versions(schema.versions.keys())
                    )));
                }
                Ok(Some(version))
            }
            None => Ok(self
                .registry
                .get(&event.ty)
                .map(|schema| schema.latest().version)),
        }
    }

    /// Checks an event's payload against the version [`Contracts::version_of`] chooses.
    pub fn check(&self, event: &Event) -> Result<Option<u32>, ContractError> {
        let Some(version) = self.version_of(event)? else {
            return Ok(None);
        };
        let schema = self
            .registry
            .version(&event.ty, version)
            .expect("version_of returns registered versions");
        let data = payload(event, schema)?;
        schema.validate(&event.ty, &data)?;
        Ok(Some(version))
    }

    /// Checks an event about to be published, naming its schema in `dataschema` when it
    /// named none.
    pub fn prepare_outgoing(&self, event: &mut Event) -> Result<(), BusError> {
        match self.check(event) {
            Ok(Some(version)) => {
                if event.dataschema.is_none() {
                    event.dataschema = Some(schema_uri(&event.ty, version));
                }
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => Err(BusError::InvalidEvent(ValidationError {
                attribute: match e {
                    ContractError::Payload(_) => "data",
                    ContractError::Envelope(_) => "dataschema",
                }
                .to_owned(),
                reason: e.to_string(),
            })),
        }
    }

    /// Converts a checked event of version `from` to `to` (payload and `dataschema`).
    ///
    /// A Protobuf event stays Protobuf when version `to` has a `.proto`, and becomes JSON
    /// otherwise.
    pub fn upcast(&self, event: &Event, from: u32, to: u32) -> Result<Event, String> {
        let version = |n: u32| {
            self.registry
                .version(&event.ty, n)
                .ok_or_else(|| format!("{} has no version {n}", event.ty))
        };
        let data = payload(event, version(from)?).map_err(|e| e.to_string())?;
        let data = self.upcasters.upcast(&event.ty, from, to, data)?;
        let mut converted = event.clone();
        converted.dataschema = Some(schema_uri(&event.ty, to));
        let was_protobuf = event
            .datacontenttype
            .as_deref()
            .is_some_and(protobuf::is_protobuf);
        if let (true, Some(proto)) = (was_protobuf, &version(to)?.protobuf) {
            converted.data = Some(proto.encode(&data)?.into());
            return Ok(converted);
        }
        let content_type = match &event.datacontenttype {
            Some(ct) if !was_protobuf => ct.clone(),
            _ => "application/json".to_owned(),
        };
        converted.datacontenttype = Some(content_type);
        converted.data = Some(serde_json::to_vec(&data).map_err(|e| e.to_string())?.into());
        Ok(converted)
    }
}

fn versions<'a>(keys: impl Iterator<Item = &'a u32>) -> String {
    keys.map(|v| format!("v{v}")).collect::<Vec<_>>().join(", ")
}

/// The event's payload as JSON (a Protobuf one decoded with `version`'s message), or why a
/// registered type's payload cannot be read.
fn payload(event: &Event, version: &Version) -> Result<Value, ContractError> {
    if let Some(ct) = event.datacontenttype.as_deref() {
        let essence = ct
            .split(';')
            .next()
            .unwrap_or(ct)
            .trim()
            .to_ascii_lowercase();
        if protobuf::is_protobuf(&essence) {
            let Some(proto) = &version.protobuf else {
                return Err(ContractError::Envelope(format!(
                    "datacontenttype `{ct}`: {} v{} has no Protobuf encoding ({}/v{}.proto); \
                     publish it as JSON (application/json)",
                    event.ty, version.version, event.ty, version.version
                )));
            };
            return proto
                .decode(event.data.as_deref().unwrap_or_default())
                .map_err(|violations| {
                    ContractError::Payload(PayloadError {
                        event_type: event.ty.clone(),
                        version: version.version,
                        violations,
                    })
                });
        }
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(ContractError::Envelope(format!(
                "datacontenttype `{ct}`: events of type `{}` carry JSON (application/json){}",
                event.ty,
                if version.protobuf.is_some() {
                    " or Protobuf (application/protobuf)"
                } else {
                    ""
                }
            )));
        }
    }
    match &event.data {
        None => Ok(Value::Null),
        Some(bytes) => serde_json::from_slice(bytes)
            .map_err(|e| ContractError::Envelope(format!("data is not valid JSON: {e}"))),
    }
}

/// A bus that checks every event against its contract before publishing it (to any topic
/// but a dead-letter topic).
pub struct ValidatingBus {
    inner: Arc<dyn Bus>,
    contracts: Contracts,
}

impl ValidatingBus {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Bus>, contracts: Contracts) -> ValidatingBus {
        ValidatingBus { inner, contracts }
    }

    /// The contracts enforced.
    pub fn contracts(&self) -> &Contracts {
        &self.contracts
    }
}

#[async_trait]
impl Publisher for ValidatingBus {
    async fn publish(&self, topic: &str, mut event: Event) -> Result<Published, BusError> {
        if !is_dead_letter_topic(topic) {
            self.contracts.prepare_outgoing(&mut event)?;
        }
        self.inner.publish(topic, event).await
    }

    async fn publish_batch(
        &self,
        topic: &str,
        mut events: Vec<Event>,
    ) -> Result<Vec<Published>, BusError> {
        if !is_dead_letter_topic(topic) {
            for event in &mut events {
                self.contracts.prepare_outgoing(event)?;
            }
        }
        self.inner.publish_batch(topic, events).await
    }
}

#[async_trait]
impl Subscriber for ValidatingBus {
    async fn subscribe(&self, options: SubscribeOptions) -> Result<Subscription, BusError> {
        self.inner.subscribe(options).await
    }
}

#[async_trait]
impl Bus for ValidatingBus {
    async fn topics(&self) -> Result<Vec<TopicInfo>, BusError> {
        self.inner.topics().await
    }

    async fn close(&self) -> Result<(), BusError> {
        self.inner.close().await
    }
}

/// A layer that checks each consumed event against its contract, and upcasts registered
/// types to the versions the handler reads.
#[derive(Clone, Debug)]
pub struct ContractLayer {
    contracts: Contracts,
    targets: BTreeMap<String, u32>,
}

impl ContractLayer {
    /// Checks events; passes them on in the version they were written in.
    pub fn new(contracts: Contracts) -> ContractLayer {
        ContractLayer {
            contracts,
            targets: BTreeMap::new(),
        }
    }

    /// The handler reads `event_type` in `version`: older events are upcast to it (and
    /// checked against it after conversion); newer ones are passed on as written, which the
    /// type's compatibility mode makes readable when it is FORWARD or FULL.
    pub fn reads(mut self, event_type: &str, version: u32) -> ContractLayer {
        self.targets.insert(event_type.to_owned(), version);
        self
    }
}

impl<H: Handler> Layer<H> for ContractLayer {
    type Handler = ContractChecked<H>;

    fn layer(&self, inner: H) -> ContractChecked<H> {
        ContractChecked {
            inner,
            layer: self.clone(),
        }
    }
}

/// A handler behind a [`ContractLayer`].
#[derive(Debug)]
pub struct ContractChecked<H> {
    inner: H,
    layer: ContractLayer,
}

fn invalid(message: String) -> HandlerError {
    HandlerError::permanent(message).with_reason(SCHEMA_VIOLATION_REASON)
}

#[async_trait]
impl<H: Handler> Handler for ContractChecked<H> {
    async fn handle(&self, msg: &Message) -> Result<Vec<Outgoing>, HandlerError> {
        let contracts = &self.layer.contracts;
        let event = msg.event();
        let version = match contracts.check(event) {
            Ok(Some(version)) => version,
            Ok(None) => return self.inner.handle(msg).await,
            Err(e) => return Err(invalid(e.to_string())),
        };
        match self.layer.targets.get(&event.ty) {
            Some(&target) if target > version => {
                let converted = contracts.upcast(event, version, target).map_err(invalid)?;
                contracts
                    .check(&converted)
                    .map_err(|e| invalid(format!("after upcasting to v{target}: {e}")))?;
                let upcast = Message::new(Arc::new(converted), msg.info().clone());
                self.inner.handle(&upcast).await
            }
            _ => self.inner.handle(msg).await,
        }
    }
}
