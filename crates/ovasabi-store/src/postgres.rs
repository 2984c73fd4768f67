//! The PostgreSQL backend: tokio-postgres connections in a deadpool pool.
//!
//! - Statements are prepared once per connection (`prepare_cached`) and bound with
//!   [`Value`]s, which convert to whatever type PostgreSQL inferred for the parameter (an
//!   `Int` to `integer`, range-checked; a `Text` to `uuid` or `jsonb`…), so service code
//!   does not need PostgreSQL-exact Rust types.
//! - A transaction is `BEGIN` … `COMMIT` on one pooled connection. Dropped without commit,
//!   it sends `ROLLBACK` on that connection from a spawned task, and only then does the
//!   connection go back to the pool; tokio-postgres sends requests in order, so the
//!   rollback follows any statement still in flight.
//! - With a schema configured, every connection starts with `search_path` set to it.

use std::error::Error as StdError;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, Kind, ToSql, Type};
use tokio_postgres::NoTls;

use crate::config::{describe_postgres, Backend};
use crate::error::{chain, DbErrorKind, Result, StoreError};
use crate::value::{Row, Value};

type BoxError = Box<dyn StdError + Sync + Send>;

/// A PostgreSQL database: a pool of connections.
pub(crate) struct PgDb {
    pool: Pool,
    label: String,
}

impl PgDb {
    pub(crate) async fn open(
        config: &tokio_postgres::Config,
        schema: Option<&str>,
        pool_size: usize,
    ) -> Result<PgDb> {
        let mut pg = config.clone();
        if let Some(schema) = schema {
            let options = match pg.get_options() {
                Some(existing) => format!("{existing} -c search_path={schema}"),
                None => format!("-c search_path={schema}"),
            };
            pg.options(options);
        }
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(Duration::from_secs(10));
        }
        if pg.get_application_name().is_none() {
            pg.application_name("ovasabi");
        }
        let label = match schema {
            Some(schema) => format!("{} (schema {schema})", describe_postgres(config)),
            None => describe_postgres(config),
        };
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(15)))
            .build()
            .map_err(|e| StoreError::Connect {
                backend: Backend::Postgres,
                target: label.clone(),
                message: e.to_string(),
            })?;
        let db = PgDb { pool, label };
        // Fail at open, with the address, rather than at the first statement.
        drop(db.connection().await?);
        Ok(db)
    }

    async fn connection(&self) -> Result<Object> {
        self.pool.get().await.map_err(|e| match e {
            PoolError::Backend(e) if e.as_db_error().is_some() => map_err(e),
            PoolError::Backend(e) => StoreError::Connect {
                backend: Backend::Postgres,
                target: self.label.clone(),
                message: chain(&e),
            },
            other => StoreError::Connect {
                backend: Backend::Postgres,
                target: self.label.clone(),
                message: chain(&other),
            },
        })
    }

    pub(crate) async fn begin(&self) -> Result<PgTx> {
        let tx = PgTx {
            client: Some(self.connection().await?),
            finished: false,
        };
        // The guard exists before BEGIN is sent: if this future is dropped mid-way, its
        // Drop rolls back.
        tx.client().batch_execute("BEGIN").await.map_err(map_err)?;
        Ok(tx)
    }

    pub(crate) async fn execute(&self, sql: &str, params: &[Value]) -> Result<u64> {
        execute(&self.connection().await?, sql, params).await
    }

    pub(crate) async fn execute_batch(&self, sql: &str) -> Result<()> {
        let client = self.connection().await?;
        client.batch_execute(sql).await.map_err(map_err)
    }

    pub(crate) async fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        query(&self.connection().await?, sql, params).await
    }
}

/// An open PostgreSQL transaction on one pooled connection. Dropped without commit, it
/// rolls back.
pub(crate) struct PgTx {
    /// Always `Some` until dropped.
    client: Option<Object>,
    /// Set once `COMMIT` or `ROLLBACK` succeeded.
    finished: bool,
}

impl PgTx {
    fn client(&self) -> &Object {
        self.client
            .as_ref()
            .expect("a transaction holds its connection until dropped")
    }

