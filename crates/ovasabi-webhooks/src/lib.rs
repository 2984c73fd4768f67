//! Webhook delivery building blocks, shared by the `webhooks` service and its tests:
//!
//! - [`signing`]: Standard Webhooks 1.0 signatures (`webhook-id`, `webhook-timestamp`,
//!   `webhook-signature`), signing and verifying, and `whsec_` secrets;
//! - [`ssrf`]: the guard that keeps partner endpoints from reaching into our network: which
//!   addresses a delivery may connect to, checked after DNS resolution.

pub mod signing;
pub mod ssrf;

/// Makes ring the process's TLS crypto provider, once (later calls do nothing).
///
/// The workspace's HTTP client (reqwest over rustls, built without a crypto provider of its
/// own, so that no C toolchain is needed) refuses to build a client until a provider is
/// installed: every program and test that builds one calls this first. [`ssrf::client`]
/// calls it too.
pub fn install_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
