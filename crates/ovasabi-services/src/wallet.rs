//! `wallet`: coin balances and their ledger: rewards credited (`coin.mined`), transfers
//! (`coin.transferred`), both on `wallet.events` with the wallet's user id as subject.
//!
//! | request | event |
//! | --- | --- |
//! | `GET /v1/wallets/{user_id}?limit=&cursor=` | — (balance and ledger entries, newest first) |
//! | `POST /v1/wallets/{user_id}/transfers` | `coin.transferred` |
//! | `POST /v1/wallets/{user_id}/spends` `{order_id, amount}` | `coin.spent` |
//!
//! # Tables (its own; it reads no other service's)
//!
//! - `wallet_balances`: one row per wallet, `balance >= 0` enforced by a `CHECK` as well.
//!   A wallet is opened by its first credit (every registered user's signup bonus) and
//!   closed when `user.deleted` arrives (no transfers to or from it afterwards).
//! - `wallet_ledger`: every movement, one row per wallet touched (a transfer writes two),
//!   with the balance after it: the balance is always the sum of the wallet's entries.
//! - `wallet_orders`: who placed each order (from `order.placed`) and what was paid for it
//!   (from `payment.completed`), since `order.shipped` names the order, not the customer or
//!   the amount.
//! - `wallet_order_coins`: per order, whether it still takes coins (closed once cancelled,
//!   refunded or held for fraud review, with the cause); `wallet_spends`: the coins spent on
//!   each order and, once given back, the refund that did it.
//!
//! # Coins spent on an order, and their compensation
//!
//! A customer spends coins on one of their orders with `POST /v1/wallets/{user_id}/spends`
//! (`coin.spent`): the wallet must have seen the order placed (404 naming `order_id` until
//! it has, moments after `POST /v1/orders`), the order must be the user's (422) and still
//! take coins (409 `order_closed`), and the balance must cover the amount (409
//! `insufficient_balance`). When the order is then cancelled (`order.cancelled`: by the
//! customer, an operator, or for want of payment after a failed one), its payment refunded
//! (`payment.refunded`), or fraud screening holds it (`fraud.hold_placed` on the order), the
//! wallet gives back every coin spent on it and not yet given back, in one `coin.refunded`
//! (reason `order_cancelled`, `payment_refunded` or `fraud_hold`; its id a UUIDv5 of the
//! cause), and the order takes no more coins. A failed payment alone refunds nothing: the
//! order can still be paid; the payment timeout cancels it if it is not. Releasing a hold
//! does not reopen the order to coins.
//!
//! A spend and a closure of the same order lock its `wallet_order_coins` row first, so on
//! PostgreSQL one waits for the other: a spend never lands on an order after its closure
//! has looked for spends to refund.
//!
//! # Balances never go negative
//!
//! A transfer locks both wallets (`SELECT … FOR UPDATE`, in user-id order so two opposite
//! transfers cannot deadlock on PostgreSQL; SQLite runs one transaction at a time), checks
//! the balance and debits in the same transaction: of two concurrent transfers that together
//! exceed the balance, the second sees the first's debit and is refused (409 naming
//! `amount`). The debit's `WHERE balance >= amount` and the `CHECK` are the last line.
//!
//! # Rewards: the `wallet` consumer
//!
//! Consumer group `wallet` on `user.events` and `commerce.events`, ordered per key (an
//! order's `order.placed` is handled before its `payment.completed`):
//!
//! - `user.registered` → [`SIGNUP_BONUS`] coins (`signup_bonus`);
//! - `order.placed` → remembers the order's customer;
//! - `payment.completed` → remembers what was paid;
//! - `order.shipped` → the order's reward, the last step of the order saga: one coin per
//!   [`MINOR_UNITS_PER_COIN`] minor units paid, in any currency, rounded down
//!   (`order_reward`); nothing under one coin. Rewarding the shipment rather than the
//!   payment means a paid order cancelled before it ships earns nothing;
//! - `user.deleted` → closes the wallet;
//! - `order.cancelled`, `payment.refunded`, `fraud.hold_placed` on an order → gives back
//!   the coins spent on the order (above);
//! - other types are acknowledged and ignored.
//!
//! Each event takes effect once: the consumer is a [`Reactor`] ([`Order::Unordered`]: each
//! credit stands alone), so in one transaction it records the event in the inbox (skipping
//! a duplicate), credits the balance with a ledger entry, and appends `coin.mined` to the
//! outbox; then it wakes the relay. The `coin.mined` event's
//! id (and its `mint_id`) is a UUIDv5 of the input's source and id, so a redelivered input
//! cannot mint twice, and even a replayed outbox row keeps its id. `coin.mined` carries
//! `causationid` = the input's id and the input's `correlationid` (or its id when it has
//! none), and continues its trace. An input whose payload does not read as its type is
//! dead-lettered at once. A payment for an order the wallet has not seen placed yet (its
//! `order.placed` redelivered behind it), or a shipment of an order it has not seen paid, is
//! retried, and dead-lettered when deliveries run out, its error naming the order.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use ovasabi_core::{Event, Ordering};
use ovasabi_events::commerce::{
    OrderCancelled, OrderPlaced, OrderShipped, PaymentCompleted, PaymentRefunded,
};
use ovasabi_events::moderation::{FraudHoldPlaced, HoldTarget};
use ovasabi_events::users::{UserDeleted, UserRegistered};
use ovasabi_events::wallet::{
    CoinMined, CoinRefundReason, CoinRefunded, CoinSpent, CoinTransferred, RewardReason,
};
use ovasabi_events::DomainEvent;
use ovasabi_middleware::correlation::stamp_correlation;
use ovasabi_middleware::{HandlerError, Message, TraceParent};
use ovasabi_store::{
    inbox::Order, params, Migration, MigrationSet, Outbox, Row, StoreError, Transaction,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::http::{Api, ApiError, RequestMeta};
use crate::reactor::{Reaction, Reactor};
use crate::runtime::{ConsumerSpec, Context, Service, ServiceError};
use crate::users::body::Body;
use crate::users::{missing, paging};

/// Where this service's events come from.
pub const SOURCE: &str = "/ovasabi/wallet";
/// The rewards consumer's group, and its inbox name.
pub const GROUP: &str = "wallet";
/// The topics the rewards consumer reads.
pub const TOPICS: &[&str] = &["user.events", "commerce.events", "moderation.events"];
/// Coins credited to every new account.
pub const SIGNUP_BONUS: u64 = 100;
/// Minor units of money paid per coin rewarded (100: one coin per dollar, euro…).
pub const MINOR_UNITS_PER_COIN: i64 = 100;
/// Longest transfer memo (the `coin.transferred` contract).
pub const MAX_MEMO: usize = 140;

/// The namespace of `coin.refunded` ids (UUIDv5 of the causing event's source and id, and
/// the order).
const REFUND_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x7a3d_51c2_94e8_4f06_b1d7_3c5e_9a20_f4b8);

