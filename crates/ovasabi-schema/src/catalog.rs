//! The registry as a Markdown catalog for people: every topic, event type and version, with
//! who publishes and consumes it, what changed, a table of its fields and an example.
//!
//! ```
//! use ovasabi_schema::{catalog, Registry};
//!
//! let registry = Registry::builtin().expect("the compiled-in schemas load");
//! let text = catalog::markdown(&registry);
//! assert!(text.starts_with("# OVASABI event catalog\n"));
//! ```
//!
//! The output is deterministic (topics, types, services and fields sorted), so a generated
//! catalog can be committed and diffed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde_json::Value;

use crate::registry::{schema_uri, EventSchema, Registry, Version};

/// One row of a field table: a payload field, nested fields named with dots
/// (`shipping_address.city`) and array elements with `[]` (`items[].sku`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// The dotted name.
    pub name: String,
    /// Its type as people read it: `string (date-time)`, `array of object`, `object
    /// (money)` for a shared definition.
    pub ty: String,
    /// Whether its parent object requires it (a nested field is required only when its
    /// parent is present).
    pub required: bool,
    /// Its description, with its constraints (allowed values, lengths, bounds, pattern).
    pub description: String,
}

/// How deep nested fields are listed; deeper ones are summarised by their parent's type.
const MAX_DEPTH: usize = 8;

/// The fields of `schema` (a version's schema), nested ones included, in a stable order:
/// siblings sorted by name, each object's fields right after it. `$ref`s are followed:
/// local ones (`#/$defs/…`) within the schema, shared ones (`urn:ovasabi:defs:…`) through
/// [`Registry::resolve`].
pub fn fields(registry: &Registry, schema: &Value) -> Vec<Field> {
    let mut out = Vec::new();
    let resolved = Resolved::new(registry, schema, schema);
    walk(registry, &resolved, "", 0, &mut Vec::new(), &mut out);
    out
}

/// A schema with its `$ref`s followed and `allOf`s merged, and the document its own local
/// references point into.
#[derive(Clone)]
struct Resolved {
    schema: serde_json::Map<String, Value>,
    document: Value,
    /// The shared definition it came from (`money`), if any.
    definition: Option<String>,
    /// A `$ref` seen again while resolving: a recursive schema.
    recursive: bool,
    /// The `$ref` (absolute) it was reached through, to stop at recursion.
    via: Option<String>,
}

impl Resolved {
    fn new(registry: &Registry, schema: &Value, document: &Value) -> Self {
        Resolved::of(registry, schema, document, &mut Vec::new())
    }

    /// Follows `schema`'s `$ref` (siblings override the target's keywords, as 2020-12
    /// applies both) and merges `allOf` members' properties and requirements.
    fn of(registry: &Registry, schema: &Value, document: &Value, seen: &mut Vec<String>) -> Self {
        let Value::Object(object) = schema else {
            return Resolved {
                schema: serde_json::Map::new(),
                document: document.clone(),
                definition: None,
                recursive: false,
                via: None,
            };
        };
        let mut resolved = Resolved {
            schema: serde_json::Map::new(),
            document: document.clone(),
            definition: None,
            recursive: false,
            via: None,
        };
        if let Some(reference) = object.get("$ref").and_then(Value::as_str) {
            let key = if reference.starts_with('#') {
                format!("{}{reference}", document_id(document))
            } else {
                reference.to_owned()
            };
            if seen.contains(&key) {
                resolved.recursive = true;
            } else {
                let target = if let Some(pointer) = reference.strip_prefix('#') {
                    document
                        .pointer(pointer)
                        .cloned()
                        .map(|t| (t, document.clone(), None))
                } else {
                    let base = reference.split('#').next().unwrap_or(reference);
                    registry.resolve(reference).map(|t| {
                        let name = base.strip_prefix("urn:ovasabi:defs:").unwrap_or(base);
                        let def_document = registry.resolve(base).unwrap_or(Value::Null);
                        (t, def_document, Some(name.to_owned()))
                    })
                };
                if let Some((target, target_document, definition)) = target {
                    seen.push(key.clone());
                    let inner = Resolved::of(registry, &target, &target_document, seen);
                    seen.pop();
                    resolved = Resolved {
                        definition: definition.or(inner.definition),
                        via: Some(key),
                        ..inner
                    };
                }
            }
        }
        if let Some(Value::Array(members)) = object.get("allOf") {
            for member in members {
                let inner = Resolved::of(registry, member, document, seen);
                merge(&mut resolved.schema, inner.schema);
                resolved.definition = resolved.definition.or(inner.definition);
                resolved.recursive |= inner.recursive;
                resolved.via = resolved.via.or(inner.via);
            }
        }
        for (key, value) in object {
            if key != "$ref" && key != "allOf" {
                resolved.schema.insert(key.clone(), value.clone());
            }
        }
        resolved
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.schema.get(key)
    }
}

