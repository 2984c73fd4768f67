//! The commands, one module per family.

pub(crate) mod audit;
pub(crate) mod bench;
pub(crate) mod bus;
pub(crate) mod dlq;
pub(crate) mod events;
pub(crate) mod replay;
pub(crate) mod schema;
pub(crate) mod seed;
pub(crate) mod serve;
pub(crate) mod status;
pub(crate) mod torture;
pub(crate) mod webhooks;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ovasabi_core::Bus;
use ovasabi_embedded::{Durability, EmbeddedBus, EmbeddedConfig};

use crate::cli::Global;
use crate::failure::Failure;

/// The data directory: `--data-dir`, `OVASABI_DATA_DIR`, or the user's data directory.
pub(crate) fn data_dir(global: &Global) -> PathBuf {
    if let Some(d) = &global.data_dir {
        return d.clone();
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("ovasabi")
}

/// The embedded bus's configuration from the global options.
pub(crate) fn embedded_config(global: &Global) -> Result<EmbeddedConfig, Failure> {
    let durability = Durability::parse(&global.durability).map_err(Failure::usage)?;
    Ok(EmbeddedConfig::new(data_dir(global))
        .durability(durability)
        .max_event_bytes(global.max_event_bytes))
}

/// The services' database: `--db` / `OVASABI_DB`, or `ovasabi.db` in the data directory.
pub(crate) fn store_config(global: &Global) -> Result<ovasabi_store::StoreConfig, Failure> {
    match global
        .db
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        Some(url) => ovasabi_store::StoreConfig::from_url(url)
            .map_err(|e| Failure::usage(format!("--db: {e}"))),
        None => Ok(ovasabi_store::StoreConfig::sqlite(
            data_dir(global).join("ovasabi.db"),
        )),
    }
}

/// Which bus `--bus` names.
pub(crate) enum BusChoice {
    /// The embedded bus in the data directory.
    Embedded,
    /// NATS JetStream at this URL.
    Nats(String),
}

/// `--namespace` / `OVASABI_NAMESPACE`, when given (empty counts as not given).
fn namespace(global: &Global) -> Option<&str> {
    global
        .namespace
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
}

/// Parses `--bus` / `OVASABI_BUS` (and checks `--namespace` goes with it).
pub(crate) fn bus_choice(global: &Global) -> Result<BusChoice, Failure> {
    let bus = global.bus.trim();
    if bus == "embedded" {
        if let Some(ns) = namespace(global) {
            return Err(Failure::usage(format!(
                "--namespace `{ns}` (or OVASABI_NAMESPACE) applies to NATS; the embedded bus keeps each deployment in its own --data-dir: drop the namespace, or pass --bus nats://HOST:4222"
            )));
        }
        Ok(BusChoice::Embedded)
    } else if bus.starts_with("nats://") || bus.starts_with("tls://") {
        Ok(BusChoice::Nats(bus.to_owned()))
    } else {
        Err(Failure::usage(format!(
            "--bus `{bus}` is not a bus: use `embedded` or a NATS URL such as nats://127.0.0.1:4222"
        )))
    }
}

/// Opens the NATS bus at `url`.
pub(crate) async fn open_nats(
    global: &Global,
    url: &str,
) -> Result<ovasabi_nats::NatsBus, Failure> {
    let mut config = ovasabi_nats::NatsConfig::new(url).max_data_bytes(global.max_event_bytes);
    if let Some(ns) = namespace(global) {
        ovasabi_nats::layout::validate_namespace(ns)
            .map_err(|why| Failure::usage(format!("--namespace (or OVASABI_NAMESPACE): {why}")))?;
        config = config.namespace(ns);
    }
    Ok(ovasabi_nats::NatsBus::connect(config).await?)
}

/// The schema registry: the compiled-in schemas plus `--schemas-dir`.
pub(crate) fn registry(global: &Global) -> Result<ovasabi_schema::Registry, Failure> {
    ovasabi_schema::Registry::builtin_and_dir(global.schemas_dir.as_deref()).map_err(load_failure)
}

/// Every schema problem, one per line.
pub(crate) fn load_failure(errors: Vec<ovasabi_schema::LoadError>) -> Failure {
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    Failure::usage(format!(
        "the event schemas do not load:\n  {}",
        lines.join("\n  ")
    ))
}

