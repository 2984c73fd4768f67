//! Structured logs: `--log-format json` writes one JSON object a line on stderr, and the
//! lines logged while a consumer handles an event carry the event's id, type, correlation id
//! and trace id; the log filter comes from `OVASABI_LOG`, else `RUST_LOG`, and a bad one or
//! a bad format is a usage error.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ovasabi");

/// `ovasabi` with a clean environment: no bus, database, data directory or log settings
/// from outside.
fn command(data_dir: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .env_remove("OVASABI_DB")
        .env_remove("OVASABI_BUS")
        .env_remove("OVASABI_DATA_DIR")
        .env_remove("OVASABI_LOG")
        .env_remove("OVASABI_LOG_FORMAT")
        .env_remove("RUST_LOG")
        .arg("--data-dir")
        .arg(data_dir);
    command
}

/// `ovasabi up` whose stderr is collected line by line; killed when dropped.
struct Up {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Up {
    fn start(data_dir: &Path) -> Up {
        let mut child = command(data_dir)
            .env("OVASABI_LOG", "info,ovasabi_middleware=debug")
            .args(["--log-format", "json", "up", "--http", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ovasabi up");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = stderr.clone();
        let pipe = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap().push(line);
            }
        });
        Up { child, stderr }
    }

    fn lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// The first stderr line containing `needle`, waiting up to 30 s.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(line) = self.lines().into_iter().find(|l| l.contains(needle)) {
                return line;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "up exited ({status}) before printing {needle:?}:\n{}",
                    self.lines().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "up printed no {needle:?}:\n{}",
                self.lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits for the exit (SIGKILL after 30 s).
    fn terminate(&mut self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "up did not stop within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // Let the reader thread take the last lines.
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// POSTs `body` as JSON to `http://{addr}{path}` with `headers`; returns the status code.
fn post(addr: &str, path: &str, headers: &[(&str, &str)], body: &str) -> u16 {
    let mut stream = TcpStream::connect(addr).expect("connect to the API");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

fn is_hex32(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[test]
fn json_logs_about_an_event_carry_its_ids() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path();
    let mut up = Up::start(data_dir);
    let listening = up.wait_for("listening on http://");
    up.wait_for("ready:");
    let addr = listening
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("an address after listening on")
        .to_owned();

    let status = post(
        &addr,
        "/v1/users",
        &[("X-Correlation-Id", "logs-1")],
        r#"{"email":"logs@example.com"}"#,
    );
    assert_eq!(status, 201);

    // Wait until the audit consumer has recorded the registration.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = command(data_dir)
            .args(["audit", "list", "--format", "json"])
            .output()
            .expect("run ovasabi audit list");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if String::from_utf8_lossy(&out.stdout).contains("user.registered") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the registration never reached the audit trail:\n{}",
            up.lines().join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    up.terminate();

    let lines = up.lines();
    let records: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .collect();
    assert!(
        !records.is_empty(),
        "no JSON log lines:\n{}",
        lines.join("\n")
    );
    for record in &records {
        let object = record
            .as_object()
            .unwrap_or_else(|| panic!("not an object: {record}"));
        assert!(object["level"].is_string(), "{record}");
        assert!(object["timestamp"].is_string(), "{record}");
        assert!(object["fields"]["message"].is_string(), "{record}");
    }

    // The spans a line was logged in: the current one and the list of enclosing ones.
    let spans = |record: &serde_json::Value| -> Vec<serde_json::Value> {
        let mut spans: Vec<serde_json::Value> =
            record["spans"].as_array().cloned().unwrap_or_default();
        spans.extend(record.get("span").cloned());
        spans
    };
    let about_the_registration: Vec<&serde_json::Value> = records
        .iter()
        .filter(|record| {
            spans(record).iter().any(|span| {
                span["correlation_id"] == "logs-1"
                    && span["event_type"] == "user.registered"
                    && span["event_id"].as_str().is_some_and(|id| !id.is_empty())
                    && span["trace_id"].as_str().is_some_and(is_hex32)
            })
        })
        .collect();
    assert!(
        !about_the_registration.is_empty(),
        "no line about the registration carries its ids:\n{}",
        lines.join("\n")
    );
    // Every line logged in a delivery's span names the event.
    for record in &records {
        for span in spans(record) {
            if span["name"] == "delivery" {
                assert!(span["event_id"].is_string(), "{record}");
                assert!(span["event_type"].is_string(), "{record}");
                assert!(span["group"].is_string(), "{record}");
            }
        }
    }
}

fn run(data_dir: &Path, envs: &[(&str, &str)], args: &[&str]) -> Output {
    command(data_dir)
        .envs(envs.iter().copied())
        .args(args)
        .output()
        .expect("run ovasabi")
}

#[test]
fn a_bad_log_format_or_filter_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &[], &["--log-format", "yaml", "schema", "list"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("yaml") && stderr.contains("pretty") && stderr.contains("json"),
        "{stderr}"
    );

    let out = run(
        dir.path(),
        &[("OVASABI_LOG_FORMAT", "yaml")],
        &["schema", "list"],
    );
    assert_eq!(out.status.code(), Some(2));

    let out = run(
        dir.path(),
        &[("OVASABI_LOG", "info,ovasabi=loud")],
        &["schema", "list"],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("OVASABI_LOG") && stderr.contains("ovasabi=loud"),
        "{stderr}"
    );

    // RUST_LOG is read when OVASABI_LOG is unset…
    let out = run(
        dir.path(),
        &[("RUST_LOG", "ovasabi=loud")],
        &["schema", "list"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("RUST_LOG"));

    // …and OVASABI_LOG wins over it.
    let out = run(
        dir.path(),
        &[("OVASABI_LOG", "warn"), ("RUST_LOG", "ovasabi=loud")],
        &["schema", "list"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
