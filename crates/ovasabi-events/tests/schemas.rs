//! Contract tests between `schemas/` and the Rust types of this crate.
//!
//! Each test gathers every problem it finds and fails once, listing them all, so one run
//! shows everything to fix.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use jsonschema::{Draft, Registry, Validator};
use ovasabi_core::naming::{validate_event_type, validate_topic};
use ovasabi_events::commerce::{OrderPlaced, OrderPlacedV1};
use ovasabi_events::users::{UserRegistered, UserRegisteredV1, UserRegisteredV2};
use ovasabi_events::{all_types, DomainEvent, TypeInfo};
use serde_json::{json, Value};

const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";
const COMPATIBILITY_MODES: [&str; 7] = [
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
    "NONE",
];

fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

/// One `schemas/<type>/` directory.
struct TypeDir {
    /// `type.json`, if present.
    meta: Option<Value>,
    /// `v<N>.json` by N.
    versions: BTreeMap<u32, Value>,
    /// Files that are neither `type.json` nor `v<N>.json`.
    strays: Vec<String>,
}

impl TypeDir {
    fn topic(&self) -> Option<&str> {
        self.meta.as_ref()?.get("topic")?.as_str()
    }

    fn compatibility(&self) -> Option<&str> {
        self.meta.as_ref()?.get("compatibility")?.as_str()
    }
}

/// Everything under `schemas/`.
struct Catalog {
    /// `_defs/<name>.json` by name.
    defs: BTreeMap<String, Value>,
    /// Event type directories by directory name.
    types: BTreeMap<String, TypeDir>,
}

fn sorted_entries(dir: &Path) -> Vec<std::fs::DirEntry> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry"))
        .collect();
    entries.sort_by_key(std::fs::DirEntry::file_name);
    entries
}

fn load_catalog() -> Catalog {
    let root = schemas_dir();
    let mut catalog = Catalog {
        defs: BTreeMap::new(),
        types: BTreeMap::new(),
    };
    for entry in sorted_entries(&root) {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !path.is_dir() {
            continue; // README.md
        }
        if name == "_defs" {
            for def in sorted_entries(&path) {
                let file = def.file_name().to_string_lossy().into_owned();
                if file.ends_with(".proto") {
                    continue; // Protobuf encodings: checked by ovasabi-schema's loader.
                }
                let stem = file.strip_suffix(".json").unwrap_or_else(|| {
                    panic!("schemas/_defs/{file}: shared definitions are `<name>.json`")
                });
                catalog.defs.insert(stem.to_owned(), read_json(&def.path()));
            }
            continue;
        }
        let mut type_dir = TypeDir {
            meta: None,
            versions: BTreeMap::new(),
            strays: Vec::new(),
        };
        for file in sorted_entries(&path) {
            let file_name = file.file_name().to_string_lossy().into_owned();
            if file_name.ends_with(".proto") {
                continue; // Protobuf encodings: checked by ovasabi-schema's loader.
            }
            let version = file_name
                .strip_prefix('v')
                .and_then(|rest| rest.strip_suffix(".json"))
                .filter(|n| !n.starts_with('0'))
                .and_then(|n| n.parse::<u32>().ok());
            if file_name == "type.json" {
                type_dir.meta = Some(read_json(&file.path()));
            } else if let Some(n) = version {
                type_dir.versions.insert(n, read_json(&file.path()));
            } else {
                type_dir.strays.push(file_name);
            }
        }
        catalog.types.insert(name, type_dir);
    }
    assert!(
        !catalog.types.is_empty(),
        "no event types found in {}",
        root.display()
    );
    catalog
}

impl Catalog {
    /// A registry holding every shared definition under its `$id`.
    fn registry(&self) -> Registry<'static> {
        let mut builder = Registry::new();
        for (name, def) in &self.defs {
            let id = def["$id"]
                .as_str()
                .unwrap_or_else(|| panic!("schemas/_defs/{name}.json has no `$id`"));
            builder = builder
                .add(id, def.clone())
                .unwrap_or_else(|e| panic!("schemas/_defs/{name}.json: {e}"));
        }
        builder
            .prepare()
            .unwrap_or_else(|e| panic!("cannot prepare the registry of schemas/_defs: {e}"))
    }

    fn schema(&self, ty: &str, version: u32) -> Option<&Value> {
        self.types.get(ty)?.versions.get(&version)
    }
}

