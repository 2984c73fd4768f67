//! `commerce`: orders and payments: place, pay (pluggable provider), refund, ship, cancel.
//!
//! Owns tables `orders` and `order_payment_attempts`. Every change and its event commit in
//! one transaction ([`Api::transact`]), once per `Idempotency-Key` (scoped by method and
//! path); the outbox relay publishes the events on `commerce.events` with the order id as
//! subject and partition key, so one order's events arrive in the order they committed
//! (`order.placed` → `payment.completed` → `order.shipped`).
//!
//! | request | event | answer |
//! | --- | --- | --- |
//! | `POST /v1/orders` | `order.placed` (v2) | 201, the order |
//! | `POST /v1/orders/{id}/pay` `{method?}` | `payment.completed` or `payment.failed` | 200 `{order, payment}`, or 402 `{error, order, payment}` when declined |
//! | `POST /v1/orders/{id}/refund` `{reason?}` | `payment.refunded` | 200 `{order, refund}` |
//! | `POST /v1/orders/{id}/ship` `{carrier?, tracking?, tracking_url?, estimated_delivery?}` | `order.shipped` | 200, the order |
//! | `POST /v1/orders/{id}/cancel` `{cancelled_by?, reason?}` | `order.cancelled` | 200, the order |
//! | `GET /v1/orders/{id}` | — | the order with its payment attempts |
//! | `GET /v1/orders?customer_id=&limit=&cursor=` | — | newest first, `{items, next_cursor}` |
//!
//! # Orders
//!
//! The total is computed here: the sum of `quantity × unit_price` over the items, less the
//! coupon's discount (the only coupon is `WELCOME10`, 10 % off, rounded down in the
//! customer's favour of the merchant: the discount is `subtotal × 10 / 100` in whole minor
//! units). An order has one currency; quantities are 1 to [`MAX_QUANTITY`]; the total must
//! be above zero. Every refusal is a 422 naming the field by its path
//! (`items[1].quantity`, `shipping_address.country`), also for a body that does not parse.
//!
//! # State machine
//!
//! ```text
//!           pay: captured             ship
//!  placed ────────────────▶ paid ─────────────▶ shipped
//!   │  ▲                     │  │                   │
//!   │  └ pay: declined       │  └ refund ─▶ refunded ◀─ refund
//!   │    (stays placed)      │
//!   └ cancel ─▶ cancelled ◀──┘ cancel (refund_due = total; a refund may follow,
//!                                       the order stays cancelled)
//! ```
//!
//! - **pay** only from `placed`; a declined payment leaves the order `placed`, payable
//!   again.
//! - **ship** only from `paid`.
//! - **refund** (always the full total) only when paid and not yet refunded: from `paid`
//!   and `shipped` (→ `refunded`), and from `cancelled` when the order had been paid (it
//!   stays `cancelled`; the refund is recorded on it, reason `order_cancelled` by default).
//! - **cancel** from `placed` and from `paid`, never after shipping. Cancelling a paid order
//!   does not wait for the money: `order.cancelled` carries `refund_due` (what the schema
//!   has it for), and `POST …/refund` returns the money. We chose this over "refund first"
//!   so that cancelling stops shipping at once, whatever the provider does.
//! - Anything else is a 409 whose code is `invalid_state` and whose message names the
//!   current state (`order … is shipped: …`). While a payment operation is in flight every
//!   transition is a 409 `payment_in_progress`.
//!
//! # Payments: the provider is called outside any transaction
//!
//! A provider call can take seconds; inside a transaction it would hold the order's row
//! lock (PostgreSQL) or the only writer (SQLite) all that time. So paying (and refunding)
//! takes three steps:
//!
//! 1. **Claim** (a short transaction): lock the order, check it is payable, record a
//!    *pending* attempt in `order_payment_attempts` (its id is the `payment_id`) and mark the
//!    order as having it in flight for [`PENDING_LEASE`]. A second pay meanwhile gets 409
//!    `payment_in_progress` instead of charging again.
//! 2. **Call** the [`PaymentProvider`] with the attempt's id, no transaction open (bounded
//!    by [`PROVIDER_TIMEOUT`]).
//! 3. **Record** (in [`Api::transact`]): lock the order, check the attempt is still the one
//!    in flight, write the outcome and its event (`payment.completed` / `payment.failed` /
//!    `payment.refunded`) and the idempotent answer together.
//!
//! A retry with the same `Idempotency-Key` finds its attempt: decided → the stored answer,
//! no provider call; still pending (the provider did not answer, or the process died
//! between 2 and 3) → the provider is called again **with the same payment id**, which a
//! provider must treat as the same charge (its idempotency key), so nobody is charged
//! twice. A pending attempt whose lease ran out is resumed the same way by the next pay of
//! the order, whatever its key. A provider that does not answer gives 503
//! `provider_unavailable` and gives the lease up at once.
//!
//! # The default provider
//!
//! [`FakeProvider`] decides by the last two digits of the amount (in minor units), so tests
//! and demos can trigger every outcome: `…13` card_declined, `…14` insufficient_funds,
//! `…15` expired_card, `…16` authentication_failed, `…17` fraud_suspected, `…18`
//! processor_error (see [`FakeProvider::decline_for`]); anything else is captured.
//! (Not `…99`: too many real prices end that way.) Refunds always succeed.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, NaiveDate, SubsecRound, Utc};
use ovasabi_events::commerce::{
    Address, CancelledBy, LineItem, OrderCancelled, OrderPlaced, OrderShipped, PaymentCompleted,
    PaymentFailed, PaymentFailureReason, PaymentMethod, PaymentRefunded, RefundReason,
};
use ovasabi_events::moderation::{FraudHoldPlaced, FraudHoldReleased, HoldTarget};
use ovasabi_events::DomainEvent as _;
use ovasabi_events::Money;
use ovasabi_middleware::{HandlerError, Message};
use ovasabi_store::inbox::Order as InboxOrder;
use ovasabi_store::{params, Migration, MigrationSet, Row, Transaction, Value as SqlValue};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::http::{Answer, Api, ApiError, RequestMeta, Tx};
use crate::reactor::{Reaction, Reactor};
use crate::runtime::{ConsumerSpec, Context, Service, ServiceError, Task};
use crate::users::{check_url, paging};
use crate::wallet::{payload, store_failure};
use tokio_util::sync::CancellationToken;

/// Where this service's events come from.
pub const SOURCE: &str = "/ovasabi/commerce";
/// Most lines in one order.
pub const MAX_ITEMS: usize = 100;
/// Most units on one line.
pub const MAX_QUANTITY: i64 = 1_000_000;
/// How long a claimed payment attempt keeps other payments of the order out.
pub const PENDING_LEASE: Duration = Duration::from_secs(60);
/// How long a provider call may take before it counts as unanswered.
pub const PROVIDER_TIMEOUT: Duration = Duration::from_secs(20);

/// The coupons the service knows, with their percentage off.
const COUPONS: &[(&str, i64)] = &[("WELCOME10", 10)];

const MIGRATIONS: MigrationSet = MigrationSet::new(
    "commerce",
    &[
        Migration::new(
            1,
            "orders and payment attempts",
            "CREATE TABLE orders (
            id TEXT PRIMARY KEY,
            customer_id TEXT NOT NULL,
            status TEXT NOT NULL,
            currency TEXT NOT NULL,
            subtotal_minor BIGINT NOT NULL,
            discount_minor BIGINT NOT NULL,
            total_minor BIGINT NOT NULL,
            coupon_code TEXT,
            items TEXT NOT NULL,
            shipping_address TEXT NOT NULL,
            payment TEXT,
            shipment TEXT,
            refund TEXT,
            cancellation TEXT,
            pending_attempt_id TEXT,
            pending_until TIMESTAMPTZ,
            placed_at TIMESTAMPTZ NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL
        );
        CREATE INDEX orders_customer ON orders (customer_id, id);
        CREATE TABLE order_payment_attempts (
            id TEXT PRIMARY KEY,
            order_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            idempotency_key TEXT,
            method TEXT NOT NULL,
            amount_minor BIGINT NOT NULL,
            currency TEXT NOT NULL,
            refund_reason TEXT,
            status TEXT NOT NULL,
            failure_reason TEXT,
            message TEXT,
            retryable BOOLEAN,
            provider_reference TEXT,
            provider_calls BIGINT NOT NULL,
            started_at TIMESTAMPTZ NOT NULL,
            finished_at TIMESTAMPTZ
        );
        CREATE UNIQUE INDEX order_payment_attempts_key
            ON order_payment_attempts (order_id, kind, idempotency_key);
        CREATE INDEX order_payment_attempts_order ON order_payment_attempts (order_id, id);",
        ),
        Migration::new(
            2,
            "commerce_holds",
            "CREATE TABLE commerce_holds (
            order_id TEXT PRIMARY KEY,
            hold_id TEXT NOT NULL,
            reason TEXT NOT NULL,
            state TEXT NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL
        );",
        ),
        Migration::per_backend(
            3,
            "order_history",
            "CREATE TABLE order_history (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            order_id TEXT NOT NULL,
            event_type TEXT NOT NULL,
            event_id TEXT NOT NULL,
            at TIMESTAMPTZ NOT NULL,
            detail TEXT,
            UNIQUE (order_id, event_id)
        );",
            "CREATE TABLE order_history (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            order_id TEXT NOT NULL,
            event_type TEXT NOT NULL,
            event_id TEXT NOT NULL,
            at TIMESTAMPTZ NOT NULL,
            detail TEXT,
            UNIQUE (order_id, event_id)
        );",
        ),
    ],
);

/// The consumer group reading fraud holds, and its inbox name.
pub const GROUP: &str = "commerce";

// ---------------------------------------------------------------------------------------
// The payment provider
// ---------------------------------------------------------------------------------------

/// A charge the service asks a [`PaymentProvider`] to capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChargeRequest {
    /// Our id of the attempt (the `payment_id` of its event). The provider must treat a
    /// repeated id as the same charge — its idempotency key — since an attempt whose
    /// outcome was lost is resumed with the same id.
    pub payment_id: String,
    /// The order paid for.
    pub order_id: String,
    /// Who pays.
    pub customer_id: String,
    /// How much: the order's total.
    pub amount: Money,
    /// How.
    pub method: PaymentMethod,
}

/// What the provider decided about a charge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// The money was captured.
    Captured {
        /// The provider's reference for the charge.
        provider_reference: Option<String>,
    },
    /// The charge was refused; nothing was captured.
    Declined {
        /// Why.
        reason: PaymentFailureReason,
        /// The provider's explanation, for people.
        message: Option<String>,
        /// Whether trying again with the same method may succeed.
        retryable: bool,
    },
}

