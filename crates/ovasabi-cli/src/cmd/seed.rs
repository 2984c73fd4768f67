//! `ovasabi seed-demo` and `ovasabi up --demo`: a small, realistic data set created through
//! a running platform's HTTP API, so that a newcomer sees events flow in the first minute.
//!
//! # The data set
//!
//! The content is fixed (the lists at the end of this module; the few choices among users are
//! made by a generator with a fixed seed), so every run tells the same story. Only the run id
//! differs between runs: it is in every email address, so running it again registers new
//! accounts instead of clashing with the old ones. With the default 12 users:
//!
//! | what | how many | events |
//! | --- | --- | --- |
//! | users with names, emails and locales; every 4th invited by an earlier one | 12 (`--users`) | `user.registered`, and `coin.mined` (signup bonus) |
//! | profiles completed with a bio and an avatar | every 3rd user: 4 | `user.profile_updated` |
//! | posts, articles, images and videos, with tags | 20 | `content.posted` |
//! | comments, 4 of them the author's replies | 24 | `comment.added` |
//! | reactions, 1 to 4 per post, in the post's mood | about 50 | `reaction.added` |
//! | orders of 1 to 3 lines in EUR or USD (by the customer's country), 3 with coupon `WELCOME10` | 15 | `order.placed` |
//! | … paid by card, PayPal or bank transfer | 12 | `payment.completed` |
//! | … declined: totals ending in 13 to 18, which the fake payment provider declines | 2 | `payment.failed` |
//! | … shipped, with carrier and tracking number | 7 | `order.shipped`, and `coin.mined` (order reward) |
//! | … one of those refunded (arrived damaged) | 1 | `payment.refunded` |
//! | … cancelled by the customer before paying | 1 | `order.cancelled` |
//! | direct messages, in 3 conversations | 6 | `message.sent` |
//! | wallet transfers, once every signup bonus has arrived | 2 | `coin.transferred` |
//!
//! Posts, orders, messages and transfers go to user `i % users`, so a smaller `--users`
//! spreads the same content among fewer people (at least 2 are needed for messages).
//!
//! # Requests
//!
//! One at a time, in the order above. Each carries `X-Correlation-Id: seed-<run>-<n>` (so
//! every event names the request that caused it) and each write the same value as its
//! `Idempotency-Key`; a 503 or a lost connection is retried with the same key, which the API
//! answers with the stored response instead of doing the work twice. A 4xx ends the run,
//! naming the request and the API's message.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};

use crate::cli::{Format, SeedDemoArgs};
use crate::failure::Failure;
use crate::output::outln;

/// Users registered unless `--users` says otherwise.
pub(crate) const DEFAULT_USERS: usize = 12;
/// The fewest users `--users` takes: messages and transfers need two people.
const MIN_USERS: usize = 2;
/// The most users `--users` takes.
const MAX_USERS: usize = 1_000;
/// How long to wait for the signup bonuses before the transfers.
const BONUS_DEADLINE: Duration = Duration::from_secs(30);
/// How often a request is tried when the API answers 503 or the connection drops.
const ATTEMPTS: u32 = 4;
/// The generator's seed: the same choices every run.
const SEED: u64 = 0x0DE5_EED5_0000_0001;

/// `ovasabi seed-demo`.
pub(crate) async fn run(args: SeedDemoArgs) -> Result<(), Failure> {
    let api = api_url(&args.api)?;
    if !(MIN_USERS..=MAX_USERS).contains(&args.users) {
        return Err(Failure::usage(format!(
            "--users {}: give {MIN_USERS} to {MAX_USERS} (messages and transfers need two people)",
            args.users
        )));
    }
    let run = run_id();
    eprintln!("seeding {api} with the demo data set (run {run})");
    let summary = seed(&api, args.users, &run, "  ")
        .await
        .map_err(|e| Failure::runtime(e.to_string()))?;
    match args.format {
        Format::Json => outln!(
            "{}",
            serde_json::to_string(&summary).unwrap_or_else(|_| "{}".to_owned())
        ),
        Format::Pretty => summary.print(),
    }
    Ok(())
}

/// `ovasabi up --demo`: seeds the process's own API at `addr`, printing progress on stderr.
/// Never fails: a failure is printed (`demo: seeding failed: …`) and `up` runs on.
pub(crate) async fn demo(addr: SocketAddr) {
    // A wildcard listen address is reached on the loopback interface.
    let ip = match addr.ip() {
        ip if !ip.is_unspecified() => ip,
        std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
    };
    let api = format!("http://{}", SocketAddr::new(ip, addr.port()));
    let run = run_id();
    eprintln!("demo: seeding the demo data set (run {run})");
    match seed(&api, DEFAULT_USERS, &run, "demo: ").await {
        Ok(summary) => eprintln!(
            "demo: seeded {} in {:.1} s; `ovasabi audit list` shows the events",
            summary.one_line(),
            summary.elapsed_ms as f64 / 1000.0
        ),
        Err(e) => eprintln!("demo: seeding failed: {e}"),
    }
}

/// `--api` as a base URL without a trailing slash; `host:port` alone means `http://host:port`.
fn api_url(text: &str) -> Result<String, Failure> {
    let text = text.trim();
    let text = if text.contains("://") {
        text.to_owned()
    } else {
        format!("http://{text}")
    };
    match reqwest::Url::parse(&text) {
        Ok(url) if url.scheme() == "http" && url.host().is_some() => {
            Ok(text.trim_end_matches('/').to_owned())
        }
        Ok(url) if url.scheme() == "https" => Err(Failure::usage(format!(
            "--api `{text}`: this build speaks plain http only; give the address `ovasabi up` \
             prints, e.g. http://127.0.0.1:8080"
        ))),
        _ => Err(Failure::usage(format!(
            "--api `{text}` is not an address: give the API's base URL, e.g. http://127.0.0.1:8080"
        ))),
    }
}

/// A short id that differs between runs: 8 base-36 characters of the time and the process id.
fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x = Dice(nanos ^ (u64::from(std::process::id()) << 40)).next();
    let mut id = String::with_capacity(8);
    for _ in 0..8 {
        id.push(char::from(
            b"0123456789abcdefghijklmnopqrstuvwxyz"[(x % 36) as usize],
        ));
        x /= 36;
    }
    id
}

// ---------------------------------------------------------------------------------------
// What a run did
// ---------------------------------------------------------------------------------------

/// What a run created: the JSON output of `--format json` (stable field names).
#[derive(Clone, Debug, Default, Serialize)]
struct Summary {
    /// The API seeded.
    api: String,
    /// The run id, in the emails, correlation ids and idempotency keys.
    run: String,
    /// Users registered.
    users: usize,
    /// Profiles given a bio and an avatar.
    profiles_updated: usize,
    /// Posts, articles, images and videos.
    posts: usize,
    /// Comments, replies included.
    comments: usize,
    /// Reactions.
    reactions: usize,
    /// Orders placed.
    orders: usize,
    /// Orders paid.
    payments_completed: usize,
    /// Payments declined (the orders stay placed).
    payments_declined: usize,
    /// Orders shipped.
    orders_shipped: usize,
    /// Orders refunded.
    orders_refunded: usize,
    /// Orders cancelled.
    orders_cancelled: usize,
    /// Orders held by fraud screening before they could be paid or shipped (the seed
    /// leaves them there).
    orders_held: usize,
    /// Direct messages.
    messages: usize,
    /// Wallet transfers.
    transfers: usize,
    /// How long the run took.
    elapsed_ms: u64,
}

