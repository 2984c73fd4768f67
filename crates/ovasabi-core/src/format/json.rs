//! The JSON event format (CloudEvents 1.0.2 `formats/json-format.md`): structured mode
//! and batch mode.
//!
//! One event is one JSON object with every attribute as a top-level member (extensions
//! included) and the payload in `data` or `data_base64`:
//!
//! ```
//! use ovasabi_core::{format::json, Event};
//!
//! let event = Event::new("order.placed", "/services/orders")
//!     .with_id("e-1")
//!     .with_json(&serde_json::json!({"order": 7}));
//! let text = json::to_json_string(&event);
//! assert_eq!(
//!     text,
//!     r#"{"specversion":"1.0","id":"e-1","source":"/services/orders","type":"order.placed","datacontenttype":"application/json","data":{"order":7}}"#
//! );
//! assert_eq!(json::from_json_slice(text.as_bytes()).unwrap(), event);
//! ```
//!
//! # How the data is written
//!
//! The format decides by `datacontenttype`, as the specification's §3.1 asks:
//!
//! - **JSON** (absent, `*/json` or `*/*+json`; see [`Event::data_is_json`]): the data bytes
//!   are JSON text and are embedded as they are, as the value of `data`, without being
//!   re-encoded. They are checked to be one valid JSON value first; bytes that are not
//!   (say a truncated document), or that have whitespace before or after the value (a
//!   trailing newline, say), are written as `data_base64` instead, so the output is always
//!   valid JSON and the bytes come back exactly.
//! - **Text** (see [`is_textual_media_type`]: `text/*`, XML, YAML, form data and other
//!   textual types, or any type with a UTF-8 or US-ASCII `charset`): `data` is a JSON
//!   string holding the data, if the bytes are UTF-8; otherwise `data_base64`.
//! - **Anything else**: `data_base64`, the bytes in standard Base64.
//!
//! Reading reverses this: `data_base64` gives its decoded bytes; `data` gives its JSON
//! text when the content type is JSON or absent (without the whitespace around it; a JSON
//! `null` is an explicit null payload, the bytes `null`), and the string's UTF-8 bytes
//! otherwise. A `null` attribute is the attribute absent; `specversion` must be
//! `1.0`; extension members that are JSON numbers become [`ExtensionValue::Integer`],
//! booleans [`ExtensionValue::Boolean`]; every decoded event is validated.
//!
//! Writing is on the bus's hot path: [`write_json`] appends to a buffer the caller can
//! reuse and builds no intermediate [`serde_json::Value`].

use std::borrow::Cow;
use std::fmt;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::FormatError;
use crate::event::{Event, ExtensionValue, SPEC_VERSION};
use crate::validate::{MediaType, CORE_ATTRIBUTES};

/// The media type of one event in the JSON format (structured content mode).
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";

/// The media type of a batch of events in the JSON batch format.
pub const BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json";

/// Reads Base64 with or without padding, as producers differ.
const BASE64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

// ---------------------------------------------------------------------------------------
// Writing

/// The event as JSON bytes (structured mode, `application/cloudevents+json`).
pub fn to_json_vec(event: &Event) -> Vec<u8> {
    let mut out = Vec::with_capacity(size_hint(event));
    write_json(event, &mut out);
    out
}

/// The event as a JSON string (structured mode).
pub fn to_json_string(event: &Event) -> String {
    // The writer only emits UTF-8: escaped strings, checked JSON text and Base64.
    String::from_utf8(to_json_vec(event))
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Appends the event as JSON to `out`, so a caller on a hot path can reuse one buffer.
pub fn write_json(event: &Event, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"specversion\":\"");
    out.extend_from_slice(SPEC_VERSION.as_bytes());
    out.extend_from_slice(b"\",\"id\":");
    write_str(out, &event.id);
    out.extend_from_slice(b",\"source\":");
    write_str(out, &event.source);
    out.extend_from_slice(b",\"type\":");
    write_str(out, &event.ty);
    if let Some(v) = &event.datacontenttype {
        out.extend_from_slice(b",\"datacontenttype\":");
        write_str(out, v);
    }
    if let Some(v) = &event.dataschema {
        out.extend_from_slice(b",\"dataschema\":");
        write_str(out, v);
    }
    if let Some(v) = &event.subject {
        out.extend_from_slice(b",\"subject\":");
        write_str(out, v);
    }
    if let Some(t) = &event.time {
        out.extend_from_slice(b",\"time\":\"");
        write_rfc3339(out, t);
        out.push(b'"');
    }
    for (name, value) in &event.extensions {
        // A valid event has none of these; skipping them keeps member names unique.
        if is_reserved_member(name) {
            continue;
        }
        out.push(b',');
        write_str(out, name);
        out.push(b':');
        match value {
            ExtensionValue::String(s) => write_str(out, s),
            ExtensionValue::Integer(i) => write_int(out, *i),
            ExtensionValue::Boolean(true) => out.extend_from_slice(b"true"),
            ExtensionValue::Boolean(false) => out.extend_from_slice(b"false"),
        }
    }
    match data_repr(event) {
        None => {}
        Some(DataRepr::Json(json)) => {
            out.extend_from_slice(b",\"data\":");
            out.extend_from_slice(json.as_bytes());
        }
        Some(DataRepr::Text(text)) => {
            out.extend_from_slice(b",\"data\":");
            write_str(out, text);
        }
        Some(DataRepr::Base64(bytes)) => {
            out.extend_from_slice(b",\"data_base64\":\"");
            write_base64(out, bytes);
            out.push(b'"');
        }
    }
    out.push(b'}');
}