/// A refund the service asks a [`PaymentProvider`] to make: always the whole payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundRequest {
    /// Our id of the refund; like [`ChargeRequest::payment_id`], repeated when resumed.
    pub refund_id: String,
    /// The payment refunded.
    pub payment_id: String,
    /// The provider's reference of that payment, if it gave one.
    pub payment_reference: Option<String>,
    /// The order.
    pub order_id: String,
    /// How much.
    pub amount: Money,
    /// Why.
    pub reason: RefundReason,
}

/// What the provider decided about a refund.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefundOutcome {
    /// The money is on its way back.
    Refunded {
        /// The provider's reference for the refund.
        provider_reference: Option<String>,
    },
    /// The provider refused; nothing was returned.
    Refused {
        /// Why, for people.
        message: String,
    },
}

/// The provider could not be reached or did not answer: whether the operation took effect
/// is unknown, so it is retried with the same ids.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the payment provider is unavailable: {0}")]
pub struct ProviderUnavailable(pub String);

/// Charges and refunds money. Both calls must be idempotent by the ids passed
/// ([`ChargeRequest::payment_id`], [`RefundRequest::refund_id`]): called again with the same
/// id after a lost answer, a provider returns the first outcome and moves no money again.
#[async_trait]
pub trait PaymentProvider: Send + Sync {
    /// Captures `request.amount`, or says why not.
    async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, ProviderUnavailable>;
    /// Returns `request.amount` to the customer, or says why not.
    async fn refund(&self, request: &RefundRequest) -> Result<RefundOutcome, ProviderUnavailable>;
}

/// A deterministic provider for development and tests, moving no money: the outcome
/// follows from the amount (see [`FakeProvider::decline_for`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct FakeProvider;

impl FakeProvider {
    /// The decline (reason, retryable) for an amount in minor units, by its last two
    /// digits: 13 card_declined, 14 insufficient_funds, 15 expired_card, 16
    /// authentication_failed, 17 fraud_suspected, 18 processor_error; `None` (captured)
    /// otherwise.
    pub fn decline_for(amount_minor: i64) -> Option<(PaymentFailureReason, bool)> {
        use PaymentFailureReason::*;
        Some(match amount_minor.rem_euclid(100) {
            13 => (CardDeclined, false),
            14 => (InsufficientFunds, true),
            15 => (ExpiredCard, false),
            16 => (AuthenticationFailed, true),
            17 => (FraudSuspected, false),
            18 => (ProcessorError, true),
            _ => return None,
        })
    }

    /// The outcome of charging `amount_minor`.
    pub fn outcome(payment_id: &str, amount_minor: i64) -> ChargeOutcome {
        match Self::decline_for(amount_minor) {
            None => ChargeOutcome::Captured {
                provider_reference: Some(format!("fake_ch_{payment_id}")),
            },
            Some((reason, retryable)) => ChargeOutcome::Declined {
                reason,
                message: Some(format!(
                    "the fake provider declines amounts ending in {:02} ({})",
                    amount_minor.rem_euclid(100),
                    enum_text(&reason)
                )),
                retryable,
            },
        }
    }
}

#[async_trait]
impl PaymentProvider for FakeProvider {
    async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, ProviderUnavailable> {
        Ok(Self::outcome(
            &request.payment_id,
            request.amount.amount_minor,
        ))
    }

    async fn refund(&self, request: &RefundRequest) -> Result<RefundOutcome, ProviderUnavailable> {
        Ok(RefundOutcome::Refunded {
            provider_reference: Some(format!("fake_re_{}", request.refund_id)),
        })
    }
}

// ---------------------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------------------

/// The `commerce` service, with the payment provider it charges through.
#[derive(Clone)]
pub struct CommerceService {
    provider: Arc<dyn PaymentProvider>,
    payment_timeout: Option<Duration>,
}

impl CommerceService {
    /// How long an order may wait for its payment before it is cancelled, by default.
    pub const DEFAULT_PAYMENT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

    /// The service with the default payment provider ([`FakeProvider`]).
    pub fn default_provider() -> CommerceService {
        CommerceService::with_provider(Arc::new(FakeProvider))
    }

    /// The service charging through `provider`.
    pub fn with_provider(provider: Arc<dyn PaymentProvider>) -> CommerceService {
        CommerceService {
            provider,
            payment_timeout: Some(Self::DEFAULT_PAYMENT_TIMEOUT),
        }
    }

    /// Cancels orders still unpaid this long after they were placed (`None`: never).
    pub fn payment_timeout(mut self, timeout: Option<Duration>) -> CommerceService {
        self.payment_timeout = timeout;
        self
    }
}

impl Default for CommerceService {
    fn default() -> Self {
        CommerceService::default_provider()
    }
}

impl fmt::Debug for CommerceService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommerceService").finish_non_exhaustive()
    }
}

/// What the handlers share.
#[derive(Clone)]
struct Commerce {
    api: Api,
    provider: Arc<dyn PaymentProvider>,
}

impl Service for CommerceService {
    fn name(&self) -> &'static str {
        "commerce"
    }

    fn about(&self) -> &'static str {
        "orders and payments: place, pay (pluggable provider), refund, ship, cancel"
    }

    fn migrations(&self) -> MigrationSet {
        MIGRATIONS
    }

    fn consumers(&self, ctx: &Context) -> Result<Vec<ConsumerSpec>, ServiceError> {
        let topics = vec![FraudHoldPlaced::TOPIC.to_owned()];
        // A hold's latest word (placed, released) is the one that counts.
        Ok(vec![ctx.consumer(
            "commerce",
            GROUP,
            &topics,
            ovasabi_core::Ordering::PerKey,
            Arc::new(Reactor::new(
                GROUP,
                InboxOrder::LastWriteWins,
                ctx.store.clone(),
                Holds,
            )),
        )?])
    }

    fn tasks(&self, ctx: &Context, stop: CancellationToken) -> Vec<Task> {
        match self.payment_timeout {
            Some(timeout) => vec![Box::pin(cancel_unpaid(ctx.api.clone(), timeout, stop))],
            None => Vec::new(),
        }
    }

    fn routes(&self, ctx: &Context) -> Option<Router> {
        Some(
            Router::new()
                .route("/v1/orders", post(place).get(list))
                .route("/v1/orders/{id}", get(order))
                .route("/v1/orders/{id}/pay", post(pay))
                .route("/v1/orders/{id}/refund", post(refund))
                .route("/v1/orders/{id}/ship", post(ship))
                .route("/v1/orders/{id}/cancel", post(cancel))
                .with_state(Commerce {
                    api: ctx.api.clone(),
                    provider: self.provider.clone(),
                }),
        )
    }

    fn openapi(&self) -> Value {
        openapi()
    }
}

// ---------------------------------------------------------------------------------------
// Request helpers shared with `content` (candidates for `http.rs`)
// ---------------------------------------------------------------------------------------

/// A JSON body like [`crate::http::JsonBody`], but naming the field at fault by its whole
/// path (`items[1].quantity`, also for a wrong type or a missing field), and reading an
/// empty body as `{}` (so a POST whose fields are all optional needs none).
pub(crate) struct Body<T>(pub(crate) T);

impl<T, S> FromRequest<S> for Body<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                let mime = v.split(';').next().unwrap_or_default().trim();
                mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")
            });
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            ApiError::with(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("the body cannot be read: {}", e.body_text()),
            )
        })?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else if is_json == Some(true) {
            &bytes
        } else {
            return Err(ApiError::with(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_body",
                "send the body as JSON, with `Content-Type: application/json`",
            ));
        };
        Json::<T>::from_bytes(text)
            .map(|Json(value)| Body(value))
            .map_err(|rejection| body_error(&rejection))
    }
}

/// A body that did not parse, with the field named by its path: axum's message is
/// `…target type: <path>: <serde's message>`, and serde names a missing or unknown field
/// in backquotes.
fn body_error(rejection: &JsonRejection) -> ApiError {
    let text = rejection.body_text();
    let detail = text
        .split_once("target type: ")
        .map_or(text.as_str(), |(_, detail)| detail);
    let (path, message) = match detail.split_once(": ") {
        Some((path, message)) if !path.is_empty() && !path.contains(char::is_whitespace) => {
            (Some(path), message)
        }
        _ => (None, detail),
    };
    let named = ["missing field `", "unknown field `", "duplicate field `"]
        .iter()
        .find_map(|prefix| {
            let (_, rest) = message.split_once(prefix)?;
            rest.split_once('`').map(|(name, _)| name)
        });
    let field = match (path, named) {
        // An unknown field's path already ends with it.
        (Some(path), Some(name)) if path == name || path.ends_with(&format!(".{name}")) => {
            Some(path.to_owned())
        }
        (Some(path), Some(name)) => Some(format!("{path}.{name}")),
        (None, Some(name)) => Some(name.to_owned()),
        (Some(path), None) => Some(path.to_owned()),
        (None, None) => None,
    };
    ApiError {
        status: if rejection.status() == StatusCode::BAD_REQUEST {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        },
        code: "invalid_body",
        message: format!("the body is not the expected JSON: {detail}"),
        field,
    }
}

/// An id of another service's entity (a user, a customer): 1 to 128 characters, no
/// whitespace or control characters.
pub(crate) fn check_id(field: &str, id: &str) -> Result<String, ApiError> {
    let id = id.trim();
    if id.is_empty()
        || id.chars().count() > 128
        || id.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ApiError::invalid(
            field,
            format!("`{id}` is not an id: 1 to 128 characters without spaces"),
        ));
    }
    Ok(id.to_owned())
}

/// Trimmed text of `min..=max` characters, without control characters other than line
/// breaks and tabs.
pub(crate) fn check_text(
    field: &str,
    text: &str,
    min: usize,
    max: usize,
) -> Result<String, ApiError> {
    let text = text.trim();
    let n = text.chars().count();
    if n < min || n > max {
        let what = if min == 0 {
            format!("at most {max} characters")
        } else {
            format!("{min} to {max} characters, not all blank")
        };
        return Err(ApiError::invalid(field, format!("give {what} (got {n})")));
    }
    if text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(ApiError::invalid(
            field,
            "control characters are not allowed",
        ));
    }
    Ok(text.to_owned())
}

/// The query string, malformed ones and unknown parameters answered naming them.
pub(crate) fn query_params(
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    known: &[&str],
) -> Result<HashMap<String, String>, ApiError> {
    paging::query(query, known)
}

/// A serde enum's wire name (`card_declined`).
pub(crate) fn enum_text<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(s)) => s,
        _ => String::new(),
    }
}

