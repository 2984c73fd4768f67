//! Webhook delivery building blocks, shared by the `webhooks` service and its tests:
//!
//! - [`signing`]: Standard Webhooks 1.0 signatures (`webhook-id`, `webhook-timestamp`,
//!   `webhook-signature`), signing and verifying, and `whsec_` secrets;
//! - [`ssrf`]: the guard that keeps partner endpoints from reaching into our network: which
//!   addresses a delivery may connect to, checked after DNS resolution.

pub mod signing;
pub mod ssrf;