/// The events as a JSON batch (`application/cloudevents-batch+json`): a JSON array.
pub fn to_json_batch_vec(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::with_capacity(events.iter().map(size_hint).sum::<usize>() + 2);
    write_json_batch(events, &mut out);
    out
}

/// Appends the events as a JSON batch to `out`.
pub fn write_json_batch(events: &[Event], out: &mut Vec<u8>) {
    out.push(b'[');
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json(event, out);
    }
    out.push(b']');
}

/// The event as a [`serde_json::Value`], for callers that want to inspect or embed it.
///
/// Same members as [`to_json_vec`], except that JSON data which `serde_json` cannot hold
/// as a `Value` (a number beyond `f64`, say) is given as `data_base64`.
pub fn to_json_value(event: &Event) -> serde_json::Value {
    use serde_json::{Map, Value};
    let mut map = Map::new();
    map.insert("specversion".into(), SPEC_VERSION.into());
    map.insert("id".into(), event.id.clone().into());
    map.insert("source".into(), event.source.clone().into());
    map.insert("type".into(), event.ty.clone().into());
    let optional = [
        ("datacontenttype", &event.datacontenttype),
        ("dataschema", &event.dataschema),
        ("subject", &event.subject),
    ];
    for (name, value) in optional {
        if let Some(v) = value {
            map.insert(name.into(), v.clone().into());
        }
    }
    if let Some(t) = &event.time {
        map.insert("time".into(), rfc3339(t).into());
    }
    for (name, value) in &event.extensions {
        if is_reserved_member(name) {
            continue;
        }
        let v = match value {
            ExtensionValue::String(s) => Value::from(s.clone()),
            ExtensionValue::Integer(i) => Value::from(*i),
            ExtensionValue::Boolean(b) => Value::from(*b),
        };
        map.insert(name.clone(), v);
    }
    let base64 = |bytes: &[u8]| Value::from(STANDARD.encode(bytes));
    match data_repr(event) {
        None => {}
        Some(DataRepr::Json(json)) => match serde_json::from_str::<Value>(json) {
            Ok(v) => {
                map.insert("data".into(), v);
            }
            Err(_) => {
                map.insert("data_base64".into(), base64(json.as_bytes()));
            }
        },
        Some(DataRepr::Text(text)) => {
            map.insert("data".into(), text.into());
        }
        Some(DataRepr::Base64(bytes)) => {
            map.insert("data_base64".into(), base64(bytes));
        }
    }
    Value::Object(map)
}

/// Whether an extension named `name` would clash with a member the format writes itself.
fn is_reserved_member(name: &str) -> bool {
    name == "data" || name == "data_base64" || CORE_ATTRIBUTES.contains(&name)
}

fn size_hint(event: &Event) -> usize {
    let attributes = 96
        + event.id.len()
        + event.source.len()
        + event.ty.len()
        + event.subject.as_ref().map_or(0, String::len)
        + event.datacontenttype.as_ref().map_or(0, String::len)
        + event.dataschema.as_ref().map_or(0, String::len)
        + event
            .extensions
            .iter()
            .map(|(k, v)| k.len() + 6 + crate::validate::extension_value_len(v))
            .sum::<usize>();
    // Base64 is the largest form data can take.
    attributes + event.data_len().div_ceil(3) * 4 + 16
}

/// How the data goes into the JSON object.
enum DataRepr<'a> {
    /// Valid JSON text, embedded as the value of `data`.
    Json(&'a str),
    /// UTF-8 text, written as the JSON string `data`.
    Text(&'a str),
    /// Anything else, written as `data_base64`.
    Base64(&'a [u8]),
}

fn data_repr(event: &Event) -> Option<DataRepr<'_>> {
    let data = event.data.as_ref()?;
    if event.data_is_json() {
        // Whitespace around the value would not survive a parse (the value is read without
        // it), so such bytes go as Base64 to come back exactly.
        let is_ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
        let padded = data.first().is_some_and(is_ws) || data.last().is_some_and(is_ws);
        if !padded {
            if let Ok(text) = std::str::from_utf8(data) {
                if serde_json::from_str::<IgnoredAny>(text).is_ok() {
                    return Some(DataRepr::Json(text));
                }
            }
        }
        return Some(DataRepr::Base64(data));
    }
    if event
        .datacontenttype
        .as_deref()
        .is_some_and(is_textual_media_type)
    {
        if let Ok(text) = std::str::from_utf8(data) {
            return Some(DataRepr::Text(text));
        }
    }
    Some(DataRepr::Base64(data))
}

/// Whether data of this media type is text the JSON format carries as a `data` string
/// (when its bytes are UTF-8): any type with a `charset` of UTF-8 or US-ASCII; without a
/// charset, `text/*`, `*/xml`, `*/*+xml`, `*/yaml`, `*/*+yaml` and a few textual
/// `application/` types (JavaScript, form data, SQL, GraphQL, TOML, CSV). JSON types are
/// handled before this is asked (see [`Event::data_is_json`]); any other charset means
/// Base64, since the bytes are not UTF-8 text.
pub fn is_textual_media_type(media_type: &str) -> bool {
    let Ok(m) = MediaType::parse(media_type) else {
        return false;
    };
    if let Some(charset) = m.param("charset") {
        return ["utf-8", "utf8", "us-ascii", "ascii"]
            .iter()
            .any(|c| charset.eq_ignore_ascii_case(c));
    }
    if m.ty.eq_ignore_ascii_case("text") {
        return true;
    }
    let sub = m.subtype;
    let ends_with = |suffix: &str| {
        sub.len() > suffix.len()
            && sub.is_char_boundary(sub.len() - suffix.len())
            && sub[sub.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
    };
    let is = |names: &[&str]| names.iter().any(|n| sub.eq_ignore_ascii_case(n));
    if is(&["xml", "yaml", "x-yaml"]) || ends_with("+xml") || ends_with("+yaml") {
        return true;
    }
    m.ty.eq_ignore_ascii_case("application")
        && is(&[
            "javascript",
            "ecmascript",
            "x-www-form-urlencoded",
            "sql",
            "graphql",
            "toml",
            "csv",
            "x-ndjson",
        ])
}

/// Which bytes need escaping in a JSON string, and how: 0 none, `u` as `\u00XX`, else
/// the letter after the backslash.
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        table[i] = b'u';
        i += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0A] = b'n';
    table[0x0C] = b'f';
    table[0x0D] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// Writes `s` as a JSON string, quotes included.
fn write_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape = ESCAPE[b as usize];
        if escape == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        if escape == b'u' {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xF)]);
        } else {
            out.push(b'\\');
            out.push(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn write_int(out: &mut Vec<u8>, i: i64) {
    let mut buf = [0u8; 20];
    let mut n = i.unsigned_abs();
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if i < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[at..]);
}

fn write_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    let start = out.len();
    let len = bytes.len().div_ceil(3) * 4;
    out.resize(start + len, 0);
    let written = STANDARD.encode_slice(bytes, &mut out[start..]).unwrap_or(0);
    out.truncate(start + written);
}

