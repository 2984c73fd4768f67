//! The binary content mode of the HTTP, NATS and Kafka protocol bindings: attributes in
//! message headers, the data as the message body, byte for byte.
//!
//! | | HTTP | NATS | Kafka |
//! |---|---|---|---|
//! | attribute `x` | header `ce-x` | header `ce-x` | header `ce_x` |
//! | `datacontenttype` | `content-type` | `ce-datacontenttype` | `content-type` |
//! | header values | percent-encoded | percent-encoded | plain UTF-8 |
//!
//! The NATS binding (1.0.3) maps every attribute, `datacontenttype` included, to a `ce-`
//! header and keeps `Content-Type` to announce the structured mode; HTTP and Kafka carry
//! `datacontenttype` in `content-type` and never also as a `ce-`/`ce_` header. One corner
//! case departs from that: when the data is itself a CloudEvent
//! (`datacontenttype: application/cloudevents…`), such a `content-type` would announce
//! the structured mode, so HTTP and Kafka write it as `ce-`/`ce_datacontenttype` instead;
//! [`from_headers`] reads `datacontenttype` from there when `content-type` is absent, on
//! every binding.
//!
//! HTTP and NATS header values are percent-encoded as the bindings require: space, `"`,
//! `%` and every byte outside printable ASCII (the UTF-8 bytes of non-ASCII characters)
//! become `%XX`, upper-case. Decoding first undoes RFC 7230 quoted strings, then one round
//! of percent-decoding (lower-case hex accepted), and rejects byte sequences that are not
//! UTF-8 (such as the overlong `%C0%A0`).
//!
//! Header names are matched case-insensitively. Extension values come back as strings:
//! headers do not say whether `5` was an Integer or a String.
//!
//! ```
//! use ovasabi_core::format::binary::{from_headers, to_headers, Binding};
//! use ovasabi_core::Event;
//!
//! let event = Event::new("order.placed", "/services/orders")
//!     .with_id("e-1")
//!     .with_subject("Euro € 😀")
//!     .with_data("text/plain; charset=utf-8", "hello");
//! let headers = to_headers(&event, Binding::Http);
//! assert!(headers.contains(&("ce-subject".into(), "Euro%20%E2%82%AC%20%F0%9F%98%80".into())));
//! assert!(headers.contains(&("content-type".into(), "text/plain; charset=utf-8".into())));
//!
//! let back = from_headers(
//!     headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
//!     event.data.clone(),
//!     Binding::Http,
//! )
//! .unwrap();
//! assert_eq!(back, event);
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use bytes::Bytes;

use super::json::{self, parse_time, rfc3339, BATCH_CONTENT_TYPE, STRUCTURED_CONTENT_TYPE};
use super::FormatError;
use crate::event::{Event, ExtensionValue, SPEC_VERSION};
use crate::validate::{check_extension_name, CORE_ATTRIBUTES};

/// The `content-type` header, which carries `datacontenttype` over HTTP and Kafka (and
/// announces the structured mode on every binding).
pub const CONTENT_TYPE: &str = "content-type";

/// A protocol binding's binary content mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Binding {
    /// HTTP 1.1 and 2: `ce-` headers, percent-encoded values, `content-type`.
    Http,
    /// NATS 2.2+ headers: `ce-` headers, percent-encoded values, `ce-datacontenttype`.
    Nats,
    /// Kafka 0.11+ record headers: `ce_` headers, UTF-8 values, `content-type`.
    Kafka,
}

impl Binding {
    /// The prefix of attribute headers: `ce-` for HTTP and NATS, `ce_` for Kafka.
    pub fn prefix(self) -> &'static str {
        match self {
            Binding::Http | Binding::Nats => "ce-",
            Binding::Kafka => "ce_",
        }
    }

    /// The header name that carries attribute `attribute` (`datacontenttype` included).
    pub fn header_name(self, attribute: &str) -> String {
        if attribute == "datacontenttype" && self != Binding::Nats {
            CONTENT_TYPE.to_owned()
        } else {
            format!("{}{attribute}", self.prefix())
        }
    }

    fn percent_encodes(self) -> bool {
        self != Binding::Kafka
    }

    fn encode(self, value: &str) -> String {
        if self.percent_encodes() {
            percent_encode(value).into_owned()
        } else {
            value.to_owned()
        }
    }
}

