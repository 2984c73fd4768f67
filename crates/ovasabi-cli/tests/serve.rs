//! Services as processes: `ovasabi up` on the embedded bus and SQLite, and two `ovasabi
//! serve audit` processes sharing one consumer group on NATS JetStream and PostgreSQL, one
//! of them killed with SIGKILL mid-run.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ovasabi_core::{Bus as _, Event, Publisher as _};
use ovasabi_store::{params, Store};
use rand::Rng as _;

const BIN: &str = env!("CARGO_BIN_EXE_ovasabi");

/// An `ovasabi` process whose stderr is collected line by line (and echoed, so a failing
/// test shows it); killed when dropped.
struct Proc {
    name: &'static str,
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn spawn(name: &'static str, envs: &[(&str, &str)], args: &[&str]) -> Proc {
        let mut command = Command::new(BIN);
        command
            .env_remove("OVASABI_DATA_DIR")
            .env_remove("OVASABI_DB")
            .env_remove("OVASABI_BUS")
            .envs(envs.iter().copied())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start ovasabi");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = stderr.clone();
        let pipe = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                eprintln!("[{name}] {line}");
                lines.lock().unwrap().push(line);
            }
        });
        Proc {
            name,
            child,
            stderr,
        }
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    fn wait_for_line(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self
                .stderr
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(needle))
            {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "{} exited ({status}) before printing {needle:?}:\n{}",
                    self.name,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} printed no {needle:?} within {timeout:?}:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then the exit status (SIGKILL after 30 s).
    fn terminate(&mut self) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader thread take the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "{} did not stop within 30 s of SIGTERM:\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ovasabi(data_dir: &std::path::Path, args: &[&str]) -> Output {
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

/// `ovasabi events publish` of a `ty` event about `subject` on `topic`, with `extra` flags.
fn publish(
    data_dir: &std::path::Path,
    topic: &str,
    ty: &str,
    data: &str,
    subject: &str,
    extra: &[&str],
) -> Output {
    let mut args = vec![
        "events",
        "publish",
        "--topic",
        topic,
        "--type",
        ty,
        "--data",
        data,
        "--subject",
        subject,
    ];
    args.extend_from_slice(extra);
    ovasabi(data_dir, &args)
}

fn stdout_ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn audit_lines(data_dir: &std::path::Path) -> Vec<serde_json::Value> {
    stdout_ok(&ovasabi(
        data_dir,
        &["audit", "list", "--format", "json", "-n", "1000"],
    ))
    .lines()
    .map(|l| serde_json::from_str(l).expect("audit list prints JSON lines"))
    .collect()
}