    pub(crate) async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        execute(self.client(), sql, params).await
    }

    pub(crate) async fn execute_batch(&mut self, sql: &str) -> Result<()> {
        self.client().batch_execute(sql).await.map_err(map_err)
    }

    pub(crate) async fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        query(self.client(), sql, params).await
    }

    pub(crate) async fn commit(mut self) -> Result<()> {
        self.client()
            .batch_execute("COMMIT")
            .await
            .map_err(map_err)?;
        self.finished = true;
        Ok(())
    }

    pub(crate) async fn rollback(mut self) -> Result<()> {
        self.client()
            .batch_execute("ROLLBACK")
            .await
            .map_err(map_err)?;
        self.finished = true;
        Ok(())
    }
}

impl Drop for PgTx {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        if self.finished {
            return; // back to the pool
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if client.batch_execute("ROLLBACK").await.is_err() {
                        // Never return a connection in an unknown state to the pool.
                        drop(Object::take(client));
                    }
                });
            }
            // No runtime to roll back on: close the connection; the server rolls back.
            Err(_) => drop(Object::take(client)),
        }
    }
}

async fn execute(client: &Object, sql: &str, params: &[Value]) -> Result<u64> {
    let statement = client.prepare_cached(sql).await.map_err(map_err)?;
    client
        .execute(&statement, &as_params(params))
        .await
        .map_err(map_err)
}