/// `time` in RFC 3339 as chrono's `to_rfc3339_opts(SecondsFormat::AutoSi, true)` writes it.
pub(crate) fn rfc3339(time: &DateTime<Utc>) -> String {
    let mut out = Vec::with_capacity(32);
    write_rfc3339(&mut out, time);
    String::from_utf8(out).unwrap_or_else(|_| time.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

fn push_digits(out: &mut Vec<u8>, value: u32, width: usize) {
    let mut buf = [b'0'; 10];
    let mut v = value;
    for slot in buf[..width].iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend_from_slice(&buf[..width]);
}

/// Writes `time` like chrono's `to_rfc3339_opts(SecondsFormat::AutoSi, true)`, without its
/// formatting machinery: `2026-01-02T03:04:05Z`, with 3, 6 or 9 fraction digits if needed.
fn write_rfc3339(out: &mut Vec<u8>, time: &DateTime<Utc>) {
    let naive = time.naive_utc();
    let (date, clock) = (naive.date(), naive.time());
    let year = match u32::try_from(date.year()) {
        Ok(year) if year <= 9999 => year,
        _ => {
            // No four-digit year: chrono writes a sign and more digits (not RFC 3339;
            // validation refuses such times).
            out.extend_from_slice(time.to_rfc3339_opts(SecondsFormat::AutoSi, true).as_bytes());
            return;
        }
    };
    let mut second = clock.second();
    let mut nanos = clock.nanosecond();
    if nanos >= 1_000_000_000 {
        // A leap second: chrono keeps it in the nanoseconds and shows second 60.
        second += 1;
        nanos -= 1_000_000_000;
    }
    push_digits(out, year, 4);
    out.push(b'-');
    push_digits(out, date.month(), 2);
    out.push(b'-');
    push_digits(out, date.day(), 2);
    out.push(b'T');
    push_digits(out, clock.hour(), 2);
    out.push(b':');
    push_digits(out, clock.minute(), 2);
    out.push(b':');
    push_digits(out, second, 2);
    match crate::validate::fraction_digits(nanos) {
        0 => {}
        digits => {
            out.push(b'.');
            let scaled = nanos / 10u32.pow(9 - digits as u32);
            push_digits(out, scaled, digits);
        }
    }
    out.push(b'Z');
}

// ---------------------------------------------------------------------------------------
// Reading

/// Parses one event in the JSON format, then validates it.
pub fn from_json_slice(bytes: &[u8]) -> Result<Event, FormatError> {
    parse_one(bytes, None)
}

/// Like [`from_json_slice`], but JSON data shares `bytes`' buffer instead of being copied:
/// the cheap way to decode large payloads received as [`Bytes`].
pub fn from_json_bytes(bytes: &Bytes) -> Result<Event, FormatError> {
    parse_one(bytes, Some(bytes))
}

/// Parses a JSON batch (a JSON array of events), validating each event.
pub fn from_json_batch_slice(bytes: &[u8]) -> Result<Vec<Event>, FormatError> {
    parse_batch(bytes, None)
}

/// Like [`from_json_batch_slice`], sharing `bytes`' buffer for JSON data.
pub fn from_json_batch_bytes(bytes: &Bytes) -> Result<Vec<Event>, FormatError> {
    parse_batch(bytes, Some(bytes))
}

fn as_utf8<'a>(bytes: &'a [u8], format: &'static str) -> Result<&'a str, FormatError> {
    std::str::from_utf8(bytes).map_err(|e| FormatError::Syntax {
        format,
        detail: format!(
            "the input is not UTF-8 (invalid byte at offset {}); JSON text must be UTF-8",
            e.valid_up_to()
        ),
    })
}

fn parse_one(bytes: &[u8], owner: Option<&Bytes>) -> Result<Event, FormatError> {
    let text = as_utf8(bytes, "JSON")?;
    let members: Members<'_> = serde_json::from_str(text).map_err(|e| FormatError::Syntax {
        format: "JSON",
        detail: e.to_string(),
    })?;
    members.into_event(owner)
}

