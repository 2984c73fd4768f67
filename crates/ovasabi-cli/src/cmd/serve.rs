//! `ovasabi up` and `ovasabi serve <service>…`: run services until Ctrl-C or SIGTERM.
//! `up --demo` seeds the platform's own API once it is ready ([`crate::cmd::seed`]).

use std::time::Duration;

use ovasabi_services::{ServiceError, ServiceOptions, Settings};

use crate::cli::{Global, RunArgs, ServeArgs, UpArgs};
use crate::cmd::{bus_choice, data_dir, open_bus_with, parse_duration, store_config, BusChoice};
use crate::failure::Failure;
use crate::output::outln;

/// `ovasabi up`: every service; with `--demo`, seeded once ready.
pub(crate) async fn up(global: &Global, args: UpArgs) -> Result<(), Failure> {
    if args.demo && http_addr(&args.http)?.is_none() {
        return Err(Failure::usage(
            "--demo seeds the platform through its HTTP API: give --http an address, not `off`",
        ));
    }
    run(global, &["all".to_owned()], args.run, &args.http, args.demo).await
}

/// `ovasabi serve`: the services named.
pub(crate) async fn serve(global: &Global, args: ServeArgs) -> Result<(), Failure> {
    if args.list {
        let catalog = ovasabi_services::catalog(&service_options(&args.run, None)?);
        for service in &catalog {
            outln!("{:<10} {}", service.name(), service.about());
        }
        return Ok(());
    }
    run(global, &args.services, args.run, &args.http, false).await
}

/// Parses `--http`: an address, or `off`.
fn http_addr(text: &str) -> Result<Option<std::net::SocketAddr>, Failure> {
    let text = text.trim();
    if text.is_empty() || text == "off" {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        Failure::usage(format!(
            "--http `{text}` is not an address: use host:port such as 127.0.0.1:8080 (port 0 picks a free one), or `off`"
        ))
    })
}

fn service_options(
    args: &RunArgs,
    notifications_dir: Option<std::path::PathBuf>,
) -> Result<ServiceOptions, Failure> {
    let payment_timeout = if args.payment_timeout.trim() == "off" {
        Some(Duration::ZERO)
    } else {
        Some(
            parse_duration("--payment-timeout", args.payment_timeout.trim())?
                .unwrap_or(Duration::ZERO),
        )
    };
    Ok(ServiceOptions {
        notifications_dir,
        moderation_rules: args.moderation_rules.clone(),
        payment_timeout,
        smtp: args
            .smtp
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|server| (server.to_owned(), args.smtp_from.trim().to_owned())),
        audit_topics: args
            .audit_topics
            .iter()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect(),
        webhooks: ovasabi_webhooks::ssrf::Policy {
            allow_http: args.webhooks_allow_http,
            allowlist: ovasabi_webhooks::ssrf::parse_allowlist(&args.webhooks_allow)
                .map_err(|e| Failure::usage(format!("--webhooks-allow: {e}")))?,
        },
    })
}

fn settings(args: &RunArgs) -> Result<Settings, Failure> {
    let ack_timeout = parse_duration("--ack-timeout", &args.ack_timeout)?
        .ok_or_else(|| Failure::usage("--ack-timeout must be positive, e.g. 30s"))?;
    let shutdown_grace =
        parse_duration("--shutdown-grace", &args.shutdown_grace)?.unwrap_or(Duration::ZERO);
    if args.concurrency == 0 {
        return Err(Failure::usage("--concurrency must be at least 1"));
    }
    let relay_delay = parse_duration("--relay-delay", &args.relay_delay)?.unwrap_or(Duration::ZERO);
    let mut settings = Settings {
        relay_delay,
        ack_timeout,
        concurrency: args.concurrency,
        shutdown_grace,
        ..Settings::default()
    };
    if let Some(instance) = args.instance.as_deref().map(str::trim) {
        if instance.is_empty() {
            return Err(Failure::usage("--instance must not be empty"));
        }
        settings.instance = instance.to_owned();
    }
    Ok(settings)
}

