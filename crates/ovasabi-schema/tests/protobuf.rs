//! Protobuf as a second encoding: every user and commerce version has a `.proto` that carries
//! the same data as its JSON Schema (each example goes JSON → Protobuf → JSON unchanged); a
//! Protobuf event is checked at publish against the same contract, a broken one refused
//! naming the field; the wire-compatibility rules each fire on a fixture pair, and a
//! compatible change passes; loading refuses a `.proto` that breaks the layout.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ovasabi_core::{Bus, BusError, Event, Publisher, SubscribeOptions, Subscriber};
use ovasabi_embedded::{EmbeddedBus, EmbeddedConfig};
use ovasabi_schema::check;
use ovasabi_schema::protobuf::{self, wire_check, ProtoVersion, WireRule};
use ovasabi_schema::{Contracts, Registry, Upcasters, ValidatingBus};
use prost_reflect::prost::Message as _;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use serde_json::{json, Value};

/// Every version that has a `.proto`: the user and commerce events.
const WITH_PROTO: &[(&str, u32)] = &[
    ("user.registered", 1),
    ("user.registered", 2),
    ("user.registered", 3),
    ("user.profile_updated", 1),
    ("user.email_changed", 1),
    ("user.deleted", 1),
    ("order.placed", 1),
    ("order.placed", 2),
    ("payment.completed", 1),
    ("payment.failed", 1),
    ("payment.refunded", 1),
    ("order.shipped", 1),
    ("order.cancelled", 1),
];

fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

fn loaded(result: Result<Registry, Vec<ovasabi_schema::LoadError>>) -> Registry {
    result.unwrap_or_else(|errors| {
        panic!(
            "the schemas load: {}",
            errors
                .iter()
                .map(|e| e.to_string() + "\n")
                .collect::<String>()
        )
    })
}

fn registry() -> Arc<Registry> {
    Arc::new(loaded(Registry::builtin()))
}

fn proto<'a>(registry: &'a Registry, ty: &str, version: u32) -> &'a ProtoVersion {
    registry
        .version(ty, version)
        .unwrap_or_else(|| panic!("{ty} v{version} is registered"))
        .protobuf
        .as_ref()
        .unwrap_or_else(|| panic!("{ty} v{version} has a .proto"))
}

/// The example written as Protobuf through `DynamicMessage` (from its JSON form).
fn encode(proto: &ProtoVersion, example: &Value) -> Vec<u8> {
    DynamicMessage::deserialize(proto.descriptor.clone(), example)
        .unwrap_or_else(|e| panic!("{}: {e}: {example}", proto.origin))
        .encode_to_vec()
}

#[test]
fn the_user_and_commerce_versions_have_a_proto_named_by_the_package_scheme() {
    let registry = registry();
    for &(ty, version) in WITH_PROTO {
        let proto = proto(&registry, ty, version);
        assert_eq!(proto.origin, format!("{ty}/v{version}.proto"));
        assert_eq!(
            proto.descriptor.full_name(),
            format!(
                "ovasabi.events.{ty}.v{version}.{}",
                protobuf::message_name(ty)
            )
        );
    }
    assert_eq!(
        protobuf::message_name("user.profile_updated"),
        "UserProfileUpdated"
    );
    // The directory on disk holds the same files as the binary.
    let from_disk = loaded(Registry::from_dir(&schemas_dir()));
    for &(ty, version) in WITH_PROTO {
        proto(&from_disk, ty, version);
    }
    // Types without a .proto have no encoding.
    assert!(registry
        .version("content.posted", 1)
        .unwrap()
        .protobuf
        .is_none());
}

#[test]
fn every_example_goes_json_protobuf_json_unchanged_and_validates() {
    let registry = registry();
    for &(ty, version) in WITH_PROTO {
        let schema = registry.version(ty, version).unwrap();
        let proto = proto(&registry, ty, version);
        for example in schema.examples() {
            let bytes = encode(proto, example);
            let back = proto
                .decode(&bytes)
                .unwrap_or_else(|v| panic!("{ty} v{version}: {v:?}"));
            assert_eq!(&back, example, "{ty} v{version}");
            schema.validate(ty, &back).unwrap();
            // And the module's own encoder writes the same bytes.
            assert_eq!(proto.encode(example).unwrap(), bytes, "{ty} v{version}");
        }
    }
}

