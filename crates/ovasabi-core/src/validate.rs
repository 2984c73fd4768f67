//! Validation of an [`Event`] against every MUST of CloudEvents 1.0.2.
//!
//! [`Event::validate`] runs on every publish and after every decode, so it allocates nothing
//! for a valid event and reads each attribute once. It stops at the first broken rule and
//! returns a [`ValidationError`] naming the attribute and saying what to do.
//!
//! # What is enforced, and where
//!
//! Core specification (`spec.md`, CloudEvents 1.0.2):
//!
//! | Rule | Where |
//! |---|---|
//! | `id`, `source`, `type` REQUIRED and non-empty | [`Event::validate`] |
//! | `specversion` REQUIRED, `1.0` for this version | not stored: [`Event`] always is `1.0`; the decoders in [`crate::format`] refuse a missing or other value |
//! | `source` is a non-empty URI-reference (RFC 3986 §4.1) | [`Event::validate`], `uri` checker below |
//! | `dataschema`, if present, a non-empty URI (absolute: a scheme is required; a fragment is tolerated, as the spec's own JSON Schema types it `format: uri`) | [`Event::validate`] |
//! | `subject`, if present, non-empty | [`Event::validate`] |
//! | `datacontenttype`, if present, an RFC 2046 media type: `type/subtype` of RFC 2045 tokens, then `; name=value` parameters (token or quoted-string) | [`Event::validate`] |
//! | `time`, if present, RFC 3339: its year must be 0000–9999, as RFC 3339 has no other | [`Event::validate`] |
//! | `String` values hold no control character (U+0000–U+001F, U+007F–U+009F) and no Unicode noncharacter (U+FDD0–U+FDEF, U+xFFFE, U+xFFFF); unpaired surrogates cannot occur in a Rust `String` | [`Event::validate`], for `id`, `source`, `type`, `subject`, `datacontenttype`, `dataschema` and every string extension value |
//! | Attribute names are lower-case ASCII letters and digits | [`Event::validate`] for extension names (core names are fixed) |
//! | No attribute named `data` (and `data_base64`, which the JSON format reserves); each attribute at most once, so no extension may reuse a core name | [`Event::validate`]; the decoders refuse a duplicated member or header |
//! | `Integer` values lie in the signed 32-bit range | [`Event::validate`]; the JSON decoder refuses non-integral numbers |
//! | `Boolean`, `Timestamp` canonical strings (`true`/`false`, RFC 3339) | the formats write them; decoders parse them |
//!
//! Event formats and protocol bindings (`formats/json-format.md`, `bindings/*.md`), enforced in
//! [`crate::format`]:
//!
//! | Rule | Where |
//! |---|---|
//! | JSON: media type `application/cloudevents+json`, batch `application/cloudevents-batch+json`; extensions are top-level members; `null` means absent; `data` and `data_base64` are mutually exclusive; JSON data is embedded as a JSON value, other text as a string, binary as Base64 | `format::json` |
//! | HTTP and NATS: attributes in `ce-` headers; header values percent-encoded (space, `"`, `%` and anything outside printable ASCII, as UTF-8); decoding undoes RFC 7230 quoted strings, then one round of percent-decoding, and rejects invalid UTF-8 | `format::binary` |
//! | HTTP and Kafka: `datacontenttype` travels in `content-type` and never also as a `ce-`/`ce_` header (data that is itself a CloudEvent excepted, see `format::binary`); NATS carries it as `ce-datacontenttype`; a `content-type` of `application/cloudevents…` means structured mode | `format::binary` |
//! | Kafka: attributes in `ce_` headers, values plain UTF-8; an event without data is a message without value | `format::binary` |
//!
//! Extensions OVASABI uses (`extensions/*.md` and W3C Trace Context):
//!
//! | Rule | Where |
//! |---|---|
//! | `traceparent`: a W3C `traceparent` string, version `00` being `00-<32 lower-hex trace-id, not all zero>-<16 lower-hex parent-id, not all zero>-<2 lower-hex flags>`; higher versions (not `ff`) are accepted if their first four fields have that form | [`Event::validate`] |
//! | `tracestate`: a W3C `tracestate` list of at most 32 `key=value` members with unique keys, keys of at most 256 characters `[a-z0-9][a-z0-9_\-*/@]*`, values of at most 256 printable ASCII characters other than `,` and `=`, not ending in a space; it needs `traceparent` beside it (the extension makes `traceparent` REQUIRED) | [`Event::validate`] |
//! | `sequence`: a `String` holding a decimal `u64` without leading zeros (OVASABI's use of the sequence extension); `sequencetype`, if present, a non-empty string | [`Event::validate`] |
//! | `partitionkey`, `correlationid`, `causationid`: non-empty strings | [`Event::validate`] |
//!
//! OVASABI's own limit: the attributes' names and values (as canonical strings) total at
//! most [`MAX_ATTRIBUTES_BYTES`], so the binary modes fit every broker's header limits.

use chrono::{DateTime, Datelike, Timelike, Utc};

use crate::event::{
    Event, ExtensionValue, EXT_CAUSATIONID, EXT_CORRELATIONID, EXT_PARTITIONKEY, EXT_SEQUENCE,
    EXT_TRACEPARENT, EXT_TRACESTATE, SPEC_VERSION,
};

/// Upper bound on the total size of an event's attributes (names and values), in bytes.
/// Kept well under brokers' header limits so the binary mode works everywhere.
pub const MAX_ATTRIBUTES_BYTES: usize = 64 * 1024;

/// The core attribute names of CloudEvents 1.0; no extension may use them.
pub const CORE_ATTRIBUTES: [&str; 8] = [
    "id",
    "source",
    "specversion",
    "type",
    "datacontenttype",
    "dataschema",
    "subject",
    "time",
];

/// A CloudEvents rule an event breaks, naming the attribute.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("attribute `{attribute}`: {reason}")]
pub struct ValidationError {
    /// The failing attribute's name (`id`, `source`, `time`, an extension's name…).
    pub attribute: String,
    /// What rule it breaks, and what to do.
    pub reason: String,
}