/// The namespace of `coin.mined` ids (UUIDv5 of the causing event's source and id).
const MINT_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x5f0c_2a9e_8b1d_4c3a_9e7f_0a1b_2c3d_4e5f);

const MIGRATIONS: MigrationSet = MigrationSet::new(
    "wallet",
    &[
        Migration::new(
            1,
            "wallet_balances, wallet_ledger, wallet_orders",
            "CREATE TABLE wallet_balances (
            user_id TEXT PRIMARY KEY,
            balance BIGINT NOT NULL CHECK (balance >= 0),
            created_at TIMESTAMPTZ NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL,
            closed_at TIMESTAMPTZ
        );
        CREATE TABLE wallet_ledger (
            id TEXT PRIMARY KEY,
            user_id TEXT NOT NULL,
            delta BIGINT NOT NULL,
            balance_after BIGINT NOT NULL CHECK (balance_after >= 0),
            kind TEXT NOT NULL,
            reason TEXT,
            reference_id TEXT NOT NULL,
            counterparty_user_id TEXT,
            memo TEXT,
            created_at TIMESTAMPTZ NOT NULL
        );
        CREATE INDEX wallet_ledger_user ON wallet_ledger (user_id, id);
        CREATE UNIQUE INDEX wallet_ledger_movement ON wallet_ledger (reference_id, user_id, kind);
        CREATE TABLE wallet_orders (
            order_id TEXT PRIMARY KEY,
            customer_id TEXT NOT NULL,
            placed_at TIMESTAMPTZ NOT NULL
        );",
        ),
        Migration::new(
            2,
            "wallet_order_coins, wallet_spends: coins spent on orders and their refunds; wallet_orders.paid_minor",
            "ALTER TABLE wallet_orders ADD COLUMN paid_minor BIGINT;
        CREATE TABLE wallet_order_coins (
            order_id TEXT PRIMARY KEY,
            closed_reason TEXT,
            cause_event_id TEXT,
            closed_at TIMESTAMPTZ
        );
        CREATE TABLE wallet_spends (
            spend_id TEXT PRIMARY KEY,
            order_id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            amount BIGINT NOT NULL CHECK (amount > 0),
            spent_at TIMESTAMPTZ NOT NULL,
            refund_id TEXT
        );
        CREATE INDEX wallet_spends_order ON wallet_spends (order_id);",
        ),
    ],
);

/// The `wallet` service.
#[derive(Clone, Debug, Default)]
pub struct WalletService;