#[test]
fn an_empty_message_is_refused_naming_every_required_field_that_cannot_be_zero() {
    let registry = registry();
    for &(ty, version) in WITH_PROTO {
        let schema = registry.version(ty, version).unwrap();
        let data = proto(&registry, ty, version).decode(&[]).unwrap();
        let error = schema.validate(ty, &data).unwrap_err().to_string();
        for name in schema.schema["required"].as_array().unwrap() {
            let name = name.as_str().unwrap();
            // `false` is a value of a plain bool: proto3 cannot tell it from absent.
            if schema.schema["properties"][name]["type"] == "boolean" {
                continue;
            }
            assert!(
                error.contains(&format!("field `{name}` breaks")),
                "{ty} v{version}: {name}: {error}"
            );
        }
    }
}

async fn bus(dir: &tempfile::TempDir) -> Arc<dyn Bus> {
    Arc::new(
        EmbeddedBus::open(EmbeddedConfig::new(dir.path()))
            .await
            .unwrap(),
    )
}

fn protobuf_event(ty: &str, bytes: Vec<u8>) -> Event {
    Event::new(ty, "/test").with_data(protobuf::CONTENT_TYPE, bytes)
}

/// The payload's bytes with one more field appended (key, then value bytes).
fn with_field(mut bytes: Vec<u8>, key: u8, value: &[u8]) -> Vec<u8> {
    bytes.push(key);
    bytes.extend_from_slice(value);
    bytes
}

fn refusal(err: &BusError) -> String {
    let BusError::InvalidEvent(e) = err else {
        panic!("{err:?}")
    };
    e.reason.clone()
}

