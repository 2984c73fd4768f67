//! Protobuf (`application/protobuf`) as a second encoding of an event's payload, governed by
//! the same contract as JSON.
//!
//! A version's JSON Schema (`schemas/<type>/v<N>.json`) stays the contract. Beside it,
//! `v<N>.proto` describes the same payload as one Protobuf message; loading the registry
//! compiles it with `protox` (no `protoc` binary) into a [`prost_reflect::MessageDescriptor`]
//! and keeps it on the [`Version`](crate::Version) ([`ProtoVersion`]).
//!
//! # One contract, two encodings
//!
//! A Protobuf payload is checked in two steps ([`ProtoVersion::decode`]):
//!
//! 1. **Decoded** with the version's descriptor. Every field is checked against the wire type
//!    its declaration needs, strings must be UTF-8, lengths must fit; a failure names the
//!    field (`total.currency`, `items[1].sku`). A message whose JSON Schema is closed
//!    (`additionalProperties: false`, such as money) refuses field numbers it does not
//!    declare, as its JSON form refuses unknown members; elsewhere an unknown field (one a
//!    newer version added) is ignored, as an open JSON object's extra member is.
//! 2. **Mapped to JSON** (protobuf's JSON mapping, with the `.proto` field names, which are the
//!    JSON Schema's property names; 64-bit integers as numbers; `google.protobuf.Timestamp`
//!    as an RFC 3339 string in UTC, `Z`) and **validated against the JSON Schema**: every
//!    `required`, `minLength`, `enum`, `format`… rule applies to Protobuf events too.
//!
//! # How the two encodings line up
//!
//! Loading refuses a `.proto` that does not mirror its JSON Schema (the rules are in
//! `schemas/README.md`, "Protobuf"): the fields are exactly the properties, with the same
//! names; `string` for strings, an integer type for integers, `bool` for booleans, `repeated`
//! for arrays, a message for objects (recursively, `$ref`s followed), and
//! `google.protobuf.Timestamp` (or `string`) for `date-time`. A property the JSON Schema does
//! not require is `optional` in the `.proto`, and a required one is not.
//!
//! Presence is where proto3 and JSON differ. A field without `optional` is not written when it
//! holds its zero value (`""`, `0`, `false`), so a reader cannot tell "empty" from "absent".
//! The mapping therefore writes every such field, zero included: a required string that was
//! left out reads as `""` and fails the JSON Schema's `minLength`, `format`, `pattern` or
//! `enum`, naming the field (loading refuses a required `string` whose schema accepts `""`),
//! while `false` and `0` stay values (`verified: false`, an `amount_minor` of 0). Fields
//! with presence (`optional` ones and messages) appear only when set, so a required
//! `Timestamp` or `Money` left out fails `required`.
//!
//! Every example of a version must survive the trip JSON → Protobuf → JSON and still validate
//! (loading checks it; the tests check that it comes back unchanged).
//!
//! # Compatibility: the wire rules
//!
//! [`wire_check`] compares two versions' messages (field by field, into nested messages), the
//! way `buf breaking` does with its `WIRE_JSON` rules, so a field number keeps one meaning
//! for as long as events written with it exist:
//!
//! - [`WireRule::FieldNumberReused`]: a number now names another field, or a number the earlier
//!   version reserved is used again.
//! - [`WireRule::FieldTypeChanged`]: a field's type changed. No "wire-compatible" families:
//!   `int32` → `int64` is readable on the wire but an old reader truncates values it cannot
//!   hold, and `bool` ↔ integer reads 2 as `true`; every change of type is a break.
//! - [`WireRule::RemovedFieldNotReserved`]: a field is gone and its number is not `reserved`
//!   (or a reserved number stopped being reserved), so a later version could reuse it.
//! - [`WireRule::CardinalityChanged`]: `optional` ↔ plain ↔ `repeated` (↔ `map`).
//!
//! Adding a field with a new number is compatible. `crate::check` runs these rules between
//! consecutive versions that have a `.proto` (in every compatibility mode but `NONE`) and
//! between a version's `.proto` and the released one.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ops::Range;
use std::sync::Arc;

use miette::Diagnostic as _;
use prost_reflect::prost::Message as _;
use prost_reflect::ReflectMessage as _;
use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, SerializeOptions, Syntax,
    Value as ProtoValue,
};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};
use serde_json::Value;

