//! The schema registry: every event type's versions, loaded from `schemas/` (compiled in)
//! and optionally from a directory of extra ones, each compiled once into a validator, with
//! its Protobuf encoding when a `v<N>.proto` sits beside it ([`crate::protobuf`]).
//!
//! The layout of the files is in `schemas/README.md`. Loading checks it: a file in the wrong
//! place, a `$id` that does not match its path, a gap in the versions, an example that does
//! not validate — each is an error naming the file and what to fix, so a broken schema never
//! reaches a running service.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use ovasabi_core::naming::{validate_event_type, validate_topic};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::compat::Mode;
use crate::protobuf::ProtoVersion;

include!(concat!(env!("OUT_DIR"), "/builtin.rs"));

/// The `$id` (and `dataschema`) of a type's version: `urn:ovasabi:schema:<type>:<version>`.
pub fn schema_uri(event_type: &str, version: u32) -> String {
    format!("urn:ovasabi:schema:{event_type}:{version}")
}

/// Reads `urn:ovasabi:schema:<type>:<version>`; `None` for any other URI.
pub fn parse_schema_uri(uri: &str) -> Option<(&str, u32)> {
    let rest = uri.strip_prefix("urn:ovasabi:schema:")?;
    let (ty, version) = rest.rsplit_once(':')?;
    Some((ty, version.parse().ok()?))
}

/// What holds for every version of a type (`<type>/type.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeMeta {
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The topic its events are published on.
    pub topic: String,
    /// What it means.
    pub description: String,
    /// How its versions may evolve.
    #[serde(default)]
    pub compatibility: Mode,
    /// Services that publish it.
    #[serde(default)]
    pub producers: Vec<String>,
    /// Services that consume it.
    #[serde(default)]
    pub consumers: Vec<String>,
}

/// One version of a type's schema, compiled.
pub struct Version {
    /// The version number (from 1).
    pub version: u32,
    /// The schema as written.
    pub schema: Value,
    /// Where it was loaded from (`user.registered/v1.json`, or a path).
    pub origin: String,
    /// Its Protobuf encoding (`v<N>.proto` beside the JSON Schema), if it has one.
    pub protobuf: Option<ProtoVersion>,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Version")
            .field("version", &self.version)
            .field("origin", &self.origin)
            .field("protobuf", &self.protobuf)
            .finish_non_exhaustive()
    }
}

impl Version {
    /// The schema's `examples`.
    pub fn examples(&self) -> &[Value] {
        self.schema
            .get("examples")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }

    /// What changed from the previous version (`x-ovasabi-changes`).
    pub fn changes(&self) -> Option<&str> {
        self.schema.get("x-ovasabi-changes").and_then(Value::as_str)
    }

    /// Checks `data` against this version; the error lists every failing field and rule.
    pub fn validate(&self, event_type: &str, data: &Value) -> Result<(), PayloadError> {
        if self.validator.is_valid(data) {
            return Ok(());
        }
        let violations = self
            .validator
            .iter_errors(data)
            .map(|e| {
                let mut pointer = e.instance_path().to_string();
                // A missing field is reported at its parent: name the field itself.
                if let jsonschema::error::ValidationErrorKind::Required { property } = e.kind() {
                    if let Some(name) = property.as_str() {
                        pointer.push('/');
                        pointer.push_str(&name.replace('~', "~0").replace('/', "~1"));
                    }
                }
                FieldViolation {
                    field: field_name(&pointer),
                    rule: e.kind().keyword().to_owned(),
                    message: e.to_string(),
                }
            })
            .collect();
        Err(PayloadError {
            event_type: event_type.to_owned(),
            version: self.version,
            violations,
        })
    }
}

/// A JSON pointer into a payload as a field name people read: `/items/0/sku` →
/// `items[0].sku`, the root → `(payload)`.
fn field_name(pointer: &str) -> String {
    let mut out = String::new();
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        if !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{token}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&token);
        }
    }
    if out.is_empty() {
        "(payload)".to_owned()
    } else {
        out
    }
}

/// One field of a payload that breaks a rule of its schema.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldViolation {
    /// The field, e.g. `items[0].sku`; `(payload)` for the whole payload.
    pub field: String,
    /// The schema keyword it breaks: `required`, `type`, `enum`, `format`, `minimum`…
    pub rule: String,
    /// The validator's explanation.
    pub message: String,
}