impl Service for WalletService {
    fn name(&self) -> &'static str {
        "wallet"
    }

    fn about(&self) -> &'static str {
        "coin balances and their ledger: rewards credited (coin.mined), transfers"
    }

    fn migrations(&self) -> MigrationSet {
        MIGRATIONS
    }

    fn consumers(&self, ctx: &Context) -> Result<Vec<ConsumerSpec>, ServiceError> {
        let topics: Vec<String> = TOPICS.iter().map(|t| (*t).to_owned()).collect();
        // Each credit stands alone (keyed by its cause): duplicates are skipped by id, order
        // does not matter.
        Ok(vec![ctx.consumer(
            "wallet",
            GROUP,
            &topics,
            Ordering::PerKey,
            Arc::new(
                Reactor::new(GROUP, Order::Unordered, ctx.store.clone(), Rewards)
                    .with_relay(ctx.api.relay.clone()),
            ),
        )?])
    }

    fn routes(&self, ctx: &Context) -> Option<Router> {
        Some(
            Router::new()
                .route("/v1/wallets/{user_id}", get(wallet))
                .route("/v1/wallets/{user_id}/transfers", post(transfer))
                .route("/v1/wallets/{user_id}/spends", post(spend))
                .with_state(ctx.api.clone()),
        )
    }

    fn openapi(&self) -> Value {
        let error = |description: &str| json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
        let user_id = json!({"name": "user_id", "in": "path", "required": true, "schema": {"type": "string"}});
        let get_parameters = paging::openapi_parameters_after(vec![user_id.clone()]);
        json!({
            "paths": {
                "/v1/wallets/{user_id}": {"get": {
                    "summary": "A wallet's balance and its ledger entries, newest first, a page at a time",
                    "parameters": get_parameters,
                    "responses": {
                        "200": {"description": "The wallet", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Wallet"}}}},
                        "404": error("The user has no wallet (yet: it opens with the signup bonus)"),
                        "422": error("`limit` or `cursor` is invalid")
                    }
                }},
                "/v1/wallets/{user_id}/transfers": {"post": {
                    "summary": "Move coins to another user's wallet (publishes coin.transferred)",
                    "parameters": [user_id, {"$ref": "#/components/parameters/IdempotencyKey"}, {"$ref": "#/components/parameters/CorrelationId"}],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Transfer"}}}},
                    "responses": {
                        "201": {"description": "Transferred", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TransferDone"}}}},
                        "404": error("The sender's wallet is closed"),
                        "409": error("The balance is below `amount` (code insufficient_balance)"),
                        "422": error("A field is invalid, or the recipient has no open wallet (field to_user_id)")
                    }
                }},
                "/v1/wallets/{user_id}/spends": {"post": {
                    "summary": "Spend coins on one of the user's orders (publishes coin.spent); they come back (coin.refunded) if the order is cancelled, refunded or held for fraud review",
                    "parameters": [{"name": "user_id", "in": "path", "required": true, "schema": {"type": "string"}}, {"$ref": "#/components/parameters/IdempotencyKey"}, {"$ref": "#/components/parameters/CorrelationId"}],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Spend"}}}},
                    "responses": {
                        "201": {"description": "Spent", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SpendDone"}}}},
                        "404": error("The wallet is closed or missing, or the wallet has not seen the order placed yet (field order_id; retry in a moment)"),
                        "409": error("The balance is below `amount` (code insufficient_balance), or the order takes no more coins (code order_closed)"),
                        "422": error("A field is invalid, or the order is another user's (field order_id)")
                    }
                }}
            },
            "schemas": {
                "Transfer": {"type": "object", "required": ["to_user_id", "amount"], "additionalProperties": false, "properties": {
                    "to_user_id": {"type": "string"},
                    "amount": {"type": "integer", "minimum": 1},
                    "memo": {"type": "string", "maxLength": MAX_MEMO}
                }},
                "TransferDone": {"type": "object", "required": ["transfer_id", "from_user_id", "to_user_id", "amount", "balance_after", "transferred_at"], "properties": {
                    "transfer_id": {"type": "string"},
                    "from_user_id": {"type": "string"},
                    "to_user_id": {"type": "string"},
                    "amount": {"type": "integer"},
                    "memo": {"type": ["string", "null"]},
                    "balance_after": {"type": "integer", "description": "The sender's balance after the transfer"},
                    "transferred_at": {"type": "string", "format": "date-time"}
                }},
                "Spend": {"type": "object", "required": ["order_id", "amount"], "additionalProperties": false, "properties": {
                    "order_id": {"type": "string"},
                    "amount": {"type": "integer", "minimum": 1}
                }},
                "SpendDone": {"type": "object", "required": ["spend_id", "user_id", "order_id", "amount", "balance_after", "spent_at"], "properties": {
                    "spend_id": {"type": "string"},
                    "user_id": {"type": "string"},
                    "order_id": {"type": "string"},
                    "amount": {"type": "integer"},
                    "balance_after": {"type": "integer"},
                    "spent_at": {"type": "string", "format": "date-time"}
                }},
                "Wallet": {"type": "object", "required": ["user_id", "balance", "closed", "entries", "next_cursor"], "properties": {
                    "user_id": {"type": "string"},
                    "balance": {"type": "integer", "minimum": 0},
                    "closed": {"type": "boolean"},
                    "entries": {"type": "array", "items": {"$ref": "#/components/schemas/LedgerEntry"}},
                    "next_cursor": {"type": ["string", "null"], "description": "Pass as `cursor` for older entries; null on the last page"}
                }},
                "LedgerEntry": {"type": "object", "required": ["id", "delta", "balance_after", "kind", "reference_id", "created_at"], "properties": {
                    "id": {"type": "string"},
                    "delta": {"type": "integer", "description": "Coins in (positive) or out (negative)"},
                    "balance_after": {"type": "integer", "minimum": 0},
                    "kind": {"type": "string", "enum": ["mined", "transfer_in", "transfer_out", "spend", "refund"]},
                    "reason": {"type": ["string", "null"], "description": "For mined coins: signup_bonus, order_reward…; for refunds: order_cancelled, payment_refunded, fraud_hold"},
                    "reference_id": {"type": "string", "description": "The mint, transfer, spend or refund id"},
                    "counterparty_user_id": {"type": ["string", "null"]},
                    "memo": {"type": ["string", "null"]},
                    "created_at": {"type": "string", "format": "date-time"}
                }}
            }
        })
    }
}

// ---------------------------------------------------------------------------------------
// HTTP

/// `POST /v1/wallets/{user_id}/transfers`. `amount` is read by hand so that a negative,
/// fractional or textual amount is answered naming the field.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct TransferRequest {
    to_user_id: String,
    amount: Value,
    #[serde(default)]
    memo: Option<String>,
}

/// A user id given in a request: 1 to 128 characters, no control characters.
pub(crate) fn check_user_id(field: &str, id: &str) -> Result<String, ApiError> {
    let id = id.trim();
    if id.is_empty() || id.len() > 128 || id.contains(char::is_control) {
        return Err(ApiError::invalid(
            field,
            "give a user id (1 to 128 characters)",
        ));
    }
    Ok(id.to_owned())
}

fn check_amount(amount: &Value) -> Result<i64, ApiError> {
    amount.as_i64().filter(|n| *n >= 1).ok_or_else(|| {
        ApiError::invalid(
            "amount",
            format!("`{amount}` is not an amount of coins: give a whole number of at least 1"),
        )
    })
}

fn insufficient(balance: i64, amount: i64) -> ApiError {
    ApiError {
        status: StatusCode::CONFLICT,
        code: "insufficient_balance",
        message: format!("the balance is {balance} coins, less than the {amount} asked for"),
        field: Some("amount".to_owned()),
    }
}

/// Takes `amount` coins from `user_id`'s wallet, locked and read as holding `balance`: 409
/// `insufficient_balance` when it holds less (the `WHERE` re-checks it, the `CHECK` is the
/// last line). The balance after.
async fn debit(
    tx: &mut Transaction,
    user_id: &str,
    balance: i64,
    amount: i64,
    now: DateTime<Utc>,
) -> Result<i64, ApiError> {
    if balance < amount {
        return Err(insufficient(balance, amount));
    }
    let debited = tx
        .execute(
            "UPDATE wallet_balances SET balance = balance - $2, updated_at = $3
             WHERE user_id = $1 AND balance >= $2",
            params![user_id, amount, now],
        )
        .await?;
    if debited != 1 {
        return Err(insufficient(balance, amount));
    }
    Ok(balance - amount)
}

async fn transfer(
    State(api): State<Api>,
    Path(from): Path<String>,
    meta: RequestMeta,
    Body(input): Body<TransferRequest>,
) -> Result<Response, ApiError> {
    let to = check_user_id("to_user_id", &input.to_user_id)?;
    if to == from {
        return Err(ApiError::invalid(
            "to_user_id",
            "a transfer goes to another user's wallet, not back to the sender's",
        ));
    }
    let amount = check_amount(&input.amount)?;
    let memo = input
        .memo
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty());
    if let Some(memo) = memo {
        if memo.chars().count() > MAX_MEMO || memo.contains(char::is_control) {
            return Err(ApiError::invalid(
                "memo",
                format!("a memo has at most {MAX_MEMO} characters, no control characters"),
            ));
        }
    }
    let memo = memo.map(str::to_owned);
    let scope = format!("POST /v1/wallets/{from}/transfers");
    api.transact(&meta, &scope, &input, move |tx| {
        Box::pin(async move {
            // Both wallets locked in user-id order: two opposite transfers wait for each
            // other instead of deadlocking.
            let rows = tx
                .db()
                .query(
                    "SELECT user_id, balance, closed_at FROM wallet_balances
                     WHERE user_id = $1 OR user_id = $2 ORDER BY user_id FOR UPDATE",
                    params![from.as_str(), to.as_str()],
                )
                .await?;
            let find = |id: &str| -> Result<Option<(i64, bool)>, ApiError> {
                for row in &rows {
                    if row.get::<String>("user_id")? == id {
                        let closed = row.get::<Option<DateTime<Utc>>>("closed_at")?.is_some();
                        return Ok(Some((row.get::<i64>("balance")?, closed)));
                    }
                }
                Ok(None)
            };
            let (balance, closed) = find(&from)?.unwrap_or((0, false));
            if closed {
                return Err(missing(
                    "user_id",
                    format!(
                    "an open wallet of user {from} (it was closed when the account was deleted)"
                )));
            }
            match find(&to)? {
                None => {
                    return Err(ApiError::invalid(
                        "to_user_id",
                        format!("user {to} has no wallet (every registered user gets one with the signup bonus)"),
                    ))
                }
                Some((_, true)) => {
                    return Err(ApiError::invalid(
                        "to_user_id",
                        format!("the wallet of user {to} is closed (the account was deleted)"),
                    ))
                }
                Some(_) => {}
            }
            let now = Utc::now();
            let sender_after = debit(tx.db(), &from, balance, amount, now).await?;
            let recipient_after = tx
                .db()
                .query_one(
                    "UPDATE wallet_balances SET balance = balance + $2, updated_at = $3
                     WHERE user_id = $1 RETURNING balance",
                    params![to.as_str(), amount, now],
                )
                .await?
                .get::<i64>("balance")?;
            let transfer_id = uuid::Uuid::now_v7().to_string();
            let entry = |user: &str, delta: i64, after: i64, kind: &'static str, other: &str| {
                Entry {
                    user_id: user.to_owned(),
                    delta,
                    balance_after: after,
                    kind,
                    reason: None,
                    reference_id: transfer_id.clone(),
                    counterparty_user_id: Some(other.to_owned()),
                    memo: memo.clone(),
                    created_at: now,
                }
            };
            entry(&from, -amount, sender_after, "transfer_out", &to)
                .insert(tx.db())
                .await?;
            entry(&to, amount, recipient_after, "transfer_in", &from)
                .insert(tx.db())
                .await?;
            tx.publish(
                &CoinTransferred {
                    transfer_id: transfer_id.clone(),
                    from_user_id: from.clone(),
                    to_user_id: to.clone(),
                    amount: amount.unsigned_abs(),
                    memo: memo.clone(),
                    transferred_at: now,
                },
                SOURCE,
            )
            .await?;
            Ok((
                StatusCode::CREATED,
                json!({
                    "transfer_id": transfer_id, "from_user_id": from, "to_user_id": to,
                    "amount": amount, "memo": memo, "balance_after": sender_after,
                    "transferred_at": now
                }),
            ))
        })
    })
    .await
}

