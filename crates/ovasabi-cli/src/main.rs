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

/// Sends log lines to stderr in `format`, filtered per [`LOG_FILTER_VARS`]; a filter that
/// does not parse is a usage error naming it.
fn init_logging(format: LogFormat) -> Result<(), Failure> {
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder
            .json()
            .with_ansi(false)
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
    Ok(())
}

fn main() {
    ovasabi_webhooks::install_tls();
    let cli = Cli::parse();
    if let Err(failure) = init_logging(cli.global.log_format) {
        failure.exit();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => Failure::runtime(format!("cannot start the async runtime: {e}")).exit(),
    };
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
    if let Err(failure) = result {
        failure.exit();
    }
}
