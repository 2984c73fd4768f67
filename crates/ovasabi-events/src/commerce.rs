//! Events of the `commerce` service (orders and payments), on topic `commerce.events`. Their
//! subject is the order id, so one order's events are handled in order.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{ADA, BO, ORDER, ORDER_2, PAYMENT};
use crate::{at, DomainEvent, Money};

const TOPIC: &str = "commerce.events";

fn usd(amount_minor: i64) -> Money {
    Money::new(amount_minor, "USD")
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineItem {
    /// The product variant's stock-keeping unit.
    pub sku: String,
    /// The product's name at the time of the order.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub name: Option<String>,
    /// How many units.
    pub quantity: u32,
    /// The price of one unit, taxes included.
    pub unit_price: Money,
}

/// A postal address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Address {
    /// The person or company to deliver to.
    pub recipient: String,
    /// Street and number.
    pub line1: String,
    /// Apartment, suite, building.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub line2: Option<String>,
    /// City or locality.
    pub city: String,
    /// State, province or county, where the country uses one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub region: Option<String>,
    /// Postal or ZIP code.
    pub postal_code: String,
    /// ISO 3166-1 alpha-2 country code (`GB`, `BR`).
    pub country: String,
}

/// `order.placed` v1: a customer placed an order; payment follows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderPlacedV1 {
    /// The new order's id.
    pub order_id: String,
    /// The user who placed the order.
    pub customer_id: String,
    /// What was ordered (at least one line).
    pub items: Vec<LineItem>,
    /// The amount to pay: items, shipping and taxes, after discounts.
    pub total: Money,
    /// Where to ship the order.
    pub shipping_address: Address,
    /// When the order was placed.
    pub placed_at: DateTime<Utc>,
}

/// `order.placed` v2 (latest): v1 plus an optional `coupon_code`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {
    /// The new order's id.
    pub order_id: String,
    /// The user who placed the order.
    pub customer_id: String,
    /// What was ordered (at least one line).
    pub items: Vec<LineItem>,
    /// The amount to pay: items, shipping and taxes, after discounts.
    pub total: Money,
    /// Where to ship the order.
    pub shipping_address: Address,
    /// When the order was placed.
    pub placed_at: DateTime<Utc>,
    /// The coupon applied to the order, if any; `total` already includes its discount.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub coupon_code: Option<String>,
}

/// Upcast v1 → v2: a v1 order has no coupon.
impl From<OrderPlacedV1> for OrderPlaced {
    fn from(v1: OrderPlacedV1) -> Self {
        OrderPlaced {
            order_id: v1.order_id,
            customer_id: v1.customer_id,
            items: v1.items,
            total: v1.total,
            shipping_address: v1.shipping_address,
            placed_at: v1.placed_at,
            coupon_code: None,
        }
    }
}

impl DomainEvent for OrderPlacedV1 {
    const TYPE: &'static str = "order.placed";
    const VERSION: u32 = 1;
    const TOPIC: &'static str = TOPIC;

    fn subject(&self) -> Option<String> {
        Some(self.order_id.clone())
    }

    fn examples() -> Vec<Self> {
        vec![OrderPlacedV1 {
            order_id: ORDER.to_owned(),
            customer_id: ADA.to_owned(),
            items: vec![
                LineItem {
                    sku: "BOOK-ENGINE-HC".to_owned(),
                    name: Some("The Engine (hardcover)".to_owned()),
                    quantity: 1,
                    unit_price: usd(2999),
                },
                LineItem {
                    sku: "MUG-OVA-WHT".to_owned(),
                    name: None,
                    quantity: 2,
                    unit_price: usd(1250),
                },
            ],
            total: usd(5998),
            shipping_address: Address {
                recipient: "Ada Lovelace".to_owned(),
                line1: "12 St James's Square".to_owned(),
                line2: None,
                city: "London".to_owned(),
                region: None,
                postal_code: "SW1Y 4JH".to_owned(),
                country: "GB".to_owned(),
            },
            placed_at: at("2025-11-27T15:00:00Z"),
        }]
    }
}

impl DomainEvent for OrderPlaced {
    const TYPE: &'static str = "order.placed";
    const VERSION: u32 = 2;
    const TOPIC: &'static str = TOPIC;

    fn subject(&self) -> Option<String> {
        Some(self.order_id.clone())
    }

