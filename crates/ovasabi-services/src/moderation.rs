//! `moderation`: content rules and fraud rules, applied to events as they happen.
//!
//! | input | rules | output (on `moderation.events`) |
//! | --- | --- | --- |
//! | `content.posted` | `blocked_terms`, `max_links`, `max_posts_per_minute` | `content.flagged` (automated; the note names the rule), else `moderation.decided` (approve) |
//! | `order.placed` | `max_orders_per_minute`, `history_multiple`, `max_failed_payments_per_hour`, `new_account_large_order` | `fraud.hold_placed` on the order |
//! | `payment.failed`, `user.registered` | — | remembered for the fraud rules |
//!
//! The content service hides flagged content; commerce holds an order under a fraud hold
//! (it can be neither paid nor shipped) and notifications tell the customer. Every decision
//! is a row of `moderation_decisions` naming the rule that fired (or `none`) and what it
//! saw; `GET /v1/moderation/decisions?target_id=` lists them.
//!
//! # Rules
//!
//! The thresholds live in a JSON file ([`Rules`]; `ovasabi up --moderation-rules FILE`),
//! the built-in [`Rules::default`] otherwise. The file is read again when it changes (its
//! modification time is looked at once a second, before an event is judged); a file that
//! no longer reads keeps the rules in force and logs why. One that does not read at start
//! stops the service with the file's name and the problem.
//!
//! An order whose customer the service has not seen registered yet (`user.registered` comes
//! on another topic, and may be behind) is judged again on its next deliveries, and judged
//! without the account's age from the third ([`UNKNOWN_CUSTOMER_ATTEMPTS`]).
//!
//! Windows (a minute of posts, a minute of orders, an hour of failed payments) are measured
//! in event time, over the events the service has seen: a rate rule judges what it has seen
//! when the event arrives. The order rate counts the customer's orders less than a minute
//! before or after this one, so however orders arrive, the one that takes the count over
//! the limit is held (in order, the last; events processed concurrently or redelivered late
//! may pick another of the burst). The other rules depend on the event alone (or on history
//! already seen).
//!
//! The consumer is a [`Reactor`] ([`Order::Unordered`]); each decision's event id derives
//! from its cause, so a redelivery decides nothing twice.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use ovasabi_core::{Event, Ordering};
use ovasabi_events::commerce::{OrderPlaced, PaymentFailed};
use ovasabi_events::content::ContentPosted;
use ovasabi_events::moderation::{
    ContentFlagged, Decision, FlagReason, FlagSource, FraudHoldPlaced, HoldReason, HoldTarget,
    ModerationDecided, ModerationTarget,
};
use ovasabi_events::users::UserRegistered;
use ovasabi_events::DomainEvent;
use ovasabi_middleware::{HandlerError, Message};
use ovasabi_store::inbox::Order;
use ovasabi_store::{params, Migration, MigrationSet, Outbox, Store, Transaction};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::http::ApiError;
use crate::reactor::{Reaction, Reactor};
use crate::runtime::{ConsumerSpec, Context, Service, ServiceError};
use crate::users::paging;
use crate::wallet::{caused_by, payload, store_failure};

/// The consumer group, and its inbox name.
pub const GROUP: &str = "moderation";
/// The source of the events it publishes.
pub const SOURCE: &str = "/ovasabi/moderation";
/// Deliveries of an order whose customer was not seen registered before it is judged
/// without the account-age rule.
pub const UNKNOWN_CUSTOMER_ATTEMPTS: u32 = 3;
/// Who automated decisions name as their moderator.
pub const MODERATOR: &str = "ovasabi-rules";

const MIGRATIONS: MigrationSet = MigrationSet::new(
    "moderation",
    &[Migration::new(
        1,
        "decisions and what the rules remember",
        "CREATE TABLE moderation_decisions (
            id TEXT PRIMARY KEY,
            target_kind TEXT NOT NULL,
            target_id TEXT NOT NULL,
            decision TEXT NOT NULL,
            rule TEXT NOT NULL,
            detail TEXT NOT NULL,
            cause_event_id TEXT NOT NULL,
            decided_at TIMESTAMPTZ NOT NULL
        );
        CREATE INDEX moderation_decisions_target ON moderation_decisions (target_id);
        CREATE TABLE moderation_posts (
            content_id TEXT PRIMARY KEY,
            author_id TEXT NOT NULL,
            posted_at TIMESTAMPTZ NOT NULL
        );
        CREATE INDEX moderation_posts_author ON moderation_posts (author_id, posted_at);
        CREATE TABLE fraud_users (user_id TEXT PRIMARY KEY, registered_at TIMESTAMPTZ NOT NULL);
        CREATE TABLE fraud_orders (
            order_id TEXT PRIMARY KEY,
            customer_id TEXT NOT NULL,
            total_minor BIGINT NOT NULL,
            currency TEXT NOT NULL,
            placed_at TIMESTAMPTZ NOT NULL
        );
        CREATE INDEX fraud_orders_customer ON fraud_orders (customer_id, placed_at);
        CREATE TABLE moderation_locks (key TEXT PRIMARY KEY, judged BIGINT NOT NULL);
        CREATE TABLE fraud_failures (
            payment_id TEXT PRIMARY KEY,
            order_id TEXT NOT NULL,
            failed_at TIMESTAMPTZ NOT NULL
        );",
    )],
);

