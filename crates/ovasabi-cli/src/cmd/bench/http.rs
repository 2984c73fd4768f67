//! `ovasabi bench http`: requests per second and latency of a write endpoint over real HTTP,
//! with its event written to the outbox and relayed to the bus, beside the same handler with
//! publishing off, in one run — the outbox's cost as a ratio.
//!
//! Each measurement runs the service in this process (embedded bus with contract checks,
//! SQLite in a fresh directory, the outbox relay) with its HTTP API on a free local port.
//! With `--bus nats://…` it runs on NATS JetStream instead, in a fresh namespace
//! (`bench-<token>`), and with `--db postgres://…` on PostgreSQL, in a fresh schema
//! (`bench_<token>`); both are deleted after the measurement, whatever its outcome.
//! The load comes from `wrk` in a process of its own when it is installed (`--load wrk`),
//! else from a client in this process (`--load builtin`, which shares the server's cores,
//! so its absolute numbers are lower). Either keeps `--connections` requests in flight over
//! keep-alive connections. The two sides alternate for `--rounds` rounds; the ratio is the
//! median of the rounds' ratios, the other numbers the medians of each side.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::process::Command;

use ovasabi_core::Bus;
use ovasabi_embedded::{EmbeddedBus, EmbeddedConfig};
use ovasabi_services::{Runtime, Service, Settings};
use ovasabi_store::{Backend, Store, StoreConfig};
use serde_json::{json, Value};

use super::{print_table, progress, Row};
use crate::cli::{BenchHttpArgs, Format, Global, LoadGenerator};
use crate::cmd::{bus_choice, contracts_of, store_config, BusChoice};
use crate::failure::Failure;
use crate::output::outln;

/// The endpoint measured: its service, path and the body of request `n`, whose one varying
/// value is `token(n)` (in wrk's script, the Lua expression `lua_token`).
struct Target {
    name: &'static str,
    service: fn() -> Arc<dyn Service>,
    path: &'static str,
    body: fn(&str) -> Value,
    token: fn(usize) -> String,
    lua_token: &'static str,
}

impl Target {
    fn body_of(&self, n: usize) -> Value {
        (self.body)(&(self.token)(n))
    }

    /// A wrk script sending this target's requests.
    fn wrk_script(&self) -> String {
        const MARK: &str = "@@TOKEN@@";
        let text = (self.body)(MARK).to_string();
        let (prefix, suffix) = text.split_once(MARK).expect("the body holds its token");
        format!(
            "local n = 0\n\
             request = function()\n\
             \x20 n = n + 1\n\
             \x20 return wrk.format(\"POST\", \"{path}\", {{[\"Content-Type\"] = \"application/json\"}},\n\
             \x20   [==[{prefix}]==] .. {token} .. [==[{suffix}]==])\n\
             end\n",
            path = self.path,
            token = self.lua_token,
        )
    }
}

fn orders_target() -> Target {
    Target {
        name: "POST /v1/orders",
        service: || Arc::new(ovasabi_services::commerce::CommerceService::default_provider()),
        path: "/v1/orders",
        body: |customer| {
            json!({
                "customer_id": format!("customer-{customer}"),
                "items": [
                    {"sku": "BOOK-ENGINE-HC", "quantity": 1, "unit_price": {"amount_minor": 2999, "currency": "EUR"}},
                    {"sku": "MUG-OVA-WHT", "quantity": 2, "unit_price": {"amount_minor": 1250, "currency": "EUR"}}
                ],
                "shipping_address": {"recipient": "Ada Lovelace", "line1": "12 St James's Square",
                    "city": "London", "postal_code": "SW1Y 4JH", "country": "GB"}
            })
        },
        token: |n| (n % 1000).to_string(),
        lua_token: "(n % 1000)",
    }
}

fn users_target() -> Target {
    Target {
        name: "POST /v1/users",
        service: || Arc::new(ovasabi_services::users::UsersService),
        path: "/v1/users",
        body: |n| json!({"email": format!("user{n}@example.com"), "display_name": "Bench"}),
        token: |n| n.to_string(),
        lua_token: "n",
    }
}

struct Measured {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// CPU time of this process per request, in microseconds.
    cpu_us: f64,
}