/// A serde enum from its wire name, as stored in a column.
pub(crate) fn enum_from<T: DeserializeOwned>(column: &str, text: &str) -> Result<T, ApiError> {
    serde_json::from_value(Value::String(text.to_owned())).map_err(|_| {
        tracing::error!(column, text, "unreadable value in the database");
        ApiError::with(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the stored {column} `{text}` is not readable; see the server's log"),
        )
    })
}

/// Now, at the precision the database keeps (microseconds), so what the event says and what
/// a later read says agree.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A 409 with `code`.
pub(crate) fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::with(StatusCode::CONFLICT, code, message)
}

// ---------------------------------------------------------------------------------------
// Orders: what is stored, and how it reads
// ---------------------------------------------------------------------------------------

/// Where an order is in its life (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Status {
    Placed,
    Paid,
    Shipped,
    Refunded,
    Cancelled,
}

const ORDER_COLUMNS: &str = "id, customer_id, status, currency, subtotal_minor, discount_minor, \
    total_minor, coupon_code, items, shipping_address, payment, shipment, refund, cancellation, \
    pending_attempt_id, pending_until, placed_at, updated_at";

/// A row of `orders`.
struct Order {
    id: String,
    customer_id: String,
    status: Status,
    currency: String,
    subtotal_minor: i64,
    discount_minor: i64,
    total_minor: i64,
    coupon_code: Option<String>,
    items: Value,
    shipping_address: Value,
    /// `{payment_id, method, amount, provider_reference, paid_at}` once paid.
    payment: Option<Value>,
    /// `{shipment_id, carrier, tracking_number, tracking_url, estimated_delivery, shipped_at}`.
    shipment: Option<Value>,
    /// `{refund_id, amount, reason, provider_reference, refunded_at}` once refunded.
    refund: Option<Value>,
    /// `{cancelled_by, reason, refund_due, cancelled_at}` once cancelled.
    cancellation: Option<Value>,
    pending_attempt_id: Option<String>,
    pending_until: Option<DateTime<Utc>>,
    placed_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl Order {
    fn from_row(row: &Row) -> Result<Order, ApiError> {
        let status: String = row.get("status")?;
        Ok(Order {
            id: row.get("id")?,
            customer_id: row.get("customer_id")?,
            status: enum_from("order status", &status)?,
            currency: row.get("currency")?,
            subtotal_minor: row.get("subtotal_minor")?,
            discount_minor: row.get("discount_minor")?,
            total_minor: row.get("total_minor")?,
            coupon_code: row.get("coupon_code")?,
            items: row.get("items")?,
            shipping_address: row.get("shipping_address")?,
            payment: row.get("payment")?,
            shipment: row.get("shipment")?,
            refund: row.get("refund")?,
            cancellation: row.get("cancellation")?,
            pending_attempt_id: row.get("pending_attempt_id")?,
            pending_until: row.get("pending_until")?,
            placed_at: row.get("placed_at")?,
            updated_at: row.get("updated_at")?,
        })
    }

    fn money(&self, amount_minor: i64) -> Money {
        Money::new(amount_minor, self.currency.clone())
    }

    fn total(&self) -> Money {
        self.money(self.total_minor)
    }

    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "customer_id": self.customer_id,
            "status": self.status,
            "items": self.items,
            "subtotal": self.money(self.subtotal_minor),
            "discount": self.money(self.discount_minor),
            "total": self.total(),
            "coupon_code": self.coupon_code,
            "shipping_address": self.shipping_address,
            "payment": self.payment,
            "shipment": self.shipment,
            "refund": self.refund,
            "cancellation": self.cancellation,
            "payment_in_progress": self.pending_attempt_id.as_ref().map(|id| json!({
                "attempt_id": id, "lease_until": self.pending_until,
            })),
            "placed_at": self.placed_at,
            "updated_at": self.updated_at,
        })
    }

    /// A 409 naming the current state: `action` is not allowed in it.
    fn refuse(&self, action: &str, why: &str) -> ApiError {
        let status = enum_text(&self.status);
        conflict(
            "invalid_state",
            format!(
                "order {} is {status}: it cannot be {action} ({why})",
                self.id
            ),
        )
    }

    /// 409 when a payment operation is in flight (or was left unresolved).
    fn settled(&self, now: DateTime<Utc>) -> Result<(), ApiError> {
        match &self.pending_attempt_id {
            None => Ok(()),
            Some(attempt) => Err(self.in_flight(attempt, now)),
        }
    }

    /// The 409 for a request meeting payment attempt `attempt` undecided.
    fn in_flight(&self, attempt: &str, now: DateTime<Utc>) -> ApiError {
        match self.pending_until {
            Some(until) if until > now => conflict(
                "payment_in_progress",
                format!(
                    "order {} has payment attempt {attempt} in flight (until {until}); retry when it is decided",
                    self.id
                ),
            ),
            _ => conflict(
                "payment_in_progress",
                format!(
                    "order {} has payment attempt {attempt} whose outcome is not known yet; \
                     POST /v1/orders/{}/pay (or /refund) again to resolve it",
                    self.id, self.id
                ),
            ),
        }
    }

    /// Whether it can be paid now.
    fn payable(&self) -> Result<(), ApiError> {
        match self.status {
            Status::Placed => Ok(()),
            Status::Paid | Status::Shipped | Status::Refunded => {
                Err(self.refuse("paid", "it was paid already"))
            }
            Status::Cancelled => Err(self.refuse("paid", "it was cancelled")),
        }
    }

    /// Whether it can be refunded now.
    fn refundable(&self) -> Result<(), ApiError> {
        match self.status {
            _ if self.refund.is_some() => Err(self.refuse("refunded", "it was refunded already")),
            Status::Paid | Status::Shipped => Ok(()),
            Status::Cancelled if self.payment.is_some() => Ok(()),
            Status::Placed | Status::Cancelled => Err(self.refuse("refunded", "it was never paid")),
            Status::Refunded => Err(self.refuse("refunded", "it was refunded already")),
        }
    }

    fn payment_field(&self, name: &str) -> Option<String> {
        self.payment
            .as_ref()
            .and_then(|p| p.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    }
}

/// Cancels orders left unpaid for `timeout`, looking every tenth of it (between 100 ms and
/// 10 s), until `stop`.
async fn cancel_unpaid(api: Api, timeout: Duration, stop: CancellationToken) {
    let every = (timeout / 10).clamp(Duration::from_millis(100), Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if let Err(e) = cancel_unpaid_pass(&api, timeout).await {
            tracing::warn!(
                "commerce: cancelling unpaid orders: {}; trying again",
                e.message
            );
        }
    }
}

/// One pass of [`cancel_unpaid`]: each order in its own transaction, publishing
/// `order.cancelled` (by `system`, reason `not paid within …`).
async fn cancel_unpaid_pass(api: &Api, timeout: Duration) -> Result<usize, ApiError> {
    let cutoff = now() - chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::MAX);
    let ids: Vec<String> = api
        .store
        .query(
            "SELECT id FROM orders WHERE status = $1 AND placed_at < $2 ORDER BY placed_at LIMIT 100",
            params![enum_text(&Status::Placed), cutoff],
        )
        .await?
        .iter()
        .map(|row| row.get("id"))
        .collect::<Result<_, _>>()?;
    let mut cancelled = 0;
    for id in ids {
        let meta = RequestMeta {
            correlation_id: id.clone(),
            traceparent: ovasabi_middleware::TraceParent::new_root(),
            idempotency_key: None,
        };
        let reason = format!("not paid within {}", humantime_minutes(timeout));
        let scope = format!("payment timeout {id}");
        let outcome = api
            .transact(&meta, &scope, &json!({}), move |tx| {
                Box::pin(async move {
                    let now = now();
                    let order = lock_order(tx.db(), &id).await?;
                    // Paid meanwhile, or a payment in flight: leave it.
                    if order.status != Status::Placed || order.pending_attempt_id.is_some() {
                        return Ok((StatusCode::OK, Value::Null));
                    }
                    let event = OrderCancelled {
                        order_id: id.clone(),
                        cancelled_by: CancelledBy::System,
                        reason: Some(reason),
                        refund_due: None,
                        cancelled_at: now,
                    };
                    let cancellation = json!({
                        "cancelled_by": event.cancelled_by, "reason": event.reason,
                        "refund_due": null, "cancelled_at": now,
                    });
                    tx.db()
                        .execute(
                            "UPDATE orders SET status = $2, cancellation = $3, updated_at = $4 WHERE id = $1",
                            params![id.as_str(), enum_text(&Status::Cancelled), cancellation, now],
                        )
                        .await?;
                    publish_recorded(tx, &event, SOURCE).await?;
                    Ok((StatusCode::OK, json!({"cancelled": id})))
                })
            })
            .await;
        match outcome {
            Ok(_) => cancelled += 1,
            Err(e) => tracing::warn!("commerce: cancelling an unpaid order: {}", e.message),
        }
    }
    Ok(cancelled)
}

/// `30m`, `90s`: a timeout for people.
fn humantime_minutes(d: Duration) -> String {
    if d.as_secs() >= 60 && d.as_secs().is_multiple_of(60) {
        format!("{} min", d.as_secs() / 60)
    } else {
        format!("{:?}", d)
    }
}

/// Publishes an order's event (through the request's outbox) and adds it to the order's
/// history, in the request's transaction.
async fn publish_recorded<E: ovasabi_events::DomainEvent>(
    tx: &mut Tx<'_>,
    payload: &E,
    source: &str,
) -> Result<ovasabi_core::Event, ApiError> {
    let event = tx.publish(payload, source).await?;
    record_history(tx.db(), &event, None).await?;
    Ok(event)
}

/// Adds `event` (about the order that is its subject) to the order's history; a second
/// time changes nothing.
async fn record_history(
    db: &mut Transaction,
    event: &ovasabi_core::Event,
    detail: Option<&str>,
) -> Result<(), ovasabi_store::StoreError> {
    let Some(order_id) = event.subject.as_deref() else {
        return Ok(());
    };
    db.execute(
        "INSERT INTO order_history (order_id, event_type, event_id, at, detail)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (order_id, event_id) DO NOTHING",
        params![
            order_id,
            event.ty.as_str(),
            event.id.as_str(),
            event.time.unwrap_or_else(Utc::now),
            detail
        ],
    )
    .await?;
    Ok(())
}

/// Keeps fraud holds on orders up to date from `moderation.events`.
struct Holds;

