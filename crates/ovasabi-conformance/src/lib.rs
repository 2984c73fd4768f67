//! One conformance suite every OVASABI bus backend runs unchanged.
//!
//! The suite turns the contract written in [`ovasabi_core::bus`] into executable scenarios,
//! in the spirit of watermill's universal Pub/Sub tests (same counts where they overlap) and
//! iggy's shared harness: the embedded SQLite bus runs it today, and NATS JetStream, Kafka and
//! RabbitMQ backends run the very same code later. A backend never gets its own copy of a
//! scenario; what it cannot do is declared once in [`Capabilities`].
//!
//! # Layout
//! - this file: [`Backend`] (how the suite opens a bus), [`Capabilities`], [`Failure`],
//!   the scenario table [`SCENARIOS`], [`run_all`], [`stress`] and [`conformance_tests!`].
//! - `harness`: what scenarios share: unique topic and group names, bounded waits, concurrent
//!   publishing, a `Pump` that merges subscriptions into one channel, and `consume`, which
//!   acks (or nacks, or holds) deliveries until every expected event is done.
//! - [`scenarios`]: the scenarios, grouped by what they prove
//!   (`basic`, `ordering`, `failure`, `lifecycle`); its docs list every scenario.
//!
//! # Using it in a backend crate
//!
//! Put this in the backend's `tests/conformance.rs` (the crate needs `ovasabi-conformance`
//! as a dev-dependency; `tokio` and `async_trait` come re-exported, so it needs nothing
//! else):
//!
//! ```ignore
//! struct MyBackend { /* the durable state: a data directory, a broker address… */ }
//!
//! #[ovasabi_conformance::async_trait]
//! impl ovasabi_conformance::Backend for MyBackend {
//!     async fn open(&self) -> Result<Arc<dyn Bus>, BusError> { /* open a bus on that state */ }
//!     fn capabilities(&self) -> Capabilities { Capabilities::all("my-backend") }
//! }
//!
//! ovasabi_conformance::conformance_tests!(MyBackend::new());
//! ```
//!
//! A backend that needs a service which may be missing (a broker) gives an `Option` instead,
//! `None` meaning "unavailable": every test then returns at once, having printed why
//! (the expression prints it), so a plain `cargo test` passes on a machine without it:
//!
//! ```ignore
//! ovasabi_conformance::conformance_tests!(available: MyBroker::if_reachable());
//! ```
//!
//! The macro writes one `#[tokio::test]` per scenario, named after it, so
//! `cargo test -p my-backend --test conformance order_per_key` runs one scenario and a failure
//! names the scenario, the backend, what was expected and what was seen.
//!
//! # Rules every scenario keeps
//! - **Unique names.** Topics are `conf.<scenario>.<token>.<name>` and groups
//!   `conf-<scenario>-<token>-<name>`, with a fresh random token per run, so scenarios can
//!   share one broker, concurrently, without seeing each other's events.
//! - **Bounded waits.** Every wait has a timeout, multiplied by
//!   [`Capabilities::time_scale`]; a scenario fails, it never hangs. A whole scenario is also
//!   bounded (a few minutes), for the wait nobody thought of.
//! - **Own bus.** A scenario opens its bus with [`Backend::open`] and closes it
//!   ([`Bus::close`]) when it ends, passed or failed.
//! - **Nothing left behind.** Once the bus is closed, passed, failed or panicked, the
//!   harness hands every topic the scenario named (and each one's dead-letter topic) to
//!   [`Backend::teardown`], which removes them from a backend whose state outlives the test
//!   (a broker).
//! - **Skips are honest.** A scenario, or a part of one, that needs a capability the backend
//!   lacks prints `skipped: <scenario> needs <capability>, which <backend> lacks` and passes.
//!   A flag only skips what truly needs it; it is never a way to hide a flaky or failing
//!   scenario.
//!
//! # Stress mode
//! [`stress`] runs the whole suite several times in parallel, each copy on its own backend.
//! The macro's `stress_10x` test runs ten copies, but only when `OVASABI_STRESS=1` is set
//! (otherwise it prints that it was skipped and passes), so a plain `cargo test` stays quick:
//!
//! ```text
//! OVASABI_STRESS=1 cargo test -p ovasabi-embedded --test conformance stress_10x
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use ovasabi_core::{Bus, BusError};