impl Summary {
    fn orders_detail(&self) -> String {
        let held = if self.orders_held > 0 {
            format!(", {} held by fraud screening", self.orders_held)
        } else {
            String::new()
        };
        format!(
            "{} paid, {} declined, {} shipped, {} refunded, {} cancelled{held}",
            self.payments_completed,
            self.payments_declined,
            self.orders_shipped,
            self.orders_refunded,
            self.orders_cancelled
        )
    }

    fn one_line(&self) -> String {
        format!(
            "{} users, {} posts ({} comments, {} reactions), {} orders ({}), {} messages, {} transfers",
            self.users,
            self.posts,
            self.comments,
            self.reactions,
            self.orders,
            self.orders_detail(),
            self.messages,
            self.transfers
        )
    }

    fn print(&self) {
        outln!(
            "seeded {} (run {}) in {:.1} s",
            self.api,
            self.run,
            self.elapsed_ms as f64 / 1000.0
        );
        outln!(
            "  users      {:>4}  ({} profile{} completed)",
            self.users,
            self.profiles_updated,
            if self.profiles_updated == 1 { "" } else { "s" }
        );
        outln!(
            "  posts      {:>4}  ({} comments, {} reactions)",
            self.posts,
            self.comments,
            self.reactions
        );
        outln!(
            "  orders     {:>4}  ({})",
            self.orders,
            self.orders_detail()
        );
        outln!("  messages   {:>4}", self.messages);
        outln!("  transfers  {:>4}", self.transfers);
        outln!(
            "the events: `ovasabi audit list` while the platform runs, \
             `ovasabi events tail '*.events'` once it stopped"
        );
    }
}

/// Why a run stopped.
#[derive(Debug)]
enum SeedError {
    /// No connection to the API, or no answer.
    Unreachable {
        /// The API's base URL.
        api: String,
        /// The request and what it was for, once the run was under way.
        during: Option<String>,
        /// The innermost error.
        cause: String,
    },
    /// The API refused a request (4xx).
    Refused {
        /// `POST /v1/orders`.
        request: String,
        /// What the request was for: `order 4/15 (Jonas Becker)`.
        what: String,
        /// The status.
        status: StatusCode,
        /// The API's error code and field, and its message.
        error: ErrorBody,
    },
    /// The API failed (5xx, after retrying a 503).
    Server {
        /// `POST /v1/orders`.
        request: String,
        /// What the request was for.
        what: String,
        /// The status.
        status: StatusCode,
        /// The API's error, if it gave one.
        error: ErrorBody,
    },
    /// Something answered that is not the OVASABI API.
    NotTheApi {
        /// The API's base URL.
        api: String,
        /// `GET /healthz`.
        request: String,
        /// What was wrong with the answer.
        detail: String,
    },
    /// Some signup bonuses had not arrived when the transfers were due.
    BonusesLate {
        /// Users without a wallet yet.
        missing: usize,
        /// Users registered.
        users: usize,
        /// One of them.
        user_id: String,
    },
}

/// The `error` member of an API answer.
#[derive(Debug, Default)]
struct ErrorBody {
    code: String,
    field: Option<String>,
    message: String,
}

impl ErrorBody {
    fn of(body: &Value) -> ErrorBody {
        let error = &body["error"];
        ErrorBody {
            code: error["code"].as_str().unwrap_or("unknown").to_owned(),
            field: error["field"].as_str().map(str::to_owned),
            message: error["message"]
                .as_str()
                .unwrap_or("no message given")
                .to_owned(),
        }
    }
}

impl fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(field) = &self.field {
            write!(f, " (field `{field}`)")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl fmt::Display for SeedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SeedError::Unreachable { api, during, cause } => {
                write!(f, "cannot reach the OVASABI API at {api}")?;
                if let Some(during) = during {
                    write!(f, " ({during})")?;
                }
                write!(
                    f,
                    ": {cause}; start it with `ovasabi up` (it prints `listening on http://…`) \
                     or pass that address as --api"
                )
            }
            SeedError::Refused {
                request,
                what,
                status,
                error,
            } => {
                write!(
                    f,
                    "the API refused {request} ({what}): {} {error}",
                    status.as_u16()
                )?;
                if error.code == "no_route" {
                    write!(
                        f,
                        "; is the `{}` service running? `ovasabi up` runs every service",
                        service_of(request)
                    )?;
                }
                Ok(())
            }
            SeedError::Server {
                request,
                what,
                status,
                error,
            } => write!(
                f,
                "the API failed {request} ({what}): {} {error}; see its log",
                status.as_u16()
            ),
            SeedError::NotTheApi {
                api,
                request,
                detail,
            } => write!(
                f,
                "{api} does not answer like the OVASABI API ({request}: {detail}); give the \
                 address `ovasabi up` prints as --api"
            ),
            SeedError::BonusesLate {
                missing,
                users,
                user_id,
            } => write!(
                f,
                "{missing} of {users} signup bonuses had not arrived after {} s \
                 (GET /v1/wallets/{user_id} answers 404), so the transfers were not made; is the \
                 `wallet` service running? `ovasabi up` runs every service",
                BONUS_DEADLINE.as_secs()
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The API client
// ---------------------------------------------------------------------------------------

/// An answer of the API: its status and JSON body.
struct Reply {
    status: StatusCode,
    body: Value,
}

/// Requests to the API, numbered for their correlation ids and idempotency keys.
struct Client {
    http: reqwest::Client,
    api: String,
    run: String,
    sent: u64,
}

impl Client {
    fn new(api: &str, run: &str) -> Result<Client, SeedError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| SeedError::Unreachable {
                api: api.to_owned(),
                during: None,
                cause: innermost(&e),
            })?;
        Ok(Client {
            http,
            api: api.to_owned(),
            run: run.to_owned(),
            sent: 0,
        })
    }

    /// `GET /healthz`: is the API there, and is it ours?
    async fn probe(&self) -> Result<(), SeedError> {
        let response = self
            .http
            .get(format!("{}/healthz", self.api))
            .send()
            .await
            .map_err(|e| SeedError::Unreachable {
                api: self.api.clone(),
                during: None,
                cause: innermost(&e),
            })?;
        if response.status() == StatusCode::OK {
            Ok(())
        } else {
            Err(SeedError::NotTheApi {
                api: self.api.clone(),
                request: "GET /healthz".to_owned(),
                detail: format!("answered {}", response.status()),
            })
        }
    }

