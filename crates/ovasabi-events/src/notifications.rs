//! Events of the `notifications` service, on topic `notification.events`. Their subject is
//! the recipient's user id.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::ADA;
use crate::{at, DomainEvent};

/// How a notification is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// An email.
    Email,
    /// A mobile push notification.
    Push,
    /// A text message.
    Sms,
    /// The notification centre inside the app.
    InApp,
}

/// `notification.sent` v1: a notification was handed to a delivery channel (email provider,
/// push service…).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationSent {
    /// The notification's id.
    pub notification_id: String,
    /// The recipient.
    pub user_id: String,
    /// How it was sent.
    pub channel: Channel,
    /// The template used (`order_shipped`, `welcome`…).
    pub template: String,
    /// The id of the event that triggered it, if any.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cause_event_id: Option<String>,
    /// The delivery provider's id for the message, if any.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub provider_message_id: Option<String>,
    /// When it was handed over.
    pub sent_at: DateTime<Utc>,
}

impl DomainEvent for NotificationSent {
    const TYPE: &'static str = "notification.sent";
    const VERSION: u32 = 1;
    const TOPIC: &'static str = "notification.events";

    fn subject(&self) -> Option<String> {
        Some(self.user_id.clone())
    }

    fn examples() -> Vec<Self> {
        vec![NotificationSent {
            notification_id: "01JDQCS6C9F2J5M8Q1S4V7X0Z3".to_owned(),
            user_id: ADA.to_owned(),
            channel: Channel::Email,
            template: "order_shipped".to_owned(),
            cause_event_id: Some("01936f3b-0a1b-7c2d-8e3f-4a5b6c7d8e9f".to_owned()),
            provider_message_id: Some("0100019370a1b2c3-msg".to_owned()),
            sent_at: at("2025-11-28T16:00:03Z"),
        }]
    }
}