#[macro_use]
mod harness;
#[cfg(test)]
mod memory;
pub mod scenarios;

pub use scenarios::*;

/// Re-exported so a backend's tests can implement [`Backend`] without depending on it.
pub use async_trait::async_trait;

/// A bus backend under test: how to open a bus on its durable state.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Opens a bus on this backend's durable state. Called again after the previous bus was
    /// closed ([`Bus::close`]) to simulate a process restart: the new bus must see the same
    /// state (events, group positions, unacked deliveries).
    ///
    /// Each call returns a bus of its own (a new connection for a broker, a new handle on the
    /// same directory for an embedded store). The suite never has two buses of one backend
    /// open at once: every scenario closes its bus before it returns.
    async fn open(&self) -> Result<Arc<dyn Bus>, BusError>;

    /// What this backend can do beyond the contract every backend keeps.
    fn capabilities(&self) -> Capabilities;

    /// Removes what one scenario left behind: called once its bus is closed, whether it
    /// passed, failed or panicked, with every topic it named and each one's dead-letter topic
    /// (`<topic>.dlq`), some of which may never have been created.
    ///
    /// A backend whose state goes away with it (memory, a temporary directory) keeps the
    /// default, which does nothing; a broker deletes the topics (streams, queues…), so runs
    /// leave nothing on a shared server. Errors are the backend's to report (a scenario does
    /// not fail for them); the call is bounded by the suite's per-operation timeout.
    async fn teardown(&self, topics: &[String]) {
        let _ = topics;
    }
}

/// What a backend can do beyond the contract every backend keeps, and how fast it is.
///
/// A scenario that needs a capability the backend lacks is skipped, with a message. Build
/// one with [`Capabilities::all`] and turn off what the backend lacks.
#[derive(Clone, Debug)]
pub struct Capabilities {
    /// The backend's name, used in messages (`embedded`, `nats`…).
    pub name: &'static str,
    /// History is kept: a group subscribing after events were published receives them
    /// (`StartFrom::Beginning`), and events outlive the bus that published them.
    pub persistent: bool,
    /// [`Backend::open`] after [`Bus::close`] gives a bus on the same state: events, group
    /// positions and unacked deliveries survive the restart.
    pub restart: bool,
    /// [`Ordering::PerKey`](ovasabi_core::Ordering::PerKey) is kept: the next event of a
    /// partition key waits for the previous one's ack.
    pub order_per_key: bool,
    /// Events of different partition keys are in flight at the same time within one group
    /// (the contract promises it alongside per-key order; a backend that serialises a whole
    /// topic keeps order but lacks this).
    pub concurrent_keys: bool,
    /// `StartFrom::Offset` and `StartFrom::Time` start new groups and move existing ones.
    pub replay: bool,
    /// The largest payload (`data`) the backend accepts, in bytes; one byte more must be
    /// refused with [`BusError::EventTooLarge`]. The default limit is 1 MiB.
    pub max_data_bytes: usize,
    /// Multiplies every timeout, settle window and ack timeout the suite uses. 1.0 suits a
    /// local backend; raise it for a remote broker or a slow machine. Raising it never
    /// turns a failure into a pass, it only waits longer.
    pub time_scale: f64,
}

impl Capabilities {
    /// The default payload limit: 1 MiB of data.
    pub const DEFAULT_MAX_DATA_BYTES: usize = 1024 * 1024;

    /// Every capability, the default payload limit and a time scale of 1.
    pub fn all(name: &'static str) -> Self {
        Capabilities {
            name,
            persistent: true,
            restart: true,
            order_per_key: true,
            concurrent_keys: true,
            replay: true,
            max_data_bytes: Self::DEFAULT_MAX_DATA_BYTES,
            time_scale: 1.0,
        }
    }

    /// Scales a duration by [`Capabilities::time_scale`].
    pub fn scaled(&self, duration: Duration) -> Duration {
        let scale = if self.time_scale.is_finite() && self.time_scale > 0.0 {
            self.time_scale
        } else {
            1.0
        };
        duration.mul_f64(scale)
    }
}

/// A scenario that failed: which one, on which backend, what was expected and what was seen.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The scenario's name.
    pub scenario: &'static str,
    /// The backend's name ([`Capabilities::name`]).
    pub backend: &'static str,
    /// What was expected and what was seen.
    pub message: String,
}