/// The thresholds of the content and fraud rules.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rules {
    /// Content rules.
    pub content: ContentRules,
    /// Fraud rules.
    pub fraud: FraudRules,
}

/// Content rules: a post breaking one is flagged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContentRules {
    /// Terms a post may not contain (case-insensitive).
    pub blocked_terms: Vec<String>,
    /// The most links (`http://`, `https://`, `www.`) a post may hold.
    pub max_links: usize,
    /// The most posts an author may publish within a minute.
    pub max_posts_per_minute: i64,
}

/// Fraud rules: an order breaking one is held.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FraudRules {
    /// The most orders a customer may place within a minute.
    pub max_orders_per_minute: i64,
    /// An order more than this many times the customer's average earlier order is held…
    pub history_multiple: i64,
    /// …once the customer has at least this many earlier orders.
    pub history_min_orders: i64,
    /// Held when the customer had this many failed payments in the hour before.
    pub max_failed_payments_per_hour: i64,
    /// An account younger than this many minutes…
    pub new_account_minutes: i64,
    /// …placing an order of at least this many minor units is held.
    pub new_account_large_order_minor: i64,
}

impl Default for ContentRules {
    fn default() -> Self {
        ContentRules {
            blocked_terms: vec![
                "buy followers".to_owned(),
                "crypto giveaway".to_owned(),
                "free money".to_owned(),
            ],
            max_links: 3,
            max_posts_per_minute: 5,
        }
    }
}

impl Default for FraudRules {
    fn default() -> Self {
        FraudRules {
            max_orders_per_minute: 3,
            history_multiple: 10,
            history_min_orders: 3,
            max_failed_payments_per_hour: 3,
            new_account_minutes: 60,
            new_account_large_order_minor: 100_000,
        }
    }
}

impl Rules {
    /// Reads rules from a JSON file; the error names the file and the problem.
    pub fn load(path: &std::path::Path) -> Result<Rules, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("moderation rules {}: {e}", path.display()))?;
        let rules: Rules = serde_json::from_str(&text).map_err(|e| {
            format!(
                "moderation rules {}: {e} (see `Rules` in the moderation service's documentation)",
                path.display()
            )
        })?;
        if rules.content.max_posts_per_minute < 1 || rules.fraud.max_orders_per_minute < 1 {
            return Err(format!(
                "moderation rules {}: max_posts_per_minute and max_orders_per_minute must be at least 1",
                path.display()
            ));
        }
        Ok(rules)
    }
}

/// The rules in force, read again when their file changes.
struct RuleBook {
    path: Option<PathBuf>,
    state: Mutex<RuleState>,
}

struct RuleState {
    rules: Arc<Rules>,
    modified: Option<SystemTime>,
    checked: Instant,
}

impl RuleBook {
    fn new(path: Option<PathBuf>) -> Result<RuleBook, String> {
        let (rules, modified) = match &path {
            None => (Rules::default(), None),
            Some(p) => (Rules::load(p)?, modified(p)),
        };
        Ok(RuleBook {
            path,
            state: Mutex::new(RuleState {
                rules: Arc::new(rules),
                modified,
                checked: Instant::now(),
            }),
        })
    }