#[async_trait]
impl Reaction for Holds {
    /// (order id, hold id, reason, state).
    type Plan = (String, String, String, &'static str);

    fn plan(&self, msg: &Message) -> Result<Option<Self::Plan>, HandlerError> {
        let event = msg.event();
        let reason_text = |v: Value| v.as_str().unwrap_or("unknown").replace('_', " ");
        Ok(match event.ty.as_str() {
            FraudHoldPlaced::TYPE => {
                let hold: FraudHoldPlaced = payload(event)?;
                (hold.target_kind == HoldTarget::Order).then(|| {
                    let reason =
                        reason_text(serde_json::to_value(hold.reason_code).unwrap_or(Value::Null));
                    (hold.target_id, hold.hold_id, reason, "held")
                })
            }
            FraudHoldReleased::TYPE => {
                let release: FraudHoldReleased = payload(event)?;
                (release.target_kind == HoldTarget::Order).then(|| {
                    let reason = reason_text(
                        serde_json::to_value(release.resolution).unwrap_or(Value::Null),
                    );
                    (release.target_id, release.hold_id, reason, "released")
                })
            }
            _ => None,
        })
    }

    async fn apply(
        &self,
        tx: &mut Transaction,
        msg: &Message,
        (order_id, hold_id, reason, state): Self::Plan,
    ) -> Result<bool, HandlerError> {
        tx.execute(
            "INSERT INTO commerce_holds (order_id, hold_id, reason, state, updated_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (order_id) DO UPDATE SET hold_id = excluded.hold_id,
                 reason = excluded.reason, state = excluded.state, updated_at = excluded.updated_at",
            params![order_id.as_str(), hold_id.as_str(), reason.as_str(), state, Utc::now()],
        )
        .await
        .map_err(store_failure("commerce"))?;
        let mut event = msg.event().clone();
        event.subject = Some(order_id);
        record_history(tx, &event, Some(&reason))
            .await
            .map_err(store_failure("commerce"))?;
        Ok(false)
    }
}

/// The order's fraud hold, if it ever had one: (hold id, reason, state).
async fn hold_of(
    store: &ovasabi_store::Store,
    order_id: &str,
) -> Result<Option<(String, String, String)>, ApiError> {
    let row = store
        .query_opt(
            "SELECT hold_id, reason, state FROM commerce_holds WHERE order_id = $1",
            params![order_id],
        )
        .await?;
    row.map(|r| Ok((r.get("hold_id")?, r.get("reason")?, r.get("state")?)))
        .transpose()
}

/// 409 `order_held` while a fraud hold is on the order.
async fn refuse_if_held(db: &mut Transaction, order: &Order) -> Result<(), ApiError> {
    let row = db
        .query_opt(
            "SELECT hold_id, reason FROM commerce_holds WHERE order_id = $1 AND state = 'held'",
            params![order.id.as_str()],
        )
        .await?;
    let Some(row) = row else { return Ok(()) };
    let hold_id: String = row.get("hold_id")?;
    let reason: String = row.get("reason")?;
    Err(ApiError::with(
        StatusCode::CONFLICT,
        "order_held",
        format!(
            "order {} is held for fraud review (hold {hold_id}: {reason}); it can be paid or shipped once the hold is released",
            order.id
        ),
    ))
}

/// The order `id`, locked for the rest of the transaction; 404 if there is none.
async fn lock_order(db: &mut Transaction, id: &str) -> Result<Order, ApiError> {
    let row = db
        .query_opt(
            &format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1 FOR UPDATE"),
            params![id],
        )
        .await?
        .ok_or_else(|| ApiError::not_found(format!("order {id}")))?;
    Order::from_row(&row)
}

// ---------------------------------------------------------------------------------------
// Payment attempts
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Charge,
    Refund,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum AttemptStatus {
    Pending,
    Succeeded,
    Failed,
}

const ATTEMPT_COLUMNS: &str = "id, order_id, kind, method, amount_minor, \
    currency, refund_reason, status, failure_reason, message, retryable, provider_reference, \
    provider_calls, started_at, finished_at";

/// A row of `order_payment_attempts`: one charge or refund, from claim to outcome.
#[derive(Clone, Debug)]
struct Attempt {
    id: String,
    order_id: String,
    kind: Kind,
    method: PaymentMethod,
    amount: Money,
    refund_reason: Option<RefundReason>,
    status: AttemptStatus,
    failure_reason: Option<PaymentFailureReason>,
    message: Option<String>,
    retryable: Option<bool>,
    provider_reference: Option<String>,
    provider_calls: i64,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

impl Attempt {
    fn from_row(row: &Row) -> Result<Attempt, ApiError> {
        let text = |column: &str| row.get::<Option<String>>(column);
        Ok(Attempt {
            id: row.get("id")?,
            order_id: row.get("order_id")?,
            kind: enum_from("attempt kind", &row.get::<String>("kind")?)?,
            method: enum_from("payment method", &row.get::<String>("method")?)?,
            amount: Money::new(row.get("amount_minor")?, row.get::<String>("currency")?),
            refund_reason: text("refund_reason")?
                .map(|r| enum_from("refund reason", &r))
                .transpose()?,
            status: enum_from("attempt status", &row.get::<String>("status")?)?,
            failure_reason: text("failure_reason")?
                .map(|r| enum_from("failure reason", &r))
                .transpose()?,
            message: text("message")?,
            retryable: row.get("retryable")?,
            provider_reference: text("provider_reference")?,
            provider_calls: row.get("provider_calls")?,
            started_at: row.get("started_at")?,
            finished_at: row.get("finished_at")?,
        })
    }

    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "amount": self.amount,
            "method": self.method,
            "refund_reason": self.refund_reason,
            "reason_code": self.failure_reason,
            "message": self.message,
            "retryable": self.retryable,
            "provider_reference": self.provider_reference,
            "provider_calls": self.provider_calls,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        })
    }
}

async fn load_attempt(db: &mut Transaction, id: &str) -> Result<Attempt, ApiError> {
    let row = db
        .query_one(
            &format!("SELECT {ATTEMPT_COLUMNS} FROM order_payment_attempts WHERE id = $1"),
            params![id],
        )
        .await?;
    Attempt::from_row(&row)
}

/// What a pay or refund request asks for.
#[derive(Clone, Copy, Debug)]
struct Ask {
    kind: Kind,
    method: Option<PaymentMethod>,
    reason: Option<RefundReason>,
}

/// The outcome of the claim step.
enum Claim {
    /// Call the provider for this attempt (new, or resumed with the same id).
    Call {
        attempt: Box<Attempt>,
        customer_id: String,
        payment_id: Option<String>,
        payment_reference: Option<String>,
    },
    /// This request's attempt is decided: answer what was recorded.
    Decided { attempt_id: String },
}

/// Step 1: lock the order, and find this request's attempt, resume an abandoned one, or
/// record a new pending one — in a transaction of its own, committed before the provider
/// is called.
async fn claim(api: &Api, order_id: &str, key: Option<&str>, ask: Ask) -> Result<Claim, ApiError> {
    let mut db = api.store.begin().await?;
    match claim_in(&mut db, order_id, key, ask).await {
        Ok(claim) => {
            db.commit().await?;
            Ok(claim)
        }
        Err(e) => {
            let _ = db.rollback().await;
            Err(e)
        }
    }
}

async fn claim_in(
    db: &mut Transaction,
    order_id: &str,
    key: Option<&str>,
    ask: Ask,
) -> Result<Claim, ApiError> {
    let now = now();
    let until = now + chrono::Duration::from_std(PENDING_LEASE).unwrap_or_default();
    let order = lock_order(db, order_id).await?;
    let call = |attempt: Attempt, order: &Order| Claim::Call {
        attempt: Box::new(attempt),
        customer_id: order.customer_id.clone(),
        payment_id: order.payment_field("payment_id"),
        payment_reference: order.payment_field("provider_reference"),
    };
    if let Some(key) = key {
        let mine = db
            .query_opt(
                &format!(
                    "SELECT {ATTEMPT_COLUMNS} FROM order_payment_attempts
                     WHERE order_id = $1 AND kind = $2 AND idempotency_key = $3"
                ),
                params![order_id, enum_text(&ask.kind), key],
            )
            .await?;
        if let Some(row) = mine {
            let attempt = Attempt::from_row(&row)?;
            let differs = ask.method.is_some_and(|m| m != attempt.method)
                || ask.reason.is_some_and(|r| Some(r) != attempt.refund_reason);
            if differs {
                return Err(ApiError {
                    status: StatusCode::UNPROCESSABLE_ENTITY,
                    code: "idempotency_key_reused",
                    message: "this Idempotency-Key was used with a different request body; use a new key for a new request".to_owned(),
                    field: Some("Idempotency-Key".to_owned()),
                });
            }
            if attempt.status != AttemptStatus::Pending
                || order.pending_attempt_id.as_deref() != Some(attempt.id.as_str())
            {
                return Ok(Claim::Decided {
                    attempt_id: attempt.id,
                });
            }
            // Our own attempt, outcome unknown: call again with the same id.
            let attempt = extend(db, &order, attempt, until).await?;
            return Ok(call(attempt, &order));
        }
    }
    if let Some(pending) = &order.pending_attempt_id {
        if order.pending_until.is_some_and(|until| until > now) {
            return Err(order.in_flight(pending, now));
        }
        // Abandoned (its request gave up, or its process died): resolve it first.
        let attempt = load_attempt(db, pending).await?;
        if attempt.kind != ask.kind {
            return Err(conflict(
                "payment_in_progress",
                format!(
                    "order {order_id} has a {} (attempt {}) whose outcome is not known yet; \
                     POST /v1/orders/{order_id}/{} again to resolve it first",
                    enum_text(&attempt.kind),
                    attempt.id,
                    if attempt.kind == Kind::Charge {
                        "pay"
                    } else {
                        "refund"
                    }
                ),
            ));
        }
        let attempt = extend(db, &order, attempt, until).await?;
        return Ok(call(attempt, &order));
    }
    let (method, amount, reason) = match ask.kind {
        Kind::Charge => {
            refuse_if_held(db, &order).await?;
            order.payable()?;
            (
                ask.method.unwrap_or(PaymentMethod::Card),
                order.total(),
                None,
            )
        }
        Kind::Refund => {
            order.refundable()?;
            let method = order
                .payment_field("method")
                .map(|m| enum_from("payment method", &m))
                .transpose()?
                .unwrap_or(PaymentMethod::Card);
            let default = if order.status == Status::Cancelled {
                RefundReason::OrderCancelled
            } else {
                RefundReason::CustomerRequest
            };
            (method, order.total(), Some(ask.reason.unwrap_or(default)))
        }
    };
    let attempt = Attempt {
        id: uuid::Uuid::now_v7().to_string(),
        order_id: order_id.to_owned(),
        kind: ask.kind,
        method,
        amount,
        refund_reason: reason,
        status: AttemptStatus::Pending,
        failure_reason: None,
        message: None,
        retryable: None,
        provider_reference: None,
        provider_calls: 1,
        started_at: now,
        finished_at: None,
    };
    db.execute(
        "INSERT INTO order_payment_attempts (id, order_id, kind, idempotency_key, method,
             amount_minor, currency, refund_reason, status, provider_calls, started_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, $10)",
        params![
            attempt.id.as_str(),
            order_id,
            enum_text(&attempt.kind),
            key,
            enum_text(&attempt.method),
            attempt.amount.amount_minor,
            attempt.amount.currency.as_str(),
            attempt.refund_reason.map(|r| enum_text(&r)),
            enum_text(&attempt.status),
            now
        ],
    )
    .await?;
    db.execute(
        "UPDATE orders SET pending_attempt_id = $2, pending_until = $3 WHERE id = $1",
        params![order_id, attempt.id.as_str(), until],
    )
    .await?;
    Ok(call(attempt, &order))
}

