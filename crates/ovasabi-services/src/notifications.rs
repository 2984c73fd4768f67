//! `notifications`: a per-user inbox fed by events, pushed live over Server-Sent Events and
//! WebSocket, and sent on through pluggable channels.
//!
//! | event | notification (category) | to |
//! | --- | --- | --- |
//! | `user.registered` | welcome (`welcome`) | the new user |
//! | `message.sent` | new message (`message`) | each recipient |
//! | `order.shipped` | your order has shipped (`order`) | the order's customer |
//! | `payment.failed` | your payment failed (`payment`) | the order's customer |
//! | `content.flagged` | your post was hidden (`moderation`) | the content's author |
//! | `fraud.hold_placed` (an order) | your order is on hold (`fraud`) | the order's customer |
//!
//! (`order.placed` and `content.posted` are read only to learn each order's customer and
//! each post's author: the notifications service reads no other service's tables.) The consumer is a [`Reactor`] with
//! [`Order::Unordered`]: each notification stands alone, its id a UUIDv5 of the cause and
//! the recipient, so a redelivered event notifies nobody twice. A shipment or failed payment
//! whose `order.placed` has not arrived yet is retried until it has.
//!
//! # HTTP
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /v1/notifications?user_id=&unread=&limit=&cursor=` | the user's notifications, newest first |
//! | `POST /v1/notifications/{id}/read` | marks one read (again: no change) |
//! | `GET /v1/notifications/preferences?user_id=` | every category × channel, on or off |
//! | `PUT /v1/notifications/preferences` | `{user_id, category, channel, enabled}` |
//! | `GET /v1/notifications/stream?user_id=&after=` | live: Server-Sent Events, or a WebSocket when the request asks to upgrade |
//!
//! # Live, without gaps
//!
//! Each user's notifications are numbered 1, 2, 3… (`number`), drawn from a per-user counter
//! row in the transaction that creates the notification: the row stays locked until commit
//! (PostgreSQL; SQLite has one writer), so numbers commit in order and without holes. A
//! stream sends every notification numbered above `after` (or the SSE `Last-Event-ID`
//! header: a reconnecting `EventSource` resumes by itself), then each new one as it commits:
//! the consumer wakes the streams of this process the moment it commits, and every stream
//! also looks every second, for notifications committed by another process. SSE events
//! carry `id: <number>`; WebSocket messages are the same JSON as the list's items, which
//! include `number`.
//!
//! # Channels
//!
//! In-app (the inbox above) is always on. `email`, `push` and `sms` are [`Sender`]s: the
//! transaction that creates a notification also queues one row per channel the user has on
//! in `notification_dispatch`, and a dispatcher task sends them after commit (never inside
//! the transaction), retrying a failed send 5 times, 2 s apart, then marking it `failed`
//! with the error. By default `email` and `push` are on and `sms` off, for every category,
//! until the user says otherwise. The default senders append one JSON line per message to
//! `notifications-<channel>.jsonl` in the directory given to
//! [`NotificationsService::with_outbox_dir`] (`ovasabi up` uses its data directory), or
//! log it when there is none. [`SmtpSender`] sends email through an SMTP server instead
//! (`ovasabi up --smtp host:port`). Email needs the user's address, learned from
//! `user.registered`.
//!
//! # Tables
//!
//! `notifications`, `notification_counters`, `notification_preferences`,
//! `notification_dispatch`, and the projections `notification_orders` (order → customer)
//! and `notification_users` (user → email).

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use ovasabi_core::{Event, Ordering};
use ovasabi_events::commerce::{OrderPlaced, OrderShipped, PaymentFailed};
use ovasabi_events::content::ContentPosted;
use ovasabi_events::messaging::MessageSent;
use ovasabi_events::moderation::{ContentFlagged, FraudHoldPlaced, HoldTarget, ModerationTarget};
use ovasabi_events::users::UserRegistered;
use ovasabi_events::DomainEvent;
use ovasabi_middleware::{HandlerError, Message};
use ovasabi_store::inbox::Order;
use ovasabi_store::{params, Migration, MigrationSet, Row, Store, Transaction};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::http::{Api, ApiError, RequestMeta};
use crate::live;
use crate::reactor::{Reaction, Reactor};
use crate::runtime::{ConsumerSpec, Context, Service, ServiceError, Task};
use crate::users::body::Body;
use crate::users::paging;
use crate::wallet::{check_user_id, payload, store_failure};

/// The consumer group, and its inbox name.
pub const GROUP: &str = "notifications";
/// What a notification is about.
pub const CATEGORIES: &[&str] = &[
    "welcome",
    "message",
    "order",
    "payment",
    "moderation",
    "fraud",
];
/// Where a notification goes; `in_app` is always on.
pub const CHANNELS: &[&str] = &["in_app", "email", "push", "sms"];
/// Sends of one dispatch row before it is marked failed.
pub const MAX_SEND_ATTEMPTS: i64 = 5;
/// The wait between two sends of one dispatch row.
pub const SEND_RETRY: Duration = Duration::from_secs(2);
/// How often a stream and the dispatcher look for work committed elsewhere.
const POLL: Duration = Duration::from_secs(1);
/// Notifications a stream reads per query.
const STREAM_BATCH: i64 = 200;

/// The namespace of notification ids.
const NOTIFICATION_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x5c1b_2e8a_9d47_4f03_a6e1_0b7d_3c92_f415);

const MIGRATIONS: MigrationSet = MigrationSet::new(
    "notifications",
    &[Migration::per_backend(
        1,
        "notifications, preferences, dispatch and projections",
        "CREATE TABLE notifications (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            user_id TEXT NOT NULL,
            number BIGINT NOT NULL,
            category TEXT NOT NULL,
            title TEXT NOT NULL,
            body TEXT NOT NULL,
            cause_event_id TEXT NOT NULL,
            cause_event_type TEXT NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            read_at TIMESTAMPTZ,
            UNIQUE (user_id, number)
        );
        CREATE TABLE notification_counters (user_id TEXT PRIMARY KEY, last BIGINT NOT NULL);
        CREATE TABLE notification_preferences (
            user_id TEXT NOT NULL,
            category TEXT NOT NULL,
            channel TEXT NOT NULL,
            enabled BOOLEAN NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (user_id, category, channel)
        );
        CREATE TABLE notification_dispatch (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            notification_id TEXT NOT NULL,
            channel TEXT NOT NULL,
            status TEXT NOT NULL,
            attempts BIGINT NOT NULL,
            last_error TEXT,
            due_at TIMESTAMPTZ NOT NULL,
            sent_at TIMESTAMPTZ,
            UNIQUE (notification_id, channel)
        );
        CREATE INDEX notification_dispatch_pending ON notification_dispatch (due_at) WHERE status = 'pending';
        CREATE TABLE notification_orders (order_id TEXT PRIMARY KEY, customer_id TEXT NOT NULL);
        CREATE TABLE notification_users (user_id TEXT PRIMARY KEY, email TEXT NOT NULL);",
        "CREATE TABLE notifications (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            user_id TEXT NOT NULL,
            number BIGINT NOT NULL,
            category TEXT NOT NULL,
            title TEXT NOT NULL,
            body TEXT NOT NULL,
            cause_event_id TEXT NOT NULL,
            cause_event_type TEXT NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            read_at TIMESTAMPTZ,
            UNIQUE (user_id, number)
        );
        CREATE TABLE notification_counters (user_id TEXT PRIMARY KEY, last BIGINT NOT NULL);
        CREATE TABLE notification_preferences (
            user_id TEXT NOT NULL,
            category TEXT NOT NULL,
            channel TEXT NOT NULL,
            enabled BOOLEAN NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (user_id, category, channel)
        );
        CREATE TABLE notification_dispatch (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            notification_id TEXT NOT NULL,
            channel TEXT NOT NULL,
            status TEXT NOT NULL,
            attempts BIGINT NOT NULL,
            last_error TEXT,
            due_at TIMESTAMPTZ NOT NULL,
            sent_at TIMESTAMPTZ,
            UNIQUE (notification_id, channel)
        );
        CREATE INDEX notification_dispatch_pending ON notification_dispatch (due_at) WHERE status = 'pending';
        CREATE TABLE notification_orders (order_id TEXT PRIMARY KEY, customer_id TEXT NOT NULL);
        CREATE TABLE notification_users (user_id TEXT PRIMARY KEY, email TEXT NOT NULL);",
    ), Migration::new(
        2,
        "notification_content",
        "CREATE TABLE notification_content (content_id TEXT PRIMARY KEY, author_id TEXT NOT NULL);",
    )],
);

/// Whether `channel` is on for a category when the user has not said.
fn default_enabled(channel: &str) -> bool {
    channel != "sms"
}

/// One notification, as a [`Sender`] sees it.
#[derive(Clone, Debug, Serialize)]
pub struct Outgoing {
    /// The notification's id.
    pub id: String,
    /// The recipient.
    pub user_id: String,
    /// The recipient's email address, when known (email needs it).
    pub email: Option<String>,
    /// What it is about.
    pub category: String,
    /// The short line.
    pub title: String,
    /// The text.
    pub body: String,
}

/// A channel that carries notifications out of the platform (email, push, SMS).
#[async_trait]
pub trait Sender: Send + Sync + 'static {
    /// Sends one notification; an error is retried, then recorded.
    async fn send(&self, notification: &Outgoing) -> Result<(), String>;
}

/// Appends one JSON line per notification to a file (`notifications-<channel>.jsonl`), or
/// logs it when there is no directory: the default for every channel.
#[derive(Clone, Debug)]
pub struct FileSender {
    channel: &'static str,
    path: Option<PathBuf>,
}

impl FileSender {
    /// The default sender of `channel`, writing under `dir` if given.
    pub fn new(channel: &'static str, dir: Option<PathBuf>) -> FileSender {
        FileSender {
            channel,
            path: dir.map(|d| d.join(format!("notifications-{channel}.jsonl"))),
        }
    }
}

#[async_trait]
impl Sender for FileSender {
    async fn send(&self, n: &Outgoing) -> Result<(), String> {
        if self.channel == "email" && n.email.is_none() {
            return Err(format!(
                "no email address is known for user {} (it comes with user.registered)",
                n.user_id
            ));
        }
        let line = json!({"channel": self.channel, "at": Utc::now(), "notification": n});
        match &self.path {
            None => {
                tracing::info!(channel = self.channel, notification = %line, "notification sent");
                Ok(())
            }
            Some(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    if let Some(dir) = path.parent() {
                        std::fs::create_dir_all(dir)
                            .map_err(|e| format!("creating {}: {e}", dir.display()))?;
                    }
                    let mut file = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)
                        .map_err(|e| format!("opening {}: {e}", path.display()))?;
                    writeln!(file, "{line}").map_err(|e| format!("writing {}: {e}", path.display()))
                })
                .await
                .map_err(|e| format!("the writer stopped: {e}"))?
            }
        }
    }
}

/// Sends email through an SMTP server (plain SMTP, no TLS or authentication: a local relay
/// such as Postfix or a development catcher), one connection per message. Chosen with
/// `ovasabi up --smtp host:port`.
#[derive(Clone, Debug)]
pub struct SmtpSender {
    server: String,
    from: String,
    timeout: std::time::Duration,
}

impl SmtpSender {
    /// Sends through `server` (`host:port`) as `from`.
    pub fn new(server: impl Into<String>, from: impl Into<String>) -> SmtpSender {
        SmtpSender {
            server: server.into(),
            from: from.into(),
            timeout: std::time::Duration::from_secs(15),
        }
    }

    async fn converse(&self, n: &Outgoing, to: &str) -> Result<(), String> {
        use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
        let stream = tokio::net::TcpStream::connect(&self.server)
            .await
            .map_err(|e| format!("connecting to the SMTP server {}: {e}", self.server))?;
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::new(read);
        // A reply: lines `NNN-…` then `NNN …`; fails unless its code is `expect`.
        async fn reply(
            read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
            expect: &str,
            after: &str,
        ) -> Result<(), String> {
            loop {
                let mut line = String::new();
                let n = read
                    .read_line(&mut line)
                    .await
                    .map_err(|e| format!("reading the SMTP reply to {after}: {e}"))?;
                if n == 0 {
                    return Err(format!(
                        "the SMTP server closed the connection after {after}"
                    ));
                }
                if line.len() >= 4 && &line[3..4] == "-" {
                    continue;
                }
                return if line.starts_with(expect) {
                    Ok(())
                } else {
                    Err(format!(
                        "the SMTP server refused {after}: {}",
                        line.trim_end()
                    ))
                };
            }
        }
        reply(&mut read, "220", "connecting").await?;
        for (command, expect, what) in [
            ("EHLO ovasabi\r\n".to_owned(), "250", "EHLO"),
            (format!("MAIL FROM:<{}>\r\n", self.from), "250", "MAIL FROM"),
            (format!("RCPT TO:<{to}>\r\n"), "250", "RCPT TO"),
            ("DATA\r\n".to_owned(), "354", "DATA"),
        ] {
            write
                .write_all(command.as_bytes())
                .await
                .map_err(|e| format!("writing {what} to the SMTP server: {e}"))?;
            reply(&mut read, expect, what).await?;
        }
        // Header fields are one line each; the body's lines that start with a dot are
        // doubled (RFC 5321 transparency).
        let one_line = |s: &str| s.replace(['\r', '\n'], " ");
        let body: String = n
            .body
            .lines()
            .map(|l| {
                if l.starts_with('.') {
                    format!(".{l}\r\n")
                } else {
                    format!("{l}\r\n")
                }
            })
            .collect();
        let message = format!(
            "From: {}\r\nTo: {to}\r\nSubject: {}\r\nMessage-ID: <{}@ovasabi>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}.\r\n",
            self.from,
            one_line(&n.title),
            n.id
        );
        write
            .write_all(message.as_bytes())
            .await
            .map_err(|e| format!("writing the message to the SMTP server: {e}"))?;
        reply(&mut read, "250", "the message").await?;
        let _ = write.write_all(b"QUIT\r\n").await;
        Ok(())
    }
}

#[async_trait]
impl Sender for SmtpSender {
    async fn send(&self, n: &Outgoing) -> Result<(), String> {
        let Some(to) = n.email.as_deref() else {
            return Err(format!(
                "no email address is known for user {} (it comes with user.registered)",
                n.user_id
            ));
        };
        if to.contains(['<', '>', '\r', '\n', ' ']) {
            return Err(format!("`{to}` cannot be used as an SMTP recipient"));
        }
        tokio::time::timeout(self.timeout, self.converse(n, to))
            .await
            .map_err(|_| {
                format!(
                    "the SMTP server {} did not answer within {:?}",
                    self.server, self.timeout
                )
            })?
    }
}

/// Wakes this process's streams and dispatcher after a commit.
#[derive(Debug, Default)]
struct Hub {
    committed: Notify,
}

/// The `notifications` service.
#[derive(Clone)]
pub struct NotificationsService {
    hub: Arc<Hub>,
    senders: Arc<HashMap<&'static str, Arc<dyn Sender>>>,
}

impl std::fmt::Debug for NotificationsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotificationsService")
            .finish_non_exhaustive()
    }
}

impl Default for NotificationsService {
    fn default() -> Self {
        Self::with_outbox_dir(None)
    }
}

impl NotificationsService {
    /// The service with the default senders, writing their files under `dir` (logging when
    /// `None`).
    pub fn with_outbox_dir(dir: Option<PathBuf>) -> Self {
        let senders = ["email", "push", "sms"]
            .into_iter()
            .map(|c| {
                (
                    c,
                    Arc::new(FileSender::new(c, dir.clone())) as Arc<dyn Sender>,
                )
            })
            .collect();
        NotificationsService {
            hub: Arc::new(Hub::default()),
            senders: Arc::new(senders),
        }
    }

    /// Replaces the sender of `channel` (`email`, `push` or `sms`).
    pub fn with_sender(mut self, channel: &'static str, sender: Arc<dyn Sender>) -> Self {
        Arc::make_mut(&mut self.senders).insert(channel, sender);
        self
    }
}

#[derive(Clone)]
struct Shared {
    api: Api,
    hub: Arc<Hub>,
}

impl Service for NotificationsService {
    fn name(&self) -> &'static str {
        "notifications"
    }

    fn about(&self) -> &'static str {
        "per-user notifications, live over SSE and WebSocket, sent on by email/push/SMS"
    }

    fn migrations(&self) -> MigrationSet {
        MIGRATIONS
    }

    fn consumers(&self, ctx: &Context) -> Result<Vec<ConsumerSpec>, ServiceError> {
        let topics = vec![
            UserRegistered::TOPIC.to_owned(),
            MessageSent::TOPIC.to_owned(),
            OrderPlaced::TOPIC.to_owned(),
            ContentPosted::TOPIC.to_owned(),
            ContentFlagged::TOPIC.to_owned(),
        ];
        Ok(vec![ctx.consumer(
            "notifications",
            GROUP,
            &topics,
            Ordering::PerKey,
            Arc::new(Reactor::new(
                GROUP,
                Order::Unordered,
                ctx.store.clone(),
                Notifier {
                    hub: self.hub.clone(),
                },
            )),
        )?])
    }

    fn routes(&self, ctx: &Context) -> Option<Router> {
        Some(
            Router::new()
                .route("/v1/notifications", get(list))
                .route("/v1/notifications/{id}/read", post(mark_read))
                .route(
                    "/v1/notifications/preferences",
                    get(preferences).put(set_preference),
                )
                .route("/v1/notifications/stream", get(stream))
                .with_state(Shared {
                    api: ctx.api.clone(),
                    hub: self.hub.clone(),
                }),
        )
    }

    fn tasks(&self, ctx: &Context, stop: CancellationToken) -> Vec<Task> {
        let dispatcher = Dispatcher {
            store: ctx.store.clone(),
            hub: self.hub.clone(),
            senders: self.senders.clone(),
        };
        vec![Box::pin(dispatcher.run(stop))]
    }

    fn openapi(&self) -> Value {
        openapi()
    }
}

/// What an event asks of the notifications service.
enum Plan {
    /// Notify users.
    Notify(Vec<Note>),
    /// Notify an order's customer, once the order is known.
    NotifyCustomer { order_id: String, note: Note },
    /// Remember an order's customer.
    RememberOrder {
        order_id: String,
        customer_id: String,
    },
    /// Notify a piece of content's author, once the content is known.
    NotifyAuthor { content_id: String, note: Note },
    /// Remember a piece of content's author.
    RememberContent {
        content_id: String,
        author_id: String,
    },
}

/// One notification to create (its recipient may be filled in later).
struct Note {
    user_id: String,
    category: &'static str,
    title: String,
    body: String,
    email: Option<String>,
}

fn preview(text: &str) -> String {
    const MAX: usize = 140;
    if text.chars().count() <= MAX {
        return text.to_owned();
    }
    let cut: String = text.chars().take(MAX - 1).collect();
    format!("{cut}…")
}

impl Plan {
    fn of(event: &Event) -> Result<Option<Plan>, HandlerError> {
        Ok(Some(match event.ty.as_str() {
            UserRegistered::TYPE => {
                let user: UserRegistered = payload(event)?;
                let name = user
                    .display_name
                    .clone()
                    .unwrap_or_else(|| user.email.clone());
                Plan::Notify(vec![Note {
                    user_id: user.user_id,
                    category: "welcome",
                    title: "Welcome to OVASABI".to_owned(),
                    body: format!("Hello {name}, your account is ready."),
                    email: Some(user.email),
                }])
            }
            MessageSent::TYPE => {
                let sent: MessageSent = payload(event)?;
                Plan::Notify(
                    sent.recipient_ids
                        .iter()
                        .filter(|r| **r != sent.sender_id)
                        .map(|recipient| Note {
                            user_id: recipient.clone(),
                            category: "message",
                            title: format!("New message from {}", sent.sender_id),
                            body: preview(&sent.body),
                            email: None,
                        })
                        .collect(),
                )
            }
            OrderPlaced::TYPE => {
                let placed: OrderPlaced = payload(event)?;
                Plan::RememberOrder {
                    order_id: placed.order_id,
                    customer_id: placed.customer_id,
                }
            }
            OrderShipped::TYPE => {
                let shipped: OrderShipped = payload(event)?;
                Plan::NotifyCustomer {
                    note: Note {
                        user_id: String::new(),
                        category: "order",
                        title: format!("Your order {} has shipped", shipped.order_id),
                        body: format!(
                            "{} is carrying it, tracking number {}.",
                            shipped.carrier, shipped.tracking_number
                        ),
                        email: None,
                    },
                    order_id: shipped.order_id,
                }
            }
            PaymentFailed::TYPE => {
                let failed: PaymentFailed = payload(event)?;
                let reason = serde_json::to_value(failed.reason_code)
                    .ok()
                    .and_then(|v| v.as_str().map(|s| s.replace('_', " ")))
                    .unwrap_or_else(|| "declined".to_owned());
                let retry = if failed.retryable {
                    " You can try again."
                } else {
                    ""
                };
                Plan::NotifyCustomer {
                    note: Note {
                        user_id: String::new(),
                        category: "payment",
                        title: format!("Payment for order {} failed", failed.order_id),
                        body: format!("The payment was refused ({reason}).{retry}"),
                        email: None,
                    },
                    order_id: failed.order_id,
                }
            }
            ContentPosted::TYPE => {
                let posted: ContentPosted = payload(event)?;
                Plan::RememberContent {
                    content_id: posted.content_id,
                    author_id: posted.author_id,
                }
            }
            ContentFlagged::TYPE => {
                let flagged: ContentFlagged = payload(event)?;
                if flagged.target_kind != ModerationTarget::Content {
                    return Ok(None);
                }
                Plan::NotifyAuthor {
                    note: Note {
                        user_id: String::new(),
                        category: "moderation",
                        title: "Your post was hidden".to_owned(),
                        body: format!(
                            "Post {} was flagged and is hidden until a moderator reviews it: {}.",
                            flagged.target_id,
                            flagged.note.as_deref().unwrap_or("no reason given")
                        ),
                        email: None,
                    },
                    content_id: flagged.target_id,
                }
            }
            FraudHoldPlaced::TYPE => {
                let hold: FraudHoldPlaced = payload(event)?;
                if hold.target_kind != HoldTarget::Order {
                    return Ok(None);
                }
                Plan::NotifyCustomer {
                    note: Note {
                        user_id: String::new(),
                        category: "fraud",
                        title: format!("Your order {} is on hold", hold.target_id),
                        body: "We are checking it for your safety; it will not be charged or shipped until the check is done.".to_owned(),
                        email: None,
                    },
                    order_id: hold.target_id,
                }
            }
            _ => return Ok(None),
        }))
    }
}

/// Turns events into notifications.
struct Notifier {
    hub: Arc<Hub>,
}

#[async_trait]
impl Reaction for Notifier {
    type Plan = Plan;

    fn plan(&self, msg: &Message) -> Result<Option<Plan>, HandlerError> {
        Plan::of(msg.event())
    }

    async fn apply(
        &self,
        tx: &mut Transaction,
        msg: &Message,
        plan: Plan,
    ) -> Result<bool, HandlerError> {
        let failed = store_failure("notifications");
        let cause = msg.event();
        let notes = match plan {
            Plan::Notify(notes) => notes,
            Plan::RememberOrder {
                order_id,
                customer_id,
            } => {
                tx.execute(
                    "INSERT INTO notification_orders (order_id, customer_id) VALUES ($1, $2)
                     ON CONFLICT (order_id) DO NOTHING",
                    params![order_id.as_str(), customer_id.as_str()],
                )
                .await
                .map_err(&failed)?;
                return Ok(false);
            }
            Plan::RememberContent {
                content_id,
                author_id,
            } => {
                tx.execute(
                    "INSERT INTO notification_content (content_id, author_id) VALUES ($1, $2)
                     ON CONFLICT (content_id) DO NOTHING",
                    params![content_id.as_str(), author_id.as_str()],
                )
                .await
                .map_err(&failed)?;
                return Ok(false);
            }
            Plan::NotifyAuthor {
                content_id,
                mut note,
            } => {
                let sql =
                    "SELECT author_id AS user_id FROM notification_content WHERE content_id = $1";
                let missing = || {
                    format!(
                        "{} {} about content {content_id}: the notifications service has not seen it posted",
                        cause.ty, cause.id
                    )
                };
                note.user_id = recipient(tx, sql, &content_id, missing).await?;
                vec![note]
            }
            Plan::NotifyCustomer { order_id, mut note } => {
                let sql =
                    "SELECT customer_id AS user_id FROM notification_orders WHERE order_id = $1";
                let missing = || {
                    format!(
                        "{} {} for order {order_id}: the notifications service has not seen that order placed",
                        cause.ty, cause.id
                    )
                };
                note.user_id = recipient(tx, sql, &order_id, missing).await?;
                vec![note]
            }
        };
        for note in notes {
            create(tx, cause, note).await.map_err(&failed)?;
        }
        Ok(false)
    }

    fn committed(&self, _msg: &Message) {
        self.hub.committed.notify_waiters();
    }
}

/// The user a projection (`sql`, selecting `user_id` by `key`) names; a transient error
/// (`missing()`, then why) when the projection has not seen `key` yet: the event that
/// teaches it may be redelivered behind this one.
async fn recipient(
    tx: &mut Transaction,
    sql: &str,
    key: &str,
    missing: impl FnOnce() -> String,
) -> Result<String, HandlerError> {
    let failed = store_failure("notifications");
    let row = tx.query_opt(sql, params![key]).await.map_err(&failed)?;
    match row {
        Some(row) => row.get("user_id").map_err(&failed),
        None => Err(HandlerError::transient(format!(
            "{}, so it cannot tell whom to notify yet",
            missing()
        ))),
    }
}

/// The id of the notification `cause` gives `user_id`.
pub fn notification_id(cause: &Event, user_id: &str) -> String {
    uuid::Uuid::new_v5(
        &NOTIFICATION_NAMESPACE,
        format!("{}\n{}\n{user_id}", cause.source, cause.id).as_bytes(),
    )
    .to_string()
}

/// Creates one notification in `tx`: its number, the row, and a dispatch row per channel
/// the user has on.
async fn create(
    tx: &mut Transaction,
    cause: &Event,
    note: Note,
) -> Result<(), ovasabi_store::StoreError> {
    let now = Utc::now();
    if let Some(email) = &note.email {
        tx.execute(
            "INSERT INTO notification_users (user_id, email) VALUES ($1, $2)
             ON CONFLICT (user_id) DO UPDATE SET email = excluded.email",
            params![note.user_id.as_str(), email.as_str()],
        )
        .await?;
    }
    let number: i64 = tx
        .query_one(
            "INSERT INTO notification_counters (user_id, last) VALUES ($1, 1)
             ON CONFLICT (user_id) DO UPDATE SET last = notification_counters.last + 1
             RETURNING last",
            params![note.user_id.as_str()],
        )
        .await?
        .get("last")?;
    let id = notification_id(cause, &note.user_id);
    tx.execute(
        "INSERT INTO notifications (id, user_id, number, category, title, body,
             cause_event_id, cause_event_type, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        params![
            id.as_str(),
            note.user_id.as_str(),
            number,
            note.category,
            note.title.as_str(),
            note.body.as_str(),
            cause.id.as_str(),
            cause.ty.as_str(),
            now
        ],
    )
    .await?;
    let chosen = tx
        .query(
            "SELECT channel, enabled FROM notification_preferences
             WHERE user_id = $1 AND category = $2",
            params![note.user_id.as_str(), note.category],
        )
        .await?;
    let mut said: HashMap<String, bool> = HashMap::new();
    for row in &chosen {
        said.insert(row.get("channel")?, row.get("enabled")?);
    }
    for channel in CHANNELS.iter().filter(|c| **c != "in_app") {
        if said
            .get(*channel)
            .copied()
            .unwrap_or(default_enabled(channel))
        {
            tx.execute(
                "INSERT INTO notification_dispatch (notification_id, channel, status, attempts, due_at)
                 VALUES ($1, $2, 'pending', 0, $3)",
                params![id.as_str(), *channel, now],
            )
            .await?;
        }
    }
    Ok(())
}

/// Sends queued dispatch rows through the senders.
struct Dispatcher {
    store: Store,
    hub: Arc<Hub>,
    senders: Arc<HashMap<&'static str, Arc<dyn Sender>>>,
}

impl Dispatcher {
    async fn run(self, stop: CancellationToken) {
        loop {
            let woken = self.hub.committed.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            match self.pass().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => tracing::warn!("notifications dispatcher: {e}; trying again"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = &mut woken => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Sends what is due; whether a full batch was taken (more may wait).
    async fn pass(&self) -> Result<bool, ovasabi_store::StoreError> {
        const BATCH: i64 = 64;
        let rows = self
            .store
            .query(
                "SELECT d.seq, d.channel, d.attempts, n.id, n.user_id, n.category, n.title, n.body, u.email
                 FROM notification_dispatch d
                 JOIN notifications n ON n.id = d.notification_id
                 LEFT JOIN notification_users u ON u.user_id = n.user_id
                 WHERE d.status = 'pending' AND d.due_at <= $1
                 ORDER BY d.seq LIMIT $2",
                params![Utc::now(), BATCH],
            )
            .await?;
        for row in &rows {
            let seq: i64 = row.get("seq")?;
            let channel: String = row.get("channel")?;
            let attempts: i64 = row.get::<i64>("attempts")? + 1;
            let outgoing = Outgoing {
                id: row.get("id")?,
                user_id: row.get("user_id")?,
                email: row.get("email")?,
                category: row.get("category")?,
                title: row.get("title")?,
                body: row.get("body")?,
            };
            let outcome = match self.senders.get(channel.as_str()) {
                Some(sender) => sender.send(&outgoing).await,
                None => Err(format!("no sender is configured for channel `{channel}`")),
            };
            let now = Utc::now();
            match outcome {
                Ok(()) => {
                    self.store
                        .execute(
                            "UPDATE notification_dispatch SET status = 'sent', attempts = $2, sent_at = $3, last_error = NULL
                             WHERE seq = $1",
                            params![seq, attempts, now],
                        )
                        .await?;
                }
                Err(error) => {
                    let status = if attempts >= MAX_SEND_ATTEMPTS {
                        tracing::warn!(notification = %outgoing.id, channel, "giving up sending after {attempts} attempts: {error}");
                        "failed"
                    } else {
                        "pending"
                    };
                    let due = now
                        + chrono::Duration::from_std(SEND_RETRY)
                            .unwrap_or(chrono::Duration::zero());
                    self.store
                        .execute(
                            "UPDATE notification_dispatch SET status = $2, attempts = $3, last_error = $4, due_at = $5
                             WHERE seq = $1",
                            params![seq, status, attempts, error.as_str(), due],
                        )
                        .await?;
                }
            }
        }
        Ok(i64::try_from(rows.len()).unwrap_or(0) == BATCH)
    }
}

const COLUMNS: &str =
    "id, user_id, number, category, title, body, cause_event_id, cause_event_type, created_at, read_at";

fn notification_json(row: &Row) -> Result<Value, ApiError> {
    Ok(json!({
        "id": row.get::<String>("id")?,
        "user_id": row.get::<String>("user_id")?,
        "number": row.get::<i64>("number")?,
        "category": row.get::<String>("category")?,
        "title": row.get::<String>("title")?,
        "body": row.get::<String>("body")?,
        "cause": {"event_id": row.get::<String>("cause_event_id")?, "event_type": row.get::<String>("cause_event_type")?},
        "created_at": row.get::<DateTime<Utc>>("created_at")?,
        "read": row.get::<Option<DateTime<Utc>>>("read_at")?.is_some(),
        "read_at": row.get::<Option<DateTime<Utc>>>("read_at")?,
    }))
}

/// `GET /v1/notifications?user_id=&unread=&limit=&cursor=`: newest first.
async fn list(
    State(shared): State<Shared>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let query = paging::query(query, &["user_id", "unread", "limit", "cursor"])?;
    let user = check_user_id("user_id", query.get("user_id").map_or("", String::as_str))?;
    let unread = match query.get("unread").map(|s| s.trim()) {
        None | Some("") | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "unread",
                format!("`{other}` is not true or false"),
            ))
        }
    };
    let page = paging::request(&query)?;
    let before = match &page.after {
        None => i64::MAX,
        Some(after) => after.parse::<i64>().map_err(|_| {
            ApiError::invalid(
                "cursor",
                "not a cursor this API gave out: pass the `next_cursor` of the previous page unchanged",
            )
        })?,
    };
    let unread_clause = if unread { " AND read_at IS NULL" } else { "" };
    let rows = shared
        .api
        .store
        .query(
            &format!(
                "SELECT {COLUMNS} FROM notifications WHERE user_id = $1 AND number < $2{unread_clause}
                 ORDER BY number DESC LIMIT $3"
            ),
            params![user.as_str(), before, page.fetch()],
        )
        .await?;
    let items = rows
        .iter()
        .map(|row| {
            Ok((
                row.get::<i64>("number")?.to_string(),
                notification_json(row)?,
            ))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let unread_count: i64 = shared
        .api
        .store
        .query_one(
            "SELECT COUNT(*) AS n FROM notifications WHERE user_id = $1 AND read_at IS NULL",
            params![user.as_str()],
        )
        .await?
        .get("n")?;
    let mut answer = paging::answer(&page, items);
    answer["unread"] = json!(unread_count);
    Ok(Json(answer))
}

/// `POST /v1/notifications/{id}/read`.
async fn mark_read(
    State(shared): State<Shared>,
    meta: RequestMeta,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let scope = format!("POST /v1/notifications/{id}/read");
    shared
        .api
        .transact(&meta, &scope, &json!({}), move |tx| {
            Box::pin(async move {
                tx.db()
                    .execute(
                        "UPDATE notifications SET read_at = $2 WHERE id = $1 AND read_at IS NULL",
                        params![id.as_str(), Utc::now()],
                    )
                    .await?;
                let row = tx
                    .db()
                    .query_opt(
                        &format!("SELECT {COLUMNS} FROM notifications WHERE id = $1"),
                        params![id.as_str()],
                    )
                    .await?;
                match row {
                    Some(row) => Ok((StatusCode::OK, notification_json(&row)?)),
                    None => Err(ApiError::not_found(format!(
                        "there is no notification {id}; list a user's with GET /v1/notifications?user_id="
                    ))),
                }
            })
        })
        .await
}

/// `GET /v1/notifications/preferences?user_id=`.
async fn preferences(
    State(shared): State<Shared>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let query = paging::query(query, &["user_id"])?;
    let user = check_user_id("user_id", query.get("user_id").map_or("", String::as_str))?;
    let rows = shared
        .api
        .store
        .query(
            "SELECT category, channel, enabled FROM notification_preferences WHERE user_id = $1",
            params![user.as_str()],
        )
        .await?;
    let mut said: HashMap<(String, String), bool> = HashMap::new();
    for row in &rows {
        said.insert(
            (row.get("category")?, row.get("channel")?),
            row.get("enabled")?,
        );
    }
    let items: Vec<Value> = CATEGORIES
        .iter()
        .flat_map(|category| CHANNELS.iter().map(move |channel| (*category, *channel)))
        .map(|(category, channel)| {
            let enabled = channel == "in_app"
                || said
                    .get(&(category.to_owned(), channel.to_owned()))
                    .copied()
                    .unwrap_or(default_enabled(channel));
            json!({"category": category, "channel": channel, "enabled": enabled})
        })
        .collect();
    Ok(Json(json!({"user_id": user, "items": items})))
}

/// `PUT /v1/notifications/preferences`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Preference {
    user_id: String,
    category: String,
    channel: String,
    enabled: bool,
}

async fn set_preference(
    State(shared): State<Shared>,
    Body(input): Body<Preference>,
) -> Result<Json<Value>, ApiError> {
    let user = check_user_id("user_id", &input.user_id)?;
    let Some(category) = CATEGORIES.iter().find(|c| **c == input.category) else {
        return Err(ApiError::invalid(
            "category",
            format!(
                "`{}` is not a category; the categories are {}",
                input.category,
                CATEGORIES.join(", ")
            ),
        ));
    };
    let Some(channel) = CHANNELS.iter().find(|c| **c == input.channel) else {
        return Err(ApiError::invalid(
            "channel",
            format!(
                "`{}` is not a channel; the channels are {}",
                input.channel,
                CHANNELS.join(", ")
            ),
        ));
    };
    if *channel == "in_app" && !input.enabled {
        return Err(ApiError::invalid(
            "channel",
            "in-app notifications are always on; turn off email, push or sms instead",
        ));
    }
    shared
        .api
        .store
        .execute(
            "INSERT INTO notification_preferences (user_id, category, channel, enabled, updated_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (user_id, category, channel) DO UPDATE
             SET enabled = excluded.enabled, updated_at = excluded.updated_at",
            params![
                user.as_str(),
                *category,
                *channel,
                input.enabled,
                Utc::now()
            ],
        )
        .await?;
    Ok(Json(json!({
        "user_id": user, "category": category, "channel": channel, "enabled": input.enabled
    })))
}

/// `GET /v1/notifications/stream?user_id=&after=`: SSE, or a WebSocket on upgrade.
async fn stream(State(shared): State<Shared>, request: Request) -> Result<Response, ApiError> {
    let (mut parts, _body) = request.into_parts();
    let query: Result<Query<HashMap<String, String>>, QueryRejection> =
        Query::from_request_parts(&mut parts, &shared).await;
    let query = paging::query(query, &["user_id", "after"])?;
    let user = check_user_id("user_id", query.get("user_id").map_or("", String::as_str))?;
    let after = resume_point(query.get("after"), &parts.headers)?;
    let feed = Feed {
        store: shared.api.store.clone(),
        hub: shared.hub.clone(),
        user,
        after,
    };
    if let Some(ws) = live::upgrade(&mut parts, &shared).await? {
        return Ok(ws.on_upgrade(move |socket| {
            live::websocket(feed, socket, |item: Value| item.to_string())
        }));
    }
    let events = live::sse(feed, None, |item: Value| {
        SseEvent::default()
            .event("notification")
            .id(item["number"].to_string())
            .data(item.to_string())
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// Where a stream starts: `after`, else `Last-Event-ID`, else 0 (everything).
fn resume_point(after: Option<&String>, headers: &HeaderMap) -> Result<i64, ApiError> {
    let (text, field) = match after {
        Some(text) => (text.trim().to_owned(), "after"),
        None => match headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
            Some(text) => (text.trim().to_owned(), "Last-Event-ID"),
            None => return Ok(0),
        },
    };
    if text.is_empty() {
        return Ok(0);
    }
    text.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
        ApiError::invalid(
            field,
            format!("`{text}` is not a notification number: give the `number` of the last notification seen, or 0"),
        )
    })
}

/// One user's notifications from a point on, as they commit.
struct Feed {
    store: Store,
    hub: Arc<Hub>,
    user: String,
    after: i64,
}

#[async_trait]
impl live::Feed for Feed {
    type Item = Value;
    const RETRY: Duration = POLL;

    fn describe(&self) -> String {
        format!("notification stream of user {}", self.user)
    }

    /// The next notifications after the last sent, waiting for one if there are none.
    async fn next_batch(&mut self) -> Result<Vec<Value>, ApiError> {
        loop {
            let woken = self.hub.committed.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let rows = self
                .store
                .query(
                    &format!(
                        "SELECT {COLUMNS} FROM notifications WHERE user_id = $1 AND number > $2
                         ORDER BY number LIMIT $3"
                    ),
                    params![self.user.as_str(), self.after, STREAM_BATCH],
                )
                .await?;
            if !rows.is_empty() {
                let mut out = Vec::with_capacity(rows.len());
                for row in &rows {
                    let number: i64 = row.get("number")?;
                    // Numbers commit in order without holes: stop at one that is missing.
                    if number != self.after + 1 {
                        break;
                    }
                    self.after = number;
                    out.push(notification_json(row)?);
                }
                if !out.is_empty() {
                    return Ok(out);
                }
            }
            tokio::select! {
                _ = &mut woken => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }
}

fn openapi() -> Value {
    let error = |description: &str| json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let user =
        json!({"name": "user_id", "in": "query", "required": true, "schema": {"type": "string"}});
    let list_parameters = paging::openapi_parameters_after(vec![
        user.clone(),
        json!({"name": "unread", "in": "query", "required": false, "schema": {"type": "boolean"}, "description": "Only unread notifications"}),
    ]);
    json!({
        "paths": {
            "/v1/notifications": {"get": {
                "summary": "A user's notifications, newest first, a page at a time, with the count of unread ones",
                "parameters": list_parameters,
                "responses": {
                    "200": {"description": "A page of notifications", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NotificationPage"}}}},
                    "422": error("`user_id`, `unread`, `limit` or `cursor` is invalid")
                }
            }},
            "/v1/notifications/{id}/read": {"post": {
                "summary": "Mark a notification read (marking it again changes nothing)",
                "parameters": [
                    {"name": "id", "in": "path", "required": true, "schema": {"type": "string"}},
                    {"$ref": "#/components/parameters/IdempotencyKey"},
                    {"$ref": "#/components/parameters/CorrelationId"}
                ],
                "responses": {
                    "200": {"description": "The notification", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Notification"}}}},
                    "404": error("No such notification")
                }
            }},
            "/v1/notifications/preferences": {
                "get": {
                    "summary": "Every category and channel, on or off, for a user (defaults included)",
                    "parameters": [user],
                    "responses": {"200": {"description": "The preferences", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Preferences"}}}}}
                },
                "put": {
                    "summary": "Turn one channel on or off for one category (in_app cannot be turned off)",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Preference"}}}},
                    "responses": {
                        "200": {"description": "Saved", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Preference"}}}},
                        "422": error("An unknown category or channel, or in_app turned off")
                    }
                }
            },
            "/v1/notifications/stream": {"get": {
                "summary": "A user's notifications live: Server-Sent Events (`id:` = number; resumes from Last-Event-ID), or a WebSocket of JSON messages when the request upgrades",
                "parameters": [
                    {"name": "user_id", "in": "query", "required": true, "schema": {"type": "string"}},
                    {"name": "after", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 0}, "description": "Send notifications numbered above this first (default: Last-Event-ID, else 0: all)"}
                ],
                "responses": {
                    "200": {"description": "text/event-stream of `notification` events", "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                    "101": {"description": "Switching to a WebSocket"},
                    "422": error("`user_id` or `after` is invalid")
                }
            }}
        },
        "schemas": {
            "Notification": {"type": "object", "required": ["id", "user_id", "number", "category", "title", "body", "cause", "created_at", "read"], "properties": {
                "id": {"type": "string"},
                "user_id": {"type": "string"},
                "number": {"type": "integer", "description": "1, 2, 3… per user, in commit order"},
                "category": {"type": "string", "enum": CATEGORIES},
                "title": {"type": "string"},
                "body": {"type": "string"},
                "cause": {"type": "object", "properties": {"event_id": {"type": "string"}, "event_type": {"type": "string"}}},
                "created_at": {"type": "string", "format": "date-time"},
                "read": {"type": "boolean"},
                "read_at": {"type": ["string", "null"], "format": "date-time"}
            }},
            "NotificationPage": {"type": "object", "required": ["items", "next_cursor", "unread"], "properties": {
                "items": {"type": "array", "items": {"$ref": "#/components/schemas/Notification"}},
                "next_cursor": {"type": ["string", "null"]},
                "unread": {"type": "integer"}
            }},
            "Preference": {"type": "object", "required": ["user_id", "category", "channel", "enabled"], "additionalProperties": false, "properties": {
                "user_id": {"type": "string"},
                "category": {"type": "string", "enum": CATEGORIES},
                "channel": {"type": "string", "enum": CHANNELS},
                "enabled": {"type": "boolean"}
            }},
            "Preferences": {"type": "object", "required": ["user_id", "items"], "properties": {
                "user_id": {"type": "string"},
                "items": {"type": "array", "items": {"type": "object", "properties": {"category": {"type": "string"}, "channel": {"type": "string"}, "enabled": {"type": "boolean"}}}}
            }}
        }
    })
}