fn document_id(document: &Value) -> &str {
    document.get("$id").and_then(Value::as_str).unwrap_or("")
}

/// Merges an `allOf` member into `into`: properties and `required` add up; other keywords
/// are taken when `into` has none.
fn merge(into: &mut serde_json::Map<String, Value>, from: serde_json::Map<String, Value>) {
    for (key, value) in from {
        match (key.as_str(), into.get_mut(&key), value) {
            ("properties", Some(Value::Object(mine)), Value::Object(theirs)) => {
                for (name, schema) in theirs {
                    mine.entry(name).or_insert(schema);
                }
            }
            ("required", Some(Value::Array(mine)), Value::Array(theirs)) => {
                for name in theirs {
                    if !mine.contains(&name) {
                        mine.push(name);
                    }
                }
            }
            (_, Some(_), _) => {}
            (_, None, value) => {
                into.insert(key, value);
            }
        }
    }
}

fn walk(
    registry: &Registry,
    schema: &Resolved,
    prefix: &str,
    depth: usize,
    path: &mut Vec<String>,
    out: &mut Vec<Field>,
) {
    if depth >= MAX_DEPTH || schema.recursive {
        return;
    }
    let required: BTreeSet<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(Value::Object(properties)) = schema.get("properties") {
        let sorted: BTreeMap<&String, &Value> = properties.iter().collect();
        for (name, property) in sorted {
            let field = Resolved::new(registry, property, &schema.document);
            let full = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            out.push(Field {
                name: full.clone(),
                ty: type_name(registry, &field),
                required: required.contains(name.as_str()),
                description: describe(&field),
            });
            descend(registry, &field, &full, depth, path, out);
        }
    }
    if let Some(extra @ Value::Object(_)) = schema.get("additionalProperties") {
        let field = Resolved::new(registry, extra, &schema.document);
        let full = if prefix.is_empty() {
            "*".to_owned()
        } else {
            format!("{prefix}.*")
        };
        out.push(Field {
            name: full.clone(),
            ty: type_name(registry, &field),
            required: false,
            description: join_sentences("Any other key.", &describe(&field)),
        });
        descend(registry, &field, &full, depth, path, out);
    }
}

/// Lists the fields inside `field` (an object's, or an array's elements'), unless `field`
/// was reached through a `$ref` already being listed (a recursive schema).
fn descend(
    registry: &Registry,
    field: &Resolved,
    name: &str,
    depth: usize,
    path: &mut Vec<String>,
    out: &mut Vec<Field>,
) {
    let (field, name) = match field.get("items") {
        Some(items @ Value::Object(_)) if field.get("properties").is_none() => (
            Resolved::new(registry, items, &field.document),
            format!("{name}[]"),
        ),
        _ => (field.clone(), name.to_owned()),
    };
    let has_fields = field.get("properties").is_some()
        || field
            .get("additionalProperties")
            .is_some_and(Value::is_object);
    if !has_fields {
        return;
    }
    match &field.via {
        Some(via) if path.contains(via) => {}
        Some(via) => {
            path.push(via.clone());
            walk(registry, &field, &name, depth + 1, path, out);
            path.pop();
        }
        None => walk(registry, &field, &name, depth + 1, path, out),
    }
}