    fn examples() -> Vec<Self> {
        let mut examples: Vec<Self> = OrderPlacedV1::examples()
            .into_iter()
            .map(Into::into)
            .collect();
        examples.push(OrderPlaced {
            order_id: ORDER_2.to_owned(),
            customer_id: BO.to_owned(),
            items: vec![LineItem {
                sku: "TEE-OVA-M".to_owned(),
                name: Some("OVASABI tee, M".to_owned()),
                quantity: 1,
                unit_price: usd(2000),
            }],
            total: usd(1800),
            shipping_address: Address {
                recipient: "Bo Silva".to_owned(),
                line1: "Rua Augusta 100".to_owned(),
                line2: Some("apto 42".to_owned()),
                city: "São Paulo".to_owned(),
                region: Some("SP".to_owned()),
                postal_code: "01304-000".to_owned(),
                country: "BR".to_owned(),
            },
            placed_at: at("2025-11-28T10:20:00Z"),
            coupon_code: Some("WELCOME10".to_owned()),
        });
        examples
    }
}

/// How a customer paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentMethod {
    /// A credit or debit card.
    Card,
    /// A bank transfer.
    BankTransfer,
    /// PayPal.
    Paypal,
    /// OVASABI coins from the customer's wallet.
    WalletCoins,
}

/// `payment.completed` v1: the payment for an order was captured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentCompleted {
    /// The payment's id.
    pub payment_id: String,
    /// The order paid for.
    pub order_id: String,
    /// The amount captured.
    pub amount: Money,
    /// How the customer paid.
    pub method: PaymentMethod,
    /// The payment provider's reference for the charge, if any.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub provider_reference: Option<String>,
    /// When the payment was captured.
    pub completed_at: DateTime<Utc>,
}

impl DomainEvent for PaymentCompleted {
    const TYPE: &'static str = "payment.completed";
    const VERSION: u32 = 1;
    const TOPIC: &'static str = TOPIC;

    fn subject(&self) -> Option<String> {
        Some(self.order_id.clone())
    }

    fn examples() -> Vec<Self> {
        vec![PaymentCompleted {
            payment_id: PAYMENT.to_owned(),
            order_id: ORDER.to_owned(),
            amount: usd(5998),
            method: PaymentMethod::Card,
            provider_reference: Some("ch_3QAbCdEfGh12345".to_owned()),
            completed_at: at("2025-11-27T15:00:42Z"),
        }]
    }
}

/// Why a payment attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentFailureReason {
    /// The issuer declined the card.
    CardDeclined,
    /// Not enough money on the account.
    InsufficientFunds,
    /// The card has expired.
    ExpiredCard,
    /// Strong customer authentication (3-D Secure) failed.
    AuthenticationFailed,
    /// The provider or our fraud screening refused it.
    FraudSuspected,
    /// The payment processor failed; nothing is wrong with the payment itself.
    ProcessorError,
}

/// `payment.failed` v1: an attempt to pay for an order failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentFailed {
    /// The failed payment attempt's id.
    pub payment_id: String,
    /// The order being paid for.
    pub order_id: String,
    /// The amount that was attempted.
    pub amount: Money,
    /// How the customer tried to pay.
    pub method: PaymentMethod,
    /// Why it failed.
    pub reason_code: PaymentFailureReason,
    /// A human-readable explanation from the provider, if any.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub message: Option<String>,
    /// Whether trying again (same method) may succeed.
    pub retryable: bool,
    /// When the attempt failed.
    pub failed_at: DateTime<Utc>,
}

impl DomainEvent for PaymentFailed {
    const TYPE: &'static str = "payment.failed";
    const VERSION: u32 = 1;
    const TOPIC: &'static str = TOPIC;

    fn subject(&self) -> Option<String> {
        Some(self.order_id.clone())
    }

    fn examples() -> Vec<Self> {
        vec![PaymentFailed {
            payment_id: "01JDQ7F2M5P8R1T4W7Y0B3D6G9".to_owned(),
            order_id: ORDER.to_owned(),
            amount: usd(5998),
            method: PaymentMethod::Card,
            reason_code: PaymentFailureReason::InsufficientFunds,
            message: Some("Your card has insufficient funds.".to_owned()),
            retryable: true,
            failed_at: at("2025-11-27T15:00:20Z"),
        }]
    }
}

/// Why money was returned to a customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundReason {
    /// The customer asked.
    CustomerRequest,
    /// The order was cancelled after payment.
    OrderCancelled,
    /// The customer was charged twice.
    Duplicate,
    /// The payment was fraudulent.
    Fraudulent,
    /// The goods arrived damaged.
    DamagedItem,
}