/// `POST /v1/wallets/{user_id}/spends`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct SpendRequest {
    order_id: String,
    amount: Value,
}

/// Locks `order_id`'s `wallet_order_coins` row (creating it), so that a spend and a closure
/// of the same order take turns; returns why the order no longer takes coins, if it does not.
async fn lock_order_coins(
    tx: &mut Transaction,
    order_id: &str,
) -> Result<Option<String>, StoreError> {
    tx.execute(
        "INSERT INTO wallet_order_coins (order_id) VALUES ($1) ON CONFLICT (order_id) DO NOTHING",
        params![order_id],
    )
    .await?;
    tx.query_one(
        "SELECT closed_reason FROM wallet_order_coins WHERE order_id = $1 FOR UPDATE",
        params![order_id],
    )
    .await?
    .get("closed_reason")
}

async fn spend(
    State(api): State<Api>,
    Path(user_id): Path<String>,
    meta: RequestMeta,
    Body(input): Body<SpendRequest>,
) -> Result<Response, ApiError> {
    let order_id = check_user_id("order_id", &input.order_id)
        .map_err(|_| ApiError::invalid("order_id", "give an order id (1 to 128 characters)"))?;
    let amount = check_amount(&input.amount)?;
    let scope = format!("POST /v1/wallets/{user_id}/spends");
    api.transact(&meta, &scope, &input, move |tx| {
        Box::pin(async move {
            let closed = lock_order_coins(tx.db(), &order_id).await?;
            let customer = tx
                .db()
                .query_opt(
                    "SELECT customer_id FROM wallet_orders WHERE order_id = $1",
                    params![order_id.as_str()],
                )
                .await?;
            let Some(customer) = customer else {
                return Err(missing(
                    "order_id",
                    format!("an order {order_id} known to the wallet (it learns of an order moments after it is placed: try again shortly)"),
                ));
            };
            if customer.get::<String>("customer_id")? != user_id {
                return Err(ApiError::invalid(
                    "order_id",
                    format!("order {order_id} was placed by another user: coins are spent on one's own orders"),
                ));
            }
            if let Some(reason) = closed {
                return Err(ApiError::with(
                    StatusCode::CONFLICT,
                    "order_closed",
                    format!("order {order_id} takes no more coins: {}", closed_because(&reason)),
                ));
            }
            let wallet = tx
                .db()
                .query_opt(
                    "SELECT balance, closed_at FROM wallet_balances WHERE user_id = $1 FOR UPDATE",
                    params![user_id.as_str()],
                )
                .await?;
            let balance = match wallet {
                None => 0,
                Some(row) if row.get::<Option<DateTime<Utc>>>("closed_at")?.is_some() => {
                    return Err(missing(
                        "user_id",
                        format!("an open wallet of user {user_id} (it was closed when the account was deleted)"),
                    ))
                }
                Some(row) => row.get::<i64>("balance")?,
            };
            let now = Utc::now();
            let balance_after = debit(tx.db(), &user_id, balance, amount, now).await?;
            let spend_id = uuid::Uuid::now_v7().to_string();
            Entry {
                user_id: user_id.clone(),
                delta: -amount,
                balance_after,
                kind: "spend",
                reason: None,
                reference_id: spend_id.clone(),
                counterparty_user_id: None,
                memo: Some(format!("order {order_id}")),
                created_at: now,
            }
            .insert(tx.db())
            .await?;
            tx.db()
                .execute(
                    "INSERT INTO wallet_spends (spend_id, order_id, user_id, amount, spent_at)
                     VALUES ($1, $2, $3, $4, $5)",
                    params![spend_id.as_str(), order_id.as_str(), user_id.as_str(), amount, now],
                )
                .await?;
            tx.publish(
                &CoinSpent {
                    spend_id: spend_id.clone(),
                    user_id: user_id.clone(),
                    order_id: order_id.clone(),
                    amount: amount.unsigned_abs(),
                    balance_after: balance_after.unsigned_abs(),
                    spent_at: now,
                },
                SOURCE,
            )
            .await?;
            Ok((
                StatusCode::CREATED,
                json!({
                    "spend_id": spend_id, "user_id": user_id, "order_id": order_id,
                    "amount": amount, "balance_after": balance_after, "spent_at": now
                }),
            ))
        })
    })
    .await
}

