//! Two `ovasabi serve` processes of different services cooperating through NATS JetStream and
//! PostgreSQL: `users` takes a registration over HTTP; `wallet`, in another process, reacts to
//! its `user.registered` with the signup bonus, `coin.mined`, caused by it.
//!
//! Both processes run in a NATS namespace of the test's own (`OVASABI_NAMESPACE`), so their
//! domain topics (`user.events`, `wallet.events`) and consumer groups are not those of other
//! runs on the same server; the test deletes the namespace's streams at the end.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ovasabi_core::{Bus as _, StartFrom, SubscribeOptions, Subscriber as _};

const BIN: &str = env!("CARGO_BIN_EXE_ovasabi");

struct Serve {
    child: Child,
    lines: mpsc::Receiver<String>,
    name: &'static str,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    fn start(name: &'static str, envs: &[(&str, &str)], args: &[&str]) -> Serve {
        let mut child = Command::new(BIN)
            .env_remove("OVASABI_DATA_DIR")
            .envs(envs.iter().copied())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                eprintln!("[{name}] {line}");
                let _ = tx.send(line);
            }
        });
        Serve { child, lines, name }
    }

    /// The first line containing `needle`.
    fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("{} printed no {needle:?}", self.name),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_wallet_in_two_processes_cooperate_through_nats() {
    const TEST: &str = "users_and_wallet_in_two_processes_cooperate_through_nats";
    let Some(nats) = ovasabi_nats::testing::server_or_skip(TEST) else {
        return;
    };
    let Some(db) = ovasabi_store::testing::postgres_or_skip(TEST).await else {
        return;
    };
    let db_url = db.database_url();
    let data_dir = tempfile::tempdir().unwrap();
    let namespace = format!("coop-{:016x}", rand::random::<u64>());
    let envs = [
        ("OVASABI_NAMESPACE", namespace.as_str()),
        ("OVASABI_BUS", nats.url.as_str()),
        ("OVASABI_DB", db_url.as_str()),
        ("OVASABI_DATA_DIR", data_dir.path().to_str().unwrap()),
    ];
    let users = Serve::start(
        "users",
        &envs,
        &[
            "serve",
            "users",
            "--http",
            "127.0.0.1:0",
            "--instance",
            "users-1",
        ],
    );
    let wallet = Serve::start(
        "wallet",
        &envs,
        &["serve", "wallet", "--instance", "wallet-1"],
    );
    let listening = users.wait_for("listening on http://");
    users.wait_for("ready:");
    wallet.wait_for("ready:");
    let addr = listening
        .split("http://")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();

    let email = format!("coop-{}@example.com", std::process::id());
    ovasabi_webhooks::install_tls();
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/v1/users"))
        .header("X-Correlation-Id", "coop-1")
        .json(&serde_json::json!({"email": email}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let user: serde_json::Value = response.json().await.unwrap();
    let user_id = user["id"].as_str().unwrap().to_owned();

    // Read both topics (an ephemeral group, from the beginning) for this user's events.
    let bus = ovasabi_nats::NatsBus::connect(
        ovasabi_nats::NatsConfig::new(&nats.url).namespace(namespace.as_str()),
    )
    .await
    .unwrap();
    let options = SubscribeOptions::new("coop-reader", ["user.events", "wallet.events"])
        .unwrap()
        .start(StartFrom::Time(
            chrono::Utc::now() - chrono::Duration::minutes(2),
        ))
        .ephemeral(true);
    let mut sub = bus.subscribe(options).await.unwrap();
    let (mut registered, mut mined) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while registered.is_none() || mined.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let delivery = tokio::time::timeout(left, sub.next())
            .await
            .unwrap_or_else(|_| panic!("no coin.mined for {user_id} within 60 s"))
            .unwrap()
            .unwrap();
        let event = delivery.event().clone();
        let _ = delivery.ack().await;
        if event.subject.as_deref() != Some(user_id.as_str()) {
            continue;
        }
        match event.ty.as_str() {
            "user.registered" => registered = Some(event),
            "coin.mined" => mined = Some(event),
            _ => {}
        }
    }
    sub.close().await;
    drop((users, wallet));
    let status = ovasabi_nats::provision::status(&bus).await.unwrap();
    let topics: Vec<&str> = status.streams.iter().map(|s| s.topic.as_str()).collect();
    assert!(
        topics.contains(&"user.events") && topics.contains(&"wallet.events"),
        "the namespace's topics: {topics:?}"
    );
    for topic in topics {
        bus.delete_topic(topic).await.unwrap();
    }
    bus.close().await.unwrap();
    let (registered, mined) = (registered.unwrap(), mined.unwrap());
    assert_eq!(registered.extension_str("correlationid"), Some("coop-1"));
    assert_eq!(
        mined.extension_str("causationid"),
        Some(registered.id.as_str()),
        "the bonus names the registration as its cause"
    );
    assert_eq!(mined.extension_str("correlationid"), Some("coop-1"));
    assert_eq!(mined.source, "/ovasabi/wallet");
}