impl ValidationError {
    /// A new error for `attribute`.
    pub fn new(attribute: impl Into<String>, reason: impl Into<String>) -> Self {
        ValidationError {
            attribute: attribute.into(),
            reason: reason.into(),
        }
    }
}

impl Event {
    /// Checks the event against every MUST of CloudEvents 1.0.2 and of the extensions
    /// OVASABI uses; the [module docs](crate::validate) list each rule.
    ///
    /// Returns the first rule broken, naming the attribute and saying how to fix it.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_total_size(self)?;

        check_required("id", &self.id)?;
        check_string("id", &self.id)?;

        check_required("source", &self.source)?;
        check_string("source", &self.source)?;
        uri::check(&self.source, uri::Kind::Reference).map_err(|reason| {
            ValidationError::new(
                "source",
                format!(
                    "`{}` is not a URI-reference (RFC 3986): {reason}",
                    self.source
                ),
            )
        })?;

        check_required("type", &self.ty)?;
        check_string("type", &self.ty)?;

        if let Some(ct) = &self.datacontenttype {
            check_present_non_empty("datacontenttype", ct)?;
            check_string("datacontenttype", ct)?;
            MediaType::parse(ct).map_err(|reason| {
                ValidationError::new(
                    "datacontenttype",
                    format!(
                        "`{ct}` is not an RFC 2046 media type ({reason}); write `type/subtype` with optional `; name=value` parameters, e.g. `application/json` or `text/plain; charset=utf-8`"
                    ),
                )
            })?;
        }

        if let Some(schema) = &self.dataschema {
            check_present_non_empty("dataschema", schema)?;
            check_string("dataschema", schema)?;
            uri::check(schema, uri::Kind::Absolute).map_err(|reason| {
                ValidationError::new(
                    "dataschema",
                    format!("`{schema}` is not an absolute URI (RFC 3986): {reason}"),
                )
            })?;
        }

        if let Some(subject) = &self.subject {
            check_present_non_empty("subject", subject)?;
            check_string("subject", subject)?;
        }

        if let Some(time) = &self.time {
            check_time(time)?;
        }

        for (name, value) in &self.extensions {
            check_extension_name(name)?;
            check_extension_value(name, value)?;
        }
        check_extension_semantics(self)?;
        Ok(())
    }
}

fn check_required(attribute: &str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::new(
            attribute,
            "required and must be non-empty",
        ));
    }
    Ok(())
}

fn check_present_non_empty(attribute: &str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::new(
            attribute,
            "must be non-empty when present; leave it unset (None) instead of empty",
        ));
    }
    Ok(())
}

/// Whether `c` is a Unicode noncharacter: U+FDD0..=U+FDEF, or the last two code points of
/// any plane (U+xFFFE, U+xFFFF).
fn is_noncharacter(c: char) -> bool {
    let cp = c as u32;
    (0xFDD0..=0xFDEF).contains(&cp) || (cp & 0xFFFE) == 0xFFFE
}

/// Checks the CloudEvents `String` rule: no control characters, no noncharacters.
pub(crate) fn check_string(attribute: &str, value: &str) -> Result<(), ValidationError> {
    // Fast path: printable ASCII, by far the common case.
    if value.bytes().all(|b| (0x20..0x7F).contains(&b)) {
        return Ok(());
    }
    for (at, c) in value.char_indices() {
        if matches!(c as u32, 0x00..=0x1F | 0x7F..=0x9F) {
            return Err(ValidationError::new(
                attribute,
                format!(
                    "contains the control character U+{:04X} at byte {at}; CloudEvents strings may not contain U+0000–U+001F or U+007F–U+009F (newlines and tabs included): remove it, or carry such text in the data",
                    c as u32
                ),
            ));
        }
        if is_noncharacter(c) {
            return Err(ValidationError::new(
                attribute,
                format!(
                    "contains the Unicode noncharacter U+{:04X} at byte {at}, which CloudEvents strings may not contain; remove it",
                    c as u32
                ),
            ));
        }
    }
    Ok(())
}

fn check_time(time: &DateTime<Utc>) -> Result<(), ValidationError> {
    let year = time.year();
    if !(0..=9999).contains(&year) {
        return Err(ValidationError::new(
            "time",
            format!(
                "year {year} cannot be written in RFC 3339, which has four-digit years (0000–9999); use a time within that range"
            ),
        ));
    }
    Ok(())
}