fn type_name(registry: &Registry, field: &Resolved) -> String {
    let mut ty = match field.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" or "),
        _ if field.get("properties").is_some() => "object".to_owned(),
        _ if field.get("const").is_some() => "const".to_owned(),
        _ if field.get("enum").is_some() => "enum".to_owned(),
        _ => {
            let variants = ["oneOf", "anyOf"]
                .iter()
                .find_map(|k| field.get(k).and_then(Value::as_array));
            match variants {
                Some(variants) => {
                    let names: Vec<String> = variants
                        .iter()
                        .map(|v| type_name(registry, &Resolved::new(registry, v, &field.document)))
                        .collect();
                    format!("one of: {}", names.join(" | "))
                }
                None if field.recursive => "(recursive)".to_owned(),
                None => "any".to_owned(),
            }
        }
    };
    if ty == "array" {
        if let Some(items @ Value::Object(_)) = field.get("items") {
            let element = Resolved::new(registry, items, &field.document);
            ty = format!("array of {}", type_name(registry, &element));
        }
    }
    if let Some(format) = field.get("format").and_then(Value::as_str) {
        let _ = write!(ty, " ({format})");
    }
    if let Some(definition) = &field.definition {
        if !ty.starts_with("array of") {
            let _ = write!(ty, " ({definition})");
        }
    }
    ty
}

/// The description, then its constraints.
fn describe(field: &Resolved) -> String {
    let mut notes: Vec<String> = Vec::new();
    let json = |v: &Value| format!("`{v}`");
    if let Some(value) = field.get("const") {
        notes.push(format!("Always {}.", json(value)));
    }
    if let Some(Value::Array(values)) = field.get("enum") {
        let values: Vec<String> = values.iter().map(json).collect();
        notes.push(format!("One of {}.", values.join(", ")));
    }
    let bound = |lo: &str, hi: &str, unit: &str| -> Option<String> {
        let lo = field.get(lo).and_then(Value::as_u64);
        let hi = field.get(hi).and_then(Value::as_u64);
        let units = |n: u64| {
            if n == 1 {
                unit.to_owned()
            } else {
                format!("{unit}s")
            }
        };
        match (lo, hi) {
            (Some(lo), Some(hi)) if lo == hi => Some(format!("Exactly {lo} {}.", units(lo))),
            (Some(lo), Some(hi)) => Some(format!("{lo}–{hi} {}.", units(hi))),
            (Some(lo), None) => Some(format!("At least {lo} {}.", units(lo))),
            (None, Some(hi)) => Some(format!("At most {hi} {}.", units(hi))),
            (None, None) => None,
        }
    };
    notes.extend(bound("minLength", "maxLength", "character"));
    notes.extend(bound("minItems", "maxItems", "item"));
    if field.get("uniqueItems") == Some(&Value::Bool(true)) {
        notes.push("Items are unique.".to_owned());
    }
    for (key, text) in [
        ("minimum", "≥"),
        ("exclusiveMinimum", ">"),
        ("maximum", "≤"),
        ("exclusiveMaximum", "<"),
    ] {
        if let Some(n) = field.get(key).filter(|v| v.is_number()) {
            notes.push(format!("{text} {n}."));
        }
    }
    if let Some(pattern) = field.get("pattern").and_then(Value::as_str) {
        notes.push(format!("Pattern `{pattern}`."));
    }
    if field.get("additionalProperties") == Some(&Value::Bool(false)) {
        notes.push("No other keys.".to_owned());
    }
    if field.get("deprecated") == Some(&Value::Bool(true)) {
        notes.push("Deprecated.".to_owned());
    }
    let description = field
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or("");
    join_sentences(description, &notes.join(" "))
}