#[test]
fn up_runs_the_services_on_the_embedded_bus_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path();
    for (topic, ty, data) in [
        (
            "user.events",
            "user.registered",
            r#"{"user_id":"u1","email":"ada@example.com","registered_at":"2026-11-27T10:00:00Z"}"#,
        ),
        (
            "content.events",
            "content.posted",
            r#"{"content_id":"c1","author_id":"u1","kind":"post","body":"hello","visibility":"public","posted_at":"2026-11-27T10:01:00Z"}"#,
        ),
    ] {
        stdout_ok(&publish(data_dir, topic, ty, data, "u1", &[]));
    }

    let data = data_dir.to_str().unwrap();
    let mut up = Proc::spawn("up", &[], &["--data-dir", data, "up"]);
    up.wait_for_line("ready:", Duration::from_secs(30));
    // The audit trail is read from the database while `up` runs.
    let deadline = Instant::now() + Duration::from_secs(20);
    let records = loop {
        let records = audit_lines(data_dir);
        // The two events published, the wallet's signup bonus for the registration and the
        // moderation's approval of the post.
        if records.len() >= 4 || Instant::now() > deadline {
            break records;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut types: Vec<&str> = records
        .iter()
        .map(|r| r["event"]["type"].as_str().unwrap())
        .collect();
    types.sort_unstable();
    assert_eq!(
        types,
        [
            "coin.mined",
            "content.posted",
            "moderation.decided",
            "user.registered"
        ],
        "{records:?}"
    );
    assert!(records.iter().all(|r| r["attempt"] == 1), "{records:?}");

    // `ovasabi trace` of the registration: the bonus it caused hangs under it.
    let registration = records
        .iter()
        .find(|r| r["event"]["type"] == "user.registered")
        .unwrap()["event"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let tree = stdout_ok(&ovasabi(data_dir, &["trace", &registration]));
    let lines: Vec<&str> = tree.lines().collect();
    assert!(
        lines[0].starts_with(&format!("trace of {registration}: 2 events")),
        "{tree}"
    );
    assert!(
        lines[1].starts_with("+0 ms  user.registered  ") && lines[1].contains("user.events@0"),
        "{tree}"
    );
    assert!(
        lines[2].starts_with("└─ +") && lines[2].contains("coin.mined  wallet  u1"),
        "{tree}"
    );
    let json: serde_json::Value = serde_json::from_str(&stdout_ok(&ovasabi(
        data_dir,
        &["trace", &registration, "--format", "json"],
    )))
    .unwrap();
    assert_eq!(json["roots"], serde_json::json!([registration]));
    assert_eq!(json["events"][1]["type"], "coin.mined");
    assert_eq!(json["events"][1]["causation_id"], registration.as_str());
    // `ovasabi status` while `up` holds the embedded bus: asked of its API; lag drains to 0.
    let api = up
        .log()
        .lines()
        .find_map(|l| {
            l.split("listening on ")
                .nth(1)
                .map(|a| a.split_whitespace().next().unwrap_or("").to_owned())
        })
        .expect("up prints where it listens");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let status: serde_json::Value = serde_json::from_str(&stdout_ok(&ovasabi(
            data_dir,
            &["status", "--api", &api, "--format", "json"],
        )))
        .unwrap();
        if status["lag"] == 0 || Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status["lag"], 0, "{status}");
    assert_eq!(status["dead_letters"], 0, "{status}");
    let user_events = status["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["topic"] == "user.events")
        .unwrap_or_else(|| panic!("{status}"));
    assert_eq!(user_events["events"], 1, "{status}");
    let groups: Vec<&str> = user_events["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["group"].as_str().unwrap())
        .collect();
    assert!(
        groups.contains(&"audit") && groups.contains(&"wallet"),
        "{status}"
    );
    let pretty = stdout_ok(&ovasabi(data_dir, &["status", "--api", &api]));
    assert!(pretty.starts_with("TOPIC"), "{pretty}");
    assert!(
        pretty
            .lines()
            .last()
            .unwrap()
            .starts_with("lag 0 · dead letters 0 · outbox 0 pending"),
        "{pretty}"
    );
    let unknown = ovasabi(data_dir, &["trace", "nothing-like-it"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr)
        .contains("holds no event with id or correlation id `nothing-like-it`"));

    let status = up.terminate();
    assert!(status.success(), "{status}:\n{}", up.log());
    let log = up.log();
    assert!(log.contains("audit: 4 received, 4 acked"), "{log}");
    // The wallet reads the registration and the post's moderation decision.
    assert!(log.contains("wallet: 2 received, 2 acked"), "{log}");
    assert!(log.lines().last().unwrap().contains("stopped"), "{log}");

    // With `up` stopped, `ovasabi status` reads the data directory itself.
    let status: serde_json::Value = serde_json::from_str(&stdout_ok(&ovasabi(
        data_dir,
        &["status", "--api", "http://127.0.0.1:1", "--format", "json"],
    )))
    .unwrap();
    assert_eq!(status["lag"], 0, "{status}");

    // Started again, the group goes on from where it stopped: nothing is recorded twice.
    let mut again = Proc::spawn("up again", &[], &["--data-dir", data, "up"]);
    again.wait_for_line("ready:", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    assert!(again.terminate().success(), "{}", again.log());
    assert!(again.log().contains("audit: 0 received"), "{}", again.log());
    assert_eq!(audit_lines(data_dir).len(), 4);

    // The trail is a hash chain, chained by the running services: intact as recorded, and a
    // changed entry is named.
    let intact = stdout_ok(&ovasabi(data_dir, &["audit", "verify", "--format", "json"]));
    let intact: serde_json::Value = serde_json::from_str(intact.trim()).unwrap();
    assert_eq!(
        intact,
        serde_json::json!({"intact": true, "entries": 4, "pending": 0})
    );
    let db = rusqlite::Connection::open(data_dir.join("ovasabi.db")).unwrap();
    db.execute(
        "UPDATE audit_events SET recorded_by = 'someone else' WHERE position = 2",
        [],
    )
    .unwrap();
    let broken = ovasabi(data_dir, &["audit", "verify"]);
    assert_eq!(broken.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&broken.stderr);
    assert!(
        stderr.contains("the audit trail is broken at entry 2: entry 2 was changed"),
        "{stderr}"
    );

    // The analytics counted both events live; rebuilt from the log, they are the same.
    let counts = |db: &rusqlite::Connection| -> Vec<(String, String, i64)> {
        let mut statement = db
            .prepare("SELECT metric, minute, value FROM analytics_minutes ORDER BY metric, minute")
            .unwrap();
        let rows = statement
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap();
        rows.map(Result::unwrap).collect()
    };
    let live = counts(&db);
    assert_eq!(live.len(), 2, "{live:?}");
    let replayed = ovasabi(data_dir, &["replay", "analytics", "--format", "json"]);
    assert!(replayed.status.success(), "{replayed:?}");
    let progress = String::from_utf8_lossy(&replayed.stderr);
    assert!(progress.contains("replay: 3/3 events (100%)"), "{progress}");
    let summary: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&replayed.stdout).trim()).unwrap();
    // The registration, the post, and moderation's decision on the post (analytics read
    // moderation.events for fraud holds; a decision is not counted).
    assert_eq!(summary["events"], 3, "{summary}");
    assert_eq!(summary["counted"], 2, "{summary}");
    assert_eq!(summary["totals"]["signups"], 1, "{summary}");
    assert_eq!(summary["totals"]["posts"], 1, "{summary}");
    assert_eq!(counts(&db), live);
}

#[test]
fn serve_refuses_unknown_services_and_bad_settings() {
    let dir = tempfile::tempdir().unwrap();
    for (args, message) in [
        (&["serve"][..], "name at least one service"),
        (
            &["serve", "nope"][..],
            "there is no service `nope`; the services are: users, content, commerce, wallet, messaging, notifications, moderation, analytics, webhooks, audit",
        ),
        (
            &["serve", "audit", "--ack-timeout", "soon"][..],
            "--ack-timeout `soon` is not a duration",
        ),
        (
            &["serve", "audit", "--audit-topics", "Bad Topic"][..],
            "service `audit`: --audit-topics",
        ),
        (&["--db", "mysql://x/y", "serve", "audit"][..], "--db: "),
        (&["--bus", "kafka://x", "up"][..], "is not a bus"),
        (
            &["up", "--webhooks-allow", "10.0.0.1/8"][..],
            "--webhooks-allow: ",
        ),
        (
            &["--namespace", "staging", "up"][..],
            "--namespace `staging` (or OVASABI_NAMESPACE) applies to NATS",
        ),
        (
            &["--bus", "nats://127.0.0.1:1", "--namespace", "Staging_1", "up"][..],
            "--namespace (or OVASABI_NAMESPACE): invalid namespace \"Staging_1\": character 'S' is not allowed",
        ),
    ] {
        let out = ovasabi(dir.path(), args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    let list = stdout_ok(&ovasabi(dir.path(), &["serve", "--list"]));
    let names: Vec<&str> = list
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .collect();
    assert_eq!(
        names,
        [
            "users",
            "content",
            "commerce",
            "wallet",
            "messaging",
            "notifications",
            "moderation",
            "analytics",
            "webhooks",
            "audit"
        ],
        "{list}"
    );
}

/// Deletes a topic's streams (and its dead-letter topic's) when dropped, pass or fail.
struct Streams {
    url: String,
    topic: String,
}

impl Drop for Streams {
    fn drop(&mut self) {
        let url = self.url.clone();
        let topic = self.topic.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let Ok(client) = ovasabi_nats::async_nats::connect(&url).await else {
                    return;
                };
                let js = ovasabi_nats::async_nats::jetstream::new(client);
                for t in [
                    topic.clone(),
                    ovasabi_core::naming::dead_letter_topic(&topic),
                ] {
                    let _ = js
                        .delete_stream(ovasabi_nats::layout::stream_name(&t))
                        .await;
                }
            });
        })
        .join();
    }
}

