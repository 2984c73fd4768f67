//! The registry as an [AsyncAPI 3.0.0](https://www.asyncapi.com/docs/reference/specification/v3.0.0)
//! document: what `/asyncapi.yaml` serves and what AsyncAPI tools (Studio, generators, the
//! official parser) read.
//!
//! | AsyncAPI | from the registry |
//! |---|---|
//! | `channels.<topic>` | one per topic (`address` = the topic), its messages: every version of every type published on it |
//! | `channels.<topic>.dlq` | the topic's dead letters: the same messages, with the `ce-deadletter*` headers |
//! | `operations.<service>.send.<topic>` | a producer (`producers` in `type.json`) and the messages it publishes there |
//! | `operations.<service>.receive.<topic>` | a consumer (`consumers`) and the messages it reads there |
//! | `components.messages.<type>.v<N>` | one per type and version: payload, headers, examples, correlation id |
//! | `components.schemas.<type>.v<N>` | the version's payload schema |
//! | `components.schemas.<type>.v<N>.<def>` | its local definitions (`$defs`) |
//! | `components.schemas.defs.<name>` | the shared definitions (`urn:ovasabi:defs:<name>`) |
//! | `components.schemas.cloudevents.headers` | the CloudEvents binary-mode `ce-*` headers |
//!
//! # Schema format
//!
//! Payloads are written in AsyncAPI's default schema format, the AsyncAPI Schema Object
//! (`application/vnd.aai.asyncapi+json;version=3.0.0`, a superset of JSON Schema draft-07),
//! as plain schemas without a `schemaFormat` wrapper. Our schemas are draft 2020-12, which
//! no AsyncAPI parser understands (the official one knows the AsyncAPI format and draft-07
//! and reports anything else as an unknown format), so each is translated, keyword by
//! keyword, to its draft-07 equivalent:
//!
//! - `$defs` are moved to `components.schemas` and every `$ref` is rewritten to
//!   `#/components/schemas/…`: local ones (`#/$defs/address`) and shared ones
//!   (`urn:ovasabi:defs:money`) alike, since a parser resolves `$ref`s against the AsyncAPI
//!   document, and would try to fetch a URN;
//! - a `$ref` with sibling keywords (`{"$ref": …, "description": …}`, which 2020-12 applies
//!   together and draft-07 ignores) becomes `{"allOf": [{"$ref": …}], "description": …}`;
//! - `prefixItems` becomes `items` (an array) with `items` as `additionalItems`;
//!   `dependentRequired` and `dependentSchemas` become `dependencies`;
//! - `$schema`, `$id`, `$anchor`, `$dynamicAnchor`, `$vocabulary` are dropped (the `$id`
//!   stays on the message as `x-ovasabi-dataschema`); `$dynamicRef` is read as `$ref`;
//! - keywords draft-07 lacks (`unevaluatedProperties`, `minContains`…) are kept: draft-07
//!   tools ignore them, 2020-12 tools still see them.
//!
//! The same schemas thus stay one source of truth; the registry (draft 2020-12) remains the
//! authority that validates events.
//!
//! ```
//! use ovasabi_schema::{asyncapi, Registry};
//!
//! let registry = Registry::builtin().expect("the compiled-in schemas load");
//! let doc = asyncapi::document(&registry);
//! assert_eq!(doc["asyncapi"], "3.0.0");
//! let yaml = asyncapi::to_yaml(&doc);
//! assert!(yaml.starts_with("asyncapi: \"3.0.0\"\n"));
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde_json::{json, Map, Value};

use crate::registry::{schema_uri, EventSchema, Registry, Version};

/// The AsyncAPI version of the document.
pub const ASYNCAPI_VERSION: &str = "3.0.0";

/// The schema format of every schema in the document: AsyncAPI's default (the AsyncAPI
/// Schema Object, a superset of JSON Schema draft-07). Schemas carry no `schemaFormat`, so
/// this is implied; it is named here for readers and tools.
pub const SCHEMA_FORMAT: &str = "application/vnd.aai.asyncapi+json;version=3.0.0";

/// The name, under `components.schemas`, of the CloudEvents headers schema.
pub const HEADERS_SCHEMA: &str = "cloudevents.headers";

/// The name, under `components.correlationIds`, of the correlation id (`ce-correlationid`).
pub const CORRELATION_ID: &str = "correlationid";

/// The suffix of dead-letter topics (`ovasabi_core::naming::DEAD_LETTER_SUFFIX`).
const DLQ_SUFFIX: &str = ".dlq";

/// The id of a type's version as a message (under `components.messages` and in channels)
/// and as a payload schema (under `components.schemas`): `user.registered.v2`.
pub fn message_id(event_type: &str, version: u32) -> String {
    format!("{event_type}.v{version}")
}