/// User + system CPU time of this process so far, from `/proc/self/stat` (Linux; clock
/// ticks of 1/100 s).
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces), from the 3rd: utime is the
    // 14th field, stime the 15th.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some((ticks(11)? + ticks(12)?) as f64 / 100.0)
}

/// What a load generator saw.
struct Load {
    requests: usize,
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Where the measurements run: the embedded bus or NATS, SQLite or PostgreSQL.
struct Backends {
    /// NATS JetStream's URL (else the embedded bus).
    nats: Option<String>,
    /// PostgreSQL (else SQLite).
    postgres: Option<StoreConfig>,
}

impl Backends {
    /// From `--bus` and `--db`.
    fn of(global: &Global) -> Result<Backends, Failure> {
        let nats = match bus_choice(global)? {
            BusChoice::Nats(url) => Some(url),
            BusChoice::Embedded => None,
        };
        if global
            .namespace
            .as_deref()
            .is_some_and(|n| !n.trim().is_empty())
        {
            return Err(Failure::usage(
                "--namespace: bench http measures in namespaces of its own (`bench-<token>`, deleted afterwards); leave it out",
            ));
        }
        let postgres = match store_config(global)? {
            config if config.backend() == Backend::Postgres => Some(config),
            _ if global.db.as_deref().is_some_and(|d| !d.trim().is_empty()) => {
                return Err(Failure::usage(
                    "--db: bench http makes a SQLite database of its own for each measurement; give a PostgreSQL URL (postgres://…) to measure on PostgreSQL, or leave --db out",
                ))
            }
            _ => None,
        };
        Ok(Backends { nats, postgres })
    }

    /// For people: what the measurements run on.
    fn describe(&self) -> String {
        let bus = match &self.nats {
            Some(url) => format!("NATS JetStream at {url}"),
            None => "the embedded bus".to_owned(),
        };
        let db = match &self.postgres {
            Some(config) => format!("PostgreSQL ({config})"),
            None => "SQLite".to_owned(),
        };
        format!("{bus} and {db}")
    }
}

/// A name part no other measurement uses: the process, the time and a counter.
fn token() -> String {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{:x}{:x}{}",
        std::process::id(),
        nanos,
        COUNT.fetch_add(1, Ordering::Relaxed)
    )
}

/// One measurement on fresh storage, which is deleted afterwards whatever the outcome.
async fn measure(
    target: &Target,
    args: &BenchHttpArgs,
    backends: &Backends,
    publish: bool,
    wrk: bool,
) -> Result<Measured, Failure> {
    let dir = tempfile::tempdir().map_err(|e| Failure::runtime(e.to_string()))?;
    let token = token();
    let namespace = format!("bench-{token}");
    let database = match &backends.postgres {
        Some(config) => config
            .clone()
            .with_schema(&format!("bench_{token}"))
            .map_err(|e| Failure::runtime(e.to_string()))?,
        None => StoreConfig::sqlite(dir.path().join("ovasabi.db")),
    };
    let inner: Arc<dyn Bus> = match &backends.nats {
        Some(url) => Arc::new(
            ovasabi_nats::NatsBus::connect(
                ovasabi_nats::NatsConfig::new(url).namespace(namespace.clone()),
            )
            .await?,
        ),
        None => Arc::new(EmbeddedBus::open(EmbeddedConfig::new(dir.path().join("bus"))).await?),
    };
    let outcome = measure_on(target, args, inner, &database, &dir, publish, wrk).await;
    if let Some(url) = &backends.nats {
        if let Err(e) = delete_namespace(url, &namespace).await {
            eprintln!("note: deleting the NATS namespace {namespace}: {e}");
        }
    }
    if backends.postgres.is_some() {
        if let Err(e) = drop_schema(&database).await {
            eprintln!("note: dropping the PostgreSQL schema bench_{token}: {e}");
        }
    }
    outcome
}