/// Why an order no longer takes coins, from its `closed_reason`.
fn closed_because(reason: &str) -> &'static str {
    match reason {
        "order_cancelled" => "it was cancelled",
        "payment_refunded" => "its payment was refunded",
        "fraud_hold" => "it is held for fraud review",
        _ => "it was closed",
    }
}

/// `GET /v1/wallets/{user_id}?limit=&cursor=`.
async fn wallet(
    State(api): State<Api>,
    Path(user_id): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let query = paging::query(query, &["limit", "cursor"])?;
    let page = paging::request(&query)?;
    let row = api
        .store
        .query_opt(
            "SELECT balance, closed_at FROM wallet_balances WHERE user_id = $1",
            params![user_id.as_str()],
        )
        .await?
        .ok_or_else(|| {
            missing(
                "user_id",
                format!(
                "a wallet of user {user_id} (it opens with the signup bonus, moments after registration)"
            ))
        })?;
    let balance: i64 = row.get("balance")?;
    let closed = row.get::<Option<DateTime<Utc>>>("closed_at")?.is_some();
    const COLUMNS: &str = "id, delta, balance_after, kind, reason, reference_id, counterparty_user_id, memo, created_at";
    let rows = match &page.after {
        None => {
            api.store
                .query(
                    &format!("SELECT {COLUMNS} FROM wallet_ledger WHERE user_id = $1 ORDER BY id DESC LIMIT $2"),
                    params![user_id.as_str(), page.fetch()],
                )
                .await?
        }
        Some(after) => {
            api.store
                .query(
                    &format!("SELECT {COLUMNS} FROM wallet_ledger WHERE user_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"),
                    params![user_id.as_str(), after.as_str(), page.fetch()],
                )
                .await?
        }
    };
    let items = rows
        .iter()
        .map(|row| Ok((row.get::<String>("id")?, entry_json(row)?)))
        .collect::<Result<Vec<_>, ApiError>>()?;
    let answer = paging::answer(&page, items);
    Ok(Json(json!({
        "user_id": user_id,
        "balance": balance,
        "closed": closed,
        "entries": answer["items"],
        "next_cursor": answer["next_cursor"],
    })))
}

fn entry_json(row: &Row) -> Result<Value, ApiError> {
    Ok(json!({
        "id": row.get::<String>("id")?,
        "delta": row.get::<i64>("delta")?,
        "balance_after": row.get::<i64>("balance_after")?,
        "kind": row.get::<String>("kind")?,
        "reason": row.get::<Option<String>>("reason")?,
        "reference_id": row.get::<String>("reference_id")?,
        "counterparty_user_id": row.get::<Option<String>>("counterparty_user_id")?,
        "memo": row.get::<Option<String>>("memo")?,
        "created_at": row.get::<DateTime<Utc>>("created_at")?,
    }))
}

