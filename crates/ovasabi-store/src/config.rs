//! [`StoreConfig`]: which database to open, from a URL (`OVASABI_DB`, `--db`).
//!
//! | URL | opens |
//! | --- | --- |
//! | `sqlite:///var/lib/ovasabi/ovasabi.db` | the SQLite file `/var/lib/ovasabi/ovasabi.db` (created, with its directory, if missing) |
//! | `sqlite://data/ovasabi.db`, `sqlite:data/ovasabi.db` | a SQLite file relative to the working directory |
//! | `sqlite::memory:` | a private in-memory SQLite database (tests) |
//! | `postgres://user:password@host:5432/dbname` | PostgreSQL; `postgresql://` too, with libpq's parameters (`?connect_timeout=5`, `?application_name=…`, …) |
//! | `postgres://…/dbname?schema=users` | PostgreSQL, with every table in schema `users` (created if missing; the connections' `search_path`) |
//!
//! ```
//! use ovasabi_store::{Backend, StoreConfig};
//!
//! let config = StoreConfig::from_url("postgres://ovasabi@db:5432/ovasabi?schema=users")?;
//! assert_eq!(config.backend(), Backend::Postgres);
//!
//! let err = StoreConfig::from_url("mysql://db/ovasabi").unwrap_err();
//! assert!(err.to_string().contains("unsupported scheme `mysql`"));
//! # Ok::<(), ovasabi_store::StoreError>(())
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::config::{Host, SslMode};

use crate::error::StoreError;

/// The environment variable that names the database: `OVASABI_DB`.
pub const DB_ENV_VAR: &str = "OVASABI_DB";

/// Examples of right URLs, quoted in every URL error.
const EXAMPLES: &str = "sqlite:///var/lib/ovasabi/ovasabi.db, sqlite::memory: or postgres://user:password@localhost:5432/ovasabi";
const SQLITE_EXAMPLE: &str = "sqlite:///var/lib/ovasabi/ovasabi.db";
const POSTGRES_EXAMPLE: &str = "postgres://user:password@localhost:5432/ovasabi";

/// The kind of database behind a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// SQLite: one file (or memory), for the single-machine mode (`ovasabi up`).
    Sqlite,
    /// PostgreSQL, for the distributed mode.
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        })
    }
}

/// Where a store's data lives.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    SqliteFile(PathBuf),
    SqliteMemory,
    Postgres {
        config: Box<tokio_postgres::Config>,
        schema: Option<String>,
    },
}

/// Which database a [`Store`](crate::Store) opens, and how.
///
/// Build it from a URL with [`StoreConfig::from_url`] (or `str::parse`, or
/// [`StoreConfig::from_env`]), or with [`StoreConfig::sqlite`] /
/// [`StoreConfig::sqlite_memory`]. `Display` shows it without any password.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub(crate) target: Target,
    pub(crate) pool_size: usize,
    pub(crate) busy_timeout: Duration,
}

impl StoreConfig {
    /// Default number of PostgreSQL connections in the pool.
    pub const DEFAULT_POOL_SIZE: usize = 8;