/// A payload that does not match its schema.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
pub struct PayloadError {
    /// The event type.
    pub event_type: String,
    /// The schema version it was checked against.
    pub version: u32,
    /// What is wrong, field by field.
    pub violations: Vec<FieldViolation>,
}

impl std::fmt::Display for PayloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the payload does not match schema {} v{}: ",
            self.event_type, self.version
        )?;
        for (i, v) in self.violations.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "field `{}` breaks `{}`: {}", v.field, v.rule, v.message)?;
        }
        Ok(())
    }
}

/// Every version of one event type.
#[derive(Debug)]
pub struct EventSchema {
    /// What holds for every version.
    pub meta: TypeMeta,
    /// The versions, by number.
    pub versions: BTreeMap<u32, Version>,
}

impl EventSchema {
    /// The newest version.
    pub fn latest(&self) -> &Version {
        self.versions
            .values()
            .next_back()
            .expect("a type is registered with at least one version")
    }
}

/// Why schemas could not be loaded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("schema file {file}: {reason}")]
pub struct LoadError {
    /// The file (path under `schemas/`, or on disk).
    pub file: String,
    /// What is wrong and what to do.
    pub reason: String,
}

/// The registry: event types, their versions, shared definitions.
#[derive(Debug, Default)]
pub struct Registry {
    types: BTreeMap<String, EventSchema>,
    definitions: BTreeMap<String, Value>,
}

impl Registry {
    /// The schemas compiled into this binary (the repository's `schemas/`).
    pub fn builtin() -> Result<Registry, Vec<LoadError>> {
        Registry::from_files(
            BUILTIN
                .iter()
                .map(|(path, text)| ((*path).to_owned(), (*text).to_owned())),
        )
    }

    /// The compiled-in schemas plus those in `dir` (same layout). A type in `dir` may add
    /// types or versions, not replace a compiled-in version.
    pub fn builtin_and_dir(dir: Option<&Path>) -> Result<Registry, Vec<LoadError>> {
        let mut files: Vec<(String, String)> = BUILTIN
            .iter()
            .map(|(path, text)| ((*path).to_owned(), (*text).to_owned()))
            .collect();
        if let Some(dir) = dir {
            let extra = read_dir(dir).map_err(|e| vec![e])?;
            for (path, text) in extra {
                if let Some((_, existing)) = files.iter().find(|(p, _)| *p == path) {
                    if *existing != text {
                        return Err(vec![LoadError {
                            file: format!("{}/{path}", dir.display()),
                            reason: "it differs from the compiled-in file of the same name; a \
                                     released version is never changed: add a new version"
                                .to_owned(),
                        }]);
                    }
                    continue;
                }
                files.push((path, text));
            }
        }
        Registry::from_files(files)
    }

    /// The schemas in `dir` alone (for `ovasabi schema check --dir`).
    pub fn from_dir(dir: &Path) -> Result<Registry, Vec<LoadError>> {
        Registry::from_files(read_dir(dir).map_err(|e| vec![e])?)
    }

