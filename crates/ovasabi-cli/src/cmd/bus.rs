//! `ovasabi bus provision | status`.

use ovasabi_core::Bus;
use ovasabi_nats::provision::{self, Storage, TopicSettings};
use ovasabi_nats::ProvisionConfig;

use crate::cli::{BusCommand, Format, Global, ProvisionArgs, StatusArgs};
use crate::cmd::{bus_choice, open_bus, open_nats, parse_duration, BusChoice};
use crate::failure::Failure;
use crate::output::outln;

/// The platform's domain topics, provisioned when none are named.
const DOMAIN_TOPICS: &[&str] = &[
    "user.events",
    "content.events",
    "commerce.events",
    "wallet.events",
    "messaging.events",
    "moderation.events",
];

/// Runs a `bus` command.
pub(crate) async fn run(global: &Global, cmd: BusCommand) -> Result<(), Failure> {
    match cmd {
        BusCommand::Provision(args) => provision(global, args).await,
        BusCommand::Status(args) => status(global, args).await,
    }
}

fn settings(args: &ProvisionArgs) -> Result<TopicSettings, Failure> {
    if args.partitions == 0 || args.replicas == 0 {
        return Err(Failure::usage(
            "--partitions and --replicas must be at least 1",
        ));
    }
    let storage = match args.storage.as_str() {
        "file" => Storage::File,
        "memory" => Storage::Memory,
        other => {
            return Err(Failure::usage(format!(
                "--storage `{other}`: use `file` or `memory`"
            )))
        }
    };
    let duplicate_window = parse_duration("--duplicate-window", &args.duplicate_window)?
        .ok_or_else(|| Failure::usage("--duplicate-window must be positive, e.g. 2m"))?;
    Ok(TopicSettings {
        partitions: args.partitions,
        replicas: args.replicas,
        max_age: parse_duration("--max-age", &args.max_age)?,
        max_bytes: (args.max_bytes > 0).then_some(args.max_bytes),
        duplicate_window,
        storage,
    })
}

async fn provision(global: &Global, args: ProvisionArgs) -> Result<(), Failure> {
    let settings = settings(&args)?;
    let url = match bus_choice(global)? {
        BusChoice::Nats(url) => url,
        BusChoice::Embedded => {
            return Err(Failure::usage(
                "the embedded bus creates topics as they are first used and needs no provisioning; pass --bus nats://HOST:4222 (or set OVASABI_BUS) to provision NATS JetStream",
            ))
        }
    };
    let topics: Vec<String> = if args.topics.is_empty() {
        DOMAIN_TOPICS.iter().map(|t| (*t).to_owned()).collect()
    } else {
        args.topics.clone()
    };
    let bus = open_nats(global, &url).await?;
    let config = ProvisionConfig::default().with_defaults(settings);
    let result = provision::provision(&bus, &config, &topics).await;
    bus.close().await?;
    let changes = result?;
    match args.format {
        Format::Json => outln!("{}", serde_json::json!({ "changes": changes })),
        Format::Pretty => {
            for c in &changes {
                outln!("{c}");
            }
        }
    }
    Ok(())
}

async fn status(global: &Global, args: StatusArgs) -> Result<(), Failure> {
    match bus_choice(global)? {
        BusChoice::Nats(url) => {
            let bus = open_nats(global, &url).await?;
            let result = provision::status(&bus).await;
            bus.close().await?;
            let status = result?;
            match args.format {
                Format::Json => outln!("{}", serde_json::to_string(&status).unwrap_or_default()),
                Format::Pretty => print!("{status}"),
            }
        }
        BusChoice::Embedded => {
            let bus = open_bus(global).await?;
            let result = bus.topics().await;
            bus.close().await?;
            let topics = result?;
            match args.format {
                Format::Json => outln!("{}", serde_json::json!({ "topics": topics })),
                Format::Pretty => {
                    if topics.is_empty() {
                        outln!("no topics yet");
                    }
                    for t in &topics {
                        outln!(
                            "{}  {} events, offsets {}..{}",
                            t.topic,
                            t.retained,
                            t.first_offset,
                            t.next_offset
                        );
                        for g in &t.groups {
                            outln!(
                                "  group {}  position {}  lag {}",
                                g.group,
                                g.position,
                                g.lag
                            );
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("x", "7d").unwrap(),
            Some(Duration::from_secs(7 * 86_400))
        );
        assert_eq!(
            parse_duration("x", "90m").unwrap(),
            Some(Duration::from_secs(5400))
        );
        assert_eq!(
            parse_duration("x", "250ms").unwrap(),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_duration("x", "0").unwrap(), None);
        for bad in ["", "7", "d", "7w", "-1h", "1.5h", "99999999999999999d"] {
            assert!(parse_duration("x", bad).is_err(), "{bad}");
        }
    }
}
