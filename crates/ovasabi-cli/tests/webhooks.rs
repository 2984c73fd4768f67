//! `ovasabi webhooks …`: operators add partners and read endpoints and attempts from the
//! services' database, on a fresh data directory too.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ovasabi");

fn ovasabi(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .env_remove("OVASABI_DATA_DIR")
        .env_remove("OVASABI_DB")
        .env_remove("OVASABI_BUS")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .expect("run ovasabi")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs a command that must succeed and print JSON.
fn json(data_dir: &Path, args: &[&str]) -> Value {
    let out = ovasabi(data_dir, args);
    assert!(
        out.status.success(),
        "{args:?} failed ({}):\n{}",
        out.status,
        stderr(&out)
    );
    serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}):\n{}", stdout(&out)))
}

#[test]
fn partner_add_prints_the_key_once_and_list_shows_the_partner() {
    let dir = tempfile::tempdir().unwrap();
    let added = json(
        dir.path(),
        &[
            "webhooks",
            "partner",
            "add",
            "acme",
            "--permit",
            "order.*, payment.*",
            "--format",
            "json",
        ],
    );
    let key = added["api_key"].as_str().expect("api_key");
    assert!(key.starts_with("ovk_"), "{added}");
    assert_eq!(added["partner"]["name"], "acme");
    assert_eq!(
        added["partner"]["permitted"],
        serde_json::json!(["order.*", "payment.*"])
    );

    let listed = json(
        dir.path(),
        &["webhooks", "partner", "list", "--format", "json"],
    );
    let partners = listed.as_array().expect("an array");
    assert_eq!(partners.len(), 1, "{listed}");
    assert_eq!(partners[0]["name"], "acme");
    assert_eq!(partners[0]["id"], added["partner"]["id"]);
    assert_eq!(
        partners[0]["permitted"],
        serde_json::json!(["order.*", "payment.*"])
    );
    assert!(
        !listed.to_string().contains(key),
        "the key is never shown again: {listed}"
    );

    let pretty = ovasabi(dir.path(), &["webhooks", "partner", "list"]);
    assert!(pretty.status.success(), "{}", stderr(&pretty));
    let text = stdout(&pretty);
    assert!(
        text.contains("acme") && text.contains("order.*,payment.*"),
        "{text}"
    );
}

#[test]
fn partner_add_pretty_warns_that_the_key_is_shown_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = ovasabi(
        dir.path(),
        &["webhooks", "partner", "add", "globex", "--permit", "*"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("ovk_"), "{text}");
    assert!(text.contains("it cannot be shown again"), "{text}");
}

#[test]
fn adding_the_same_partner_twice_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let first = ovasabi(
        dir.path(),
        &["webhooks", "partner", "add", "acme", "--permit", "order.*"],
    );
    assert!(first.status.success(), "{}", stderr(&first));
    let again = ovasabi(
        dir.path(),
        &[
            "webhooks",
            "partner",
            "add",
            "acme",
            "--permit",
            "payment.*",
        ],
    );
    assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));
    let message = stderr(&again);
    assert!(
        message.contains("acme") && message.contains("exists already"),
        "{message}"
    );
    assert!(
        stdout(&again).is_empty(),
        "no key printed: {}",
        stdout(&again)
    );
}

#[test]
fn a_bad_pattern_is_a_usage_error_and_adds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = ovasabi(
        dir.path(),
        &[
            "webhooks",
            "partner",
            "add",
            "acme",
            "--permit",
            "order.*,Order",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(
        message.contains("`Order` is not an event-type pattern"),
        "{message}"
    );
    let listed = json(
        dir.path(),
        &["webhooks", "partner", "list", "--format", "json"],
    );
    assert_eq!(listed, serde_json::json!([]));
}

#[test]
fn list_is_empty_on_a_fresh_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let listed = json(dir.path(), &["webhooks", "list", "--format", "json"]);
    assert_eq!(listed, serde_json::json!([]));

    let pretty = ovasabi(dir.path(), &["webhooks", "list"]);
    assert!(pretty.status.success(), "{}", stderr(&pretty));
    assert!(stdout(&pretty).is_empty(), "{}", stdout(&pretty));
    assert!(
        stderr(&pretty).contains("no webhook endpoints yet"),
        "{}",
        stderr(&pretty)
    );
}