    /// Sends one request (`what` names it in errors) and answers its status and JSON body
    /// for any status below 500; a 503 or a lost connection is tried again, with the same
    /// correlation id and idempotency key.
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        what: &str,
        body: Option<&Value>,
    ) -> Result<Reply, SeedError> {
        self.sent += 1;
        let tag = format!("seed-{}-{}", self.run, self.sent);
        let request = format!("{method} {path}");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut builder = self
                .http
                .request(method.clone(), format!("{}{path}", self.api))
                .header("x-correlation-id", &tag);
            if method != Method::GET {
                builder = builder.header("idempotency-key", &tag);
            }
            if let Some(body) = body {
                builder = builder.json(body);
            }
            let answered = match builder.send().await {
                Ok(response) => {
                    let status = response.status();
                    response.bytes().await.map(|bytes| (status, bytes))
                }
                Err(e) => Err(e),
            };
            let (status, bytes) = match answered {
                Ok(answer) => answer,
                Err(_) if attempt < ATTEMPTS => {
                    backoff(attempt).await;
                    continue;
                }
                Err(e) => {
                    return Err(SeedError::Unreachable {
                        api: self.api.clone(),
                        during: Some(format!("{request}, {what}")),
                        cause: innermost(&e),
                    })
                }
            };
            if status == StatusCode::SERVICE_UNAVAILABLE && attempt < ATTEMPTS {
                backoff(attempt).await;
                continue;
            }
            let body: Option<Value> = serde_json::from_slice(&bytes).ok();
            return match body {
                Some(body) if status.is_server_error() => Err(SeedError::Server {
                    request,
                    what: what.to_owned(),
                    status,
                    error: ErrorBody::of(&body),
                }),
                Some(body) => Ok(Reply { status, body }),
                None => Err(SeedError::NotTheApi {
                    api: self.api.clone(),
                    request,
                    detail: format!("answered {status} with a body that is not JSON"),
                }),
            };
        }
    }

    /// A write that must answer `expected`; its body.
    async fn write(
        &mut self,
        method: Method,
        path: &str,
        what: &str,
        body: &Value,
        expected: StatusCode,
    ) -> Result<Value, SeedError> {
        let reply = self.call(method.clone(), path, what, Some(body)).await?;
        if reply.status == expected {
            Ok(reply.body)
        } else {
            Err(refused(&method, path, what, &reply))
        }
    }

    async fn post(&mut self, path: &str, what: &str, body: &Value) -> Result<Value, SeedError> {
        self.write(Method::POST, path, what, body, StatusCode::CREATED)
            .await
    }
}

/// The service that answers `request` (`POST /v1/orders` → `commerce`).
fn service_of(request: &str) -> &'static str {
    let path = request.split_once(' ').map_or(request, |(_, path)| path);
    let resource = path.trim_start_matches("/v1/").split(['/', '?']).next();
    match resource.unwrap_or_default() {
        "users" => "users",
        "content" => "content",
        "orders" => "commerce",
        "wallets" => "wallet",
        "messages" => "messaging",
        _ => "needed",
    }
}

/// Whether the API answered that fraud screening holds the order.
fn held(reply: &Reply) -> bool {
    reply.body["error"]["code"] == "order_held"
}

fn refused(method: &Method, path: &str, what: &str, reply: &Reply) -> SeedError {
    SeedError::Refused {
        request: format!("{method} {path}"),
        what: what.to_owned(),
        status: reply.status,
        error: ErrorBody::of(&reply.body),
    }
}

async fn backoff(attempt: u32) {
    tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt))).await;
}

/// The innermost cause of a client error (`Connection refused (os error 111)`), which says
/// more than reqwest's outer "error sending request".
fn innermost(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "no answer in time".to_owned();
    }
    let mut inner: &dyn std::error::Error = error;
    while let Some(source) = inner.source() {
        inner = source;
    }
    inner.to_string()
}

/// The `id` member of an answer.
fn id_of(body: &Value, api: &str, request: &str) -> Result<String, SeedError> {
    body["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| SeedError::NotTheApi {
            api: api.to_owned(),
            request: request.to_owned(),
            detail: "the answer has no `id`".to_owned(),
        })
}

// ---------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------

/// A registered user.
#[derive(Clone, Debug)]
struct User {
    id: String,
    person: &'static Person,
}

struct Seeder {
    client: Client,
    prefix: &'static str,
    users: Vec<User>,
    posts: Vec<(String, String)>,
    dice: Dice,
    summary: Summary,
}

/// Creates the data set in `api`, printing a line per phase on stderr after `prefix`.
async fn seed(
    api: &str,
    users: usize,
    run: &str,
    prefix: &'static str,
) -> Result<Summary, SeedError> {
    let started = Instant::now();
    let client = Client::new(api, run)?;
    client.probe().await?;
    let mut seeder = Seeder {
        client,
        prefix,
        users: Vec::with_capacity(users),
        posts: Vec::with_capacity(POSTS.len()),
        dice: Dice(SEED),
        summary: Summary {
            api: api.to_owned(),
            run: run.to_owned(),
            ..Summary::default()
        },
    };
    seeder.users(users, run).await?;
    seeder.profiles().await?;
    seeder.posts().await?;
    seeder.comments().await?;
    seeder.reactions().await?;
    seeder.orders().await?;
    seeder.messages().await?;
    seeder.wallets().await?;
    seeder.transfers().await?;
    seeder.summary.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(seeder.summary)
}

impl Seeder {
    fn api(&self) -> &str {
        &self.client.api
    }

    fn say(&self, phase: &str, done: usize, total: usize, detail: &str) {
        eprintln!("{}{phase:<10} {done}/{total}{detail}", self.prefix);
    }

    /// The user who plays person `i` of the lists.
    fn user(&self, i: usize) -> &User {
        &self.users[i % self.users.len()]
    }

    /// Users `a` and `b` of the lists, distinct even when few users fold them together.
    fn pair(&self, a: usize, b: usize) -> (User, User) {
        let n = self.users.len();
        let (a, mut b) = (a % n, b % n);
        if a == b {
            b = (a + 1) % n;
        }
        (self.users[a].clone(), self.users[b].clone())
    }

    async fn users(&mut self, n: usize, run: &str) -> Result<(), SeedError> {
        for i in 0..n {
            let person = &PEOPLE[i % PEOPLE.len()];
            let email = person.email(i, run);
            let mut body = json!({
                "email": email,
                "display_name": person.name,
                "locale": person.locale,
            });
            // Every 4th user joined on an earlier one's invitation.
            if i % 4 == 3 {
                body["referrer_user_id"] = json!(self.users[i - 3].id);
            }
            let what = format!("user {}/{n}, {email}", i + 1);
            let user = self.client.post("/v1/users", &what, &body).await?;
            let id = id_of(&user, self.api(), "POST /v1/users")?;
            self.users.push(User { id, person });
        }
        self.summary.users = n;
        self.say("users", n, n, "");
        Ok(())
    }

    async fn profiles(&mut self) -> Result<(), SeedError> {
        let chosen: Vec<User> = self.users.iter().step_by(3).cloned().collect();
        for (k, user) in chosen.iter().enumerate() {
            let body = json!({
                "bio": user.person.bio,
                "avatar_url": format!("https://cdn.example.com/avatars/{}.jpg", user.person.email),
            });
            let path = format!("/v1/users/{}", user.id);
            let what = format!("profile {}/{} ({})", k + 1, chosen.len(), user.person.name);
            self.client
                .write(Method::PATCH, &path, &what, &body, StatusCode::OK)
                .await?;
        }
        self.summary.profiles_updated = chosen.len();
        self.say("profiles", chosen.len(), chosen.len(), "");
        Ok(())
    }

    async fn posts(&mut self) -> Result<(), SeedError> {
        for (j, post) in POSTS.iter().enumerate() {
            let author = self.user(j).clone();
            let mut body = json!({
                "author_id": author.id,
                "kind": post.kind,
                "body": post.body,
                "tags": post.tags,
                "visibility": post.visibility,
            });
            if let Some(title) = post.title {
                body["title"] = json!(title);
            }
            if !post.media.is_empty() {
                body["media_urls"] = json!(post.media);
            }
            let what = format!("post {}/{} by {}", j + 1, POSTS.len(), author.person.name);
            let created = self.client.post("/v1/content", &what, &body).await?;
            let id = id_of(&created, self.api(), "POST /v1/content")?;
            self.posts.push((id, author.id));
        }
        self.summary.posts = POSTS.len();
        self.say("posts", POSTS.len(), POSTS.len(), "");
        Ok(())
    }

