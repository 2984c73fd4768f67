//! `ovasabi webhooks partner add|list`, `ovasabi webhooks list|attempts|pause|resume|replay`:
//! operating the `webhooks` service from its database (it works while `ovasabi up` runs,
//! and on a fresh data directory: the service's tables are created when missing). `replay`
//! also reads the bus.

use ovasabi_services::webhooks::{self, Partner, WebhooksService};
use ovasabi_services::Service as _;
use ovasabi_store::Store;
use serde_json::{json, Value};

use crate::cli::{
    Format, Global, WebhooksAttemptsArgs, WebhooksCommand, WebhooksEndpointArgs, WebhooksListArgs,
    WebhooksPartnerAddArgs, WebhooksPartnerCommand, WebhooksReplayArgs,
};
use crate::cmd::{open_bus_or_say, store_config};
use crate::failure::Failure;
use crate::output::outln;

/// Runs a `webhooks` command.
pub(crate) async fn run(global: &Global, cmd: WebhooksCommand) -> Result<(), Failure> {
    match cmd {
        WebhooksCommand::Partner(WebhooksPartnerCommand::Add(args)) => {
            partner_add(global, args).await
        }
        WebhooksCommand::Partner(WebhooksPartnerCommand::List(args)) => {
            partner_list(global, args).await
        }
        WebhooksCommand::List(args) => list(global, args).await,
        WebhooksCommand::Attempts(args) => attempts(global, args).await,
        WebhooksCommand::Pause(args) => set_state(global, args, "paused").await,
        WebhooksCommand::Resume(args) => set_state(global, args, "active").await,
        WebhooksCommand::Replay(args) => replay(global, args).await,
    }
}

async fn set_state(
    global: &Global,
    args: WebhooksEndpointArgs,
    state: &str,
) -> Result<(), Failure> {
    let store = open(global).await?;
    webhooks::set_endpoint_state(&store, &args.endpoint_id, state, chrono::Utc::now())
        .await
        .map_err(|e| {
            Failure::usage(format!(
                "{}: `ovasabi webhooks list` shows the endpoints",
                e.message
            ))
        })?;
    eprintln!("endpoint {} is {state}", args.endpoint_id);
    Ok(())
}

async fn replay(global: &Global, args: WebhooksReplayArgs) -> Result<(), Failure> {
    let from = webhooks::parse_time(&args.from).ok_or_else(|| {
        Failure::usage(format!(
            "--from `{}` is not an RFC 3339 time such as 2026-11-27T10:00:00Z",
            args.from
        ))
    })?;
    let store = open(global).await?;
    let bus = open_bus_or_say(
        global,
        "replay over HTTP with the partner's key (POST /v1/webhooks/{id}/replay?from=…)",
    )
    .await?;
    let result =
        webhooks::replay_endpoint(&store, &bus, &args.endpoint_id, from, chrono::Utc::now()).await;
    let _ = bus.close().await;
    let replayed = result.map_err(|e| {
        if e.status.as_u16() == 404 {
            Failure::usage(format!(
                "{}: `ovasabi webhooks list` shows the endpoints",
                e.message
            ))
        } else {
            Failure::runtime(e.message)
        }
    })?;
    match args.format {
        Format::Json => outln!("{}", json!(replayed)),
        Format::Pretty => outln!(
            "replay {}: {} events read since {}, {} queued for endpoint {}",
            replayed.replay_id,
            replayed.read,
            replayed.from.to_rfc3339(),
            replayed.queued,
            args.endpoint_id
        ),
    }
    Ok(())
}

async fn open(global: &Global) -> Result<Store, Failure> {
    let database = store_config(global)?;
    let migrations = [WebhooksService::default().migrations()];
    Store::open(&database, &migrations)
        .await
        .map_err(|e| Failure::runtime(format!("database {database}: {e}")))
}

async fn partner_add(global: &Global, args: WebhooksPartnerAddArgs) -> Result<(), Failure> {
    let permit: Vec<String> = args
        .permit
        .iter()
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    let store = open(global).await?;
    let (partner, key) = webhooks::add_partner(&store, &args.name, &permit)
        .await
        .map_err(|e| Failure::usage(format!("partner not added: {e}")))?;
    let warning = "store the API key now: it cannot be shown again (only its SHA-256 is kept). \
                   The partner sends it as `Authorization: Bearer <key>`";
    match args.format {
        Format::Json => {
            outln!("{}", json!({"partner": partner, "api_key": key}));
            eprintln!("{warning}");
        }
        Format::Pretty => {
            outln!("partner `{}` added", partner.name);
            outln!("  id         {}", partner.id);
            outln!("  permitted  {}", partner.permitted.join(", "));
            outln!("  api key    {key}");
            outln!("");
            outln!("{warning}");
        }
    }
    Ok(())
}