/// One ledger row.
struct Entry {
    user_id: String,
    delta: i64,
    balance_after: i64,
    kind: &'static str,
    reason: Option<&'static str>,
    reference_id: String,
    counterparty_user_id: Option<String>,
    memo: Option<String>,
    created_at: DateTime<Utc>,
}

impl Entry {
    async fn insert(&self, tx: &mut Transaction) -> Result<(), StoreError> {
        tx.execute(
            "INSERT INTO wallet_ledger (id, user_id, delta, balance_after, kind, reason,
                 reference_id, counterparty_user_id, memo, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            params![
                uuid::Uuid::now_v7().to_string(),
                self.user_id.as_str(),
                self.delta,
                self.balance_after,
                self.kind,
                self.reason,
                self.reference_id.as_str(),
                self.counterparty_user_id.as_deref(),
                self.memo.as_deref(),
                self.created_at
            ],
        )
        .await?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// The rewards consumer, and what consumers publishing through the outbox share.

/// `event`'s payload as `E`, or a permanent failure (dead-lettered at once) saying why.
pub(crate) fn payload<E: DomainEvent>(event: &Event) -> Result<E, HandlerError> {
    let data = event.data_json().ok_or_else(|| {
        HandlerError::invalid_payload(format!(
            "{} {} from {}: the payload is missing or not JSON (datacontenttype {:?}); expected {} v{} as JSON",
            event.ty,
            event.id,
            event.source,
            event.datacontenttype.as_deref().unwrap_or("absent"),
            E::TYPE,
            E::VERSION
        ))
    })?;
    serde_json::from_value(data).map_err(|e| {
        HandlerError::invalid_payload(format!(
            "{} {} from {}: the payload does not read as {} v{}: {e}",
            event.ty,
            event.id,
            event.source,
            E::TYPE,
            E::VERSION
        ))
    })
}

/// A database failure inside a handler: transient (the bus redelivers meanwhile).
pub(crate) fn store_failure(service: &str) -> impl Fn(StoreError) -> HandlerError + '_ {
    move |e| HandlerError::transient(format!("{service} database: {e}"))
}

/// `payload`'s event as a consequence of `cause`, to append to the outbox: id `id`
/// (derived from the cause's, so a redelivery rebuilds the same event), `causationid` =
/// the cause's id, the cause's `correlationid` (its id if it has none), and a child of its
/// trace context (the current span, when OpenTelemetry is on: see
/// [`ovasabi_middleware::otel::caused_by`]).
pub(crate) fn caused_by<E: DomainEvent>(
    payload: &E,
    source: &str,
    cause: &Event,
    id: String,
) -> Event {
    let mut event = payload.to_event(source).with_id(id);
    if let Some(parent) = cause.traceparent().and_then(TraceParent::parse) {
        event = event.with_extension(
            "traceparent",
            ovasabi_middleware::otel::caused_by(&parent).to_string(),
        );
    }
    stamp_correlation(cause, &mut event);
    event
}

/// The id of the `coin.mined` caused by `cause` (also its `mint_id`).
pub fn mint_id(cause: &Event) -> String {
    uuid::Uuid::new_v5(
        &MINT_NAMESPACE,
        format!("coin.mined\n{}\n{}", cause.source, cause.id).as_bytes(),
    )
    .to_string()
}

/// Credits rewards, remembers orders' customers, closes deleted users' wallets.
struct Rewards;

/// What an input event asks of the wallet, read before the transaction starts (so an
/// unreadable payload touches nothing).
enum Action {
    /// Credit a reward.
    Mint {
        user_id: String,
        amount: i64,
        reason: RewardReason,
    },
    /// Remember what was paid for an order.
    RecordPayment { order_id: String, paid_minor: i64 },
    /// Reward a shipped order's customer, found in `wallet_orders` with what was paid.
    RewardShipment { order_id: String },
    /// Remember an order's customer.
    RememberOrder {
        order_id: String,
        customer_id: String,
        placed_at: DateTime<Utc>,
    },
    /// Close a deleted user's wallet.
    Close {
        user_id: String,
        deleted_at: DateTime<Utc>,
    },
    /// Give back the coins spent on an order, which takes no more.
    RefundOrder {
        order_id: String,
        reason: CoinRefundReason,
    },
}

impl Action {
    /// What `event` asks for, `None` for types the wallet ignores.
    fn of(event: &Event) -> Result<Option<Action>, HandlerError> {
        Ok(Some(match event.ty.as_str() {
            UserRegistered::TYPE => {
                let registered: UserRegistered = payload(event)?;
                Action::Mint {
                    user_id: registered.user_id,
                    amount: i64::try_from(SIGNUP_BONUS).unwrap_or(i64::MAX),
                    reason: RewardReason::SignupBonus,
                }
            }
            UserDeleted::TYPE => {
                let deleted: UserDeleted = payload(event)?;
                Action::Close {
                    user_id: deleted.user_id,
                    deleted_at: deleted.deleted_at,
                }
            }
            OrderPlaced::TYPE => {
                let order: OrderPlaced = payload(event)?;
                Action::RememberOrder {
                    order_id: order.order_id,
                    customer_id: order.customer_id,
                    placed_at: order.placed_at,
                }
            }
            PaymentCompleted::TYPE => {
                let payment: PaymentCompleted = payload(event)?;
                Action::RecordPayment {
                    order_id: payment.order_id,
                    paid_minor: payment.amount.amount_minor,
                }
            }
            OrderShipped::TYPE => Action::RewardShipment {
                order_id: payload::<OrderShipped>(event)?.order_id,
            },
            OrderCancelled::TYPE => Action::RefundOrder {
                order_id: payload::<OrderCancelled>(event)?.order_id,
                reason: CoinRefundReason::OrderCancelled,
            },
            PaymentRefunded::TYPE => Action::RefundOrder {
                order_id: payload::<PaymentRefunded>(event)?.order_id,
                reason: CoinRefundReason::PaymentRefunded,
            },
            FraudHoldPlaced::TYPE => {
                let hold: FraudHoldPlaced = payload(event)?;
                if hold.target_kind != HoldTarget::Order {
                    return Ok(None);
                }
                Action::RefundOrder {
                    order_id: hold.target_id,
                    reason: CoinRefundReason::FraudHold,
                }
            }
            _ => return Ok(None),
        }))
    }
}

impl Rewards {
    /// Carries out `action` in `tx`; whether it appended to the outbox.
    async fn carry_out(
        &self,
        tx: &mut Transaction,
        cause: &Event,
        action: Action,
    ) -> Result<bool, HandlerError> {
        let failed = store_failure("wallet");
        match action {
            Action::Mint {
                user_id,
                amount,
                reason,
            } => mint(tx, cause, &user_id, amount, reason).await,
            Action::RecordPayment {
                order_id,
                paid_minor,
            } => {
                let known = tx
                    .execute(
                        "UPDATE wallet_orders SET paid_minor = $2 WHERE order_id = $1",
                        params![order_id.as_str(), paid_minor],
                    )
                    .await
                    .map_err(&failed)?;
                if known == 0 {
                    return Err(HandlerError::transient(format!(
                        "payment.completed {} for order {order_id}: the wallet has not seen that order placed, so it cannot reward its shipment later; if this persists, replay the order's order.placed, then redrive this event",
                        cause.id
                    )));
                }
                Ok(false)
            }
            Action::RewardShipment { order_id } => {
                let order = tx
                    .query_opt(
                        "SELECT customer_id, paid_minor FROM wallet_orders WHERE order_id = $1",
                        params![order_id.as_str()],
                    )
                    .await
                    .map_err(&failed)?;
                let paid = match &order {
                    Some(row) => row.get::<Option<i64>>("paid_minor").map_err(&failed)?,
                    None => None,
                };
                let (Some(order), Some(paid)) = (order, paid) else {
                    return Err(HandlerError::transient(format!(
                        "order.shipped {} for order {order_id}: the wallet has not seen that order placed and paid, so it cannot tell whom to reward, nor how much; if this persists, replay the order's order.placed and payment.completed, then redrive this event",
                        cause.id
                    )));
                };
                let coins = paid / MINOR_UNITS_PER_COIN;
                if coins < 1 {
                    return Ok(false);
                }
                let customer: String = order.get("customer_id").map_err(&failed)?;
                mint(tx, cause, &customer, coins, RewardReason::OrderReward).await
            }
            Action::RememberOrder {
                order_id,
                customer_id,
                placed_at,
            } => {
                tx.execute(
                    "INSERT INTO wallet_orders (order_id, customer_id, placed_at)
                     VALUES ($1, $2, $3) ON CONFLICT (order_id) DO NOTHING",
                    params![order_id.as_str(), customer_id.as_str(), placed_at],
                )
                .await
                .map_err(&failed)?;
                Ok(false)
            }
            Action::Close {
                user_id,
                deleted_at,
            } => {
                // A deletion that overtakes the registration still closes the wallet: the
                // bonus minted afterwards lands in a closed wallet, as in order.
                tx.execute(
                    "INSERT INTO wallet_balances (user_id, balance, created_at, updated_at, closed_at)
                     VALUES ($1, 0, $2, $2, $2)
                     ON CONFLICT (user_id) DO UPDATE
                         SET closed_at = $2, updated_at = $2
                         WHERE wallet_balances.closed_at IS NULL",
                    params![user_id.as_str(), deleted_at],
                )
                .await
                .map_err(&failed)?;
                Ok(false)
            }
            Action::RefundOrder { order_id, reason } => {
                refund_order(tx, cause, &order_id, reason).await
            }
        }
    }
}

/// The id of the `coin.refunded` that `cause` gives `user_id` for `order_id`.
fn refund_id(cause: &Event, order_id: &str, user_id: &str) -> String {
    uuid::Uuid::new_v5(
        &REFUND_NAMESPACE,
        format!(
            "coin.refunded\n{}\n{}\n{order_id}\n{user_id}",
            cause.source, cause.id
        )
        .as_bytes(),
    )
    .to_string()
}

/// Closes `order_id` to coins and gives back what was spent on it and not given back yet:
/// per customer (there is one) a credit, its ledger entry and `coin.refunded`, in `tx`.
/// The first closure of an order is the one recorded; a later one finds nothing to give.
async fn refund_order(
    tx: &mut Transaction,
    cause: &Event,
    order_id: &str,
    reason: CoinRefundReason,
) -> Result<bool, HandlerError> {
    let failed = store_failure("wallet");
    if lock_order_coins(tx, order_id)
        .await
        .map_err(&failed)?
        .is_some()
    {
        return Ok(false);
    }
    let reason_text = match reason {
        CoinRefundReason::OrderCancelled => "order_cancelled",
        CoinRefundReason::PaymentRefunded => "payment_refunded",
        CoinRefundReason::FraudHold => "fraud_hold",
    };
    let now = Utc::now();
    tx.execute(
        "UPDATE wallet_order_coins SET closed_reason = $2, cause_event_id = $3, closed_at = $4
         WHERE order_id = $1",
        params![order_id, reason_text, cause.id.as_str(), now],
    )
    .await
    .map_err(&failed)?;
    let owed = tx
        .query(
            "SELECT user_id, CAST(SUM(amount) AS BIGINT) AS amount FROM wallet_spends
             WHERE order_id = $1 AND refund_id IS NULL GROUP BY user_id ORDER BY user_id",
            params![order_id],
        )
        .await
        .map_err(&failed)?;
    let mut published = false;
    for row in owed {
        let user_id: String = row.get("user_id").map_err(&failed)?;
        let amount: i64 = row.get("amount").map_err(&failed)?;
        let id = refund_id(cause, order_id, &user_id);
        let balance: i64 = tx
            .query_one(
                "UPDATE wallet_balances SET balance = balance + $2, updated_at = $3
                 WHERE user_id = $1 RETURNING balance",
                params![user_id.as_str(), amount, now],
            )
            .await
            .and_then(|row| row.get("balance"))
            .map_err(&failed)?;
        Entry {
            user_id: user_id.clone(),
            delta: amount,
            balance_after: balance,
            kind: "refund",
            reason: Some(reason_text),
            reference_id: id.clone(),
            counterparty_user_id: None,
            memo: Some(format!("order {order_id}")),
            created_at: now,
        }
        .insert(tx)
        .await
        .map_err(&failed)?;
        tx.execute(
            "UPDATE wallet_spends SET refund_id = $3
             WHERE order_id = $1 AND user_id = $2 AND refund_id IS NULL",
            params![order_id, user_id.as_str(), id.as_str()],
        )
        .await
        .map_err(&failed)?;
        let refunded = CoinRefunded {
            refund_id: id.clone(),
            user_id,
            order_id: order_id.to_owned(),
            amount: amount.unsigned_abs(),
            reason,
            cause_event_id: cause.id.clone(),
            balance_after: balance.unsigned_abs(),
            refunded_at: now,
        };
        let event = caused_by(&refunded, SOURCE, cause, id);
        Outbox::append(tx, CoinRefunded::TOPIC, &event)
            .await
            .map_err(&failed)?;
        published = true;
    }
    Ok(published)
}

/// Credits `amount` coins to `user_id` for `cause`, with its ledger entry and `coin.mined`
/// in the outbox, all in `tx`. Returns `true` (it appended to the outbox).
async fn mint(
    tx: &mut Transaction,
    cause: &Event,
    user_id: &str,
    amount: i64,
    reason: RewardReason,
) -> Result<bool, HandlerError> {
    let failed = store_failure("wallet");
    let now = Utc::now();
    let balance: i64 = tx
        .query_one(
            "INSERT INTO wallet_balances (user_id, balance, created_at, updated_at)
             VALUES ($1, $2, $3, $3)
             ON CONFLICT (user_id) DO UPDATE
                 SET balance = wallet_balances.balance + excluded.balance,
                     updated_at = excluded.updated_at
             RETURNING balance",
            params![user_id, amount, now],
        )
        .await
        .and_then(|row| row.get("balance"))
        .map_err(&failed)?;
    let id = mint_id(cause);
    let reason_text = match reason {
        RewardReason::SignupBonus => "signup_bonus",
        RewardReason::OrderReward => "order_reward",
        RewardReason::PostReward => "post_reward",
        RewardReason::ReferralBonus => "referral_bonus",
    };
    Entry {
        user_id: user_id.to_owned(),
        delta: amount,
        balance_after: balance,
        kind: "mined",
        reason: Some(reason_text),
        reference_id: id.clone(),
        counterparty_user_id: None,
        memo: None,
        created_at: now,
    }
    .insert(tx)
    .await
    .map_err(&failed)?;
    let mined = CoinMined {
        mint_id: id.clone(),
        user_id: user_id.to_owned(),
        amount: amount.unsigned_abs(),
        reason,
        cause_event_id: cause.id.clone(),
        balance_after: Some(balance.unsigned_abs()),
        mined_at: now,
    };
    let event = caused_by(&mined, SOURCE, cause, id);
    Outbox::append(tx, CoinMined::TOPIC, &event)
        .await
        .map_err(&failed)?;
    Ok(true)
}

#[async_trait]
impl Reaction for Rewards {
    type Plan = Action;