/// Why `name` is not a lawful extension attribute name, if it is not.
pub(crate) fn check_extension_name(name: &str) -> Result<(), ValidationError> {
    if name.is_empty() {
        return Err(ValidationError::new(
            name,
            "extension names must be non-empty lower-case ASCII letters and digits",
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
    {
        let suggestion: String = name
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect();
        let hint = if suggestion.is_empty() {
            String::new()
        } else {
            format!(" (e.g. `{suggestion}`)")
        };
        return Err(ValidationError::new(
            name,
            format!(
                "extension name has {bad:?}; CloudEvents attribute names are lower-case ASCII letters and digits only{hint}"
            ),
        ));
    }
    match name {
        "data" => Err(ValidationError::new(
            name,
            "`data` is reserved for the payload and cannot be an attribute; put the payload in `Event::data`",
        )),
        "specversion" => Err(ValidationError::new(
            name,
            format!("`specversion` is a core attribute, always `{SPEC_VERSION}`; it cannot be an extension"),
        )),
        _ if CORE_ATTRIBUTES.contains(&name) => {
            let field = if name == "type" { "ty" } else { name };
            Err(ValidationError::new(
                name,
                format!(
                    "`{name}` is a core CloudEvents attribute and may appear only once; set the field `Event::{field}` instead of an extension"
                ),
            ))
        }
        _ => Ok(()),
    }
}

fn check_extension_value(name: &str, value: &ExtensionValue) -> Result<(), ValidationError> {
    match value {
        ExtensionValue::String(s) => check_string(name, s),
        ExtensionValue::Integer(i) => {
            if i32::try_from(*i).is_err() {
                return Err(ValidationError::new(
                    name,
                    format!(
                        "Integer {i} is outside the signed 32-bit range CloudEvents allows ({}..={}); send larger numbers as a String",
                        i32::MIN,
                        i32::MAX
                    ),
                ));
            }
            Ok(())
        }
        ExtensionValue::Boolean(_) => Ok(()),
    }
}

/// The string value of extension `name`, or an error if it is present with another type.
fn string_extension<'e>(
    event: &'e Event,
    name: &str,
    what: &str,
) -> Result<Option<&'e str>, ValidationError> {
    match event.extensions.get(name) {
        None => Ok(None),
        Some(ExtensionValue::String(s)) => Ok(Some(s)),
        Some(other) => Err(ValidationError::new(
            name,
            format!(
                "must be a String ({what}), not {}; store it as ExtensionValue::String",
                match other {
                    ExtensionValue::Integer(_) => "an Integer",
                    _ => "a Boolean",
                }
            ),
        )),
    }
}

fn check_extension_semantics(event: &Event) -> Result<(), ValidationError> {
    let traceparent = string_extension(event, EXT_TRACEPARENT, "a W3C traceparent")?;
    if let Some(tp) = traceparent {
        trace_context::check_traceparent(tp)
            .map_err(|reason| ValidationError::new(EXT_TRACEPARENT, reason))?;
    }
    if let Some(ts) = string_extension(event, EXT_TRACESTATE, "a W3C tracestate")? {
        if traceparent.is_none() {
            return Err(ValidationError::new(
                EXT_TRACESTATE,
                "set without `traceparent`; the distributed-tracing extension requires `traceparent` whenever it is used: add it, or drop `tracestate`",
            ));
        }
        trace_context::check_tracestate(ts)
            .map_err(|reason| ValidationError::new(EXT_TRACESTATE, reason))?;
    }
    if let Some(seq) = string_extension(event, EXT_SEQUENCE, "a decimal u64")? {
        check_sequence(seq)?;
    }
    if let Some(st) = string_extension(event, "sequencetype", "the sequence's type")? {
        check_present_non_empty("sequencetype", st)?;
    }
    for (name, what) in [
        (EXT_PARTITIONKEY, "the partition key"),
        (EXT_CORRELATIONID, "the correlation id"),
        (EXT_CAUSATIONID, "the causing event's id"),
    ] {
        if let Some(v) = string_extension(event, name, what)? {
            check_present_non_empty(name, v)?;
        }
    }
    Ok(())
}

fn check_sequence(seq: &str) -> Result<(), ValidationError> {
    let fail = |why: &str| {
        Err(ValidationError::new(
            EXT_SEQUENCE,
            format!(
                "`{seq}` {why}; `sequence` holds a decimal u64 without leading zeros, e.g. `42` (use Event::set_sequence)"
            ),
        ))
    };
    if seq.is_empty() {
        return fail("is empty");
    }
    if !seq.bytes().all(|b| b.is_ascii_digit()) {
        return fail("has a character other than the digits 0-9");
    }
    if seq.len() > 1 && seq.starts_with('0') {
        return fail("has a leading zero");
    }
    if seq.parse::<u64>().is_err() {
        return fail("is larger than u64::MAX");
    }
    Ok(())
}

/// The fraction digits chrono's `SecondsFormat::AutoSi` writes for `nanos` (below one
/// second): none, 3, 6 or 9.
pub(crate) fn fraction_digits(nanos: u32) -> usize {
    let (below_milli, below_micro) = (nanos % 1_000_000, nanos % 1_000);
    match () {
        _ if nanos == 0 => 0,
        _ if below_milli == 0 => 3,
        _ if below_micro == 0 => 6,
        _ => 9,
    }
}

/// Length of `time` as RFC 3339 with `Z` and the shortest of 0, 3, 6 or 9 fraction digits.
pub(crate) fn rfc3339_len(time: &DateTime<Utc>) -> usize {
    let fraction = match fraction_digits(time.nanosecond() % 1_000_000_000) {
        0 => 0,
        digits => digits + 1,
    };
    let year = time.year();
    let year_len = if (0..=9999).contains(&year) {
        4
    } else {
        // chrono writes a sign and at least four digits outside 0..=9999.
        1 + decimal_len(i64::from(year.unsigned_abs())).max(4)
    };
    year_len + "-MM-DDTHH:MM:SSZ".len() + fraction
}

fn decimal_len(i: i64) -> usize {
    let sign = usize::from(i < 0);
    let mut n = i.unsigned_abs();
    let mut digits = 1;
    while n >= 10 {
        n /= 10;
        digits += 1;
    }
    sign + digits
}

/// The bytes an extension value takes as its canonical string.
pub(crate) fn extension_value_len(value: &ExtensionValue) -> usize {
    match value {
        ExtensionValue::String(s) => s.len(),
        ExtensionValue::Integer(i) => decimal_len(*i),
        ExtensionValue::Boolean(true) => 4,
        ExtensionValue::Boolean(false) => 5,
    }
}

fn check_total_size(event: &Event) -> Result<(), ValidationError> {
    let optional = [
        (
            "datacontenttype",
            event.datacontenttype.as_ref().map(String::len),
        ),
        ("dataschema", event.dataschema.as_ref().map(String::len)),
        ("subject", event.subject.as_ref().map(String::len)),
        ("time", event.time.as_ref().map(rfc3339_len)),
    ];
    let core = [
        ("id", event.id.len()),
        ("source", event.source.len()),
        ("type", event.ty.len()),
    ]
    .into_iter()
    .chain(optional.into_iter().filter_map(|(n, l)| l.map(|l| (n, l))));
    let extensions = event
        .extensions
        .iter()
        .map(|(n, v)| (n.as_str(), extension_value_len(v)));
    let mut total = "specversion".len() + SPEC_VERSION.len();
    let mut largest = ("id", 0);
    for (name, len) in core.chain(extensions) {
        total += name.len() + len;
        if len > largest.1 {
            largest = (name, len);
        }
    }
    if total > MAX_ATTRIBUTES_BYTES {
        let (name, len) = largest;
        return Err(ValidationError::new(
            name,
            format!(
                "the event's attributes total {total} bytes, over the limit of {MAX_ATTRIBUTES_BYTES}; this one is the largest ({len} bytes): move large values into the data"
            ),
        ));
    }
    Ok(())
}

/// A media type split into its parts, as RFC 2045/2046 write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MediaType<'a> {
    /// The top-level type, as written (compare case-insensitively).
    pub(crate) ty: &'a str,
    /// The subtype, as written (compare case-insensitively).
    pub(crate) subtype: &'a str,
    /// The text after the subtype: `; name=value` parameters, already checked.
    params: &'a str,
}

