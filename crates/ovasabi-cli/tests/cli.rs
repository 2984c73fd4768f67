//! The `ovasabi` binary as a user runs it: a publish/tail round trip, listing topics, and bad
//! input refused with exit code 2 and nothing written.

use std::path::Path;
use std::process::{Command, Output};

fn ovasabi(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ovasabi"))
        .env_remove("OVASABI_DATA_DIR")
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("run ovasabi")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn publish_then_tail_round_trips_a_valid_cloudevent() {
    let dir = tempfile::tempdir().unwrap();
    let out = ovasabi(
        dir.path(),
        &[
            "events",
            "publish",
            "--topic",
            "user.events",
            "--type",
            "user.registered",
            "--data",
            r#"{"user_id":"u1","email":"ada@example.com","registered_at":"2026-11-27T10:00:00Z"}"#,
            "--key",
            "u1",
            "--subject",
            "u1",
            "--format",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let receipt: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(receipt["topic"], "user.events");
    assert_eq!(receipt["offset"], 0);
    let id = receipt["id"].as_str().unwrap().to_owned();

    let out = ovasabi(
        dir.path(),
        &[
            "events",
            "publish",
            "--topic",
            "user.events",
            "--type",
            "user.profile_updated",
            "--data",
            r#"{"user_id":"u1","changed_fields":["display_name"],"display_name":"Ada","updated_at":"2026-11-27T10:05:00Z"}"#,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("published "), "{}", stdout(&out));

    let out = ovasabi(
        dir.path(),
        &["events", "tail", "user.events", "--format", "json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(first["specversion"], "1.0");
    assert_eq!(first["id"], id.as_str());
    assert_eq!(first["type"], "user.registered");
    assert_eq!(first["source"], "/ovasabi/cli");
    assert_eq!(first["subject"], "u1");
    assert_eq!(first["partitionkey"], "u1");
    assert_eq!(first["datacontenttype"], "application/json");
    assert_eq!(
        first["data"],
        serde_json::json!({"user_id": "u1", "email": "ada@example.com", "registered_at": "2026-11-27T10:00:00Z"})
    );
    assert!(first["time"]
        .as_str()
        .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()));
    // Each line is a valid structured-mode CloudEvent by our parser's every rule.
    for line in &lines {
        ovasabi_core::format::json::from_json_slice(line.as_bytes()).expect("valid CloudEvent");
    }

    // --limit and --from.
    let out = ovasabi(
        dir.path(),
        &[
            "events",
            "tail",
            "user.events",
            "--from",
            "1",
            "--format",
            "json",
        ],
    );
    let only: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(only.len(), 1);
    assert!(only[0].contains("user.profile_updated"));
    let out = ovasabi(dir.path(), &["events", "tail", "user.events", "-n", "1"]);
    assert!(stdout(&out).contains("user.events #0"), "{}", stdout(&out));
    assert!(!stdout(&out).contains("#1"));
}

#[test]
fn a_durable_group_tails_from_where_it_stopped_and_topics_shows_its_lag() {
    let dir = tempfile::tempdir().unwrap();
    for n in 0..3 {
        let data = format!(
            r#"{{"content_id":"c{n}","author_id":"u1","kind":"post","body":"post {n}","visibility":"public","posted_at":"2026-11-27T10:00:00Z"}}"#
        );
        let out = ovasabi(
            dir.path(),
            &[
                "events",
                "publish",
                "--topic",
                "content.events",
                "--type",
                "content.posted",
                "--data",
                &data,
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = ovasabi(
        dir.path(),
        &[
            "events",
            "tail",
            "content.events",
            "--group",
            "feed",
            "-n",
            "2",
            "--format",
            "json",
        ],
    );
    assert_eq!(stdout(&out).lines().count(), 2);
    let out = ovasabi(dir.path(), &["events", "topics", "--format", "json"]);
    let topics: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let t = &topics["topics"][0];
    assert_eq!(t["topic"], "content.events");
    assert_eq!(t["retained"], 3);
    assert_eq!(t["groups"][0]["group"], "feed");
    assert_eq!(t["groups"][0]["lag"], 1);
    let out = ovasabi(
        dir.path(),
        &[
            "events",
            "tail",
            "content.events",
            "--group",
            "feed",
            "--format",
            "json",
        ],
    );
    let rest: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(rest.len(), 1);
    assert!(rest[0].contains(r#""content_id":"c2""#), "{}", rest[0]);
    let pretty = stdout(&ovasabi(dir.path(), &["events", "topics"]));
    assert!(
        pretty.contains("TOPIC") && pretty.contains("feed (0)"),
        "{pretty}"
    );
}

/// Each bad input: its arguments and a phrase the message must contain.
const BAD_INPUTS: &[(&[&str], &str)] = &[
    (
        &[
            "--topic",
            "user.events",
            "--type",
            "user.registered",
            "--data",
            "{not json",
        ],
        "--data is not valid JSON",
    ),
    (
        &[
            "--topic",
            "User Events",
            "--type",
            "user.registered",
            "--data",
            "{}",
        ],
        "invalid topic `User Events`",
    ),
    (
        &[
            "--topic",
            "user.events",
            "--type",
            "UserRegistered",
            "--data",
            "{}",
        ],
        "<domain>.<past_tense_verb>",
    ),
    (
        &[
            "--topic",
            "user.events",
            "--type",
            "user.registered",
            "--data",
            "{}",
            "--id",
            "",
        ],
        "attribute `id`",
    ),
    (
        &[
            "--topic",
            "user.events",
            "--type",
            "user.registered",
            "--data",
            "{}",
            "--source",
            "",
        ],
        "attribute `source`",
    ),
    (
        &[
            "--topic",
            "user.events",
            "--type",
            "user.registered",
            "--data",
            "{}",
            "--subject",
            "",
        ],
        "attribute `subject`",
    ),
];

#[test]
fn bad_input_exits_2_with_a_message_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for (args, phrase) in BAD_INPUTS {
        let mut full = vec!["events", "publish"];
        full.extend_from_slice(args);
        let out = ovasabi(dir.path(), &full);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(phrase),
            "{args:?}: message {:?} lacks {phrase:?}",
            stderr(&out)
        );
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    }
    // Oversized: over the configured maximum.
    let big = format!(r#"{{"blob":"{}"}}"#, "x".repeat(2000));
    let out = ovasabi(
        dir.path(),
        &[
            "--max-event-bytes",
            "1000",
            "events",
            "publish",
            "--topic",
            "user.events",
            "--type",
            "user.registered",
            "--data",
            &big,
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("event too large"), "{}", stderr(&out));
    // Bad tail arguments.
    let out = ovasabi(
        dir.path(),
        &["events", "tail", "user.events", "--from", "yesterday"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--from"), "{}", stderr(&out));
    let out = ovasabi(dir.path(), &["events", "tail", "no.such.topic"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no topic matches"),
        "{}",
        stderr(&out)
    );
    // Nothing was written by any of them.
    let out = ovasabi(dir.path(), &["events", "topics", "--format", "json"]);
    let topics: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        topics["topics"],
        serde_json::json!([]),
        "bad input wrote something"
    );
}

#[test]
fn a_second_process_on_the_data_dir_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let spawn_tail = || {
        Command::new(env!("CARGO_BIN_EXE_ovasabi"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(["events", "tail", "user.events", "--follow"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut tail = spawn_tail();
    // Wait until the tail holds the directory. The probe holds it for a moment itself: a
    // tail that started during that moment was refused and exited, so it is started again.
    let mut out = None;
    for _ in 0..200 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        if tail.try_wait().unwrap().is_some() {
            tail = spawn_tail();
            continue;
        }
        let o = ovasabi(dir.path(), &["events", "topics"]);
        if !o.status.success() {
            out = Some(o);
            break;
        }
    }
    tail.kill().unwrap();
    let _ = tail.wait();
    let out = out.expect("the second process was refused");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("in use by another process"),
        "{}",
        stderr(&out)
    );
}