    /// Parses a database URL; see the [module documentation](self) for the forms. Errors
    /// name what was wrong and show a URL of the right form.
    pub fn from_url(url: &str) -> Result<StoreConfig, StoreError> {
        let url = url.trim();
        let shown = redact(url);
        let bad = |reason: String, example: &'static str| StoreError::InvalidUrl {
            url: shown.clone(),
            reason,
            example,
        };
        if url.is_empty() {
            return Err(bad("the URL is empty".into(), EXAMPLES));
        }
        let Some((scheme, rest)) = url.split_once(':') else {
            let reason = if url.contains('/') || url.contains('.') {
                format!("it has no scheme; for a SQLite file write `sqlite://{url}`")
            } else {
                "it has no scheme (`sqlite:` or `postgres://`)".to_owned()
            };
            return Err(bad(reason, EXAMPLES));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" | "sqlite3" => parse_sqlite(rest).map_err(|r| bad(r, SQLITE_EXAMPLE)),
            "postgres" | "postgresql" => parse_postgres(url).map_err(|r| bad(r, POSTGRES_EXAMPLE)),
            "file" => Err(bad(
                "`file:` URLs are not read; for a SQLite file use the `sqlite:` scheme".into(),
                SQLITE_EXAMPLE,
            )),
            other => Err(bad(
                format!(
                    "unsupported scheme `{other}`: OVASABI stores data in SQLite (`sqlite:`) or \
                     PostgreSQL (`postgres://`)"
                ),
                EXAMPLES,
            )),
        }
    }

    /// Reads [`DB_ENV_VAR`] (`OVASABI_DB`): `Ok(None)` when it is unset or empty.
    pub fn from_env() -> Result<Option<StoreConfig>, StoreError> {
        match std::env::var(DB_ENV_VAR) {
            Ok(url) if !url.trim().is_empty() => StoreConfig::from_url(&url).map(Some),
            _ => Ok(None),
        }
    }

    /// A SQLite file (created, with its directory, if missing).
    pub fn sqlite(path: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig::with_target(Target::SqliteFile(path.into()))
    }

    /// A private in-memory SQLite database, gone when the store is dropped.
    pub fn sqlite_memory() -> StoreConfig {
        StoreConfig::with_target(Target::SqliteMemory)
    }

    fn with_target(target: Target) -> StoreConfig {
        StoreConfig {
            target,
            pool_size: Self::DEFAULT_POOL_SIZE,
            busy_timeout: Duration::from_secs(10),
        }
    }

    /// The kind of database.
    pub fn backend(&self) -> Backend {
        match self.target {
            Target::SqliteFile(_) | Target::SqliteMemory => Backend::Sqlite,
            Target::Postgres { .. } => Backend::Postgres,
        }
    }

    /// The SQLite file, if this is one.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match &self.target {
            Target::SqliteFile(path) => Some(path),
            _ => None,
        }
    }

    /// The PostgreSQL schema every table lives in, if one was set.
    pub fn schema(&self) -> Option<&str> {
        match &self.target {
            Target::Postgres { schema, .. } => schema.as_deref(),
            _ => None,
        }
    }

    /// On PostgreSQL, keeps every table in `schema` (created at open if missing; the
    /// connections' `search_path` is set to it alone). The name must be lower-case ASCII
    /// letters, digits and `_`, not starting with a digit. SQLite has no schemas: its
    /// file is the namespace, so there the setting is refused.
    pub fn with_schema(mut self, schema: &str) -> Result<StoreConfig, StoreError> {
        check_schema_name(schema).map_err(|reason| StoreError::InvalidUrl {
            url: self.to_string(),
            reason,
            example: "postgres://user@localhost:5432/ovasabi?schema=users",
        })?;
        match &mut self.target {
            Target::Postgres { schema: s, .. } => *s = Some(schema.to_owned()),
            _ => {
                return Err(StoreError::InvalidUrl {
                    url: self.to_string(),
                    reason: "a schema can only be set on PostgreSQL".into(),
                    example: "postgres://user@localhost:5432/ovasabi?schema=users",
                })
            }
        }
        Ok(self)
    }

    /// The most PostgreSQL connections the pool opens (default
    /// [`DEFAULT_POOL_SIZE`](Self::DEFAULT_POOL_SIZE)); for a SQLite file, the number of
    /// read-only connections beside the one writer (at most 4). At least 1.
    pub fn with_pool_size(mut self, size: usize) -> StoreConfig {
        self.pool_size = size.max(1);
        self
    }

    /// How long a SQLite statement waits for another process's write lock before failing
    /// with a [`Conflict`](crate::DbErrorKind::Conflict) (default 10 s).
    pub fn with_busy_timeout(mut self, timeout: Duration) -> StoreConfig {
        self.busy_timeout = timeout;
        self
    }
}