/// Deletes every stream of `namespace` on the NATS server at `url`.
async fn delete_namespace(url: &str, namespace: &str) -> Result<(), ovasabi_core::BusError> {
    let bus = ovasabi_nats::NatsBus::connect(
        ovasabi_nats::NatsConfig::new(url).namespace(namespace.to_owned()),
    )
    .await?;
    let status = ovasabi_nats::provision::status(&bus).await;
    let deleted = async {
        for stream in &status?.streams {
            bus.delete_topic(&stream.topic).await?;
        }
        Ok(())
    }
    .await;
    let _ = bus.close().await;
    deleted
}

/// Drops the schema `database` keeps its tables in.
async fn drop_schema(database: &StoreConfig) -> Result<(), ovasabi_store::StoreError> {
    let Some(schema) = database.schema() else {
        return Ok(());
    };
    let store = Store::open(database, &[]).await?;
    store
        .execute(&format!("DROP SCHEMA {schema} CASCADE"), &[])
        .await?;
    Ok(())
}

async fn measure_on(
    target: &Target,
    args: &BenchHttpArgs,
    inner: Arc<dyn Bus>,
    database: &StoreConfig,
    dir: &tempfile::TempDir,
    publish: bool,
    wrk: bool,
) -> Result<Measured, Failure> {
    let bus: Arc<dyn Bus> = Arc::new(ovasabi_schema::ValidatingBus::new(
        inner,
        contracts_of(None)?,
    ));
    let settings = Settings {
        instance: "bench".to_owned(),
        http: Some("127.0.0.1:0".parse().expect("an address")),
        publish_events: publish,
        ..Settings::default()
    };
    let services = vec![(target.service)()];
    let runtime = Runtime::start(&services, bus.clone(), database, settings)
        .await
        .map_err(|e| Failure::runtime(e.to_string()))?;
    let addr = runtime.http_addr().expect("listening");
    let relay = runtime.relay().cloned();
    let url = format!("http://{addr}{}", target.path);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .build()
        .map_err(|e| Failure::runtime(e.to_string()))?;

    // Warm up the connections and the database.
    for n in 0..args.connections {
        let _ = client
            .post(&url)
            .json(&target.body_of(usize::MAX - n))
            .send()
            .await;
    }
    let cpu_before = process_cpu_seconds();
    let load = if wrk {
        wrk_load(target, args, &url, dir.path()).await?
    } else {
        builtin_load(target, args, &client, &url).await?
    };

    // Let the relay catch up, so the published count covers the run.
    let deadline = Instant::now() + Duration::from_secs(30);
    while publish
        && relay
            .as_ref()
            .is_some_and(|r| (r.published() as usize) < load.requests)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let published = relay.as_ref().map_or(0, |r| r.published());
    // The server's CPU for the requests and for relaying their events (with wrk, this
    // process is the server alone).
    let cpu_us = match (cpu_before, process_cpu_seconds()) {
        (Some(before), Some(after)) => (after - before) * 1e6 / load.requests.max(1) as f64,
        _ => f64::NAN,
    };
    runtime
        .wait(async {})
        .await
        .map_err(|e| Failure::runtime(e.to_string()))?;
    bus.close().await?;
    if publish && (published as usize) < load.requests {
        return Err(Failure::runtime(format!(
            "only {published} of {} events were relayed to the bus",
            load.requests
        )));
    }
    Ok(Measured {
        rate: load.rate,
        p50_ms: load.p50_ms,
        p99_ms: load.p99_ms,
        cpu_us,
    })
}

/// `args.requests` requests from a client in this process.
async fn builtin_load(
    target: &Target,
    args: &BenchHttpArgs,
    client: &reqwest::Client,
    url: &str,
) -> Result<Load, Failure> {
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..args.requests)
            .map(|n| target.body_of(n).to_string().into_bytes())
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let (client, url, next, bodies) =
            (client.clone(), url.to_owned(), next.clone(), bodies.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= bodies.len() {
                    break;
                }
                let sent = Instant::now();
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(bodies[n].clone())
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = response.status();
                let _ = response.bytes().await.map_err(|e| e.to_string())?;
                if !status.is_success() {
                    return Err::<Vec<f64>, String>(format!("request {n} answered {status}"));
                }
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
            }
            Ok(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(args.requests);
    for t in tasks {
        latencies.extend(
            t.await
                .map_err(|e| Failure::runtime(e.to_string()))?
                .map_err(Failure::runtime)?,
        );
    }
    let rate = args.requests as f64 / start.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    Ok(Load {
        requests: args.requests,
        rate,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    })
}