/// The event's attributes as binary-mode headers for `binding`, lower-case names first to
/// last: `specversion`, `id`, `source`, `type`, `subject`, `time`, `dataschema`, the
/// extensions by name, then `datacontenttype`.
///
/// The message body is `event.data`, as it is; on Kafka an event without data is a record
/// without value (a tombstone in a compacted topic). Validate the event first (publish
/// does): extensions an invalid event holds under names no header may carry (not
/// lower-case letters and digits, or a core attribute's name) are left out.
pub fn to_headers(event: &Event, binding: Binding) -> Vec<(String, String)> {
    let mut headers = Vec::with_capacity(8 + event.extensions.len());
    for_each_header(event, binding, |name, value| {
        headers.push((name.into_owned(), value));
    });
    headers
}

/// The headers [`to_headers`] returns, in the same order, handed to `header` one at a time
/// without building a list. Names that do not depend on the event (the core attributes',
/// `content-type`) come as `Cow::Borrowed` static strings, so a caller that can keep them
/// as they are (a NATS client's `HeaderName::from_static`) allocates nothing for them: this
/// runs on every publish.
pub fn for_each_header(
    event: &Event,
    binding: Binding,
    mut header: impl FnMut(Cow<'static, str>, String),
) {
    let names = if binding.prefix() == DASHED.prefix {
        &DASHED
    } else {
        &UNDERSCORED
    };
    let mut core = |name: &'static str, value: String| header(Cow::Borrowed(name), value);
    core(names.specversion, SPEC_VERSION.to_owned());
    core(names.id, binding.encode(&event.id));
    core(names.source, binding.encode(&event.source));
    core(names.ty, binding.encode(&event.ty));
    if let Some(v) = &event.subject {
        core(names.subject, binding.encode(v));
    }
    if let Some(t) = &event.time {
        core(names.time, rfc3339(t));
    }
    if let Some(v) = &event.dataschema {
        core(names.dataschema, binding.encode(v));
    }
    for (name, value) in &event.extensions {
        if check_extension_name(name).is_err() {
            continue;
        }
        let value = match value {
            ExtensionValue::String(s) => binding.encode(s),
            other => other.to_canonical_string(),
        };
        let mut full = String::with_capacity(names.prefix.len() + name.len());
        full.push_str(names.prefix);
        full.push_str(name);
        header(Cow::Owned(full), value);
    }
    if let Some(ct) = &event.datacontenttype {
        match binding {
            Binding::Nats => header(Cow::Borrowed(names.datacontenttype), binding.encode(ct)),
            // A `content-type` of `application/cloudevents…` would announce the structured
            // mode, so data that is itself a CloudEvent names its type in a `ce-` header.
            _ if is_cloudevents_media_type(ct) => {
                header(Cow::Borrowed(names.datacontenttype), binding.encode(ct))
            }
            Binding::Http => header(Cow::Borrowed(CONTENT_TYPE), printable(ct).into_owned()),
            Binding::Kafka => header(Cow::Borrowed(CONTENT_TYPE), ct.clone()),
        }
    }
}

/// The header names of the core attributes under one prefix.
struct CoreHeaders {
    prefix: &'static str,
    specversion: &'static str,
    id: &'static str,
    source: &'static str,
    ty: &'static str,
    subject: &'static str,
    time: &'static str,
    dataschema: &'static str,
    datacontenttype: &'static str,
}

/// HTTP and NATS.
const DASHED: CoreHeaders = CoreHeaders {
    prefix: "ce-",
    specversion: "ce-specversion",
    id: "ce-id",
    source: "ce-source",
    ty: "ce-type",
    subject: "ce-subject",
    time: "ce-time",
    dataschema: "ce-dataschema",
    datacontenttype: "ce-datacontenttype",
};

/// Kafka.
const UNDERSCORED: CoreHeaders = CoreHeaders {
    prefix: "ce_",
    specversion: "ce_specversion",
    id: "ce_id",
    source: "ce_source",
    ty: "ce_type",
    subject: "ce_subject",
    time: "ce_time",
    dataschema: "ce_dataschema",
    datacontenttype: "ce_datacontenttype",
};

/// Whether a `content-type` names a CloudEvents event format, meaning structured mode.
fn is_cloudevents_media_type(content_type: &str) -> bool {
    const PREFIX: &str = "application/cloudevents";
    content_type
        .trim_start_matches([' ', '\t'])
        .get(..PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(PREFIX))
}

/// Decodes an event from a message's headers and body, then validates it.
///
/// `headers` may hold any other headers too; they are ignored. A `content-type` of
/// `application/cloudevents+json` means the message is in structured mode: the body is
/// then parsed with [`json::from_json_bytes`] (other `application/cloudevents…` formats
/// are refused). Otherwise the `ce-`/`ce_` headers are the attributes and `body` is the
/// data, as is.
pub fn from_headers<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    body: Option<Bytes>,
    binding: Binding,
) -> Result<Event, FormatError> {
    let prefix = binding.prefix();
    let mut content_type: Option<&str> = None;
    let mut core: [Option<String>; CORE_ATTRIBUTES.len()] = Default::default();
    let mut extensions = BTreeMap::new();

    for (name, value) in headers {
        if name.eq_ignore_ascii_case(CONTENT_TYPE) {
            if content_type.is_some() {
                return Err(FormatError::attribute(
                    CONTENT_TYPE,
                    "the message has two `content-type` headers; send one",
                ));
            }
            content_type = Some(value.trim_matches([' ', '\t']));
            continue;
        }
        let Some(rest) = name
            .get(..prefix.len())
            .filter(|p| p.eq_ignore_ascii_case(prefix))
            .map(|_| &name[prefix.len()..])
        else {
            continue;
        };
        // Core attributes (most headers) are matched without building a lower-case copy.
        let slot = CORE_ATTRIBUTES
            .iter()
            .position(|a| a.eq_ignore_ascii_case(rest));
        let attribute: Cow<'static, str> = match slot {
            Some(slot) => Cow::Borrowed(CORE_ATTRIBUTES[slot]),
            None => Cow::Owned(rest.to_ascii_lowercase()),
        };
        let value = if binding.percent_encodes() {
            decode_header_value(value).map_err(|reason| {
                FormatError::attribute(attribute.as_ref(), format!("header `{name}`: {reason}"))
            })?
        } else {
            value.to_owned()
        };
        let duplicate = || {
            FormatError::attribute(
                attribute.as_ref(),
                format!("header `{name}` appears twice; each attribute may appear only once"),
            )
        };
        if let Some(slot) = slot {
            if core[slot].replace(value).is_some() {
                return Err(duplicate());
            }
        } else {
            if extensions.contains_key(attribute.as_ref()) {
                return Err(duplicate());
            }
            extensions.insert(attribute.into_owned(), ExtensionValue::String(value));
        }
    }

    if let Some(ct) = content_type.filter(|ct| is_cloudevents_media_type(ct)) {
        return from_structured(ct, body);
    }

    let [id, source, specversion, ty, ce_datacontenttype, dataschema, subject, time] = core;
    let missing = |attribute: &str| {
        FormatError::attribute(
            attribute,
            format!(
                "missing header `{}`; a binary-mode CloudEvent carries `specversion`, `id`, `source` and `type` as headers",
                binding.header_name(attribute)
            ),
        )
    };
    match specversion.as_deref() {
        Some(SPEC_VERSION) => {}
        None => return Err(missing("specversion")),
        Some(other) => {
            return Err(FormatError::attribute(
                "specversion",
                format!(
                    "`{other}` is not supported; this implementation reads CloudEvents {SPEC_VERSION} only"
                ),
            ))
        }
    }
    let datacontenttype = match (binding, content_type, ce_datacontenttype) {
        (Binding::Nats, ct, ce) => ce.or_else(|| ct.map(str::to_owned)),
        (_, Some(_), Some(_)) => {
            return Err(FormatError::attribute(
                "datacontenttype",
                format!(
                    "sent both as `content-type` and as `{}datacontenttype`; this binding carries it only in `content-type`",
                    prefix
                ),
            ))
        }
        (_, ct, ce) => ce.or_else(|| ct.map(str::to_owned)),
    };
    let event = Event {
        id: id.ok_or_else(|| missing("id"))?,
        source: source.ok_or_else(|| missing("source"))?,
        ty: ty.ok_or_else(|| missing("type"))?,
        subject,
        time: time.as_deref().map(parse_time).transpose()?,
        datacontenttype,
        dataschema,
        extensions,
        data: body,
    };
    event.validate()?;
    Ok(event)
}

