//! The `ovasabi` binary on NATS JetStream (`--bus nats://…`): provisioning is idempotent and
//! reports what it changed, events round-trip, status shows the streams. Skips with a printed
//! reason without a server, except under `OVASABI_REQUIRE_SERVICES=1`. Every stream a test
//! creates is deleted when it ends, passed or failed.

use std::process::{Command, Output};

fn ovasabi(url: &str, args: &[&str]) -> Output {
    let data_dir = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_ovasabi"))
        .env_remove("OVASABI_DATA_DIR")
        .env("OVASABI_BUS", url)
        .arg("--data-dir")
        .arg(data_dir.path())
        .args(args)
        .output()
        .expect("run ovasabi")
}

/// Deletes its topics' streams when dropped, so a test that fails midway leaves nothing
/// behind either.
struct Streams {
    url: String,
    topics: Vec<String>,
}

impl Drop for Streams {
    fn drop(&mut self) {
        let cleanup = async {
            let config = ovasabi_nats::NatsConfig::new(&self.url);
            let Ok(bus) = ovasabi_nats::NatsBus::connect(config).await else {
                return;
            };
            for topic in &self.topics {
                if let Err(e) = bus.delete_topic(topic).await {
                    eprintln!("note: deleting the stream of `{topic}`: {e}");
                }
            }
            let _ = ovasabi_core::Bus::close(&bus).await;
        };
        match tokio::runtime::Runtime::new() {
            Ok(runtime) => runtime.block_on(cleanup),
            Err(e) => eprintln!("note: cannot delete the test's streams: {e}"),
        }
    }
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn provision_publish_tail_status_on_nats() {
    let Some(server) =
        ovasabi_nats::testing::server_or_skip("provision_publish_tail_status_on_nats")
    else {
        return;
    };
    let url = server.url.as_str();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let topic = format!("cli.t{}x{nanos}.events", std::process::id());
    let _streams = Streams {
        url: url.to_owned(),
        topics: vec![topic.clone(), format!("{topic}.dlq")],
    };

    let first: serde_json::Value = serde_json::from_str(&ok(&ovasabi(
        url,
        &[
            "bus",
            "provision",
            &topic,
            "--partitions",
            "4",
            "--format",
            "json",
        ],
    )))
    .unwrap();
    let actions: Vec<&str> = first["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["created", "created"],
        "the topic and its dead-letter topic: {first}"
    );
    let again: serde_json::Value = serde_json::from_str(&ok(&ovasabi(
        url,
        &[
            "bus",
            "provision",
            &topic,
            "--partitions",
            "4",
            "--format",
            "json",
        ],
    )))
    .unwrap();
    assert!(
        again["changes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["action"] == "unchanged"),
        "{again}"
    );
    let changed = ok(&ovasabi(
        url,
        &[
            "bus",
            "provision",
            &topic,
            "--partitions",
            "4",
            "--max-age",
            "1d",
        ],
    ));
    assert!(
        changed.contains("updated") && changed.contains("max_age"),
        "{changed}"
    );

    ok(&ovasabi(
        url,
        &[
            "events",
            "publish",
            "--topic",
            &topic,
            "--type",
            "user.registered",
            "--data",
            r#"{"user_id":"u1","email":"ada@example.com","registered_at":"2026-11-27T10:00:00Z"}"#,
            "--key",
            "u1",
        ],
    ));
    let tail = ok(&ovasabi(
        url,
        &["events", "tail", &topic, "--format", "json"],
    ));
    let event =
        ovasabi_core::format::json::from_json_slice(tail.lines().next().unwrap().as_bytes())
            .unwrap();
    assert_eq!(event.ty, "user.registered");
    assert_eq!(event.partition_key(), Some("u1"));

    let status: serde_json::Value =
        serde_json::from_str(&ok(&ovasabi(url, &["bus", "status", "--format", "json"]))).unwrap();
    let stream = status["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["topic"] == topic.as_str())
        .expect("stream listed");
    assert_eq!(stream["messages"], 1);
    assert_eq!(stream["partitions"], 4);
}

#[test]
fn a_bad_bus_or_provisioning_the_embedded_bus_is_a_usage_error() {
    let o = ovasabi("kafka://x", &["events", "topics"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not a bus"));
    let o = ovasabi("embedded", &["bus", "provision"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("needs no provisioning"));
    let o = ovasabi(
        "nats://127.0.0.1:4222",
        &["bus", "provision", "--max-age", "1w"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--max-age `1w` is not a duration"));
}

#[test]
fn status_on_nats_reports_a_namespaces_topics_and_lag() {
    let Some(server) =
        ovasabi_nats::testing::server_or_skip("status_on_nats_reports_a_namespaces_topics_and_lag")
    else {
        return;
    };
    let namespace = format!("status-{:016x}", rand::random::<u64>());
    let run = |args: &[&str]| {
        let mut all = vec!["--namespace", namespace.as_str()];
        all.extend_from_slice(args);
        ovasabi(&server.url, &all)
    };
    let cleanup = async {
        let bus = ovasabi_nats::NatsBus::connect(
            ovasabi_nats::NatsConfig::new(&server.url).namespace(namespace.as_str()),
        )
        .await
        .unwrap();
        for topic in ["user.events", "user.events.dlq"] {
            let _ = bus.delete_topic(topic).await;
        }
        let _ = ovasabi_core::Bus::close(&bus).await;
    };
    let publish = |user: &str| {
        let data = format!(
            r#"{{"user_id":"{user}","email":"{user}@example.com","registered_at":"2026-11-27T10:00:00Z"}}"#
        );
        ok(&run(&[
            "events",
            "publish",
            "--topic",
            "user.events",
            "--type",
            "user.registered",
            "--data",
            &data,
            "--key",
            user,
        ]));
    };
    // A durable group reads the first event; the second waits for it: lag 1, then 0.
    publish("u1");
    ok(&run(&[
        "events",
        "tail",
        "user.events",
        "--group",
        "readers",
        "-n",
        "1",
    ]));
    publish("u2");
    let status = |run: &dyn Fn(&[&str]) -> Output| -> serde_json::Value {
        serde_json::from_str(&ok(&run(&["status", "--format", "json"]))).unwrap()
    };
    let before = status(&run);
    let after_tail = {
        ok(&run(&[
            "events",
            "tail",
            "user.events",
            "--group",
            "readers",
            "-n",
            "10",
        ]));
        status(&run)
    };
    tokio::runtime::Runtime::new().unwrap().block_on(cleanup);
    let topic = |s: &serde_json::Value| {
        s["topics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["topic"] == "user.events")
            .cloned()
            .unwrap_or_else(|| panic!("{s}"))
    };
    assert_eq!(
        before["topics"].as_array().unwrap().len(),
        1,
        "only the namespace's topics: {before}"
    );
    assert_eq!(topic(&before)["events"], 2, "{before}");
    assert_eq!(before["lag"], 1, "{before}");
    assert_eq!(
        topic(&after_tail)["groups"][0]["group"],
        "readers",
        "{after_tail}"
    );
    assert_eq!(after_tail["lag"], 0, "{after_tail}");
}

/// The names of the streams on the server at `url` (every namespace's).
async fn stream_names(url: &str) -> Vec<String> {
    use futures::TryStreamExt;
    let client = ovasabi_nats::async_nats::connect(url).await.unwrap();
    let js = ovasabi_nats::async_nats::jetstream::new(client);
    js.streams()
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .into_iter()
        .map(|info| info.config.name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_http_measures_on_nats_and_postgresql_and_leaves_nothing_behind() {
    const TEST: &str = "bench_http_measures_on_nats_and_postgresql_and_leaves_nothing_behind";
    let Some(server) = ovasabi_nats::testing::server_or_skip(TEST) else {
        return;
    };
    let Some(db) = ovasabi_store::testing::postgres_or_skip(TEST).await else {
        return;
    };
    let schemas = |store: ovasabi_store::Store| async move {
        store
            .query_one(
                "SELECT COUNT(*) AS n FROM information_schema.schemata WHERE schema_name LIKE 'bench\\_%'",
                &[],
            )
            .await
            .unwrap()
            .get::<i64>("n")
            .unwrap()
    };
    let store = ovasabi_store::Store::open(&db.config(), &[]).await.unwrap();
    let schemas_before = schemas(store.clone()).await;
    let bench_streams = |names: Vec<String>| {
        names
            .into_iter()
            .filter(|n| n.contains("_ns_bench-"))
            .collect::<Vec<_>>()
    };
    let streams_before = bench_streams(stream_names(&server.url).await);

    let url = server.url.clone();
    let database = db.database_url();
    let output = tokio::task::spawn_blocking(move || {
        ovasabi(
            &url,
            &[
                "--db",
                &database,
                "bench",
                "http",
                "--load",
                "builtin",
                "--requests",
                "200",
                "--rounds",
                "1",
                "--format",
                "json",
            ],
        )
    })
    .await
    .unwrap();
    let report: serde_json::Value = serde_json::from_str(&ok(&output)).unwrap();
    assert_eq!(report["bus"], "nats", "{report}");
    assert_eq!(report["database"], "postgresql", "{report}");
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "{report}");
    for row in rows {
        assert!(row["value"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["ratio"].as_f64().unwrap() > 0.0, "{row}");
    }

    // Each measurement's namespace and schema are gone.
    assert_eq!(
        bench_streams(stream_names(&server.url).await),
        streams_before
    );
    assert_eq!(schemas(store).await, schemas_before);

    // A SQLite URL is refused, saying why.
    let url = server.url.clone();
    let output = tokio::task::spawn_blocking(move || {
        ovasabi(
            &url,
            &[
                "--db",
                "sqlite:///tmp/x.db",
                "bench",
                "http",
                "--requests",
                "10",
            ],
        )
    })
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("PostgreSQL URL"), "{stderr}");
}