    async fn comments(&mut self) -> Result<(), SeedError> {
        let mut ids: Vec<String> = Vec::with_capacity(COMMENTS.len());
        let mut replies = 0;
        for (k, comment) in COMMENTS.iter().enumerate() {
            let (post_id, post_author) = self.posts[comment.post].clone();
            // A reply is the post's author answering; other comments come from someone else.
            let author = match comment.reply_to {
                Some(_) => post_author.clone(),
                None => self.someone_but(&post_author),
            };
            let mut body = json!({"author_id": author, "body": comment.body});
            if let Some(parent) = comment.reply_to {
                body["parent_comment_id"] = json!(ids[parent]);
                replies += 1;
            }
            let path = format!("/v1/content/{post_id}/comments");
            let what = format!(
                "comment {}/{} on post {}",
                k + 1,
                COMMENTS.len(),
                comment.post + 1
            );
            let created = self.client.post(&path, &what, &body).await?;
            ids.push(id_of(
                &created,
                self.api(),
                "POST /v1/content/{id}/comments",
            )?);
        }
        self.summary.comments = ids.len();
        self.say(
            "comments",
            ids.len(),
            COMMENTS.len(),
            &format!(" ({replies} replies)"),
        );
        Ok(())
    }

    /// A user other than `not`, chosen by the generator.
    fn someone_but(&mut self, not: &str) -> String {
        let others: Vec<&User> = self.users.iter().filter(|u| u.id != not).collect();
        others[self.dice.below(others.len())].id.clone()
    }

    async fn reactions(&mut self) -> Result<(), SeedError> {
        // Decided first, so the total is known for the progress line.
        let mut planned: Vec<(usize, String, &'static str)> = Vec::new();
        for (j, post) in POSTS.iter().enumerate() {
            let author = &self.posts[j].1;
            let mut others: Vec<String> = self
                .users
                .iter()
                .filter(|u| &u.id != author)
                .map(|u| u.id.clone())
                .collect();
            let count = (1 + self.dice.below(4)).min(others.len());
            for _ in 0..count {
                let reactor = others.swap_remove(self.dice.below(others.len()));
                let kind = post.moods[self.dice.below(post.moods.len())];
                planned.push((j, reactor, kind));
            }
        }
        for (k, (j, reactor, kind)) in planned.iter().enumerate() {
            let path = format!("/v1/content/{}/reactions", self.posts[*j].0);
            let what = format!("reaction {}/{} on post {}", k + 1, planned.len(), j + 1);
            let body = json!({"user_id": reactor, "kind": kind});
            self.client.post(&path, &what, &body).await?;
        }
        self.summary.reactions = planned.len();
        self.say("reactions", planned.len(), planned.len(), "");
        Ok(())
    }

    async fn orders(&mut self) -> Result<(), SeedError> {
        let total = ORDERS.len();
        for (i, plan) in ORDERS.iter().enumerate() {
            let customer = self.user(i).clone();
            let person = customer.person;
            let what = format!("order {}/{total} of {}", i + 1, person.name);
            let mut body = json!({
                "customer_id": customer.id,
                "items": plan.items(person.currency),
                "shipping_address": person.address(),
            });
            if plan.coupon {
                body["coupon_code"] = json!("WELCOME10");
            }
            let order = self.client.post("/v1/orders", &what, &body).await?;
            let id = id_of(&order, self.api(), "POST /v1/orders")?;
            self.summary.orders += 1;
            if plan.fate == Fate::CancelledUnpaid {
                let body = json!({
                    "cancelled_by": "customer",
                    "reason": "Ordered the wrong size; placing a new order",
                });
                let path = format!("/v1/orders/{id}/cancel");
                self.client
                    .write(Method::POST, &path, &what, &body, StatusCode::OK)
                    .await?;
                self.summary.orders_cancelled += 1;
                continue;
            }
            let path = format!("/v1/orders/{id}/pay");
            let body = json!({"method": plan.method});
            let reply = self
                .client
                .call(Method::POST, &path, &what, Some(&body))
                .await?;
            match reply.status {
                StatusCode::OK => self.summary.payments_completed += 1,
                // Declined: the order stays placed.
                StatusCode::PAYMENT_REQUIRED => {
                    self.summary.payments_declined += 1;
                    continue;
                }
                // The fraud rules held it (the moderation service): it stays there.
                StatusCode::CONFLICT if held(&reply) => {
                    self.summary.orders_held += 1;
                    continue;
                }
                _ => return Err(refused(&Method::POST, &path, &what, &reply)),
            }
            if matches!(plan.fate, Fate::Shipped | Fate::ShippedThenRefunded) {
                let path = format!("/v1/orders/{id}/ship");
                let body = shipment(person, i);
                let reply = self
                    .client
                    .call(Method::POST, &path, &what, Some(&body))
                    .await?;
                match reply.status {
                    StatusCode::OK => self.summary.orders_shipped += 1,
                    StatusCode::CONFLICT if held(&reply) => {
                        self.summary.orders_held += 1;
                        continue;
                    }
                    _ => return Err(refused(&Method::POST, &path, &what, &reply)),
                }
            }
            if plan.fate == Fate::ShippedThenRefunded {
                let path = format!("/v1/orders/{id}/refund");
                let body = json!({"reason": "damaged_item"});
                self.client
                    .write(Method::POST, &path, &what, &body, StatusCode::OK)
                    .await?;
                self.summary.orders_refunded += 1;
            }
        }
        let s = &self.summary;
        self.say(
            "orders",
            s.orders,
            total,
            &format!(" ({})", s.orders_detail()),
        );
        Ok(())
    }

    async fn messages(&mut self) -> Result<(), SeedError> {
        for (k, (from, to, text)) in MESSAGES.iter().enumerate() {
            let (from, to) = self.pair(*from, *to);
            let body = json!({"from_user_id": from.id, "to_user_id": to.id, "body": text});
            let what = format!(
                "message {}/{} from {} to {}",
                k + 1,
                MESSAGES.len(),
                from.person.name,
                to.person.name
            );
            self.client.post("/v1/messages", &what, &body).await?;
        }
        self.summary.messages = MESSAGES.len();
        self.say("messages", MESSAGES.len(), MESSAGES.len(), "");
        Ok(())
    }

    /// Waits until every user's wallet has its signup bonus (the `wallet` consumer credits
    /// it moments after `user.registered`), so the transfers have coins to move.
    async fn wallets(&mut self) -> Result<(), SeedError> {
        let deadline = Instant::now() + BONUS_DEADLINE;
        let mut waiting: Vec<User> = self.users.clone();
        let total = waiting.len();
        loop {
            let mut still = Vec::new();
            for user in waiting {
                let path = format!("/v1/wallets/{}?limit=1", user.id);
                let what = format!("the wallet of {}", user.person.name);
                let reply = self.client.call(Method::GET, &path, &what, None).await?;
                match reply.status {
                    StatusCode::OK => {}
                    StatusCode::NOT_FOUND => still.push(user),
                    _ => return Err(refused(&Method::GET, &path, &what, &reply)),
                }
            }
            if still.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                return Err(SeedError::BonusesLate {
                    missing: still.len(),
                    users: total,
                    user_id: still[0].id.clone(),
                });
            }
            waiting = still;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.say("wallets", total, total, " (signup bonuses arrived)");
        Ok(())
    }

    async fn transfers(&mut self) -> Result<(), SeedError> {
        for (k, (from, to, amount, memo)) in TRANSFERS.iter().enumerate() {
            let (from, to) = self.pair(*from, *to);
            let body = json!({"to_user_id": to.id, "amount": amount, "memo": memo});
            let path = format!("/v1/wallets/{}/transfers", from.id);
            let what = format!(
                "transfer {}/{} of {amount} coins from {} to {}",
                k + 1,
                TRANSFERS.len(),
                from.person.name,
                to.person.name
            );
            self.client.post(&path, &what, &body).await?;
        }
        self.summary.transfers = TRANSFERS.len();
        self.say("transfers", TRANSFERS.len(), TRANSFERS.len(), "");
        Ok(())
    }
}

/// How order `i` ships to `person`: a carrier of their country, a tracking number, a date.
fn shipment(person: &Person, i: usize) -> Value {
    let mut dice = Dice(SEED ^ (i as u64 + 1));
    let (carrier, number) = match person.country {
        "US" => (
            "UPS",
            format!("1Z{}", dice.chars(16, b"0123456789ABCDEFGHJKLMNPRSTVWXYZ")),
        ),
        "DE" | "AT" => ("DHL", dice.chars(12, b"0123456789")),
        "NL" | "BE" => (
            "PostNL",
            format!("3S{}", dice.chars(13, b"0123456789ABCDEFGHJKLMNPRSTVWXYZ")),
        ),
        "FR" => ("Colissimo", format!("6A{}", dice.chars(11, b"0123456789"))),
        _ => ("DHL Express", dice.chars(10, b"0123456789")),
    };
    let delivery = chrono::Utc::now().date_naive() + chrono::Days::new(2 + (i % 4) as u64);
    json!({
        "carrier": carrier,
        "tracking": number,
        "tracking_url": format!(
            "https://track.example.com/{}/{number}",
            carrier.to_ascii_lowercase().replace(' ', "-")
        ),
        "estimated_delivery": delivery.format("%Y-%m-%d").to_string(),
    })
}

/// SplitMix64: a small generator whose fixed seed makes every run choose the same.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n` (which is above zero).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chars(&mut self, len: usize, alphabet: &[u8]) -> String {
        (0..len)
            .map(|_| char::from(alphabet[self.below(alphabet.len())]))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// The content
// ---------------------------------------------------------------------------------------

/// Someone who signs up.
#[derive(Debug)]
struct Person {
    name: &'static str,
    /// The email's local part before the run id.
    email: &'static str,
    locale: &'static str,
    bio: &'static str,
    /// What the shop charges them in: EUR in the euro area, USD elsewhere.
    currency: &'static str,
    line1: &'static str,
    city: &'static str,
    region: Option<&'static str>,
    postal_code: &'static str,
    country: &'static str,
}

impl Person {
    /// The address of user `i` in run `run`: unique per run, also when `--users` exceeds
    /// the list and people come round again.
    fn email(&self, i: usize, run: &str) -> String {
        let round = i / PEOPLE.len();
        let domain = ["example.com", "example.org", "example.net"][i % 3];
        if round == 0 {
            format!("{}.{run}@{domain}", self.email)
        } else {
            format!("{}{}.{run}@{domain}", self.email, round + 1)
        }
    }

