//! [`Value`]s bound to statements, [`Row`]s read back, and the conversions between them and
//! Rust types ([`FromValue`]).
//!
//! Both backends see the same seven kinds of value. How each is stored:
//!
//! | [`Value`] | PostgreSQL parameter types accepted | SQLite storage |
//! | --- | --- | --- |
//! | `Bool` | `boolean` (and integers as 0/1) | integer 0/1 |
//! | `Int` | `smallint`, `integer`, `bigint` (range-checked), `real`, `double precision`, `oid` | integer |
//! | `Float` | `real`, `double precision` | real |
//! | `Text` | `text`, `varchar`, `char`, `name`, `json`, `jsonb`, `uuid` | text |
//! | `Bytes` | `bytea` | blob |
//! | `Timestamp` | `timestamptz`, `timestamp` (as UTC), `date` | text, RFC 3339 in UTC with microseconds (`2025-01-02T03:04:05.000006Z`), so text order is time order |
//! | `Null` | any | null |
//!
//! Reading converts back the same way: a PostgreSQL `integer` column reads as an `i64`, a
//! SQLite `0`/`1` reads as a `bool`, a SQLite timestamp text reads as a `DateTime<Utc>`, a
//! PostgreSQL `uuid` reads as text.

use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};

use crate::error::StoreError;

/// One value bound to a statement parameter or read from a column.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// SQL `NULL`.
    Null,
    /// A boolean.
    Bool(bool),
    /// A 64-bit signed integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// UTF-8 text (also JSON and UUIDs).
    Text(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// A point in time, in UTC, with microsecond precision once stored.
    Timestamp(DateTime<Utc>),
}

impl Value {
    /// The name of this value's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "integer",
            Value::Float(_) => "float",
            Value::Text(_) => "text",
            Value::Bytes(_) => "bytes",
            Value::Timestamp(_) => "timestamp",
        }
    }
}

/// How a timestamp is written as text on SQLite: fixed width, so text order is time order.
pub(crate) fn timestamp_text(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Reads a timestamp written by [`timestamp_text`], any RFC 3339 time, or SQLite's
/// `CURRENT_TIMESTAMP` form (`2025-01-02 03:04:05`, UTC).
pub(crate) fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Some(time.with_timezone(&Utc));
    }
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        .map(|naive| naive.and_utc())
}

macro_rules! from_copy {
    ($($ty:ty => $variant:ident as $as:ty),* $(,)?) => {$(
        impl From<$ty> for Value {
            fn from(v: $ty) -> Value {
                Value::$variant(<$as>::from(v))
            }
        }
        impl From<&$ty> for Value {
            fn from(v: &$ty) -> Value {
                Value::$variant(<$as>::from(*v))
            }
        }
    )*};
}

from_copy! {
    bool => Bool as bool,
    i8 => Int as i64,
    i16 => Int as i64,
    i32 => Int as i64,
    i64 => Int as i64,
    u8 => Int as i64,
    u16 => Int as i64,
    u32 => Int as i64,
    f32 => Float as f64,
    f64 => Float as f64,
}

impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(v)
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Value {
        Value::Text(v.clone())
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.to_owned())
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Value {
        Value::Bytes(v)
    }
}

impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Value {
        Value::Bytes(v.to_vec())
    }
}

impl From<&Vec<u8>> for Value {
    fn from(v: &Vec<u8>) -> Value {
        Value::Bytes(v.clone())
    }
}

impl From<DateTime<Utc>> for Value {
    fn from(v: DateTime<Utc>) -> Value {
        Value::Timestamp(v)
    }
}

impl From<&DateTime<Utc>> for Value {
    fn from(v: &DateTime<Utc>) -> Value {
        Value::Timestamp(*v)
    }
}

/// A JSON document, stored as its text (`text`, `json` or `jsonb` columns).
impl From<&serde_json::Value> for Value {
    fn from(v: &serde_json::Value) -> Value {
        Value::Text(v.to_string())
    }
}

