//! The shared Bus contract: every scenario of `ovasabi-conformance`, run on NATS JetStream.
//!
//! Needs a NATS server with JetStream at `OVASABI_TEST_NATS_URL` (default
//! `nats://127.0.0.1:4222`); without one every scenario prints why it is skipped and passes,
//! unless `OVASABI_REQUIRE_SERVICES=1`, where it fails. A "restart" closes the client and
//! connects again: the state is in the server. Scenarios use unique topic names, so they
//! share the server, and each scenario's streams are deleted when it ends, passed or failed
//! ([`Backend::teardown`]). As a backstop (a test process killed midway), the first bus
//! opened also deletes conformance streams left from runs more than 15 minutes old. Stress
//! mode: `OVASABI_STRESS=1 cargo test -p ovasabi-nats --test conformance stress_10x`.
//!
//! The whole suite runs twice: once without a namespace (the tests at the top level) and once
//! with one (`NatsConfig::namespace`, the tests in `namespaced::`; each scenario in a
//! namespace of its own, `conf-<token>`).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ovasabi_conformance::{Backend, Capabilities};
use ovasabi_core::{Bus, BusError};
use ovasabi_nats::async_nats::jetstream;
use ovasabi_nats::config::data_limit;
use ovasabi_nats::layout;
use ovasabi_nats::testing::{server_or_skip, ServerProbe};
use ovasabi_nats::{NatsBus, NatsConfig};

/// NATS at the tests' server.
struct Nats {
    server: ServerProbe,
    /// The buses' namespace, if any.
    namespace: Option<String>,
}

/// The first part of the conformance runs' namespaces.
const NAMESPACE_PREFIX: &str = "conf-";

impl Nats {
    /// The backend, or `None` (the skip printed) when no server is reachable.
    fn available() -> Option<Nats> {
        server_or_skip("the NATS conformance suite").map(|server| Nats {
            server,
            namespace: None,
        })
    }

    /// The backend with buses in a namespace of their own, or `None` as [`Nats::available`].
    fn namespaced() -> Option<Nats> {
        let token = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        server_or_skip("the namespaced NATS conformance suite").map(|server| Nats {
            server,
            namespace: Some(format!("{NAMESPACE_PREFIX}{token}")),
        })
    }

    fn config(&self) -> NatsConfig {
        let config = NatsConfig::new(&self.server.url);
        match &self.namespace {
            Some(ns) => config.namespace(ns),
            None => config,
        }
    }
}

#[ovasabi_conformance::async_trait]
impl Backend for Nats {
    async fn open(&self) -> Result<Arc<dyn Bus>, BusError> {
        let bus = NatsBus::connect(self.config()).await?;
        remove_stale_streams(&bus).await;
        Ok(Arc::new(bus))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // The server's max_payload (1 MiB by default) bounds a whole message, so 64 KiB
            // of it stay for the attributes: see ovasabi_nats::config::data_limit.
            max_data_bytes: data_limit(NatsConfig::DEFAULT_MAX_DATA_BYTES, self.server.max_payload),
            ..Capabilities::all("nats")
        }
    }

    /// Deletes the scenario's streams (a topic that was never created is no stream: the
    /// server answers "not found", which is fine).
    async fn teardown(&self, topics: &[String]) {
        use futures::StreamExt;
        let client = match ovasabi_nats::async_nats::connect(self.server.url.as_str()).await {
            Ok(client) => client,
            Err(e) => {
                println!("note: cannot connect to delete the scenario's streams: {e}");
                return;
            }
        };
        let js = jetstream::new(client.clone());
        futures::stream::iter(topics)
            .for_each_concurrent(16, |topic| {
                let js = js.clone();
                async move {
                    let stored = layout::qualified_topic(self.namespace.as_deref(), topic);
                    let stream = layout::stream_name(&stored);
                    if let Err(e) = js.delete_stream(&stream).await {
                        if !e.to_string().contains("not found") {
                            println!("note: deleting stream {stream} of `{topic}`: {e}");
                        }
                    }
                }
            })
            .await;
        let _ = client.drain().await;
    }
}

/// Deletes conformance streams (`OVASABI_conf_…`, and `OVASABI___ns_conf-…` of the
/// namespaced runs) created more than 15 minutes ago (no scenario runs that long), once per
/// test process and for at most 15 s: a backstop for runs killed before their teardown.
async fn remove_stale_streams(bus: &NatsBus) {
    use futures::{StreamExt, TryStreamExt};
    static DONE: OnceLock<()> = OnceLock::new();
    if DONE.set(()).is_err() {
        return;
    }
    let js = jetstream::new(bus.client().clone());
    let cutoff = chrono::Utc::now() - Duration::from_secs(15 * 60);
    let cleaning = async {
        let Ok(streams) = js.streams().try_collect::<Vec<_>>().await else {
            return;
        };
        let stale: Vec<String> = streams
            .into_iter()
            .filter(|info| {
                let name = &info.config.name;
                // A namespace's streams are `OVASABI___ns_<namespace>_…`.
                let namespaced = format!("OVASABI___ns_{NAMESPACE_PREFIX}");
                (name.starts_with("OVASABI_conf_") || name.starts_with(&namespaced))
                    && info.created < cutoff
            })
            .map(|info| info.config.name)
            .collect();
        futures::stream::iter(stale)
            .for_each_concurrent(16, |name| {
                let js = js.clone();
                async move {
                    let _ = js.delete_stream(&name).await;
                }
            })
            .await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(15), cleaning).await;
}

ovasabi_conformance::conformance_tests!(available: Nats::available());

/// The suite again, each scenario's buses in a namespace of their own.
mod namespaced {
    ovasabi_conformance::conformance_tests!(available: super::Nats::namespaced());
}