#[tokio::test]
async fn a_protobuf_event_is_checked_at_publish_against_the_same_contract() {
    let dir = tempfile::tempdir().unwrap();
    let registry = registry();
    let bus = ValidatingBus::new(
        bus(&dir).await,
        Contracts::new(registry.clone(), Upcasters::new()),
    );
    let ty = "order.placed";
    let proto = proto(&registry, ty, 2);
    let example = registry.version(ty, 2).unwrap().examples()[1].clone();
    let valid = encode(proto, &example);

    // Accepted, stored as written, its dataschema set to the version checked.
    bus.publish("commerce.events", protobuf_event(ty, valid.clone()))
        .await
        .unwrap();
    let mut sub = bus
        .subscribe(SubscribeOptions::new("check", ["commerce.events"]).unwrap())
        .await
        .unwrap();
    let delivery = sub.next().await.unwrap().unwrap();
    let stored = delivery.event();
    assert_eq!(
        stored.dataschema.as_deref(),
        Some("urn:ovasabi:schema:order.placed:2")
    );
    assert_eq!(
        stored.datacontenttype.as_deref(),
        Some("application/protobuf")
    );
    assert_eq!(stored.data.as_deref(), Some(valid.as_slice()));
    assert_eq!(
        proto.decode(stored.data.as_ref().unwrap()).unwrap(),
        example
    );

    // `application/x-protobuf` too, and an unknown field (a newer version's) is ignored.
    let newer = with_field(valid.clone(), 0x98, &[0x06, 0x01]); // number 99, varint 1
    let event = Event::new(ty, "/test").with_data("application/x-protobuf", newer);
    bus.publish("commerce.events", event).await.unwrap();

    // A required string left out reads as "" and breaks its rule, named.
    let mut missing = example.clone();
    missing.as_object_mut().unwrap().remove("customer_id");
    let err = bus
        .publish(
            "commerce.events",
            protobuf_event(ty, encode(proto, &missing)),
        )
        .await
        .unwrap_err();
    assert!(err.is_user_error());
    assert!(
        refusal(&err).contains("field `customer_id` breaks `minLength`"),
        "{err}"
    );
    // A required message left out breaks `required`.
    let mut missing = example.clone();
    missing.as_object_mut().unwrap().remove("placed_at");
    let err = bus
        .publish(
            "commerce.events",
            protobuf_event(ty, encode(proto, &missing)),
        )
        .await
        .unwrap_err();
    assert!(
        refusal(&err).contains("field `placed_at` breaks `required`"),
        "{err}"
    );
    // A value that breaks the JSON Schema (the coupon's pattern), in a nested field too.
    let mut wrong = example.clone();
    wrong["coupon_code"] = json!("no spaces allowed");
    wrong["items"][0]["quantity"] = json!(0);
    let reason = refusal(
        &bus.publish("commerce.events", protobuf_event(ty, encode(proto, &wrong)))
            .await
            .unwrap_err(),
    );
    assert!(
        reason.contains("field `coupon_code` breaks `pattern`"),
        "{reason}"
    );
    assert!(
        reason.contains("field `items[0].quantity` breaks `minimum`"),
        "{reason}"
    );

    // Corrupt bytes: the wrong wire type for `order_id` (number 1, a string) …
    let reason = refusal(
        &bus.publish("commerce.events", protobuf_event(ty, vec![0x08, 0x01]))
            .await
            .unwrap_err(),
    );
    assert!(
        reason.contains("field `order_id` breaks `protobuf`"),
        "{reason}"
    );
    // … a truncated payload …
    let reason = refusal(
        &bus.publish(
            "commerce.events",
            protobuf_event(ty, valid[..valid.len() - 3].to_vec()),
        )
        .await
        .unwrap_err(),
    );
    assert!(reason.contains("truncated"), "{reason}");
    // … a string that is not UTF-8 (coupon_code is number 7) …
    let reason = refusal(
        &bus.publish(
            "commerce.events",
            protobuf_event(
                ty,
                with_field(valid.clone(), 7 << 3 | 2, &[0x02, 0xff, 0xfe]),
            ),
        )
        .await
        .unwrap_err(),
    );
    assert!(
        reason.contains("field `coupon_code` breaks `protobuf`"),
        "{reason}"
    );
    assert!(reason.contains("UTF-8"), "{reason}");
    // … a nested field of the wrong wire type (items[0].sku) …
    let reason = refusal(
        &bus.publish(
            "commerce.events",
            protobuf_event(ty, vec![3 << 3 | 2, 0x02, 0x08, 0x01]),
        )
        .await
        .unwrap_err(),
    );
    assert!(
        reason.contains("field `items[0].sku` breaks `protobuf`"),
        "{reason}"
    );
    // … and a field number money does not declare: money is closed, like its JSON Schema.
    let reason = refusal(
        &bus.publish(
            "commerce.events",
            protobuf_event(
                ty,
                with_field(valid.clone(), 4 << 3 | 2, &[0x02, 3 << 3, 0x05]),
            ),
        )
        .await
        .unwrap_err(),
    );
    assert!(
        reason.contains("field `total` breaks `additionalProperties`"),
        "{reason}"
    );

    // A registered type without a .proto refuses Protobuf, saying why.
    let posted = registry.version("content.posted", 1).unwrap().examples()[0].clone();
    let err = bus
        .publish("content.events", protobuf_event("content.posted", vec![]))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("content.posted v1 has no Protobuf encoding (content.posted/v1.proto)"),
        "{err}"
    );
    // JSON is unchanged for it, and for the types that have a .proto.
    bus.publish(
        "content.events",
        Event::new("content.posted", "/test").with_json(&posted),
    )
    .await
    .unwrap();
    bus.publish(
        "commerce.events",
        Event::new(ty, "/test").with_json(&example),
    )
    .await
    .unwrap();
    drop(sub);
    bus.close().await.unwrap();
}