impl Failure {
    /// A failure with this message; the scenario and backend are filled in by the harness.
    pub fn new(message: impl Into<String>) -> Self {
        Failure {
            scenario: "",
            backend: "",
            message: message.into(),
        }
    }

    pub(crate) fn at(mut self, scenario: &'static str, backend: &'static str) -> Self {
        if self.scenario.is_empty() {
            self.scenario = scenario;
        }
        if self.backend.is_empty() {
            self.backend = backend;
        }
        self
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "conformance scenario `{}` failed on backend `{}`: {}",
            self.scenario, self.backend, self.message
        )
    }
}

impl std::error::Error for Failure {}

/// Every failure of a suite run ([`run_all`] or [`stress`]).
#[derive(Clone, Debug)]
pub struct Failures(pub Vec<Failure>);

impl fmt::Display for Failures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} conformance scenario run(s) failed", self.0.len())?;
        for failure in &self.0 {
            write!(f, "\n- {failure}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Failures {}

/// A scenario runner, as stored in [`SCENARIOS`].
pub type ScenarioFn = for<'a> fn(&'a dyn Backend) -> BoxFuture<'a, Result<(), Failure>>;

/// One scenario of the suite: its name and how to run it.
#[derive(Clone, Copy)]
pub struct Scenario {
    /// The scenario's name, the same as its function's.
    pub name: &'static str,
    /// Runs it on a backend.
    pub run: ScenarioFn,
}

impl fmt::Debug for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scenario")
            .field("name", &self.name)
            .finish()
    }
}

macro_rules! scenario_table {
    ($($name:ident),* $(,)?) => {
        /// Every scenario, in the order [`run_all`] runs them.
        pub const SCENARIOS: &[Scenario] = &[$(
            Scenario {
                name: stringify!($name),
                run: {
                    fn run(backend: &dyn Backend) -> BoxFuture<'_, Result<(), Failure>> {
                        Box::pin(scenarios::$name(backend))
                    }
                    run
                },
            }
        ),*];
    };
}

// Keep in step with `conformance_tests!` below; the macro's `scenario_list_is_complete`
// test checks that it is.
scenario_table!(
    publish_subscribe,
    concurrent_subscribe,
    many_topics,
    two_groups_each_get_all,
    topic_isolation,
    large_events,
    invalid_input,
    batch_publish,
    topics_report_counts,
    order_per_key,
    no_ack_holds_next,
    max_in_flight_bound,
    resend_on_nack,
    continue_after_errors,
    dead_letter_after_max_deliveries,
    ack_after_timeout,
    continue_after_subscribe_close,
    concurrent_close,
    subscribe_cancellation,
    publisher_close,
    restart,
    new_subscriber_replays_history,
    replay_from_offset_and_time,
);

/// Runs every scenario on `backend`, one after another, printing each outcome; returns every
/// failure.
pub async fn run_all(backend: &dyn Backend) -> Result<(), Failures> {
    let name = backend.capabilities().name;
    let mut failures = Vec::new();
    for scenario in SCENARIOS {
        let started = std::time::Instant::now();
        match (scenario.run)(backend).await {
            Ok(()) => println!(
                "conformance {name}: {} ok ({:.1?})",
                scenario.name,
                started.elapsed()
            ),
            Err(failure) => {
                println!("conformance {name}: {} FAILED: {failure}", scenario.name);
                failures.push(failure);
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Failures(failures))
    }
}

/// Stress mode: runs the whole suite `copies` times in parallel, each copy on a backend of
/// its own from `make`; returns every failure of every copy.
///
/// Scenarios use unique names, so copies sharing one broker do not see each other's events;
/// running them at once shakes out races that a single run rarely hits.
pub async fn stress<B, F>(mut make: F, copies: usize) -> Result<(), Failures>
where
    B: Backend,
    F: FnMut() -> B,
{
    let backends: Vec<B> = (0..copies).map(|_| make()).collect();
    let runs = backends
        .iter()
        .map(|backend| run_all(backend as &dyn Backend));
    let failures: Vec<Failure> = futures::future::join_all(runs)
        .await
        .into_iter()
        .enumerate()
        .flat_map(|(copy, outcome)| {
            outcome.err().into_iter().flat_map(move |f| {
                f.0.into_iter().map(move |mut failure| {
                    failure.message = format!("(stress copy {copy}) {}", failure.message);
                    failure
                })
            })
        })
        .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Failures(failures))
    }
}