/// Takes the lease of a pending attempt again, to call the provider once more.
async fn extend(
    db: &mut Transaction,
    order: &Order,
    mut attempt: Attempt,
    until: DateTime<Utc>,
) -> Result<Attempt, ApiError> {
    db.execute(
        "UPDATE orders SET pending_until = $3 WHERE id = $1 AND pending_attempt_id = $2",
        params![order.id.as_str(), attempt.id.as_str(), until],
    )
    .await?;
    db.execute(
        "UPDATE order_payment_attempts SET provider_calls = provider_calls + 1 WHERE id = $1",
        params![attempt.id.as_str()],
    )
    .await?;
    attempt.provider_calls += 1;
    Ok(attempt)
}

/// What the provider answered.
enum Outcome {
    Charge(ChargeOutcome),
    Refund(RefundOutcome),
}

/// Step 2: the provider call, with no transaction open.
async fn call_provider(
    provider: &dyn PaymentProvider,
    attempt: &Attempt,
    customer_id: &str,
    payment_id: Option<String>,
    payment_reference: Option<String>,
) -> Result<Outcome, ProviderUnavailable> {
    let call = async {
        match attempt.kind {
            Kind::Charge => provider
                .charge(&ChargeRequest {
                    payment_id: attempt.id.clone(),
                    order_id: attempt.order_id.clone(),
                    customer_id: customer_id.to_owned(),
                    amount: attempt.amount.clone(),
                    method: attempt.method,
                })
                .await
                .map(Outcome::Charge),
            Kind::Refund => provider
                .refund(&RefundRequest {
                    refund_id: attempt.id.clone(),
                    payment_id: payment_id.unwrap_or_default(),
                    payment_reference,
                    order_id: attempt.order_id.clone(),
                    amount: attempt.amount.clone(),
                    reason: attempt
                        .refund_reason
                        .unwrap_or(RefundReason::CustomerRequest),
                })
                .await
                .map(Outcome::Refund),
        }
    };
    match tokio::time::timeout(PROVIDER_TIMEOUT, call).await {
        Ok(answer) => answer,
        Err(_) => Err(ProviderUnavailable(format!(
            "no answer within {} s",
            PROVIDER_TIMEOUT.as_secs()
        ))),
    }
}

/// Pay or refund: claim, call, record (see the module documentation).
async fn payment_request(
    c: Commerce,
    meta: RequestMeta,
    order_id: String,
    scope: String,
    request: Value,
    ask: Ask,
) -> Result<Response, ApiError> {
    let claim = claim(&c.api, &order_id, meta.idempotency_key.as_deref(), ask).await?;
    let (attempt_id, outcome) = match claim {
        Claim::Decided { attempt_id } => (attempt_id, None),
        Claim::Call {
            attempt,
            customer_id,
            payment_id,
            payment_reference,
        } => {
            let answer = call_provider(
                c.provider.as_ref(),
                &attempt,
                &customer_id,
                payment_id,
                payment_reference,
            )
            .await;
            match answer {
                Ok(outcome) => (attempt.id, Some(outcome)),
                Err(unavailable) => {
                    // Give the lease up, so the next request resolves the attempt at once.
                    let released = c
                        .api
                        .store
                        .execute(
                            "UPDATE orders SET pending_until = $3
                             WHERE id = $1 AND pending_attempt_id = $2",
                            params![order_id.as_str(), attempt.id.as_str(), now()],
                        )
                        .await;
                    if let Err(error) = released {
                        tracing::warn!(%error, "could not release a payment attempt's lease; it expires by itself");
                    }
                    tracing::warn!(error = %unavailable, attempt = %attempt.id, "payment provider unavailable");
                    return Err(ApiError::with(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "provider_unavailable",
                        format!(
                            "{unavailable}; attempt {} stays open: retry the request (with the same Idempotency-Key) and it resumes with the same id, never moving money twice",
                            attempt.id
                        ),
                    ));
                }
            }
        }
    };
    c.api
        .transact(&meta, &scope, &request, move |tx| {
            Box::pin(async move { record(tx, &order_id, &attempt_id, outcome).await })
        })
        .await
}

/// Step 3: writes the provider's outcome and its event, if the attempt is still the one in
/// flight; answers with what is recorded for the attempt.
async fn record(
    tx: &mut Tx<'_>,
    order_id: &str,
    attempt_id: &str,
    outcome: Option<Outcome>,
) -> Result<Answer, ApiError> {
    let now = now();
    let order = lock_order(tx.db(), order_id).await?;
    let attempt = load_attempt(tx.db(), attempt_id).await?;
    let in_flight = attempt.status == AttemptStatus::Pending
        && order.pending_attempt_id.as_deref() == Some(attempt_id);
    if let (Some(outcome), true) = (outcome, in_flight) {
        write_outcome(tx, &order, &attempt, outcome, now).await?;
    }
    answer(tx.db(), order_id, attempt_id, now).await
}

async fn write_outcome(
    tx: &mut Tx<'_>,
    order: &Order,
    attempt: &Attempt,
    outcome: Outcome,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    let finish = |status: AttemptStatus| enum_text(&status);
    match outcome {
        Outcome::Charge(ChargeOutcome::Captured { provider_reference }) => {
            let payment = json!({
                "payment_id": attempt.id, "method": attempt.method, "amount": attempt.amount,
                "provider_reference": provider_reference, "paid_at": now,
            });
            tx.db()
                .execute(
                    "UPDATE orders SET status = $2, payment = $3, pending_attempt_id = NULL,
                         pending_until = NULL, updated_at = $4
                     WHERE id = $1",
                    params![order.id.as_str(), enum_text(&Status::Paid), payment, now],
                )
                .await?;
            tx.db()
                .execute(
                    "UPDATE order_payment_attempts SET status = $2, provider_reference = $3,
                         finished_at = $4
                     WHERE id = $1",
                    params![
                        attempt.id.as_str(),
                        finish(AttemptStatus::Succeeded),
                        provider_reference.as_deref(),
                        now
                    ],
                )
                .await?;
            publish_recorded(
                tx,
                &PaymentCompleted {
                    payment_id: attempt.id.clone(),
                    order_id: order.id.clone(),
                    amount: attempt.amount.clone(),
                    method: attempt.method,
                    provider_reference,
                    completed_at: now,
                },
                SOURCE,
            )
            .await?;
        }
        Outcome::Charge(ChargeOutcome::Declined {
            reason,
            message,
            retryable,
        }) => {
            release(tx.db(), order, now).await?;
            tx.db()
                .execute(
                    "UPDATE order_payment_attempts SET status = $2, failure_reason = $3,
                         message = $4, retryable = $5, finished_at = $6
                     WHERE id = $1",
                    params![
                        attempt.id.as_str(),
                        finish(AttemptStatus::Failed),
                        enum_text(&reason),
                        message.as_deref(),
                        retryable,
                        now
                    ],
                )
                .await?;
            publish_recorded(
                tx,
                &PaymentFailed {
                    payment_id: attempt.id.clone(),
                    order_id: order.id.clone(),
                    amount: attempt.amount.clone(),
                    method: attempt.method,
                    reason_code: reason,
                    message,
                    retryable,
                    failed_at: now,
                },
                SOURCE,
            )
            .await?;
        }
        Outcome::Refund(RefundOutcome::Refunded { provider_reference }) => {
            let reason = attempt
                .refund_reason
                .unwrap_or(RefundReason::CustomerRequest);
            let refund = json!({
                "refund_id": attempt.id, "amount": attempt.amount, "reason": reason,
                "provider_reference": provider_reference, "refunded_at": now,
            });
            let status = if order.status == Status::Cancelled {
                Status::Cancelled
            } else {
                Status::Refunded
            };
            tx.db()
                .execute(
                    "UPDATE orders SET status = $2, refund = $3, pending_attempt_id = NULL,
                         pending_until = NULL, updated_at = $4
                     WHERE id = $1",
                    params![order.id.as_str(), enum_text(&status), refund, now],
                )
                .await?;
            tx.db()
                .execute(
                    "UPDATE order_payment_attempts SET status = $2, provider_reference = $3,
                         finished_at = $4
                     WHERE id = $1",
                    params![
                        attempt.id.as_str(),
                        finish(AttemptStatus::Succeeded),
                        provider_reference.as_deref(),
                        now
                    ],
                )
                .await?;
            publish_recorded(
                tx,
                &PaymentRefunded {
                    refund_id: attempt.id.clone(),
                    payment_id: order.payment_field("payment_id").unwrap_or_default(),
                    order_id: order.id.clone(),
                    amount: attempt.amount.clone(),
                    reason,
                    refunded_at: now,
                },
                SOURCE,
            )
            .await?;
        }
        Outcome::Refund(RefundOutcome::Refused { message }) => {
            release(tx.db(), order, now).await?;
            tx.db()
                .execute(
                    "UPDATE order_payment_attempts SET status = $2, message = $3, finished_at = $4
                     WHERE id = $1",
                    params![
                        attempt.id.as_str(),
                        finish(AttemptStatus::Failed),
                        message.as_str(),
                        now
                    ],
                )
                .await?;
        }
    }
    Ok(())
}

/// Clears the in-flight mark of an attempt that moved no money.
async fn release(db: &mut Transaction, order: &Order, now: DateTime<Utc>) -> Result<(), ApiError> {
    db.execute(
        "UPDATE orders SET pending_attempt_id = NULL, pending_until = NULL, updated_at = $2
         WHERE id = $1",
        params![order.id.as_str(), now],
    )
    .await?;
    Ok(())
}

