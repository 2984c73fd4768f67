//! `ovasabi`: one binary for the OVASABI event platform.
//!
//! # Layout
//! - `cli`: the command line, parsed by clap.
//! - `cmd/`: one module per command family (`up`/`serve`, `seed-demo`, `audit`,
//!   `webhooks`, `events`, `bus`, `bench`).
//! - `failure`: how an error becomes a message and an exit code.

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

fn main() {
    ovasabi_webhooks::install_tls();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OVASABI_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
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