    /// The rules, read again if the file changed (looked at once a second at most).
    fn current(&self) -> Arc<Rules> {
        let mut st = self.state.lock().unwrap();
        let Some(path) = &self.path else {
            return st.rules.clone();
        };
        if st.checked.elapsed() < std::time::Duration::from_secs(1) {
            return st.rules.clone();
        }
        st.checked = Instant::now();
        let now = modified(path);
        if now != st.modified {
            st.modified = now;
            match Rules::load(path) {
                Ok(rules) => {
                    tracing::info!(file = %path.display(), "moderation rules reloaded");
                    st.rules = Arc::new(rules);
                }
                Err(e) => tracing::warn!("{e}; the rules in force stay"),
            }
        }
        st.rules.clone()
    }
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The `moderation` service.
#[derive(Clone, Debug, Default)]
pub struct ModerationService {
    rules: Option<PathBuf>,
}

impl ModerationService {
    /// With rules from `path` (the built-in ones when `None`).
    pub fn with_rules(path: Option<PathBuf>) -> Self {
        ModerationService { rules: path }
    }
}

impl Service for ModerationService {
    fn name(&self) -> &'static str {
        "moderation"
    }

    fn about(&self) -> &'static str {
        "content and fraud rules: flags posts, holds suspicious orders, records which rule fired"
    }

    fn migrations(&self) -> MigrationSet {
        MIGRATIONS
    }

    fn consumers(&self, ctx: &Context) -> Result<Vec<ConsumerSpec>, ServiceError> {
        let book = RuleBook::new(self.rules.clone()).map_err(|reason| ServiceError::Config {
            service: "moderation",
            reason,
        })?;
        let topics = vec![
            ContentPosted::TOPIC.to_owned(),
            OrderPlaced::TOPIC.to_owned(),
            UserRegistered::TOPIC.to_owned(),
        ];
        Ok(vec![ctx.consumer(
            "moderation",
            GROUP,
            &topics,
            Ordering::PerKey,
            Arc::new(
                Reactor::new(
                    GROUP,
                    Order::Unordered,
                    ctx.store.clone(),
                    Judge {
                        rules: Arc::new(book),
                    },
                )
                .with_relay(ctx.api.relay.clone()),
            ),
        )?])
    }

    fn routes(&self, ctx: &Context) -> Option<Router> {
        Some(
            Router::new()
                .route("/v1/moderation/decisions", get(decisions))
                .with_state(ctx.store.clone()),
        )
    }

    fn openapi(&self) -> Value {
        json!({
            "paths": {"/v1/moderation/decisions": {"get": {
                "summary": "The decisions about a piece of content or an order: flagged, approved or held, with the rule that fired and what it saw",
                "parameters": [{"name": "target_id", "in": "query", "required": true, "schema": {"type": "string"}}],
                "responses": {
                    "200": {"description": "The decisions, oldest first", "content": {"application/json": {"schema": {"type": "object", "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/ModerationDecision"}}}}}}},
                    "422": {"description": "`target_id` is missing", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
                }
            }}},
            "schemas": {"ModerationDecision": {"type": "object", "properties": {
                "id": {"type": "string"}, "target_kind": {"type": "string"}, "target_id": {"type": "string"},
                "decision": {"type": "string", "enum": ["flagged", "approved", "held"]},
                "rule": {"type": "string"}, "detail": {"type": "string"},
                "cause_event_id": {"type": "string"}, "decided_at": {"type": "string", "format": "date-time"}
            }}}
        })
    }
}

/// What an event asks of the judge.
enum Plan {
    Post(ContentPosted),
    Order(OrderPlaced),
    Failed(PaymentFailed),
    Registered(UserRegistered),
}

/// Applies the rules.
struct Judge {
    rules: Arc<RuleBook>,
}

/// The id of what `cause` makes the judge decide.
fn decision_id(cause: &Event, what: &str) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!("ovasabi.moderation\n{what}\n{}\n{}", cause.source, cause.id).as_bytes(),
    )
    .to_string()
}

/// How many links `text` holds.
fn links(text: &str) -> usize {
    let lower = text.to_lowercase();
    ["http://", "https://", "www."]
        .iter()
        .map(|p| lower.matches(p).count())
        .sum::<usize>()
        - lower.matches("://www.").count()
}

#[allow(clippy::too_many_arguments)]
async fn record(
    tx: &mut Transaction,
    id: &str,
    target_kind: &str,
    target_id: &str,
    decision: &str,
    rule: &str,
    detail: &str,
    cause: &Event,
) -> Result<(), HandlerError> {
    tx.execute(
        "INSERT INTO moderation_decisions (id, target_kind, target_id, decision, rule, detail, cause_event_id, decided_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
        params![id, target_kind, target_id, decision, rule, detail, cause.id.as_str(), Utc::now()],
    )
    .await
    .map_err(store_failure("moderation"))?;
    Ok(())
}