/// The answer for a recorded attempt: 200 when it succeeded, 402 for a declined charge,
/// 409 for a refused refund or an attempt still undecided.
async fn answer(
    db: &mut Transaction,
    order_id: &str,
    attempt_id: &str,
    now: DateTime<Utc>,
) -> Result<Answer, ApiError> {
    let order = lock_order(db, order_id).await?;
    let attempt = load_attempt(db, attempt_id).await?;
    let name = match attempt.kind {
        Kind::Charge => "payment",
        Kind::Refund => "refund",
    };
    let mut body = json!({"order": order.to_json(), name: attempt.to_json()});
    let (status, code, message) = match (attempt.kind, attempt.status) {
        (_, AttemptStatus::Succeeded) => return Ok((StatusCode::OK, body)),
        (_, AttemptStatus::Pending) => return Err(order.in_flight(attempt_id, now)),
        (Kind::Charge, AttemptStatus::Failed) => {
            let reason = attempt
                .failure_reason
                .unwrap_or(PaymentFailureReason::ProcessorError);
            (
                StatusCode::PAYMENT_REQUIRED,
                enum_text(&reason),
                format!(
                    "the payment was declined ({}): {}; the order is still payable",
                    enum_text(&reason),
                    attempt.message.as_deref().unwrap_or("no detail given")
                ),
            )
        }
        (Kind::Refund, AttemptStatus::Failed) => (
            StatusCode::CONFLICT,
            "refund_refused".to_owned(),
            format!(
                "the provider refused the refund: {}",
                attempt.message.as_deref().unwrap_or("no detail given")
            ),
        ),
    };
    body["error"] = json!({"code": code, "message": message, "field": null});
    Ok((status, body))
}

// ---------------------------------------------------------------------------------------
// Requests and handlers
// ---------------------------------------------------------------------------------------

/// `POST /v1/orders`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct PlaceOrder {
    customer_id: String,
    items: Vec<ItemInput>,
    shipping_address: AddressInput,
    #[serde(default)]
    coupon_code: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ItemInput {
    sku: String,
    #[serde(default)]
    name: Option<String>,
    quantity: i64,
    unit_price: MoneyInput,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct MoneyInput {
    amount_minor: i64,
    currency: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct AddressInput {
    recipient: String,
    line1: String,
    #[serde(default)]
    line2: Option<String>,
    city: String,
    #[serde(default)]
    region: Option<String>,
    postal_code: String,
    country: String,
}

/// `POST /v1/orders/{id}/pay`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct PayOrder {
    #[serde(default)]
    method: Option<PaymentMethod>,
}

/// `POST /v1/orders/{id}/refund`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RefundOrder {
    #[serde(default)]
    reason: Option<RefundReason>,
}

/// `POST /v1/orders/{id}/ship`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ShipOrder {
    #[serde(default)]
    carrier: Option<String>,
    #[serde(default, alias = "tracking_number")]
    tracking: Option<String>,
    #[serde(default)]
    tracking_url: Option<String>,
    #[serde(default)]
    estimated_delivery: Option<NaiveDate>,
}

/// `POST /v1/orders/{id}/cancel`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct CancelOrder {
    #[serde(default)]
    cancelled_by: Option<CancelledBy>,
    #[serde(default)]
    reason: Option<String>,
}

/// A new order, checked, with its total.
#[derive(Debug)]
struct NewOrder {
    customer_id: String,
    items: Vec<LineItem>,
    address: Address,
    currency: String,
    subtotal: i64,
    discount: i64,
    total: i64,
    coupon: Option<String>,
}

fn optional_text(field: &str, text: Option<&str>, max: usize) -> Result<Option<String>, ApiError> {
    match text.map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => check_text(field, text, 1, max).map(Some),
    }
}

fn check_order(input: &PlaceOrder) -> Result<NewOrder, ApiError> {
    let customer_id = check_id("customer_id", &input.customer_id)?;
    if input.items.is_empty() || input.items.len() > MAX_ITEMS {
        return Err(ApiError::invalid(
            "items",
            format!(
                "an order has 1 to {MAX_ITEMS} items, not {}",
                input.items.len()
            ),
        ));
    }
    let mut items = Vec::with_capacity(input.items.len());
    let mut currency: Option<String> = None;
    let mut subtotal: i64 = 0;
    for (i, item) in input.items.iter().enumerate() {
        let at = |field: &str| format!("items[{i}].{field}");
        let sku = check_text(&at("sku"), &item.sku, 1, 64)?;
        let name = optional_text(&at("name"), item.name.as_deref(), 200)?;
        let quantity = u32::try_from(item.quantity)
            .ok()
            .filter(|q| (1..=MAX_QUANTITY).contains(&i64::from(*q)))
            .ok_or_else(|| {
                ApiError::invalid(
                    at("quantity"),
                    format!(
                        "a quantity is a whole number from 1 to {MAX_QUANTITY}, not {}",
                        item.quantity
                    ),
                )
            })?;
        let amount = item.unit_price.amount_minor;
        if amount < 0 {
            return Err(ApiError::invalid(
                at("unit_price.amount_minor"),
                format!("a price cannot be negative ({amount})"),
            ));
        }
        let code = item.unit_price.currency.trim();
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(ApiError::invalid(
                at("unit_price.currency"),
                format!("`{code}` is not an ISO 4217 currency code in capitals, such as USD"),
            ));
        }
        let first = currency.get_or_insert_with(|| code.to_owned());
        if first != code {
            let message = format!(
                "items[0] is priced in {first}, this item in {code}: an order has one currency"
            );
            return Err(ApiError::invalid(at("unit_price.currency"), message));
        }
        subtotal = amount
            .checked_mul(i64::from(quantity))
            .and_then(|line| subtotal.checked_add(line))
            .ok_or_else(|| ApiError::invalid(at("quantity"), "the order's total is too large"))?;
        items.push(LineItem {
            sku,
            name,
            quantity,
            unit_price: Money::new(amount, code),
        });
    }
    let currency = currency.unwrap_or_default();
    let a = &input.shipping_address;
    let country = a.country.trim().to_ascii_uppercase();
    if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(ApiError::invalid(
            "shipping_address.country",
            format!(
                "`{}` is not an ISO 3166-1 alpha-2 country code such as GB or BR",
                a.country
            ),
        ));
    }
    let address = Address {
        recipient: check_text("shipping_address.recipient", &a.recipient, 1, 200)?,
        line1: check_text("shipping_address.line1", &a.line1, 1, 200)?,
        line2: optional_text("shipping_address.line2", a.line2.as_deref(), 200)?,
        city: check_text("shipping_address.city", &a.city, 1, 100)?,
        region: optional_text("shipping_address.region", a.region.as_deref(), 100)?,
        postal_code: check_text("shipping_address.postal_code", &a.postal_code, 1, 20)?,
        country,
    };
    let (coupon, percent_off) = match input.coupon_code.as_deref().map(str::trim) {
        None | Some("") => (None, 0),
        Some(code) => {
            let code = code.to_ascii_uppercase();
            let percent = COUPONS
                .iter()
                .find(|(known, _)| *known == code)
                .map(|(_, percent)| *percent)
                .ok_or_else(|| {
                    ApiError::invalid("coupon_code", format!("there is no coupon `{code}`"))
                })?;
            (Some(code), percent)
        }
    };
    let discount =
        i64::try_from(i128::from(subtotal) * i128::from(percent_off) / 100).unwrap_or_default();
    let total = subtotal - discount;
    if total <= 0 {
        return Err(ApiError::invalid(
            "items",
            "the order's total is zero: there is nothing to pay for",
        ));
    }
    Ok(NewOrder {
        customer_id,
        items,
        address,
        currency,
        subtotal,
        discount,
        total,
        coupon,
    })
}

/// `POST /v1/orders`.
async fn place(
    State(c): State<Commerce>,
    meta: RequestMeta,
    Body(input): Body<PlaceOrder>,
) -> Result<Response, ApiError> {
    let new = check_order(&input)?;
    let id = uuid::Uuid::now_v7().to_string();
    c.api
        .transact(&meta, "POST /v1/orders", &input, move |tx| {
            Box::pin(async move {
                let now = now();
                let items = serde_json::to_value(&new.items).unwrap_or(Value::Null);
                let address = serde_json::to_value(&new.address).unwrap_or(Value::Null);
                // The answer is the row as written (what GET /v1/orders/{id} reads back).
                let order = Order {
                    id: id.clone(),
                    customer_id: new.customer_id.clone(),
                    status: Status::Placed,
                    currency: new.currency.clone(),
                    subtotal_minor: new.subtotal,
                    discount_minor: new.discount,
                    total_minor: new.total,
                    coupon_code: new.coupon.clone(),
                    items: items.clone(),
                    shipping_address: address.clone(),
                    payment: None,
                    shipment: None,
                    refund: None,
                    cancellation: None,
                    pending_attempt_id: None,
                    pending_until: None,
                    placed_at: now,
                    updated_at: now,
                };
                tx.db()
                    .execute(
                        "INSERT INTO orders (id, customer_id, status, currency, subtotal_minor,
                             discount_minor, total_minor, coupon_code, items, shipping_address,
                             placed_at, updated_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)",
                        params![
                            id.as_str(),
                            new.customer_id.as_str(),
                            enum_text(&Status::Placed),
                            new.currency.as_str(),
                            new.subtotal,
                            new.discount,
                            new.total,
                            new.coupon.as_deref(),
                            items,
                            address,
                            now
                        ],
                    )
                    .await?;
                publish_recorded(
                    tx,
                    &OrderPlaced {
                        order_id: id.clone(),
                        customer_id: new.customer_id,
                        items: new.items,
                        total: Money::new(new.total, new.currency),
                        shipping_address: new.address,
                        placed_at: now,
                        coupon_code: new.coupon,
                    },
                    SOURCE,
                )
                .await?;
                Ok((StatusCode::CREATED, order.to_json()))
            })
        })
        .await
}

