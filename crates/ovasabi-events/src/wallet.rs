//! Events of the `wallet` service (OVASABI coins), on topic `wallet.events`. Their subject is
//! the user whose wallet is credited or, for transfers, debited.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{ADA, BO, EVENT_ORDER_PLACED, EVENT_USER_REGISTERED, ORDER};
use crate::{at, DomainEvent};

const TOPIC: &str = "wallet.events";

/// What a coin reward is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RewardReason {
    /// Welcome coins for a new account.
    SignupBonus,
    /// Coins back on an order.
    OrderReward,
    /// Coins for publishing content.
    PostReward,
    /// Coins for inviting a user who signed up.
    ReferralBonus,
}

/// `coin.mined` v1: new coins were created and credited to a user's wallet as a reward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoinMined {
    /// The id of this credit (the reward's idempotency key).
    pub mint_id: String,
    /// The user credited.
    pub user_id: String,
    /// How many coins were credited.
    pub amount: u64,
    /// What the reward is for.
    pub reason: RewardReason,
    /// The id of the event that earned the reward (an `order.placed`, a `user.registered`…).
    pub cause_event_id: String,
    /// The wallet's balance after the credit, in coins.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub balance_after: Option<u64>,
    /// When the coins were credited.
    pub mined_at: DateTime<Utc>,
}

impl DomainEvent for CoinMined {
    const TYPE: &'static str = "coin.mined";
    const VERSION: u32 = 1;
    const TOPIC: &'static str = TOPIC;

    fn subject(&self) -> Option<String> {
        Some(self.user_id.clone())
    }

    fn examples() -> Vec<Self> {
        vec![
            CoinMined {
                mint_id: "01JDQ8J8T1W4Y7B0D3G6K9N2R5".to_owned(),
                user_id: ADA.to_owned(),
                amount: 60,
                reason: RewardReason::OrderReward,
                cause_event_id: EVENT_ORDER_PLACED.to_owned(),
                balance_after: Some(160),
                mined_at: at("2025-11-27T15:01:00Z"),
            },
            CoinMined {
                mint_id: "01JDQ8JC6F9H2K5N8Q1S4V7X0Z".to_owned(),
                user_id: ADA.to_owned(),
                amount: 100,
                reason: RewardReason::SignupBonus,
                cause_event_id: EVENT_USER_REGISTERED.to_owned(),
                balance_after: None,
                mined_at: at("2025-11-27T10:15:02Z"),
            },
        ]
    }
}

/// `coin.transferred` v1: coins moved from one user's wallet to another's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoinTransferred {
    /// The transfer's id.
    pub transfer_id: String,
    /// The user debited.
    pub from_user_id: String,
    /// The user credited.
    pub to_user_id: String,
    /// How many coins moved.
    pub amount: u64,
    /// The sender's note, if any.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub memo: Option<String>,
    /// When the transfer was booked.
    pub transferred_at: DateTime<Utc>,
}

impl DomainEvent for CoinTransferred {
    const TYPE: &'static str = "coin.transferred";
    const VERSION: u32 = 1;
    const TOPIC: &'static str = TOPIC;

    /// The debited wallet: its transfers must be applied in order to keep its balance right.
    fn subject(&self) -> Option<String> {
        Some(self.from_user_id.clone())
    }

    fn examples() -> Vec<Self> {
        vec![CoinTransferred {
            transfer_id: "01JDQ8K2V5X8Z1C4F7H0M3P6S9".to_owned(),
            from_user_id: ADA.to_owned(),
            to_user_id: BO.to_owned(),
            amount: 25,
            memo: Some("for the coffee".to_owned()),
            transferred_at: at("2025-11-28T09:15:00Z"),
        }]
    }
}

/// `coin.spent` v1: a user spent coins of their wallet on one of their orders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoinSpent {
    /// The spend's id.
    pub spend_id: String,
    /// The user debited: the order's customer.
    pub user_id: String,
    /// The order the coins were spent on.
    pub order_id: String,
    /// How many coins were spent.
    pub amount: u64,
    /// The wallet's balance after the debit, in coins.
    pub balance_after: u64,
    /// When the coins were spent.
    pub spent_at: DateTime<Utc>,
}

impl DomainEvent for CoinSpent {
    const TYPE: &'static str = "coin.spent";
    const VERSION: u32 = 1;
    const TOPIC: &'static str = TOPIC;

    fn subject(&self) -> Option<String> {
        Some(self.user_id.clone())
    }

    fn examples() -> Vec<Self> {
        vec![CoinSpent {
            spend_id: "01JDQ8M4A7C0E3G6J9L2N5Q8T1".to_owned(),
            user_id: ADA.to_owned(),
            order_id: ORDER.to_owned(),
            amount: 40,
            balance_after: 60,
            spent_at: at("2025-11-27T14:56:00Z"),
        }]
    }
}

/// Why coins spent on an order went back to the wallet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CoinRefundReason {
    /// The order was cancelled (by the customer, an operator, or for want of payment).
    OrderCancelled,
    /// The order's payment was refunded.
    PaymentRefunded,
    /// Fraud screening put the order on hold.
    FraudHold,
}

/// `coin.refunded` v1: coins spent on an order went back to the wallet (the order was
/// cancelled, refunded or held for fraud review).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoinRefunded {
    /// The refund's id (derived from its cause: one refund per order and cause).
    pub refund_id: String,
    /// The user credited: the order's customer.
    pub user_id: String,
    /// The order whose coins are given back.
    pub order_id: String,
    /// How many coins went back: everything spent on the order not refunded before.
    pub amount: u64,
    /// Why.
    pub reason: CoinRefundReason,
    /// The id of the event that caused the refund (an `order.cancelled`…).
    pub cause_event_id: String,
    /// The wallet's balance after the credit, in coins.
    pub balance_after: u64,
    /// When the coins were credited.
    pub refunded_at: DateTime<Utc>,
}

impl DomainEvent for CoinRefunded {
    const TYPE: &'static str = "coin.refunded";
    const VERSION: u32 = 1;
    const TOPIC: &'static str = TOPIC;

    fn subject(&self) -> Option<String> {
        Some(self.user_id.clone())
    }

    fn examples() -> Vec<Self> {
        vec![CoinRefunded {
            refund_id: "4b0f6a52-9d1e-5c3a-8f7b-2e6d1c0a9b8e".to_owned(),
            user_id: ADA.to_owned(),
            order_id: ORDER.to_owned(),
            amount: 40,
            reason: CoinRefundReason::OrderCancelled,
            cause_event_id: "01936f31-2d4e-7f6a-8b9c-0d1e2f3a4b5c".to_owned(),
            balance_after: 100,
            refunded_at: at("2025-11-27T15:20:00Z"),
        }]
    }
}
