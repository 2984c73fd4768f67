//! Settings of a [`NatsBus`](crate::NatsBus), each with a default that works against a single
//! local `nats-server -js`.

use std::time::Duration;

use crate::provision::ProvisionConfig;

/// Room kept for an event's attributes (its `ce-*` headers) inside the server's `max_payload`:
/// 64 KiB, the most attributes an event may carry
/// ([`ovasabi_core::validate::MAX_ATTRIBUTES_BYTES`]).
pub const HEADER_ALLOWANCE: usize = 64 * 1024;

/// The largest payload a bus accepts, given its configured maximum and the server's
/// `max_payload` (the limit NATS puts on a whole message, headers included): the smaller of
/// `max_data_bytes` and `max_payload - HEADER_ALLOWANCE`.
///
/// A server left at its default `max_payload` of 1 MiB therefore accepts 960 KiB of data;
/// raise `max_payload` in the server's configuration (e.g. `max_payload: 2MB`) to accept the
/// full 1 MiB default.
pub fn data_limit(max_data_bytes: usize, max_payload: usize) -> usize {
    max_data_bytes.min(max_payload.saturating_sub(HEADER_ALLOWANCE))
}

/// Settings of a [`NatsBus`](crate::NatsBus).
#[derive(Clone, Debug)]
pub struct NatsConfig {
    /// Server URL(s), comma-separated (`nats://127.0.0.1:4222`).
    pub url: String,
    /// The connection's name, shown by the server's monitoring.
    pub connection_name: String,
    /// Largest payload (`data`) accepted, in bytes, before the server's own limit is applied
    /// (see [`data_limit`]). Default 1 MiB.
    pub max_data_bytes: usize,
    /// How streams created on first use (publish or subscribe) are set up: partitions,
    /// retention, replicas… Also the default of [`crate::provision::provision`].
    pub streams: ProvisionConfig,
    /// Bound on every JetStream API request, publish acknowledgement and acknowledgement
    /// confirmation. Default 10 s.
    pub request_timeout: Duration,
    /// How often a subscription with a wildcard pattern lists streams to find topics created
    /// after it started. Default 1 s.
    pub discovery_interval: Duration,
    /// How long one pull request waits at the server for messages before it is renewed.
    /// Default 5 s.
    pub pull_expiry: Duration,
    /// Most messages a subscription takes ahead of `next()` (its prefetch) to begin with, and
    /// whenever its events wait for its handler. Default 32.
    pub pull_batch: usize,
    /// Most messages a subscription takes ahead of `next()` once its handler keeps waiting
    /// for events the server has (the prefetch doubles from `pull_batch` up to this, and
    /// halves back as soon as events wait in the buffer); never more than the subscription's
    /// `max_in_flight`. Default 256.
    pub max_prefetch: usize,
    /// `MaxAckPending` of consumers without per-key order (a group's whole-topic consumer
    /// with [`Ordering::None`](ovasabi_core::Ordering::None), and the consumer of unkeyed
    /// events with `PerKey`): how many events the whole group may hold unacked at once.
    /// Default 20,000.
    pub max_ack_pending: i64,
    /// How long the server keeps an ephemeral group's consumers after its last subscriber
    /// stopped pulling (a safety net: closing or dropping the subscription deletes them).
    /// Default 60 s.
    pub ephemeral_inactive_threshold: Duration,
    /// The deployment's namespace on a shared server: with one, the bus's topics get
    /// streams, subjects and consumers of their own (`user.events` is stored as
    /// `_ns.<namespace>.user.events`, see [`crate::layout`]), invisible to buses of other
    /// namespaces or of none; events, dead-letter topics, patterns and listings still use
    /// the plain topic names. 1 to 64 characters of lower-case ASCII letters, digits and
    /// `-`, starting with a letter or digit ([`crate::layout::validate_namespace`],
    /// checked by [`NatsBus::connect`](crate::NatsBus::connect)). Default `None`: the
    /// streams of plain topic names.
    pub namespace: Option<String>,
}

impl NatsConfig {
    /// Default largest payload: 1 MiB.
    pub const DEFAULT_MAX_DATA_BYTES: usize = 1024 * 1024;
    /// The default server URL.
    pub const DEFAULT_URL: &'static str = "nats://127.0.0.1:4222";

    /// The defaults, connecting to `url`.
    pub fn new(url: impl Into<String>) -> Self {
        NatsConfig {
            url: url.into(),
            connection_name: "ovasabi".to_owned(),
            max_data_bytes: Self::DEFAULT_MAX_DATA_BYTES,
            streams: ProvisionConfig::default(),
            request_timeout: Duration::from_secs(10),
            discovery_interval: Duration::from_secs(1),
            pull_expiry: Duration::from_secs(5),
            pull_batch: 32,
            max_prefetch: 256,
            max_ack_pending: 20_000,
            ephemeral_inactive_threshold: Duration::from_secs(60),
            namespace: None,
        }
    }

    /// Sets the largest payload accepted.
    pub fn max_data_bytes(mut self, max: usize) -> Self {
        self.max_data_bytes = max;
        self
    }

    /// Sets how streams created on first use are set up.
    pub fn streams(mut self, streams: ProvisionConfig) -> Self {
        self.streams = streams;
        self
    }

    /// Sets the bound on API requests and acknowledgements.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets how often wildcard subscriptions look for new topics.
    pub fn discovery_interval(mut self, interval: Duration) -> Self {
        self.discovery_interval = interval;
        self
    }

    /// Puts the bus's topics in namespace `ns` (see the
    /// [`namespace`](NatsConfig#structfield.namespace) field).
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = Some(ns.into());
        self
    }

    /// Sets the connection's name.
    pub fn connection_name(mut self, name: impl Into<String>) -> Self {
        self.connection_name = name.into();
        self
    }
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig::new(Self::DEFAULT_URL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_limit_leaves_room_for_headers() {
        let mib = 1024 * 1024;
        assert_eq!(data_limit(mib, mib), mib - HEADER_ALLOWANCE);
        assert_eq!(data_limit(mib, 8 * mib), mib);
        assert_eq!(data_limit(mib, 1000), 0);
    }
}