use crate::registry::{FieldViolation, LoadError, Registry};

/// The `datacontenttype` written on Protobuf events.
pub const CONTENT_TYPE: &str = "application/protobuf";

/// Every `datacontenttype` read as Protobuf: [`CONTENT_TYPE`] and the older
/// `application/x-protobuf`.
pub const CONTENT_TYPES: [&str; 2] = [CONTENT_TYPE, "application/x-protobuf"];

/// Whether `content_type` (parameters and case ignored) names a Protobuf payload.
pub fn is_protobuf(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or(content_type)
        .trim()
        .to_ascii_lowercase();
    CONTENT_TYPES.contains(&essence.as_str())
}

/// The Protobuf encoding of one version: its message, compiled from `v<N>.proto`.
#[derive(Clone)]
pub struct ProtoVersion {
    /// The message (`ovasabi.events.<type>.v<N>.<Name>`).
    pub descriptor: MessageDescriptor,
    /// Where it was loaded from (`user.registered/v1.proto`, or a path).
    pub origin: String,
    /// Messages whose JSON Schema is closed: they refuse unknown field numbers.
    closed: BTreeSet<String>,
}

impl std::fmt::Debug for ProtoVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProtoVersion")
            .field("message", &self.descriptor.full_name())
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl ProtoVersion {
    /// Decodes a Protobuf payload and maps it to JSON (see the module docs), ready to be
    /// validated against the version's JSON Schema. The error names each field that cannot be
    /// decoded.
    pub fn decode(&self, data: &[u8]) -> Result<Value, Vec<FieldViolation>> {
        let mut violations = Vec::new();
        scan(&self.descriptor, data, "", &mut violations, 0);
        if !violations.is_empty() {
            return Err(violations);
        }
        let message = DynamicMessage::decode(self.descriptor.clone(), data)
            .map_err(|e| vec![violation("", "protobuf", e.to_string())])?;
        closed_unknown(&message, "", &self.closed, &mut violations);
        if !violations.is_empty() {
            return Err(violations);
        }
        to_json(&message).map_err(|e| vec![violation("", "protobuf", e)])
    }

    /// Encodes a JSON payload (the JSON mapping's form: the JSON Schema's property names) as
    /// this message. Members the message does not declare are an error.
    pub fn encode(&self, data: &Value) -> Result<Vec<u8>, String> {
        let message = DynamicMessage::deserialize(self.descriptor.clone(), data)
            .map_err(|e| format!("cannot be written as {}: {e}", self.descriptor.full_name()))?;
        Ok(message.encode_to_vec())
    }
}

/// A decoded message as JSON: proto field names, 64-bit integers as numbers, fields without
/// presence written even when zero (see the module docs).
pub fn to_json(message: &DynamicMessage) -> Result<Value, String> {
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(false)
        .skip_default_fields(false);
    message
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| format!("cannot be mapped to JSON: {e}"))
}

fn violation(field: &str, rule: &str, message: String) -> FieldViolation {
    FieldViolation {
        field: if field.is_empty() {
            "(payload)".to_owned()
        } else {
            field.to_owned()
        },
        rule: rule.to_owned(),
        message,
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

// ---------------------------------------------------------------------------------------
// Decoding: the wire format, field by field, so errors name the field.

const VARINT: u64 = 0;
const I64: u64 = 1;
const LEN: u64 = 2;
const I32: u64 = 5;

/// How deep nested messages may go in a payload.
const MAX_NESTING: usize = 64;

fn wire_type_name(wire_type: u64) -> &'static str {
    match wire_type {
        VARINT => "varint",
        I64 => "64-bit",
        LEN => "length-delimited",
        3 => "start-group",
        4 => "end-group",
        I32 => "32-bit",
        _ => "invalid",
    }
}

fn read_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in 0..10 {
        let (&byte, rest) = buf.split_first()?;
        *buf = rest;
        value |= u64::from(byte & 0x7f) << (7 * shift);
        if byte < 0x80 {
            return Some(value);
        }
    }
    None
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if buf.len() < n {
        return None;
    }
    let (head, tail) = buf.split_at(n);
    *buf = tail;
    Some(head)
}