/// RFC 2045 `tspecials`: these, space and controls cannot appear in a token.
fn is_tspecial(b: u8) -> bool {
    matches!(
        b,
        b'(' | b')'
            | b'<'
            | b'>'
            | b'@'
            | b','
            | b';'
            | b':'
            | b'\\'
            | b'"'
            | b'/'
            | b'['
            | b']'
            | b'?'
            | b'='
    )
}

fn is_token_byte(b: u8) -> bool {
    (0x21..0x7F).contains(&b) && !is_tspecial(b)
}

fn token_len(s: &[u8]) -> usize {
    s.iter().take_while(|b| is_token_byte(**b)).count()
}

/// Length of the quoted-string at the start of `s` (which starts with `"`).
fn quoted_len(s: &[u8]) -> Result<usize, String> {
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'"' => return Ok(i + 1),
            b'\\' => {
                if i + 1 >= s.len() || !s[i + 1].is_ascii() {
                    return Err(
                        "a `\\` in a quoted parameter value must escape an ASCII character".into(),
                    );
                }
                i += 2;
            }
            b'\r' => return Err("a quoted parameter value cannot contain CR".into()),
            b if !b.is_ascii() => return Err("a quoted parameter value must be ASCII".into()),
            _ => i += 1,
        }
    }
    Err("a quoted parameter value has no closing `\"`".into())
}

impl<'a> MediaType<'a> {
    /// Parses `type/subtype *(OWS ";" OWS name=value)`; the error says what is wrong.
    pub(crate) fn parse(text: &'a str) -> Result<Self, String> {
        let bytes = text.as_bytes();
        let ty_len = token_len(bytes);
        if ty_len == 0 {
            return Err("it must start with a type such as `application` or `text`".into());
        }
        if bytes.get(ty_len) != Some(&b'/') {
            return Err(format!(
                "the type `{}` must be followed by `/` and a subtype",
                &text[..ty_len]
            ));
        }
        let sub_start = ty_len + 1;
        let sub_len = token_len(&bytes[sub_start..]);
        if sub_len == 0 {
            return Err(
                "the subtype after `/` is missing or starts with a character tokens cannot hold"
                    .into(),
            );
        }
        let params_start = sub_start + sub_len;
        let media = MediaType {
            ty: &text[..ty_len],
            subtype: &text[sub_start..params_start],
            params: &text[params_start..],
        };
        // Check the parameters once, here; `param` relies on it.
        let mut rest = &bytes[params_start..];
        loop {
            let trimmed = trim_ows_start(rest);
            if trimmed.is_empty() {
                if trimmed.len() != rest.len() {
                    return Err("trailing whitespace after the media type".into());
                }
                break;
            }
            if trimmed[0] != b';' {
                let at = text.len() - trimmed.len();
                return Err(format!(
                    "unexpected {:?} at byte {at}; parameters are written `; name=value`",
                    text[at..].chars().next().unwrap_or(' ')
                ));
            }
            let after = trim_ows_start(&trimmed[1..]);
            let name_len = token_len(after);
            if name_len == 0 {
                return Err("a `;` must be followed by a parameter `name=value`".into());
            }
            if after.get(name_len) != Some(&b'=') {
                return Err(format!(
                    "parameter `{}` needs `=` and a value",
                    String::from_utf8_lossy(&after[..name_len])
                ));
            }
            let value = &after[name_len + 1..];
            let value_len = if value.first() == Some(&b'"') {
                quoted_len(value)?
            } else {
                token_len(value)
            };
            if value_len == 0 {
                return Err(format!(
                    "parameter `{}` has no value; quote values with spaces or special characters",
                    String::from_utf8_lossy(&after[..name_len])
                ));
            }
            rest = &value[value_len..];
        }
        Ok(media)
    }

    /// The value of parameter `name` (case-insensitive), unquoted.
    pub(crate) fn param(&self, name: &str) -> Option<String> {
        let mut rest = self.params.as_bytes();
        loop {
            rest = trim_ows_start(rest);
            if rest.first() != Some(&b';') {
                return None;
            }
            rest = trim_ows_start(&rest[1..]);
            let name_len = token_len(rest);
            let this = &rest[..name_len];
            let value = &rest[name_len + 1..];
            let (raw_len, unquoted) = if value.first() == Some(&b'"') {
                let len = quoted_len(value).ok()?;
                let mut out = Vec::with_capacity(len);
                let mut i = 1;
                while i + 1 < len {
                    if value[i] == b'\\' {
                        i += 1;
                    }
                    out.push(value[i]);
                    i += 1;
                }
                (len, out)
            } else {
                let len = token_len(value);
                (len, value[..len].to_vec())
            };
            if this.eq_ignore_ascii_case(name.as_bytes()) {
                return String::from_utf8(unquoted).ok();
            }
            rest = &value[raw_len..];
        }
    }
}

fn trim_ows_start(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|b| **b == b' ' || **b == b'\t').count();
    &s[n..]
}