/// Serializes the judging of one author's posts or one customer's orders until `tx` ends
/// (a row lock on PostgreSQL; SQLite has one writer), so two of them judged at once both
/// count each other: rates see every event of the burst.
async fn lock(tx: &mut Transaction, key: &str) -> Result<(), HandlerError> {
    tx.execute(
        "INSERT INTO moderation_locks (key, judged) VALUES ($1, 1)
         ON CONFLICT (key) DO UPDATE SET judged = moderation_locks.judged + 1",
        params![key],
    )
    .await
    .map_err(store_failure("moderation"))?;
    Ok(())
}

impl Judge {
    async fn post(
        &self,
        tx: &mut Transaction,
        cause: &Event,
        post: ContentPosted,
    ) -> Result<bool, HandlerError> {
        let failed = store_failure("moderation");
        let rules = self.rules.current();
        let posted_at = cause.time.unwrap_or_else(Utc::now);
        lock(tx, &format!("author {}", post.author_id)).await?;
        tx.execute(
            "INSERT INTO moderation_posts (content_id, author_id, posted_at) VALUES ($1, $2, $3)
             ON CONFLICT (content_id) DO NOTHING",
            params![post.content_id.as_str(), post.author_id.as_str(), posted_at],
        )
        .await
        .map_err(&failed)?;
        let text = format!("{} {}", post.title.clone().unwrap_or_default(), post.body);
        let lower = text.to_lowercase();
        let mut verdict: Option<(&str, FlagReason, String)> = None;
        if let Some(term) = rules
            .content
            .blocked_terms
            .iter()
            .find(|t| !t.trim().is_empty() && lower.contains(&t.to_lowercase()))
        {
            verdict = Some((
                "blocked_terms",
                FlagReason::Other,
                format!("contains the blocked term `{term}`"),
            ));
        }
        let n = links(&text);
        if verdict.is_none() && n > rules.content.max_links {
            verdict = Some((
                "max_links",
                FlagReason::Spam,
                format!("{n} links, more than {}", rules.content.max_links),
            ));
        }
        if verdict.is_none() {
            let recent: i64 = tx
                .query_one(
                    "SELECT COUNT(*) AS n FROM moderation_posts
                     WHERE author_id = $1 AND posted_at > $2 AND posted_at <= $3",
                    params![
                        post.author_id.as_str(),
                        posted_at - chrono::Duration::minutes(1),
                        posted_at
                    ],
                )
                .await
                .and_then(|r| r.get("n"))
                .map_err(&failed)?;
            if recent > rules.content.max_posts_per_minute {
                verdict = Some((
                    "max_posts_per_minute",
                    FlagReason::Spam,
                    format!(
                        "{recent} posts by {} within a minute, more than {}",
                        post.author_id, rules.content.max_posts_per_minute
                    ),
                ));
            }
        }
        let id = decision_id(cause, "content");
        let event = match verdict {
            Some((rule, reason, detail)) => {
                record(
                    tx,
                    &id,
                    "content",
                    &post.content_id,
                    "flagged",
                    rule,
                    &detail,
                    cause,
                )
                .await?;
                let flagged = ContentFlagged {
                    flag_id: id.clone(),
                    target_kind: ModerationTarget::Content,
                    target_id: post.content_id.clone(),
                    source: FlagSource::Automated,
                    reporter_id: None,
                    reason,
                    note: Some(format!("rule {rule}: {detail}")),
                    flagged_at: Utc::now(),
                };
                caused_by(&flagged, SOURCE, cause, id)
            }
            None => {
                record(
                    tx,
                    &id,
                    "content",
                    &post.content_id,
                    "approved",
                    "none",
                    "no rule fired",
                    cause,
                )
                .await?;
                let approved = ModerationDecided {
                    decision_id: id.clone(),
                    flag_id: None,
                    target_kind: ModerationTarget::Content,
                    target_id: post.content_id.clone(),
                    decision: Decision::Approve,
                    moderator_id: MODERATOR.to_owned(),
                    reason: Some("no rule fired".to_owned()),
                    decided_at: Utc::now(),
                };
                caused_by(&approved, SOURCE, cause, id)
            }
        };
        Outbox::append(tx, ContentFlagged::TOPIC, &event)
            .await
            .map_err(&failed)?;
        Ok(true)
    }