/// A JSON document, stored as its text (`text`, `json` or `jsonb` columns).
impl From<serde_json::Value> for Value {
    fn from(v: serde_json::Value) -> Value {
        Value::Text(v.to_string())
    }
}

/// A UUID, stored as its hyphenated text (`text` or `uuid` columns).
impl From<uuid::Uuid> for Value {
    fn from(v: uuid::Uuid) -> Value {
        Value::Text(v.to_string())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

/// Builds the parameter list of a statement: `params![id, "text", 42]` is
/// `&[Value::from(id), Value::from("text"), Value::from(42)]`.
///
/// ```
/// use ovasabi_store::{params, Value};
///
/// let email = String::from("ada@example.com");
/// let p: &[Value] = params![&email, 7, true, None::<i64>];
/// assert_eq!(p[1], Value::Int(7));
/// assert_eq!(p[3], Value::Null);
/// ```
#[macro_export]
macro_rules! params {
    () => { &[] as &[$crate::Value] };
    ($($value:expr),+ $(,)?) => { &[$($crate::Value::from($value)),+] as &[$crate::Value] };
}

/// A Rust type a column's [`Value`] can be read as. The error is a message; [`Row::get`]
/// adds the column's name.
pub trait FromValue: Sized {
    /// Reads `value`, or says why it does not fit.
    fn from_value(value: &Value) -> Result<Self, String>;
}

fn mismatch(value: &Value, wanted: &str) -> String {
    format!("a {} value cannot be read as {wanted}", value.kind())
}

impl FromValue for Value {
    fn from_value(value: &Value) -> Result<Self, String> {
        Ok(value.clone())
    }
}

impl FromValue for bool {
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Bool(b) => Ok(*b),
            Value::Int(0) => Ok(false),
            Value::Int(1) => Ok(true),
            _ => Err(mismatch(value, "bool")),
        }
    }
}

impl FromValue for i64 {
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Int(i) => Ok(*i),
            _ => Err(mismatch(value, "i64")),
        }
    }
}

macro_rules! from_int {
    ($($ty:ty),*) => {$(
        impl FromValue for $ty {
            fn from_value(value: &Value) -> Result<Self, String> {
                let i = i64::from_value(value).map_err(|_| mismatch(value, stringify!($ty)))?;
                <$ty>::try_from(i).map_err(|_| format!("{i} does not fit in {}", stringify!($ty)))
            }
        }
    )*};
}

from_int!(i32, i16, u32, u64);

impl FromValue for f64 {
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Float(f) => Ok(*f),
            // SQLite stores a REAL that has no fraction as an integer in some paths.
            Value::Int(i) => Ok(*i as f64),
            _ => Err(mismatch(value, "f64")),
        }
    }
}

impl FromValue for String {
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Text(s) => Ok(s.clone()),
            _ => Err(mismatch(value, "String")),
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Bytes(b) => Ok(b.clone()),
            _ => Err(mismatch(value, "bytes")),
        }
    }
}

impl FromValue for DateTime<Utc> {
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Timestamp(t) => Ok(*t),
            Value::Text(s) => parse_timestamp(s).ok_or_else(|| format!("`{s}` is not a timestamp")),
            _ => Err(mismatch(value, "DateTime<Utc>")),
        }
    }
}

impl FromValue for serde_json::Value {
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Text(s) => serde_json::from_str(s).map_err(|e| format!("not JSON: {e}")),
            // SQLite's numeric affinity turns JSON text like `5` into a number.
            Value::Int(i) => Ok((*i).into()),
            Value::Float(f) => Ok((*f).into()),
            Value::Bool(b) => Ok((*b).into()),
            Value::Null => Ok(serde_json::Value::Null),
            _ => Err(mismatch(value, "JSON")),
        }
    }
}