/// `GET /v1/orders/{id}`: the order and its payment attempts, oldest first.
async fn order(State(c): State<Commerce>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let row = c
        .api
        .store
        .query_opt(
            &format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1"),
            params![id.as_str()],
        )
        .await?
        .ok_or_else(|| ApiError::not_found(format!("order {id}")))?;
    let mut body = Order::from_row(&row)?.to_json();
    body["hold"] = match hold_of(&c.api.store, &id).await? {
        Some((hold_id, reason, state)) => {
            json!({"hold_id": hold_id, "reason": reason, "state": state})
        }
        None => Value::Null,
    };
    let attempts = c
        .api
        .store
        .query(
            &format!(
                "SELECT {ATTEMPT_COLUMNS} FROM order_payment_attempts WHERE order_id = $1 ORDER BY id"
            ),
            params![id.as_str()],
        )
        .await?
        .iter()
        .map(|row| Attempt::from_row(row).map(|a| a.to_json()))
        .collect::<Result<Vec<_>, _>>()?;
    body["payment_attempts"] = Value::Array(attempts);
    let history = c
        .api
        .store
        .query(
            "SELECT event_type, event_id, at, detail FROM order_history WHERE order_id = $1 ORDER BY seq",
            params![id.as_str()],
        )
        .await?
        .iter()
        .map(|row| {
            Ok(json!({
                "event_type": row.get::<String>("event_type")?,
                "event_id": row.get::<String>("event_id")?,
                "at": row.get::<DateTime<Utc>>("at")?,
                "detail": row.get::<Option<String>>("detail")?,
            }))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    body["history"] = Value::Array(history);
    Ok(Json(body))
}

/// `GET /v1/orders?customer_id=&limit=&cursor=`: newest first.
async fn list(
    State(c): State<Commerce>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let query = query_params(query, &["customer_id", "limit", "cursor"])?;
    let page = paging::request(&query)?;
    let mut sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE 1 = 1");
    let mut args: Vec<SqlValue> = Vec::new();
    if let Some(customer) = query.get("customer_id") {
        args.push(check_id("customer_id", customer)?.into());
        sql.push_str(&format!(" AND customer_id = ${}", args.len()));
    }
    if let Some(after) = &page.after {
        args.push(after.into());
        sql.push_str(&format!(" AND id < ${}", args.len()));
    }
    args.push(page.fetch().into());
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", args.len()));
    let items = c
        .api
        .store
        .query(&sql, &args)
        .await?
        .iter()
        .map(|row| {
            let order = Order::from_row(row)?;
            Ok((order.id.clone(), order.to_json()))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(Json(paging::answer(&page, items)))
}

/// `POST /v1/orders/{id}/pay`.
async fn pay(
    State(c): State<Commerce>,
    Path(id): Path<String>,
    meta: RequestMeta,
    Body(input): Body<PayOrder>,
) -> Result<Response, ApiError> {
    let request = serde_json::to_value(&input).unwrap_or(Value::Null);
    let scope = format!("POST /v1/orders/{id}/pay");
    let ask = Ask {
        kind: Kind::Charge,
        method: input.method,
        reason: None,
    };
    payment_request(c, meta, id, scope, request, ask).await
}

/// `POST /v1/orders/{id}/refund`.
async fn refund(
    State(c): State<Commerce>,
    Path(id): Path<String>,
    meta: RequestMeta,
    Body(input): Body<RefundOrder>,
) -> Result<Response, ApiError> {
    let request = serde_json::to_value(&input).unwrap_or(Value::Null);
    let scope = format!("POST /v1/orders/{id}/refund");
    let ask = Ask {
        kind: Kind::Refund,
        method: None,
        reason: input.reason,
    };
    payment_request(c, meta, id, scope, request, ask).await
}

/// `POST /v1/orders/{id}/ship`: carrier `manual` and the shipment id as tracking number
/// unless given.
async fn ship(
    State(c): State<Commerce>,
    Path(id): Path<String>,
    meta: RequestMeta,
    Body(input): Body<ShipOrder>,
) -> Result<Response, ApiError> {
    let carrier = optional_text("carrier", input.carrier.as_deref(), 64)?;
    let tracking = optional_text("tracking", input.tracking.as_deref(), 128)?;
    let tracking_url = match input.tracking_url.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(url) => Some(check_url("tracking_url", url)?),
    };
    let estimated_delivery = input.estimated_delivery;
    let scope = format!("POST /v1/orders/{id}/ship");
    c.api
        .transact(&meta, &scope, &input, move |tx| {
            Box::pin(async move {
                let now = now();
                let order = lock_order(tx.db(), &id).await?;
                order.settled(now)?;
                refuse_if_held(tx.db(), &order).await?;
                match order.status {
                    Status::Paid => {}
                    Status::Placed => return Err(order.refuse("shipped", "it is not paid yet")),
                    Status::Shipped => return Err(order.refuse("shipped", "it shipped already")),
                    Status::Refunded => return Err(order.refuse("shipped", "it was refunded")),
                    Status::Cancelled => return Err(order.refuse("shipped", "it was cancelled")),
                }
                let shipment_id = uuid::Uuid::now_v7().to_string();
                let shipped = OrderShipped {
                    order_id: id.clone(),
                    carrier: carrier.unwrap_or_else(|| "manual".to_owned()),
                    tracking_number: tracking.unwrap_or_else(|| shipment_id.clone()),
                    shipment_id,
                    tracking_url,
                    shipped_at: now,
                    estimated_delivery,
                };
                let shipment = json!({
                    "shipment_id": shipped.shipment_id, "carrier": shipped.carrier,
                    "tracking_number": shipped.tracking_number, "tracking_url": shipped.tracking_url,
                    "estimated_delivery": shipped.estimated_delivery, "shipped_at": now,
                });
                tx.db()
                    .execute(
                        "UPDATE orders SET status = $2, shipment = $3, updated_at = $4 WHERE id = $1",
                        params![id.as_str(), enum_text(&Status::Shipped), shipment, now],
                    )
                    .await?;
                publish_recorded(tx, &shipped, SOURCE).await?;
                let order = lock_order(tx.db(), &id).await?;
                Ok((StatusCode::OK, order.to_json()))
            })
        })
        .await
}

/// `POST /v1/orders/{id}/cancel`: from `placed`, or from `paid` with the total as
/// `refund_due`.
async fn cancel(
    State(c): State<Commerce>,
    Path(id): Path<String>,
    meta: RequestMeta,
    Body(input): Body<CancelOrder>,
) -> Result<Response, ApiError> {
    let reason = optional_text("reason", input.reason.as_deref(), 500)?;
    let cancelled_by = input.cancelled_by.unwrap_or(CancelledBy::Customer);
    let scope = format!("POST /v1/orders/{id}/cancel");
    c.api
        .transact(&meta, &scope, &input, move |tx| {
            Box::pin(async move {
                let now = now();
                let order = lock_order(tx.db(), &id).await?;
                order.settled(now)?;
                let refund_due = match order.status {
                    Status::Placed => None,
                    Status::Paid => Some(order.total()),
                    Status::Shipped => {
                        return Err(order.refuse("cancelled", "it has shipped; refund it instead"))
                    }
                    Status::Refunded => {
                        return Err(order.refuse("cancelled", "it was refunded and is closed"))
                    }
                    Status::Cancelled => {
                        return Err(order.refuse("cancelled", "it was cancelled already"))
                    }
                };
                let cancelled = OrderCancelled {
                    order_id: id.clone(),
                    cancelled_by,
                    reason,
                    refund_due,
                    cancelled_at: now,
                };
                let cancellation = json!({
                    "cancelled_by": cancelled.cancelled_by, "reason": cancelled.reason,
                    "refund_due": cancelled.refund_due, "cancelled_at": now,
                });
                tx.db()
                    .execute(
                        "UPDATE orders SET status = $2, cancellation = $3, updated_at = $4 WHERE id = $1",
                        params![id.as_str(), enum_text(&Status::Cancelled), cancellation, now],
                    )
                    .await?;
                publish_recorded(tx, &cancelled, SOURCE).await?;
                let order = lock_order(tx.db(), &id).await?;
                Ok((StatusCode::OK, order.to_json()))
            })
        })
        .await
}

// ---------------------------------------------------------------------------------------
// OpenAPI
// ---------------------------------------------------------------------------------------

fn openapi() -> Value {
    let error = |description: &str| json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let body = |schema: &str, required: bool| json!({"required": required, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
    let ok = |description: &str, schema: &str| json!({"description": description, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
    let headers = json!([
        {"$ref": "#/components/parameters/IdempotencyKey"},
        {"$ref": "#/components/parameters/CorrelationId"}
    ]);
    let with_id = |mut params: Value| {
        if let Some(list) = params.as_array_mut() {
            list.insert(
                0,
                json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}),
            );
        }
        params
    };
    let transition = |summary: &str, schema: &str| {
        json!({"post": {
            "summary": summary,
            "parameters": with_id(headers.clone()),
            "requestBody": body(schema, false),
            "responses": {
                "200": ok("The order after the change", "Order"),
                "404": error("No such order"),
                "409": error("Not allowed in the order's state (the message names it), or a payment is in flight"),
                "422": error("A field is invalid (named in `field`)")
            }
        }})
    };
    let list_params = paging::openapi_parameters_after(vec![
        json!({"name": "customer_id", "in": "query", "required": false, "schema": {"type": "string"}}),
    ]);
    let money = json!({"$ref": "#/components/schemas/Money"});
    let mut doc = json!({
        "paths": {
            "/v1/orders": {
                "post": {
                    "summary": "Place an order (publishes order.placed); the total is computed by the service",
                    "parameters": headers,
                    "requestBody": body("PlaceOrder", true),
                    "responses": {
                        "201": ok("Placed", "Order"),
                        "422": error("A field is invalid, named by its path such as `items[1].quantity`")
                    }
                },
                "get": {
                    "summary": "Orders, newest first, optionally of one customer",
                    "parameters": list_params,
                    "responses": {
                        "200": ok("A page of orders", "OrderPage"),
                        "422": error("`customer_id`, `limit` or `cursor` is invalid")
                    }
                }
            },
            "/v1/orders/{id}": {"get": {
                "summary": "An order, with its payment attempts",
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {"200": ok("The order", "Order"), "404": error("No such order")}
            }},
            "/v1/orders/{id}/pay": {"post": {
                "summary": "Pay through the payment provider (publishes payment.completed or payment.failed)",
                "description": "A retry with the same Idempotency-Key never charges twice: a decided attempt is answered as stored, an undecided one is resumed with the same payment id.",
                "parameters": with_id(headers.clone()),
                "requestBody": body("PayOrder", false),
                "responses": {
                    "200": ok("Paid", "PaymentResult"),
                    "402": ok("Declined: `error.code` is the reason (card_declined, insufficient_funds…); the order stays payable", "PaymentResult"),
                    "404": error("No such order"),
                    "409": error("Not payable in the order's state, or a payment is in flight"),
                    "422": error("A field is invalid"),
                    "503": error("The provider did not answer; retry with the same Idempotency-Key")
                }
            }},
            "/v1/orders/{id}/refund": {"post": {
                "summary": "Refund the whole payment (publishes payment.refunded)",
                "parameters": with_id(headers.clone()),
                "requestBody": body("RefundOrder", false),
                "responses": {
                    "200": ok("Refunded", "PaymentResult"),
                    "404": error("No such order"),
                    "409": error("Not paid, already refunded, a payment in flight, or the provider refused"),
                    "422": error("A field is invalid"),
                    "503": error("The provider did not answer; retry with the same Idempotency-Key")
                }
            }},
            "/v1/orders/{id}/ship": transition("Ship a paid order (publishes order.shipped)", "ShipOrder"),
            "/v1/orders/{id}/cancel": transition("Cancel an order before it ships (publishes order.cancelled; a paid one with refund_due)", "CancelOrder")
        },
        "schemas": {
            "Money": {"type": "object", "required": ["amount_minor", "currency"], "properties": {
                "amount_minor": {"type": "integer", "description": "In the currency's minor unit: 1999 USD is $19.99"},
                "currency": {"type": "string", "pattern": "^[A-Z]{3}$"}
            }},
            "Address": {"type": "object", "required": ["recipient", "line1", "city", "postal_code", "country"], "properties": {
                "recipient": {"type": "string", "maxLength": 200},
                "line1": {"type": "string", "maxLength": 200},
                "line2": {"type": "string", "maxLength": 200},
                "city": {"type": "string", "maxLength": 100},
                "region": {"type": "string", "maxLength": 100},
                "postal_code": {"type": "string", "maxLength": 20},
                "country": {"type": "string", "pattern": "^[A-Za-z]{2}$", "description": "ISO 3166-1 alpha-2"}
            }},
            "PlaceOrder": {"type": "object", "required": ["customer_id", "items", "shipping_address"], "properties": {
                "customer_id": {"type": "string"},
                "items": {"type": "array", "minItems": 1, "maxItems": MAX_ITEMS, "items": {"type": "object", "required": ["sku", "quantity", "unit_price"], "properties": {
                    "sku": {"type": "string", "maxLength": 64},
                    "name": {"type": "string", "maxLength": 200},
                    "quantity": {"type": "integer", "minimum": 1, "maximum": MAX_QUANTITY},
                    "unit_price": money
                }}},
                "shipping_address": {"$ref": "#/components/schemas/Address"},
                "coupon_code": {"type": "string", "examples": ["WELCOME10"]}
            }},
            "PayOrder": {"type": "object", "properties": {
                "method": {"type": "string", "enum": ["card", "bank_transfer", "paypal", "wallet_coins"], "default": "card"}
            }},
            "RefundOrder": {"type": "object", "properties": {
                "reason": {"type": "string", "enum": ["customer_request", "order_cancelled", "duplicate", "fraudulent", "damaged_item"], "description": "Default: order_cancelled for a cancelled order, customer_request otherwise"}
            }},
            "ShipOrder": {"type": "object", "properties": {
                "carrier": {"type": "string", "maxLength": 64, "default": "manual"},
                "tracking": {"type": "string", "maxLength": 128, "description": "The carrier's tracking number (also accepted as `tracking_number`); default: the shipment id"},
                "tracking_url": {"type": "string", "format": "uri"},
                "estimated_delivery": {"type": "string", "format": "date"}
            }},
            "CancelOrder": {"type": "object", "properties": {
                "cancelled_by": {"type": "string", "enum": ["customer", "merchant", "fraud", "system"], "default": "customer"},
                "reason": {"type": "string", "maxLength": 500}
            }},
            "Order": {"type": "object", "required": ["id", "customer_id", "status", "items", "total"], "properties": {
                "id": {"type": "string"},
                "customer_id": {"type": "string"},
                "status": {"type": "string", "enum": ["placed", "paid", "shipped", "refunded", "cancelled"]},
                "items": {"type": "array", "items": {"type": "object"}},
                "subtotal": money, "discount": money, "total": money,
                "coupon_code": {"type": ["string", "null"]},
                "shipping_address": {"$ref": "#/components/schemas/Address"},
                "payment": {"type": ["object", "null"]},
                "shipment": {"type": ["object", "null"]},
                "refund": {"type": ["object", "null"]},
                "cancellation": {"type": ["object", "null"]},
                "payment_in_progress": {"type": ["object", "null"]},
                "payment_attempts": {"type": "array", "items": {"type": "object"}, "description": "Only on GET /v1/orders/{id}"},
                "placed_at": {"type": "string", "format": "date-time"},
                "updated_at": {"type": "string", "format": "date-time"}
            }},
            "PaymentResult": {"type": "object", "required": ["order"], "properties": {
                "order": {"$ref": "#/components/schemas/Order"},
                "payment": {"type": "object", "description": "The charge attempt (pay)"},
                "refund": {"type": "object", "description": "The refund attempt (refund)"},
                "error": {"type": "object", "description": "When declined or refused: code, message"}
            }},
            "OrderPage": {"type": "object", "required": ["items", "next_cursor"], "properties": {
                "items": {"type": "array", "items": {"$ref": "#/components/schemas/Order"}},
                "next_cursor": {"type": ["string", "null"]}
            }}
        }
    });
    // Added apart: one json! this deep reaches the macro recursion limit.
    let order = &mut doc["schemas"]["Order"]["properties"];
    order["hold"] = json!({"type": ["object", "null"], "description": "Only on GET /v1/orders/{id}: the fraud hold, if any", "properties": {"hold_id": {"type": "string"}, "reason": {"type": "string"}, "state": {"type": "string", "enum": ["held", "released"]}}});
    order["history"] = json!({"type": "array", "description": "Only on GET /v1/orders/{id}: the order's events, oldest first (placed, payments, holds, shipment, refund, cancellation)", "items": {"type": "object", "properties": {"event_type": {"type": "string"}, "event_id": {"type": "string"}, "at": {"type": "string", "format": "date-time"}, "detail": {"type": ["string", "null"]}}}});
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: DeserializeOwned>(text: &str) -> Result<T, ApiError> {
        Json::<T>::from_bytes(text.as_bytes())
            .map(|Json(v)| v)
            .map_err(|r| body_error(&r))
    }

    fn order_json(items: &str) -> String {
        format!(
            r#"{{"customer_id": "c1", "items": {items}, "shipping_address": {{"recipient": "Ada", "line1": "1 Road", "city": "London", "postal_code": "N1", "country": "gb"}}}}"#
        )
    }

    #[test]
    fn body_errors_name_the_field_by_its_path() {
        let wrong_type = order_json(
            r#"[{"sku": "a", "quantity": "two", "unit_price": {"amount_minor": 1, "currency": "USD"}}]"#,
        );
        let missing = order_json(
            r#"[{"sku": "a", "quantity": 1, "unit_price": {"amount_minor": 1, "currency": "USD"}}, {"quantity": 1, "unit_price": {"amount_minor": 1, "currency": "USD"}}]"#,
        );
        let unknown = order_json(
            r#"[{"sku": "a", "quantity": 1, "colour": "red", "unit_price": {"amount_minor": 1, "currency": "USD"}}]"#,
        );
        for (text, field) in [
            (wrong_type.as_str(), "items[0].quantity"),
            (missing.as_str(), "items[1].sku"),
            (unknown.as_str(), "items[0].colour"),
            (r#"{"items": []}"#, "customer_id"),
        ] {
            let err = parse::<PlaceOrder>(text).unwrap_err();
            assert_eq!(err.field.as_deref(), Some(field), "{text}: {err:?}");
            assert_eq!(err.status, StatusCode::UNPROCESSABLE_ENTITY);
        }
        let err = parse::<PayOrder>(r#"{"method": "cash"}"#).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("method"), "{err:?}");
        let err = parse::<PayOrder>("{nope").unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn totals_are_computed_and_rules_name_the_field() {
        let input: PlaceOrder = parse(&order_json(
            r#"[{"sku": "a", "quantity": 2, "unit_price": {"amount_minor": 1250, "currency": "USD"}}, {"sku": "b", "quantity": 1, "unit_price": {"amount_minor": 2999, "currency": "USD"}}]"#,
        ))
        .unwrap();
        let new = check_order(&input).unwrap();
        assert_eq!((new.subtotal, new.discount, new.total), (5499, 0, 5499));
        assert_eq!(new.address.country, "GB");
        let mut with_coupon = input;
        with_coupon.coupon_code = Some("welcome10".to_owned());
        let new = check_order(&with_coupon).unwrap();
        assert_eq!((new.discount, new.total), (549, 4950));
        assert_eq!(new.coupon.as_deref(), Some("WELCOME10"));

        for (items, field) in [
            (
                r#"[{"sku": "a", "quantity": 0, "unit_price": {"amount_minor": 1, "currency": "USD"}}]"#,
                "items[0].quantity",
            ),
            (
                r#"[{"sku": "a", "quantity": 1, "unit_price": {"amount_minor": 1, "currency": "USD"}}, {"sku": "b", "quantity": 1, "unit_price": {"amount_minor": 1, "currency": "EUR"}}]"#,
                "items[1].unit_price.currency",
            ),
            (
                r#"[{"sku": "a", "quantity": 1, "unit_price": {"amount_minor": -5, "currency": "USD"}}]"#,
                "items[0].unit_price.amount_minor",
            ),
            (
                r#"[{"sku": " ", "quantity": 1, "unit_price": {"amount_minor": 1, "currency": "USD"}}]"#,
                "items[0].sku",
            ),
            (
                r#"[{"sku": "a", "quantity": 9223372036854775807, "unit_price": {"amount_minor": 1, "currency": "USD"}}]"#,
                "items[0].quantity",
            ),
            (
                r#"[{"sku": "a", "quantity": 1, "unit_price": {"amount_minor": 0, "currency": "USD"}}]"#,
                "items",
            ),
            ("[]", "items"),
        ] {
            let input: PlaceOrder = parse(&order_json(items)).unwrap();
            let err = check_order(&input).unwrap_err();
            assert_eq!(err.field.as_deref(), Some(field), "{items}: {err:?}");
        }
    }

    #[test]
    fn the_fake_provider_declines_by_the_last_two_digits() {
        use PaymentFailureReason::*;
        for (amount, reason) in [
            (1013, Some(CardDeclined)),
            (14, Some(InsufficientFunds)),
            (99_915, Some(ExpiredCard)),
            (116, Some(AuthenticationFailed)),
            (217, Some(FraudSuspected)),
            (318, Some(ProcessorError)),
            (1999, None),
            (5000, None),
            (11_300, None),
        ] {
            assert_eq!(
                FakeProvider::decline_for(amount).map(|(r, _)| r),
                reason,
                "{amount}"
            );
            let outcome = FakeProvider::outcome("p1", amount);
            assert_eq!(
                matches!(outcome, ChargeOutcome::Captured { .. }),
                reason.is_none()
            );
        }
    }
}