/// `args.seconds` of load from wrk, in a process of its own.
async fn wrk_load(
    target: &Target,
    args: &BenchHttpArgs,
    url: &str,
    dir: &std::path::Path,
) -> Result<Load, Failure> {
    let script = dir.join("load.lua");
    std::fs::write(&script, target.wrk_script())
        .map_err(|e| Failure::runtime(format!("writing {}: {e}", script.display())))?;
    let base = url.strip_suffix(target.path).unwrap_or(url);
    let output = Command::new("wrk")
        .args(["-t1", "--latency"])
        .arg(format!("-c{}", args.connections))
        .arg(format!("-d{}s", args.seconds.max(1)))
        .arg("-s")
        .arg(&script)
        .arg(base)
        .output()
        .await
        .map_err(|e| Failure::runtime(format!("cannot run wrk: {e}")))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(Failure::runtime(format!(
            "wrk failed ({}): {}{}",
            output.status,
            text,
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    parse_wrk(&text).map_err(|e| Failure::runtime(format!("{e}; wrk printed:\n{text}")))
}

/// Reads wrk's report (with `--latency`).
fn parse_wrk(text: &str) -> Result<Load, String> {
    if let Some(line) = text
        .lines()
        .find(|l| l.contains("Non-2xx or 3xx responses"))
    {
        return Err(format!("some requests failed ({})", line.trim()));
    }
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::trim)
            .ok_or_else(|| format!("no `{prefix}` line"))
    };
    let rate: f64 = field("Requests/sec:")?
        .parse()
        .map_err(|_| "an unreadable Requests/sec".to_owned())?;
    let requests = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or("no `N requests in` line")?;
    let latency = |p: &str| -> Result<f64, String> {
        let value = field(p)?;
        let (number, unit) = value
            .find(|c: char| c.is_ascii_alphabetic())
            .map(|i| value.split_at(i))
            .ok_or_else(|| format!("an unreadable {p} latency `{value}`"))?;
        let number: f64 = number
            .parse()
            .map_err(|_| format!("an unreadable {p} latency `{value}`"))?;
        let ms = match unit {
            "us" => number / 1000.0,
            "ms" => number,
            "s" => number * 1000.0,
            "m" => number * 60_000.0,
            _ => return Err(format!("an unknown latency unit in `{value}`")),
        };
        Ok(ms)
    };
    Ok(Load {
        requests,
        rate,
        p50_ms: latency("50%")?,
        p99_ms: latency("99%")?,
    })
}

pub(super) async fn bench_http(global: &Global, args: BenchHttpArgs) -> Result<(), Failure> {
    let backends = Backends::of(global)?;
    let target = match args.endpoint.as_str() {
        "orders" => orders_target(),
        "users" => users_target(),
        other => {
            return Err(Failure::usage(format!(
                "--endpoint `{other}`: use `orders` (POST /v1/orders) or `users` (POST /v1/users)"
            )))
        }
    };
    let format = args.format;
    let wrk = match args.load {
        LoadGenerator::Builtin => false,
        LoadGenerator::Wrk => true,
        LoadGenerator::Auto => {
            let found = wrk_installed().await;
            if !found {
                progress(
                    format,
                    "wrk is not installed (apt-get install wrk): the load comes from this process",
                );
            }
            found
        }
    };
    if wrk && !wrk_installed().await {
        return Err(Failure::usage(
            "--load wrk: wrk is not on PATH; install it (apt-get install wrk) or use --load builtin",
        ));
    }
    let rounds = args.rounds.max(1);
    progress(format, &format!("on {}", backends.describe()));
    let (mut offs, mut ons) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternate which side goes first, so a machine warming up or slowing down
        // favours neither.
        for publish in if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        } {
            progress(
                format,
                &format!(
                    "round {}/{rounds}: {} {}",
                    round + 1,
                    target.name,
                    if publish {
                        "with its event through the outbox"
                    } else {
                        "with publishing off (baseline)"
                    }
                ),
            );
            let measured = measure(&target, &args, &backends, publish, wrk).await?;
            if publish { &mut ons } else { &mut offs }.push(measured);
        }
    }
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let side = |of: &[Measured], f: fn(&Measured) -> f64| median(of.iter().map(f).collect());
    let ratio = |f: fn(&Measured, &Measured) -> f64| {
        median(offs.iter().zip(&ons).map(|(off, on)| f(off, on)).collect())
    };
    let on = Measured {
        rate: side(&ons, |m| m.rate),
        p50_ms: side(&ons, |m| m.p50_ms),
        p99_ms: side(&ons, |m| m.p99_ms),
        cpu_us: side(&ons, |m| m.cpu_us),
    };
    let off = Measured {
        rate: side(&offs, |m| m.rate),
        p50_ms: side(&offs, |m| m.p50_ms),
        p99_ms: side(&offs, |m| m.p99_ms),
        cpu_us: side(&offs, |m| m.cpu_us),
    };
    let generator = if wrk { "wrk" } else { "builtin client" };
    let rows = vec![
        Row {
            measure: format!(
                "{} with event ({} in flight, {generator})",
                target.name, args.connections
            ),
            value: on.rate,
            unit: "req/s",
            baseline: "publishing off".to_owned(),
            baseline_value: off.rate,
            ratio: ratio(|off, on| on.rate / off.rate),
        },
        Row {
            measure: format!("{} p50 latency", target.name),
            value: on.p50_ms,
            unit: "ms",
            baseline: "publishing off".to_owned(),
            baseline_value: off.p50_ms,
            ratio: ratio(|off, on| off.p50_ms / on.p50_ms),
        },
        Row {
            measure: format!("{} p99 latency", target.name),
            value: on.p99_ms,
            unit: "ms",
            baseline: "publishing off".to_owned(),
            baseline_value: off.p99_ms,
            ratio: ratio(|off, on| off.p99_ms / on.p99_ms),
        },
        Row {
            measure: format!("{} server CPU per request", target.name),
            value: on.cpu_us,
            unit: "µs",
            baseline: "publishing off".to_owned(),
            baseline_value: off.cpu_us,
            ratio: ratio(|off, on| off.cpu_us / on.cpu_us),
        },
    ];
    match format {
        Format::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "rows": rows,
                "bus": if backends.nats.is_some() { "nats" } else { "embedded" },
                "database": if backends.postgres.is_some() { "postgresql" } else { "sqlite" },
            }))
            .unwrap_or_default()
        ),
        Format::Pretty => print_table(&rows),
    }
    Ok(())
}

