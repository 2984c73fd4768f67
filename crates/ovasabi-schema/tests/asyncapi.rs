//! The AsyncAPI document of the compiled-in schemas: complete, and valid for the official
//! AsyncAPI parser (`tools/asyncapi/validate.mjs`) when its Node packages are installed.
//!
//! Without them the parser step is skipped with a note; with `OVASABI_REQUIRE_SERVICES=1`
//! (CI) it is required. `OVASABI_ASYNCAPI_OUT=<dir>` keeps the generated `asyncapi.json`,
//! `asyncapi.yaml` and `catalog.md` in `<dir>`.

use std::path::{Path, PathBuf};
use std::process::Command;

use ovasabi_schema::{asyncapi, catalog, Registry};
use serde_json::Value;

fn registry() -> Registry {
    Registry::builtin().unwrap_or_else(|errors| {
        panic!(
            "the compiled-in schemas load: {}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

/// Follows a local `$ref` (`#/components/…`) in `doc`.
fn follow<'a>(doc: &'a Value, reference: &Value) -> &'a Value {
    let reference = reference["$ref"].as_str().expect("a $ref");
    let pointer = reference.strip_prefix('#').expect("a local $ref");
    doc.pointer(pointer)
        .unwrap_or_else(|| panic!("{reference} resolves in the document"))
}

#[test]
fn every_type_version_and_topic_is_in_the_document() {
    let registry = registry();
    let doc = asyncapi::document(&registry);
    assert_eq!(doc["asyncapi"], "3.0.0");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(doc["defaultContentType"], "application/json");
    assert!(registry.types().count() > 0, "schemas/ holds event types");

    let mut expected_messages = 0;
    for ty in registry.types() {
        let meta = &ty.meta;
        let channel = &doc["channels"][&meta.topic];
        assert_eq!(
            channel["address"],
            meta.topic.as_str(),
            "channel {}",
            meta.topic
        );
        let dlq = &doc["channels"][format!("{}.dlq", meta.topic)];
        assert_eq!(dlq["address"], format!("{}.dlq", meta.topic));
        for version in ty.versions.values() {
            expected_messages += 1;
            let id = asyncapi::message_id(&meta.event_type, version.version);
            let message = &doc["components"]["messages"][&id];
            assert_eq!(message["name"], id.as_str(), "message {id}");
            assert_eq!(message["contentType"], "application/json");
            assert_eq!(
                message["x-ovasabi-dataschema"],
                format!("urn:ovasabi:schema:{}:{}", meta.event_type, version.version)
            );
            let payload = follow(&doc, &message["payload"]);
            assert!(payload.is_object(), "{id}: payload schema");
            assert!(payload.get("$schema").is_none() && payload.get("$defs").is_none());
            assert_eq!(
                message["examples"].as_array().map(Vec::len),
                Some(version.examples().len()),
                "{id}: every example"
            );
            for (i, example) in version.examples().iter().enumerate() {
                assert_eq!(&message["examples"][i]["payload"], example);
            }
            assert!(
                std::ptr::eq(follow(&doc, &channel["messages"][&id]), message),
                "{id} is a message of {}",
                meta.topic
            );
            assert!(std::ptr::eq(follow(&doc, &dlq["messages"][&id]), message));
            for (services, action) in [(&meta.producers, "send"), (&meta.consumers, "receive")] {
                for service in services {
                    let op = &doc["operations"][format!("{service}.{action}.{}", meta.topic)];
                    assert_eq!(op["action"], action, "{service} {action}s {id}");
                    assert!(
                        std::ptr::eq(follow(&doc, &op["channel"]), channel),
                        "{service} {action} on {}",
                        meta.topic
                    );
                    let refs = op["messages"].as_array().expect("operation messages");
                    assert!(
                        refs.iter()
                            .any(|r| std::ptr::eq(follow(&doc, follow(&doc, r)), message)),
                        "{service} {action}s {id}"
                    );
                }
            }
        }
    }
    assert_eq!(
        doc["components"]["messages"].as_object().map(|m| m.len()),
        Some(expected_messages),
        "one message per type and version, no more"
    );
    for id in registry.definitions().keys() {
        let name = asyncapi::definition_name(id);
        assert!(
            doc["components"]["schemas"][&name].is_object(),
            "{id} is components.schemas.{name}"
        );
    }
}

#[test]
fn every_reference_resolves_inside_the_document() {
    fn walk(doc: &Value, value: &Value, at: &str) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(reference)) = map.get("$ref") {
                    let pointer = reference
                        .strip_prefix('#')
                        .unwrap_or_else(|| panic!("{at}: {reference} is not a local $ref"));
                    assert!(doc.pointer(pointer).is_some(), "{at}: {reference} resolves");
                }
                for (key, child) in map {
                    walk(doc, child, &format!("{at}/{key}"));
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(doc, child, &format!("{at}/{i}"));
                }
            }
            _ => {}
        }
    }
    let doc = asyncapi::document(&registry());
    walk(&doc, &doc, "#");
}

