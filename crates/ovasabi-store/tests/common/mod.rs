//! The test harness: one fresh database per test, on either backend, and
//! [`both_backends!`], which runs each test body on both.
//!
//! - SQLite: a file in a temporary directory.
//! - PostgreSQL: `OVASABI_TEST_PG_URL` (default
//!   `postgres://postgres@127.0.0.1:5432/test`), with a fresh schema `t_<random>` per test
//!   (tests run in parallel), dropped when the test ends. If the server is unreachable the
//!   test prints why and passes, except under `OVASABI_REQUIRE_SERVICES=1` (CI), where it
//!   fails.

#![allow(dead_code, unreachable_pub)]

use std::io::Write as _;
use std::time::Duration;

use ovasabi_store::{Backend, MigrationSet, Store, StoreConfig};
use rand::Rng as _;

pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A fresh, empty database for one test.
pub struct TestDb {
    pub config: StoreConfig,
    _dir: Option<tempfile::TempDir>,
    admin_url: Option<String>,
    schema: Option<String>,
}

impl TestDb {
    /// A SQLite file in a new temporary directory.
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = StoreConfig::sqlite(dir.path().join("store.db"));
        TestDb {
            config,
            _dir: Some(dir),
            admin_url: None,
            schema: None,
        }
    }

    /// A fresh schema on the test PostgreSQL server, or `None` (after printing why) when
    /// the server is unreachable and services are not required.
    pub async fn postgres(test: &str) -> Option<TestDb> {
        let url = std::env::var("OVASABI_TEST_PG_URL")
            .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
        if let Err(reason) = reachable(&url).await {
            let required = std::env::var("OVASABI_REQUIRE_SERVICES").as_deref() == Ok("1");
            if required {
                panic!(
                    "{test} needs PostgreSQL at {url}, which is unreachable ({reason}), and \
                     OVASABI_REQUIRE_SERVICES=1"
                );
            }
            // Straight to stderr, so the reason shows even when the harness captures output.
            let _ = writeln!(
                std::io::stderr(),
                "skipped: {test} needs PostgreSQL at {url}, which is unreachable ({reason}); \
                 set OVASABI_TEST_PG_URL, or OVASABI_REQUIRE_SERVICES=1 to fail instead"
            );
            return None;
        }
        let schema = format!("t_{:016x}", rand::thread_rng().gen::<u64>());
        let config = StoreConfig::from_url(&url)
            .expect("OVASABI_TEST_PG_URL is a valid URL")
            .with_schema(&schema)
            .expect("a valid schema name")
            .with_pool_size(4);
        Some(TestDb {
            config,
            _dir: None,
            admin_url: Some(url),
            schema: Some(schema),
        })
    }

    pub fn backend(&self) -> Backend {
        self.config.backend()
    }

    /// Opens a store on this database with `migrations`, panicking on error.
    pub async fn open(&self, migrations: &[MigrationSet]) -> Store {
        Store::open(&self.config, migrations)
            .await
            .unwrap_or_else(|e| panic!("open {}: {e}", self.config))
    }
}

async fn reachable(url: &str) -> Result<(), String> {
    let connect = tokio_postgres::connect(url, tokio_postgres::NoTls);
    match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok((client, connection))) => {
            let task = tokio::spawn(connection);
            let answer = client.simple_query("SELECT 1").await.map(|_| ());
            drop(client);
            let _ = task.await;
            answer.map_err(|e| e.to_string())
        }
        Ok(Err(e)) => Err(format!("{e}: {}", e.source_text())),
        Err(_) => Err("no answer within 5 s".into()),
    }
}

trait SourceText {
    fn source_text(&self) -> String;
}

impl SourceText for tokio_postgres::Error {
    fn source_text(&self) -> String {
        std::error::Error::source(self).map_or_else(String::new, |s| s.to_string())
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (Some(url), Some(schema)) = (self.admin_url.take(), self.schema.take()) else {
            return;
        };
        // Drop runs inside the test's runtime (or during a panic): drop the schema from a
        // thread of our own with its own runtime.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .map_err(|e| e.to_string())?;
                let task = tokio::spawn(connection);
                let answer = client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .await
                    .map_err(|e| e.to_string());
                drop(client);
                let _ = task.await;
                answer
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            let _ = writeln!(std::io::stderr(), "could not drop a test schema: {e}");
        }
    }
}

/// Runs each named `async fn NAME(db: &TestDb)` on SQLite (module `sqlite`) and on
/// PostgreSQL (module `postgres`).
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = $crate::common::TestDb::sqlite();
                    super::$name(&db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(db) = $crate::common::TestDb::postgres(
                        concat!("postgres::", stringify!($name)),
                    ).await else {
                        return;
                    };
                    super::$name(&db).await;
                }
            )*
        }
    };
}
