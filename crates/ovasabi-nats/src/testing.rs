//! For tests that need a NATS server: one place that decides whether it is there.
//!
//! A test calls [`server_or_skip`] first. When the server is unreachable (or runs without
//! JetStream) the test prints `skipped: <test> needs …` and returns, so a plain
//! `cargo test` passes on a machine without NATS; with `OVASABI_REQUIRE_SERVICES=1` (as CI
//! sets it) the same situation panics, so a missing broker fails the run instead of
//! silently skipping it.
//!
//! The server is `OVASABI_TEST_NATS_URL`, or `nats://127.0.0.1:4222`.
//!
//! ```no_run
//! #[tokio::test]
//! async fn round_trip() {
//!     let Some(server) = ovasabi_nats::testing::server_or_skip("round_trip") else { return };
//!     let bus = ovasabi_nats::NatsBus::connect(ovasabi_nats::NatsConfig::new(&server.url)).await.unwrap();
//!     // …
//! }
//! ```

use std::io::{BufRead, BufReader};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The variable naming the server tests use.
pub const URL_ENV: &str = "OVASABI_TEST_NATS_URL";
/// The variable that turns "skip when the server is missing" into "fail".
pub const REQUIRE_ENV: &str = "OVASABI_REQUIRE_SERVICES";

/// What a reachable server said about itself.
#[derive(Clone, Debug)]
pub struct ServerProbe {
    /// The URL it was reached at.
    pub url: String,
    /// Its version.
    pub version: String,
    /// Its `max_payload`: the largest message it takes, headers included.
    pub max_payload: usize,
}

/// The server tests use: `OVASABI_TEST_NATS_URL`, or `nats://127.0.0.1:4222`.
pub fn url() -> String {
    std::env::var(URL_ENV)
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| crate::NatsConfig::DEFAULT_URL.to_owned())
}

/// Whether a missing server must fail tests (`OVASABI_REQUIRE_SERVICES=1`).
pub fn required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// Connects to `url` and reads the server's `INFO` greeting; fails with the reason when the
/// server is unreachable or has no JetStream.
pub fn probe(url: &str) -> Result<ServerProbe, String> {
    let first = url.split(',').next().unwrap_or(url).trim();
    let host_port = first
        .strip_prefix("nats://")
        .unwrap_or(first)
        .rsplit('@')
        .next()
        .unwrap_or(first);
    let addr = host_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host_port}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host_port} resolves to no address"))?;
    let timeout = Duration::from_secs(2);
    let stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| format!("{addr} sent no NATS greeting: {e}"))?;
    let json = line
        .strip_prefix("INFO ")
        .ok_or_else(|| format!("{addr} is not a NATS server (it said {line:?})"))?;
    let info: serde_json::Value =
        serde_json::from_str(json.trim()).map_err(|e| format!("unreadable INFO: {e}"))?;
    if info["jetstream"] != serde_json::Value::Bool(true) {
        return Err(format!(
            "the NATS server at {addr} runs without JetStream; start it with `-js`"
        ));
    }
    Ok(ServerProbe {
        url: url.to_owned(),
        version: info["version"].as_str().unwrap_or("?").to_owned(),
        max_payload: info["max_payload"].as_u64().unwrap_or(1024 * 1024) as usize,
    })
}

/// The server if it is there. Otherwise prints why `test` is skipped and returns `None`,
/// or panics when [`required`].
pub fn server_or_skip(test: &str) -> Option<ServerProbe> {
    let url = url();
    match probe(&url) {
        Ok(server) => Some(server),
        Err(why) if required() => panic!(
            "{test} needs a NATS server with JetStream at {url} ({REQUIRE_ENV}=1 makes that a failure): {why}"
        ),
        Err(why) => {
            println!(
                "skipped: {test} needs a NATS server with JetStream at {url} ({why}); set {URL_ENV} to use another, {REQUIRE_ENV}=1 to fail instead"
            );
            None
        }
    }
}