#[test]
fn the_document_is_deterministic() {
    let registry = registry();
    let doc = asyncapi::document(&registry);
    assert_eq!(doc, asyncapi::document(&registry));
    assert_eq!(asyncapi::to_yaml(&doc), asyncapi::to_yaml(&doc));
}

#[test]
fn the_catalog_lists_every_type_and_version() {
    let registry = registry();
    let text = catalog::markdown(&registry);
    if let Some(dir) = std::env::var_os("OVASABI_ASYNCAPI_OUT") {
        std::fs::create_dir_all(&dir).expect("create the output directory");
        std::fs::write(Path::new(&dir).join("catalog.md"), &text).expect("write");
    }
    for ty in registry.types() {
        assert!(text.contains(&format!("### `{}`\n", ty.meta.event_type)));
        for version in ty.versions.keys() {
            assert!(
                text.contains(&format!("#### `{}` v{version}\n", ty.meta.event_type)),
                "{} v{version}",
                ty.meta.event_type
            );
        }
    }
}

fn tools_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/asyncapi")
}

/// Runs `node validate.mjs <args>`, printing its output; panics if it fails.
fn validate(tools: &Path, args: &[&Path], extra: &[&str]) {
    let output = Command::new("node")
        .arg(tools.join("validate.mjs"))
        .args(args)
        .args(extra)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `node` (Node.js 20 or later is needed): {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}{stderr}");
    assert!(
        output.status.success(),
        "the AsyncAPI parser rejects {}:\n{stdout}{stderr}",
        args[0].display()
    );
}

#[test]
fn the_official_parser_accepts_the_document() {
    let tools = tools_dir();
    let required = std::env::var("OVASABI_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
    if !tools.join("node_modules/@asyncapi/parser").is_dir() {
        if required {
            panic!(
                "OVASABI_REQUIRE_SERVICES=1 but the AsyncAPI parser is not installed: run \
                 `(cd tools/asyncapi && npm ci --no-audit --no-fund)`"
            );
        }
        println!(
            "skipped: the AsyncAPI parser is not installed; run (cd tools/asyncapi && npm ci)"
        );
        return;
    }

    let doc = asyncapi::document(&registry());
    // OVASABI_ASYNCAPI_OUT=<dir> keeps the files there, to read or to try other tools on.
    let keep = std::env::var_os("OVASABI_ASYNCAPI_OUT").map(PathBuf::from);
    let dir = keep.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("ovasabi-asyncapi-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir).expect("create the output directory");
    let json = dir.join("asyncapi.json");
    let yaml = dir.join("asyncapi.yaml");
    std::fs::write(&json, serde_json::to_string_pretty(&doc).expect("JSON")).expect("write");
    std::fs::write(&yaml, asyncapi::to_yaml(&doc)).expect("write");

    validate(&tools, &[&json], &[]);
    // The YAML rendering is valid too, and holds exactly the JSON document's data.
    validate(
        &tools,
        &[&yaml],
        &["--same-as", json.to_str().expect("UTF-8 path")],
    );
    if keep.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