/// RFC 3986 URI and URI-reference syntax.
pub(crate) mod uri {
    /// Which production to check.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub(crate) enum Kind {
        /// `URI-reference`: a URI or a relative reference.
        Reference,
        /// A URI with a scheme (fragment tolerated).
        Absolute,
    }

    fn is_unreserved(b: u8) -> bool {
        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
    }

    fn is_sub_delim(b: u8) -> bool {
        matches!(
            b,
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
        )
    }

    /// Describes the byte at `at` of `whole` that is not allowed in `part`.
    fn bad_char(whole: &str, at: usize, part: &str) -> String {
        let c = whole[at..].chars().next().unwrap_or('?');
        let mut buf = [0u8; 4];
        let encoded: String = c
            .encode_utf8(&mut buf)
            .bytes()
            .map(|b| format!("%{b:02X}"))
            .collect();
        if c.is_ascii() {
            format!(
                "{c:?} at byte {at} is not allowed in the {part}; percent-encode it as {encoded}"
            )
        } else {
            format!(
                "non-ASCII {c:?} at byte {at}: URIs are ASCII, so percent-encode its UTF-8 bytes as {encoded}"
            )
        }
    }

    /// Checks `whole[start..end]` holds only `allowed` bytes and valid `%XX` escapes.
    fn check_chars(
        whole: &str,
        start: usize,
        end: usize,
        part: &str,
        allowed: impl Fn(u8) -> bool,
    ) -> Result<(), String> {
        let bytes = whole.as_bytes();
        let mut i = start;
        while i < end {
            let b = bytes[i];
            if b == b'%' {
                let ok = i + 2 < end
                    && bytes[i + 1].is_ascii_hexdigit()
                    && bytes[i + 2].is_ascii_hexdigit();
                if !ok {
                    return Err(format!(
                        "`%` at byte {i} must start a `%XX` escape with two hex digits (a literal `%` is `%25`)"
                    ));
                }
                i += 3;
            } else if allowed(b) {
                i += 1;
            } else {
                return Err(bad_char(whole, i, part));
            }
        }
        Ok(())
    }

    fn is_pchar(b: u8) -> bool {
        is_unreserved(b) || is_sub_delim(b) || b == b':' || b == b'@'
    }

    fn check_authority(whole: &str, start: usize, end: usize) -> Result<(), String> {
        let auth = &whole[start..end];
        let (host_start, userinfo) = match auth.find('@') {
            Some(at) => (start + at + 1, Some(start + at)),
            None => (start, None),
        };
        if let Some(ui_end) = userinfo {
            check_chars(whole, start, ui_end, "userinfo", |b| {
                is_unreserved(b) || is_sub_delim(b) || b == b':'
            })?;
        }
        let host_port = &whole[host_start..end];
        let port_start = if host_port.starts_with('[') {
            let close = host_port
                .find(']')
                .ok_or_else(|| format!("the IP literal at byte {host_start} has no closing `]`"))?;
            let literal = &host_port[1..close];
            let ok = if let Some(future) = literal
                .strip_prefix('v')
                .or_else(|| literal.strip_prefix('V'))
            {
                match future.split_once('.') {
                    Some((ver, rest)) => {
                        !ver.is_empty()
                            && ver.bytes().all(|b| b.is_ascii_hexdigit())
                            && !rest.is_empty()
                            && rest
                                .bytes()
                                .all(|b| is_unreserved(b) || is_sub_delim(b) || b == b':')
                    }
                    None => false,
                }
            } else {
                literal.parse::<std::net::Ipv6Addr>().is_ok()
            };
            if !ok {
                return Err(format!(
                    "`[{literal}]` is not an IPv6 address or IPvFuture literal"
                ));
            }
            let after = host_start + close + 1;
            match whole.as_bytes().get(after) {
                _ if after == end => None,
                Some(b':') => Some(after + 1),
                _ => {
                    return Err(bad_char(
                        whole,
                        after,
                        "authority (after an IP literal only `:port` may follow)",
                    ))
                }
            }
        } else {
            let host_end = host_port.find(':').map_or(end, |c| host_start + c);
            check_chars(whole, host_start, host_end, "host", |b| {
                is_unreserved(b) || is_sub_delim(b)
            })?;
            (host_end < end).then_some(host_end + 1)
        };
        if let Some(p) = port_start {
            if let Some(off) = whole[p..end].bytes().position(|b| !b.is_ascii_digit()) {
                return Err(format!(
                    "the port may hold only digits; {}",
                    bad_char(whole, p + off, "port")
                ));
            }
        }
        Ok(())
    }

    /// Checks `s` against RFC 3986; the error says what is wrong and how to fix it.
    pub(crate) fn check(s: &str, kind: Kind) -> Result<(), String> {
        if s.is_empty() {
            return Err("it is empty".into());
        }
        let bytes = s.as_bytes();
        // RFC 3986 Appendix B: scheme ends at the first ':' before any '/', '?' or '#'.
        let first_delim = s.find([':', '/', '?', '#']);
        let mut pos = 0;
        match first_delim {
            Some(i) if bytes[i] == b':' => {
                let scheme = &s[..i];
                let valid = scheme
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphabetic())
                    && scheme
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
                if !valid {
                    return Err(if scheme.is_empty() {
                        "it starts with `:`; a scheme (letters, e.g. `https`) must come before it"
                            .into()
                    } else {
                        format!(
                            "`{scheme}` before the first `:` is not a scheme (a letter, then letters, digits, `+`, `-` or `.`), and a relative reference's first segment cannot contain `:`; start it with `./` or percent-encode the `:` as %3A"
                        )
                    });
                }
                pos = i + 1;
            }
            _ => {
                if kind == Kind::Absolute {
                    return Err(
                        "it has no scheme; use an absolute URI such as `https://example.com/schemas/order.json` or `urn:example:order`".into(),
                    );
                }
            }
        }
        let fragment = s[pos..].find('#').map(|f| pos + f);
        let before_fragment = fragment.unwrap_or(s.len());
        let query = s[pos..before_fragment].find('?').map(|q| pos + q);
        let path_end = query.unwrap_or(before_fragment);
        if let Some(f) = fragment {
            check_chars(s, f + 1, s.len(), "fragment", |b| {
                is_pchar(b) || b == b'/' || b == b'?'
            })?;
        }
        if let Some(q) = query {
            check_chars(s, q + 1, before_fragment, "query", |b| {
                is_pchar(b) || b == b'/' || b == b'?'
            })?;
        }
        let mut path_start = pos;
        if s[pos..path_end].starts_with("//") {
            let auth_start = pos + 2;
            let auth_end = s[auth_start..path_end]
                .find('/')
                .map_or(path_end, |i| auth_start + i);
            check_authority(s, auth_start, auth_end)?;
            path_start = auth_end;
        }
        check_chars(s, path_start, path_end, "path", |b| {
            is_pchar(b) || b == b'/'
        })
    }
}