fn service_failure(e: ServiceError) -> Failure {
    if e.is_user_error() {
        Failure::usage(e.to_string())
    } else {
        Failure::runtime(e.to_string())
    }
}

/// Waits for Ctrl-C or SIGTERM; a second one ends the process at once.
async fn stop_signal(grace: Duration) {
    let which = signal().await;
    eprintln!(
        "{which}: stopping; running handlers get up to {} to finish (again to stop at once: \
         unfinished events are delivered again)",
        human_duration(grace)
    );
    tokio::spawn(async {
        signal().await;
        eprintln!("stopped at once");
        std::process::exit(130);
    });
}

async fn signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => "interrupt",
            _ = term.recv() => "SIGTERM",
        },
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            "interrupt"
        }
    }
}

fn human_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

async fn run(
    global: &Global,
    names: &[String],
    args: RunArgs,
    http: &str,
    demo: bool,
) -> Result<(), Failure> {
    let catalog = ovasabi_services::catalog(&service_options(&args, Some(data_dir(global)))?);
    let services = ovasabi_services::select(&catalog, names).map_err(service_failure)?;
    let mut settings = settings(&args)?;
    settings.http = http_addr(http)?;
    // Loaded once: served at /v1/schemas, and the contracts every publish is checked against.
    let registry = std::sync::Arc::new(crate::cmd::registry(global)?);
    settings.schemas = Some(registry.clone());
    let database = store_config(global)?;
    let bus_name = match bus_choice(global)? {
        BusChoice::Embedded => format!("embedded bus in {}", data_dir(global).display()),
        BusChoice::Nats(url) => match global.namespace.as_deref().map(str::trim) {
            Some(ns) if !ns.is_empty() => format!("NATS JetStream at {url}, namespace {ns}"),
            _ => format!("NATS JetStream at {url}"),
        },
    };
    let bus = open_bus_with(global, registry).await?;
    eprintln!("ovasabi {}", env!("CARGO_PKG_VERSION"));
    eprintln!("  bus       {bus_name}");
    eprintln!("  database  {database}");
    eprintln!("  instance  {}", settings.instance);
    let grace = settings.shutdown_grace;
    let runtime =
        match ovasabi_services::Runtime::start(&services, bus.clone(), &database, settings).await {
            Ok(runtime) => runtime,
            Err(e) => {
                let _ = bus.close().await;
                return Err(service_failure(e));
            }
        };
    for consumer in runtime.consumers() {
        eprintln!(
            "  {:<9} consumer group `{}` on {}",
            consumer.service,
            consumer.group,
            consumer.topics.join(", ")
        );
    }
    if let Some(addr) = runtime.http_addr() {
        eprintln!("  http      listening on http://{addr} (the dashboard: open http://{addr}/ in a browser; GET /openapi.json lists the API)");
    }
    eprintln!(
        "ready: {} service{} running; Ctrl-C or SIGTERM stops",
        services.len(),
        if services.len() == 1 { "" } else { "s" }
    );
    // The demo data set goes in beside the running services; stopping ends it.
    let seeding = runtime
        .http_addr()
        .filter(|_| demo)
        .map(|addr| tokio::spawn(crate::cmd::seed::demo(addr)));
    let result = runtime
        .wait(async {
            stop_signal(grace).await;
            if let Some(seeding) = &seeding {
                seeding.abort();
            }
        })
        .await;
    if let Some(seeding) = &seeding {
        seeding.abort();
    }
    let closed = bus.close().await;
    let reports = result.map_err(service_failure)?;
    for report in &reports {
        let s = &report.summary;
        eprintln!(
            "  {:<9} {}: {} received, {} acked, {} nacked, {} dead-lettered, {} left for redelivery",
            report.consumer.service,
            report.consumer.group,
            s.received,
            s.acked,
            s.nacked,
            s.dead_lettered,
            s.unfinished + s.settle_failed,
        );
    }
    closed?;
    eprintln!("stopped");
    Ok(())
}