/// `payment.refunded` v1: all or part of a captured payment was returned to the customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentRefunded {
    /// The refund's id.
    pub refund_id: String,
    /// The payment refunded.
    pub payment_id: String,
    /// The order the payment was for.
    pub order_id: String,
    /// The amount returned (at most the amount captured).
    pub amount: Money,
    /// Why the money was returned.
    pub reason: RefundReason,
    /// When the refund was issued.
    pub refunded_at: DateTime<Utc>,
}

impl DomainEvent for PaymentRefunded {
    const TYPE: &'static str = "payment.refunded";
    const VERSION: u32 = 1;
    const TOPIC: &'static str = TOPIC;

    fn subject(&self) -> Option<String> {
        Some(self.order_id.clone())
    }

    fn examples() -> Vec<Self> {
        vec![PaymentRefunded {
            refund_id: "01JDQ7G0R3T6W9Y2B5E8H1K4N7".to_owned(),
            payment_id: PAYMENT.to_owned(),
            order_id: ORDER.to_owned(),
            amount: usd(2500),
            reason: RefundReason::DamagedItem,
            refunded_at: at("2025-12-03T10:00:00Z"),
        }]
    }
}

/// `order.shipped` v1: an order (or all its remaining items) was handed to a carrier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderShipped {
    /// The order shipped.
    pub order_id: String,
    /// The shipment's id.
    pub shipment_id: String,
    /// The carrier (`ups`, `dhl`, `correios`…).
    pub carrier: String,
    /// The carrier's tracking number.
    pub tracking_number: String,
    /// A page where the customer can follow the parcel, if the carrier has one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tracking_url: Option<String>,
    /// When the carrier took the parcel.
    pub shipped_at: DateTime<Utc>,
    /// The expected delivery date (local to the address), if known.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub estimated_delivery: Option<NaiveDate>,
}

impl DomainEvent for OrderShipped {
    const TYPE: &'static str = "order.shipped";
    const VERSION: u32 = 1;
    const TOPIC: &'static str = TOPIC;

    fn subject(&self) -> Option<String> {
        Some(self.order_id.clone())
    }

    fn examples() -> Vec<Self> {
        vec![OrderShipped {
            order_id: ORDER.to_owned(),
            shipment_id: "01JDQ7H4S7V0X3Z6C9F2J5M8Q1".to_owned(),
            carrier: "dhl".to_owned(),
            tracking_number: "JD014600003828460012".to_owned(),
            tracking_url: Some(
                "https://www.dhl.com/track?tracking-id=JD014600003828460012".to_owned(),
            ),
            shipped_at: at("2025-11-28T16:00:00Z"),
            estimated_delivery: NaiveDate::from_ymd_opt(2025, 12, 2),
        }]
    }
}

/// Who cancelled an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelledBy {
    /// The customer.
    Customer,
    /// The merchant (out of stock, cannot ship there…).
    Merchant,
    /// Fraud screening.
    Fraud,
    /// The platform (payment never completed, …).
    System,
}

/// `order.cancelled` v1: an order was cancelled before it shipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderCancelled {
    /// The order cancelled.
    pub order_id: String,
    /// Who cancelled it.
    pub cancelled_by: CancelledBy,
    /// Why, in words, if given.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    /// What must be refunded, when the order was already paid.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub refund_due: Option<Money>,
    /// When it was cancelled.
    pub cancelled_at: DateTime<Utc>,
}

impl DomainEvent for OrderCancelled {
    const TYPE: &'static str = "order.cancelled";
    const VERSION: u32 = 1;
    const TOPIC: &'static str = TOPIC;

    fn subject(&self) -> Option<String> {
        Some(self.order_id.clone())
    }

    fn examples() -> Vec<Self> {
        vec![
            OrderCancelled {
                order_id: ORDER.to_owned(),
                cancelled_by: CancelledBy::Customer,
                reason: Some("Ordered the wrong size.".to_owned()),
                refund_due: Some(usd(5998)),
                cancelled_at: at("2025-11-27T17:00:00Z"),
            },
            OrderCancelled {
                order_id: ORDER_2.to_owned(),
                cancelled_by: CancelledBy::System,
                reason: None,
                refund_due: None,
                cancelled_at: at("2025-11-29T10:20:00Z"),
            },
        ]
    }
}