fn parse_batch(bytes: &[u8], owner: Option<&Bytes>) -> Result<Vec<Event>, FormatError> {
    let text = as_utf8(bytes, "JSON batch")?;
    let batch: Batch<'_> = serde_json::from_str(text).map_err(|e| FormatError::Syntax {
        format: "JSON batch",
        detail: e.to_string(),
    })?;
    batch
        .0
        .into_iter()
        .enumerate()
        .map(|(index, members)| {
            members.into_event(owner).map_err(|e| FormatError::Batch {
                index,
                source: Box::new(e),
            })
        })
        .collect()
}

/// A member name, borrowed from the input unless it had escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// The members of one event object, values still raw JSON.
struct Members<'de>(Vec<(Cow<'de, str>, &'de RawValue)>);

struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Members<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object holding one CloudEvent")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(Key(key)) = map.next_key()? {
            let value: &'de RawValue = map.next_value()?;
            members.push((key, value));
        }
        Ok(Members(members))
    }
}

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(MembersVisitor)
    }
}

struct Batch<'de>(Vec<Members<'de>>);

impl<'de> Deserialize<'de> for Batch<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BatchVisitor;
        impl<'de> Visitor<'de> for BatchVisitor {
            type Value = Batch<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON array of CloudEvent objects")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Batch<'de>, A::Error> {
                let mut events = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(members) = seq.next_element::<Members<'de>>()? {
                    events.push(members);
                }
                Ok(Batch(events))
            }
        }
        deserializer.deserialize_seq(BatchVisitor)
    }
}

/// The JSON type of a raw value, for error messages.
fn json_type(raw: &RawValue) -> &'static str {
    match raw.get().as_bytes().first() {
        Some(b'"') => "a string",
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

fn is_null(raw: &RawValue) -> bool {
    raw.get() == "null"
}

/// A string attribute: `None` for `null`, an error for any other non-string.
fn string_member(name: &str, raw: &RawValue) -> Result<Option<String>, FormatError> {
    if is_null(raw) {
        return Ok(None);
    }
    if !raw.get().starts_with('"') {
        return Err(FormatError::attribute(
            name,
            format!("must be a JSON string, found {}", json_type(raw)),
        ));
    }
    serde_json::from_str::<String>(raw.get())
        .map(Some)
        .map_err(|e| FormatError::attribute(name, format!("cannot be read: {e}")))
}

/// An extension member: string, integer or boolean; `None` for `null`.
fn extension_member(name: &str, raw: &RawValue) -> Result<Option<ExtensionValue>, FormatError> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'n') => Ok(None),
        Some(b'"') => Ok(string_member(name, raw)?.map(ExtensionValue::String)),
        Some(b't') => Ok(Some(ExtensionValue::Boolean(true))),
        Some(b'f') => Ok(Some(ExtensionValue::Boolean(false))),
        Some(b'{' | b'[') => Err(FormatError::attribute(
            name,
            format!(
                "extension values must be a string, an integer or a boolean, found {}; encode structured values as a string",
                json_type(raw)
            ),
        )),
        _ => {
            if text.contains(['.', 'e', 'E']) {
                return Err(FormatError::attribute(
                    name,
                    format!(
                        "{text} is not an Integer: CloudEvents numbers are whole numbers without fraction or exponent; send other numbers as a string"
                    ),
                ));
            }
            match text.parse::<i64>() {
                Ok(i) => Ok(Some(ExtensionValue::Integer(i))),
                Err(_) => Err(FormatError::attribute(
                    name,
                    format!(
                        "Integer {text} is outside the signed 32-bit range CloudEvents allows; send it as a string"
                    ),
                )),
            }
        }
    }
}

/// `sub`, a slice of `owner`'s buffer, as shared [`Bytes`]; copied when there is no owner.
fn shared_bytes(owner: Option<&Bytes>, sub: &[u8]) -> Bytes {
    if let Some(owner) = owner {
        let range = owner.as_ptr() as usize..owner.as_ptr() as usize + owner.len();
        let start = sub.as_ptr() as usize;
        if !sub.is_empty() && range.contains(&start) && start + sub.len() <= range.end {
            return owner.slice_ref(sub);
        }
    }
    Bytes::copy_from_slice(sub)
}

