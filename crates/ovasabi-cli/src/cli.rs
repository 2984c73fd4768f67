//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// OVASABI: the event platform's one binary.
#[derive(Debug, Parser)]
#[command(name = "ovasabi", version, about, propagate_version = true)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub(crate) struct Global {
    /// Data directory of the embedded bus [default: $XDG_DATA_HOME/ovasabi or ~/.local/share/ovasabi]
    #[arg(long, global = true, env = "OVASABI_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Durability of the embedded bus: `process` (survives kill -9) or `machine` (fsync on
    /// every commit, survives power loss)
    #[arg(
        long,
        global = true,
        env = "OVASABI_DURABILITY",
        default_value = "process"
    )]
    pub(crate) durability: String,
    /// Largest event payload accepted, in bytes
    #[arg(long, global = true, env = "OVASABI_MAX_EVENT_BYTES", default_value_t = 1024 * 1024)]
    pub(crate) max_event_bytes: usize,
    /// The bus: `embedded` (SQLite in --data-dir, one process) or a NATS JetStream URL such
    /// as `nats://127.0.0.1:4222` (several processes)
    #[arg(long, global = true, env = "OVASABI_BUS", default_value = "embedded")]
    pub(crate) bus: String,
    /// On NATS: this deployment's namespace (lower-case letters, digits, `-`), so that
    /// several deployments (staging, a test run…) share one NATS server without seeing each
    /// other's topics and consumer groups [default: none]
    #[arg(long, global = true, env = "OVASABI_NAMESPACE")]
    pub(crate) namespace: Option<String>,
    /// The services' database: `sqlite:///path/file.db` or `postgres://user@host/db`
    /// (`?schema=name` to keep the tables in a schema) [default: ovasabi.db in --data-dir]
    #[arg(long, global = true, env = "OVASABI_DB")]
    pub(crate) db: Option<String>,
    /// A directory of extra event schemas (same layout as the repository's `schemas/`),
    /// loaded beside the compiled-in ones
    #[arg(long, global = true, env = "OVASABI_SCHEMAS_DIR")]
    pub(crate) schemas_dir: Option<PathBuf>,
    /// How log lines are written to stderr: `pretty` (for people) or `json` (one object a
    /// line: timestamp, level, target, fields, and the span with the event's event_id,
    /// event_type, correlation_id and trace_id). What is logged is chosen by the filter in
    /// OVASABI_LOG, or RUST_LOG when OVASABI_LOG is unset or empty (OVASABI_LOG wins), such as
    /// `info,ovasabi_middleware=debug`; default `warn`
    #[arg(
        long,
        global = true,
        env = "OVASABI_LOG_FORMAT",
        value_enum,
        default_value = "pretty"
    )]
    pub(crate) log_format: crate::LogFormat,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the whole platform in this process: every service, on the embedded bus and
    /// SQLite unless --bus / --db say otherwise. Stops cleanly on Ctrl-C or SIGTERM.
    Up(UpArgs),
    /// Run chosen services in this process against the configured bus and database; run
    /// it in several processes to share their work.
    Serve(ServeArgs),
    /// Fill a running platform with a small, realistic data set through its HTTP API (users,
    /// posts, comments, reactions, orders paid, declined, shipped, refunded and cancelled,
    /// messages, wallet transfers), so its events flow. Safe to run again.
    SeedDemo(SeedDemoArgs),
    /// Event contracts: list, show and check the schemas, write the AsyncAPI document and
    /// the catalog.
    #[command(subcommand)]
    Schema(SchemaCommand),
    /// Read the audit trail the `audit` service records.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Rebuild a projection from the start of the log.
    #[command(subcommand)]
    Replay(ReplayCommand),
    /// The causal tree of events around an event id or a correlation id, from the audit
    /// trail: which service published what, caused by what, when.
    Trace(TraceArgs),
    /// The platform at a glance: topics with their events and dead letters, consumer
    /// groups with their lag, the outbox backlog, webhook endpoints by state. On the
    /// embedded bus while `ovasabi up` holds the data directory, asked of its API.
    Status(PlatformStatusArgs),
    /// Operate partners' webhooks: add partners (and their API keys), list partners and
    /// endpoints, inspect delivery attempts. Reads the services' database, so it works
    /// while `ovasabi up` runs.
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
    /// Publish, tail and list events.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Set up and inspect the bus (streams and consumers on NATS JetStream).
    #[command(subcommand)]
    Bus(BusCommand),
    /// Dead letters: list and show the events consumer groups gave up on (`<topic>.dlq`),
    /// and re-drive them onto their original topic once the handler is fixed.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Measure the platform.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Processes for crash tests.
    #[command(subcommand, hide = true)]
    Torture(TortureCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum TortureCommand {
    /// Publish forever; print each event id once its publish returned.
    Publish {
        /// Topic
        #[arg(long)]
        topic: String,
        /// Concurrent publishers
        #[arg(long, default_value_t = 8)]
        publishers: usize,
    },
    /// Consume and ack; print `offset id` once each ack returned.
    Consume {
        /// Topic
        #[arg(long)]
        topic: String,
        /// Group
        #[arg(long)]
        group: String,
        /// Stop after this many
        #[arg(long)]
        limit: Option<usize>,
    },
}

/// How services run; `up` and `serve` take the same.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// This process's name, recorded by services that note who did what [default:
    /// <host>-<pid>]
    #[arg(long, env = "OVASABI_INSTANCE")]
    pub(crate) instance: Option<String>,
    /// How long a delivery may stay unacked before the bus gives it to another member of
    /// the group (e.g. after this process died)
    #[arg(long, env = "OVASABI_ACK_TIMEOUT", default_value = "30s")]
    pub(crate) ack_timeout: String,
    /// Handlers running at once per consumer
    #[arg(long, default_value_t = 16)]
    pub(crate) concurrency: usize,
    /// How long running handlers get to finish once asked to stop
    #[arg(long, default_value = "10s")]
    pub(crate) shutdown_grace: String,
    /// A pause before each pass of the outbox relay, for crash tests
    #[arg(long, default_value = "0", hide = true)]
    pub(crate) relay_delay: String,
    /// Topics and patterns the audit trail records, comma-separated
    #[arg(
        long,
        env = "OVASABI_AUDIT_TOPICS",
        value_delimiter = ',',
        default_value = "*.events"
    )]
    pub(crate) audit_topics: Vec<String>,
    /// The moderation service's rules (JSON: content.blocked_terms, content.max_links,
    /// fraud.max_orders_per_minute…), read again when the file changes; built-in rules
    /// without it
    #[arg(long, env = "OVASABI_MODERATION_RULES")]
    pub(crate) moderation_rules: Option<std::path::PathBuf>,
    /// How long an order may wait for its payment before commerce cancels it (`30m`,
    /// `90s`…; `off`: never)
    #[arg(long, default_value = "30m")]
    pub(crate) payment_timeout: String,
    /// Send notification emails through this SMTP server (host:port, plain SMTP: a local
    /// relay); without it they are appended to notifications-email.jsonl in the data
    /// directory
    #[arg(long, env = "OVASABI_SMTP")]
    pub(crate) smtp: Option<String>,
    /// The sender address of notification emails
    #[arg(
        long,
        env = "OVASABI_SMTP_FROM",
        default_value = "notifications@ovasabi.local"
    )]
    pub(crate) smtp_from: String,
    /// Addresses webhook deliveries may reach although the SSRF guard refuses them
    /// (comma-separated CIDRs such as 127.0.0.1/32,::1/128): for local development and tests
    /// only
    #[arg(long, env = "OVASABI_WEBHOOKS_ALLOW", default_value = "")]
    pub(crate) webhooks_allow: String,
    /// Let webhook endpoints use plain http:// (local development and tests only)
    #[arg(long, env = "OVASABI_WEBHOOKS_ALLOW_HTTP")]
    pub(crate) webhooks_allow_http: bool,
}