/// The wire type a field's values are written with (a `repeated` scalar may also be packed,
/// length-delimited).
fn wire_type_of(field: &FieldDescriptor) -> u64 {
    match field.kind() {
        Kind::String | Kind::Bytes | Kind::Message(_) => LEN,
        Kind::Double | Kind::Fixed64 | Kind::Sfixed64 => I64,
        Kind::Float | Kind::Fixed32 | Kind::Sfixed32 => I32,
        _ => VARINT,
    }
}

/// Walks `buf` as a `desc` message, naming each field whose bytes cannot be its value.
fn scan(
    desc: &MessageDescriptor,
    mut buf: &[u8],
    path: &str,
    out: &mut Vec<FieldViolation>,
    depth: usize,
) {
    if depth > MAX_NESTING {
        out.push(violation(
            path,
            "protobuf",
            format!("messages nest deeper than {MAX_NESTING} levels"),
        ));
        return;
    }
    let mut seen: BTreeMap<u32, usize> = BTreeMap::new();
    while !buf.is_empty() {
        let Some(key) = read_varint(&mut buf) else {
            out.push(violation(
                path,
                "protobuf",
                "truncated: a field key runs past the end of the data".to_owned(),
            ));
            return;
        };
        let (number, wire_type) = (key >> 3, key & 7);
        let field = u32::try_from(number).ok().and_then(|n| desc.get_field(n));
        let name = field
            .as_ref()
            .map_or_else(|| format!("#{number}"), |f| f.name().to_owned());
        let index = {
            let count = seen.entry(u32::try_from(number).unwrap_or(0)).or_default();
            *count += 1;
            *count - 1
        };
        let here = match &field {
            Some(f) if f.is_list() => format!("{}[{index}]", join(path, &name)),
            _ => join(path, &name),
        };
        if number == 0 || number > 536_870_911 {
            out.push(violation(
                path,
                "protobuf",
                format!("field number {number} is not a valid field number"),
            ));
            return;
        }
        let value = match wire_type {
            VARINT => read_varint(&mut buf).map(|_| &[][..]),
            I64 => take(&mut buf, 8),
            I32 => take(&mut buf, 4),
            LEN => read_varint(&mut buf)
                .and_then(|n| usize::try_from(n).ok())
                .and_then(|n| take(&mut buf, n)),
            _ => {
                out.push(violation(
                    &here,
                    "protobuf",
                    format!(
                        "field number {number}: wire type {wire_type} ({}) is not used by these \
                         schemas",
                        wire_type_name(wire_type)
                    ),
                ));
                return;
            }
        };
        let Some(value) = value else {
            out.push(violation(
                &here,
                "protobuf",
                format!(
                    "field number {number}: truncated, its value runs past the end of the data"
                ),
            ));
            return;
        };
        let Some(field) = field else {
            continue; // Unknown: a newer version's field (closed messages are checked later).
        };
        let expected = wire_type_of(&field);
        let packed = field.is_list() && wire_type == LEN && expected != LEN;
        if wire_type != expected && !packed {
            out.push(violation(
                &here,
                "protobuf",
                format!(
                    "field number {number} is {}`{}`, written {}, but it came {}: was it \
                     written with another version's .proto?",
                    if field.is_list() { "a `repeated` " } else { "" },
                    type_name(&field.kind()),
                    wire_type_name(expected),
                    wire_type_name(wire_type)
                ),
            ));
            continue;
        }
        match field.kind() {
            Kind::Message(nested) => scan(&nested, value, &here, out, depth + 1),
            Kind::String if std::str::from_utf8(value).is_err() => {
                out.push(violation(
                    &here,
                    "protobuf",
                    format!("field number {number} is a `string` and is not valid UTF-8"),
                ));
            }
            _ => {}
        }
    }
}