    fn address(&self) -> Value {
        let mut address = json!({
            "recipient": self.name,
            "line1": self.line1,
            "city": self.city,
            "postal_code": self.postal_code,
            "country": self.country,
        });
        if let Some(region) = self.region {
            address["region"] = json!(region);
        }
        address
    }
}

macro_rules! person {
    ($name:literal, $email:literal, $locale:literal, $currency:literal, $bio:literal,
     $line1:literal, $city:literal, $region:expr, $postal:literal, $country:literal) => {
        Person {
            name: $name,
            email: $email,
            locale: $locale,
            bio: $bio,
            currency: $currency,
            line1: $line1,
            city: $city,
            region: $region,
            postal_code: $postal,
            country: $country,
        }
    };
}

#[rustfmt::skip]
const PEOPLE: &[Person] = &[
    person!("Maya Okafor", "maya.okafor", "en-US", "USD",
            "Baker on weekends, product designer on weekdays.",
            "418 Valencia St", "San Francisco", Some("CA"), "94103", "US"),
    person!("Lucas Almeida", "lucas.almeida", "pt-PT", "EUR",
            "Photographer chasing the light over Lisbon's hills.",
            "Rua Augusta 112", "Lisboa", None, "1100-053", "PT"),
    person!("Sofia Rossi", "sofia.rossi", "it-IT", "EUR",
            "Food writer. I will tell you where to eat in Rome.",
            "Via dei Serpenti 27", "Roma", Some("RM"), "00184", "IT"),
    person!("Jonas Becker", "jonas.becker", "de-DE", "EUR",
            "Runner, cyclist, occasional coffee snob.",
            "Oranienstraße 45", "Berlin", None, "10969", "DE"),
    person!("Amélie Laurent", "amelie.laurent", "fr-FR", "EUR",
            "Interior design, old books and small apartments.",
            "12 rue Oberkampf", "Paris", None, "75011", "FR"),
    person!("Hiroshi Tanaka", "hiroshi.tanaka", "ja-JP", "USD",
            "Ramen cartographer. Gardens in every season.",
            "2-11-3 Meguro", "Tokyo", Some("Meguro-ku"), "153-0063", "JP"),
    person!("Priya Raman", "priya.raman", "en-US", "USD",
            "Backend engineer: Rust, distributed systems, long walks.",
            "221 Newbury St", "Boston", Some("MA"), "02116", "US"),
    person!("Mateo García", "mateo.garcia", "es-ES", "EUR",
            "Weekend traveller, weekday urbanist.",
            "Calle de Fuencarral 63", "Madrid", None, "28004", "ES"),
    person!("Emma de Vries", "emma.devries", "nl-NL", "EUR",
            "Cycling everywhere, whatever the weather.",
            "Prinsengracht 410", "Amsterdam", None, "1016 JB", "NL"),
    person!("Noah Williams", "noah.williams", "en-US", "USD",
            "Chicago born and raised. Pizza opinions on request.",
            "1520 N Damen Ave", "Chicago", Some("IL"), "60622", "US"),
    person!("Aino Virtanen", "aino.virtanen", "fi-FI", "EUR",
            "Sauna, snow and street photography.",
            "Fredrikinkatu 34", "Helsinki", None, "00100", "FI"),
    person!("Liam O'Connor", "liam.oconnor", "en-IE", "EUR",
            "Fiddle player. Trad sessions most Thursdays.",
            "23 Camden Street Lower", "Dublin", None, "D02 XE80", "IE"),
    person!("Ana Souza", "ana.souza", "pt-BR", "USD",
            "UX researcher and weekend potter.",
            "Rua Oscar Freire 900", "São Paulo", Some("SP"), "01426-001", "BR"),
    person!("Felix Gruber", "felix.gruber", "de-AT", "EUR",
            "Coffee house regular, mountain hiker.",
            "Neubaugasse 8", "Wien", None, "1070", "AT"),
    person!("Chloé Dubois", "chloe.dubois", "fr-BE", "EUR",
            "Comics, chocolate and cargo bikes.",
            "Rue Antoine Dansaert 50", "Bruxelles", None, "1000", "BE"),
    person!("Daniel Kim", "daniel.kim", "en-US", "USD",
            "Film nerd. Korean BBQ evangelist.",
            "3400 W 6th St", "Los Angeles", Some("CA"), "90020", "US"),
    person!("Eleni Papadopoulou", "eleni.papadopoulou", "el-GR", "EUR",
            "Archaeologist, swimmer, island hopper.",
            "Ermou 40", "Athina", None, "105 63", "GR"),
    person!("Marco Bianchi", "marco.bianchi", "it-IT", "EUR",
            "Espresso first, questions later.",
            "Corso Buenos Aires 33", "Milano", Some("MI"), "20124", "IT"),
    person!("Olivia Brown", "olivia.brown", "en-US", "USD",
            "Bookseller and amateur astronomer.",
            "88 Bedford Ave", "Brooklyn", Some("NY"), "11249", "US"),
    person!("Lena Schmidt", "lena.schmidt", "de-DE", "EUR",
            "Harbour walks and synthesizers.",
            "Schanzenstraße 12", "Hamburg", None, "20357", "DE"),
    person!("Kwame Mensah", "kwame.mensah", "en-US", "USD",
            "Software engineer and highlife guitarist.",
            "2100 Guadalupe St", "Austin", Some("TX"), "78705", "US"),
    person!("Inès Moreau", "ines.moreau", "fr-FR", "EUR",
            "Pastry chef in training.",
            "8 quai Saint-Vincent", "Lyon", None, "69001", "FR"),
    person!("Pablo Ruiz", "pablo.ruiz", "es-ES", "EUR",
            "Architect. Modernisme tours on Sundays.",
            "Carrer de Verdi 20", "Barcelona", None, "08012", "ES"),
    person!("Sara Lindqvist", "sara.lindqvist", "sv-SE", "USD",
            "Designer of small, useful things.",
            "Götgatan 36", "Stockholm", None, "118 26", "SE"),
];

/// A post: kind, title, body, media, tags, visibility, and the reactions it draws.
struct Post {
    kind: &'static str,
    title: Option<&'static str>,
    body: &'static str,
    media: &'static [&'static str],
    tags: &'static [&'static str],
    visibility: &'static str,
    moods: &'static [&'static str],
}