/// The member names met so far: a short list scanned in place, a hash set past that, so a
/// hostile object with many members costs linear time.
enum Seen<'a> {
    Few(Vec<&'a str>),
    Many(std::collections::HashSet<&'a str>),
}

impl<'a> Seen<'a> {
    fn with_capacity(n: usize) -> Self {
        if n <= 16 {
            Seen::Few(Vec::with_capacity(n))
        } else {
            Seen::Many(std::collections::HashSet::with_capacity(n))
        }
    }

    /// Records `name`; false if it was already there.
    fn insert(&mut self, name: &'a str) -> bool {
        match self {
            Seen::Few(names) => {
                if names.contains(&name) {
                    return false;
                }
                names.push(name);
                true
            }
            Seen::Many(names) => names.insert(name),
        }
    }
}

impl<'de> Members<'de> {
    fn into_event(self, owner: Option<&Bytes>) -> Result<Event, FormatError> {
        let mut specversion = None;
        let mut id = None;
        let mut source = None;
        let mut ty = None;
        let mut datacontenttype = None;
        let mut dataschema = None;
        let mut subject = None;
        let mut time = None;
        let mut data: Option<&RawValue> = None;
        let mut data_base64: Option<&RawValue> = None;
        let mut extensions = std::collections::BTreeMap::new();
        let mut seen = Seen::with_capacity(self.0.len());

        for (name, raw) in &self.0 {
            let name: &str = name;
            if !seen.insert(name) {
                return Err(FormatError::attribute(
                    name,
                    "appears twice in the object; each attribute may appear only once",
                ));
            }
            match name {
                "specversion" => specversion = string_member(name, raw)?,
                "id" => id = string_member(name, raw)?,
                "source" => source = string_member(name, raw)?,
                "type" => ty = string_member(name, raw)?,
                "datacontenttype" => datacontenttype = string_member(name, raw)?,
                "dataschema" => dataschema = string_member(name, raw)?,
                "subject" => subject = string_member(name, raw)?,
                "time" => {
                    time = match string_member(name, raw)? {
                        None => None,
                        Some(text) => Some(parse_time(&text)?),
                    }
                }
                "data" => data = Some(raw),
                "data_base64" => data_base64 = (!is_null(raw)).then_some(*raw),
                _ => {
                    if let Some(value) = extension_member(name, raw)? {
                        extensions.insert(name.to_owned(), value);
                    }
                }
            }
        }

        check_specversion(specversion.as_deref())?;
        let required = |value: Option<String>, name: &str| {
            value.ok_or_else(|| {
                FormatError::attribute(
                    name,
                    "missing; every CloudEvent has `specversion`, `id`, `source` and `type`",
                )
            })
        };
        let mut event = Event {
            id: required(id, "id")?,
            source: required(source, "source")?,
            ty: required(ty, "type")?,
            subject,
            time,
            datacontenttype,
            dataschema,
            extensions,
            data: None,
        };
        event.data = match (data, data_base64) {
            (Some(d), Some(_)) if !is_null(d) => {
                return Err(FormatError::attribute(
                    "data",
                    "both `data` and `data_base64` are present; an event carries its payload in one of them",
                ))
            }
            (_, Some(b64)) => Some(decode_base64(b64)?),
            (Some(d), None) => data_bytes(&event, d, owner)?,
            (None, None) => None,
        };
        event.validate()?;
        Ok(event)
    }
}

fn check_specversion(specversion: Option<&str>) -> Result<(), FormatError> {
    match specversion {
        Some(SPEC_VERSION) => Ok(()),
        None => Err(FormatError::attribute(
            "specversion",
            format!("missing; a CloudEvent must say its version, `\"specversion\": \"{SPEC_VERSION}\"`"),
        )),
        Some(other) => Err(FormatError::attribute(
            "specversion",
            format!(
                "`{other}` is not supported; this implementation reads CloudEvents {SPEC_VERSION} only (ask the producer to send {SPEC_VERSION})"
            ),
        )),
    }
}

/// Parses an RFC 3339 timestamp as the `time` attribute.
pub(crate) fn parse_time(text: &str) -> Result<DateTime<Utc>, FormatError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            FormatError::attribute(
                "time",
                format!(
                    "`{text}` is not an RFC 3339 timestamp ({e}); write it like `2026-11-27T10:00:00Z` or `2026-11-27T10:00:00.123+01:00`"
                ),
            )
        })
}

fn decode_base64(raw: &RawValue) -> Result<Bytes, FormatError> {
    let Some(text) = string_member("data_base64", raw)? else {
        return Ok(Bytes::new());
    };
    BASE64_LENIENT
        .decode(text.as_bytes())
        .map(Bytes::from)
        .map_err(|e| {
            FormatError::attribute(
                "data_base64",
                format!(
                    "is not valid Base64 ({e}); it must be standard Base64 (RFC 4648, `+` and `/`)"
                ),
            )
        })
}