/// Unknown field numbers in messages whose JSON Schema is closed.
fn closed_unknown(
    message: &DynamicMessage,
    path: &str,
    closed: &BTreeSet<String>,
    out: &mut Vec<FieldViolation>,
) {
    let desc = message.descriptor();
    if closed.contains(desc.full_name()) {
        for unknown in message.unknown_fields() {
            out.push(violation(
                path,
                "additionalProperties",
                format!(
                    "field number {} is not a field of {}, which is closed like its JSON Schema \
                     (`additionalProperties: false`): an unknown member could change what the \
                     others mean",
                    unknown.number(),
                    desc.full_name()
                ),
            ));
        }
    }
    for (field, value) in message.fields() {
        let here = join(path, field.name());
        match value {
            ProtoValue::Message(nested) => closed_unknown(nested, &here, closed, out),
            ProtoValue::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let ProtoValue::Message(nested) = item {
                        closed_unknown(nested, &format!("{here}[{i}]"), closed, out);
                    }
                }
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------
// Loading: compiling the .proto files and checking them against their JSON Schemas.

/// A version's `.proto`, loaded: what the registry attaches to the version.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) event_type: String,
    pub(crate) version: u32,
    pub(crate) proto: ProtoVersion,
}

/// The `.proto` files, served to `protox` by their path under `schemas/`.
struct Sources(Arc<BTreeMap<String, String>>);

impl FileResolver for Sources {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match self.0.get(name) {
            Some(text) => File::from_source(name, text),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

/// The message name for an event type: `user.profile_updated` → `UserProfileUpdated` (the
/// Rust struct's name without its version suffix).
pub fn message_name(event_type: &str) -> String {
    event_type
        .split(['.', '_'])
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

/// The package of a type's version: `ovasabi.events.<type>.v<N>`.
pub fn package_name(event_type: &str, version: u32) -> String {
    format!("ovasabi.events.{event_type}.v{version}")
}

/// Compiles the `.proto` files (`(path under schemas/, text)`) against the JSON side of
/// `registry`, already loaded: each `<type>/v<N>.proto` must sit beside `<type>/v<N>.json`
/// (`json_versions` lists the JSON version files found, loaded or not) and mirror it, each
/// `_defs/<name>.proto` beside `_defs/<name>.json`. Reports every problem, naming the file.
pub(crate) fn load(
    files: BTreeMap<String, String>,
    registry: &Registry,
    json_versions: &BTreeSet<String>,
) -> (Vec<Loaded>, Vec<LoadError>) {
    let sources = Arc::new(files);
    let mut loaded = Vec::new();
    let mut errors = Vec::new();
    for path in sources.keys() {
        let fail = |reason: String| LoadError {
            file: path.clone(),
            reason,
        };
        let Some((dir, file)) = path.split_once('/').filter(|(_, f)| !f.contains('/')) else {
            errors.push(fail(
                "expected `<event.type>/v<N>.proto` or `_defs/<name>.proto` (see \
                 schemas/README.md, \"Protobuf\")"
                    .to_owned(),
            ));
            continue;
        };
        let compiled = match compile(&sources, path) {
            Ok(file) => file,
            Err(reason) => {
                errors.push(fail(reason));
                continue;
            }
        };
        if compiled.syntax() != Syntax::Proto3 {
            errors.push(fail("must be `syntax = \"proto3\";`".to_owned()));
            continue;
        }
        if dir == "_defs" {
            let name = file.trim_end_matches(".proto");
            if !registry
                .definitions()
                .contains_key(&format!("urn:ovasabi:defs:{name}"))
            {
                errors.push(fail(format!(
                    "a shared Protobuf definition mirrors a JSON one: add _defs/{name}.json"
                )));
            }
            if compiled.package_name() != "ovasabi.defs" {
                errors.push(fail(format!(
                    "the package must be `ovasabi.defs`, found `{}`",
                    compiled.package_name()
                )));
            }
            continue;
        }
        let Some(version) = file
            .strip_prefix('v')
            .and_then(|v| v.strip_suffix(".proto"))
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|v| *v >= 1)
        else {
            errors.push(fail(
                "a version's Protobuf encoding is named `v<N>.proto`, beside `v<N>.json`"
                    .to_owned(),
            ));
            continue;
        };
        let Some(json) = registry.version(dir, version) else {
            if !json_versions.contains(&format!("{dir}/v{version}.json")) {
                errors.push(fail(format!(
                    "there is no {dir}/v{version}.json beside it: the JSON Schema is the \
                     contract and the .proto its binary encoding, add the JSON Schema first"
                )));
            }
            continue; // Otherwise the JSON Schema's own error is reported.
        };
        let package = package_name(dir, version);
        if compiled.package_name() != package {
            errors.push(fail(format!(
                "the package must be `{package}`, found `{}`",
                compiled.package_name()
            )));
            continue;
        }
        let messages: Vec<MessageDescriptor> = compiled.messages().collect();
        let name = message_name(dir);
        let [descriptor] = messages.as_slice() else {
            errors.push(fail(format!(
                "must declare exactly one top-level message, `{name}` (nested messages go \
                 inside it); found {}",
                messages.len()
            )));
            continue;
        };
        if descriptor.name() != name {
            errors.push(fail(format!(
                "the message must be named `{name}` (like the Rust struct), found `{}`",
                descriptor.name()
            )));
            continue;
        }
        let mut mirror = Mirror {
            registry,
            closed: BTreeSet::new(),
            problems: Vec::new(),
            seen: HashSet::new(),
        };
        mirror.message(descriptor, &json.schema, &json.schema, "");
        if !mirror.problems.is_empty() {
            for problem in mirror.problems {
                errors.push(fail(format!("does not mirror v{version}.json: {problem}")));
            }
            continue;
        }
        let proto = ProtoVersion {
            descriptor: descriptor.clone(),
            origin: path.clone(),
            closed: mirror.closed,
        };
        for (i, example) in json.examples().iter().enumerate() {
            let trip = proto
                .encode(example)
                .and_then(|bytes| proto.decode(&bytes).map_err(|v| describe_violations(&v)))
                .and_then(|data| json.validate(dir, &data).map_err(|e| e.to_string()));
            if let Err(e) = trip {
                errors.push(fail(format!(
                    "example {i} of v{version}.json does not survive Protobuf: {e}"
                )));
            }
        }
        loaded.push(Loaded {
            event_type: dir.to_owned(),
            version,
            proto,
        });
    }
    (loaded, errors)
}

fn describe_violations(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("field `{}` breaks `{}`: {}", v.field, v.rule, v.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Compiles one file (and what it imports: other files of `sources`, Google's well-known
/// types).
fn compile(
    sources: &Arc<BTreeMap<String, String>>,
    path: &str,
) -> Result<prost_reflect::FileDescriptor, String> {
    let mut resolver = ChainFileResolver::new();
    resolver.add(Sources(sources.clone()));
    resolver.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_imports(true);
    if let Err(e) = compiler.open_file(path) {
        return Err(describe_compile_error(&e, sources, path));
    }
    compiler
        .descriptor_pool()
        .get_file_by_name(path)
        .ok_or_else(|| "compiled, but not found in its own descriptor pool".to_owned())
}

/// A compiler error with its line and column, and the file when it is an imported one.
fn describe_compile_error(
    error: &protox::Error,
    sources: &BTreeMap<String, String>,
    path: &str,
) -> String {
    let file = error.file().unwrap_or(path);
    let offset = error
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|label| label.offset());
    let place = match (offset, sources.get(file)) {
        (Some(offset), Some(text)) => {
            let before = &text[..offset.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: ")
        }
        _ => String::new(),
    };
    let place = if file == path {
        place
    } else {
        format!("in {file}, {place}")
    };
    format!("not valid Protobuf: {place}{error}")
}

/// Checks that a message mirrors a JSON Schema object, property by property.
struct Mirror<'a> {
    registry: &'a Registry,
    closed: BTreeSet<String>,
    problems: Vec<String>,
    seen: HashSet<String>,
}

impl Mirror<'_> {
    /// Follows `$ref`s (`#/…` in `doc`, or a shared definition's `$id`): the document the
    /// schema now lives in, and the schema.
    fn deref(&self, doc: &Value, schema: &Value) -> Result<(Value, Value), String> {
        let (mut doc, mut schema) = (doc.clone(), schema.clone());
        for _ in 0..16 {
            let Some(reference) = schema.get("$ref").and_then(Value::as_str) else {
                return Ok((doc, schema));
            };
            let reference = reference.to_owned();
            if let Some(pointer) = reference.strip_prefix('#') {
                schema = doc
                    .pointer(pointer)
                    .cloned()
                    .ok_or_else(|| format!("`$ref` `{reference}` does not resolve"))?;
            } else {
                let base = reference.split('#').next().unwrap_or_default();
                doc = self
                    .registry
                    .definitions()
                    .get(base)
                    .cloned()
                    .ok_or_else(|| format!("`$ref` `{reference}` does not resolve"))?;
                schema = self
                    .registry
                    .resolve(&reference)
                    .ok_or_else(|| format!("`$ref` `{reference}` does not resolve"))?;
            }
        }
        Err("`$ref`s nest more than 16 deep".to_owned())
    }

    fn message(&mut self, desc: &MessageDescriptor, doc: &Value, schema: &Value, path: &str) {
        let here = if path.is_empty() { "(payload)" } else { path };
        let (doc, schema) = match self.deref(doc, schema) {
            Ok(pair) => pair,
            Err(e) => {
                self.problems.push(format!("`{here}`: {e}"));
                return;
            }
        };
        if schema.get("type").and_then(Value::as_str) != Some("object") {
            self.problems.push(format!(
                "`{here}` is the message {} but its JSON Schema is not `type: object`",
                desc.full_name()
            ));
            return;
        }
        if schema.get("additionalProperties") == Some(&Value::Bool(false)) {
            self.closed.insert(desc.full_name().to_owned());
        }
        if !self.seen.insert(desc.full_name().to_owned()) {
            return; // Checked already (and recursion stops here).
        }
        let empty = serde_json::Map::new();
        let properties = schema
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let required: BTreeSet<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|names| names.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for field in desc.fields() {
            let name = field.name();
            let at = join(path, name);
            let Some(property) = properties.get(name) else {
                self.problems.push(format!(
                    "`{at}` (field number {}) is not a property of the JSON Schema: the \
                     fields are exactly the properties, with the same names",
                    field.number()
                ));
                continue;
            };
            self.field(&field, &doc, property, &at, required.contains(name));
        }
        for name in properties.keys() {
            if desc.get_field_by_name(name).is_none() {
                self.problems.push(format!(
                    "property `{}` has no field in the message {}: the same data must be \
                     representable in both encodings",
                    join(path, name),
                    desc.full_name()
                ));
            }
        }
    }

    fn field(
        &mut self,
        field: &FieldDescriptor,
        doc: &Value,
        property: &Value,
        at: &str,
        required: bool,
    ) {
        let (doc, property) = match self.deref(doc, property) {
            Ok(pair) => pair,
            Err(e) => {
                self.problems.push(format!("`{at}`: {e}"));
                return;
            }
        };
        if field.is_map() {
            self.problems.push(format!(
                "`{at}` is a `map`: these schemas use `repeated` messages"
            ));
            return;
        }
        let is_array = property.get("type").and_then(Value::as_str) == Some("array");
        if is_array != field.is_list() {
            self.problems.push(format!(
                "`{at}` is {} in the JSON Schema but {} in the .proto",
                if is_array { "an array" } else { "not an array" },
                if field.is_list() {
                    "`repeated`"
                } else {
                    "not `repeated`"
                }
            ));
            return;
        }
        let optional = field.field_descriptor_proto().proto3_optional();
        if !is_array && optional == required {
            self.problems.push(if required {
                format!(
                    "`{at}` is required by the JSON Schema: declare it without `optional` (a \
                     field is `optional` in the .proto exactly when the JSON Schema does not \
                     require it)"
                )
            } else {
                format!(
                    "`{at}` is optional in the JSON Schema: declare it `optional`, or its \
                     absence could not be told from its zero value"
                )
            });
        }
        let (doc, element, at) = if is_array {
            let Some(items) = property.get("items") else {
                self.problems
                    .push(format!("`{at}` is an array without `items`"));
                return;
            };
            match self.deref(&doc, items) {
                Ok((d, e)) => (d, e, format!("{at}[]")),
                Err(e) => {
                    self.problems.push(format!("`{at}[]`: {e}"));
                    return;
                }
            }
        } else {
            (doc, property, at.to_owned())
        };
        let json_type = element
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("(none)");
        let kind = field.kind();
        let fits = match &kind {
            Kind::Message(m) if m.full_name() == "google.protobuf.Timestamp" => {
                json_type == "string"
                    && element.get("format").and_then(Value::as_str) == Some("date-time")
            }
            Kind::Message(m) => {
                if json_type == "object" {
                    self.message(m, &doc, &element, &at);
                }
                json_type == "object"
            }
            Kind::String => json_type == "string",
            Kind::Bool => json_type == "boolean",
            Kind::Double | Kind::Float => json_type == "number",
            Kind::Bytes | Kind::Enum(_) => false,
            _ => json_type == "integer",
        };
        if !fits {
            self.problems.push(format!(
                "`{at}` is `{}` in the .proto but `{json_type}`{} in the JSON Schema (strings \
                 are `string`, `date-time` strings `google.protobuf.Timestamp` or `string`, \
                 integers an integer type, booleans `bool`, objects messages, arrays \
                 `repeated`)",
                type_name(&kind),
                element
                    .get("format")
                    .and_then(Value::as_str)
                    .map(|f| format!(" (format `{f}`)"))
                    .unwrap_or_default()
            ));
            return;
        }
        if required && !is_array && kind == Kind::String && accepts_empty_string(&element) {
            self.problems.push(format!(
                "`{at}` is a required `string` whose JSON Schema accepts \"\": a Protobuf event \
                 without it would read as \"\" and pass; give the property a `minLength`, \
                 `pattern`, `format` or `enum` that rejects \"\""
            ));
        }
    }
}

fn accepts_empty_string(schema: &Value) -> bool {
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(schema)
        .is_ok_and(|validator| validator.is_valid(&Value::String(String::new())))
}

// ---------------------------------------------------------------------------------------
// Compatibility: the wire rules.

/// A rule of Protobuf wire compatibility between versions (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WireRule {
    /// A field number names another field now, or a reserved number is used again.
    FieldNumberReused,
    /// A field's type changed.
    FieldTypeChanged,
    /// A field was removed (or a reservation dropped) without its number being `reserved`.
    RemovedFieldNotReserved,
    /// A field went between `optional`, plain, `repeated` and `map`.
    CardinalityChanged,
}

impl WireRule {
    /// The stable code reported by `ovasabi schema check`.
    pub fn code(&self) -> &'static str {
        match self {
            WireRule::FieldNumberReused => "proto_field_number_reused",
            WireRule::FieldTypeChanged => "proto_field_type_changed",
            WireRule::RemovedFieldNotReserved => "proto_removed_field_not_reserved",
            WireRule::CardinalityChanged => "proto_cardinality_changed",
        }
    }
}

/// One break of the wire rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireBreak {
    /// The field, as a path (`items[].sku`); `(payload)` for the message itself.
    pub field: String,
    /// Its field number.
    pub number: u32,
    /// The rule broken.
    pub rule: WireRule,
    /// What changed, and what to do.
    pub detail: String,
}

/// The wire rules from `earlier` (a previous or released version's message) to `candidate`,
/// nested messages included.
pub fn wire_check(earlier: &MessageDescriptor, candidate: &MessageDescriptor) -> Vec<WireBreak> {
    let mut out = Vec::new();
    compare(earlier, candidate, "", &mut HashSet::new(), &mut out);
    out
}

fn reserved(desc: &MessageDescriptor) -> Vec<Range<u32>> {
    desc.reserved_ranges().collect()
}

fn is_reserved(ranges: &[Range<u32>], number: u32) -> bool {
    ranges.iter().any(|r| r.contains(&number))
}

/// The first number of `range` that `ranges` do not cover.
fn first_uncovered(range: &Range<u32>, ranges: &[Range<u32>]) -> Option<u32> {
    let mut next = range.start;
    while next < range.end {
        match ranges.iter().find(|r| r.contains(&next)) {
            Some(r) => next = r.end,
            None => return Some(next),
        }
    }
    None
}

fn cardinality(field: &FieldDescriptor) -> &'static str {
    if field.is_map() {
        "a `map`"
    } else if field.is_list() {
        "`repeated`"
    } else if matches!(field.kind(), Kind::Message(_)) {
        "a singular"
    } else if field.supports_presence() {
        "`optional`"
    } else {
        "a plain (no presence)"
    }
}

