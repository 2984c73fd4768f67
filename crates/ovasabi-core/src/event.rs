//! The event envelope: a CloudEvents 1.0 event held in memory.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};

/// The only CloudEvents version this envelope speaks.
pub const SPEC_VERSION: &str = "1.0";

/// Extension: W3C trace context `traceparent` (CloudEvents distributed-tracing extension).
pub const EXT_TRACEPARENT: &str = "traceparent";
/// Extension: W3C trace context `tracestate`.
pub const EXT_TRACESTATE: &str = "tracestate";
/// Extension: the id shared by every event of one business flow.
pub const EXT_CORRELATIONID: &str = "correlationid";
/// Extension: the id of the event that caused this one.
pub const EXT_CAUSATIONID: &str = "causationid";
/// Extension: the key that orders events (CloudEvents partitioning extension).
pub const EXT_PARTITIONKEY: &str = "partitionkey";
/// Extension: the event's position among the events of its subject (CloudEvents sequence
/// extension). A decimal `u64` carried as a string, as the extension specifies.
pub const EXT_SEQUENCE: &str = "sequence";

/// The value of an extension attribute, in the CloudEvents type system.
///
/// `Binary`, `URI`, `URI-reference` and `Timestamp` extension values travel as strings in
/// every format, so they are held as [`ExtensionValue::String`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExtensionValue {
    /// A CloudEvents `String` (or a string-encoded URI, timestamp or binary).
    String(String),
    /// A CloudEvents `Integer`: the spec limits it to the signed 32-bit range, which
    /// validation enforces.
    Integer(i64),
    /// A CloudEvents `Boolean`.
    Boolean(bool),
}

impl ExtensionValue {
    /// The value as its canonical string, as binary mode carries it in headers.
    pub fn to_canonical_string(&self) -> String {
        match self {
            ExtensionValue::String(s) => s.clone(),
            ExtensionValue::Integer(i) => i.to_string(),
            ExtensionValue::Boolean(b) => b.to_string(),
        }
    }

    /// The string inside, if this is a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            ExtensionValue::String(s) => Some(s),
            _ => None,
        }
    }
}

impl From<&str> for ExtensionValue {
    fn from(v: &str) -> Self {
        ExtensionValue::String(v.to_owned())
    }
}
impl From<String> for ExtensionValue {
    fn from(v: String) -> Self {
        ExtensionValue::String(v)
    }
}
impl From<i64> for ExtensionValue {
    fn from(v: i64) -> Self {
        ExtensionValue::Integer(v)
    }
}
impl From<bool> for ExtensionValue {
    fn from(v: bool) -> Self {
        ExtensionValue::Boolean(v)
    }
}

/// One CloudEvents 1.0 event.
///
/// Fields are public so events are easy to build and inspect; [`Event::validate`] (run by
/// every publish) checks every MUST of the specification. `specversion` is not stored: it is
/// always [`SPEC_VERSION`].
///
/// `data` holds the payload bytes exactly as published. When `datacontenttype` is absent or
/// JSON (`application/json`, `*/*+json`), the bytes are JSON text and the structured format
/// embeds them as a JSON value; otherwise they are opaque.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Identifies the event; unique per `source`.
    pub id: String,
    /// URI-reference naming the context in which the event happened.
    pub source: String,
    /// The event type, `<domain>.<past_tense_verb>` on OVASABI (`order.placed`).
    pub ty: String,
    /// What the event is about inside the source (an aggregate id, say).
    pub subject: Option<String>,
    /// When the occurrence happened. Publishing fills it in when it is absent.
    pub time: Option<DateTime<Utc>>,
    /// RFC 2046 media type of `data`.
    pub datacontenttype: Option<String>,
    /// URI of the schema `data` adheres to.
    pub dataschema: Option<String>,
    /// Extension attributes by name (lower-case ASCII letters and digits).
    pub extensions: BTreeMap<String, ExtensionValue>,
    /// The payload.
    pub data: Option<Bytes>,
}

impl Event {
    /// A new event with a fresh time-ordered UUID (v7) as id and no payload.
    pub fn new(ty: impl Into<String>, source: impl Into<String>) -> Self {
        Event {
            id: uuid::Uuid::now_v7().to_string(),
            source: source.into(),
            ty: ty.into(),
            subject: None,
            time: None,
            datacontenttype: None,
            dataschema: None,
            extensions: BTreeMap::new(),
            data: None,
        }
    }

