//! Events on topic `moderation.events`: flags and decisions of the `moderation` service, holds
//! of the `fraud` service. Their subject is the id of what is flagged, ruled on or held, so
//! everything about one target stays in order.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{BO, FLAG, HOLD, MESSAGE, MODERATOR, ORDER, POST};
use crate::{at, DomainEvent};

const TOPIC: &str = "moderation.events";

/// What a flag or a moderation decision is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModerationTarget {
    /// A piece of content (`content_id`).
    Content,
    /// A comment (`comment_id`).
    Comment,
    /// A direct message (`message_id`).
    Message,
    /// A user's profile (`user_id`).
    Profile,
}

/// Who raised a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlagSource {
    /// A user reported it.
    UserReport,
    /// A classifier or a rule flagged it.
    Automated,
}

/// The policy flagged content may break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlagReason {
    /// Unsolicited or repetitive promotion.
    Spam,
    /// Harassment or bullying.
    Harassment,
    /// Hate speech.
    HateSpeech,
    /// Nudity or sexual content.
    Nudity,
    /// Violence or threats.
    Violence,
    /// False or misleading claims.
    Misinformation,
    /// Anything else (see the note).
    Other,
}

/// `content.flagged` v1: a piece of content, a comment, a message or a profile was flagged
/// for moderator review.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentFlagged {
    /// The flag's id.
    pub flag_id: String,
    /// What was flagged.
    pub target_kind: ModerationTarget,
    /// The id of what was flagged (a content, comment, message or user id).
    pub target_id: String,
    /// Who raised the flag.
    pub source: FlagSource,
    /// The user who reported it, for user reports.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reporter_id: Option<String>,
    /// The policy it may break.
    pub reason: FlagReason,
    /// The reporter's or the classifier's explanation, if any.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub note: Option<String>,
    /// When it was flagged.
    pub flagged_at: DateTime<Utc>,
}

impl DomainEvent for ContentFlagged {
    const TYPE: &'static str = "content.flagged";
    const VERSION: u32 = 1;
    const TOPIC: &'static str = TOPIC;

    fn subject(&self) -> Option<String> {
        Some(self.target_id.clone())
    }

    fn examples() -> Vec<Self> {
        vec![
            ContentFlagged {
                flag_id: FLAG.to_owned(),
                target_kind: ModerationTarget::Content,
                target_id: POST.to_owned(),
                source: FlagSource::UserReport,
                reporter_id: Some(BO.to_owned()),
                reason: FlagReason::Misinformation,
                note: Some("The dates are wrong.".to_owned()),
                flagged_at: at("2025-11-29T20:00:00Z"),
            },
            ContentFlagged {
                flag_id: "01JDQAPB1E4H7K0N3Q6S9V2X5Z".to_owned(),
                target_kind: ModerationTarget::Message,
                target_id: MESSAGE.to_owned(),
                source: FlagSource::Automated,
                reporter_id: None,
                reason: FlagReason::Spam,
                note: None,
                flagged_at: at("2025-12-02T18:00:01Z"),
            },
        ]
    }
}

/// A moderation ruling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Keep it: it breaks no policy.
    Approve,
    /// Take it down.
    Remove,
    /// Keep it, and warn its author.
    Warn,
}

/// `moderation.decided` v1: a moderator (or an automated rule) ruled on something flagged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModerationDecided {
    /// The decision's id.
    pub decision_id: String,
    /// The flag this decision resolves, if it answers one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub flag_id: Option<String>,
    /// What was ruled on.
    pub target_kind: ModerationTarget,
    /// The id of what was ruled on.
    pub target_id: String,
    /// The ruling.
    pub decision: Decision,
    /// The moderator who decided, or `system` for automated rules.
    pub moderator_id: String,
    /// The explanation shown to the author, if any.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    /// When the decision was made.
    pub decided_at: DateTime<Utc>,
}

impl DomainEvent for ModerationDecided {
    const TYPE: &'static str = "moderation.decided";
    const VERSION: u32 = 1;
    const TOPIC: &'static str = TOPIC;

    fn subject(&self) -> Option<String> {
        Some(self.target_id.clone())
    }