/// What the macros need from this crate, so a backend's tests depend on nothing else.
#[doc(hidden)]
pub mod __private {
    pub use tokio;

    /// Whether stress mode was asked for (`OVASABI_STRESS=1`).
    pub fn stress_enabled() -> bool {
        std::env::var("OVASABI_STRESS").is_ok_and(|v| v == "1" || v == "true")
    }
}

/// Writes the conformance tests for a backend: one `#[tokio::test]` per scenario, named
/// after it, plus `stress_10x` and `scenario_list_is_complete`.
///
/// - `conformance_tests!($make)`: `$make` is an expression giving a fresh [`Backend`].
/// - `conformance_tests!(available: $available)`: `$available` gives an
///   `Option<impl Backend>`; `None` means the backend is unavailable here (a broker that is
///   not running), and every test returns at once, passing. The expression says why
///   (printing a skip message, or failing when the service is required).
///
/// Either is evaluated once per test (and once per stress copy), so every test runs on state
/// of its own.
///
/// - Each scenario test runs on a multi-thread runtime with 2 workers and panics with the
///   [`Failure`]'s message when the scenario fails.
/// - `stress_10x` runs [`stress`] with 10 copies when the environment has
///   `OVASABI_STRESS=1`; otherwise it prints that it was skipped and passes.
/// - `scenario_list_is_complete` checks that this macro and [`SCENARIOS`] list the same
///   scenarios.
#[macro_export]
macro_rules! conformance_tests {
    (available: $available:expr $(,)?) => {
        $crate::conformance_tests!(@list $available);
    };
    ($make:expr $(,)?) => {
        $crate::conformance_tests!(@list ::core::option::Option::Some($make));
    };
    (@list $available:expr) => {
        $crate::conformance_tests!(@tests $available;
            publish_subscribe,
            concurrent_subscribe,
            many_topics,
            two_groups_each_get_all,
            topic_isolation,
            large_events,
            invalid_input,
            batch_publish,
            topics_report_counts,
            order_per_key,
            no_ack_holds_next,
            max_in_flight_bound,
            resend_on_nack,
            continue_after_errors,
            dead_letter_after_max_deliveries,
            ack_after_timeout,
            continue_after_subscribe_close,
            concurrent_close,
            subscribe_cancellation,
            publisher_close,
            restart,
            new_subscriber_replays_history,
            replay_from_offset_and_time,
        );
    };
    (@tests $available:expr; $($name:ident),* $(,)?) => {
        $(
            #[$crate::__private::tokio::test(
                flavor = "multi_thread",
                worker_threads = 2,
                crate = "ovasabi_conformance::__private::tokio"
            )]
            async fn $name() {
                let ::core::option::Option::Some(backend) = $available else {
                    return;
                };
                if let Err(failure) = $crate::scenarios::$name(&backend).await {
                    panic!("{failure}");
                }
            }
        )*

        #[$crate::__private::tokio::test(
            flavor = "multi_thread",
            worker_threads = 2,
            crate = "ovasabi_conformance::__private::tokio"
        )]
        async fn stress_10x() {
            if !$crate::__private::stress_enabled() {
                println!("skipped: stress_10x runs only with OVASABI_STRESS=1");
                return;
            }
            let mut backends = ::std::vec::Vec::new();
            for _ in 0..10 {
                let ::core::option::Option::Some(backend) = $available else {
                    return;
                };
                backends.push(backend);
            }
            let mut backends = backends.into_iter();
            let make = || backends.next().expect("ten backends");
            if let Err(failures) = $crate::stress(make, 10).await {
                panic!("{failures}");
            }
        }

        #[test]
        fn scenario_list_is_complete() {
            let tested: &[&str] = &[$(stringify!($name)),*];
            let all: Vec<&str> = $crate::SCENARIOS.iter().map(|s| s.name).collect();
            assert_eq!(tested, all.as_slice(), "conformance_tests! and SCENARIOS disagree");
        }
    };
}

#[cfg(test)]
extern crate self as ovasabi_conformance;

#[cfg(test)]
mod self_test {
    //! The suite run on the in-memory reference backend, which proves the scenarios pass on a
    //! backend that keeps the contract (and that the macro expands).
    crate::conformance_tests!(crate::memory::MemoryBackend::new());
}