impl FromStr for StoreConfig {
    type Err = StoreError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        StoreConfig::from_url(url)
    }
}

impl fmt::Display for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            Target::SqliteFile(path) => write!(f, "sqlite://{}", path.display()),
            Target::SqliteMemory => f.write_str("sqlite::memory:"),
            Target::Postgres { config, schema } => {
                write!(f, "{}", describe_postgres(config))?;
                if let Some(schema) = schema {
                    write!(f, " (schema {schema})")?;
                }
                Ok(())
            }
        }
    }
}

/// `user@host:port/dbname`, never the password.
pub(crate) fn describe_postgres(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "?".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("?");
    let dbname = config.get_dbname().unwrap_or(user);
    format!("postgres://{user}@{host}:{port}/{dbname}")
}

fn parse_sqlite(rest: &str) -> Result<StoreConfig, String> {
    if rest.contains('?') {
        return Err("SQLite URLs take no `?` parameters".into());
    }
    let path = rest.strip_prefix("//").unwrap_or(rest);
    if path == ":memory:" {
        return Ok(StoreConfig::sqlite_memory());
    }
    if path.is_empty() {
        return Err("it names no file; write the path after `sqlite://`".into());
    }
    let path = percent_decode(path)?;
    if path.ends_with('/') {
        return Err(format!(
            "`{path}` is a directory; name the database file in it"
        ));
    }
    Ok(StoreConfig::sqlite(path))
}

fn parse_postgres(url: &str) -> Result<StoreConfig, String> {
    // `schema` is ours, not libpq's: take it out before tokio-postgres reads the rest.
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, query),
        None => (url, ""),
    };
    let mut schema = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("schema", value)) => {
                let value = percent_decode(value)?;
                check_schema_name(&value)?;
                schema = Some(value);
            }
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let config = tokio_postgres::Config::from_str(&url).map_err(|e| crate::error::chain(&e))?;
    if config.get_hosts().is_empty() {
        return Err("it names no host; write `postgres://user@host:5432/dbname`".into());
    }
    if config.get_user().is_none() {
        return Err("it names no user; write `postgres://user@host:5432/dbname`".into());
    }
    if config.get_ssl_mode() == SslMode::Require {
        return Err(
            "TLS (`sslmode=require`) is not supported yet; use `sslmode=disable` or \
                    `prefer` inside a trusted network"
                .into(),
        );
    }
    let mut store = StoreConfig::with_target(Target::Postgres {
        config: Box::new(config),
        schema: None,
    });
    if let Target::Postgres { schema: s, .. } = &mut store.target {
        *s = schema;
    }
    Ok(store)
}