async fn counts_by_instance(store: &Store) -> BTreeMap<String, i64> {
    store
        .query(
            "SELECT recorded_by, COUNT(*) AS n FROM audit_events GROUP BY recorded_by",
            params![],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get("recorded_by").unwrap(), r.get("n").unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_a_group_and_one_takes_over_when_the_other_is_killed() {
    const TEST: &str = "two_processes_share_a_group_and_one_takes_over_when_the_other_is_killed";
    let Some(nats) = ovasabi_nats::testing::server_or_skip(TEST) else {
        return;
    };
    let Some(db) = ovasabi_store::testing::postgres_or_skip(TEST).await else {
        return;
    };
    let topic = format!("svc{:012x}.events", rand::thread_rng().gen::<u64>() >> 16);
    let _streams = Streams {
        url: nats.url.clone(),
        topic: topic.clone(),
    };
    let db_url = db.database_url();
    let data_dir = tempfile::tempdir().unwrap();
    let envs = [
        ("OVASABI_BUS", nats.url.as_str()),
        ("OVASABI_DB", db_url.as_str()),
        ("OVASABI_DATA_DIR", data_dir.path().to_str().unwrap()),
        // The inbox's "already recorded" lines.
        ("OVASABI_LOG", "warn,ovasabi_services=info"),
    ];
    // An ack timeout above the bus's pull expiry (5 s): see the NATS backend's notes on
    // nats-server 2.9.
    let serve = |instance: &'static str| {
        Proc::spawn(
            instance,
            &envs,
            &[
                "serve",
                "audit",
                "--audit-topics",
                &topic,
                "--instance",
                instance,
                "--ack-timeout",
                "6s",
                "--concurrency",
                "4",
            ],
        )
    };
    let mut a = serve("a");
    let mut b = serve("b");
    a.wait_for_line("ready:", Duration::from_secs(60));
    b.wait_for_line("ready:", Duration::from_secs(60));

    // Published once both members are in the group, so both take a share.
    const EVENTS: usize = 6_000;
    let bus = ovasabi_nats::NatsBus::connect(ovasabi_nats::NatsConfig::new(&nats.url))
        .await
        .unwrap();
    let mut published = HashSet::new();
    for chunk in 0..EVENTS / 200 {
        let batch: Vec<Event> = (0..200)
            .map(|i| {
                let n = chunk * 200 + i;
                Event::new("order.placed", "/ovasabi/test")
                    .with_json(&serde_json::json!({"order_id": n}))
                    .with_partition_key(format!("o{}", n % 50))
            })
            .collect();
        published.extend(batch.iter().map(|e| e.id.clone()));
        bus.publish_batch(&topic, batch).await.unwrap();
    }
    bus.close().await.unwrap();

    let store = Store::open(&db.config(), &[]).await.unwrap();
    // Kill `a` mid-run, once both have recorded events.
    let deadline = Instant::now() + Duration::from_secs(60);
    let at_kill = loop {
        let counts = counts_by_instance(&store).await;
        let total: i64 = counts.values().sum();
        if counts.len() == 2 && total >= (EVENTS / 4) as i64 {
            a.child.kill().unwrap();
            a.child.wait().unwrap();
            break counts;
        }
        assert!(
            total < EVENTS as i64,
            "the run ended before both members took a share: {counts:?}"
        );
        assert!(Instant::now() < deadline, "no progress: {counts:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    eprintln!("killed a with SIGKILL; recorded so far: {at_kill:?}");

    // `b` records the rest, including what `a` held unacked (after the ack timeout).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let row = store
            .query_one(
                "SELECT COUNT(DISTINCT event_id) AS n FROM audit_events",
                params![],
            )
            .await
            .unwrap();
        if row.get::<i64>("n").unwrap() == EVENTS as i64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {EVENTS} events recorded after a died:\n{}",
            row.get::<i64>("n").unwrap(),
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let rows = store
        .query(
            "SELECT event_id, recorded_by, attempt FROM audit_events",
            params![],
        )
        .await
        .unwrap();
    let recorded: Vec<String> = rows.iter().map(|r| r.get("event_id").unwrap()).collect();
    assert_eq!(recorded.len(), EVENTS, "an event was recorded twice");
    assert_eq!(recorded.into_iter().collect::<HashSet<_>>(), published);
    let counts = counts_by_instance(&store).await;
    assert!(
        counts["a"] >= at_kill["a"] && counts["b"] > at_kill["b"],
        "{counts:?}"
    );
    // What `a` held when it died came back to `b` as later attempts: recorded there, or, if
    // `a` had recorded it before dying, recognised by the inbox and acked.
    let taken_over = rows
        .iter()
        .filter(|r| {
            r.get::<String>("recorded_by").unwrap() == "b" && r.get::<i64>("attempt").unwrap() >= 2
        })
        .count();
    let duplicates = b.log().matches("already recorded").count();
    assert!(
        taken_over + duplicates > 0,
        "b took over none of a's unacked events:\n{}",
        b.log()
    );
    eprintln!(
        "a recorded {}, b {} ({taken_over} taken over from a, {duplicates} duplicates acked)",
        counts["a"], counts["b"]
    );

    // The chainer of `b` (and of `a` until it died) chained every row: one chain, intact.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match ovasabi_services::audit::verify(&store).await.unwrap() {
            ovasabi_services::audit::Verdict::Intact {
                entries,
                pending: 0,
            } => {
                assert_eq!(entries, EVENTS as i64);
                break;
            }
            ovasabi_services::audit::Verdict::Intact { pending, .. } => {
                assert!(Instant::now() < deadline, "{pending} rows still unchained");
            }
            broken => panic!("{broken:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let status = b.terminate();
    assert!(status.success(), "{status}:\n{}", b.log());
    assert!(b.log().contains("stopped"), "{}", b.log());
}

#[test]
fn while_up_holds_the_embedded_bus_events_and_dead_letters_go_through_its_api() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path();
    let data = data_dir.to_str().unwrap();
    let mut up = Proc::spawn(
        "up",
        &[],
        &["--data-dir", data, "up", "--http", "127.0.0.1:0"],
    );
    up.wait_for_line("ready:", Duration::from_secs(30));
    let api = up
        .log()
        .lines()
        .find_map(|l| {
            l.split("listening on ")
                .nth(1)
                .map(|a| a.split_whitespace().next().unwrap_or("").to_owned())
        })
        .expect("up prints where it listens");
    // `ovasabi events publish` of `ty` on `topic`, about subject `u9`, to `api`.
    let publish = |topic: &str, ty: &str, data: &str, api: &str| {
        publish(
            data_dir,
            topic,
            ty,
            data,
            "u9",
            &["--api", api, "--format", "json"],
        )
    };
    let good =
        r#"{"user_id":"u9","email":"ada@example.com","registered_at":"2026-11-27T10:00:00Z"}"#;

    // Through `up`'s API: published, and the audit trail records it.
    let published: serde_json::Value = serde_json::from_str(&stdout_ok(&publish(
        "user.events",
        "user.registered",
        good,
        &api,
    )))
    .unwrap();
    assert_eq!(published["topic"], "user.events", "{published}");
    assert!(published["offset"].is_u64(), "{published}");
    let id = published["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !audit_lines(data_dir)
        .iter()
        .any(|r| r["event"]["id"] == id.as_str())
    {
        assert!(
            Instant::now() < deadline,
            "the event never reached the audit trail"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Refused by the platform's contract check: a usage error naming the field.
    let refused = publish(
        "user.events",
        "user.registered",
        r#"{"user_id":"u9"}"#,
        &api,
    );
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("the platform refused") && stderr.contains("email"),
        "{stderr}"
    );

    // No API there: the message says what holds the bus and what to pass.
    let lost = publish("user.events", "user.registered", good, "http://127.0.0.1:1");
    assert_eq!(lost.status.code(), Some(1), "{lost:?}");
    let stderr = String::from_utf8_lossy(&lost.stderr);
    assert!(
        stderr.contains("held by a running `ovasabi up`") && stderr.contains("--api"),
        "{stderr}"
    );
    // A payment for an order the wallet never saw: dead-lettered after its retries (1 + 2
    // + 4 + 8 s apart), then listed, shown and re-driven through the API.
    stdout_ok(&publish(
        "commerce.events",
        "payment.completed",
        r#"{"payment_id":"p-cli","order_id":"o-cli","amount":{"amount_minor":1200,"currency":"EUR"},"method":"card","completed_at":"2026-11-27T10:00:00Z"}"#,
        &api,
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    let listed = loop {
        let out = stdout_ok(&ovasabi(
            data_dir,
            &["dlq", "list", "--api", &api, "--format", "json"],
        ));
        if !out.trim().is_empty() {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "nothing was dead-lettered:\n{}",
            up.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let letter: serde_json::Value = serde_json::from_str(listed.lines().next().unwrap()).unwrap();
    assert_eq!(letter["type"], "payment.completed", "{letter}");
    assert_eq!(letter["group"], "wallet", "{letter}");
    let id = letter["id"].as_str().unwrap().to_owned();
    let pretty = stdout_ok(&ovasabi(
        data_dir,
        &["dlq", "list", "--api", &api, "--group", "wallet"],
    ));
    assert!(pretty.starts_with("ID") && pretty.contains(&id), "{pretty}");
    let shown = stdout_ok(&ovasabi(data_dir, &["dlq", "show", &id, "--api", &api]));
    assert!(shown.starts_with(&format!("dead letter {id}")), "{shown}");
    assert!(
        shown.contains("o-cli") && shown.contains("group:          wallet"),
        "{shown}"
    );
    let missing = ovasabi(
        data_dir,
        &["dlq", "show", "commerce.events.dlq@99", "--api", &api],
    );
    assert_eq!(missing.status.code(), Some(2), "{missing:?}");
    // The order it was for, then the re-drive: once; a second one is skipped.
    stdout_ok(&publish(
        "commerce.events",
        "order.placed",
        r#"{"order_id":"o-cli","customer_id":"u9","items":[{"sku":"S","quantity":1,"unit_price":{"amount_minor":1200,"currency":"EUR"}}],"total":{"amount_minor":1200,"currency":"EUR"},"shipping_address":{"recipient":"Ada","line1":"1 Main St","city":"London","postal_code":"N1","country":"GB"},"placed_at":"2026-11-27T10:00:00Z"}"#,
        &api,
    ));
    let redriven = stdout_ok(&ovasabi(
        data_dir,
        &["dlq", "redrive", "--id", &id, "--api", &api],
    ));
    assert!(
        redriven.starts_with(&format!("re-drove {id} (event "))
            && redriven.contains("to commerce.events@"),
        "{redriven}"
    );
    let again = stdout_ok(&ovasabi(
        data_dir,
        &["dlq", "redrive", "--id", &id, "--api", &api],
    ));
    assert!(again.starts_with(&format!("skipped {id}")), "{again}");

    assert!(up.terminate().success(), "{}", up.log());
}
