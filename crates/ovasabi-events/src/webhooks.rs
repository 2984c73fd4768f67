//! Events of the `webhooks` service, on topic `webhook.events`. Their subject is the
//! endpoint id.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::ADA;
use crate::{at, DomainEvent};

/// Why deliveries to a webhook endpoint were stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisableReason {
    /// Too many deliveries in a row failed.
    ConsecutiveFailures,
    /// The endpoint's TLS certificate is invalid.
    InvalidCertificate,
    /// The endpoint answered `410 Gone`.
    Gone,
    /// The owner disabled it.
    OwnerRequest,
}

/// `webhook.endpoint_disabled` v1: deliveries to a webhook endpoint were stopped; its owner
/// must re-enable it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookEndpointDisabled {
    /// The endpoint disabled.
    pub endpoint_id: String,
    /// The user who registered the endpoint.
    pub owner_id: String,
    /// The endpoint's URL.
    pub url: String,
    /// Why it was disabled.
    pub reason: DisableReason,
    /// Failed deliveries in a row before it was disabled.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub consecutive_failures: Option<u32>,
    /// The HTTP status of the last failed delivery, if it got one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub last_status_code: Option<u16>,
    /// When deliveries stopped.
    pub disabled_at: DateTime<Utc>,
}

impl DomainEvent for WebhookEndpointDisabled {
    const TYPE: &'static str = "webhook.endpoint_disabled";
    const VERSION: u32 = 1;
    const TOPIC: &'static str = "webhook.events";

    fn subject(&self) -> Option<String> {
        Some(self.endpoint_id.clone())
    }

    fn examples() -> Vec<Self> {
        vec![WebhookEndpointDisabled {
            endpoint_id: "01JDQDT0D3G6K9N2R5T8W1Y4B7".to_owned(),
            owner_id: ADA.to_owned(),
            url: "https://hooks.example.com/ovasabi".to_owned(),
            reason: DisableReason::ConsecutiveFailures,
            consecutive_failures: Some(50),
            last_status_code: Some(503),
            disabled_at: at("2025-12-01T03:00:00Z"),
        }]
    }
}