#[test]
fn a_protobuf_event_upcast_stays_protobuf_in_the_new_version() {
    let registry = registry();
    let ty = "user.registered";
    let v1 = registry.version(ty, 1).unwrap();
    let contracts = Contracts::new(
        registry.clone(),
        Upcasters::new()
            .register(ty, 1, Ok)
            .register(ty, 2, |mut data| {
                data["locale"] = json!("en");
                Ok(data)
            }),
    );
    let mut event = protobuf_event(ty, encode(proto(&registry, ty, 1), &v1.examples()[0]));
    event.dataschema = Some(format!("urn:ovasabi:schema:{ty}:1"));
    assert_eq!(contracts.check(&event).unwrap(), Some(1));
    let upcast = contracts.upcast(&event, 1, 3).unwrap();
    assert_eq!(
        upcast.datacontenttype.as_deref(),
        Some("application/protobuf")
    );
    assert_eq!(contracts.check(&upcast).unwrap(), Some(3));
    let data = proto(&registry, ty, 3)
        .decode(upcast.data.as_ref().unwrap())
        .unwrap();
    assert_eq!(data["locale"], "en");
    assert_eq!(data["user_id"], v1.examples()[0]["user_id"]);
}

// ---------------------------------------------------------------------------------------
// The wire rules.

/// Compiles a one-message `.proto` (package `t`, message `M`) from its body.
fn message(body: &str) -> MessageDescriptor {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("syntax = \"proto3\";\npackage t;\nmessage M {{\n{body}\n}}\n");
    std::fs::write(dir.path().join("m.proto"), text).unwrap();
    protox::compile(["m.proto"], [dir.path()])
        .map(|set| {
            prost_reflect::DescriptorPool::from_file_descriptor_set(set)
                .unwrap()
                .get_message_by_name("t.M")
                .unwrap()
        })
        .unwrap_or_else(|e| panic!("{e}: {body}"))
}

const BASE: &str = "
  message Inner { string x = 1; }
  string a = 1;
  optional string b = 2;
  int64 c = 3;
  repeated string d = 4;
  Inner e = 5;
  reserved 9, 20 to 29;
  reserved \"old\";
";

#[test]
fn each_wire_rule_fires_on_its_fixture_and_compatible_changes_pass() {
    let base = message(BASE);
    // (what changed, the candidate, the rule expected (None: compatible), the field named)
    let cases: &[(&str, String, Option<WireRule>, &str)] = &[
        (
            "a number reused by another field",
            BASE.replace("optional string b = 2;", "optional string nickname = 2;"),
            Some(WireRule::FieldNumberReused),
            "nickname",
        ),
        (
            "a reserved number used again",
            BASE.replace("reserved 9, 20 to 29;", "reserved 20 to 29; string y = 9;"),
            Some(WireRule::FieldNumberReused),
            "y",
        ),
        (
            "a reserved range's number used again",
            BASE.replace("20 to 29;", "20 to 24, 26 to 29; string y = 25;"),
            Some(WireRule::FieldNumberReused),
            "y",
        ),
        (
            "int64 → string",
            BASE.replace("int64 c = 3;", "string c = 3;"),
            Some(WireRule::FieldTypeChanged),
            "c",
        ),
        (
            "int64 → int32 (no wire-compatible families)",
            BASE.replace("int64 c = 3;", "int32 c = 3;"),
            Some(WireRule::FieldTypeChanged),
            "c",
        ),
        (
            "message → scalar",
            BASE.replace("Inner e = 5;", "string e = 5;"),
            Some(WireRule::FieldTypeChanged),
            "e",
        ),
        (
            "a nested field's type",
            BASE.replace("string x = 1;", "int32 x = 1;"),
            Some(WireRule::FieldTypeChanged),
            "e.x",
        ),
        (
            "a field removed, its number not reserved",
            BASE.replace("string a = 1;", ""),
            Some(WireRule::RemovedFieldNotReserved),
            "a",
        ),
        (
            "a reservation dropped",
            BASE.replace("reserved 9, 20 to 29;", "reserved 20 to 29;"),
            Some(WireRule::RemovedFieldNotReserved),
            "(payload)",
        ),
        (
            "optional → plain",
            BASE.replace("optional string b = 2;", "string b = 2;"),
            Some(WireRule::CardinalityChanged),
            "b",
        ),
        (
            "plain → optional",
            BASE.replace("string a = 1;", "optional string a = 1;"),
            Some(WireRule::CardinalityChanged),
            "a",
        ),
        (
            "repeated → singular",
            BASE.replace("repeated string d = 4;", "string d = 4;"),
            Some(WireRule::CardinalityChanged),
            "d",
        ),
        (
            "an optional field added with a new number",
            BASE.to_owned() + "optional string f = 6;",
            None,
            "",
        ),
        (
            "a field removed and its number reserved",
            BASE.replace("string a = 1;", "reserved 1; reserved \"a\";"),
            None,
            "",
        ),
        (
            "a nested field added, a field renamed in a comment only",
            BASE.replace(
                "string x = 1;",
                "string x = 1; // renamed nothing\n optional int32 y = 2;",
            ),
            None,
            "",
        ),
    ];
    for (what, candidate, rule, field) in cases {
        let breaks = wire_check(&base, &message(candidate));
        match rule {
            None => assert!(breaks.is_empty(), "{what}: {breaks:?}"),
            Some(rule) => {
                assert!(
                    breaks.iter().any(|b| b.rule == *rule && b.field == *field),
                    "{what}: expected {} on `{field}`, got {breaks:?}",
                    rule.code()
                );
            }
        }
    }
    assert!(wire_check(&base, &base).is_empty());
}

