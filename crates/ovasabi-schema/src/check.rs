//! `ovasabi schema check`: is every change to the schemas safe for the consumers and
//! producers deployed?
//!
//! Two checks, each finding naming the type, the version, the field and the rule:
//! - **History**: every version of a type against its earlier versions, under the type's
//!   compatibility mode ([`crate::compat`]).
//! - **Released state** (`--against REV`): the schemas at a git revision are what is
//!   deployed. Each released version must still exist, unchanged apart from documentation
//!   (`title`, `description`, `examples`, `x-…` annotations): a released version is never
//!   edited, a new version is added instead. A released type's compatibility mode must not
//!   be loosened silently either. New versions are then covered by the history check, which
//!   compares them with the released ones.
//!
//! Both apply the Protobuf wire rules ([`crate::protobuf::wire_check`]) too, with rule codes
//! `proto_…`: between consecutive versions that have a `.proto` (in every mode but `NONE`),
//! and between a released version's `.proto` and the current one, which must not be
//! removed either (`released_proto_removed`).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;
use serde_json::Value;

use crate::compat;
use crate::protobuf::{self, WireBreak};
use crate::registry::Registry;

/// One breaking change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The event type.
    pub event_type: String,
    /// The version that breaks.
    pub version: u32,
    /// What it was compared with: `v1`, or `released v1 (REV)`.
    pub against: String,
    /// The field (`items[].sku`), or `(schema)` for the whole schema.
    pub field: String,
    /// The rule's stable code (`required_added`, `released_version_changed`…).
    pub rule: String,
    /// The explanation, from the version's point of view (`v2 breaks BACKWARD against v1:
    /// field `email`: …`), with what to do.
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} [{}]", self.event_type, self.message, self.rule)
    }
}

/// Every version of every type against its earlier versions, under the type's mode.
pub fn history(registry: &Registry) -> Vec<Finding> {
    let resolve = |reference: &str| registry.resolve(reference);
    let mut findings = Vec::new();
    for schema in registry.types() {
        let versions: Vec<(u32, Value)> = schema
            .versions
            .values()
            .map(|v| (v.version, v.schema.clone()))
            .collect();
        for (i, (version, candidate)) in versions.iter().enumerate().skip(1) {
            let earlier = &versions[..i];
            for violation in compat::check(
                schema.meta.compatibility,
                earlier,
                (*version, candidate),
                &resolve,
            ) {
                findings.push(Finding {
                    event_type: schema.meta.event_type.clone(),
                    version: *version,
                    against: format!("v{}", violation.against),
                    field: field_or_payload(&violation.breaking.field),
                    rule: violation.breaking.rule.code().to_owned(),
                    message: violation.to_string(),
                });
            }
        }
        if schema.meta.compatibility == compat::Mode::None {
            continue;
        }
        let mut previous = None;
        for version in schema.versions.values() {
            let Some(proto) = &version.protobuf else {
                continue;
            };
            if let Some((earlier, earlier_proto)) = previous {
                for wire in protobuf::wire_check(earlier_proto, &proto.descriptor) {
                    findings.push(wire_finding(
                        &schema.meta.event_type,
                        version.version,
                        format!("v{earlier}"),
                        format!(
                            "v{} breaks Protobuf wire compatibility against v{earlier} ({})",
                            version.version, proto.origin
                        ),
                        wire,
                    ));
                }
            }
            previous = Some((version.version, &proto.descriptor));
        }
    }
    findings
}

/// A finding of the Protobuf wire rules.
fn wire_finding(
    event_type: &str,
    version: u32,
    against: String,
    prefix: String,
    wire: WireBreak,
) -> Finding {
    Finding {
        event_type: event_type.to_owned(),
        version,
        against,
        message: format!(
            "{prefix}: field `{}` (number {}): {}",
            wire.field, wire.number, wire.detail
        ),
        field: wire.field,
        rule: wire.rule.code().to_owned(),
    }
}

/// A checker's field, `(payload)` for the whole payload.
fn field_or_payload(field: &str) -> String {
    if field.is_empty() {
        "(payload)".to_owned()
    } else {
        field.to_owned()
    }
}

/// Keywords that document a schema without changing what it accepts.
fn is_annotation(key: &str) -> bool {
    matches!(
        key,
        "title" | "description" | "examples" | "$comment" | "default" | "deprecated"
    ) || key.starts_with("x-")
}

/// The schema without its annotations, at every depth.
fn without_annotations(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !is_annotation(k))
                .map(|(k, v)| {
                    // `properties` holds field names, not keywords: keep every one.
                    let v = if k == "properties" || k == "$defs" || k == "definitions" {
                        match v {
                            Value::Object(fields) => Value::Object(
                                fields
                                    .iter()
                                    .map(|(name, s)| (name.clone(), without_annotations(s)))
                                    .collect(),
                            ),
                            other => without_annotations(other),
                        }
                    } else {
                        without_annotations(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_annotations).collect()),
        other => other.clone(),
    }
}