fn from_structured(content_type: &str, body: Option<Bytes>) -> Result<Event, FormatError> {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim_matches([' ', '\t']);
    if essence.eq_ignore_ascii_case(STRUCTURED_CONTENT_TYPE) {
        let body = body.unwrap_or_default();
        return json::from_json_bytes(&body);
    }
    let reason = if essence.eq_ignore_ascii_case(BATCH_CONTENT_TYPE) {
        format!("`{essence}` is a batch of events; decode the body with format::json::from_json_batch_slice")
    } else {
        format!("`{essence}` is a structured-mode event format this implementation does not read; it reads `{STRUCTURED_CONTENT_TYPE}`")
    };
    Err(FormatError::attribute(CONTENT_TYPE, reason))
}

/// Whether HTTP/NATS encoding leaves byte `b` as it is: printable ASCII but space, `"`
/// and `%`.
fn is_header_safe(b: u8) -> bool {
    (0x21..=0x7E).contains(&b) && b != b'"' && b != b'%'
}

/// Percent-encodes a header value as the HTTP and NATS bindings require.
pub(crate) fn percent_encode(value: &str) -> Cow<'_, str> {
    if value.bytes().all(is_header_safe) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 16);
    for b in value.bytes() {
        if is_header_safe(b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    Cow::Owned(out)
}

/// `content-type` is a plain header: only bytes no header may hold are escaped (a valid
/// media type has none).
fn printable(value: &str) -> Cow<'_, str> {
    let ok = |b: u8| (0x20..=0x7E).contains(&b);
    if value.bytes().all(ok) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 16);
    for b in value.bytes() {
        if ok(b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    Cow::Owned(out)
}

/// Decodes an HTTP or NATS header value: trims optional whitespace, undoes quoted
/// strings, then percent-decodes once; the error says what is wrong.
pub(crate) fn decode_header_value(raw: &str) -> Result<String, String> {
    let value = raw.trim_matches([' ', '\t']);
    if !value.bytes().any(|b| b == b'"' || b == b'%') {
        return Ok(value.to_owned());
    }
    percent_decode(&unquote(value)?)
}

/// Undoes RFC 7230 quoted strings (`"…"` with `\` escapes) anywhere in the value.
fn unquote(value: &str) -> Result<Cow<'_, str>, String> {
    if !value.contains('"') {
        return Ok(Cow::Borrowed(value));
    }
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (_, '"') => quoted = !quoted,
            (true, '\\') => match chars.next() {
                Some(escaped) => out.push(escaped),
                None => return Err("it ends inside a quoted string, after a `\\`".into()),
            },
            (_, c) => out.push(c),
        }
    }
    if quoted {
        return Err("a quoted string has no closing `\"`".into());
    }
    Ok(Cow::Owned(out))
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn percent_decode(value: &str) -> Result<String, String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let pair = bytes
                .get(i + 1)
                .and_then(|h| hex_value(*h))
                .zip(bytes.get(i + 2).and_then(|l| hex_value(*l)));
            let Some((high, low)) = pair else {
                return Err(format!(
                    "`%` at byte {i} is not followed by two hex digits; a literal `%` is sent as `%25`"
                ));
            };
            out.push(high << 4 | low);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|e| {
        format!(
            "the percent-decoded bytes are not UTF-8 (at byte {}), e.g. an overlong form such as %C0%A0; encode each character's UTF-8 bytes",
            e.utf8_error().valid_up_to()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn pairs(headers: &[(String, String)]) -> impl Iterator<Item = (&str, &str)> {
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    fn decode(
        headers: &[(&str, &str)],
        body: Option<&str>,
        binding: Binding,
    ) -> Result<Event, FormatError> {
        from_headers(
            headers.iter().copied(),
            body.map(|b| Bytes::copy_from_slice(b.as_bytes())),
            binding,
        )
    }

    const MINIMAL: [(&str, &str); 4] = [
        ("ce-specversion", "1.0"),
        ("ce-id", "1"),
        ("ce-source", "/s"),
        ("ce-type", "t.happened"),
    ];

    fn full_event() -> Event {
        Event::new("order.placed", "https://example.com/orders")
            .with_id("id with space \"quoted\" 100%")
            .with_subject("Euro € 😀")
            .with_time(Utc.with_ymd_and_hms(2018, 4, 5, 3, 56, 24).unwrap())
            .with_dataschema("https://example.com/schema.json")
            .with_extension(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .with_extension("comexampleothervalue", 5i64)
            .with_extension("flag", true)
            .with_data("application/xml; charset=\"utf-8\"", "<much wow=\"xml\"/>")
    }

    #[test]
    fn percent_encoding_follows_the_http_binding() {
        assert_eq!(
            percent_encode("Euro € 😀"),
            "Euro%20%E2%82%AC%20%F0%9F%98%80"
        );
        assert_eq!(percent_encode("a\"b%c"), "a%22b%25c");
        assert_eq!(percent_encode("plain/ASCII-~!"), "plain/ASCII-~!");
        assert!(matches!(percent_encode("plain"), Cow::Borrowed(_)));
        assert_eq!(percent_encode("\u{7f}\n"), "%7F%0A");
    }

    #[test]
    fn header_values_decode() {
        for (raw, want) in [
            ("Euro%20%E2%82%AC%20%F0%9F%98%80", "Euro € 😀"),
            ("Euro%20%e2%82%ac", "Euro €"),
            ("%41%42", "AB"),
            ("  padded\t", "padded"),
            ("\"quoted value\"", "quoted value"),
            ("\"with \\\"escape\\\" and \\\\\"", "with \"escape\" and \\"),
            ("pre \"mid\" post", "pre mid post"),
            ("\"%20\"", " "),
            ("", ""),
        ] {
            assert_eq!(decode_header_value(raw).as_deref(), Ok(want), "{raw}");
        }
        for bad in [
            "%C0%A0", "%FF", "%", "%2", "%zz", "100%", "\"open", "\"x\\", "%E2%82",
        ] {
            assert!(decode_header_value(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn http_headers() {
        let event = full_event();
        let headers = to_headers(&event, Binding::Http);
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("ce-specversion"), Some("1.0"));
        assert_eq!(
            get("ce-id"),
            Some("id%20with%20space%20%22quoted%22%20100%25")
        );
        assert_eq!(get("ce-subject"), Some("Euro%20%E2%82%AC%20%F0%9F%98%80"));
        assert_eq!(get("ce-time"), Some("2018-04-05T03:56:24Z"));
        assert_eq!(get("ce-comexampleothervalue"), Some("5"));
        assert_eq!(get("ce-flag"), Some("true"));
        assert_eq!(
            get("content-type"),
            Some("application/xml; charset=\"utf-8\"")
        );
        assert_eq!(get("ce-datacontenttype"), None);
        for (_, v) in &headers {
            assert!(v.bytes().all(|b| (0x20..=0x7E).contains(&b)), "{v}");
        }
        let back = from_headers(pairs(&headers), event.data.clone(), Binding::Http).unwrap();
        let mut want = event.clone();
        // Headers do not keep extension types.
        want.extensions
            .insert("comexampleothervalue".into(), "5".into());
        want.extensions.insert("flag".into(), "true".into());
        assert_eq!(back, want);
    }

    #[test]
    fn nats_carries_datacontenttype_as_a_ce_header() {
        let event = full_event();
        let headers = to_headers(&event, Binding::Nats);
        assert!(
            headers.iter().all(|(k, _)| k.starts_with("ce-")),
            "{headers:?}"
        );
        let dct = headers
            .iter()
            .find(|(k, _)| k == "ce-datacontenttype")
            .unwrap();
        assert_eq!(dct.1, "application/xml;%20charset=%22utf-8%22");
        let back = from_headers(pairs(&headers), event.data.clone(), Binding::Nats).unwrap();
        assert_eq!(back.datacontenttype, event.datacontenttype);
        assert_eq!(back.subject, event.subject);
        // A sender that used Content-Type, HTTP-style, is understood too.
        let mut h = MINIMAL.to_vec();
        h.push(("Content-Type", "text/plain"));
        let e = decode(&h, Some("hi"), Binding::Nats).unwrap();
        assert_eq!(e.datacontenttype.as_deref(), Some("text/plain"));
    }

    #[test]
    fn kafka_headers_are_plain_utf8() {
        let event = full_event();
        let headers = to_headers(&event, Binding::Kafka);
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("ce_id"), Some("id with space \"quoted\" 100%"));
        assert_eq!(get("ce_subject"), Some("Euro € 😀"));
        assert_eq!(
            get("content-type"),
            Some("application/xml; charset=\"utf-8\"")
        );
        assert!(headers
            .iter()
            .all(|(k, _)| k.starts_with("ce_") || k == "content-type"));
        let back = from_headers(pairs(&headers), event.data.clone(), Binding::Kafka).unwrap();
        assert_eq!(back.id, event.id);
        assert_eq!(back.subject, event.subject);
        // Kafka values are not percent-decoded.
        let h = [
            ("ce_specversion", "1.0"),
            ("ce_id", "100%25"),
            ("ce_source", "/s"),
            ("ce_type", "t"),
        ];
        assert_eq!(decode(&h, None, Binding::Kafka).unwrap().id, "100%25");
    }

    #[test]
    fn names_are_case_insensitive_and_others_ignored() {
        let h = [
            ("CE-SpecVersion", "1.0"),
            ("Ce-Id", "1"),
            ("ce-SOURCE", "/s"),
            ("Ce-Type", "t"),
            ("Ce-MyExt", "v"),
            ("X-Other", "ignored"),
            ("Content-Type", "application/json"),
            ("ce", "too short to be an attribute"),
        ];
        let e = decode(&h, Some("{}"), Binding::Http).unwrap();
        assert_eq!(e.extension_str("myext"), Some("v"));
        assert_eq!(e.datacontenttype.as_deref(), Some("application/json"));
        assert_eq!(e.data.as_deref(), Some(&b"{}"[..]));
        assert_eq!(e.extensions.len(), 1);
    }

    #[test]
    fn errors_name_the_attribute() {
        type Headers<'a> = Vec<(&'a str, &'a str)>;
        let cases: Vec<(Headers<'_>, Binding, &str)> = vec![
            (MINIMAL[1..].to_vec(), Binding::Http, "specversion"),
            (
                vec![
                    ("ce-specversion", "0.3"),
                    ("ce-id", "1"),
                    ("ce-source", "/s"),
                    ("ce-type", "t"),
                ],
                Binding::Http,
                "specversion",
            ),
            (
                vec![MINIMAL[0], MINIMAL[2], MINIMAL[3]],
                Binding::Http,
                "id",
            ),
            (
                vec![MINIMAL[0], MINIMAL[1], MINIMAL[3]],
                Binding::Http,
                "source",
            ),
            (MINIMAL[..3].to_vec(), Binding::Http, "type"),
            (
                [&MINIMAL[..], &[("ce-time", "yesterday")]].concat(),
                Binding::Http,
                "time",
            ),
            (
                [&MINIMAL[..], &[("ce-id", "2")]].concat(),
                Binding::Http,
                "id",
            ),
            (
                [&MINIMAL[..], &[("ce-x", "%C0%A0")]].concat(),
                Binding::Http,
                "x",
            ),
            (
                [&MINIMAL[..], &[("ce-bad_name", "v")]].concat(),
                Binding::Http,
                "bad_name",
            ),
            (
                [
                    &MINIMAL[..],
                    &[("content-type", "a/b"), ("ce-datacontenttype", "a/b")],
                ]
                .concat(),
                Binding::Http,
                "datacontenttype",
            ),
            (
                [
                    &MINIMAL[..],
                    &[("content-type", "a/b"), ("Content-Type", "a/b")],
                ]
                .concat(),
                Binding::Http,
                "content-type",
            ),
            (
                [&MINIMAL[..], &[("content-type", "not a media type")]].concat(),
                Binding::Http,
                "datacontenttype",
            ),
            (
                [&MINIMAL[..], &[("ce-source", "/again")]].concat(),
                Binding::Nats,
                "source",
            ),
        ];
        for (headers, binding, attribute) in cases {
            let err = decode(&headers, None, binding).unwrap_err();
            assert_eq!(
                err.attribute_name(),
                Some(attribute),
                "{err} for {headers:?}"
            );
        }
        // Kafka looks for ce_ headers, so HTTP-style ones leave the required attributes missing.
        let err = decode(&MINIMAL, None, Binding::Kafka).unwrap_err();
        assert_eq!(err.attribute_name(), Some("specversion"));
        assert!(err.to_string().contains("ce_specversion"), "{err}");
    }

    #[test]
    fn structured_mode_is_recognised() {
        let event = Event::new("t.happened", "/s").with_id("1");
        let body = Bytes::from(json::to_json_vec(&event));
        for binding in [Binding::Http, Binding::Nats, Binding::Kafka] {
            let got = from_headers(
                [(
                    "Content-Type",
                    "application/cloudevents+json; charset=UTF-8",
                )],
                Some(body.clone()),
                binding,
            )
            .unwrap();
            assert_eq!(got, event);
        }
        let err = from_headers(
            [("content-type", "application/cloudevents-batch+json")],
            Some(body.clone()),
            Binding::Http,
        )
        .unwrap_err();
        assert!(err.to_string().contains("from_json_batch_slice"), "{err}");
        let err = from_headers(
            [("content-type", "application/cloudevents+avro")],
            Some(body),
            Binding::Http,
        )
        .unwrap_err();
        assert_eq!(err.attribute_name(), Some("content-type"));
    }

    #[test]
    fn no_data_no_body() {
        let event = Event::new("t.happened", "/s").with_id("1");
        for binding in [Binding::Http, Binding::Nats, Binding::Kafka] {
            let headers = to_headers(&event, binding);
            assert_eq!(headers.len(), 4);
            let back = from_headers(pairs(&headers), None, binding).unwrap();
            assert_eq!(back, event);
        }
    }

    #[test]
    fn data_that_is_a_cloudevent_does_not_look_structured() {
        let inner = Event::new("t.happened", "/inner").with_id("in");
        let event = Event::new("t.wrapped", "/outer")
            .with_id("out")
            .with_data(STRUCTURED_CONTENT_TYPE, json::to_json_vec(&inner));
        for binding in [Binding::Http, Binding::Nats, Binding::Kafka] {
            let headers = to_headers(&event, binding);
            assert!(
                headers.iter().all(|(k, _)| k != CONTENT_TYPE),
                "{binding:?}: {headers:?}"
            );
            let back = from_headers(pairs(&headers), event.data.clone(), binding).unwrap();
            assert_eq!(back, event, "{binding:?}");
        }
    }

    #[test]
    fn header_names() {
        assert_eq!(Binding::Http.header_name("id"), "ce-id");
        assert_eq!(Binding::Kafka.header_name("id"), "ce_id");
        assert_eq!(Binding::Http.header_name("datacontenttype"), "content-type");
        assert_eq!(
            Binding::Kafka.header_name("datacontenttype"),
            "content-type"
        );
        assert_eq!(
            Binding::Nats.header_name("datacontenttype"),
            "ce-datacontenttype"
        );
    }

    #[test]
    fn static_header_names_are_the_prefixed_attribute_names() {
        for names in [&DASHED, &UNDERSCORED] {
            let pairs = [
                ("specversion", names.specversion),
                ("id", names.id),
                ("source", names.source),
                ("type", names.ty),
                ("subject", names.subject),
                ("time", names.time),
                ("dataschema", names.dataschema),
                ("datacontenttype", names.datacontenttype),
            ];
            for (attribute, header) in pairs {
                assert_eq!(header, format!("{}{attribute}", names.prefix));
            }
        }
        assert_eq!(DASHED.prefix, Binding::Nats.prefix());
        assert_eq!(UNDERSCORED.prefix, Binding::Kafka.prefix());
    }
}