#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    /// Where the HTTP API listens (`off` for none)
    #[arg(long, env = "OVASABI_HTTP", default_value = "127.0.0.1:8080")]
    pub(crate) http: String,
    /// Once ready, fill the platform with the demo data set through its own HTTP API (what
    /// `ovasabi seed-demo` does); progress on stderr, a failure does not stop `up`
    #[arg(long)]
    pub(crate) demo: bool,
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

#[derive(Debug, Args)]
pub(crate) struct SeedDemoArgs {
    /// The platform's HTTP API: the address `ovasabi up` prints after `listening on`
    #[arg(long, env = "OVASABI_API", default_value = "http://127.0.0.1:8080")]
    pub(crate) api: String,
    /// Users to register (2 to 1000); the posts, orders and messages are shared among them
    #[arg(long, default_value_t = crate::cmd::seed::DEFAULT_USERS)]
    pub(crate) users: usize,
    /// Output format of the summary (`json`: one object, stable field names); progress
    /// goes to stderr either way
    #[arg(long, value_enum, default_value = "pretty")]
    pub(crate) format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Services to run (`all` for every one); see --list
    pub(crate) services: Vec<String>,
    /// List the services and exit
    #[arg(long, conflicts_with = "services")]
    pub(crate) list: bool,
    /// Where the HTTP API listens, e.g. `127.0.0.1:8080` [default: off]
    #[arg(long, env = "OVASABI_HTTP", default_value = "off")]
    pub(crate) http: String,
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ReplayCommand {
    /// Rebuild the analytics (counters, time windows, active users, top content) from the
    /// oldest retained event of their topics, with progress on stderr. Stop the analytics
    /// service first (`ovasabi up` holds the embedded bus anyway).
    Analytics(ReplayArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    /// Output format; `json` prints one object: {"events", "counted", "seconds", "totals"}
    #[arg(long, value_enum, default_value = "pretty")]
    pub(crate) format: Format,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// The events recorded, newest first.
    List(AuditListArgs),
    /// Recompute the trail's hash chain: names the first entry changed, removed or moved
    /// (exit code 3), or says how many entries are intact and how many are not chained yet.
    Verify(AuditVerifyArgs),
}

#[derive(Debug, Args)]
pub(crate) struct PlatformStatusArgs {
    /// The running platform's HTTP API, asked when the embedded bus is held by `ovasabi up`
    #[arg(long, env = "OVASABI_API", default_value = "http://127.0.0.1:8080")]
    pub(crate) api: String,
    /// Output format; `json` prints one object: {at, topics, lag, dead_letters, outbox, webhook_endpoints}
    #[arg(long, value_enum, default_value = "pretty")]
    pub(crate) format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct TraceArgs {
    /// An event id (the tree of its correlation, or what it caused), or a correlation id
    /// (the X-Correlation-Id of a request)
    pub(crate) id: String,
    /// Output format; `json` prints one object: {asked, correlation_id, events, roots}
    #[arg(long, value_enum, default_value = "pretty")]
    pub(crate) format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct AuditVerifyArgs {
    /// Output format; `json` prints one object: {"intact", "entries", "pending"} or {"intact", "position", "reason"}
    #[arg(long, value_enum, default_value = "pretty")]
    pub(crate) format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct AuditListArgs {
    /// Only events of this subject
    #[arg(long)]
    pub(crate) subject: Option<String>,
    /// Only events of this type
    #[arg(long = "type")]
    pub(crate) ty: Option<String>,
    /// At most this many
    #[arg(long, short = 'n', default_value_t = 50)]
    pub(crate) limit: usize,
    /// Output format; `json` prints one object per line
    #[arg(long, value_enum, default_value = "pretty")]
    pub(crate) format: Format,
}

#[derive(Debug, Subcommand)]
pub(crate) enum WebhooksCommand {
    /// Partners: who may register endpoints, and which event types they may receive.
    #[command(subcommand)]
    Partner(WebhooksPartnerCommand),
    /// Every partner's endpoints with their state and delivery counts (pending, delivered,
    /// failed), by partner.
    List(WebhooksListArgs),
    /// An endpoint's latest delivery attempts, newest first: time, status, latency, error.
    Attempts(WebhooksAttemptsArgs),
    /// Pause an endpoint: its events queue until it is resumed.
    Pause(WebhooksEndpointArgs),
    /// Resume an endpoint, also a disabled one: what queued goes out, and its deliveries
    /// that failed for good start their schedule again.
    Resume(WebhooksEndpointArgs),
    /// Send an endpoint again the events since a time that it would receive, under new
    /// message ids (reads the bus: with the embedded bus, while `ovasabi up` is stopped).
    Replay(WebhooksReplayArgs),
}

#[derive(Debug, Args)]
pub(crate) struct WebhooksEndpointArgs {
    /// The endpoint's id (see `ovasabi webhooks list`)
    pub(crate) endpoint_id: String,
}

#[derive(Debug, Args)]
pub(crate) struct WebhooksReplayArgs {
    /// The endpoint's id (see `ovasabi webhooks list`)
    pub(crate) endpoint_id: String,
    /// Replay the events published since this time (RFC 3339, e.g. 2026-11-27T10:00:00Z)
    #[arg(long)]
    pub(crate) from: String,
    /// Output format; `json` prints {replay_id, from, read, queued}
    #[arg(long, value_enum, default_value = "pretty")]
    pub(crate) format: Format,
}

#[derive(Debug, Subcommand)]
pub(crate) enum WebhooksPartnerCommand {
    /// Add a partner and print its API key (`ovk_…`) once: only its SHA-256 is stored, so
    /// store the key now. The partner sends it as `Authorization: Bearer <key>`.
    Add(WebhooksPartnerAddArgs),
    /// Every partner, by name, with the event-type patterns it is permitted.
    List(WebhooksListArgs),
}

#[derive(Debug, Args)]
pub(crate) struct WebhooksPartnerAddArgs {
    /// The partner's name (1 to 100 characters, unique)
    pub(crate) name: String,
    /// Event-type patterns the partner may receive, comma-separated: `*` (every type),
    /// `order.*` (every type whose first token is `order`) or an exact type such as
    /// `order.placed`
    #[arg(long, required = true, value_delimiter = ',', value_name = "PATTERNS")]
    pub(crate) permit: Vec<String>,
    /// Output format; `json` prints one object: {"partner": {id, name, permitted,
    /// created_at}, "api_key"}
    #[arg(long, value_enum, default_value = "pretty")]
    pub(crate) format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct WebhooksListArgs {
    /// Output format; `json` prints one array
    #[arg(long, value_enum, default_value = "pretty")]
    pub(crate) format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct WebhooksAttemptsArgs {
    /// The endpoint's id (see `ovasabi webhooks list`)
    pub(crate) endpoint_id: String,
    /// At most this many attempts (1 to 1000)
    #[arg(long, short = 'n', default_value_t = 20, value_parser = clap::value_parser!(i64).range(1..=1000))]
    pub(crate) limit: i64,
    /// Output format; `json` prints one array (empty for an endpoint without attempts, or
    /// an unknown id)
    #[arg(long, value_enum, default_value = "pretty")]
    pub(crate) format: Format,
}

#[derive(Debug, Subcommand)]
pub(crate) enum SchemaCommand {
    /// Every event type with its versions, topic, compatibility mode, producers and consumers.
    List(SchemaListArgs),
    /// Print one version of a type's schema (the latest unless a version is given).
    Show(SchemaShowArgs),
    /// Check every type's versions against each other under its compatibility mode, and
    /// against a released state; exits 1 on a breaking change, naming the field and rule.
    Check(SchemaCheckArgs),
    /// Write the AsyncAPI 3.0 document of every topic and event (YAML, or JSON with
    /// --json or a `.json` output file).
    Asyncapi(AsyncapiArgs),
    /// Write the readable catalog of every event (Markdown).
    Docs(SchemaOutputArgs),
}

#[derive(Debug, Args)]
pub(crate) struct SchemaListArgs {
    /// Output format
    #[arg(long, value_enum, default_value = "pretty")]
    pub(crate) format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct SchemaShowArgs {
    /// Event type, e.g. `user.registered`
    pub(crate) event_type: String,
    /// Version number, e.g. `2` [default: the latest]
    #[arg(value_name = "VERSION")]
    pub(crate) schema_version: Option<u32>,
}

#[derive(Debug, Args)]
pub(crate) struct SchemaCheckArgs {
    /// The schemas to check: a directory in the layout of `schemas/` [default: the
    /// compiled-in schemas plus --schemas-dir]
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
    /// A git revision holding the released state (e.g. `v1.2.0`, `origin/main`): its
    /// `schemas/` must survive unchanged, and new versions must be compatible with it
    #[arg(long)]
    pub(crate) against: Option<String>,
    /// Output format
    #[arg(long, value_enum, default_value = "pretty")]
    pub(crate) format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct AsyncapiArgs {
    /// Write JSON instead of YAML
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) out: SchemaOutputArgs,
}

#[derive(Debug, Args)]
pub(crate) struct SchemaOutputArgs {
    /// Write to this file [default: standard output]
    #[arg(long, short)]
    pub(crate) output: Option<PathBuf>,
}

/// Output for people or for programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// Aligned text for a person.
    Pretty,
    /// JSON for a program (stable field names).
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum EventsCommand {
    /// Publish one event; prints where it landed.
    Publish(PublishArgs),
    /// Print a topic's events, oldest first; `--follow` keeps printing new ones.
    Tail(TailArgs),
    /// List topics with their counts, consumer groups and lag.
    Topics(TopicsArgs),
}

#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// Topic, e.g. `user.events`
    #[arg(long)]
    pub(crate) topic: String,
    /// Event type, `<domain>.<past_tense_verb>`, e.g. `user.registered`
    #[arg(long = "type")]
    pub(crate) ty: String,
    /// The payload, as JSON
    #[arg(long)]
    pub(crate) data: String,
    /// Partition key: events with one key are consumed in order
    #[arg(long)]
    pub(crate) key: Option<String>,
    /// Source of the event (a URI-reference)
    #[arg(long, default_value = "/ovasabi/cli")]
    pub(crate) source: String,
    /// Subject of the event (what it is about, e.g. a user id)
    #[arg(long)]
    pub(crate) subject: Option<String>,
    /// Event id [default: a new UUIDv7]
    #[arg(long)]
    pub(crate) id: Option<String>,
    /// Output format
    #[arg(long, value_enum, default_value = "pretty")]
    pub(crate) format: Format,
    /// The running platform's HTTP API, used when a running `ovasabi up` holds the embedded
    /// bus (the event then goes through its `POST /v1/events`)
    #[arg(long, env = "OVASABI_API", default_value = "http://127.0.0.1:8080")]
    pub(crate) api: String,
}

#[derive(Debug, Args)]
pub(crate) struct TailArgs {
    /// Topic or pattern (`*` one token, `>` the rest), e.g. `user.events` or `*.events`
    pub(crate) topic: String,
    /// Consume as this durable group (its position advances); without it, nothing is stored
    #[arg(long)]
    pub(crate) group: Option<String>,
    /// Where to start: `beginning`, `latest`, an offset, or an RFC 3339 time
    #[arg(long, default_value = "beginning")]
    pub(crate) from: String,
    /// Keep printing new events until interrupted
    #[arg(long, short)]
    pub(crate) follow: bool,
    /// Stop after this many events
    #[arg(long, short = 'n')]
    pub(crate) limit: Option<usize>,
    /// `json`: one structured-mode CloudEvent per line
    #[arg(long, value_enum, default_value = "pretty")]
    pub(crate) format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct TopicsArgs {
    /// Output format
    #[arg(long, value_enum, default_value = "pretty")]
    pub(crate) format: Format,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DlqCommand {
    /// The dead letters of every `*.dlq` topic (or of one), oldest first.
    ///
    /// One row each: ID (`<dlq topic>@<offset>`), original topic, the group that gave up,
    /// type, event id, reason, attempts, and when it was dead-lettered.
    List(DlqListArgs),
    /// One dead letter whole: its attributes, the handler's error, its data.
    Show(DlqShowArgs),
    /// Publish dead letters again onto their original topic, each at most once.
    ///
    /// The event keeps its id, type, source, subject, data and partition key, loses the
    /// `deadletter*` extensions, and carries `redrivenfor=<group that gave up>` and
    /// `redrivenfrom=<ID>`. Re-driven IDs are recorded in the services' database (table
    /// `dlq_redrives`): a later run skips them (`--force` re-drives them again).
    ///
    /// Every consumer group of the original topic receives the event again, not only the
    /// one that gave up on it. The platform's consumers are idempotent by event id (their
    /// inbox), so the groups that had handled it skip it, and only the group that failed it
    /// acts on it; a consumer of your own must be idempotent by event id too.
    Redrive(DlqRedriveArgs),
}

#[derive(Debug, Args)]
pub(crate) struct DlqListArgs {
    /// Only the dead letters of this topic (the original topic `T`, or `T.dlq`)
    #[arg(long)]
    pub(crate) topic: Option<String>,
    /// Only dead letters whose reason contains this text (case-insensitive), e.g. `max
    /// deliveries`
    #[arg(long)]
    pub(crate) reason: Option<String>,
    /// Only dead letters of this consumer group
    #[arg(long)]
    pub(crate) group: Option<String>,
    /// Output format; `json` prints one object per line: {id, dlq_topic, dlq_offset, topic,
    /// offset, group, type, event_id, reason, error, attempts, dead_lettered_at, event}
    #[arg(long, value_enum, default_value = "pretty")]
    pub(crate) format: Format,
    /// The running platform's HTTP API, asked when a running `ovasabi up` holds the embedded
    /// bus
    #[arg(long, env = "OVASABI_API", default_value = "http://127.0.0.1:8080")]
    pub(crate) api: String,
}

#[derive(Debug, Args)]
pub(crate) struct DlqShowArgs {
    /// The dead letter: `<dlq topic>@<offset>`, as `ovasabi dlq list` shows it
    pub(crate) id: String,
    /// Output format; `json` prints one object, as a line of `dlq list --format json`
    #[arg(long, value_enum, default_value = "pretty")]
    pub(crate) format: Format,
    /// The running platform's HTTP API, asked when a running `ovasabi up` holds the embedded
    /// bus
    #[arg(long, env = "OVASABI_API", default_value = "http://127.0.0.1:8080")]
    pub(crate) api: String,
}

#[derive(Debug, Args)]
pub(crate) struct DlqRedriveArgs {
    /// Re-drive the dead letters of this topic (the original topic `T`, or `T.dlq`)
    #[arg(long)]
    pub(crate) topic: Option<String>,
    /// Re-drive this dead letter (`<dlq topic>@<offset>`, as `ovasabi dlq list` shows it);
    /// repeat for several
    #[arg(long = "id", value_name = "ID", conflicts_with = "all")]
    pub(crate) ids: Vec<String>,
    /// Re-drive every dead letter of every `*.dlq` topic
    #[arg(long, conflicts_with = "topic")]
    pub(crate) all: bool,
    /// Print what would be re-driven and what would be skipped; publish and record nothing
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Re-drive also the dead letters recorded as re-driven already (e.g. after a crash
    /// between recording one and publishing it)
    #[arg(long)]
    pub(crate) force: bool,
    /// Output format; `json` prints one object per dead letter: {id, status (`redriven`,
    /// `would-redrive`, `skipped`, `failed`), topic, offset, event_id, group, redriven_at,
    /// error}
    #[arg(long, value_enum, default_value = "pretty")]
    pub(crate) format: Format,
    /// The running platform's HTTP API, asked when a running `ovasabi up` holds the embedded
    /// bus
    #[arg(long, env = "OVASABI_API", default_value = "http://127.0.0.1:8080")]
    pub(crate) api: String,
}

#[derive(Debug, Subcommand)]
pub(crate) enum BusCommand {
    /// Create or update the streams of topics, idempotently (NATS JetStream; the embedded
    /// bus needs no provisioning). Run it again after changing a setting.
    Provision(ProvisionArgs),
    /// Streams, consumer groups, pending and redelivered counts.
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ProvisionArgs {
    /// Topics to provision [default: the platform's domain topics]
    pub(crate) topics: Vec<String>,
    /// Partitions per topic (the unit of ordering per key); fixed when a stream is created
    #[arg(long, default_value_t = 16)]
    pub(crate) partitions: u32,
    /// Replicas per stream (3 on a 3-node cluster)
    #[arg(long, default_value_t = 1)]
    pub(crate) replicas: usize,
    /// Events older than this are removed: e.g. `7d`, `24h`, `90m`, `0` for no limit
    #[arg(long, default_value = "7d")]
    pub(crate) max_age: String,
    /// Bytes a stream may hold before the oldest events go; `0` for no limit
    #[arg(long, default_value_t = 0)]
    pub(crate) max_bytes: u64,
    /// Window in which a re-published event id is not stored twice: e.g. `2m`
    #[arg(long, default_value = "2m")]
    pub(crate) duplicate_window: String,
    /// Storage of the streams: `file` or `memory`
    #[arg(long, default_value = "file")]
    pub(crate) storage: String,
    /// Output format
    #[arg(long, value_enum, default_value = "pretty")]
    pub(crate) format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// Output format
    #[arg(long, value_enum, default_value = "pretty")]
    pub(crate) format: Format,
}

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Benchmark the embedded bus against raw SQLite and a raw channel, in one run.
    Bus(BenchBusArgs),
    /// Benchmark the NATS JetStream bus against raw async-nats doing the same work, in one
    /// run, on streams of its own that it deletes at the end.
    Nats(BenchNatsArgs),
    /// What checking payloads against their schemas costs: checked vs unchecked publish,
    /// in one run.
    Contracts(BenchContractsArgs),
    /// Requests/s and latency of a write endpoint over HTTP with its event through the
    /// outbox, beside the same handler with publishing off, in one run. On the embedded bus
    /// and SQLite, or with `--bus nats://…` / `--db postgres://…` on NATS JetStream /
    /// PostgreSQL, in a namespace and schema of its own per measurement, deleted afterwards.
    Http(BenchHttpArgs),
}

#[derive(Debug, Args)]
pub(crate) struct BenchHttpArgs {
    /// The endpoint: `orders` (POST /v1/orders) or `users` (POST /v1/users)
    #[arg(long, default_value = "orders")]
    pub(crate) endpoint: String,
    /// The load generator: `wrk` (a separate process, from Debian's `wrk` package),
    /// `builtin` (in this process, sharing its cores), or `auto` (wrk when on PATH)
    #[arg(long, value_enum, default_value = "auto")]
    pub(crate) load: LoadGenerator,
    /// Seconds of load per measurement (wrk)
    #[arg(long, default_value_t = 8)]
    pub(crate) seconds: u64,
    /// Requests per measurement (builtin)
    #[arg(long, default_value_t = 20_000)]
    pub(crate) requests: usize,
    /// Requests in flight (keep-alive connections)
    #[arg(long, default_value_t = 64)]
    pub(crate) connections: usize,
    /// Measurements of each side, alternating; the ratio is the median of the rounds'
    #[arg(long, default_value_t = 3)]
    pub(crate) rounds: usize,
    /// Output format
    #[arg(long, value_enum, default_value = "pretty")]
    pub(crate) format: Format,
}

/// Who sends `bench http`'s requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LoadGenerator {
    /// wrk when it is on PATH, else builtin.
    Auto,
    /// wrk, in a process of its own.
    Wrk,
    /// A client in this process.
    Builtin,
}

#[derive(Debug, Args)]
pub(crate) struct BenchContractsArgs {
    /// Events per measurement
    #[arg(long, default_value_t = 100_000)]
    pub(crate) events: usize,
    /// Concurrent publishers
    #[arg(long, default_value_t = 64)]
    pub(crate) publishers: usize,
    /// Output format
    #[arg(long, value_enum, default_value = "pretty")]
    pub(crate) format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct BenchBusArgs {
    /// Events per throughput measurement
    #[arg(long, default_value_t = 200_000)]
    pub(crate) events: usize,
    /// Payload size in bytes
    #[arg(long, default_value_t = 200)]
    pub(crate) payload: usize,
    /// Publishes timed for the latency measurement
    #[arg(long, default_value_t = 5_000)]
    pub(crate) latency_samples: usize,
    /// Run only the end-to-end (publish+consume+ack) measurement and its baseline (for profiling)
    #[arg(long)]
    pub(crate) only_end_to_end: bool,
    /// Output format
    #[arg(long, value_enum, default_value = "pretty")]
    pub(crate) format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct BenchNatsArgs {
    /// The NATS server [default: --bus when it is a NATS URL, else nats://127.0.0.1:4222]
    #[arg(long)]
    pub(crate) url: Option<String>,
    /// Events per measurement
    #[arg(long, default_value_t = 100_000)]
    pub(crate) events: usize,
    /// Payload size in bytes
    #[arg(long, default_value_t = 200)]
    pub(crate) payload: usize,
    /// Publishes awaiting their PubAck, and deliveries awaiting their ack, at once
    #[arg(long, default_value_t = 256)]
    pub(crate) in_flight: usize,
    /// Times each measurement is taken (raw and ours take turns going first); the table
    /// shows the medians
    #[arg(long, default_value_t = 5)]
    pub(crate) rounds: usize,
    /// Run only the publish or only the consume measurements (for profiling)
    #[arg(long, value_parser = ["publish", "consume"])]
    pub(crate) only: Option<String>,
    /// Output format
    #[arg(long, value_enum, default_value = "pretty")]
    pub(crate) format: Format,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
