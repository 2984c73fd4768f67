//! The shared Bus contract: every scenario of `ovasabi-conformance`, run on NATS JetStream.
//!
//! Needs a NATS server with JetStream at `OVASABI_TEST_NATS_URL` (default
//! `nats://127.0.0.1:4222`); without one every scenario prints why it is skipped and passes,
//! unless `OVASABI_REQUIRE_SERVICES=1`, where it fails. A "restart" closes the client and
//! connects again: the state is in the server. Scenarios use unique topic names, so they
//! share the server; the first bus opened deletes conformance streams left from runs more
//! than 15 minutes old. Stress mode: `OVASABI_STRESS=1 cargo test -p ovasabi-nats --test
//! conformance stress_10x`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ovasabi_conformance::{Backend, Capabilities};
use ovasabi_core::{Bus, BusError};
use ovasabi_nats::config::data_limit;
use ovasabi_nats::testing::{server_or_skip, ServerProbe};
use ovasabi_nats::{NatsBus, NatsConfig};

/// NATS at the tests' server; `Default` is the stand-in used when there is none (see the
/// macro call below).
#[derive(Default)]
struct Nats {
    server: Option<ServerProbe>,
}

impl Nats {
    fn available() -> Option<Nats> {
        server_or_skip("the NATS conformance suite").map(|server| Nats {
            server: Some(server),
        })
    }
}

#[ovasabi_conformance::async_trait]
impl Backend for Nats {
    async fn open(&self) -> Result<Arc<dyn Bus>, BusError> {
        let Some(server) = &self.server else {
            return Err(BusError::Unavailable(
                "no NATS server with JetStream (see the skip message above)".to_owned(),
            ));
        };
        let bus = NatsBus::connect(NatsConfig::new(&server.url)).await?;
        remove_stale_streams(&bus).await;
        Ok(Arc::new(bus))
    }

    fn capabilities(&self) -> Capabilities {
        let max_payload = self.server.as_ref().map_or(1 << 20, |s| s.max_payload);
        Capabilities {
            // The server's max_payload (1 MiB by default) bounds a whole message, so 64 KiB
            // of it stay for the attributes: see ovasabi_nats::config::data_limit.
            max_data_bytes: data_limit(NatsConfig::DEFAULT_MAX_DATA_BYTES, max_payload),
            ..Capabilities::all("nats")
        }
    }
}

/// Deletes conformance streams (`OVASABI_conf_…`) created more than 15 minutes ago (no
/// scenario runs that long), once per test process and for at most 15 s: the suite never
/// deletes what it creates.
async fn remove_stale_streams(bus: &NatsBus) {
    use futures::{StreamExt, TryStreamExt};
    static DONE: OnceLock<()> = OnceLock::new();
    if DONE.set(()).is_err() {
        return;
    }
    let js = ovasabi_nats::async_nats::jetstream::new(bus.client().clone());
    let cutoff = chrono::Utc::now() - Duration::from_secs(15 * 60);
    let cleaning = async {
        let Ok(streams) = js.streams().try_collect::<Vec<_>>().await else {
            return;
        };
        let stale: Vec<String> = streams
            .into_iter()
            .filter(|info| info.config.name.starts_with("OVASABI_conf_") && info.created < cutoff)
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

// When no server is reachable, `return Default::default()` ends each scenario's test early
// (the skip was printed by `server_or_skip`); inside the stress test's closure the same
// words yield the stand-in, whose `open` fails with a clear message.
ovasabi_conformance::conformance_tests!(match Nats::available() {
    Some(nats) => nats,
    None => return Default::default(),
});