const HAPPY: &[&str] = &["like", "like", "love", "love", "wow"];
const FUNNY: &[&str] = &["like", "laugh", "laugh", "love"];
const USEFUL: &[&str] = &["like", "like", "love", "wow"];

/// Post `j` is written by user `j % users`; with 12 users, posts 12 to 19 are the second
/// posts of users 0 to 7, and the text fits who they are.
#[rustfmt::skip]
const POSTS: &[Post] = &[
    Post {
        kind: "post", visibility: "public", tags: &["baking", "sourdough"], moods: HAPPY,
        title: None,
        body: "Sourdough attempt #4: finally an open crumb. The trick was a longer cold retard, 16 \
               hours in the fridge.",
        media: &[],
    },
    Post {
        kind: "image", visibility: "public", tags: &["lisboa", "travel", "photography"], moods: HAPPY,
        title: Some("Sunset from Miradouro da Graça"),
        body: "Worth the climb, every single time.",
        media: &["https://cdn.example.com/demo/lisboa-graca-sunset.jpg"],
    },
    Post {
        kind: "article", visibility: "public", tags: &["rome", "food", "guide"], moods: USEFUL,
        title: Some("Five trattorie in Monti that locals actually go to"),
        body: "Monti is the neighbourhood where Romans still eat like Romans. These are the five \
               places I keep going back to: where to sit, what to order, and when to go so you do \
               not queue.\n\nOne: the carbonara at the corner place on Via Panisperna. Two: the \
               supplì by the market. Three to five are in the full list below.",
        media: &[],
    },
    Post {
        kind: "post", visibility: "public", tags: &["running", "berlin"], moods: USEFUL,
        title: None,
        body: "Anyone else running the Tempelhof loop on Sunday mornings? Looking for a 5:30/km \
               group.",
        media: &[],
    },
    Post {
        kind: "video", visibility: "public", tags: &["diy", "home"], moods: HAPPY,
        title: Some("Repainting our tiny kitchen in one weekend"),
        body: "48 hours, two litres of terracotta, one very patient cat.",
        media: &["https://cdn.example.com/demo/kitchen-timelapse.mp4"],
    },
    Post {
        kind: "post", visibility: "public", tags: &["ramen", "tokyo"], moods: HAPPY,
        title: None,
        body: "Tried the new ramen place near Meguro station: yuzu shio broth, absolutely worth \
               the 40 minute queue.",
        media: &[],
    },
    Post {
        kind: "article", visibility: "public", tags: &["rust", "engineering"], moods: USEFUL,
        title: Some("What I learned shipping my first Rust service to production"),
        body: "Three months in, the service has not paged anyone. Here is what mattered: graceful \
               shutdown from day one, errors that name the field at fault, and an outbox so that \
               an event is published exactly when its change commits.",
        media: &[],
    },
    Post {
        kind: "image", visibility: "public", tags: &["madrid", "parks"], moods: HAPPY,
        title: Some("Retiro this morning"),
        body: "The lake before the rowing boats come out.",
        media: &["https://cdn.example.com/demo/retiro-morning.jpg"],
    },
    Post {
        kind: "post", visibility: "public", tags: &["amsterdam", "cycling"], moods: &["sad", "sad", "angry", "like"],
        title: None,
        body: "Bike got stolen. Third time this year. Recommendations for a lock that actually \
               works?",
        media: &[],
    },
    Post {
        kind: "post", visibility: "followers", tags: &["chicago", "pizza"], moods: FUNNY,
        title: None,
        body: "Deep dish versus tavern style: the debate continues at our office. I am team tavern.",
        media: &[],
    },
    Post {
        kind: "image", visibility: "public", tags: &["helsinki", "winter"], moods: HAPPY,
        title: Some("First snow on the Esplanadi"),
        body: "",
        media: &["https://cdn.example.com/demo/esplanadi-snow.jpg", "https://cdn.example.com/demo/esplanadi-snow-2.jpg"],
    },
    Post {
        kind: "post", visibility: "public", tags: &["music", "dublin"], moods: HAPPY,
        title: None,
        body: "Trad session at The Cobblestone tonight, 9pm. Bring a bodhrán if you have one.",
        media: &[],
    },
    Post {
        kind: "article", visibility: "public", tags: &["baking", "guide"], moods: USEFUL,
        title: Some("A beginner's guide to feeding a sourdough starter"),
        body: "Equal weights of flour and water, once a day, at the same time. That is most of it. \
               The rest is learning to read the bubbles: this guide shows what a hungry, a happy \
               and an over-fed starter look like.",
        media: &[],
    },
    Post {
        kind: "post", visibility: "public", tags: &["lisboa", "food"], moods: USEFUL,
        title: None,
        body: "Looking for recommendations: the best pastel de nata outside of Belém?",
        media: &[],
    },
    Post {
        kind: "video", visibility: "public", tags: &["pasta", "recipe"], moods: HAPPY,
        title: Some("Fresh tonnarelli cacio e pepe"),
        body: "Pecorino, pepper, pasta water. Nothing else.",
        media: &["https://cdn.example.com/demo/cacio-e-pepe.mp4"],
    },
    Post {
        kind: "image", visibility: "followers", tags: &["running", "gear"], moods: FUNNY,
        title: Some("400 km and counting"),
        body: "Retiring these on Sunday.",
        media: &["https://cdn.example.com/demo/running-shoes.jpg"],
    },
    Post {
        kind: "post", visibility: "public", tags: &["books", "bookclub"], moods: HAPPY,
        title: None,
        body: "Book club pick for December: The Left Hand of Darkness. Who is in?",
        media: &[],
    },
    Post {
        kind: "image", visibility: "public", tags: &["tokyo", "autumn", "photography"], moods: HAPPY,
        title: Some("Autumn in Rikugien"),
        body: "The maples turned this week.",
        media: &["https://cdn.example.com/demo/rikugien-autumn.jpg"],
    },
    Post {
        kind: "post", visibility: "public", tags: &["hackathon", "community"], moods: USEFUL,
        title: None,
        body: "Reminder: registration for our local hackathon closes Friday. Teams of 2 to 4, all \
               levels welcome!",
        media: &[],
    },
    Post {
        kind: "article", visibility: "public", tags: &["travel", "spain"], moods: USEFUL,
        title: Some("A weekend in Valencia: what to eat, where to stay"),
        body: "Paella is a lunch dish, horchata comes with fartons, and the old riverbed is the \
               best park in Spain. A two-day plan, neighbourhood by neighbourhood.",
        media: &[],
    },
];

