//! `ovasabi schema …` and contracts at the command line: a breaking change fails `schema
//! check` naming the field and the rule, an edited released version fails `--against`, an
//! invalid payload is refused at publish.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_ovasabi");

fn repo_schemas() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

fn ovasabi(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .env_remove("OVASABI_DATA_DIR")
        .env_remove("OVASABI_SCHEMAS_DIR")
        .env_remove("OVASABI_BUS")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run ovasabi")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn write_json(path: &Path, value: &serde_json::Value) {
    std::fs::write(path, serde_json::to_string_pretty(value).unwrap()).unwrap();
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn the_repositorys_schemas_pass_the_check() {
    let tmp = tempfile::tempdir().unwrap();
    let out = ovasabi(
        tmp.path(),
        &["schema", "check", "--dir", repo_schemas().to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("schemas ok"), "{}", text(&out));
}

/// A v2 of `user.profile_updated` (BACKWARD) that adds a required field: a consumer on v2
/// cannot read the v1 events already in the topic.
#[test]
fn a_breaking_new_version_fails_the_check_naming_the_field_and_the_rule() {
    let tmp = tempfile::tempdir().unwrap();
    let schemas = tmp.path().join("schemas");
    copy_dir(&repo_schemas(), &schemas);
    let ty = schemas.join("user.profile_updated");
    let mut v2 = read_json(&ty.join("v1.json"));
    v2["$id"] = "urn:ovasabi:schema:user.profile_updated:2".into();
    v2["title"] = "user.profile_updated v2".into();
    v2["properties"]["nickname"] =
        serde_json::json!({"type": "string", "description": "A nickname."});
    v2["required"]
        .as_array_mut()
        .unwrap()
        .push("nickname".into());
    for example in v2["examples"].as_array_mut().unwrap() {
        example["nickname"] = "ada".into();
    }
    write_json(&ty.join("v2.json"), &v2);

    let out = ovasabi(
        tmp.path(),
        &["schema", "check", "--dir", schemas.to_str().unwrap()],
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("user.profile_updated v2 breaks BACKWARD against v1")
            && all.contains("nickname")
            && all.contains("required_added"),
        "{all}"
    );

    let json = ovasabi(
        tmp.path(),
        &[
            "schema",
            "check",
            "--dir",
            schemas.to_str().unwrap(),
            "--format",
            "json",
        ],
    );
    let finding: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&json.stdout)
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(finding["event_type"], "user.profile_updated");
    assert_eq!(finding["version"], 2);
    assert_eq!(finding["rule"], "required_added");
    assert_eq!(finding["field"], "nickname");

    // The same v2 with the field optional passes.
    v2["required"]
        .as_array_mut()
        .unwrap()
        .retain(|f| f != "nickname");
    write_json(&ty.join("v2.json"), &v2);
    let out = ovasabi(
        tmp.path(),
        &["schema", "check", "--dir", schemas.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", text(&out));
}

/// Editing a released version (the one at the git revision) is refused, even when the edit
/// on its own would be compatible; adding the change as a new version is the way.
#[test]
fn an_edited_released_version_fails_the_check_against_the_release() {
    let tmp = tempfile::tempdir().unwrap();
    let schemas = tmp.path().join("schemas");
    copy_dir(&repo_schemas(), &schemas);
    git(tmp.path(), &["init", "-q"]);
    git(tmp.path(), &["add", "."]);
    git(tmp.path(), &["commit", "-q", "-m", "release"]);
    git(tmp.path(), &["tag", "v1.0.0"]);

    let path = schemas.join("coin.mined/v1.json");
    let mut v1 = read_json(&path);
    let field = v1["required"][0].as_str().unwrap().to_owned();
    v1["properties"][&field]["type"] = "integer".into();
    for example in v1["examples"].as_array_mut().unwrap() {
        example[&field] = 7.into();
    }
    write_json(&path, &v1);

    let out = ovasabi(
        tmp.path(),
        &["schema", "check", "--dir", "schemas", "--against", "v1.0.0"],
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("coin.mined v1 was released at v1.0.0 and has been edited")
            && all.contains(&format!("field `{field}`"))
            && all.contains("released_version_changed"),
        "{all}"
    );

    // Without --against, only the history is checked, and it has one version: it passes.
    let out = ovasabi(tmp.path(), &["schema", "check", "--dir", "schemas"]);
    assert!(out.status.success(), "{}", text(&out));

    // A revision that does not exist is the user's mistake.
    let out = ovasabi(
        tmp.path(),
        &[
            "schema",
            "check",
            "--dir",
            "schemas",
            "--against",
            "no-such-tag",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("`no-such-tag` is not a git revision"),
        "{}",
        text(&out)
    );
}

#[test]
fn an_invalid_payload_is_refused_at_publish() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let out = ovasabi(
        tmp.path(),
        &[
            "--data-dir",
            data_dir.to_str().unwrap(),
            "events",
            "publish",
            "--topic",
            "user.events",
            "--type",
            "user.registered",
            "--data",
            r#"{"email":"not-an-email"}"#,
        ],
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("field `user_id` breaks `required`"), "{all}");
    assert!(all.contains("field `email` breaks `format`"), "{all}");
    // Nothing was written.
    let topics = ovasabi(
        tmp.path(),
        &[
            "--data-dir",
            data_dir.to_str().unwrap(),
            "events",
            "topics",
            "--format",
            "json",
        ],
    );
    assert!(!String::from_utf8_lossy(&topics.stdout).contains("user.events"));
}

#[test]
fn list_and_show() {
    let tmp = tempfile::tempdir().unwrap();
    let out = ovasabi(tmp.path(), &["schema", "list", "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let registered = rows
        .iter()
        .find(|r| r["event_type"] == "user.registered")
        .unwrap();
    assert_eq!(registered["versions"], serde_json::json!([1, 2, 3]));
    assert_eq!(registered["compatibility"], "BACKWARD_TRANSITIVE");
    assert_eq!(registered["topic"], "user.events");

    let out = ovasabi(tmp.path(), &["schema", "show", "user.registered", "2"]);
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(schema["$id"], "urn:ovasabi:schema:user.registered:2");
    let out = ovasabi(tmp.path(), &["schema", "show", "user.nope"]);
    assert_eq!(out.status.code(), Some(2));
}

/// A v2 of `user.profile_updated` whose `.proto` gives `bio`'s field number to a new field:
/// fine as JSON (an optional field swapped for another), broken on the wire, where events
/// written with v1 would be read with their biography as the nickname.
#[test]
fn a_reused_protobuf_field_number_fails_the_check_naming_the_field_and_the_rule() {
    let tmp = tempfile::tempdir().unwrap();
    let schemas = tmp.path().join("schemas");
    copy_dir(&repo_schemas(), &schemas);
    let ty = schemas.join("user.profile_updated");
    let mut v2 = read_json(&ty.join("v1.json"));
    v2["$id"] = "urn:ovasabi:schema:user.profile_updated:2".into();
    v2["title"] = "user.profile_updated v2".into();
    v2["properties"].as_object_mut().unwrap().remove("bio");
    v2["properties"]["nickname"] =
        serde_json::json!({"type": "string", "description": "A nickname."});
    for example in v2["examples"].as_array_mut().unwrap() {
        example.as_object_mut().unwrap().remove("bio");
    }
    write_json(&ty.join("v2.json"), &v2);
    let proto = std::fs::read_to_string(ty.join("v1.proto"))
        .unwrap()
        .replace(".v1;", ".v2;");
    let reused = proto.replace("optional string bio = 5;", "optional string nickname = 5;");
    std::fs::write(ty.join("v2.proto"), &reused).unwrap();

    let out = ovasabi(
        tmp.path(),
        &["schema", "check", "--dir", schemas.to_str().unwrap()],
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("user.profile_updated v2 breaks Protobuf wire compatibility against v1")
            && all.contains("field `nickname` (number 5)")
            && all.contains("`bio`")
            && all.contains("proto_field_number_reused"),
        "{all}"
    );
    let json = ovasabi(
        tmp.path(),
        &[
            "schema",
            "check",
            "--dir",
            schemas.to_str().unwrap(),
            "--format",
            "json",
        ],
    );
    let finding: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&json.stdout)
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(finding["event_type"], "user.profile_updated");
    assert_eq!(finding["version"], 2);
    assert_eq!(finding["rule"], "proto_field_number_reused");
    assert_eq!(finding["field"], "nickname");

    // The same v2 with a new number, and bio's number reserved, passes.
    let fixed = proto.replace(
        "optional string bio = 5;",
        "reserved 5;\n  reserved \"bio\";\n  optional string nickname = 8;",
    );
    std::fs::write(ty.join("v2.proto"), fixed).unwrap();
    let out = ovasabi(
        tmp.path(),
        &["schema", "check", "--dir", schemas.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));
}