async fn query(client: &Object, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
    let statement = client.prepare_cached(sql).await.map_err(map_err)?;
    let rows = client
        .query(&statement, &as_params(params))
        .await
        .map_err(map_err)?;
    let columns: std::sync::Arc<[String]> = statement
        .columns()
        .iter()
        .map(|c| c.name().to_owned())
        .collect();
    rows.iter()
        .map(|row| {
            let values = (0..columns.len())
                .map(|i| {
                    row.try_get::<_, PgValue>(i)
                        .map(|v| v.0)
                        .map_err(|e| StoreError::decode(&columns[i], chain(&e)))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Row::new(columns.clone(), values))
        })
        .collect()
}

fn as_params(params: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

pub(crate) fn map_err(error: tokio_postgres::Error) -> StoreError {
    if let Some(db) = error.as_db_error() {
        let code = db.code();
        let kind = if *code == SqlState::UNIQUE_VIOLATION {
            DbErrorKind::UniqueViolation
        } else if *code == SqlState::FOREIGN_KEY_VIOLATION {
            DbErrorKind::ForeignKeyViolation
        } else if *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED
            || *code == SqlState::LOCK_NOT_AVAILABLE
        {
            DbErrorKind::Conflict
        } else if code.code().starts_with("08") || *code == SqlState::ADMIN_SHUTDOWN {
            DbErrorKind::Connection
        } else {
            DbErrorKind::Other
        };
        let mut message = db.message().to_owned();
        if let Some(detail) = db.detail() {
            message.push_str(&format!(" (detail: {detail})"));
        }
        if let Some(hint) = db.hint() {
            message.push_str(&format!(" (hint: {hint})"));
        }
        return StoreError::Database {
            backend: Backend::Postgres,
            kind,
            code: Some(code.code().to_owned()),
            message,
        };
    }
    let connection_lost =
        error.is_closed() || chain(&error).contains("error communicating with the server");
    StoreError::Database {
        backend: Backend::Postgres,
        kind: if connection_lost {
            DbErrorKind::Connection
        } else {
            DbErrorKind::Other
        },
        code: None,
        message: chain(&error),
    }
}

fn refuse(value: &Value, ty: &Type) -> BoxError {
    format!(
        "a {} value cannot be bound to a parameter of PostgreSQL type `{}`; bind another kind \
         of value or cast the parameter in SQL (`$1::{}`)",
        value.kind(),
        ty.name(),
        ty.name()
    )
    .into()
}

fn int_to_sql(i: i64, value: &Value, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
    let range = || -> BoxError {
        format!("{i} is out of range for PostgreSQL type `{}`", ty.name()).into()
    };
    match *ty {
        Type::INT8 => i.to_sql(ty, out),
        Type::INT4 => i32::try_from(i).map_err(|_| range())?.to_sql(ty, out),
        Type::INT2 => i16::try_from(i).map_err(|_| range())?.to_sql(ty, out),
        Type::OID => u32::try_from(i).map_err(|_| range())?.to_sql(ty, out),
        Type::FLOAT8 => (i as f64).to_sql(ty, out),
        Type::FLOAT4 => (i as f32).to_sql(ty, out),
        _ => Err(refuse(value, ty)),
    }
}

impl ToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Bool(b) => match *ty {
                Type::BOOL => b.to_sql(ty, out),
                _ => int_to_sql(i64::from(*b), self, ty, out),
            },
            Value::Int(i) => int_to_sql(*i, self, ty, out),
            Value::Float(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                Type::FLOAT4 => (*f as f32).to_sql(ty, out),
                _ => Err(refuse(self, ty)),
            },
            Value::Text(s) => match *ty {
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    s.as_str().to_sql(ty, out)
                }
                Type::JSON => {
                    out.put_slice(s.as_bytes());
                    Ok(IsNull::No)
                }
                Type::JSONB => {
                    out.put_u8(1); // jsonb's binary format: a version byte, then the text
                    out.put_slice(s.as_bytes());
                    Ok(IsNull::No)
                }
                Type::UUID => {
                    let uuid = uuid::Uuid::parse_str(s)
                        .map_err(|e| format!("`{s}` is not a UUID: {e}"))?;
                    out.put_slice(uuid.as_bytes());
                    Ok(IsNull::No)
                }
                _ if matches!(ty.kind(), Kind::Enum(_)) => {
                    out.put_slice(s.as_bytes());
                    Ok(IsNull::No)
                }
                _ => Err(refuse(self, ty)),
            },
            Value::Bytes(b) => match *ty {
                Type::BYTEA => b.as_slice().to_sql(ty, out),
                _ => Err(refuse(self, ty)),
            },
            Value::Timestamp(t) => match *ty {
                Type::TIMESTAMPTZ => t.to_sql(ty, out),
                Type::TIMESTAMP => t.naive_utc().to_sql(ty, out),
                Type::DATE => t.date_naive().to_sql(ty, out),
                _ => Err(refuse(self, ty)),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A column read into a [`Value`], whatever its PostgreSQL type.
struct PgValue(Value);

impl<'a> FromSql<'a> for PgValue {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        let text = |bytes: &[u8]| -> Result<Value, BoxError> {
            Ok(Value::Text(std::str::from_utf8(bytes)?.to_owned()))
        };
        let value = match *ty {
            Type::BOOL => Value::Bool(bool::from_sql(ty, raw)?),
            Type::INT2 => Value::Int(i16::from_sql(ty, raw)?.into()),
            Type::INT4 => Value::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT8 => Value::Int(i64::from_sql(ty, raw)?),
            Type::OID => Value::Int(u32::from_sql(ty, raw)?.into()),
            Type::FLOAT4 => Value::Float(f32::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => Value::Float(f64::from_sql(ty, raw)?),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN | Type::JSON => {
                text(raw)?
            }
            Type::JSONB => match raw.split_first() {
                Some((1, json)) => text(json)?,
                _ => return Err("unknown jsonb binary version".into()),
            },
            Type::UUID => Value::Text(uuid::Uuid::from_slice(raw)?.to_string()),
            Type::BYTEA => Value::Bytes(raw.to_vec()),
            Type::TIMESTAMPTZ => Value::Timestamp(DateTime::<Utc>::from_sql(ty, raw)?),
            Type::TIMESTAMP => Value::Timestamp(NaiveDateTime::from_sql(ty, raw)?.and_utc()),
            Type::DATE => Value::Text(NaiveDate::from_sql(ty, raw)?.to_string()),
            _ if matches!(ty.kind(), Kind::Enum(_)) => text(raw)?,
            _ => {
                return Err(format!(
                    "PostgreSQL type `{}` is not read by the store; cast the column in SQL \
                     (`::text`, `::bigint`, `::float8`)",
                    ty.name()
                )
                .into())
            }
        };
        Ok(PgValue(value))
    }

    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(PgValue(Value::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}