async fn wrk_installed() -> bool {
    Command::new("wrk").arg("--version").output().await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 8s test @ http://127.0.0.1:41234
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     9.61ms    2.10ms  40.10ms   80.00%
    Req/Sec     6.70k   300.00     7.10k    70.00%
  Latency Distribution
     50%  950.00us
     75%   10.10ms
     90%   11.20ms
     99%    1.20s
  53312 requests in 8.00s, 47.00MB read
Requests/sec:   6663.45
Transfer/sec:      5.87MB
";

    #[test]
    fn wrk_reports_are_read_with_their_units() {
        let load = parse_wrk(REPORT).unwrap();
        assert_eq!(load.requests, 53312);
        assert!((load.rate - 6663.45).abs() < 1e-9);
        assert!((load.p50_ms - 0.95).abs() < 1e-9);
        assert!((load.p99_ms - 1200.0).abs() < 1e-9);
    }

    #[test]
    fn failed_requests_in_a_wrk_report_are_an_error() {
        let failed = REPORT.replace(
            "Requests/sec:",
            "  Non-2xx or 3xx responses: 12\nRequests/sec:",
        );
        let error = parse_wrk(&failed).err().unwrap();
        assert!(error.contains("Non-2xx or 3xx responses: 12"), "{error}");
    }

    #[test]
    fn the_wrk_script_sends_the_targets_body_with_its_token() {
        let script = orders_target().wrk_script();
        assert!(script.contains("\"POST\", \"/v1/orders\""), "{script}");
        assert!(
            script.contains("\"customer_id\":\"customer-]==] .. (n % 1000) .. [==[\""),
            "{script}"
        );
        assert!(script.contains("St James's Square"), "{script}");
    }
}