/// The contracts of the compiled-in schemas plus those in `schemas_dir`.
pub(crate) fn contracts_of(
    schemas_dir: Option<&std::path::Path>,
) -> Result<ovasabi_schema::Contracts, Failure> {
    let registry = ovasabi_schema::Registry::builtin_and_dir(schemas_dir).map_err(load_failure)?;
    Ok(ovasabi_schema::Contracts::new(
        Arc::new(registry),
        ovasabi_events::upcasters(),
    ))
}

/// Like [`open_bus`], for a command that `ovasabi up` can answer over HTTP instead: when a
/// running platform holds the embedded bus, the error says so and names `instead`.
pub(crate) async fn open_bus_or_say(
    global: &Global,
    instead: &str,
) -> Result<Arc<dyn Bus>, Failure> {
    open_bus_unless_held(global).await?.ok_or_else(|| {
        Failure::runtime(format!(
            "the embedded bus in {} is held by a running `ovasabi up`: {instead}, or stop it first",
            data_dir(global).display()
        ))
    })
}

/// Like [`open_bus`], but `None` when the bus is the embedded one and another process (a
/// running `ovasabi up`) holds its data directory.
pub(crate) async fn open_bus_unless_held(global: &Global) -> Result<Option<Arc<dyn Bus>>, Failure> {
    match open_bus(global).await {
        Ok(bus) => Ok(Some(bus)),
        Err(failure) if failure.is_data_dir_locked() => Ok(None),
        Err(failure) => Err(failure),
    }
}

/// Asks the running platform's HTTP API at `api` (what commands do while `ovasabi up` holds
/// the embedded bus): `method path` with `body` as JSON. The JSON answer of a 2xx; for a
/// 4xx, a usage failure with the API's message; otherwise a failure saying the API did not
/// answer and how to point at it.
pub(crate) async fn ask_api(
    api: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<serde_json::Value, Failure> {
    let url = format!("{}{path}", api.trim_end_matches('/'));
    let unreachable = |e: &dyn std::fmt::Display| {
        Failure::runtime(format!(
            "the embedded bus is held by a running `ovasabi up`, and its API at {api} did not answer ({e}); pass --api with the address `ovasabi up` printed, or stop it"
        ))
    };
    let mut request = reqwest::Client::new()
        .request(method, &url)
        .timeout(Duration::from_secs(30));
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.map_err(|e| unreachable(&e))?;
    let status = response.status();
    let answer: serde_json::Value = response.json().await.unwrap_or_default();
    if status.is_success() {
        return Ok(answer);
    }
    match answer["error"]["message"].as_str() {
        Some(message) if status.is_client_error() => {
            Err(Failure::usage(format!("the platform refused: {message}")))
        }
        _ => Err(unreachable(&format!("{url} answered {status}: {answer}"))),
    }
}

/// `text` for a URL's query string: every byte but `A-Z a-z 0-9 - . _ ~` percent-encoded.
pub(crate) fn query_value(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Opens the configured bus, checking every published event against its contract.
pub(crate) async fn open_bus(global: &Global) -> Result<Arc<dyn Bus>, Failure> {
    open_bus_with(global, Arc::new(registry(global)?)).await
}

/// Like [`open_bus`], with the contracts of a registry already loaded.
pub(crate) async fn open_bus_with(
    global: &Global,
    registry: Arc<ovasabi_schema::Registry>,
) -> Result<Arc<dyn Bus>, Failure> {
    let contracts = ovasabi_schema::Contracts::new(registry, ovasabi_events::upcasters());
    let inner: Arc<dyn Bus> = match bus_choice(global)? {
        BusChoice::Embedded => {
            let config = embedded_config(global)?;
            Arc::new(EmbeddedBus::open(config).await?)
        }
        BusChoice::Nats(url) => Arc::new(open_nats(global, &url).await?),
    };
    Ok(Arc::new(ovasabi_schema::ValidatingBus::new(
        inner, contracts,
    )))
}

/// Parses `500ms`, `30s`, `90m`, `24h`, `7d`, or `0` (none).
pub(crate) fn parse_duration(flag: &str, text: &str) -> Result<Option<Duration>, Failure> {
    let bad = || {
        Failure::usage(format!(
            "{flag} `{text}` is not a duration: use a number with ms, s, m, h or d, e.g. 30s or 7d, or 0 for none"
        ))
    };
    if text == "0" {
        return Ok(None);
    }
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let millis = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => return Err(bad()),
    };
    millis
        .map(|ms| Some(Duration::from_millis(ms)))
        .ok_or_else(bad)
}