/// W3C Trace Context `traceparent` and `tracestate` syntax.
pub(crate) mod trace_context {
    fn is_lower_hex(s: &str) -> bool {
        s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }

    const SHAPE: &str =
        "a W3C traceparent is `00-<trace-id: 32 lower-case hex>-<parent-id: 16 lower-case hex>-<flags: 2 lower-case hex>`, e.g. `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`";

    /// Checks a `traceparent` value.
    pub(crate) fn check_traceparent(tp: &str) -> Result<(), String> {
        let fail = |why: String| Err(format!("`{tp}`: {why}; {SHAPE}"));
        let b = tp.as_bytes();
        if b.len() < 55 {
            return fail(format!("it is {} characters, the format needs 55", b.len()));
        }
        let version = &tp[..2];
        if !is_lower_hex(version) || b[2] != b'-' {
            return fail("it must start with a two lower-hex-digit version and `-`".into());
        }
        if version == "ff" {
            return fail("version `ff` is forbidden".into());
        }
        if version == "00" && b.len() != 55 {
            return fail(format!(
                "version 00 is exactly 55 characters, this is {}",
                b.len()
            ));
        }
        if b.len() > 55 && b[55] != b'-' {
            return fail("fields after the flags must be separated by `-`".into());
        }
        let (trace_id, parent_id, flags) = (&tp[3..35], &tp[36..52], &tp[53..55]);
        if b[35] != b'-' || b[52] != b'-' {
            return fail("the fields must be separated by `-` at positions 3, 36 and 53".into());
        }
        if !is_lower_hex(trace_id) {
            return fail(format!(
                "trace-id `{trace_id}` must be 32 lower-case hex digits"
            ));
        }
        if trace_id.bytes().all(|b| b == b'0') {
            return fail("the trace-id is all zeros, which is invalid".into());
        }
        if !is_lower_hex(parent_id) {
            return fail(format!(
                "parent-id `{parent_id}` must be 16 lower-case hex digits"
            ));
        }
        if parent_id.bytes().all(|b| b == b'0') {
            return fail("the parent-id is all zeros, which is invalid".into());
        }
        if !is_lower_hex(flags) {
            return fail(format!("flags `{flags}` must be 2 lower-case hex digits"));
        }
        Ok(())
    }

    /// Most list members a `tracestate` may hold.
    pub(crate) const MAX_MEMBERS: usize = 32;

    fn is_key_char(b: u8) -> bool {
        matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/' | b'@')
    }

    fn is_value_char(b: u8) -> bool {
        (0x20..=0x7E).contains(&b) && b != b',' && b != b'='
    }