    /// Builds a registry from `(path under schemas/, text)` pairs; reports every problem
    /// found, not only the first.
    pub fn from_files(
        files: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Registry, Vec<LoadError>> {
        let mut errors = Vec::new();
        let mut metas: BTreeMap<String, (String, TypeMeta)> = BTreeMap::new();
        let mut schemas: BTreeMap<String, BTreeMap<u32, (String, Value)>> = BTreeMap::new();
        let mut definitions = BTreeMap::new();
        let mut protos = BTreeMap::new();
        for (path, text) in files {
            if path.ends_with(".proto") {
                protos.insert(path, text);
                continue;
            }
            let fail = |reason: String| LoadError {
                file: path.clone(),
                reason,
            };
            let parts: Vec<&str> = path.split('/').collect();
            if parts.len() != 2 || !path.ends_with(".json") {
                if !path.ends_with(".json") {
                    continue;
                }
                errors.push(fail(
                    "expected `<event.type>/type.json`, `<event.type>/v<N>.json` or \
                     `_defs/<name>.json` (see schemas/README.md)"
                        .to_owned(),
                ));
                continue;
            }
            let value: Value = match serde_json::from_str(&text) {
                Ok(v) => v,
                Err(e) => {
                    errors.push(fail(format!("not valid JSON: {e}")));
                    continue;
                }
            };
            let (dir, file) = (parts[0], parts[1]);
            if dir == "_defs" {
                let name = file.trim_end_matches(".json");
                let expected = format!("urn:ovasabi:defs:{name}");
                match value.get("$id").and_then(Value::as_str) {
                    Some(id) if id == expected => {
                        definitions.insert(expected, value);
                    }
                    other => errors.push(fail(format!(
                        "`$id` must be `{expected}`, found {}",
                        other.map_or("none".to_owned(), |s| format!("`{s}`"))
                    ))),
                }
                continue;
            }
            if let Err(reason) = validate_event_type(dir) {
                errors.push(fail(format!(
                    "the directory is the event type, and {reason}"
                )));
                continue;
            }
            if file == "type.json" {
                match serde_json::from_value::<TypeMeta>(value) {
                    Ok(meta) if meta.event_type != dir => errors.push(fail(format!(
                        "`type` is `{}` but the directory is `{dir}`",
                        meta.event_type
                    ))),
                    Ok(meta) => {
                        if let Err(e) = validate_topic(&meta.topic) {
                            errors.push(fail(format!("`topic`: {e}")));
                        }
                        metas.insert(dir.to_owned(), (path.clone(), meta));
                    }
                    Err(e) => errors.push(fail(format!("not a type description: {e}"))),
                }
                continue;
            }
            let version = file
                .strip_prefix('v')
                .and_then(|v| v.strip_suffix(".json"))
                .and_then(|v| v.parse::<u32>().ok())
                .filter(|v| *v >= 1);
            let Some(version) = version else {
                errors.push(fail(
                    "a version file is named `v<N>.json` with N = 1, 2, …".to_owned(),
                ));
                continue;
            };
            let expected_id = schema_uri(dir, version);
            if value.get("$id").and_then(Value::as_str) != Some(expected_id.as_str()) {
                errors.push(fail(format!("`$id` must be `{expected_id}`")));
                continue;
            }
            schemas
                .entry(dir.to_owned())
                .or_default()
                .insert(version, (path.clone(), value));
        }

        let json_versions: BTreeSet<String> = schemas
            .values()
            .flat_map(|versions| versions.values().map(|(path, _)| path.clone()))
            .collect();
        let mut registry = Registry {
            types: BTreeMap::new(),
            definitions,
        };
        let resources = match registry.resources() {
            Ok(r) => r,
            Err(e) => {
                errors.push(e);
                return Err(errors);
            }
        };
        for (ty, versions) in schemas {
            let Some((_, meta)) = metas.remove(&ty) else {
                errors.push(LoadError {
                    file: format!("{ty}/type.json"),
                    reason: "missing: every event type has a type.json (see schemas/README.md)"
                        .to_owned(),
                });
                continue;
            };
            let mut compiled = BTreeMap::new();
            for (expected, (version, (path, schema))) in (1u32..).zip(versions) {
                if version != expected {
                    errors.push(LoadError {
                        file: path.clone(),
                        reason: format!(
                            "versions must run 1, 2, … without gaps; v{expected} is missing"
                        ),
                    });
                    break;
                }
                match compile(&resources, &schema) {
                    Ok(validator) => {
                        let v = Version {
                            version,
                            schema,
                            origin: path.clone(),
                            protobuf: None,
                            validator,
                        };
                        if v.examples().is_empty() {
                            errors.push(LoadError {
                                file: path.clone(),
                                reason: "it has no `examples`; give at least one valid payload"
                                    .to_owned(),
                            });
                        }
                        for (i, example) in v.examples().iter().enumerate() {
                            if let Err(e) = v.validate(&ty, example) {
                                errors.push(LoadError {
                                    file: path.clone(),
                                    reason: format!("example {i}: {e}"),
                                });
                            }
                        }
                        compiled.insert(version, v);
                    }
                    Err(reason) => errors.push(LoadError {
                        file: path.clone(),
                        reason,
                    }),
                }
            }
            if !compiled.is_empty() {
                registry.types.insert(
                    ty,
                    EventSchema {
                        meta,
                        versions: compiled,
                    },
                );
            }
        }
        let (encodings, proto_errors) = crate::protobuf::load(protos, &registry, &json_versions);
        errors.extend(proto_errors);
        for loaded in encodings {
            if let Some(version) = registry
                .types
                .get_mut(&loaded.event_type)
                .and_then(|schema| schema.versions.get_mut(&loaded.version))
            {
                version.protobuf = Some(loaded.proto);
            }
        }
        for (ty, (path, _)) in metas {
            errors.push(LoadError {
                file: path,
                reason: format!("type `{ty}` has no version: add {ty}/v1.json"),
            });
        }
        if errors.is_empty() {
            Ok(registry)
        } else {
            Err(errors)
        }
    }

    fn resources(&self) -> Result<jsonschema::Registry<'static>, LoadError> {
        let mut builder = jsonschema::Registry::new();
        for (id, schema) in &self.definitions {
            builder = builder.add(id, schema.clone()).map_err(|e| LoadError {
                file: format!("_defs ({id})"),
                reason: e.to_string(),
            })?;
        }
        builder.prepare().map_err(|e| LoadError {
            file: "_defs".to_owned(),
            reason: e.to_string(),
        })
    }

