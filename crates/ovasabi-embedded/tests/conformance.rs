//! The shared Bus contract: every scenario of `ovasabi-conformance`, run on the embedded bus.
//!
//! Each test gets a fresh data directory; a "restart" closes the bus and opens a new one on
//! the same directory. Stress mode: `OVASABI_STRESS=1 cargo test -p ovasabi-embedded --test
//! conformance stress_10x`.

use std::sync::Arc;

use ovasabi_conformance::{Backend, Capabilities};
use ovasabi_core::{Bus, BusError};
use ovasabi_embedded::{EmbeddedBus, EmbeddedConfig};

/// The embedded bus on a temporary data directory, removed when the backend is dropped.
struct Embedded {
    dir: tempfile::TempDir,
}

impl Embedded {
    fn new() -> Self {
        Embedded {
            dir: tempfile::tempdir().expect("a temporary data directory"),
        }
    }
}

#[ovasabi_conformance::async_trait]
impl Backend for Embedded {
    async fn open(&self) -> Result<Arc<dyn Bus>, BusError> {
        let bus = EmbeddedBus::open(EmbeddedConfig::new(self.dir.path())).await?;
        Ok(Arc::new(bus))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_data_bytes: EmbeddedConfig::DEFAULT_MAX_EVENT_BYTES,
            // Stress mode runs ten suites at once on a debug build: give every liveness
            // window three times as long (nothing is skipped or loosened otherwise).
            time_scale: if std::env::var("OVASABI_STRESS").is_ok_and(|v| v == "1") {
                3.0
            } else {
                1.0
            },
            ..Capabilities::all("embedded")
        }
    }
}

ovasabi_conformance::conformance_tests!(Embedded::new());