fn validator(registry: &Registry<'_>, schema: &Value) -> Result<Validator, String> {
    jsonschema::options()
        .with_draft(Draft::Draft202012)
        .should_validate_formats(true)
        .with_registry(registry)
        .build(schema)
        .map_err(|e| e.to_string())
}

/// Every validation error of `instance`, one per line; empty when it validates.
fn errors(validator: &Validator, instance: &Value) -> String {
    validator
        .iter_errors(instance)
        .map(|e| format!("\n      at `{}`: {e}", e.instance_path()))
        .collect()
}

fn fail_if_any(what: &str, problems: &[String]) {
    if !problems.is_empty() {
        let mut message = format!("{} problem(s) with {what}:\n", problems.len());
        for p in problems {
            let _ = writeln!(message, "  - {p}");
        }
        panic!("{message}");
    }
}

fn rust_types() -> BTreeMap<(String, u32), TypeInfo> {
    let mut map = BTreeMap::new();
    for info in all_types() {
        let key = (info.ty.to_owned(), info.version);
        if let Some(previous) = map.insert(key, info) {
            panic!(
                "{} v{} is listed twice in all_types() ({} and {})",
                info.ty, info.version, previous.rust_type, info.rust_type
            );
        }
    }
    map
}

/// 1. Every schema version has a Rust type and the other way round, with the same topic.
#[test]
fn every_schema_version_has_a_rust_type_and_back() {
    let catalog = load_catalog();
    let rust = rust_types();
    let mut problems = Vec::new();
    for (ty, dir) in &catalog.types {
        for n in dir.versions.keys() {
            match rust.get(&(ty.clone(), *n)) {
                None => problems.push(format!(
                    "schemas/{ty}/v{n}.json has no Rust type in all_types()"
                )),
                Some(info) if Some(info.topic) != dir.topic() => problems.push(format!(
                    "{}: TOPIC is `{}` but schemas/{ty}/type.json says {:?}",
                    info.rust_type,
                    info.topic,
                    dir.topic()
                )),
                Some(_) => {}
            }
        }
    }
    for ((ty, n), info) in &rust {
        if catalog.schema(ty, *n).is_none() {
            problems.push(format!(
                "{} ({ty} v{n}) has no schemas/{ty}/v{n}.json",
                info.rust_type
            ));
        }
    }
    fail_if_any("schemas without types or types without schemas", &problems);
}

/// 2. Every Rust type's examples, serialized, validate against its schema.
#[test]
fn rust_examples_validate_against_their_schema() {
    let catalog = load_catalog();
    let registry = catalog.registry();
    let mut problems = Vec::new();
    for info in all_types() {
        let Some(schema) = catalog.schema(info.ty, info.version) else {
            continue; // reported by every_schema_version_has_a_rust_type_and_back
        };
        let validator = match validator(&registry, schema) {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!(
                    "{} v{}: schema does not compile: {e}",
                    info.ty, info.version
                ));
                continue;
            }
        };
        let examples = (info.examples)();
        if examples.is_empty() {
            problems.push(format!("{}: examples() is empty", info.rust_type));
        }
        for (i, example) in examples.iter().enumerate() {
            let errs = errors(&validator, example);
            if !errs.is_empty() {
                problems.push(format!(
                    "{} example #{i} does not validate against {} v{}:{errs}",
                    info.rust_type, info.ty, info.version
                ));
            }
        }
    }
    fail_if_any("Rust examples", &problems);
}

