//! `ovasabi`: one binary for the OVASABI event platform.
//!
//! # Layout
//! - `cli`: the command line, parsed by clap.
//! - `cmd/`: one module per command family (`up`/`serve`, `seed-demo`, `audit`,
//!   `webhooks`, `events`, `bus`, `bench`).
//! - `failure`: how an error becomes a message and an exit code.
//!
//! Logs go to stderr, as text (`--log-format pretty`, the default) or one JSON object a line
//! (`--log-format json`, or `OVASABI_LOG_FORMAT`), filtered by `OVASABI_LOG` or, when that is
//! unset or empty, `RUST_LOG` (`OVASABI_LOG` wins); default `warn`.
//!
//! OpenTelemetry tracing is off unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set: then the
//! `ovasabi*` crates' spans (info and above: `http`, `publish`, `delivery`,
//! `webhook.deliver`…) are exported over OTLP/HTTP, service name `OTEL_SERVICE_NAME` or
//! `ovasabi`, and flushed at exit.

mod cli;
mod cmd;
mod failure;
mod output;

use clap::Parser;

// The bus hands buffers between the writer thread and the runtime's workers; glibc's malloc
// serialises such cross-thread frees on arena locks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use crate::cli::{Cli, Command};
use crate::failure::Failure;

/// How log lines are written to stderr (`--log-format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// For people: one line of text per log record, coloured on a terminal.
    Pretty,
    /// One JSON object a line: `timestamp`, `level`, `target`, `fields` (with `message`),
    /// `span` (the current span's fields) and `spans` (every enclosing span's fields).
    Json,
}

/// Where the log filter is read from: the first of these set and not empty. Without either
/// the filter is [`DEFAULT_LOG_FILTER`].
const LOG_FILTER_VARS: [&str; 2] = ["OVASABI_LOG", "RUST_LOG"];

/// The log filter when neither `OVASABI_LOG` nor `RUST_LOG` is set.
const DEFAULT_LOG_FILTER: &str = "warn";

/// The variable that turns OpenTelemetry tracing on: the OTLP/HTTP collector's base URL
/// (spans go to `<endpoint>/v1/traces`).
const OTEL_ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// The service name spans are exported under when `OTEL_SERVICE_NAME` is unset.
const DEFAULT_OTEL_SERVICE_NAME: &str = "ovasabi";

/// The OpenTelemetry tracer provider when [`OTEL_ENDPOINT_VAR`] is set: an OTLP/HTTP
/// (protobuf) exporter behind a batch processor on the Tokio runtime (call it inside the
/// runtime), service name `OTEL_SERVICE_NAME` or `ovasabi`. `None` when the variable is unset
/// or empty; an endpoint that is not an http(s) URL is a usage error naming it.
fn otel_provider() -> Result<Option<opentelemetry_sdk::trace::SdkTracerProvider>, Failure> {
    let endpoint = match std::env::var(OTEL_ENDPOINT_VAR) {
        Ok(value) if !value.trim().is_empty() => value,
        Ok(_) | Err(std::env::VarError::NotPresent) => return Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err(Failure::usage(format!(
                "invalid {OTEL_ENDPOINT_VAR}: not UTF-8"
            )))
        }
    };
    let invalid = |why: String| {
        Failure::usage(format!(
            "invalid {OTEL_ENDPOINT_VAR}={endpoint:?}: {why} (expected the OTLP/HTTP collector's \
             base URL, such as `http://localhost:4318`)"
        ))
    };
    match reqwest::Url::parse(endpoint.trim()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {}
        Ok(url) => {
            return Err(invalid(format!(
                "not an http(s) URL with a host (scheme {:?})",
                url.scheme()
            )))
        }
        Err(e) => return Err(invalid(e.to_string())),
    }
    // The exporter reads the endpoint (and the other `OTEL_EXPORTER_OTLP_*` settings) itself.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| invalid(e.to_string()))?;
    let service_name = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|name| !name.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_OTEL_SERVICE_NAME.to_owned());
    let processor =
        opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service_name)
                .build(),
        )
        .build();
    Ok(Some(provider))
}

