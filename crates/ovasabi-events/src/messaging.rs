//! Events of the `messaging` service, on topic `messaging.events`. Their subject is the
//! conversation id, so a conversation's messages stay in order.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{ADA, BO, MESSAGE};
use crate::{at, DomainEvent};

/// `message.sent` v1: a user sent a message in a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageSent {
    /// The message's id.
    pub message_id: String,
    /// The conversation it belongs to.
    pub conversation_id: String,
    /// The user who sent it.
    pub sender_id: String,
    /// The users it was delivered to (at least one).
    pub recipient_ids: Vec<String>,
    /// The message's text.
    pub body: String,
    /// Attached file URLs.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub attachment_urls: Option<Vec<String>>,
    /// When it was sent.
    pub sent_at: DateTime<Utc>,
}

impl DomainEvent for MessageSent {
    const TYPE: &'static str = "message.sent";
    const VERSION: u32 = 1;
    const TOPIC: &'static str = "messaging.events";

    fn subject(&self) -> Option<String> {
        Some(self.conversation_id.clone())
    }

    fn examples() -> Vec<Self> {
        vec![MessageSent {
            message_id: MESSAGE.to_owned(),
            conversation_id: "01JDQ9M6W9Y2B5E8H1K4N7Q0T3".to_owned(),
            sender_id: ADA.to_owned(),
            recipient_ids: vec![BO.to_owned()],
            body: "Did the parcel arrive?".to_owned(),
            attachment_urls: Some(vec![
                "https://cdn.ovasabi.example/files/receipt.pdf".to_owned()
            ]),
            sent_at: at("2025-12-02T18:00:00Z"),
        }]
    }
}