/// 3. Every schema's own examples validate, deserialize into the Rust type, and serialize
///    back to the same value (so the struct neither drops nor renames a field).
#[test]
fn schema_examples_validate_and_roundtrip_through_rust() {
    let catalog = load_catalog();
    let registry = catalog.registry();
    let rust = rust_types();
    let mut problems = Vec::new();
    for (name, def) in &catalog.defs {
        match validator(&registry, def) {
            Err(e) => problems.push(format!("_defs/{name}.json does not compile: {e}")),
            Ok(v) => {
                for (i, example) in def["examples"].as_array().into_iter().flatten().enumerate() {
                    let errs = errors(&v, example);
                    if !errs.is_empty() {
                        problems.push(format!("_defs/{name}.json example #{i}:{errs}"));
                    }
                }
            }
        }
    }
    for (ty, dir) in &catalog.types {
        for (n, schema) in &dir.versions {
            let file = format!("schemas/{ty}/v{n}.json");
            let validator = match validator(&registry, schema) {
                Ok(v) => v,
                Err(e) => {
                    problems.push(format!("{file} does not compile: {e}"));
                    continue;
                }
            };
            let examples = schema["examples"].as_array().cloned().unwrap_or_default();
            if examples.is_empty() {
                problems.push(format!("{file} has no `examples`"));
            }
            let info = rust.get(&(ty.clone(), *n));
            for (i, example) in examples.iter().enumerate() {
                let errs = errors(&validator, example);
                if !errs.is_empty() {
                    problems.push(format!("{file} example #{i} does not validate:{errs}"));
                    continue;
                }
                let Some(info) = info else { continue };
                match (info.roundtrip)(example) {
                    Err(e) => problems.push(format!(
                        "{file} example #{i} does not deserialize into {}: {e}",
                        info.rust_type
                    )),
                    Ok(back) => {
                        let errs = errors(&validator, &back);
                        if !errs.is_empty() {
                            problems.push(format!(
                                "{file} example #{i}, through {}, no longer validates:{errs}",
                                info.rust_type
                            ));
                        } else if &back != example {
                            problems.push(format!(
                                "{file} example #{i} changes through {}:\n      schema: {example}\n      rust:   {back}",
                                info.rust_type
                            ));
                        }
                    }
                }
            }
        }
    }
    fail_if_any("schema examples", &problems);
}

/// Checks that every property declared under `schema` (recursively: nested objects, array
/// items, `$defs`) has a description.
fn undescribed_properties(schema: &Value, path: &str, out: &mut Vec<String>) {
    let Some(object) = schema.as_object() else {
        return;
    };
    if let Some(properties) = object.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            let here = format!("{path}/{name}");
            if property
                .get("description")
                .and_then(Value::as_str)
                .is_none()
            {
                out.push(here.clone());
            }
            undescribed_properties(property, &here, out);
        }
    }
    if let Some(items) = object.get("items") {
        undescribed_properties(items, &format!("{path}[]"), out);
    }
    if let Some(defs) = object.get("$defs").and_then(Value::as_object) {
        for (name, def) in defs {
            undescribed_properties(def, &format!("#/$defs/{name}"), out);
        }
    }
}