fn type_name(kind: &Kind) -> String {
    match kind {
        Kind::Message(m) => m.full_name().to_owned(),
        Kind::Enum(e) => e.full_name().to_owned(),
        Kind::Double => "double".to_owned(),
        Kind::Float => "float".to_owned(),
        Kind::Int32 => "int32".to_owned(),
        Kind::Int64 => "int64".to_owned(),
        Kind::Uint32 => "uint32".to_owned(),
        Kind::Uint64 => "uint64".to_owned(),
        Kind::Sint32 => "sint32".to_owned(),
        Kind::Sint64 => "sint64".to_owned(),
        Kind::Fixed32 => "fixed32".to_owned(),
        Kind::Fixed64 => "fixed64".to_owned(),
        Kind::Sfixed32 => "sfixed32".to_owned(),
        Kind::Sfixed64 => "sfixed64".to_owned(),
        Kind::Bool => "bool".to_owned(),
        Kind::String => "string".to_owned(),
        Kind::Bytes => "bytes".to_owned(),
    }
}

/// Messages and enums of the events are compared field by field (their full names differ
/// between versions, by the package); well-known types by name.
fn same_named_type(a: &Kind, b: &Kind) -> Option<bool> {
    match (a, b) {
        (Kind::Message(x), Kind::Message(y))
            if !x.full_name().starts_with("google.protobuf.")
                && !y.full_name().starts_with("google.protobuf.") =>
        {
            None
        }
        (Kind::Enum(x), Kind::Enum(y)) => Some(x.name() == y.name()),
        _ => Some(type_name(a) == type_name(b)),
    }
}