#[test]
fn attempts_of_an_unknown_endpoint_are_an_empty_list() {
    let dir = tempfile::tempdir().unwrap();
    let listed = json(
        dir.path(),
        &[
            "webhooks",
            "attempts",
            "no-such-endpoint",
            "--limit",
            "5",
            "--format",
            "json",
        ],
    );
    assert_eq!(listed, serde_json::json!([]));

    let pretty = ovasabi(dir.path(), &["webhooks", "attempts", "no-such-endpoint"]);
    assert!(pretty.status.success(), "{}", stderr(&pretty));
    assert!(stdout(&pretty).is_empty(), "{}", stdout(&pretty));
    assert!(
        stderr(&pretty).contains("no endpoint has the id `no-such-endpoint`"),
        "{}",
        stderr(&pretty)
    );

    let zero = ovasabi(dir.path(), &["webhooks", "attempts", "x", "--limit", "0"]);
    assert_eq!(zero.status.code(), Some(2), "{}", stderr(&zero));
}

#[test]
fn an_operator_pauses_resumes_and_replays_an_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let added = json(
        dir.path(),
        &[
            "webhooks", "partner", "add", "acme", "--permit", "order.*", "--format", "json",
        ],
    );
    let partner = added["partner"]["id"].as_str().unwrap().to_owned();
    // An endpoint as `POST /v1/webhooks` registers it (the API is not running here).
    let db = rusqlite::Connection::open(dir.path().join("ovasabi.db")).unwrap();
    db.execute(
        "INSERT INTO webhook_endpoints (id, partner_id, url, filters, secret, state, created_at, updated_at)
         VALUES ('ep-1', ?1, 'https://partner.example/hook', '[\"order.*\"]',
                 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'active',
                 '2026-11-27T10:00:00Z', '2026-11-27T10:00:00Z')",
        [partner.as_str()],
    )
    .unwrap();
    drop(db);
    let state =
        |dir: &Path| json(dir, &["webhooks", "list", "--format", "json"])[0]["state"].clone();

    let out = ovasabi(dir.path(), &["webhooks", "pause", "ep-1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(state(dir.path()), "paused");
    let out = ovasabi(dir.path(), &["webhooks", "resume", "ep-1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(state(dir.path()), "active");
    let out = ovasabi(dir.path(), &["webhooks", "pause", "ep-404"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("ep-404"), "{}", stderr(&out));

    // Two events on the bus, one the endpoint would receive.
    for (topic, ty, data) in [
        (
            "user.events",
            "user.registered",
            r#"{"user_id":"u1","email":"ada@example.com","registered_at":"2026-11-27T10:00:00Z"}"#,
        ),
        (
            "commerce.events",
            "order.placed",
            r#"{"order_id":"o1","customer_id":"u1","items":[{"sku":"MUG","quantity":2,"unit_price":{"amount_minor":1250,"currency":"EUR"}}],"total":{"amount_minor":2500,"currency":"EUR"},"shipping_address":{"recipient":"Ada","line1":"1 Main St","city":"London","postal_code":"N1","country":"GB"},"placed_at":"2026-11-27T10:00:00Z"}"#,
        ),
    ] {
        let out = ovasabi(
            dir.path(),
            &[
                "events", "publish", "--topic", topic, "--type", ty, "--data", data,
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let replayed = json(
        dir.path(),
        &[
            "webhooks",
            "replay",
            "ep-1",
            "--from",
            "2020-01-01T00:00:00Z",
            "--format",
            "json",
        ],
    );
    assert_eq!(replayed["read"], 2, "{replayed}");
    assert_eq!(replayed["queued"], 1, "{replayed}");
    assert_eq!(
        json(dir.path(), &["webhooks", "list", "--format", "json"])[0]["deliveries"]["pending"],
        1
    );
    let out = ovasabi(
        dir.path(),
        &["webhooks", "replay", "ep-1", "--from", "yesterday"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--from `yesterday`"),
        "{}",
        stderr(&out)
    );
}