/// 4. Every file follows schemas/README.md.
#[test]
fn schema_files_are_well_formed() {
    let catalog = load_catalog();
    let mut problems = Vec::new();

    for (name, def) in &catalog.defs {
        let file = format!("schemas/_defs/{name}.json");
        if def["$schema"] != DRAFT_2020_12 {
            problems.push(format!("{file}: `$schema` must be {DRAFT_2020_12}"));
        }
        let want = format!("urn:ovasabi:defs:{name}");
        if def["$id"] != want.as_str() {
            problems.push(format!("{file}: `$id` must be {want}, is {}", def["$id"]));
        }
    }

    for (ty, dir) in &catalog.types {
        let dir_name = format!("schemas/{ty}");
        for stray in &dir.strays {
            problems.push(format!(
                "{dir_name}/{stray}: only type.json and v<N>.json belong here"
            ));
        }
        if let Err(e) = validate_event_type(ty) {
            problems.push(format!("{dir_name}: {e}"));
        }
        match &dir.meta {
            None => problems.push(format!("{dir_name}: no type.json")),
            Some(meta) => {
                if meta["type"] != ty.as_str() {
                    problems.push(format!(
                        "{dir_name}/type.json: `type` is {}, the directory says {ty:?}",
                        meta["type"]
                    ));
                }
                match dir.topic() {
                    None => problems.push(format!("{dir_name}/type.json: no `topic`")),
                    Some(topic) => {
                        if let Err(e) = validate_topic(topic) {
                            problems.push(format!("{dir_name}/type.json: {e}"));
                        }
                    }
                }
                match dir.compatibility() {
                    Some(mode) if COMPATIBILITY_MODES.contains(&mode) => {}
                    other => problems.push(format!(
                        "{dir_name}/type.json: `compatibility` {other:?} is not one of {COMPATIBILITY_MODES:?}"
                    )),
                }
                if meta["description"].as_str().is_none_or(str::is_empty) {
                    problems.push(format!("{dir_name}/type.json: no `description`"));
                }
                for list in ["producers", "consumers"] {
                    let ok = meta[list].as_array().is_some_and(|services| {
                        !services.is_empty() && services.iter().all(Value::is_string)
                    });
                    if !ok {
                        problems.push(format!(
                            "{dir_name}/type.json: `{list}` must be a non-empty list of service names"
                        ));
                    }
                }
            }
        }

        if dir.versions.is_empty() {
            problems.push(format!("{dir_name}: no v1.json"));
        }
        let expected: Vec<u32> = (1..=dir.versions.len() as u32).collect();
        let found: Vec<u32> = dir.versions.keys().copied().collect();
        if found != expected {
            problems.push(format!(
                "{dir_name}: versions must run 1, 2, … without gaps, found {found:?}"
            ));
        }

        for (n, schema) in &dir.versions {
            let file = format!("{dir_name}/v{n}.json");
            if schema["$schema"] != DRAFT_2020_12 {
                problems.push(format!("{file}: `$schema` must be {DRAFT_2020_12}"));
            }
            let id = format!("urn:ovasabi:schema:{ty}:{n}");
            if schema["$id"] != id.as_str() {
                problems.push(format!("{file}: `$id` must be {id}, is {}", schema["$id"]));
            }
            let title = format!("{ty} v{n}");
            if schema["title"] != title.as_str() {
                problems.push(format!(
                    "{file}: `title` must be {title:?}, is {}",
                    schema["title"]
                ));
            }
            for key in ["description", "x-ovasabi-changes"] {
                if schema[key].as_str().is_none_or(str::is_empty) {
                    problems.push(format!("{file}: no `{key}`"));
                }
            }
            if schema["type"] != "object" {
                problems.push(format!("{file}: an event payload is an object (`type`)"));
            }
            if schema.get("additionalProperties") == Some(&Value::Bool(false)) {
                problems.push(format!(
                    "{file}: the payload must stay open (no top-level `additionalProperties: false`) so versions can evolve"
                ));
            }
            if schema["examples"].as_array().is_none_or(Vec::is_empty) {
                problems.push(format!("{file}: needs at least one example"));
            }
            let properties = schema["properties"].as_object();
            for required in schema["required"].as_array().into_iter().flatten() {
                let declared = required
                    .as_str()
                    .is_some_and(|r| properties.is_some_and(|p| p.contains_key(r)));
                if !declared {
                    problems.push(format!(
                        "{file}: required {required} is not declared in `properties`"
                    ));
                }
            }
            let mut undescribed = Vec::new();
            undescribed_properties(schema, "", &mut undescribed);
            for path in undescribed {
                problems.push(format!("{file}: property `{path}` has no description"));
            }
        }
    }
    fail_if_any("the files in schemas/", &problems);
}