/// Sends log lines to stderr in `format`, filtered per [`LOG_FILTER_VARS`]; a filter that
/// does not parse is a usage error naming it. With `otel`, spans of the `ovasabi*` crates at
/// `info` and above also go to OpenTelemetry, whatever the log filter says.
fn init_logging(
    format: LogFormat,
    otel: Option<&opentelemetry_sdk::trace::SdkTracerProvider>,
) -> Result<(), Failure> {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;

    let mut source = ("the default", DEFAULT_LOG_FILTER.to_owned());
    for var in LOG_FILTER_VARS {
        match std::env::var(var) {
            Ok(value) if !value.trim().is_empty() => {
                source = (var, value);
                break;
            }
            Ok(_) | Err(std::env::VarError::NotPresent) => {}
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(Failure::usage(format!(
                    "invalid log filter in {var}: not UTF-8"
                )));
            }
        }
    }
    let (var, directives) = source;
    let filter = tracing_subscriber::EnvFilter::builder()
        .parse(&directives)
        .map_err(|e| {
            Failure::usage(format!(
                "invalid log filter {var}={directives:?}: {e} (expected directives such as \
                 `info,ovasabi_middleware=debug`)"
            ))
        })?;
    // No OpenTelemetry configured: no layer at all (`None` is a no-op layer).
    let otel_layer = otel.map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("ovasabi"))
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("ovasabi", tracing::Level::INFO),
            )
    });
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(otel_layer);
    match format {
        LogFormat::Pretty => registry
            .with(
                fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_filter(filter),
            )
            .init(),
        LogFormat::Json => registry
            .with(
                fmt.json()
                    .with_ansi(false)
                    .with_current_span(true)
                    .with_span_list(true)
                    .with_filter(filter),
            )
            .init(),
    }
    Ok(())
}

fn main() {
    ovasabi_webhooks::install_tls();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => Failure::runtime(format!("cannot start the async runtime: {e}")).exit(),
    };
    // The exporter's batch processor runs on the runtime.
    let otel = match runtime.block_on(async { otel_provider() }) {
        Ok(otel) => otel,
        Err(failure) => failure.exit(),
    };
    if let Err(failure) = init_logging(cli.global.log_format, otel.as_ref()) {
        failure.exit();
    }
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Up(args) => cmd::serve::up(&cli.global, args).await,
            Command::Serve(args) => cmd::serve::serve(&cli.global, args).await,
            Command::SeedDemo(args) => cmd::seed::run(args).await,
            Command::Schema(cmd) => cmd::schema::run(&cli.global, cmd).await,
            Command::Audit(cmd) => cmd::audit::run(&cli.global, cmd).await,
            Command::Replay(cmd) => cmd::replay::run(&cli.global, cmd).await,
            Command::Trace(args) => cmd::audit::trace(&cli.global, args).await,
            Command::Status(args) => cmd::status::run(&cli.global, args).await,
            Command::Webhooks(cmd) => cmd::webhooks::run(&cli.global, cmd).await,
            Command::Events(cmd) => cmd::events::run(&cli.global, cmd).await,
            Command::Bus(cmd) => cmd::bus::run(&cli.global, cmd).await,
            Command::Dlq(cmd) => cmd::dlq::run(&cli.global, cmd).await,
            Command::Bench(cmd) => cmd::bench::run(&cli.global, cmd).await,
            Command::Torture(cmd) => cmd::torture::run(&cli.global, cmd).await,
        }
    });
    if let Some(provider) = otel {
        // Flush the spans still batched; the runtime is still up to send them.
        if let Err(error) = provider.shutdown() {
            eprintln!("warning: flushing OpenTelemetry spans failed: {error}");
        }
    }
    if let Err(failure) = result {
        failure.exit();
    }
}