/// Compares the current schemas with the released ones (`label` names the release, e.g.
/// the git revision).
pub fn against_released(current: &Registry, released: &Registry, label: &str) -> Vec<Finding> {
    let mut findings = Vec::new();
    for old in released.types() {
        let ty = &old.meta.event_type;
        let Some(new) = current.get(ty) else {
            findings.push(Finding {
                event_type: ty.clone(),
                version: old.latest().version,
                against: format!("released ({label})"),
                field: "(schema)".to_owned(),
                rule: "released_type_removed".to_owned(),
                message: format!(
                    "was released at {label} and is removed: consumers of the release may still \
                     receive it; keep its schemas (deprecate it in its description instead)"
                ),
            });
            continue;
        };
        if new.meta.compatibility != old.meta.compatibility {
            let loosened = strength(new.meta.compatibility) < strength(old.meta.compatibility);
            if loosened {
                findings.push(Finding {
                    event_type: ty.clone(),
                    version: new.latest().version,
                    against: format!("released ({label})"),
                    field: "(schema)".to_owned(),
                    rule: "compatibility_loosened".to_owned(),
                    message: format!(
                        "compatibility mode went from {} (released at {label}) to {}: consumers \
                         deployed with the release rely on the stricter one; keep it",
                        old.meta.compatibility, new.meta.compatibility
                    ),
                });
            }
        }
        for (version, released_version) in &old.versions {
            let Some(current_version) = new.versions.get(version) else {
                findings.push(Finding {
                    event_type: ty.clone(),
                    version: *version,
                    against: format!("released v{version} ({label})"),
                    field: "(schema)".to_owned(),
                    rule: "released_version_removed".to_owned(),
                    message: format!(
                        "v{version} was released at {label} and is removed: events written with \
                         it are still in the topics; restore it"
                    ),
                });
                continue;
            };
            if without_annotations(&current_version.schema)
                != without_annotations(&released_version.schema)
            {
                // Say which fields changed and how, with the checker's words.
                let resolve = |reference: &str| current.resolve(reference);
                let mut details: Vec<compat::Breaking> =
                    compat::can_read(&current_version.schema, &released_version.schema, &resolve);
                details.extend(compat::can_read(
                    &released_version.schema,
                    &current_version.schema,
                    &resolve,
                ));
                let (field, rule_detail) = details.first().map_or_else(
                    || ("(schema)".to_owned(), String::new()),
                    |b| {
                        let field = field_or_payload(&b.field);
                        (
                            field.clone(),
                            format!(": field `{field}`: {}: {}", b.rule, b.detail),
                        )
                    },
                );
                findings.push(Finding {
                    event_type: ty.clone(),
                    version: *version,
                    against: format!("released v{version} ({label})"),
                    field,
                    rule: "released_version_changed".to_owned(),
                    message: format!(
                        "v{version} was released at {label} and has been edited{rule_detail}; a \
                         released version is never changed: revert it and add v{} instead",
                        new.latest().version.max(old.latest().version) + 1
                    ),
                });
            }
            if let Some(released_proto) = &released_version.protobuf {
                let Some(current_proto) = &current_version.protobuf else {
                    findings.push(Finding {
                        event_type: ty.clone(),
                        version: *version,
                        against: format!("released v{version} ({label})"),
                        field: "(schema)".to_owned(),
                        rule: "released_proto_removed".to_owned(),
                        message: format!(
                            "v{version}'s .proto was released at {label} and is removed: \
                             producers of the release may still write v{version} as Protobuf; \
                             restore it"
                        ),
                    });
                    continue;
                };
                for wire in
                    protobuf::wire_check(&released_proto.descriptor, &current_proto.descriptor)
                {
                    findings.push(wire_finding(
                        ty,
                        *version,
                        format!("released v{version} ({label})"),
                        format!(
                            "v{version}'s .proto breaks Protobuf wire compatibility against the \
                             one released at {label}"
                        ),
                        wire,
                    ));
                }
            }
        }
    }
    findings
}

/// How much a mode promises: loosening it breaks deployed consumers' expectations.
fn strength(mode: compat::Mode) -> u8 {
    use compat::Mode::*;
    match mode {
        None => 0,
        Backward | Forward => 1,
        BackwardTransitive | ForwardTransitive | Full => 2,
        FullTransitive => 3,
    }
}

/// The `(path under schemas/, text)` of every schema file at git revision `rev`, for the
/// schemas directory `dir` (inside a git work tree).
pub fn files_at_revision(dir: &Path, rev: &str) -> Result<Vec<(String, String)>, String> {
    let git = |args: &[&str]| -> Result<String, String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .map_err(|e| format!("cannot run git: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let prefix = git(&["rev-parse", "--show-prefix"])
        .map_err(|e| format!("{} is not inside a git work tree: {e}", dir.display()))?;
    let prefix = prefix.trim().to_owned();
    git(&[
        "rev-parse",
        "--verify",
        "--quiet",
        &format!("{rev}^{{commit}}"),
    ])
    .map_err(|_| format!("`{rev}` is not a git revision here (a tag, branch or commit)"))?;
    let listing = git(&[
        "ls-tree",
        "-r",
        "--name-only",
        "--full-name",
        rev,
        "--",
        ".",
    ])?;
    let mut files = Vec::new();
    for path in listing
        .lines()
        .filter(|p| p.ends_with(".json") || p.ends_with(".proto"))
    {
        let text = git(&["show", &format!("{rev}:{path}")])?;
        let relative = path.strip_prefix(&prefix).unwrap_or(path).to_owned();
        files.push((relative, text));
    }
    Ok(files)
}

/// The repository's `schemas/` directory, found from `start` upwards.
pub fn find_schemas_dir(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|d| d.join("schemas"))
        .find(|d| d.join("README.md").is_file() && d.is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn annotations_are_ignored_but_fields_named_like_them_are_not() {
        let a = json!({"type": "object", "description": "x", "properties": {
            "title": {"type": "string", "description": "the title"}}});
        let b = json!({"type": "object", "description": "y", "properties": {
            "title": {"type": "string", "description": "a title"}}});
        assert_eq!(without_annotations(&a), without_annotations(&b));
        let c = json!({"type": "object", "properties": {}});
        assert_ne!(without_annotations(&a), without_annotations(&c));
    }
}