    /// Sets a JSON payload (`datacontenttype: application/json`).
    pub fn with_json(mut self, value: &serde_json::Value) -> Self {
        self.data = Some(Bytes::from(value.to_string()));
        self.datacontenttype = Some("application/json".to_owned());
        self
    }

    /// Sets an opaque payload with its media type.
    pub fn with_data(mut self, content_type: impl Into<String>, data: impl Into<Bytes>) -> Self {
        self.data = Some(data.into());
        self.datacontenttype = Some(content_type.into());
        self
    }

    /// Sets the subject.
    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// Sets the time of the occurrence.
    pub fn with_time(mut self, time: DateTime<Utc>) -> Self {
        self.time = Some(time);
        self
    }

    /// Sets the URI of the schema the data adheres to.
    pub fn with_dataschema(mut self, dataschema: impl Into<String>) -> Self {
        self.dataschema = Some(dataschema.into());
        self
    }

    /// Sets the id.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Sets an extension attribute.
    pub fn with_extension(
        mut self,
        name: impl Into<String>,
        value: impl Into<ExtensionValue>,
    ) -> Self {
        self.extensions.insert(name.into(), value.into());
        self
    }

    /// Sets the partition key that orders this event among others of the same key.
    pub fn with_partition_key(self, key: impl Into<String>) -> Self {
        self.with_extension(EXT_PARTITIONKEY, key.into())
    }

    /// The string value of an extension, if present and a string.
    pub fn extension_str(&self, name: &str) -> Option<&str> {
        self.extensions.get(name).and_then(ExtensionValue::as_str)
    }

    /// The partition key (`partitionkey` extension).
    pub fn partition_key(&self) -> Option<&str> {
        self.extension_str(EXT_PARTITIONKEY)
    }

    /// The correlation id (`correlationid` extension).
    pub fn correlation_id(&self) -> Option<&str> {
        self.extension_str(EXT_CORRELATIONID)
    }

    /// The causation id (`causationid` extension).
    pub fn causation_id(&self) -> Option<&str> {
        self.extension_str(EXT_CAUSATIONID)
    }

    /// The W3C `traceparent` (distributed-tracing extension).
    pub fn traceparent(&self) -> Option<&str> {
        self.extension_str(EXT_TRACEPARENT)
    }

    /// The per-subject position (`sequence` extension), if present and a decimal integer.
    pub fn sequence(&self) -> Option<u64> {
        self.extension_str(EXT_SEQUENCE)
            .and_then(|s| s.parse().ok())
    }

    /// Sets the per-subject position (`sequence` extension).
    pub fn set_sequence(&mut self, sequence: u64) {
        self.extensions.insert(
            EXT_SEQUENCE.to_owned(),
            ExtensionValue::String(sequence.to_string()),
        );
    }

    /// Whether `data` is JSON text: `datacontenttype` absent, or a JSON media type
    /// (`*/json` or `*/*+json`, parameters ignored; see [`is_json_media_type`]).
    pub fn data_is_json(&self) -> bool {
        match &self.datacontenttype {
            None => true,
            Some(ct) => is_json_media_type(ct),
        }
    }

    /// The payload parsed as JSON, if it is JSON.
    pub fn data_json(&self) -> Option<serde_json::Value> {
        if !self.data_is_json() {
            return None;
        }
        self.data
            .as_ref()
            .and_then(|d| serde_json::from_slice(d).ok())
    }

    /// The size this event counts for against a bus's maximum: the payload's length.
    /// Attributes are bounded separately (see [`crate::validate::MAX_ATTRIBUTES_BYTES`]).
    pub fn data_len(&self) -> usize {
        self.data.as_ref().map_or(0, Bytes::len)
    }
}

/// Whether a media type denotes JSON: per the JSON event format, its subtype, parameters
/// stripped, is `json` or ends in `+json` (`application/json`, `text/json`,
/// `application/cloudevents+json`…), compared case-insensitively.
pub fn is_json_media_type(media_type: &str) -> bool {
    let essence = media_type.split(';').next().unwrap_or("").trim();
    let Some((_, subtype)) = essence.split_once('/') else {
        return false;
    };
    subtype.eq_ignore_ascii_case("json")
        || (subtype.len() > 5
            && subtype.is_char_boundary(subtype.len() - 5)
            && subtype[subtype.len() - 5..].eq_ignore_ascii_case("+json"))
}