    /// Checks a `tracestate` value.
    pub(crate) fn check_tracestate(ts: &str) -> Result<(), String> {
        let mut keys: [&str; MAX_MEMBERS] = [""; MAX_MEMBERS];
        let mut count = 0;
        for (n, member) in ts.split(',').enumerate() {
            let member = member.trim_matches(|c| c == ' ' || c == '\t');
            if member.is_empty() {
                continue; // empty list members are allowed
            }
            let Some((key, value)) = member.split_once('=') else {
                return Err(format!(
                    "list member {} `{member}` is not `key=value`; tracestate is a comma-separated list such as `rojo=00f067aa0ba902b7,congo=t61rcWkgMzE`",
                    n + 1
                ));
            };
            let key_ok = key
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && key.len() <= 256
                && key.bytes().all(is_key_char);
            if !key_ok {
                return Err(format!(
                    "key `{key}` must be 1 to 256 characters of `a-z 0-9 _ - * / @`, starting with a letter or digit"
                ));
            }
            let value_ok = !value.is_empty()
                && value.len() <= 256
                && value.bytes().all(is_value_char)
                && !value.ends_with(' ');
            if !value_ok {
                return Err(format!(
                    "the value of key `{key}` must be 1 to 256 printable ASCII characters other than `,` and `=`, not ending in a space"
                ));
            }
            if keys[..count].contains(&key) {
                return Err(format!(
                    "key `{key}` appears twice; each vendor keeps one entry"
                ));
            }
            if count == MAX_MEMBERS {
                return Err(format!(
                    "it has more than {MAX_MEMBERS} list members; drop the oldest (right-most) ones"
                ));
            }
            keys[count] = key;
            count += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn base() -> Event {
        Event::new("order.placed", "/services/orders").with_id("e-1")
    }

    /// Applies `change` to a valid event; expects the error to name `attribute`.
    fn fails(change: impl FnOnce(&mut Event), attribute: &str) {
        let mut e = base();
        change(&mut e);
        match e.validate() {
            Err(err) => {
                assert_eq!(err.attribute, attribute, "wrong attribute in: {err}");
                assert!(!err.reason.is_empty());
            }
            Ok(()) => panic!("accepted, expected an error on `{attribute}`: {e:?}"),
        }
    }

    fn passes(change: impl FnOnce(&mut Event)) {
        let mut e = base();
        change(&mut e);
        if let Err(err) = e.validate() {
            panic!("rejected: {err} for {e:?}");
        }
    }

    #[test]
    fn a_plain_event_is_valid() {
        passes(|_| {});
        passes(|e| {
            *e = e
                .clone()
                .with_json(&serde_json::json!({"a": 1}))
                .with_subject("order-1")
                .with_extension("traceparent", TP)
                .with_extension("tracestate", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
                .with_extension("correlationid", "c-1")
                .with_extension("causationid", "e-0")
                .with_partition_key("order-1")
                .with_extension("flag", true)
                .with_extension("count", 7i64);
            e.set_sequence(42);
            e.time = Some(Utc::now());
            e.dataschema = Some("https://example.com/schemas/order.json".into());
        });
    }

    #[test]
    fn required_attributes() {
        fails(|e| e.id.clear(), "id");
        fails(|e| e.source.clear(), "source");
        fails(|e| e.ty.clear(), "type");
    }

    #[test]
    fn optional_attributes_non_empty_when_present() {
        fails(|e| e.subject = Some(String::new()), "subject");
        fails(|e| e.dataschema = Some(String::new()), "dataschema");
        fails(
            |e| e.datacontenttype = Some(String::new()),
            "datacontenttype",
        );
        fails(
            |e| {
                e.extensions.insert("sequencetype".into(), "".into());
            },
            "sequencetype",
        );
    }

    #[test]
    fn strings_refuse_control_characters_and_noncharacters() {
        let bad = [
            "a\u{0}b",
            "line\nbreak",
            "tab\t",
            "\u{1f}",
            "del\u{7f}",
            "c1\u{85}",
            "\u{9f}",
            "\u{fdd0}",
            "\u{fdef}",
            "\u{fffe}",
            "\u{ffff}",
            "\u{1fffe}",
            "\u{10ffff}",
        ];
        for s in bad {
            fails(|e| e.id = s.into(), "id");
            fails(|e| e.ty = s.into(), "type");
            fails(|e| e.subject = Some(s.into()), "subject");
            fails(
                |e| {
                    e.extensions.insert("ext".into(), s.into());
                },
                "ext",
            );
        }
        for good in [
            "é ü 日本 😀",
            "\u{a0}",
            "\u{fdcf}",
            "\u{fdf0}",
            "\u{fffd}",
            "\u{1fffd}",
        ] {
            passes(|e| e.id = good.into());
            passes(|e| e.subject = Some(good.into()));
        }
    }

    #[test]
    fn source_is_a_uri_reference() {
        for good in [
            "https://github.com/cloudevents",
            "mailto:cncf-wg-serverless@lists.cncf.io",
            "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
            "/cloudevents/spec/pull/123",
            "/sensors/tn-1234567/alerts",
            "1-555-123-4567",
            "user-service",
            "./a:b",
            "//host/path",
            "http://user:pw@[::1]:8080/p?q=1#f",
            "http://[v1.fe80::a+en1]/",
            "http://127.0.0.1:80",
            "file:///etc/hosts",
            "a/b%20c",
            "?query",
            "#frag",
            "https://example.com/a?b=c/d?e#f/g?h",
        ] {
            passes(|e| e.source = good.into());
        }
        for bad in [
            "has space",
            "a:b:c/%zz",
            "1abc:def",
            ":nothing",
            "http://exa mple.com",
            "http://host:port",
            "http://[::1",
            "http://[notip]/",
            "http://a@b@c/",
            "é",
            "a\"b",
            "a<b>",
            "a|b",
            "a\\b",
            "a{b}",
            "100%",
            "a#b#c",
        ] {
            fails(|e| e.source = bad.into(), "source");
        }
    }

    #[test]
    fn dataschema_is_an_absolute_uri() {
        for good in [
            "https://example.com/schemas/order.json",
            "urn:ovasabi:schema:order.placed:1",
            "https://example.com/s.json#/definitions/order",
        ] {
            passes(|e| e.dataschema = Some(good.into()));
        }
        for bad in [
            "/schemas/order.json",
            "order.json",
            "https://ex ample.com",
            "1http://x",
        ] {
            fails(|e| e.dataschema = Some(bad.into()), "dataschema");
        }
    }

    #[test]
    fn datacontenttype_is_a_media_type() {
        for good in [
            "application/json",
            "text/plain; charset=utf-8",
            "text/plain;charset=\"utf-8\"",
            "application/vnd.apache.thrift.binary",
            "application/cloudevents+json",
            "multipart/form-data; boundary=\"a b;c\"",
            "Application/JSON",
            "application/x-www-form-urlencoded",
            "a/b; x=1; y=\"q\\\"uoted\"",
        ] {
            passes(|e| e.datacontenttype = Some(good.into()));
        }
        for bad in [
            "json",
            "application/",
            "/json",
            "application/json;",
            "application/json; charset",
            "application/json; charset=",
            "application/json charset=utf-8",
            "text/plain; a=\"unterminated",
            "app lication/json",
            "application/json ",
            "application/jsön",
            "text/plain; a=b c",
        ] {
            fails(|e| e.datacontenttype = Some(bad.into()), "datacontenttype");
        }
    }

    #[test]
    fn media_type_parameters() {
        let m = MediaType::parse("Text/Plain; Charset=\"UTF-8\"; a=b").unwrap();
        assert_eq!((m.ty, m.subtype), ("Text", "Plain"));
        assert_eq!(m.param("charset").as_deref(), Some("UTF-8"));
        assert_eq!(m.param("A").as_deref(), Some("b"));
        assert_eq!(m.param("missing"), None);
        let m = MediaType::parse("a/b; q=\"x\\\"y\"").unwrap();
        assert_eq!(m.param("q").as_deref(), Some("x\"y"));
    }

    #[test]
    fn time_fits_rfc3339() {
        passes(|e| e.time = Some(Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap()));
        passes(|e| e.time = Some(Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap()));
        fails(
            |e| e.time = Some(Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap()),
            "time",
        );
        fails(
            |e| e.time = Some(Utc.with_ymd_and_hms(-1, 1, 1, 0, 0, 0).unwrap()),
            "time",
        );
    }

    #[test]
    fn rfc3339_len_matches_chrono() {
        use chrono::SecondsFormat;
        for nanos in [
            0,
            1,
            1_000,
            1_000_000,
            123_456_789,
            120_000_000,
            999_999_000,
        ] {
            for year in [0, 1970, 2026, 9999, 10000, -5, 123_456] {
                let t = Utc
                    .with_ymd_and_hms(year, 3, 4, 5, 6, 7)
                    .unwrap()
                    .with_nanosecond(nanos)
                    .unwrap();
                let s = t.to_rfc3339_opts(SecondsFormat::AutoSi, true);
                assert_eq!(rfc3339_len(&t), s.len(), "{s}");
            }
        }
    }

    #[test]
    fn extension_names() {
        for good in ["a", "ext1", "comexampleextension1", "x9"] {
            passes(|e| {
                e.extensions.insert(good.into(), "v".into());
            });
        }
        for bad in [
            "",
            "Upper",
            "with-dash",
            "with_underscore",
            "dot.ted",
            "spa ce",
            "é",
            "data",
            "data_base64",
            "id",
            "source",
            "specversion",
            "type",
            "datacontenttype",
            "dataschema",
            "subject",
            "time",
        ] {
            fails(
                |e| {
                    e.extensions.insert(bad.into(), "v".into());
                },
                bad,
            );
        }
    }

    #[test]
    fn integer_extensions_are_32_bit() {
        for good in [0, i64::from(i32::MAX), i64::from(i32::MIN), -1] {
            passes(|e| {
                e.extensions.insert("n".into(), good.into());
            });
        }
        for bad in [i64::from(i32::MAX) + 1, i64::from(i32::MIN) - 1, i64::MAX] {
            fails(
                |e| {
                    e.extensions.insert("n".into(), bad.into());
                },
                "n",
            );
        }
    }

    #[test]
    fn traceparent() {
        for good in [
            TP,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds",
        ] {
            passes(|e| {
                e.extensions.insert("traceparent".into(), good.into());
            });
        }
        for bad in [
            "",
            "garbage",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.future",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
        ] {
            fails(
                |e| {
                    e.extensions.insert("traceparent".into(), bad.into());
                },
                "traceparent",
            );
        }
        fails(
            |e| {
                e.extensions.insert("traceparent".into(), 5i64.into());
            },
            "traceparent",
        );
    }

    #[test]
    fn tracestate() {
        let with = |ts: &str| {
            let ts = ts.to_owned();
            move |e: &mut Event| {
                e.extensions.insert("traceparent".into(), TP.into());
                e.extensions.insert("tracestate".into(), ts.into());
            }
        };
        for good in [
            "rojo=00f067aa0ba902b7",
            "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
            "rojo=1, congo=2",
            "",
            ",,",
            "tenant@vendor=x",
            "0key=v",
            "a_b-c*d/e=va lue",
            "k= leading-space",
            "k=trailing-ows ",
        ] {
            passes(with(good));
        }
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        let thirty_two: Vec<String> = (0..32).map(|i| format!("k{i}=v")).collect();
        passes(with(&thirty_two.join(",")));
        for bad in [
            "novalue",
            "Upper=1",
            "k=",
            "k=a,b",
            "k=1,k=2",
            "_k=1",
            "k=a=b",
            "k=é",
            &many.join(","),
            &format!("{}=v", "k".repeat(257)),
            &format!("k={}", "v".repeat(257)),
        ] {
            fails(with(bad), "tracestate");
        }
        fails(
            |e| {
                e.extensions.insert("tracestate".into(), "rojo=1".into());
            },
            "tracestate",
        );
    }

    #[test]
    fn sequence() {
        for good in ["0", "1", "42", "18446744073709551615"] {
            passes(|e| {
                e.extensions.insert("sequence".into(), good.into());
            });
        }
        for bad in [
            "",
            "01",
            "-1",
            "+1",
            "1.0",
            "18446744073709551616",
            " 1",
            "x",
        ] {
            fails(
                |e| {
                    e.extensions.insert("sequence".into(), bad.into());
                },
                "sequence",
            );
        }
        fails(
            |e| {
                e.extensions.insert("sequence".into(), 5i64.into());
            },
            "sequence",
        );
    }

    #[test]
    fn our_id_extensions_are_non_empty_strings() {
        for name in ["partitionkey", "correlationid", "causationid"] {
            passes(|e| {
                e.extensions.insert(name.into(), "x".into());
            });
            fails(
                |e| {
                    e.extensions.insert(name.into(), "".into());
                },
                name,
            );
            fails(
                |e| {
                    e.extensions.insert(name.into(), true.into());
                },
                name,
            );
        }
    }

    #[test]
    fn total_attribute_size() {
        passes(|e| e.subject = Some("s".repeat(MAX_ATTRIBUTES_BYTES - 200)));
        fails(
            |e| e.subject = Some("s".repeat(MAX_ATTRIBUTES_BYTES)),
            "subject",
        );
        fails(
            |e| {
                e.extensions
                    .insert("big".into(), "x".repeat(MAX_ATTRIBUTES_BYTES).into());
            },
            "big",
        );
        // Many small extensions add up too.
        fails(
            |e| {
                for i in 0..2000 {
                    e.extensions.insert(format!("e{i}"), "x".repeat(40).into());
                }
            },
            "e0",
        );
    }

    #[test]
    fn decimal_len_is_exact() {
        for i in [0, 9, 10, -1, -10, 123_456, i64::MAX, i64::MIN] {
            assert_eq!(decimal_len(i), i.to_string().len(), "{i}");
        }
    }

    #[test]
    fn errors_read_well() {
        let mut e = base();
        e.source = "has space".into();
        let msg = e.validate().unwrap_err().to_string();
        assert!(msg.starts_with("attribute `source`:"), "{msg}");
        assert!(msg.contains("%20"), "{msg}");
    }
}