async fn partner_list(global: &Global, args: WebhooksListArgs) -> Result<(), Failure> {
    let store = open(global).await?;
    let partners = webhooks::partners(&store)
        .await
        .map_err(|e| Failure::runtime(format!("reading the partners: {e}")))?;
    match args.format {
        Format::Json => outln!("{}", json!(partners)),
        Format::Pretty => {
            if partners.is_empty() {
                eprintln!(
                    "no partners yet: add one with `ovasabi webhooks partner add NAME --permit 'order.*'`"
                );
                return Ok(());
            }
            let rows: Vec<[String; 4]> = partners.iter().map(partner_row).collect();
            table(&["NAME", "ID", "ADDED", "PERMITTED"], &rows);
        }
    }
    Ok(())
}

fn partner_row(p: &Partner) -> [String; 4] {
    [
        p.name.clone(),
        p.id.clone(),
        p.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
        p.permitted.join(","),
    ]
}

async fn list(global: &Global, args: WebhooksListArgs) -> Result<(), Failure> {
    let store = open(global).await?;
    let endpoints = webhooks::endpoints(&store)
        .await
        .map_err(|e| Failure::runtime(format!("reading the endpoints: {e}")))?;
    match args.format {
        Format::Json => outln!("{}", Value::Array(endpoints)),
        Format::Pretty => {
            if endpoints.is_empty() {
                eprintln!(
                    "no webhook endpoints yet: a partner registers one with `POST /v1/webhooks` \
                     and the API key `ovasabi webhooks partner add` printed"
                );
                return Ok(());
            }
            let rows: Vec<[String; 7]> = endpoints.iter().map(endpoint_row).collect();
            table(
                &[
                    "PARTNER",
                    "ID",
                    "STATE",
                    "PENDING",
                    "DELIVERED",
                    "FAILED",
                    "URL",
                ],
                &rows,
            );
        }
    }
    Ok(())
}

fn endpoint_row(e: &Value) -> [String; 7] {
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let count = |k: &str| {
        e["deliveries"][k]
            .as_i64()
            .map_or_else(|| "-".to_owned(), |n| n.to_string())
    };
    let state = match e["disabled_reason"].as_str() {
        Some(reason) => format!("{} ({reason})", text(&e["state"])),
        None => text(&e["state"]),
    };
    [
        text(&e["partner"]),
        text(&e["id"]),
        state,
        count("pending"),
        count("delivered"),
        count("failed"),
        text(&e["url"]),
    ]
}

async fn attempts(global: &Global, args: WebhooksAttemptsArgs) -> Result<(), Failure> {
    let store = open(global).await?;
    let attempts = webhooks::recent_attempts(&store, &args.endpoint_id, args.limit)
        .await
        .map_err(|e| Failure::runtime(format!("reading the attempts: {e}")))?;
    match args.format {
        Format::Json => outln!("{}", Value::Array(attempts)),
        Format::Pretty => {
            if attempts.is_empty() {
                let known = webhooks::endpoints(&store)
                    .await
                    .map_err(|e| Failure::runtime(format!("reading the endpoints: {e}")))?
                    .iter()
                    .any(|e| e["id"].as_str() == Some(args.endpoint_id.as_str()));
                if known {
                    eprintln!("endpoint {} has no delivery attempts yet", args.endpoint_id);
                } else {
                    eprintln!(
                        "no endpoint has the id `{}`: `ovasabi webhooks list` shows them",
                        args.endpoint_id
                    );
                }
                return Ok(());
            }
            let rows: Vec<[String; 6]> = attempts.iter().map(attempt_row).collect();
            table(
                &["AT", "ATTEMPT", "STATUS", "LATENCY", "MESSAGE", "ERROR"],
                &rows,
            );
        }
    }
    Ok(())
}

fn attempt_row(a: &Value) -> [String; 6] {
    let at = a["at"]
        .as_str()
        .map(|s| match chrono::DateTime::parse_from_rfc3339(s) {
            Ok(t) => t
                .with_timezone(&chrono::Utc)
                .format("%Y-%m-%d %H:%M:%S%.3f")
                .to_string(),
            Err(_) => s.to_owned(),
        })
        .unwrap_or_else(|| "-".to_owned());
    [
        at,
        a["attempt"].to_string(),
        a["status_code"]
            .as_i64()
            .map_or_else(|| "-".to_owned(), |c| c.to_string()),
        a["latency_ms"]
            .as_i64()
            .map_or_else(|| "-".to_owned(), |ms| format!("{ms}ms")),
        a["message_id"].as_str().unwrap_or("-").to_owned(),
        a["error"].as_str().unwrap_or("").to_owned(),
    ]
}

/// Prints `rows` under `headers`, each column as wide as its widest cell (the last one
/// unpadded).
fn table<const N: usize>(headers: &[&str; N], rows: &[[String; N]]) {
    let mut widths: [usize; N] = headers.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for (i, cell) in cells.enumerate() {
            if i + 1 == N {
                out.push_str(cell);
            } else {
                out.push_str(cell);
                let pad = widths[i] - cell.chars().count() + 2;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out
    };
    outln!("{}", line(&mut headers.iter().copied()));
    for row in rows {
        outln!("{}", line(&mut row.iter().map(String::as_str)));
    }
}