    async fn order(
        &self,
        tx: &mut Transaction,
        cause: &Event,
        attempt: u32,
        order: OrderPlaced,
    ) -> Result<bool, HandlerError> {
        let failed = store_failure("moderation");
        let rules = self.rules.current();
        let f = &rules.fraud;
        let placed_at = cause.time.unwrap_or(order.placed_at);
        let total = order.total.amount_minor;
        lock(tx, &format!("customer {}", order.customer_id)).await?;
        // History before this order (in event time), then the order itself.
        let history = tx
            .query_one(
                "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(total_minor), 0) AS BIGINT) AS sum
                 FROM fraud_orders WHERE customer_id = $1 AND currency = $2 AND placed_at < $3
                 AND order_id <> $4",
                params![
                    order.customer_id.as_str(),
                    order.total.currency.as_str(),
                    placed_at,
                    order.order_id.as_str()
                ],
            )
            .await
            .map_err(&failed)?;
        let (earlier, sum): (i64, i64) = (
            history.get("n").map_err(&failed)?,
            history.get("sum").map_err(&failed)?,
        );
        tx.execute(
            "INSERT INTO fraud_orders (order_id, customer_id, total_minor, currency, placed_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (order_id) DO NOTHING",
            params![
                order.order_id.as_str(),
                order.customer_id.as_str(),
                total,
                order.total.currency.as_str(),
                placed_at
            ],
        )
        .await
        .map_err(&failed)?;
        let in_minute: i64 = tx
            .query_one(
                "SELECT COUNT(*) AS n FROM fraud_orders
                 WHERE customer_id = $1 AND placed_at > $2 AND placed_at < $3",
                params![
                    order.customer_id.as_str(),
                    placed_at - chrono::Duration::minutes(1),
                    placed_at + chrono::Duration::minutes(1)
                ],
            )
            .await
            .and_then(|r| r.get("n"))
            .map_err(&failed)?;
        let failures: i64 = tx
            .query_one(
                "SELECT COUNT(*) AS n FROM fraud_failures f JOIN fraud_orders o ON o.order_id = f.order_id
                 WHERE o.customer_id = $1 AND f.failed_at > $2 AND f.failed_at <= $3",
                params![order.customer_id.as_str(), placed_at - chrono::Duration::hours(1), placed_at],
            )
            .await
            .and_then(|r| r.get("n"))
            .map_err(&failed)?;
        let registered: Option<DateTime<Utc>> = tx
            .query_opt(
                "SELECT registered_at FROM fraud_users WHERE user_id = $1",
                params![order.customer_id.as_str()],
            )
            .await
            .map_err(&failed)?
            .map(|r| r.get("registered_at"))
            .transpose()
            .map_err(&failed)?;
        // The customer's registration travels on another topic and may come later: wait for
        // it over two redeliveries, then judge without the account's age.
        if registered.is_none() && attempt < UNKNOWN_CUSTOMER_ATTEMPTS {
            return Err(HandlerError::transient(format!(
                "order {}: customer {} not seen registered yet; judging it again shortly",
                order.order_id, order.customer_id
            )));
        }
        let verdict: Option<(&str, HoldReason, String)> = if in_minute > f.max_orders_per_minute {
            Some((
                "max_orders_per_minute",
                HoldReason::Velocity,
                format!(
                    "{in_minute} orders within a minute, more than {}",
                    f.max_orders_per_minute
                ),
            ))
        } else if earlier >= f.history_min_orders
            && earlier > 0
            && total > f.history_multiple * (sum / earlier)
        {
            Some((
                "history_multiple",
                HoldReason::ChargebackRisk,
                format!(
                    "{total} is more than {} times the average {} of {earlier} earlier orders",
                    f.history_multiple,
                    sum / earlier
                ),
            ))
        } else if failures >= f.max_failed_payments_per_hour {
            Some((
                "max_failed_payments_per_hour",
                HoldReason::StolenCard,
                format!("{failures} failed payments in the hour before"),
            ))
        } else if registered
            .is_some_and(|r| placed_at - r < chrono::Duration::minutes(f.new_account_minutes))
            && total >= f.new_account_large_order_minor
        {
            Some((
                "new_account_large_order",
                HoldReason::AccountTakeover,
                format!(
                    "an account {} minutes old ordering {total} (at least {})",
                    registered
                        .map(|r| (placed_at - r).num_minutes())
                        .unwrap_or(0),
                    f.new_account_large_order_minor
                ),
            ))
        } else {
            None
        };
        let Some((rule, reason, detail)) = verdict else {
            return Ok(false);
        };
        let id = decision_id(cause, "fraud");
        record(
            tx,
            &id,
            "order",
            &order.order_id,
            "held",
            rule,
            &detail,
            cause,
        )
        .await?;
        let hold = FraudHoldPlaced {
            hold_id: id.clone(),
            target_kind: HoldTarget::Order,
            target_id: order.order_id.clone(),
            reason_code: reason,
            risk_score: None,
            placed_at: Utc::now(),
            expires_at: None,
        };
        Outbox::append(
            tx,
            FraudHoldPlaced::TOPIC,
            &caused_by(&hold, SOURCE, cause, id),
        )
        .await
        .map_err(&failed)?;
        tracing::info!(order = %order.order_id, rule, "fraud hold placed: {detail}");
        Ok(true)
    }
}