impl FromValue for uuid::Uuid {
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Text(s) => s.parse().map_err(|e| format!("`{s}` is not a UUID: {e}")),
            Value::Bytes(b) => uuid::Uuid::from_slice(b).map_err(|e| e.to_string()),
            _ => Err(mismatch(value, "Uuid")),
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Null => Ok(None),
            _ => T::from_value(value).map(Some),
        }
    }
}

/// Names a column of a [`Row`]: its index (`usize`, from 0) or its name (`&str`, compared
/// without regard to ASCII case, since PostgreSQL folds unquoted names to lower case and
/// SQLite keeps them as written).
pub trait ColumnIndex {
    /// The column's index in `columns`, if there is such a column.
    fn position(&self, columns: &[String]) -> Option<usize>;
    /// How to name the column in an error.
    fn describe(&self) -> String;
}

impl ColumnIndex for usize {
    fn position(&self, columns: &[String]) -> Option<usize> {
        (*self < columns.len()).then_some(*self)
    }

    fn describe(&self) -> String {
        format!("#{self}")
    }
}

impl ColumnIndex for &str {
    fn position(&self, columns: &[String]) -> Option<usize> {
        columns.iter().position(|c| c.eq_ignore_ascii_case(self))
    }

    fn describe(&self) -> String {
        (*self).to_owned()
    }
}

/// One row of a query's result, read into memory.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    columns: Arc<[String]>,
    values: Vec<Value>,
}

impl Row {
    pub(crate) fn new(columns: Arc<[String]>, values: Vec<Value>) -> Row {
        Row { columns, values }
    }

    /// The column's value as `T`: `row.get::<i64>(0)`, `row.get::<Option<String>>("email")`.
    pub fn get<T: FromValue>(&self, column: impl ColumnIndex) -> Result<T, StoreError> {
        let index = column.position(&self.columns).ok_or_else(|| {
            StoreError::decode(
                column.describe(),
                format!("no such column (the row has {:?})", self.columns),
            )
        })?;
        let name = &self.columns[index];
        T::from_value(&self.values[index]).map_err(|message| StoreError::decode(name, message))
    }

    /// The column's value as it was read, if there is such a column.
    pub fn value(&self, column: impl ColumnIndex) -> Option<&Value> {
        column.position(&self.columns).map(|i| &self.values[i])
    }

    /// The columns' names, in order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The number of columns.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the row has no columns.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The values, in column order.
    pub fn into_values(self) -> Vec<Value> {
        self.values
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_as_ordered_text() {
        let t = DateTime::parse_from_rfc3339("2025-01-02T03:04:05.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        let text = timestamp_text(&t);
        assert_eq!(text, "2025-01-02T03:04:05.123456Z");
        assert_eq!(
            parse_timestamp(&text).unwrap().timestamp_micros(),
            t.timestamp_micros()
        );
        assert_eq!(
            parse_timestamp("2025-01-02 03:04:05").unwrap(),
            DateTime::parse_from_rfc3339("2025-01-02T03:04:05Z").unwrap()
        );
        let later = timestamp_text(&(t + chrono::Duration::microseconds(1)));
        assert!(later > text);
    }

    #[test]
    fn rows_read_typed_values_by_index_or_name() {
        let row = Row::new(
            Arc::from(vec!["Id".to_owned(), "flag".to_owned(), "note".to_owned()]),
            vec![Value::Int(7), Value::Int(1), Value::Null],
        );
        assert_eq!(row.get::<i64>("id").unwrap(), 7);
        assert_eq!(row.get::<i32>(0).unwrap(), 7);
        assert!(row.get::<bool>("FLAG").unwrap());
        assert_eq!(row.get::<Option<String>>("note").unwrap(), None);
        let e = row.get::<String>("note").unwrap_err().to_string();
        assert_eq!(e, "column `note`: a null value cannot be read as String");
        let e = row.get::<i64>("missing").unwrap_err().to_string();
        assert!(e.contains("no such column"), "{e}");
        let e = row.get::<u32>(5).unwrap_err().to_string();
        assert!(e.starts_with("column `#5`"), "{e}");
    }
}