fn check_schema_name(schema: &str) -> Result<(), String> {
    let mut chars = schema.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if first_ok && rest_ok && schema.len() <= 63 && !schema.starts_with("pg_") {
        Ok(())
    } else {
        Err(format!(
            "schema `{schema}` must be 1 to 63 lower-case ASCII letters, digits and `_`, not \
             starting with a digit or `pg_`"
        ))
    }
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("`{text}` has a bad percent escape at byte {i}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("`{text}` decodes to bytes that are not UTF-8"))
}

/// The URL with any password replaced by `***`.
fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let after = &url[scheme_end + 3..];
    let authority_end = after.find(['/', '?']).unwrap_or(after.len());
    let authority = &after[..authority_end];
    match authority.rfind('@') {
        Some(at) => match authority[..at].split_once(':') {
            Some((user, _password)) => format!(
                "{}{user}:***{}",
                &url[..scheme_end + 3],
                &url[scheme_end + 3 + at..]
            ),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(url: &str) -> String {
        StoreConfig::from_url(url).unwrap_err().to_string()
    }

    #[test]
    fn sqlite_forms() {
        let c = StoreConfig::from_url("sqlite:///var/lib/ovasabi/x.db").unwrap();
        assert_eq!(c.sqlite_path(), Some(Path::new("/var/lib/ovasabi/x.db")));
        let c = StoreConfig::from_url("sqlite://data/x.db").unwrap();
        assert_eq!(c.sqlite_path(), Some(Path::new("data/x.db")));
        let c = StoreConfig::from_url("sqlite:x.db").unwrap();
        assert_eq!(c.sqlite_path(), Some(Path::new("x.db")));
        let c = StoreConfig::from_url("sqlite:///tmp/with%20space.db").unwrap();
        assert_eq!(c.sqlite_path(), Some(Path::new("/tmp/with space.db")));
        for memory in ["sqlite::memory:", "sqlite://:memory:", " sqlite::memory: "] {
            let c = StoreConfig::from_url(memory).unwrap();
            assert!(matches!(c.target, Target::SqliteMemory), "{memory}");
            assert_eq!(c.backend(), Backend::Sqlite);
        }
        assert_eq!(
            StoreConfig::from_url("sqlite:///a/b.db")
                .unwrap()
                .to_string(),
            "sqlite:///a/b.db"
        );
    }

    #[test]
    fn postgres_forms() {
        let c = StoreConfig::from_url("postgres://ovasabi:secret@db.internal:6543/main").unwrap();
        assert_eq!(c.backend(), Backend::Postgres);
        assert_eq!(c.to_string(), "postgres://ovasabi@db.internal:6543/main");
        assert!(!format!("{c}").contains("secret"));
        let c = StoreConfig::from_url(
            "postgresql://u@localhost/main?schema=users&application_name=svc&connect_timeout=3",
        )
        .unwrap();
        assert_eq!(c.schema(), Some("users"));
        let Target::Postgres { config, .. } = &c.target else {
            panic!()
        };
        assert_eq!(config.get_application_name(), Some("svc"));
        assert_eq!(config.get_connect_timeout(), Some(&Duration::from_secs(3)));
    }

    #[test]
    fn bad_urls_name_the_problem_and_show_an_example() {
        let e = err("");
        assert!(
            e.contains("the URL is empty") && e.contains("for example `sqlite:///"),
            "{e}"
        );
        let e = err("/var/lib/ovasabi/x.db");
        assert!(
            e.contains("no scheme") && e.contains("sqlite:///var/lib"),
            "{e}"
        );
        let e = err("mysql://root@localhost/db");
        assert!(e.contains("unsupported scheme `mysql`"), "{e}");
        let e = err("sqlite://");
        assert!(e.contains("names no file"), "{e}");
        let e = err("sqlite:///tmp/x.db?mode=rwc");
        assert!(e.contains("no `?` parameters"), "{e}");
        let e = err("sqlite:///tmp/dir/");
        assert!(e.contains("is a directory"), "{e}");
        let e = err("sqlite:///tmp/%zz.db");
        assert!(e.contains("bad percent escape"), "{e}");
        let e = err("postgres://u:hunter2@localhost:notaport/db");
        assert!(
            e.contains("invalid database URL `postgres://u:***@localhost:notaport/db`"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
        assert!(e.contains("for example `postgres://"), "{e}");
        let e = err("postgres://u@localhost/db?schema=Users");
        assert!(e.contains("schema `Users` must be"), "{e}");
        let e = err("postgres://u@localhost/db?sslmode=require");
        assert!(e.contains("TLS"), "{e}");
        let e = err("postgres://u@localhost/db?bogus=1");
        assert!(e.contains("bogus"), "{e}");
        let e = err("file:///tmp/x.db");
        assert!(e.contains("`sqlite:` scheme"), "{e}");
    }

    #[test]
    fn schema_only_on_postgres() {
        assert!(StoreConfig::sqlite_memory().with_schema("x").is_err());
        let c = StoreConfig::from_url("postgres://u@localhost/db")
            .unwrap()
            .with_schema("t_1")
            .unwrap();
        assert_eq!(c.schema(), Some("t_1"));
        assert!(c.clone().with_schema("1x").is_err());
        assert!(c.with_schema("pg_catalog").is_err());
    }
}