/// The repository's files, with `edit` applied (path, new text; `None` removes the file).
fn files_with(edits: &[(&str, Option<String>)]) -> Vec<(String, String)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if path
                .extension()
                .is_some_and(|e| e == "json" || e == "proto")
            {
                let relative = path.strip_prefix(root).unwrap().to_string_lossy();
                out.push((
                    relative.replace('\\', "/"),
                    std::fs::read_to_string(&path).unwrap(),
                ));
            }
        }
    }
    let mut files = Vec::new();
    walk(&schemas_dir(), &schemas_dir(), &mut files);
    for (path, text) in edits {
        files.retain(|(p, _)| p != path);
        if let Some(text) = text {
            files.push(((*path).to_owned(), text.clone()));
        }
    }
    files
}

fn read(path: &str) -> String {
    std::fs::read_to_string(schemas_dir().join(path)).unwrap()
}

#[test]
fn schema_check_reports_wire_breaks_in_the_history_and_against_the_release() {
    // History: a v2 of user.profile_updated gives `bio`'s number to `nickname`. As JSON the
    // change is fine (BACKWARD: an optional field swapped for another); on the wire it is not.
    let mut v2: Value = serde_json::from_str(&read("user.profile_updated/v1.json")).unwrap();
    v2["$id"] = json!("urn:ovasabi:schema:user.profile_updated:2");
    v2["title"] = json!("user.profile_updated v2");
    v2["properties"].as_object_mut().unwrap().remove("bio");
    v2["properties"]["nickname"] = json!({"type": "string", "description": "A nickname."});
    for example in v2["examples"].as_array_mut().unwrap() {
        example.as_object_mut().unwrap().remove("bio");
    }
    let proto_v2 = read("user.profile_updated/v1.proto")
        .replace(".v1;", ".v2;")
        .replace("optional string bio = 5;", "optional string nickname = 5;");
    let current = loaded(Registry::from_files(files_with(&[
        (
            "user.profile_updated/v2.json",
            Some(serde_json::to_string_pretty(&v2).unwrap()),
        ),
        ("user.profile_updated/v2.proto", Some(proto_v2.clone())),
    ])));
    let findings = check::history(&current);
    assert_eq!(findings.len(), 1, "{findings:#?}");
    let finding = &findings[0];
    assert_eq!(finding.event_type, "user.profile_updated");
    assert_eq!(finding.version, 2);
    assert_eq!(finding.against, "v1");
    assert_eq!(finding.rule, "proto_field_number_reused");
    assert_eq!(finding.field, "nickname");
    assert!(
        finding
            .to_string()
            .contains("user.profile_updated v2 breaks Protobuf wire compatibility against v1")
            && finding.message.contains("`bio`"),
        "{finding}"
    );
    // Fixed: a new number, the old one reserved.
    let fixed = proto_v2.replace(
        "optional string nickname = 5;",
        "reserved 5;\n  reserved \"bio\";\n  optional string nickname = 8;",
    );
    let current = loaded(Registry::from_files(files_with(&[
        (
            "user.profile_updated/v2.json",
            Some(serde_json::to_string_pretty(&v2).unwrap()),
        ),
        ("user.profile_updated/v2.proto", Some(fixed)),
    ])));
    assert!(check::history(&current).is_empty());

    // Against the release: v1's .proto edited (two numbers swapped), then removed.
    let released = loaded(Registry::from_files(files_with(&[])));
    let swapped = read("user.registered/v1.proto")
        .replace("string user_id = 1;", "string user_id = 2;")
        .replace("string email = 2;", "string email = 1;");
    let current = loaded(Registry::from_files(files_with(&[(
        "user.registered/v1.proto",
        Some(swapped),
    )])));
    let findings = check::against_released(&current, &released, "v1.0.0");
    assert!(
        findings
            .iter()
            .any(|f| f.rule == "proto_field_number_reused"
                && f.version == 1
                && f.against == "released v1 (v1.0.0)"
                && f.field == "email"),
        "{findings:#?}"
    );
    let current = loaded(Registry::from_files(files_with(&[(
        "user.registered/v1.proto",
        None,
    )])));
    let findings = check::against_released(&current, &released, "v1.0.0");
    assert_eq!(
        findings.iter().map(|f| f.rule.as_str()).collect::<Vec<_>>(),
        ["released_proto_removed"],
        "{findings:#?}"
    );
    assert!(check::against_released(&released, &released, "v1.0.0").is_empty());
}