    /// Every event type, by name.
    pub fn types(&self) -> impl Iterator<Item = &EventSchema> {
        self.types.values()
    }

    /// One event type.
    pub fn get(&self, event_type: &str) -> Option<&EventSchema> {
        self.types.get(event_type)
    }

    /// One version of one type.
    pub fn version(&self, event_type: &str, version: u32) -> Option<&Version> {
        self.types.get(event_type)?.versions.get(&version)
    }

    /// The shared definitions, by `$id`.
    pub fn definitions(&self) -> &BTreeMap<String, Value> {
        &self.definitions
    }

    /// Resolves a `$ref` to a shared definition (`urn:ovasabi:defs:<name>`, with an optional
    /// `#/…` fragment), for the compatibility checker.
    pub fn resolve(&self, reference: &str) -> Option<Value> {
        let (base, fragment) = reference.split_once('#').unwrap_or((reference, ""));
        let document = self.definitions.get(base)?;
        if fragment.is_empty() {
            Some(document.clone())
        } else {
            document.pointer(fragment).cloned()
        }
    }
}

fn compile(
    resources: &jsonschema::Registry<'static>,
    schema: &Value,
) -> Result<jsonschema::Validator, String> {
    if schema.get("$schema").and_then(Value::as_str)
        != Some("https://json-schema.org/draft/2020-12/schema")
    {
        return Err(
            "`$schema` must be `https://json-schema.org/draft/2020-12/schema` (draft 2020-12)"
                .to_owned(),
        );
    }
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .with_registry(resources)
        .offline()
        .build(schema)
        .map_err(|e| format!("not a valid JSON Schema: {e}"))
}

/// Reads every `.json` and `.proto` file under `dir`, as `(path relative to dir, text)`.
fn read_dir(dir: &Path) -> Result<Vec<(String, String)>, LoadError> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) -> Result<(), LoadError> {
        let entries = std::fs::read_dir(dir).map_err(|e| LoadError {
            file: dir.display().to_string(),
            reason: format!("cannot read the directory: {e}"),
        })?;
        for entry in entries {
            let entry = entry.map_err(|e| LoadError {
                file: dir.display().to_string(),
                reason: e.to_string(),
            })?;
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out)?;
            } else if path
                .extension()
                .is_some_and(|e| e == "json" || e == "proto")
            {
                let text = std::fs::read_to_string(&path).map_err(|e| LoadError {
                    file: path.display().to_string(),
                    reason: format!("cannot read: {e}"),
                })?;
                let relative = path
                    .strip_prefix(root)
                    .map(|p| p.to_string_lossy().replace('\\', "/"))
                    .unwrap_or_default();
                out.push((relative, text));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_read_like_paths() {
        assert_eq!(field_name(""), "(payload)");
        assert_eq!(field_name("/email"), "email");
        assert_eq!(field_name("/items/0/sku"), "items[0].sku");
        assert_eq!(field_name("/a~1b/c~0d"), "a/b.c~d");
    }

    #[test]
    fn schema_uris_round_trip() {
        assert_eq!(
            schema_uri("user.registered", 2),
            "urn:ovasabi:schema:user.registered:2"
        );
        assert_eq!(
            parse_schema_uri("urn:ovasabi:schema:user.registered:2"),
            Some(("user.registered", 2))
        );
        assert_eq!(parse_schema_uri("https://example.com/s.json"), None);
        assert_eq!(
            parse_schema_uri("urn:ovasabi:schema:user.registered:x"),
            None
        );
    }
}
