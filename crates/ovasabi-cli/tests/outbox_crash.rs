//! The transactional outbox under SIGKILL: `ovasabi up` is killed while requests are
//! answered and committed events wait in the outbox (the relay is held back); after a
//! restart every committed event is published, each once after dedup (one event id per
//! change), retried requests (same `Idempotency-Key`) change nothing twice, and a refused
//! change has no event.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ovasabi_store::{params, Store, StoreConfig};

const BIN: &str = env!("CARGO_BIN_EXE_ovasabi");

struct Up {
    child: Child,
    addr: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn up(data_dir: &std::path::Path, extra: &[&str]) -> Up {
    let mut child = Command::new(BIN)
        .env_remove("OVASABI_DATA_DIR")
        .env_remove("OVASABI_BUS")
        .env_remove("OVASABI_DB")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["up", "--http", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let lines = log.clone();
    let pipe = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_owned());
            }
            lines.lock().unwrap().push(line);
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| {
            panic!(
                "ovasabi up did not listen:\n{}",
                log.lock().unwrap().join("\n")
            )
        });
    Up { child, addr, log }
}

async fn unpublished(db: &std::path::Path) -> i64 {
    let store = Store::open(&StoreConfig::sqlite(db), &[]).await.unwrap();
    store
        .query_one(
            "SELECT COUNT(*) AS n FROM outbox WHERE published_at IS NULL",
            params![],
        )
        .await
        .unwrap()
        .get("n")
        .unwrap()
}

#[derive(Clone, Debug)]
enum Outcome {
    Created(String),
    Refused,
    Unknown,
}

async fn register(client: &reqwest::Client, addr: &str, key: &str, email: &str) -> Outcome {
    let sent = client
        .post(format!("http://{addr}/v1/users"))
        .header("Idempotency-Key", key)
        .json(&serde_json::json!({"email": email}))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    let Ok(response) = sent else {
        return Outcome::Unknown;
    };
    let status = response.status();
    match response.json::<serde_json::Value>().await {
        Ok(body) if status == 201 => Outcome::Created(body["id"].as_str().unwrap().to_owned()),
        Ok(_) if status == 409 => Outcome::Refused,
        _ => Outcome::Unknown,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_between_commit_and_publish_loses_nothing_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ovasabi.db");
    let first = up(dir.path(), &["--relay-delay", "400ms"]);
    ovasabi_webhooks::install_tls();
    let client = reqwest::Client::new();

    // Four clients register users, each key once; every fifth request reuses an email
    // (refused: rolled back, no event).
    let outcomes: Arc<Mutex<BTreeMap<String, (String, Outcome)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..4 {
        let (client, addr, outcomes, stop) = (
            client.clone(),
            first.addr.clone(),
            outcomes.clone(),
            stop.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("c{c}-{i}");
                let email = if i % 5 == 4 {
                    format!("c{c}-{}@example.com", i - 1)
                } else {
                    format!("c{c}-{i}@example.com")
                };
                let outcome = register(&client, &addr, &key, &email).await;
                outcomes.lock().unwrap().insert(key, (email, outcome));
                i += 1;
            }
        }));
    }
    // Kill once enough is answered and committed events wait in the outbox.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut first = first;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let created = outcomes
            .lock()
            .unwrap()
            .values()
            .filter(|(_, o)| matches!(o, Outcome::Created(_)))
            .count();
        if created >= 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {created} registrations in 60 s"
        );
    }
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let waiting = unpublished(&db).await;
    assert!(
        waiting > 0,
        "the kill came with no committed event waiting for the relay"
    );
    eprintln!("killed with {waiting} committed events not yet published");

    // Restart; retry every request whose answer was lost, with its key.
    let second = up(dir.path(), &[]);
    let retries: Vec<(String, String)> = outcomes
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, (_, o))| matches!(o, Outcome::Unknown))
        .map(|(k, (e, _))| (k.clone(), e.clone()))
        .collect();
    for (key, email) in &retries {
        let outcome = register(&client, &second.addr, key, email).await;
        assert!(
            !matches!(outcome, Outcome::Unknown),
            "retry of {key} failed"
        );
        outcomes
            .lock()
            .unwrap()
            .insert(key.clone(), (email.clone(), outcome));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while unpublished(&db).await > 0 {
        assert!(
            Instant::now() < deadline,
            "the relay did not drain the outbox"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut second = second;
    let _ = Command::new("kill")
        .args(["-TERM", &second.child.id().to_string()])
        .status();
    let status = second.child.wait().unwrap();
    assert!(
        status.success(),
        "{}",
        second.log.lock().unwrap().join("\n")
    );

    // What reached the bus.
    let out = Command::new(BIN)
        .env_remove("OVASABI_BUS")
        .arg("--data-dir")
        .arg(dir.path())
        .args(["events", "tail", "user.events", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut ids_by_user: HashMap<String, HashSet<String>> = HashMap::new();
    let mut users_by_email: HashMap<String, HashSet<String>> = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(event["type"], "user.registered");
        let user = event["data"]["user_id"].as_str().unwrap().to_owned();
        let email = event["data"]["email"].as_str().unwrap().to_owned();
        ids_by_user
            .entry(user.clone())
            .or_default()
            .insert(event["id"].as_str().unwrap().to_owned());
        users_by_email.entry(email).or_default().insert(user);
    }
    let outcomes = outcomes.lock().unwrap();
    let created: HashSet<&String> = outcomes
        .values()
        .filter_map(|(_, o)| match o {
            Outcome::Created(id) => Some(id),
            _ => None,
        })
        .collect();
    // Every answered registration was published, once after dedup.
    for id in &created {
        let ids = ids_by_user
            .get(*id)
            .unwrap_or_else(|| panic!("user {id} was answered 201 but never published"));
        assert_eq!(
            ids.len(),
            1,
            "user {id} published as different events: {ids:?}"
        );
    }
    // Nothing else was published: every event belongs to an answered registration, and
    // no email (refused duplicates included) has two users.
    for user in ids_by_user.keys() {
        assert!(
            created.contains(user),
            "event for {user}, which no request created"
        );
    }
    for (email, users) in &users_by_email {
        assert_eq!(users.len(), 1, "{email} registered twice: {users:?}");
    }
    let refused = outcomes
        .values()
        .filter(|(_, o)| matches!(o, Outcome::Refused))
        .count();
    assert!(refused > 0, "no refused request was tried");
    eprintln!(
        "{} users created ({} after retries), {refused} refused, all published once",
        created.len(),
        retries.len()
    );
}