/// A comment on post `post`; a reply (by the post's author) names the comment it answers.
struct Comment {
    post: usize,
    body: &'static str,
    reply_to: Option<usize>,
}

macro_rules! comment {
    ($post:literal, $body:literal) => {
        Comment {
            post: $post,
            body: $body,
            reply_to: None,
        }
    };
    ($post:literal, $body:literal, reply to $parent:literal) => {
        Comment {
            post: $post,
            body: $body,
            reply_to: Some($parent),
        }
    };
}

#[rustfmt::skip]
const COMMENTS: &[Comment] = &[
    comment!(0, "That crumb looks perfect. What hydration are you using?"),
    comment!(0, "78%, with 10% whole wheat. Happy to share the full recipe!", reply to 0),
    comment!(1, "Graça at golden hour is unbeatable. Great shot!"),
    comment!(2, "Saving this for my trip in March, grazie!"),
    comment!(2, "You forgot the place with the scamorza. Legendary."),
    comment!(2, "Adding it to the next edition!", reply to 4),
    comment!(3, "I'm in. Which entrance do you start from?"),
    comment!(3, "Tempelhofer Damm side, 8:00 sharp.", reply to 6),
    comment!(4, "The terracotta colour is gorgeous."),
    comment!(5, "Adding this to my list for April."),
    comment!(6, "The part about graceful shutdown saved me a week of debugging. Thanks for writing it up."),
    comment!(6, "Did you try tokio-console for the latency spikes?"),
    comment!(8, "Heavy chain lock plus a frame lock, and lock it to something immovable. Sorry about your bike!"),
    comment!(8, "Oof. Happened to me twice last year."),
    comment!(9, "Tavern style is the real Chicago pizza. Fight me."),
    comment!(10, "Beautiful. We are still waiting for snow here."),
    comment!(11, "I'll bring my tin whistle!"),
    comment!(12, "Bookmarked. My starter has been sulking all week."),
    comment!(13, "Manteigaria in Chiado, no contest."),
    comment!(13, "Going there tomorrow morning, obrigado!", reply to 18),
    comment!(14, "Those noodles look incredible. Bronze-die cut?"),
    comment!(16, "Count me in! One of my favourites."),
    comment!(18, "Signed up with two colleagues. See you there!"),
    comment!(19, "Horchata in Alboraya, don't miss it."),
];

/// A product of the shop, priced in both currencies (minor units).
struct Product {
    sku: &'static str,
    name: &'static str,
    eur: i64,
    usd: i64,
}

#[rustfmt::skip]
const CATALOG: &[Product] = &[
    Product { sku: "HD-3310", name: "Wireless noise-cancelling headphones",     eur: 22_900, usd: 24_900 },
    Product { sku: "RN-5120", name: "Trail running shoes, size 42",             eur: 13_995, usd: 14_995 },
    Product { sku: "KB-9001", name: "Mechanical keyboard, 75%, brown switches", eur: 11_900, usd: 12_900 },
    Product { sku: "YG-2048", name: "Cork yoga mat",                            eur:  4_990, usd:  5_400 },
    Product { sku: "PL-0333", name: "Potted monstera, 60 cm",                   eur:  3_400, usd:  3_800 },
    Product { sku: "TS-0417", name: "Organic cotton t-shirt, navy, M",          eur:  2_995, usd:  3_200 },
    Product { sku: "LP-1200", name: "Vinyl LP: Kind of Blue",                   eur:  2_799, usd:  2_999 },
    Product { sku: "BK-1043", name: "Ceramic pour-over coffee dripper",         eur:  2_490, usd:  2_600 },
    Product { sku: "BT-6600", name: "Insulated steel bottle, 750 ml",           eur:  2_295, usd:  2_495 },
    Product { sku: "CB-3030", name: "Bamboo cutting board",                     eur:  1_849, usd:  1_999 },
    Product { sku: "MG-0050", name: "Stoneware mug, 350 ml",                    eur:  1_450, usd:  1_600 },
    Product { sku: "CF-2201", name: "Single-origin coffee beans, 250 g",        eur:  1_250, usd:  1_395 },
    Product { sku: "BO-7788", name: "The Left Hand of Darkness (paperback)",    eur:  1_199, usd:  1_299 },
    Product { sku: "SK-0520", name: "Dotted sketchbook, A5",                    eur:    895, usd:    949 },
    Product { sku: "FL-0100", name: "Paper coffee filters, 100 pack",           eur:    649, usd:    699 },
];

/// What happens to an order after it is placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// Paid, not shipped yet.
    Paid,
    /// Paid and shipped.
    Shipped,
    /// Paid, shipped, and refunded (it arrived damaged).
    ShippedThenRefunded,
    /// The payment is declined: the total ends in 13 to 18, which the fake provider
    /// declines, in either currency.
    Declined,
    /// Cancelled by the customer before paying.
    CancelledUnpaid,
}

/// An order: its lines (SKU, quantity), whether it uses `WELCOME10`, how it is paid, and
/// what happens to it. Totals are checked against the fake provider's rule in the tests.
struct OrderPlan {
    lines: &'static [(&'static str, u32)],
    coupon: bool,
    method: &'static str,
    fate: Fate,
}

impl OrderPlan {
    fn items(&self, currency: &str) -> Value {
        self.lines
            .iter()
            .map(|(sku, quantity)| {
                let product = product(sku);
                json!({
                    "sku": sku,
                    "name": product.name,
                    "quantity": quantity,
                    "unit_price": {"amount_minor": product.price(currency), "currency": currency},
                })
            })
            .collect()
    }
}

impl Product {
    fn price(&self, currency: &str) -> i64 {
        if currency == "EUR" {
            self.eur
        } else {
            self.usd
        }
    }
}

fn product(sku: &str) -> &'static Product {
    CATALOG
        .iter()
        .find(|p| p.sku == sku)
        .expect("every order line names a product of the catalog (a unit test checks)")
}

macro_rules! order {
    ([$(($sku:literal, $qty:literal)),+], $coupon:literal, $method:literal, $fate:ident) => {
        OrderPlan { lines: &[$(($sku, $qty)),+], coupon: $coupon, method: $method, fate: Fate::$fate }
    };
}