    fn examples() -> Vec<Self> {
        vec![
            ModerationDecided {
                decision_id: "01JDQAQ8Z1C4F7H0M3P6S9V2X5".to_owned(),
                flag_id: Some(FLAG.to_owned()),
                target_kind: ModerationTarget::Content,
                target_id: POST.to_owned(),
                decision: Decision::Remove,
                moderator_id: MODERATOR.to_owned(),
                reason: Some("Contains false historical claims.".to_owned()),
                decided_at: at("2025-11-30T08:55:00Z"),
            },
            ModerationDecided {
                decision_id: "01JDQAQF4H7K0N3Q6S9V2X5Z8C".to_owned(),
                flag_id: None,
                target_kind: ModerationTarget::Message,
                target_id: MESSAGE.to_owned(),
                decision: Decision::Approve,
                moderator_id: "system".to_owned(),
                reason: None,
                decided_at: at("2025-12-02T18:00:05Z"),
            },
        ]
    }
}

/// What a fraud hold applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldTarget {
    /// A user: no orders, payments or transfers.
    User,
    /// An order: it does not ship.
    Order,
    /// A payment: it is not captured.
    Payment,
    /// A wallet: it cannot send coins.
    Wallet,
}

/// The signal that triggered a fraud hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldReason {
    /// Too many orders, payments or transfers in a short time.
    Velocity,
    /// The payment looks likely to be charged back.
    ChargebackRisk,
    /// The account looks taken over (new device, changed email, unusual orders).
    AccountTakeover,
    /// The card is reported stolen.
    StolenCard,
    /// One person behind several accounts (farming rewards, say).
    MultiAccounting,
    /// An analyst asked for a review.
    ManualReview,
}

/// `fraud.hold_placed` v1: fraud screening put something on hold until the hold is released.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FraudHoldPlaced {
    /// The hold's id.
    pub hold_id: String,
    /// What is held.
    pub target_kind: HoldTarget,
    /// The id of what is held (a user, order, payment or wallet id).
    pub target_id: String,
    /// The signal that triggered the hold.
    pub reason_code: HoldReason,
    /// The screening's risk score, 0 (safe) to 1 (certain fraud).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub risk_score: Option<f64>,
    /// When the hold was placed.
    pub placed_at: DateTime<Utc>,
    /// When the hold lapses by itself if nobody reviews it, if ever.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub expires_at: Option<DateTime<Utc>>,
}

impl DomainEvent for FraudHoldPlaced {
    const TYPE: &'static str = "fraud.hold_placed";
    const VERSION: u32 = 1;
    const TOPIC: &'static str = TOPIC;

    fn subject(&self) -> Option<String> {
        Some(self.target_id.clone())
    }

    fn examples() -> Vec<Self> {
        vec![FraudHoldPlaced {
            hold_id: HOLD.to_owned(),
            target_kind: HoldTarget::Order,
            target_id: ORDER.to_owned(),
            reason_code: HoldReason::Velocity,
            risk_score: Some(0.82),
            placed_at: at("2025-11-27T15:00:05Z"),
            expires_at: Some(at("2025-11-30T15:00:05Z")),
        }]
    }
}

/// How a fraud hold ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldResolution {
    /// A review found nothing wrong.
    Cleared,
    /// A review confirmed fraud; the target stays blocked by other means.
    ConfirmedFraud,
    /// Nobody reviewed it before it lapsed.
    Expired,
}

/// `fraud.hold_released` v1: a fraud hold was lifted, with the outcome of its review.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FraudHoldReleased {
    /// The hold lifted.
    pub hold_id: String,
    /// What was held.
    pub target_kind: HoldTarget,
    /// The id of what was held.
    pub target_id: String,
    /// How the hold ended.
    pub resolution: HoldResolution,
    /// The analyst who released it, when a person reviewed it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub released_by: Option<String>,
    /// When the hold was lifted.
    pub released_at: DateTime<Utc>,
}

impl DomainEvent for FraudHoldReleased {
    const TYPE: &'static str = "fraud.hold_released";
    const VERSION: u32 = 1;
    const TOPIC: &'static str = TOPIC;

    fn subject(&self) -> Option<String> {
        Some(self.target_id.clone())
    }

    fn examples() -> Vec<Self> {
        vec![FraudHoldReleased {
            hold_id: HOLD.to_owned(),
            target_kind: HoldTarget::Order,
            target_id: ORDER.to_owned(),
            resolution: HoldResolution::Cleared,
            released_by: Some(MODERATOR.to_owned()),
            released_at: at("2025-11-27T16:30:00Z"),
        }]
    }
}