    fn plan(&self, msg: &Message) -> Result<Option<Action>, HandlerError> {
        Action::of(msg.event())
    }

    async fn apply(
        &self,
        tx: &mut Transaction,
        msg: &Message,
        action: Action,
    ) -> Result<bool, HandlerError> {
        // coin.mined goes out through the outbox (committed with the credit).
        self.carry_out(tx, msg.event(), action).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mint_id_depends_on_the_cause_alone() {
        let a = Event::new("user.registered", "/ovasabi/users").with_id("e1");
        let b = a.clone().with_extension("correlationid", "c");
        let c = Event::new("user.registered", "/elsewhere").with_id("e1");
        assert_eq!(mint_id(&a), mint_id(&b));
        assert_ne!(mint_id(&a), mint_id(&c));
    }

    #[test]
    fn caused_events_carry_causation_correlation_and_trace() {
        let cause = Event::new("user.registered", "/ovasabi/users")
            .with_id("e1")
            .with_extension("correlationid", "corr")
            .with_extension(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            );
        let mined = CoinMined::examples().remove(0);
        let event = caused_by(&mined, SOURCE, &cause, "m1".to_owned());
        assert_eq!(event.id, "m1");
        assert_eq!(event.causation_id(), Some("e1"));
        assert_eq!(event.correlation_id(), Some("corr"));
        let trace = event.traceparent().unwrap();
        assert!(
            trace.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
            "{trace}"
        );
        assert!(!trace.contains("b7ad6b7169203331"), "{trace}");
    }

    #[test]
    fn unreadable_payloads_are_permanent() {
        let event = Event::new("user.registered", "/x").with_json(&json!({"user_id": 5}));
        let error = payload::<UserRegistered>(&event).unwrap_err();
        assert!(error.is_permanent());
        assert!(error.message().contains("user.registered v3"), "{error}");
    }
}