#[rustfmt::skip]
const ORDERS: &[OrderPlan] = &[
    order!([("HD-3310", 1)],                                   false, "card",          Shipped),
    order!([("CF-2201", 2), ("BK-1043", 1), ("FL-0100", 1)],   true,  "card",          Shipped),
    order!([("RN-5120", 1), ("BT-6600", 1)],                   false, "paypal",        Paid),
    // EUR 56.16 and USD 61.16: authentication_failed.
    order!([("CF-2201", 1), ("YG-2048", 1)],                   true,  "card",          Declined),
    order!([("TS-0417", 2), ("BO-7788", 1)],                   false, "card",          Shipped),
    order!([("YG-2048", 1)],                                   false, "card",          CancelledUnpaid),
    order!([("KB-9001", 1), ("MG-0050", 2)],                   false, "card",          ShippedThenRefunded),
    order!([("LP-1200", 1)],                                   true,  "paypal",        Paid),
    order!([("PL-0333", 1), ("MG-0050", 1)],                   false, "bank_transfer", Shipped),
    // EUR 65.14 (insufficient_funds), USD 70.13 (card_declined).
    order!([("TS-0417", 1), ("BT-6600", 1), ("FL-0100", 3)],   true,  "card",          Declined),
    order!([("BO-7788", 3)],                                   false, "card",          Shipped),
    order!([("SK-0520", 2), ("CB-3030", 1)],                   false, "paypal",        Paid),
    order!([("CF-2201", 3)],                                   false, "card",          Shipped),
    order!([("BK-1043", 1), ("FL-0100", 2), ("MG-0050", 2)],   false, "card",          Paid),
    order!([("HD-3310", 1), ("TS-0417", 1)],                   false, "card",          Paid),
];

/// Direct messages: (from, to, body), people by index.
#[rustfmt::skip]
const MESSAGES: &[(usize, usize, &str)] = &[
    (1, 0, "Hi Maya! Loved the sourdough post. Would you share the recipe?"),
    (0, 1, "Of course, I'll send it tonight. Are you still coming to San Francisco in May?"),
    (1, 0, "Yes, landing on the 12th. Coffee?"),
    (3, 7, "Hola Mateo! Are you running the Madrid half marathon this year?"),
    (7, 3, "Signed up yesterday. Let's meet at the start line!"),
    (5, 2, "Sofia, thank you for the Monti list. The carbonara was everything you promised."),
];

/// Wallet transfers: (from, to, coins, memo), people by index.
const TRANSFERS: &[(usize, usize, u64, &str)] = &[
    (1, 0, 15, "Coffee in San Francisco is on me"),
    (3, 7, 40, "Half marathon entry, as promised"),
];

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use ovasabi_services::commerce::FakeProvider;

    use super::*;

    /// The total the commerce service computes: the lines, less `WELCOME10`'s 10 % rounded
    /// down.
    fn total(plan: &OrderPlan, currency: &str) -> i64 {
        let subtotal: i64 = plan
            .lines
            .iter()
            .map(|(sku, qty)| product(sku).price(currency) * i64::from(*qty))
            .sum();
        subtotal - if plan.coupon { subtotal * 10 / 100 } else { 0 }
    }

    #[test]
    fn declined_orders_and_only_they_hit_the_fake_providers_decline_rule() {
        for (i, plan) in ORDERS.iter().enumerate() {
            for currency in ["EUR", "USD"] {
                let total = total(plan, currency);
                let declined = FakeProvider::decline_for(total).is_some();
                assert_eq!(
                    declined,
                    plan.fate == Fate::Declined,
                    "order {i} in {currency}: total {total}"
                );
            }
        }
    }

    #[test]
    fn the_orders_tell_the_documented_story() {
        let count = |fate: Fate| ORDERS.iter().filter(|o| o.fate == fate).count();
        assert_eq!(ORDERS.len(), 15);
        assert_eq!(count(Fate::Declined), 2);
        assert_eq!(count(Fate::CancelledUnpaid), 1);
        assert_eq!(count(Fate::ShippedThenRefunded), 1);
        assert_eq!(count(Fate::Shipped) + count(Fate::ShippedThenRefunded), 7);
        for plan in ORDERS {
            assert!((1..=3).contains(&plan.lines.len()));
            for (sku, qty) in plan.lines {
                assert!(CATALOG.iter().any(|p| p.sku == *sku), "{sku}");
                assert!((1..=3).contains(qty));
            }
        }
        assert_eq!(
            CATALOG.iter().map(|p| p.sku).collect::<HashSet<_>>().len(),
            CATALOG.len()
        );
    }

    #[test]
    fn the_content_meets_the_apis_rules() {
        assert_eq!(POSTS.len(), 20);
        assert_eq!(COMMENTS.len(), 24);
        for post in POSTS {
            assert!(["post", "article", "image", "video"].contains(&post.kind));
            if post.kind == "article" {
                assert!(post.title.is_some());
            }
            if post.kind == "post" || post.kind == "article" {
                assert!(!post.body.is_empty());
            } else {
                assert!(!post.media.is_empty());
            }
            for tag in post.tags {
                assert!(
                    tag.bytes().all(|b| b.is_ascii_lowercase()
                        || b.is_ascii_digit()
                        || b == b'-'
                        || b == b'_'),
                    "{tag}"
                );
            }
        }
        for (k, comment) in COMMENTS.iter().enumerate() {
            assert!(comment.post < POSTS.len());
            if let Some(parent) = comment.reply_to {
                assert!(
                    parent < k && COMMENTS[parent].post == comment.post,
                    "comment {k}"
                );
            }
        }
        for person in PEOPLE {
            assert!(person.name.chars().count() <= 64);
            assert!(["EUR", "USD"].contains(&person.currency));
            assert!(person
                .email
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'.'));
        }
        for memo in TRANSFERS.iter().map(|t| t.3) {
            assert!(memo.chars().count() <= 140);
        }
    }

    #[test]
    fn emails_are_unique_within_a_run_and_between_runs() {
        let mut seen = HashSet::new();
        for run in ["aaaa0001", "aaaa0002"] {
            for i in 0..MAX_USERS {
                let email = PEOPLE[i % PEOPLE.len()].email(i, run);
                assert!(seen.insert(email.clone()), "{email}");
            }
        }
        assert_ne!(run_id(), "");
    }

    #[test]
    fn api_addresses_are_read_or_refused_clearly() {
        assert_eq!(api_url("127.0.0.1:8080").unwrap(), "http://127.0.0.1:8080");
        assert_eq!(
            api_url("http://localhost:8080/").unwrap(),
            "http://localhost:8080"
        );
        assert!(api_url("https://example.com").is_err());
        assert!(api_url("ftp://x").is_err());
        assert!(api_url("http://").is_err());
    }

    #[test]
    fn errors_name_the_request_and_the_apis_message() {
        let refused = SeedError::Refused {
            request: "POST /v1/orders".to_owned(),
            what: "order 4/15 of Jonas Becker".to_owned(),
            status: StatusCode::UNPROCESSABLE_ENTITY,
            error: ErrorBody::of(
                &json!({"error": {"code": "invalid_field", "field": "items[0].sku", "message": "give 1 to 64 characters (got 0)"}}),
            ),
        };
        assert_eq!(
            refused.to_string(),
            "the API refused POST /v1/orders (order 4/15 of Jonas Becker): 422 invalid_field (field `items[0].sku`): give 1 to 64 characters (got 0)"
        );
        let missing = SeedError::Refused {
            request: "POST /v1/orders".to_owned(),
            what: "order 1/15 of Maya Okafor".to_owned(),
            status: StatusCode::NOT_FOUND,
            error: ErrorBody::of(
                &json!({"error": {"code": "no_route", "field": null, "message": "no such endpoint"}}),
            ),
        };
        assert!(
            missing
                .to_string()
                .ends_with("is the `commerce` service running? `ovasabi up` runs every service"),
            "{missing}"
        );
        let unreachable = SeedError::Unreachable {
            api: "http://127.0.0.1:1".to_owned(),
            during: None,
            cause: "Connection refused (os error 111)".to_owned(),
        };
        assert!(unreachable
            .to_string()
            .starts_with("cannot reach the OVASABI API at http://127.0.0.1:1: Connection refused (os error 111); start it with `ovasabi up`"));
    }
}