/// The name, under `components.schemas`, of a shared definition: `urn:ovasabi:defs:money`
/// → `defs.money` (characters AsyncAPI refuses in a name become `_`; should that make two
/// names equal, later ones get `_2`, `_3`…).
pub fn definition_name(id: &str) -> String {
    let name = id.strip_prefix("urn:ovasabi:defs:").unwrap_or(id);
    format!("defs.{}", sanitize(name))
}

/// A component name AsyncAPI accepts (`^[\w\d.\-_]+$`).
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The AsyncAPI 3.0.0 document describing every topic, event type and version of
/// `registry`, and which service publishes and consumes what. Deterministic: the same
/// registry gives the same document, keys in a stable order.
pub fn document(registry: &Registry) -> Value {
    let plan = Plan::new(registry);
    let mut schemas = Map::new();
    schemas.insert(HEADERS_SCHEMA.to_owned(), headers_schema());
    for (id, definition) in registry.definitions() {
        plan.convert_document(&plan.definition_names[id], definition, &mut schemas);
    }
    let mut messages = Map::new();
    // topic → message ids; (service, action, topic) → message ids.
    let mut topics: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut operations: BTreeMap<(&str, &str, &str), Vec<String>> = BTreeMap::new();
    for ty in registry.types() {
        let meta = &ty.meta;
        for version in ty.versions.values() {
            let id = message_id(&meta.event_type, version.version);
            plan.convert_document(&id, &version.schema, &mut schemas);
            messages.insert(id.clone(), message(ty, version));
            topics.entry(&meta.topic).or_default().push(id.clone());
            for producer in &meta.producers {
                operations
                    .entry((producer, "send", &meta.topic))
                    .or_default()
                    .push(id.clone());
            }
            for consumer in &meta.consumers {
                operations
                    .entry((consumer, "receive", &meta.topic))
                    .or_default()
                    .push(id.clone());
            }
        }
    }

    let mut channels = Map::new();
    for (topic, ids) in &topics {
        let refs: Map<String, Value> = ids
            .iter()
            .map(|id| {
                (
                    id.clone(),
                    json!({ "$ref": format!("#/components/messages/{id}") }),
                )
            })
            .collect();
        let types: BTreeSet<&str> = registry
            .types()
            .filter(|t| t.meta.topic == *topic)
            .map(|t| t.meta.event_type.as_str())
            .collect();
        let list = types
            .iter()
            .map(|t| format!("`{t}`"))
            .collect::<Vec<_>>()
            .join(", ");
        channels.insert(
            (*topic).to_owned(),
            json!({
                "address": topic,
                "title": topic,
                "summary": format!("The events of `{topic}`: {list}."),
                "description": format!(
                    "One topic per domain (docs/naming.md). Every version of each type is a \
                     message of its own, told apart by the `ce-type` and `ce-dataschema` \
                     headers. Events of one `partitionkey` are delivered in order within a \
                     consumer group; what a group cannot process moves to `{topic}{DLQ_SUFFIX}`."
                ),
                "messages": refs,
            }),
        );
        let dlq = format!("{topic}{DLQ_SUFFIX}");
        channels.insert(
            dlq.clone(),
            json!({
                "address": dlq,
                "title": dlq,
                "summary": format!("Dead letters of `{topic}`: events a consumer group could not process."),
                "description": format!(
                    "An event whose handler failed permanently, or ran out of deliveries or \
                     retries, is moved here unchanged (type, data, `ce-dataschema`), with \
                     `ce-deadletterreason`, `ce-deadlettererror`, `ce-deadletterattempts`, \
                     `ce-deadlettergroup`, `ce-deadlettertopic` (`{topic}`) and \
                     `ce-deadletteroffset` added. Nothing reads it automatically: it is for \
                     people to inspect and replay."
                ),
                "messages": refs,
            }),
        );
    }

    let mut ops = Map::new();
    for ((service, action, topic), ids) in &operations {
        let verb = if *action == "send" {
            "publishes"
        } else {
            "consumes"
        };
        let names: BTreeSet<&str> = ids
            .iter()
            .map(|id| id.rsplit_once(".v").map_or(id.as_str(), |(t, _)| t))
            .collect();
        let names = names
            .iter()
            .map(|t| format!("`{t}`"))
            .collect::<Vec<_>>()
            .join(", ");
        ops.insert(
            format!("{}.{action}.{topic}", sanitize(service)),
            json!({
                "action": action,
                "channel": { "$ref": format!("#/channels/{topic}") },
                "title": format!("{service} {verb} on {topic}"),
                "summary": format!("`{service}` {verb} {names} on `{topic}`."),
                "messages": ids
                    .iter()
                    .map(|id| json!({ "$ref": format!("#/channels/{topic}/messages/{id}") }))
                    .collect::<Vec<_>>(),
            }),
        );
    }

    let mut correlation_ids = Map::new();
    correlation_ids.insert(
        CORRELATION_ID.to_owned(),
        json!({
            "description": "The business flow the event belongs to: every event of one flow \
                            (an order from placement to shipping) carries the same id, copied \
                            from the event that caused it.",
            "location": "$message.header#/ce-correlationid",
        }),
    );

    json!({
        "asyncapi": ASYNCAPI_VERSION,
        "id": "urn:ovasabi:events",
        "info": {
            "title": "OVASABI events",
            "version": env!("CARGO_PKG_VERSION"),
            "description": info_description(registry, &topics),
            "license": {
                "name": "Apache-2.0",
                "url": "https://www.apache.org/licenses/LICENSE-2.0",
            },
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": ops,
        "components": {
            "schemas": schemas,
            "messages": messages,
            "correlationIds": correlation_ids,
        },
    })
}

fn info_description(registry: &Registry, topics: &BTreeMap<&str, Vec<String>>) -> String {
    let mut text = String::from(
        "The events OVASABI's services publish and consume, as CloudEvents 1.0 in binary \
         content mode: the attributes in `ce-*` headers (`ce_*` on Kafka), the JSON data as \
         the message body.\n\n\
         Each event type has numbered versions; an event names the schema of its data in \
         `ce-dataschema` (`urn:ovasabi:schema:<type>:<version>`). Every version is a message \
         here (`<type>.v<version>`); consumers may receive any registered version. Payload \
         schemas are the registry's draft 2020-12 schemas, translated to AsyncAPI's schema \
         format (a superset of draft-07).\n\n",
    );
    let _ = writeln!(
        text,
        "{} event types on {} topics:\n",
        registry.types().count(),
        topics.len()
    );
    for topic in topics.keys() {
        let types: Vec<String> = registry
            .types()
            .filter(|t| t.meta.topic == *topic)
            .map(|t| format!("`{}`", t.meta.event_type))
            .collect();
        let _ = writeln!(text, "- `{topic}`: {}", types.join(", "));
    }
    text
}

/// The message of one type's version.
fn message(ty: &EventSchema, version: &Version) -> Value {
    let meta = &ty.meta;
    let id = message_id(&meta.event_type, version.version);
    let uri = schema_uri(&meta.event_type, version.version);
    let latest = ty.latest().version;
    let mut description = String::new();
    if let Some(text) = version.schema.get("description").and_then(Value::as_str) {
        let _ = write!(description, "{text}\n\n");
    }
    let _ = write!(
        description,
        "Version {} of `{}` (`ce-dataschema: {uri}`)",
        version.version, meta.event_type
    );
    if version.version == latest {
        description.push_str(", the latest.");
    } else {
        let _ = write!(description, "; the latest is v{latest}.");
    }
    if let Some(changes) = version.changes() {
        let _ = write!(description, "\n\nChanges: {changes}");
    }
    let _ = write!(
        description,
        "\n\nCompatibility between versions: {}.",
        meta.compatibility
    );
    let list = |names: &[String]| {
        if names.is_empty() {
            "none declared".to_owned()
        } else {
            names
                .iter()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let _ = write!(
        description,
        " Producers: {}. Consumers: {}.",
        list(&meta.producers),
        list(&meta.consumers)
    );

    // The type and version each message stands for, on top of the common headers. The
    // latest version may come without `ce-dataschema` (it is then assumed); older ones
    // always name theirs.
    let mut required = vec!["ce-type"];
    if version.version != latest {
        required.push("ce-dataschema");
    }
    let headers = json!({
        "type": "object",
        "allOf": [
            { "$ref": format!("#/components/schemas/{HEADERS_SCHEMA}") },
            {
                "type": "object",
                "properties": {
                    "ce-type": { "type": "string", "const": meta.event_type },
                    "ce-dataschema": { "type": "string", "const": uri },
                },
                "required": required,
            },
        ],
    });
    let source = meta
        .producers
        .first()
        .map_or("/ovasabi".to_owned(), |p| format!("/ovasabi/{p}"));
    let examples: Vec<Value> = version
        .examples()
        .iter()
        .enumerate()
        .map(|(i, payload)| {
            json!({
                "name": format!("{id}-example-{}", i + 1),
                "summary": format!("Example {} of {} v{}", i + 1, meta.event_type, version.version),
                "headers": {
                    "ce-specversion": "1.0",
                    "ce-id": format!("0193f3a0-0000-7000-8000-{:012}", i + 1),
                    "ce-source": source,
                    "ce-type": meta.event_type,
                    "ce-time": "2025-11-27T15:00:00Z",
                    "ce-dataschema": uri,
                    "ce-datacontenttype": "application/json",
                },
                "payload": payload,
            })
        })
        .collect();
    let title = version
        .schema
        .get("title")
        .and_then(Value::as_str)
        .map_or_else(
            || format!("{} v{}", meta.event_type, version.version),
            str::to_owned,
        );
    json!({
        "name": id,
        "title": title,
        "summary": meta.description,
        "description": description,
        "contentType": "application/json",
        "headers": headers,
        "payload": { "$ref": format!("#/components/schemas/{id}") },
        "correlationId": { "$ref": format!("#/components/correlationIds/{CORRELATION_ID}") },
        "tags": [ { "name": meta.topic } ],
        "examples": examples,
        "x-ovasabi-event-type": meta.event_type,
        "x-ovasabi-version": version.version,
        "x-ovasabi-dataschema": uri,
    })
}

/// The CloudEvents binary-mode headers every message carries.
fn headers_schema() -> Value {
    let s = |description: &str| json!({ "type": "string", "description": description });
    let mut properties = Map::new();
    for (name, schema) in [
        (
            "ce-specversion",
            json!({ "type": "string", "const": "1.0", "description": "The CloudEvents version." }),
        ),
        (
            "ce-id",
            json!({ "type": "string", "minLength": 1, "description": "The event's id, unique per source: a UUIDv7 by default." }),
        ),
        (
            "ce-source",
            json!({ "type": "string", "minLength": 1, "format": "uri-reference", "description": "The producing service, e.g. `/ovasabi/users`." }),
        ),
        (
            "ce-type",
            s("The event type, `<domain>.<past_tense_verb>` (`order.placed`)."),
        ),
        (
            "ce-time",
            json!({ "type": "string", "format": "date-time", "description": "When the fact happened (RFC 3339)." }),
        ),
        ("ce-subject", s("The aggregate the event is about, e.g. the user id.")),
        (
            "ce-dataschema",
            json!({ "type": "string", "format": "uri", "description": "The schema of the data: `urn:ovasabi:schema:<type>:<version>`. Set by the publisher; when absent, consumers assume the latest version." }),
        ),
        (
            "ce-datacontenttype",
            json!({ "type": "string", "description": "The data's media type, `application/json` (NATS; HTTP and Kafka carry it in `content-type`)." }),
        ),
        (
            "ce-partitionkey",
            s("The key events are ordered by within a consumer group, normally the aggregate id (CloudEvents partitioning extension)."),
        ),
        (
            "ce-sequence",
            json!({ "type": "string", "pattern": "^[0-9]+$", "description": "The event's position among its subject's events, a decimal (CloudEvents sequence extension)." }),
        ),
        (
            "ce-correlationid",
            s("The business flow the event belongs to, shared by all its events."),
        ),
        ("ce-causationid", s("The id of the event that caused this one.")),
        ("ce-traceparent", s("W3C trace context `traceparent`.")),
        ("ce-tracestate", s("W3C trace context `tracestate`.")),
        (
            "ce-deadletterreason",
            s("Dead letters only (`<topic>.dlq`): why the event was dead-lettered (`max deliveries reached`, `invalid payload`…)."),
        ),
        (
            "ce-deadlettererror",
            s("Dead letters only: the handler's last error."),
        ),
        (
            "ce-deadletterattempts",
            json!({ "type": "string", "pattern": "^[0-9]+$", "description": "Dead letters only: how many deliveries were tried." }),
        ),
        (
            "ce-deadlettergroup",
            s("Dead letters only: the consumer group that gave up."),
        ),
        (
            "ce-deadlettertopic",
            s("Dead letters only: the topic the event came from."),
        ),
        (
            "ce-deadletteroffset",
            json!({ "type": "string", "pattern": "^[0-9]+$", "description": "Dead letters only: the event's offset in that topic." }),
        ),
    ] {
        properties.insert(name.to_owned(), schema);
    }
    json!({
        "type": "object",
        "title": "CloudEvents headers",
        "description": "CloudEvents 1.0 attributes in binary content mode: one `ce-<attribute>` \
                        header each (HTTP and NATS bindings; Kafka writes `ce_<attribute>`), \
                        values percent-encoded (HTTP, NATS). Other extension attributes travel \
                        the same way.",
        "properties": properties,
        "required": ["ce-specversion", "ce-id", "ce-source", "ce-type"],
        "additionalProperties": { "type": "string" },
    })
}

/// The names every schema document and local definition gets under `components.schemas`,
/// decided before any is converted so `$ref`s can point at them.
struct Plan {
    /// Shared definition `$id` → component name.
    definition_names: BTreeMap<String, String>,
    /// Component name of a document → its local definitions: (JSON pointer in the
    /// document, component name), longest pointers first.
    hoisted: BTreeMap<String, Vec<(String, String)>>,
}

/// Keywords whose value is one subschema.
const SUBSCHEMA: &[&str] = &[
    "additionalProperties",
    "additionalItems",
    "contains",
    "propertyNames",
    "not",
    "if",
    "then",
    "else",
    "unevaluatedProperties",
    "unevaluatedItems",
    "contentSchema",
];
/// Keywords whose value is an array of subschemas.
const SUBSCHEMA_ARRAY: &[&str] = &["allOf", "anyOf", "oneOf", "prefixItems"];
/// Keywords whose value is a map of subschemas.
const SUBSCHEMA_MAP: &[&str] = &["properties", "patternProperties", "dependentSchemas"];
/// Keywords holding local definitions.
const DEFINITIONS: &[&str] = &["$defs", "definitions"];
/// Keywords with no draft-07 meaning that only identify a schema.
const DROPPED: &[&str] = &["$schema", "$id", "$anchor", "$dynamicAnchor", "$vocabulary"];

impl Plan {
    fn new(registry: &Registry) -> Self {
        let mut used: BTreeSet<String> = BTreeSet::new();
        used.insert(HEADERS_SCHEMA.to_owned());
        let mut documents: Vec<(String, &Value)> = Vec::new();
        for ty in registry.types() {
            for version in ty.versions.values() {
                let name = message_id(&ty.meta.event_type, version.version);
                used.insert(name.clone());
                documents.push((name, &version.schema));
            }
        }
        let mut definition_names = BTreeMap::new();
        for (id, definition) in registry.definitions() {
            let name = unique(&mut used, definition_name(id));
            definition_names.insert(id.clone(), name.clone());
            documents.push((name, definition));
        }
        let mut hoisted = BTreeMap::new();
        for (name, schema) in documents {
            let mut found = Vec::new();
            collect_definitions(schema, "", &name, &mut used, &mut found);
            found.sort_by_key(|(pointer, _)| std::cmp::Reverse(pointer.len()));
            hoisted.insert(name, found);
        }
        Plan {
            definition_names,
            hoisted,
        }
    }

    /// Converts the schema document `name` (a version's schema or a shared definition) and
    /// its local definitions into `out`.
    fn convert_document(&self, name: &str, schema: &Value, out: &mut Map<String, Value>) {
        out.insert(name.to_owned(), self.convert(name, schema));
        for (pointer, def_name) in &self.hoisted[name] {
            if let Some(definition) = schema.pointer(pointer) {
                out.insert(def_name.clone(), self.convert(name, definition));
            }
        }
    }

    /// One schema (of document `document`), draft 2020-12 → AsyncAPI Schema Object.
    fn convert(&self, document: &str, schema: &Value) -> Value {
        let Value::Object(object) = schema else {
            return schema.clone();
        };
        let mut out = Map::new();
        let mut dependencies = Map::new();
        let has_prefix_items = object.contains_key("prefixItems");
        for (key, value) in object {
            let key = key.as_str();
            if DROPPED.contains(&key) || DEFINITIONS.contains(&key) {
                continue;
            }
            match key {
                "$ref" | "$dynamicRef" => {
                    let reference = value.as_str().unwrap_or_default();
                    out.insert("$ref".to_owned(), json!(self.rewrite(document, reference)));
                }
                "prefixItems" => {
                    out.insert("items".to_owned(), self.convert_each(document, value));
                }
                "items" if has_prefix_items => {
                    out.insert("additionalItems".to_owned(), self.convert(document, value));
                }
                "items" if value.is_array() => {
                    // Not 2020-12, but harmless: already draft-07's tuple form.
                    out.insert("items".to_owned(), self.convert_each(document, value));
                }
                "items" => {
                    out.insert("items".to_owned(), self.convert(document, value));
                }
                "dependentRequired" | "dependencies" => {
                    if let Value::Object(map) = value {
                        for (property, dependency) in map {
                            let converted = if dependency.is_array() {
                                dependency.clone()
                            } else {
                                self.convert(document, dependency)
                            };
                            dependencies.insert(property.clone(), converted);
                        }
                    }
                }
                "dependentSchemas" => {
                    if let Value::Object(map) = value {
                        for (property, dependency) in map {
                            dependencies
                                .insert(property.clone(), self.convert(document, dependency));
                        }
                    }
                }
                _ if SUBSCHEMA.contains(&key) => {
                    out.insert(key.to_owned(), self.convert(document, value));
                }
                _ if SUBSCHEMA_ARRAY.contains(&key) => {
                    out.insert(key.to_owned(), self.convert_each(document, value));
                }
                _ if SUBSCHEMA_MAP.contains(&key) => {
                    let converted = match value {
                        Value::Object(map) => Value::Object(
                            map.iter()
                                .map(|(k, v)| (k.clone(), self.convert(document, v)))
                                .collect(),
                        ),
                        other => other.clone(),
                    };
                    out.insert(key.to_owned(), converted);
                }
                _ => {
                    out.insert(key.to_owned(), value.clone());
                }
            }
        }
        if !dependencies.is_empty() {
            out.insert("dependencies".to_owned(), Value::Object(dependencies));
        }
        // draft-07 (and a JSON Reference resolver) ignores a `$ref`'s siblings; 2020-12
        // applies both. `allOf` keeps both.
        if out.len() > 1 {
            if let Some(reference) = out.remove("$ref") {
                let mut all_of = vec![json!({ "$ref": reference })];
                if let Some(Value::Array(existing)) = out.remove("allOf") {
                    all_of.extend(existing);
                }
                out.insert("allOf".to_owned(), Value::Array(all_of));
            }
        }
        Value::Object(out)
    }

    fn convert_each(&self, document: &str, value: &Value) -> Value {
        match value {
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|item| self.convert(document, item))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// A `$ref` of document `document`, pointed into `components.schemas`. References the
    /// registry could not have loaded (anchors, other URIs) are left as they are.
    fn rewrite(&self, document: &str, reference: &str) -> String {
        let (base, fragment) = reference.split_once('#').unwrap_or((reference, ""));
        let target = if base.is_empty() {
            document
        } else if let Some(name) = self.definition_names.get(base) {
            name.as_str()
        } else {
            return reference.to_owned();
        };
        if !(fragment.is_empty() || fragment.starts_with('/')) {
            return reference.to_owned();
        }
        for (pointer, name) in &self.hoisted[target] {
            if fragment == pointer {
                return format!("#/components/schemas/{name}");
            }
            if let Some(rest) = fragment.strip_prefix(pointer.as_str()) {
                if rest.starts_with('/') {
                    return format!("#/components/schemas/{name}{}", translate_pointer(rest));
                }
            }
        }
        format!(
            "#/components/schemas/{target}{}",
            translate_pointer(fragment)
        )
    }
}

/// Reserves `name`, or `name_2`, `name_3`… if it is taken.
fn unique(used: &mut BTreeSet<String>, name: String) -> String {
    if used.insert(name.clone()) {
        return name;
    }
    let mut n = 2;
    loop {
        let candidate = format!("{name}_{n}");
        if used.insert(candidate.clone()) {
            return candidate;
        }
        n += 1;
    }
}

/// Finds the local definitions (`$defs`) of a schema document, wherever they are, and
/// names each `<document>.<definition>`.
fn collect_definitions(
    schema: &Value,
    pointer: &str,
    document: &str,
    used: &mut BTreeSet<String>,
    found: &mut Vec<(String, String)>,
) {
    let Value::Object(object) = schema else {
        return;
    };
    let escape = |token: &str| token.replace('~', "~0").replace('/', "~1");
    for (key, value) in object {
        let here = format!("{pointer}/{}", escape(key));
        if DEFINITIONS.contains(&key.as_str()) {
            if let Value::Object(map) = value {
                for (name, definition) in map {
                    let at = format!("{here}/{}", escape(name));
                    let component = unique(used, format!("{document}.{}", sanitize(name)));
                    found.push((at.clone(), component));
                    collect_definitions(definition, &at, document, used, found);
                }
            }
        } else if SUBSCHEMA.contains(&key.as_str()) || key == "items" && value.is_object() {
            collect_definitions(value, &here, document, used, found);
        } else if SUBSCHEMA_ARRAY.contains(&key.as_str()) || key == "items" {
            if let Value::Array(items) = value {
                for (i, item) in items.iter().enumerate() {
                    collect_definitions(item, &format!("{here}/{i}"), document, used, found);
                }
            }
        } else if SUBSCHEMA_MAP.contains(&key.as_str()) {
            if let Value::Object(map) = value {
                for (name, item) in map {
                    let at = format!("{here}/{}", escape(name));
                    collect_definitions(item, &at, document, used, found);
                }
            }
        }
    }
}

/// A JSON pointer into a 2020-12 schema, as a pointer into its translation.
fn translate_pointer(pointer: &str) -> String {
    let mut out = String::new();
    for token in pointer.split('/').skip(1) {
        let translated = match token {
            "prefixItems" => "items",
            "dependentSchemas" | "dependentRequired" => "dependencies",
            other => other,
        };
        out.push('/');
        out.push_str(translated);
    }
    out
}

/// The document as YAML (1.2, and 1.1-safe): block style, two-space indentation, strings
/// double-quoted unless plainly safe, so it parses back to exactly `doc`. JSON would do too
/// (JSON is YAML 1.2); this is for people reading it.
pub fn to_yaml(doc: &Value) -> String {
    let mut out = String::new();
    match doc {
        Value::Object(map) if !map.is_empty() => write_block(&mut out, doc, 0),
        Value::Array(items) if !items.is_empty() => write_block(&mut out, doc, 0),
        scalar => {
            out.push_str(&yaml_scalar(scalar));
            out.push('\n');
        }
    }
    out
}

/// Writes a non-empty mapping or sequence, each line indented by `indent`.
fn write_block(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                out.push_str(&" ".repeat(indent));
                out.push_str(&yaml_string(key));
                out.push(':');
                write_child(out, child, indent + 2, ' ');
            }
        }
        Value::Array(items) => {
            for child in items {
                out.push_str(&" ".repeat(indent));
                out.push('-');
                write_child(out, child, indent + 2, '-');
            }
        }
        scalar => {
            out.push_str(&" ".repeat(indent));
            out.push_str(&yaml_scalar(scalar));
            out.push('\n');
        }
    }
}

/// Writes the value after `key:` or `-`: a scalar on the same line; a collection on the
/// following lines (after `key:`) or starting on the same line (after `-`).
fn write_child(out: &mut String, child: &Value, indent: usize, after: char) {
    let collection = match child {
        Value::Object(map) => !map.is_empty(),
        Value::Array(items) => !items.is_empty(),
        _ => false,
    };
    if let Some(literal) = child.as_str().and_then(|s| yaml_literal(s, indent)) {
        out.push(' ');
        out.push_str(&literal);
    } else if !collection {
        out.push(' ');
        out.push_str(&yaml_scalar(child));
        out.push('\n');
    } else if after == '-' {
        let mut nested = String::new();
        write_block(&mut nested, child, indent);
        out.push(' ');
        out.push_str(&nested[indent..]);
    } else {
        out.push('\n');
        write_block(out, child, indent);
    }
}

fn yaml_scalar(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => yaml_string(s),
        Value::Array(_) => "[]".to_owned(),
        Value::Object(_) => "{}".to_owned(),
    }
}