// ---------------------------------------------------------------------------------------
// Loading.

#[test]
fn loading_refuses_a_proto_that_breaks_the_layout_naming_the_file() {
    let v1 = read("user.email_changed/v1.proto");
    let cases: &[(&str, &str, String, &str)] = &[
        (
            "no JSON Schema beside it",
            "user.email_changed/v2.proto",
            v1.replace(".v1;", ".v2;"),
            "there is no user.email_changed/v2.json beside it",
        ),
        (
            "a syntax error, with its line",
            "user.email_changed/v1.proto",
            v1.replace("bool verified = 4;", "bool verified = 4"),
            "not valid Protobuf: line ",
        ),
        (
            "the wrong package",
            "user.email_changed/v1.proto",
            v1.replace(".v1;", ".v9;"),
            "the package must be `ovasabi.events.user.email_changed.v1`",
        ),
        (
            "the wrong message name",
            "user.email_changed/v1.proto",
            v1.replace("message UserEmailChanged", "message EmailChanged"),
            "the message must be named `UserEmailChanged`",
        ),
        (
            "a property without a field",
            "user.email_changed/v1.proto",
            v1.replace("bool verified = 4;", ""),
            "property `verified` has no field",
        ),
        (
            "a field without a property",
            "user.email_changed/v1.proto",
            v1.replace(
                "bool verified = 4;",
                "bool verified = 4;\n  string extra = 6;",
            ),
            "`extra` (field number 6) is not a property",
        ),
        (
            "a type that is not the JSON Schema's",
            "user.email_changed/v1.proto",
            v1.replace("bool verified = 4;", "string verified = 4;"),
            "`verified` is `string` in the .proto but `boolean`",
        ),
        (
            "a required field declared optional",
            "user.email_changed/v1.proto",
            v1.replace("bool verified = 4;", "optional bool verified = 4;"),
            "`verified` is required by the JSON Schema",
        ),
        (
            "an optional field without presence",
            "order.shipped/v1.proto",
            read("order.shipped/v1.proto").replace(
                "optional string tracking_url = 5;",
                "string tracking_url = 5;",
            ),
            "`tracking_url` is optional in the JSON Schema: declare it `optional`",
        ),
    ];
    for (what, path, text, expected) in cases {
        let errors =
            Registry::from_files(files_with(&[(*path, Some(text.clone()))])).expect_err(what);
        assert!(
            errors
                .iter()
                .any(|e| e.file == *path && e.reason.contains(expected)),
            "{what}: expected `{expected}` on {path}, got {errors:#?}"
        );
    }
}