/// The Rust struct and the schema declare the same top-level fields: whatever Rust writes is
/// declared (open schemas would let an undeclared field through), and together the Rust
/// examples set every declared field.
#[test]
fn rust_examples_cover_exactly_the_schema_properties() {
    let catalog = load_catalog();
    let mut problems = Vec::new();
    for info in all_types() {
        let Some(schema) = catalog.schema(info.ty, info.version) else {
            continue;
        };
        let declared: BTreeSet<&str> = schema["properties"]
            .as_object()
            .map(|p| p.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let examples = (info.examples)();
        let written: BTreeSet<String> = examples
            .iter()
            .filter_map(Value::as_object)
            .flat_map(|o| o.keys().cloned())
            .collect();
        for field in &written {
            if !declared.contains(field.as_str()) {
                problems.push(format!(
                    "{} writes `{field}`, which {} v{} does not declare",
                    info.rust_type, info.ty, info.version
                ));
            }
        }
        for field in declared {
            if !written.contains(field) {
                problems.push(format!(
                    "{} v{} declares `{field}`, which no example of {} sets",
                    info.ty, info.version, info.rust_type
                ));
            }
        }
    }
    fail_if_any("fields of Rust types against schema properties", &problems);
}

/// The compatibility mode, checked on the examples: a reader of one version validates and
/// deserializes the examples of the versions it must read. (`ovasabi schema check` compares
/// the schemas themselves; this catches the cases examples reveal, from the Rust side too.)
#[test]
fn examples_respect_the_compatibility_mode() {
    let catalog = load_catalog();
    let registry = catalog.registry();
    let rust = rust_types();
    let mut problems = Vec::new();
    for (ty, dir) in &catalog.types {
        let mode = dir.compatibility().unwrap_or("BACKWARD");
        let backward = mode.starts_with("BACKWARD") || mode.starts_with("FULL");
        let forward = mode.starts_with("FORWARD") || mode.starts_with("FULL");
        let transitive = mode.ends_with("_TRANSITIVE");
        let versions: Vec<u32> = dir.versions.keys().copied().collect();
        for (i, &new) in versions.iter().enumerate() {
            let olds = if transitive {
                &versions[..i]
            } else {
                &versions[i.saturating_sub(1)..i]
            };
            for &old in olds {
                let mut pairs = Vec::new();
                if backward {
                    pairs.push((new, old)); // the new reader reads old data
                }
                if forward {
                    pairs.push((old, new)); // the old reader reads new data
                }
                for (reader, writer) in pairs {
                    let Ok(validator) = validator(&registry, &dir.versions[&reader]) else {
                        continue; // reported elsewhere
                    };
                    let mut data: Vec<Value> = dir.versions[&writer]["examples"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    if let Some(info) = rust.get(&(ty.clone(), writer)) {
                        data.extend((info.examples)());
                    }
                    for (k, example) in data.iter().enumerate() {
                        let errs = errors(&validator, example);
                        if !errs.is_empty() {
                            problems.push(format!(
                                "{ty} ({mode}): v{reader} schema rejects v{writer} example #{k}:{errs}"
                            ));
                        }
                        if let Some(info) = rust.get(&(ty.clone(), reader)) {
                            if let Err(e) = (info.roundtrip)(example) {
                                problems.push(format!(
                                    "{ty} ({mode}): {} cannot read v{writer} example #{k}: {e}",
                                    info.rust_type
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    fail_if_any("compatibility on examples", &problems);
}

/// `to_event` builds valid CloudEvents that name their schema and aggregate.
#[test]
fn example_events_are_valid_cloudevents() {
    let mut problems = Vec::new();
    for info in all_types() {
        let events = (info.example_events)("/ovasabi/test");
        let payloads = (info.examples)();
        for (event, payload) in events.iter().zip(&payloads) {
            let name = format!("{} event for {}", info.ty, info.rust_type);
            if let Err(e) = event.validate() {
                problems.push(format!("{name} is not a valid CloudEvent: {e}"));
            }
            if event.ty != info.ty {
                problems.push(format!("{name}: type is {}", event.ty));
            }
            if event.dataschema.as_deref() != Some(info.dataschema().as_str()) {
                problems.push(format!("{name}: dataschema is {:?}", event.dataschema));
            }
            if event.data_json().as_ref() != Some(payload) {
                problems.push(format!("{name}: data is not the serialized payload"));
            }
            match event.subject.as_deref() {
                None | Some("") => problems.push(format!("{name}: no subject")),
                Some(subject) if event.partition_key() != Some(subject) => problems.push(format!(
                    "{name}: partition key {:?} is not the subject",
                    event.partition_key()
                )),
                Some(_) => {}
            }
        }
    }
    fail_if_any("example events", &problems);
}

/// The validator used above does reject bad payloads: formats, patterns, enums, required
/// fields, the closed money object and `$ref`s to shared definitions are all enforced.
#[test]
fn the_validator_rejects_bad_payloads() {
    let catalog = load_catalog();
    let registry = catalog.registry();
    let compile = |ty: &str, n: u32| {
        validator(&registry, catalog.schema(ty, n).expect("schema present")).expect("compiles")
    };
    let good_user = UserRegistered::examples()[1].clone();
    let user = serde_json::to_value(&good_user).unwrap();
    let order = serde_json::to_value(&OrderPlaced::examples()[1]).unwrap();
    let registered = compile("user.registered", 3);
    let placed = compile("order.placed", 2);
    let failed = compile("payment.failed", 1);
    assert!(registered.is_valid(&user));
    assert!(placed.is_valid(&order));

    // `base` with the member or element at `pointer` set (added if it is a new member).
    let with = |base: &Value, pointer: &str, value: Value| {
        let mut v = base.clone();
        let (parent, last) = pointer.rsplit_once('/').expect("a JSON pointer");
        match v.pointer_mut(parent).expect("the parent exists") {
            Value::Object(members) => {
                members.insert(last.to_owned(), value);
            }
            Value::Array(elements) => elements[last.parse::<usize>().expect("an index")] = value,
            other => panic!("cannot set {pointer} inside {other}"),
        }
        v
    };
    let without = |base: &Value, field: &str| {
        let mut v = base.clone();
        v.as_object_mut().unwrap().remove(field);
        v
    };
    let bad_users = [
        ("email format", with(&user, "/email", json!("not an email"))),
        (
            "date-time format",
            with(&user, "/registered_at", json!("yesterday")),
        ),
        ("locale pattern", with(&user, "/locale", json!("en_US!"))),
        ("id type", with(&user, "/user_id", json!(42))),
        ("required field", without(&user, "email")),
    ];
    for (what, bad) in bad_users {
        assert!(
            !registered.is_valid(&bad),
            "user.registered accepted a bad {what}: {bad}"
        );
    }
    let bad_orders = [
        (
            "currency pattern",
            with(&order, "/total/currency", json!("usd")),
        ),
        (
            "float amount",
            with(&order, "/total/amount_minor", json!(18.5)),
        ),
        (
            "unknown money member",
            with(&order, "/total/scale", json!(2)),
        ),
        (
            "money in a line item",
            with(&order, "/items/0/unit_price", json!("20.00")),
        ),
        (
            "quantity minimum",
            with(&order, "/items/0/quantity", json!(0)),
        ),
        ("empty items", with(&order, "/items", json!([]))),
        (
            "country pattern",
            with(&order, "/shipping_address/country", json!("Brazil")),
        ),
        ("coupon pattern", with(&order, "/coupon_code", json!("x"))),
    ];
    for (what, bad) in bad_orders {
        assert!(
            !placed.is_valid(&bad),
            "order.placed accepted a bad {what}: {bad}"
        );
    }
    let failure =
        serde_json::to_value(&ovasabi_events::commerce::PaymentFailed::examples()[0]).unwrap();
    let bad_reason = with(&failure, "/reason_code", json!("bad_luck"));
    assert!(failed.is_valid(&failure));
    assert!(
        !failed.is_valid(&bad_reason),
        "payment.failed accepted an unknown reason code"
    );
    // Open content: an unknown top-level field is accepted (that is how versions evolve).
    let future = with(&user, "/future_field", json!(true));
    assert!(
        registered.is_valid(&future),
        "user.registered v3 must stay open"
    );
}

/// The upcasts v1 → v2 → v3 of `user.registered` and v1 → v2 of `order.placed` give what
/// reading the old payload with the new struct gives.
#[test]
fn upcasts_match_reading_old_payloads_with_new_types() {
    for v1 in UserRegisteredV1::examples() {
        let json = serde_json::to_value(&v1).unwrap();
        let v2 = UserRegisteredV2::from(v1.clone());
        let v3 = UserRegistered::from(v2.clone());
        assert_eq!(
            serde_json::from_value::<UserRegisteredV2>(json.clone()).unwrap(),
            v2
        );
        assert_eq!(serde_json::from_value::<UserRegistered>(json).unwrap(), v3);
        assert_eq!(UserRegistered::from(v1), v3);
        assert_eq!((v3.display_name, v3.locale), (None, None));
    }
    for v1 in OrderPlacedV1::examples() {
        let json = serde_json::to_value(&v1).unwrap();
        let v2 = OrderPlaced::from(v1);
        assert_eq!(serde_json::from_value::<OrderPlaced>(json).unwrap(), v2);
        assert_eq!(v2.coupon_code, None);
    }
    // FULL: the v1 struct reads v2 data, ignoring the coupon.
    for v2 in OrderPlaced::examples() {
        let v1: OrderPlacedV1 = serde_json::from_value(serde_json::to_value(&v2).unwrap()).unwrap();
        assert_eq!(v1.order_id, v2.order_id);
        assert_eq!(v1.total, v2.total);
    }
}