/// A multi-line string as a literal block scalar (`|`), its lines indented by `indent`,
/// ending with a newline; `None` when it has one line, or anything a literal block cannot
/// hold as it is (control characters, a leading space, blank lines with spaces).
fn yaml_literal(s: &str, indent: usize) -> Option<String> {
    let body = s.trim_end_matches('\n');
    let trailing = s.len() - body.len();
    if !body.contains('\n')
        || body.starts_with([' ', '\t'])
        || body.chars().any(|c| c.is_control() && c != '\n')
        || body.contains('\u{feff}')
        || body
            .split('\n')
            .any(|line| !line.is_empty() && line.trim().is_empty())
    {
        return None;
    }
    let mut out = String::from(match trailing {
        0 => "|-",
        1 => "|",
        _ => "|+",
    });
    out.push('\n');
    for line in body.split('\n') {
        if !line.is_empty() {
            out.push_str(&" ".repeat(indent));
            out.push_str(line);
        }
        out.push('\n');
    }
    for _ in 1..trailing {
        out.push('\n');
    }
    Some(out)
}

/// A string as a plain scalar when nothing could read it otherwise (no indicator, no
/// space, not a boolean, null or number in YAML 1.1 or 1.2), else double-quoted with JSON
/// escapes (which are YAML escapes too).
fn yaml_string(s: &str) -> String {
    const RESERVED: &[&str] = &[
        "true", "false", "yes", "no", "on", "off", "y", "n", "null", "~",
    ];
    let plain = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '.' | '-' | '/'))
        && !RESERVED.contains(&s.to_ascii_lowercase().as_str())
        && !s.starts_with(".inf")
        && !s.to_ascii_lowercase().starts_with("nan");
    if plain {
        s.to_owned()
    } else {
        Value::String(s.to_owned()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(files: &[(&str, Value)]) -> Registry {
        Registry::from_files(
            files
                .iter()
                .map(|(path, value)| ((*path).to_owned(), value.to_string())),
        )
        .expect("the test schemas load")
    }

    fn sample() -> Registry {
        registry(&[
            (
                "_defs/money.json",
                json!({
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "$id": "urn:ovasabi:defs:money",
                    "type": "object",
                    "properties": {
                        "amount_minor": { "type": "integer" },
                        "currency": { "$ref": "#/$defs/currency" },
                    },
                    "required": ["amount_minor", "currency"],
                    "$defs": { "currency": { "type": "string", "pattern": "^[A-Z]{3}$" } },
                }),
            ),
            (
                "order.placed/type.json",
                json!({
                    "type": "order.placed", "topic": "commerce.events",
                    "description": "A customer placed an order.",
                    "producers": ["commerce"], "consumers": ["fraud", "audit"],
                }),
            ),
            (
                "order.placed/v1.json",
                json!({
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "$id": "urn:ovasabi:schema:order.placed:1",
                    "type": "object",
                    "properties": {
                        "total": { "$ref": "urn:ovasabi:defs:money", "description": "To pay." },
                        "currency": { "$ref": "urn:ovasabi:defs:money#/$defs/currency" },
                        "lines": { "type": "array", "items": { "$ref": "#/$defs/line" } },
                        "pair": { "type": "array", "prefixItems": [{ "type": "string" }], "items": false },
                        "street": { "$ref": "#/$defs/address/properties/street" },
                    },
                    "dependentRequired": { "total": ["lines"] },
                    "required": ["total"],
                    "$defs": {
                        "line": { "type": "object", "properties": { "sku": { "type": "string" } } },
                        "address": { "type": "object", "properties": { "street": { "type": "string" } } },
                    },
                    "examples": [{ "total": { "amount_minor": 5, "currency": "USD" }, "lines": [] }],
                }),
            ),
        ])
    }

    #[test]
    fn definitions_move_to_components_and_refs_follow() {
        let doc = document(&sample());
        let schemas = &doc["components"]["schemas"];
        let payload = &schemas["order.placed.v1"];
        assert_eq!(payload.get("$id"), None);
        assert_eq!(payload.get("$defs"), None);
        assert_eq!(
            payload["properties"]["total"],
            json!({ "allOf": [{ "$ref": "#/components/schemas/defs.money" }], "description": "To pay." })
        );
        assert_eq!(
            payload["properties"]["currency"],
            json!({ "$ref": "#/components/schemas/defs.money.currency" })
        );
        assert_eq!(
            payload["properties"]["lines"]["items"],
            json!({ "$ref": "#/components/schemas/order.placed.v1.line" })
        );
        assert_eq!(
            payload["properties"]["street"],
            json!({ "$ref": "#/components/schemas/order.placed.v1.address/properties/street" })
        );
        assert_eq!(
            payload["properties"]["pair"],
            json!({ "type": "array", "items": [{ "type": "string" }], "additionalItems": false })
        );
        assert_eq!(payload["dependencies"], json!({ "total": ["lines"] }));
        assert_eq!(
            schemas["defs.money"]["properties"]["currency"],
            json!({ "$ref": "#/components/schemas/defs.money.currency" })
        );
        assert_eq!(schemas["defs.money.currency"]["pattern"], "^[A-Z]{3}$");
        assert_eq!(schemas["order.placed.v1.line"]["type"], "object");
    }

    #[test]
    fn every_reference_points_inside_the_document() {
        fn walk(doc: &Value, value: &Value) {
            match value {
                Value::Object(map) => {
                    if let Some(Value::String(r)) = map.get("$ref") {
                        let pointer = r.strip_prefix('#').expect("a local reference");
                        assert!(doc.pointer(pointer).is_some(), "{r} resolves");
                    }
                    map.values().for_each(|v| walk(doc, v));
                }
                Value::Array(items) => items.iter().for_each(|v| walk(doc, v)),
                _ => {}
            }
        }
        let doc = document(&sample());
        walk(&doc, &doc);
    }

    #[test]
    fn channels_operations_and_messages() {
        let doc = document(&sample());
        assert_eq!(
            doc["channels"]["commerce.events"]["address"],
            "commerce.events"
        );
        assert_eq!(
            doc["channels"]["commerce.events.dlq"]["messages"]["order.placed.v1"]["$ref"],
            "#/components/messages/order.placed.v1"
        );
        let send = &doc["operations"]["commerce.send.commerce.events"];
        assert_eq!(send["action"], "send");
        assert_eq!(send["channel"]["$ref"], "#/channels/commerce.events");
        assert_eq!(
            send["messages"][0]["$ref"],
            "#/channels/commerce.events/messages/order.placed.v1"
        );
        assert_eq!(
            doc["operations"]["fraud.receive.commerce.events"]["action"],
            "receive"
        );
        let message = &doc["components"]["messages"]["order.placed.v1"];
        assert_eq!(message["name"], "order.placed.v1");
        assert_eq!(
            message["x-ovasabi-dataschema"],
            "urn:ovasabi:schema:order.placed:1"
        );
        assert_eq!(
            message["examples"][0]["payload"]["total"]["currency"],
            "USD"
        );
        assert_eq!(message["examples"][0]["headers"]["ce-type"], "order.placed");
    }

    #[test]
    fn yaml_scalars_are_quoted_when_they_must_be() {
        assert_eq!(yaml_string("user.events"), "user.events");
        assert_eq!(yaml_string("$ref"), "$ref");
        assert_eq!(yaml_string("application/json"), "application/json");
        for quoted in [
            "",
            "yes",
            "No",
            "null",
            "~",
            "1.0",
            "3.0.0",
            "#/channels/a",
            "a: b",
            "a b",
            "-x",
            "*x",
            "é",
            ".inf",
            "NaN",
            "line\nbreak",
            "^x-",
        ] {
            assert!(yaml_string(quoted).starts_with('"'), "{quoted:?} is quoted");
        }
        assert_eq!(yaml_string("a \"b\"\n"), r#""a \"b\"\n""#);
    }

    #[test]
    fn yaml_blocks_nest() {
        let doc = json!({
            "a": { "b": [1, { "c": "d", "e": [] }, [true, null]], "f": {} },
            "g": "two words",
        });
        assert_eq!(
            to_yaml(&doc),
            "a:\n  b:\n    - 1\n    - c: d\n      e: []\n    - - true\n      - null\n  f: {}\ng: \"two words\"\n"
        );
        assert_eq!(to_yaml(&json!({})), "{}\n");
    }

    #[test]
    fn yaml_multi_line_strings_are_literal_blocks() {
        let doc = json!({
            "a": ["x\n\ny", "z\n", "u\nv\n", "w\nt\n\n"],
            "b": "p\nq",
            "c": " lead\nx",
        });
        let expected = r#"a:
  - |-
    x

    y
  - "z\n"
  - |
    u
    v
  - |+
    w
    t

b: |-
  p
  q
c: " lead\nx"
"#;
        assert_eq!(to_yaml(&doc), expected);
    }
}