fn data_bytes(
    event: &Event,
    raw: &RawValue,
    owner: Option<&Bytes>,
) -> Result<Option<Bytes>, FormatError> {
    if event.data_is_json() {
        // The JSON value itself is the data (`null` included: an explicit null payload).
        return Ok(Some(shared_bytes(owner, raw.get().as_bytes())));
    }
    if is_null(raw) {
        return Ok(None);
    }
    if !raw.get().starts_with('"') {
        return Err(FormatError::attribute(
            "data",
            format!(
                "datacontenttype `{}` is not JSON, so `data` must be a JSON string, found {}; binary payloads go in `data_base64`",
                event.datacontenttype.as_deref().unwrap_or_default(),
                json_type(raw)
            ),
        ));
    }
    Ok(string_member("data", raw)?.map(|text| Bytes::from(text.into_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::{json, Value};

    fn parse(text: &str) -> Result<Event, FormatError> {
        from_json_slice(text.as_bytes())
    }

    fn value_of(event: &Event) -> Value {
        serde_json::from_slice(&to_json_vec(event)).expect("writer emitted invalid JSON")
    }

    fn base() -> Event {
        Event::new("com.example.someevent", "/mycontext").with_id("A234-1234-1234")
    }

    #[test]
    fn spec_examples_parse() {
        // formats/json-format.md §3.2, Binary-valued data.
        let e = parse(
            r#"{"specversion":"1.0","type":"com.example.someevent","source":"/mycontext",
                "id":"A234-1234-1234","time":"2018-04-05T17:31:00Z",
                "comexampleextension1":"value","comexampleothervalue":5,
                "datacontenttype":"application/vnd.apache.thrift.binary",
                "data_base64":"AAEC/w=="}"#,
        )
        .unwrap();
        assert_eq!(e.data.as_deref(), Some(&[0u8, 1, 2, 255][..]));
        assert_eq!(
            e.time,
            Some(Utc.with_ymd_and_hms(2018, 4, 5, 17, 31, 0).unwrap())
        );
        assert_eq!(
            e.extensions["comexampleothervalue"],
            ExtensionValue::Integer(5)
        );
        assert_eq!(e.extension_str("comexampleextension1"), Some("value"));

        // XML as a string, with an unset extension.
        let e = parse(
            r#"{"specversion":"1.0","type":"t","source":"/mycontext","id":"B",
                "unsetextension":null,"datacontenttype":"application/xml",
                "data":"<much wow=\"xml\"/>"}"#,
        )
        .unwrap();
        assert_eq!(e.data.as_deref(), Some(&b"<much wow=\"xml\"/>"[..]));
        assert!(!e.extensions.contains_key("unsetextension"));

        // JSON object data, null subject.
        let e = parse(
            r#"{"specversion":"1.0","type":"t","source":"/mycontext","subject":null,"id":"C",
                "datacontenttype":"application/json",
                "data":{"appinfoA":"abc","appinfoB":123,"appinfoC":true}}"#,
        )
        .unwrap();
        assert_eq!(e.subject, None);
        assert_eq!(
            e.data_json(),
            Some(json!({"appinfoA":"abc","appinfoB":123,"appinfoC":true}))
        );

        // A literal JSON string without datacontenttype keeps its quotes as JSON text.
        let e = parse(
            r#"{"specversion":"1.0","type":"t","source":"/mycontext","id":"D",
                "data":"I'm just a string"}"#,
        )
        .unwrap();
        assert_eq!(e.data.as_deref(), Some(&b"\"I'm just a string\""[..]));
        assert_eq!(e.datacontenttype, None);
    }

    #[test]
    fn json_data_is_embedded_as_a_value() {
        let e = base().with_json(&json!({"a": [1, 2, {"b": null}], "s": "x\"y"}));
        let v = value_of(&e);
        assert_eq!(v["data"], json!({"a": [1, 2, {"b": null}], "s": "x\"y"}));
        assert!(v.get("data_base64").is_none());
        // Data bytes are embedded as written: no reformatting.
        let mut e = base();
        e.data = Some(Bytes::from_static(b"{ \"spaced\" : [ 1 , 2 ] }"));
        let text = to_json_string(&e);
        assert!(
            text.ends_with(r#","data":{ "spaced" : [ 1 , 2 ] }}"#),
            "{text}"
        );
        assert_eq!(from_json_slice(text.as_bytes()).unwrap(), e);
        // `+json` and `*/json` types are JSON too.
        for ct in [
            "application/vnd.api+json",
            "text/json",
            "application/json; charset=utf-8",
        ] {
            let e = base().with_data(ct, "[1]");
            assert_eq!(value_of(&e)["data"], json!([1]), "{ct}");
        }
    }

    #[test]
    fn invalid_json_data_falls_back_to_base64() {
        for bad in [
            &b"{\"truncated\": "[..],
            b"not json",
            b"",
            b"\xff\xfe",
            b"1 2",
            b"{\"a\":\"\xff\"}",
            b"{}\n",
            b" [1]",
            b"\t1\r",
        ] {
            let mut e = base();
            e.data = Some(Bytes::copy_from_slice(bad));
            let v = value_of(&e);
            assert!(v.get("data").is_none(), "{v}");
            assert_eq!(v["data_base64"], json!(STANDARD.encode(bad)));
            let back = from_json_slice(&to_json_vec(&e)).unwrap();
            assert_eq!(back.data.as_deref(), Some(bad));
        }
    }

    #[test]
    fn text_data_is_a_string() {
        for ct in [
            "text/plain",
            "text/csv; charset=utf-8",
            "application/xml",
            "application/atom+xml",
            "application/x-yaml",
            "application/x-www-form-urlencoded",
            "application/octet-stream; charset=UTF-8",
        ] {
            let e = base().with_data(ct, "héllo\n\"wörld\"");
            let v = value_of(&e);
            assert_eq!(v["data"], json!("héllo\n\"wörld\""), "{ct}");
            assert_eq!(from_json_slice(&to_json_vec(&e)).unwrap(), e, "{ct}");
        }
        // Not UTF-8, or another charset: Base64.
        for (ct, data) in [
            ("text/plain", &b"caf\xe9"[..]),
            ("text/plain; charset=iso-8859-1", b"caf\xe9"),
            ("text/plain; charset=iso-8859-1", b"plain"),
        ] {
            let e = base().with_data(ct, Bytes::copy_from_slice(data));
            let v = value_of(&e);
            assert!(v.get("data_base64").is_some(), "{ct}: {v}");
            assert_eq!(from_json_slice(&to_json_vec(&e)).unwrap(), e);
        }
    }

    #[test]
    fn binary_data_is_base64() {
        let bytes: Vec<u8> = (0..=255).collect();
        for ct in [
            "application/octet-stream",
            "image/png",
            "application/protobuf",
        ] {
            let e = base().with_data(ct, bytes.clone());
            let v = value_of(&e);
            assert_eq!(v["data_base64"], json!(STANDARD.encode(&bytes)));
            assert_eq!(from_json_slice(&to_json_vec(&e)).unwrap(), e);
        }
        // Even text-like bytes stay Base64 under a binary type.
        let e = base().with_data("application/octet-stream", "abc");
        assert_eq!(value_of(&e)["data_base64"], json!("YWJj"));
        // Empty data under a binary type.
        let e = base().with_data("application/octet-stream", Bytes::new());
        assert_eq!(value_of(&e)["data_base64"], json!(""));
        assert_eq!(from_json_slice(&to_json_vec(&e)).unwrap(), e);
    }

    #[test]
    fn strings_are_escaped() {
        // Not a valid event (control characters), but the writer must still emit valid JSON.
        let nasty = "q\"b\\s/\u{0}\u{1}\u{8}\u{9}\u{a}\u{c}\u{d}\u{1f}\u{7f}é😀\u{2028}";
        let mut e = base().with_subject(nasty).with_extension("x", nasty);
        e.id = nasty.into();
        let v = value_of(&e);
        assert_eq!(v["subject"], json!(nasty));
        assert_eq!(v["x"], json!(nasty));
        assert_eq!(v["id"], json!(nasty));
        let mut out = Vec::new();
        write_str(&mut out, "\u{0}\u{1f}\n");
        assert_eq!(out, br#""\u0000\u001f\n""#);
    }

    #[test]
    fn attribute_members() {
        let e = base()
            .with_subject("s")
            .with_dataschema("https://example.com/s.json")
            .with_time(Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap())
            .with_extension("neg", -42i64)
            .with_extension("yes", true)
            .with_extension("no", false)
            .with_extension("str", "v");
        let v = value_of(&e);
        assert_eq!(
            v,
            json!({
                "specversion": "1.0", "id": "A234-1234-1234", "source": "/mycontext",
                "type": "com.example.someevent", "subject": "s",
                "dataschema": "https://example.com/s.json", "time": "2026-01-02T03:04:05Z",
                "neg": -42, "yes": true, "no": false, "str": "v"
            })
        );
        assert_eq!(to_json_value(&e), v);
        assert_eq!(from_json_slice(&to_json_vec(&e)).unwrap(), e);
    }

    #[test]
    fn reserved_extension_names_are_not_written() {
        let mut e = base();
        for name in ["data", "data_base64", "id", "type"] {
            e.extensions.insert(name.into(), "clash".into());
        }
        let v = value_of(&e);
        assert_eq!(v["id"], json!("A234-1234-1234"));
        assert_eq!(v["type"], json!("com.example.someevent"));
        assert!(v.get("data").is_none() && v.get("data_base64").is_none());
    }

    #[test]
    fn time_matches_chrono() {
        let base_time = Utc.with_ymd_and_hms(2026, 11, 27, 10, 0, 9).unwrap();
        for nanos in [
            0,
            1,
            999,
            1_000,
            5_000_000,
            123_456_789,
            999_999_999,
            1_500_000_000,
        ] {
            let t = base_time.with_nanosecond(nanos).unwrap();
            assert_eq!(rfc3339(&t), t.to_rfc3339_opts(SecondsFormat::AutoSi, true));
        }
        for y in [0, 1, 999, 9999, 10000, -1, 262_000] {
            let t = Utc.with_ymd_and_hms(y, 1, 1, 0, 0, 0).unwrap();
            assert_eq!(rfc3339(&t), t.to_rfc3339_opts(SecondsFormat::AutoSi, true));
        }
        // Offsets are read and normalised to UTC.
        let e = parse(
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","time":"2026-01-01T01:00:00.5+01:00"}"#,
        )
        .unwrap();
        assert_eq!(
            e.time.map(|t| rfc3339(&t)).as_deref(),
            Some("2026-01-01T00:00:00.500Z")
        );
    }

    #[test]
    fn nulls_mean_absent() {
        let e = parse(
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","subject":null,
                "time":null,"datacontenttype":null,"dataschema":null,"ext":null,
                "data_base64":null}"#,
        )
        .unwrap();
        assert_eq!(
            e,
            Event {
                time: None,
                ..Event::new("t", "/s").with_id("1")
            }
        );
        // `data: null` is an explicit JSON null payload when the data is JSON…
        let e = parse(r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data":null}"#)
            .unwrap();
        assert_eq!(e.data.as_deref(), Some(&b"null"[..]));
        assert_eq!(
            to_json_string(&e),
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data":null}"#
        );
        // …and nothing otherwise.
        let e = parse(
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"text/plain","data":null}"#,
        )
        .unwrap();
        assert_eq!(e.data, None);
        // A null `data` beside `data_base64` defers to it.
        let e = parse(
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data":null,"data_base64":"AA=="}"#,
        )
        .unwrap();
        assert_eq!(e.data.as_deref(), Some(&[0u8][..]));
    }

    #[test]
    fn escaped_member_names_and_unpadded_base64() {
        let e = parse(
            r#"{"spec\u0076ersion":"1.0","\u0069d":"1","source":"/s","type":"t","datacontenttype":"application/octet-stream","data_base64":"AAE"}"#,
        )
        .unwrap();
        assert_eq!(e.id, "1");
        assert_eq!(e.data.as_deref(), Some(&[0u8, 1][..]));
    }

    #[test]
    fn errors_name_the_attribute() {
        let ok = r#""specversion":"1.0","id":"1","source":"/s","type":"t""#;
        let cases = [
            (
                r#"{"id":"1","source":"/s","type":"t"}"#.to_owned(),
                Some("specversion"),
            ),
            (
                r#"{"specversion":"0.3","id":"1","source":"/s","type":"t"}"#.into(),
                Some("specversion"),
            ),
            (
                r#"{"specversion":1.0,"id":"1","source":"/s","type":"t"}"#.into(),
                Some("specversion"),
            ),
            (
                r#"{"specversion":"1.0","source":"/s","type":"t"}"#.into(),
                Some("id"),
            ),
            (
                r#"{"specversion":"1.0","id":null,"source":"/s","type":"t"}"#.into(),
                Some("id"),
            ),
            (
                r#"{"specversion":"1.0","id":1,"source":"/s","type":"t"}"#.into(),
                Some("id"),
            ),
            (
                r#"{"specversion":"1.0","id":"1","type":"t"}"#.into(),
                Some("source"),
            ),
            (
                r#"{"specversion":"1.0","id":"1","source":"/s"}"#.into(),
                Some("type"),
            ),
            (
                r#"{"specversion":"1.0","id":"","source":"/s","type":"t"}"#.into(),
                Some("id"),
            ),
            (format!(r#"{{{ok},"time":"yesterday"}}"#), Some("time")),
            (format!(r#"{{{ok},"time":5}}"#), Some("time")),
            (format!(r#"{{{ok},"id":"2"}}"#), Some("id")),
            (format!(r#"{{{ok},"x":1,"x":2}}"#), Some("x")),
            (
                format!(r#"{{{ok},"data":{{}},"data_base64":"AA=="}}"#),
                Some("data"),
            ),
            (
                format!(r#"{{{ok},"datacontenttype":"application/xml","data":{{"a":1}}}}"#),
                Some("data"),
            ),
            (
                format!(r#"{{{ok},"data_base64":"!!!"}}"#),
                Some("data_base64"),
            ),
            (format!(r#"{{{ok},"data_base64":5}}"#), Some("data_base64")),
            (format!(r#"{{{ok},"ext":{{"a":1}}}}"#), Some("ext")),
            (format!(r#"{{{ok},"ext":[1]}}"#), Some("ext")),
            (format!(r#"{{{ok},"ext":1.5}}"#), Some("ext")),
            (format!(r#"{{{ok},"ext":1e3}}"#), Some("ext")),
            (
                format!(r#"{{{ok},"ext":99999999999999999999}}"#),
                Some("ext"),
            ),
            (format!(r#"{{{ok},"ext":2147483648}}"#), Some("ext")),
            (format!(r#"{{{ok},"Ext":"v"}}"#), Some("Ext")),
            (
                format!(r#"{{{ok},"traceparent":"nope"}}"#),
                Some("traceparent"),
            ),
            (
                format!(r#"{{{ok},"dataschema":"relative"}}"#),
                Some("dataschema"),
            ),
            ("[]".into(), None),
            ("\"event\"".into(), None),
            ("{".into(), None),
            (format!(r#"{{{ok}}} trailing"#), None),
        ];
        for (text, attribute) in cases {
            let err = parse(&text).unwrap_err();
            assert_eq!(err.attribute_name(), attribute, "{err} for {text}");
            assert!(!err.to_string().is_empty());
        }
        let err = from_json_slice(b"{\"id\":\"\xff\"}").unwrap_err();
        assert!(err.to_string().contains("not UTF-8"), "{err}");
        let err = parse(r#"{"specversion":"0.3","id":"1","source":"/s","type":"t"}"#).unwrap_err();
        assert!(err.to_string().contains("1.0"), "{err}");
    }

    #[test]
    fn batches() {
        let events = vec![
            base().with_data("application/vnd.apache.thrift.binary", vec![1u8, 2, 3]),
            base().with_id("2").with_json(&json!({"appinfoA": "abc"})),
            base().with_id("3"),
        ];
        let bytes = to_json_batch_vec(&events);
        assert_eq!(from_json_batch_slice(&bytes).unwrap(), events);
        assert_eq!(from_json_batch_bytes(&Bytes::from(bytes)).unwrap(), events);
        assert_eq!(to_json_batch_vec(&[]), b"[]");
        assert_eq!(from_json_batch_slice(b" [ ] ").unwrap(), vec![]);
        let err = from_json_batch_slice(
            br#"[{"specversion":"1.0","id":"1","source":"/s","type":"t"},{"specversion":"1.0","id":"","source":"/s","type":"t"}]"#,
        )
        .unwrap_err();
        assert!(matches!(err, FormatError::Batch { index: 1, .. }), "{err}");
        assert_eq!(err.attribute_name(), Some("id"));
        assert!(matches!(
            from_json_batch_slice(b"{}").unwrap_err(),
            FormatError::Syntax { .. }
        ));
    }

    #[test]
    fn from_json_bytes_shares_the_buffer() {
        let payload = json!({"big": "x".repeat(10_000)});
        let e = base().with_json(&payload);
        let wire = Bytes::from(to_json_vec(&e));
        let back = from_json_bytes(&wire).unwrap();
        assert_eq!(back, e);
        let data = back.data.unwrap();
        let range = wire.as_ptr() as usize..wire.as_ptr() as usize + wire.len();
        assert!(range.contains(&(data.as_ptr() as usize)), "data was copied");
    }

    #[test]
    fn textual_media_types() {
        for t in [
            "text/plain",
            "TEXT/HTML",
            "application/xml",
            "image/svg+xml",
            "application/x-ndjson",
            "application/foo; charset=utf-8",
        ] {
            assert!(is_textual_media_type(t), "{t}");
        }
        for t in [
            "application/octet-stream",
            "image/png",
            "text/plain; charset=latin1",
            "garbage",
            "application/json-seq",
        ] {
            assert!(!is_textual_media_type(t), "{t}");
        }
    }
}