fn compare(
    earlier: &MessageDescriptor,
    candidate: &MessageDescriptor,
    path: &str,
    seen: &mut HashSet<(String, String)>,
    out: &mut Vec<WireBreak>,
) {
    if !seen.insert((
        earlier.full_name().to_owned(),
        candidate.full_name().to_owned(),
    )) {
        return;
    }
    let earlier_reserved = reserved(earlier);
    let candidate_reserved = reserved(candidate);
    let mut push = |field: String, number: u32, rule: WireRule, detail: String| {
        out.push(WireBreak {
            field: if field.is_empty() {
                "(payload)".to_owned()
            } else {
                field
            },
            number,
            rule,
            detail,
        });
    };
    let mut nested = Vec::new();
    for old in earlier.fields() {
        let number = old.number();
        let at = join(path, old.name());
        let Some(new) = candidate.get_field(number) else {
            if !is_reserved(&candidate_reserved, number) {
                push(
                    at,
                    number,
                    WireRule::RemovedFieldNotReserved,
                    format!(
                        "the field was removed but its number is not reserved: a later version \
                         could reuse {number} and readers would decode the events already \
                         written under the wrong meaning; add `reserved {number};` and \
                         `reserved \"{}\";`",
                        old.name()
                    ),
                );
            }
            continue;
        };
        if old.name() != new.name() {
            push(
                join(path, new.name()),
                number,
                WireRule::FieldNumberReused,
                format!(
                    "number {number} was `{}` and is now `{}`: each version's readers would \
                     decode the other's value under the wrong name; give `{}` a new number and \
                     reserve {number} (and the name `{}`)",
                    old.name(),
                    new.name(),
                    new.name(),
                    old.name()
                ),
            );
            continue;
        }
        let (old_kind, new_kind) = (old.kind(), new.kind());
        let same_type = same_named_type(&old_kind, &new_kind);
        if same_type == Some(false) {
            push(
                at,
                number,
                WireRule::FieldTypeChanged,
                format!(
                    "its type changed from `{}` to `{}`: events already written would be \
                     misread or refused; add a new field with a new number instead",
                    type_name(&old_kind),
                    type_name(&new_kind)
                ),
            );
            continue;
        }
        let (was, is) = (cardinality(&old), cardinality(&new));
        if was != is {
            push(
                at,
                number,
                WireRule::CardinalityChanged,
                format!(
                    "was {was} field and is now {is} one: readers of either version mistake \
                     absent for zero, or keep one element of a list; add a new field instead"
                ),
            );
            continue;
        }
        if let (None, Kind::Message(a), Kind::Message(b)) = (same_type, old_kind, new_kind) {
            let at = if old.is_list() { format!("{at}[]") } else { at };
            nested.push((a, b, at));
        }
    }
    for new in candidate.fields() {
        let number = new.number();
        if earlier.get_field(number).is_none() && is_reserved(&earlier_reserved, number) {
            push(
                join(path, new.name()),
                number,
                WireRule::FieldNumberReused,
                format!(
                    "number {number} was reserved (a removed field's) and is used again by \
                     `{}`: events written with the removed field would be read as this one; \
                     pick a new number",
                    new.name()
                ),
            );
        }
    }
    for range in &earlier_reserved {
        if let Some(number) = first_uncovered(range, &candidate_reserved) {
            if candidate.get_field(number).is_none() {
                push(
                    path.to_owned(),
                    number,
                    WireRule::RemovedFieldNotReserved,
                    format!(
                        "number {number} was reserved (a removed field's) and no longer is: a \
                         later version could reuse it; keep every `reserved` line"
                    ),
                );
            }
        }
    }
    for (a, b, at) in nested {
        compare(&a, &b, &at, seen, out);
    }
}
