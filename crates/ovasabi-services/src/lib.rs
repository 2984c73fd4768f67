//! OVASABI's services, and the runtime that runs them.
//!
//! A service owns its tables (its [`Service::migrations`]) and runs consumers on the bus;
//! `ovasabi serve <name>…` runs the chosen services in one process against the configured
//! bus and database, `ovasabi up` runs them all on the embedded bus and SQLite. Services
//! never call each other: they meet on the bus.
//!
//! # Layout
//! - [`runtime`] — [`Service`], [`Context`], [`Runtime`]: starting services, graceful
//!   shutdown, and how several processes share a service's work.
//! - [`http`] — what HTTP handlers share: errors naming the field, request metadata
//!   (correlation id, trace context, idempotency key), [`http::Api::transact`] (state change
//!   + events in one transaction, once per idempotency key).
//! - [`relay`] — the outbox relay (one per database, by lease).
//! - [`reactor`] — consumers whose effect happens once per event ([`reactor::Reactor`]), under
//!   a declared order per subject.
//! - [`openapi`] — `GET /openapi.json`, merged from the services.
//! - [`schemas`] — the event contracts over HTTP (`/v1/schemas…`, `/asyncapi.yaml`).
//! - [`dashboard`] — the live dashboard at `/` and the API it reads (`/v1/events/stream`,
//!   `/v1/trace/{id}`, `/v1/dashboard/…`).
//! - The services, one module each, each owning its tables: [`users`], [`content`],
//!   [`commerce`], [`wallet`], [`messaging`], [`notifications`], [`moderation`],
//!   [`analytics`], [`webhooks`] (partners' signed webhooks), [`audit`] (the audit trail).
//! - This module — the [`catalog`] of services and [`select`]ing them by name.

pub mod analytics;
pub mod audit;
pub mod commerce;
pub mod content;
pub mod dashboard;
pub mod dlq;
pub mod http;
mod live;
pub mod messaging;
pub mod metrics;
pub mod moderation;
pub mod notifications;
pub mod openapi;
pub mod reactor;
pub mod relay;
pub mod runtime;
pub mod schemas;
pub mod status;
pub mod users;
pub mod wallet;
pub mod webhooks;

use std::sync::Arc;

pub use audit::AuditService;
pub use runtime::{
    ConsumerInfo, ConsumerReport, ConsumerSpec, Context, Runtime, Service, ServiceError, Settings,
};

/// Settings of single services, from the command line.
#[derive(Clone, Debug, Default)]
pub struct ServiceOptions {
    /// Topics and patterns the audit trail records (default `*.events`).
    pub audit_topics: Vec<String>,
    /// Where the notifications' default senders write `notifications-<channel>.jsonl`
    /// (they log instead when `None`).
    pub notifications_dir: Option<std::path::PathBuf>,
    /// The moderation service's rules file (the built-in rules when `None`).
    pub moderation_rules: Option<std::path::PathBuf>,
    /// How long commerce waits for an order's payment before cancelling it: `None` for
    /// [`commerce::CommerceService::DEFAULT_PAYMENT_TIMEOUT`], zero for never.
    pub payment_timeout: Option<std::time::Duration>,
    /// The SMTP server (`host:port`) and sender address notifications email through; the
    /// default file sender when `None`.
    pub smtp: Option<(String, String)>,
    /// What the webhooks' SSRF guard lets through anyway: addresses on its allowlist, and
    /// `http://` when `allow_http` (local development and tests). Strict by default.
    pub webhooks: ovasabi_webhooks::ssrf::Policy,
}

/// Every service, in the order `ovasabi up` starts them.
pub fn catalog(options: &ServiceOptions) -> Vec<Arc<dyn Service>> {
    vec![
        Arc::new(users::UsersService),
        Arc::new(content::ContentService),
        Arc::new(
            commerce::CommerceService::default_provider().payment_timeout(
                match options.payment_timeout {
                    None => Some(commerce::CommerceService::DEFAULT_PAYMENT_TIMEOUT),
                    Some(d) if d.is_zero() => None,
                    Some(d) => Some(d),
                },
            ),
        ),
        Arc::new(wallet::WalletService),
        Arc::new(messaging::MessagingService),
        Arc::new({
            let service = notifications::NotificationsService::with_outbox_dir(
                options.notifications_dir.clone(),
            );
            match &options.smtp {
                Some((server, from)) => service.with_sender(
                    "email",
                    Arc::new(notifications::SmtpSender::new(server.clone(), from.clone())),
                ),
                None => service,
            }
        }),
        Arc::new(moderation::ModerationService::with_rules(
            options.moderation_rules.clone(),
        )),
        Arc::new(analytics::AnalyticsService::default()),
        Arc::new(webhooks::WebhooksService::new(options.webhooks.clone())),
        Arc::new(AuditService::new(options.audit_topics.clone())),
    ]
}

/// The services of `catalog` named in `names`, in the catalog's order; `all` names every
/// one. Unknown names and an empty choice are errors that list the services there are.
pub fn select(
    catalog: &[Arc<dyn Service>],
    names: &[String],
) -> Result<Vec<Arc<dyn Service>>, ServiceError> {
    let known = || {
        catalog
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if names.is_empty() {
        return Err(ServiceError::NoneChosen { known: known() });
    }
    if let Some(unknown) = names
        .iter()
        .find(|n| *n != "all" && !catalog.iter().any(|s| s.name() == n.as_str()))
    {
        return Err(ServiceError::Unknown {
            name: unknown.clone(),
            known: known(),
        });
    }
    let all = names.iter().any(|n| n == "all");
    Ok(catalog
        .iter()
        .filter(|s| all || names.iter().any(|n| n == s.name()))
        .cloned()
        .collect())
}