#[async_trait]
impl Reaction for Judge {
    type Plan = Plan;

    fn plan(&self, msg: &Message) -> Result<Option<Plan>, HandlerError> {
        let event = msg.event();
        Ok(Some(match event.ty.as_str() {
            ContentPosted::TYPE => Plan::Post(payload(event)?),
            OrderPlaced::TYPE => Plan::Order(payload(event)?),
            PaymentFailed::TYPE => Plan::Failed(payload(event)?),
            UserRegistered::TYPE => Plan::Registered(payload(event)?),
            _ => return Ok(None),
        }))
    }

    async fn apply(
        &self,
        tx: &mut Transaction,
        msg: &Message,
        plan: Plan,
    ) -> Result<bool, HandlerError> {
        let failed = store_failure("moderation");
        let cause = msg.event();
        match plan {
            Plan::Post(post) => self.post(tx, cause, post).await,
            Plan::Order(order) => self.order(tx, cause, msg.attempt(), order).await,
            Plan::Failed(payment) => {
                tx.execute(
                    "INSERT INTO fraud_failures (payment_id, order_id, failed_at) VALUES ($1, $2, $3)
                     ON CONFLICT (payment_id) DO NOTHING",
                    params![payment.payment_id.as_str(), payment.order_id.as_str(), cause.time.unwrap_or(payment.failed_at)],
                )
                .await
                .map_err(&failed)?;
                Ok(false)
            }
            Plan::Registered(user) => {
                tx.execute(
                    "INSERT INTO fraud_users (user_id, registered_at) VALUES ($1, $2)
                     ON CONFLICT (user_id) DO NOTHING",
                    params![user.user_id.as_str(), user.registered_at],
                )
                .await
                .map_err(&failed)?;
                Ok(false)
            }
        }
    }
}

/// `GET /v1/moderation/decisions?target_id=`.
async fn decisions(
    State(store): State<Store>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let query = paging::query(query, &["target_id"])?;
    let target = query.get("target_id").map(|s| s.trim()).unwrap_or_default();
    if target.is_empty() {
        return Err(ApiError::invalid(
            "target_id",
            "give the id of a piece of content or an order",
        ));
    }
    let rows = store
        .query(
            "SELECT id, target_kind, target_id, decision, rule, detail, cause_event_id, decided_at
             FROM moderation_decisions WHERE target_id = $1 ORDER BY decided_at, id",
            params![target],
        )
        .await?;
    let items = rows
        .iter()
        .map(|r| {
            Ok(json!({
                "id": r.get::<String>("id")?,
                "target_kind": r.get::<String>("target_kind")?,
                "target_id": r.get::<String>("target_id")?,
                "decision": r.get::<String>("decision")?,
                "rule": r.get::<String>("rule")?,
                "detail": r.get::<String>("detail")?,
                "cause_event_id": r.get::<String>("cause_event_id")?,
                "decided_at": r.get::<DateTime<Utc>>("decided_at")?,
            }))
        })
        .collect::<Result<Vec<Value>, ApiError>>()?;
    Ok(Json(json!({"items": items})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_counted_once_each() {
        assert_eq!(
            links("see https://www.example.com and http://x.io and www.y.org"),
            3
        );
        assert_eq!(links("no links here"), 0);
    }

    #[test]
    fn rules_files_are_read_strictly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rules.json");
        std::fs::write(&path, r#"{"content": {"blocked_terms": ["spam"]}}"#).unwrap();
        let rules = Rules::load(&path).unwrap();
        assert_eq!(rules.content.blocked_terms, ["spam"]);
        assert_eq!(rules.content.max_links, ContentRules::default().max_links);
        std::fs::write(&path, r#"{"content": {"blocked_term": ["spam"]}}"#).unwrap();
        let error = Rules::load(&path).unwrap_err();
        assert!(
            error.contains("rules.json") && error.contains("blocked_term"),
            "{error}"
        );
    }
}