fn join_sentences(a: &str, b: &str) -> String {
    match (a.trim().is_empty(), b.trim().is_empty()) {
        (true, _) => b.trim().to_owned(),
        (false, true) => a.trim().to_owned(),
        (false, false) => format!("{} {}", a.trim(), b.trim()),
    }
}

/// A table cell: one line, pipes escaped.
fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// The anchor GitHub (and most Markdown renderers) give a heading: lower case, spaces to
/// `-`, punctuation other than `-` and `_` removed.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn code_list(names: &[String]) -> String {
    if names.is_empty() {
        return "—".to_owned();
    }
    let sorted: BTreeSet<&String> = names.iter().collect();
    sorted
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The catalog of every event type in `registry`, as Markdown: a table of contents by
/// topic, who publishes and consumes what, then per type its description, topic,
/// compatibility mode, producers, consumers and each version (newest first) with its
/// changes, field table and an example.
pub fn markdown(registry: &Registry) -> String {
    let mut by_topic: BTreeMap<&str, Vec<&EventSchema>> = BTreeMap::new();
    for ty in registry.types() {
        by_topic.entry(&ty.meta.topic).or_default().push(ty);
    }
    for types in by_topic.values_mut() {
        types.sort_by(|a, b| a.meta.event_type.cmp(&b.meta.event_type));
    }
    let type_count = registry.types().count();

    let mut md = String::new();
    md.push_str("# OVASABI event catalog\n\n");
    let _ = writeln!(
        md,
        "Generated from `schemas/` (see `schemas/README.md`); do not edit by hand. \
         {type_count} event {} on {} {}. Events are CloudEvents 1.0; the tables describe \
         their `data`, and `dataschema` names its version (`urn:ovasabi:schema:<type>:<N>`).\n",
        if type_count == 1 { "type" } else { "types" },
        by_topic.len(),
        if by_topic.len() == 1 {
            "topic"
        } else {
            "topics"
        },
    );

    md.push_str("## Contents\n\n");
    for (topic, types) in &by_topic {
        let _ = writeln!(md, "- [`{topic}`](#{})", slug(topic));
        for ty in types {
            let versions = ty.versions.len();
            let _ = writeln!(
                md,
                "  - [`{name}`](#{anchor}) — {description} ({versions} {noun})",
                name = ty.meta.event_type,
                anchor = slug(&ty.meta.event_type),
                description = cell(&ty.meta.description),
                noun = if versions == 1 { "version" } else { "versions" },
            );
        }
    }
    md.push_str("- [Services](#services)\n\n");

    for (topic, types) in &by_topic {
        let _ = writeln!(md, "## `{topic}`\n");
        let _ = writeln!(
            md,
            "Dead letters: `{topic}.dlq` (events a consumer group could not process).\n"
        );
        for ty in types {
            write_type(registry, ty, &mut md);
        }
    }

    md.push_str("## Services\n\n");
    md.push_str("| Service | Publishes | Consumes |\n|---|---|---|\n");
    let mut services: BTreeMap<&str, (BTreeSet<&str>, BTreeSet<&str>)> = BTreeMap::new();
    for ty in registry.types() {
        for p in &ty.meta.producers {
            services.entry(p).or_default().0.insert(&ty.meta.event_type);
        }
        for c in &ty.meta.consumers {
            services.entry(c).or_default().1.insert(&ty.meta.event_type);
        }
    }
    let links = |types: &BTreeSet<&str>| {
        if types.is_empty() {
            "—".to_owned()
        } else {
            types
                .iter()
                .map(|t| format!("[`{t}`](#{})", slug(t)))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    for (service, (publishes, consumes)) in &services {
        let _ = writeln!(
            md,
            "| `{service}` | {} | {} |",
            links(publishes),
            links(consumes)
        );
    }
    md
}

fn write_type(registry: &Registry, ty: &EventSchema, md: &mut String) {
    let meta = &ty.meta;
    let _ = writeln!(md, "### `{}`\n", meta.event_type);
    let _ = writeln!(md, "{}\n", meta.description.trim());
    let latest = ty.latest().version;
    let versions = ty
        .versions
        .keys()
        .map(|v| {
            if *v == latest {
                format!("v{v} (latest)")
            } else {
                format!("v{v}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    md.push_str("| | |\n|---|---|\n");
    let _ = writeln!(md, "| Topic | `{}` |", meta.topic);
    let _ = writeln!(md, "| Compatibility | `{}` |", meta.compatibility);
    let _ = writeln!(md, "| Producers | {} |", code_list(&meta.producers));
    let _ = writeln!(md, "| Consumers | {} |", code_list(&meta.consumers));
    let _ = writeln!(md, "| Versions | {versions} |\n");
    for version in ty.versions.values().rev() {
        write_version(registry, &meta.event_type, version, md);
    }
}

fn write_version(registry: &Registry, event_type: &str, version: &Version, md: &mut String) {
    let _ = writeln!(md, "#### `{event_type}` v{}\n", version.version);
    let _ = writeln!(
        md,
        "Schema: `{}` (`schemas/{}`)\n",
        schema_uri(event_type, version.version),
        version.origin
    );
    if let Some(description) = version.schema.get("description").and_then(Value::as_str) {
        let _ = writeln!(md, "{}\n", description.trim());
    }
    if let Some(changes) = version.changes() {
        let _ = writeln!(md, "Changes: {}\n", changes.trim());
    }
    let rows = fields(registry, &version.schema);
    if rows.is_empty() {
        md.push_str("No fields.\n\n");
    } else {
        md.push_str("| Field | Type | Required | Description |\n|---|---|---|---|\n");
        for row in rows {
            let _ = writeln!(
                md,
                "| `{}` | {} | {} | {} |",
                row.name,
                cell(&row.ty),
                if row.required { "yes" } else { "no" },
                cell(&row.description)
            );
        }
        md.push('\n');
    }
    if let Some(example) = version.examples().first() {
        let more = version.examples().len() - 1;
        if more == 0 {
            md.push_str("Example:\n\n");
        } else {
            let _ = writeln!(md, "Example ({more} more in the schema):\n");
        }
        let pretty = serde_json::to_string_pretty(example).unwrap_or_else(|_| example.to_string());
        let _ = writeln!(md, "```json\n{pretty}\n```\n");
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn registry() -> Registry {
        let files = [
            (
                "_defs/money.json",
                json!({
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "$id": "urn:ovasabi:defs:money",
                    "type": "object",
                    "description": "An amount of money.",
                    "properties": {
                        "amount_minor": { "type": "integer", "description": "Minor units.", "minimum": 0 },
                        "currency": { "$ref": "#/$defs/currency" },
                    },
                    "required": ["amount_minor", "currency"],
                    "additionalProperties": false,
                    "$defs": {
                        "currency": { "type": "string", "pattern": "^[A-Z]{3}$", "description": "ISO 4217." },
                    },
                }),
            ),
            (
                "order.placed/type.json",
                json!({
                    "type": "order.placed", "topic": "commerce.events",
                    "description": "A customer placed an order.",
                    "compatibility": "FULL",
                    "producers": ["commerce"], "consumers": ["fraud", "audit"],
                }),
            ),
            (
                "order.placed/v1.json",
                json!({
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "$id": "urn:ovasabi:schema:order.placed:1",
                    "description": "An order.",
                    "x-ovasabi-changes": "First version.",
                    "type": "object",
                    "properties": {
                        "order_id": { "type": "string", "minLength": 1, "description": "The order." },
                        "items": {
                            "type": "array",
                            "description": "What | was ordered.",
                            "minItems": 1,
                            "items": { "$ref": "#/$defs/line" },
                        },
                        "total": { "$ref": "urn:ovasabi:defs:money", "description": "To pay." },
                        "placed_at": { "type": "string", "format": "date-time" },
                        "status": { "enum": ["new", "paid"] },
                    },
                    "required": ["order_id", "items", "total"],
                    "$defs": {
                        "line": {
                            "type": "object",
                            "properties": {
                                "sku": { "type": "string", "description": "Stock-keeping unit." },
                                "unit_price": { "$ref": "urn:ovasabi:defs:money" },
                            },
                            "required": ["sku"],
                        },
                    },
                    "examples": [{
                        "order_id": "o-1",
                        "items": [{ "sku": "A", "unit_price": { "amount_minor": 5, "currency": "USD" } }],
                        "total": { "amount_minor": 5, "currency": "USD" },
                    }],
                }),
            ),
        ];
        Registry::from_files(files.iter().map(|(p, v)| ((*p).to_owned(), v.to_string())))
            .expect("the test schemas load")
    }

    fn row(name: &str, ty: &str, required: bool, description: &str) -> Field {
        Field {
            name: name.to_owned(),
            ty: ty.to_owned(),
            required,
            description: description.to_owned(),
        }
    }

    #[test]
    fn nested_fields_resolve_local_and_shared_definitions() {
        let registry = registry();
        let schema = &registry.version("order.placed", 1).unwrap().schema;
        assert_eq!(
            fields(&registry, schema),
            vec![
                row(
                    "items",
                    "array of object",
                    true,
                    "What | was ordered. At least 1 item."
                ),
                row("items[].sku", "string", true, "Stock-keeping unit."),
                row(
                    "items[].unit_price",
                    "object (money)",
                    false,
                    "An amount of money. No other keys."
                ),
                row(
                    "items[].unit_price.amount_minor",
                    "integer",
                    true,
                    "Minor units. ≥ 0."
                ),
                row(
                    "items[].unit_price.currency",
                    "string",
                    true,
                    "ISO 4217. Pattern `^[A-Z]{3}$`."
                ),
                row(
                    "order_id",
                    "string",
                    true,
                    "The order. At least 1 character."
                ),
                row("placed_at", "string (date-time)", false, ""),
                row("status", "enum", false, "One of `\"new\"`, `\"paid\"`."),
                row("total", "object (money)", true, "To pay. No other keys."),
                row("total.amount_minor", "integer", true, "Minor units. ≥ 0."),
                row(
                    "total.currency",
                    "string",
                    true,
                    "ISO 4217. Pattern `^[A-Z]{3}$`."
                ),
            ]
        );
    }

    #[test]
    fn recursive_schemas_stop() {
        let registry = Registry::default();
        let schema = json!({
            "type": "object",
            "properties": { "child": { "$ref": "#" }, "name": { "type": "string" } },
        });
        let rows = fields(&registry, &schema);
        assert_eq!(rows[0].name, "child");
        assert!(rows
            .iter()
            .all(|r| !r.name.starts_with("child.child.child")));
    }

    #[test]
    fn the_catalog_lists_everything_in_order() {
        let text = markdown(&registry());
        assert!(text.contains("- [`commerce.events`](#commerceevents)\n"));
        assert!(text.contains(
            "  - [`order.placed`](#orderplaced) — A customer placed an order. (1 version)\n"
        ));
        assert!(text.contains("| Compatibility | `FULL` |"));
        assert!(text.contains("| Consumers | `audit`, `fraud` |"));
        assert!(text.contains("Changes: First version."));
        assert!(text.contains(
            "| `items` | array of object | yes | What \\| was ordered. At least 1 item. |"
        ));
        assert!(text.contains("```json\n{\n  \"items\""));
        assert!(text.contains("| `fraud` | — | [`order.placed`](#orderplaced) |"));
        assert_eq!(text, markdown(&registry()), "deterministic");
    }

    #[test]
    fn slugs_follow_github() {
        assert_eq!(slug("`order.placed`"), "orderplaced");
        assert_eq!(slug("`user.profile_updated` v2"), "userprofile_updated-v2");
    }
}
