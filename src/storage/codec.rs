//! Column types that both databases hold, each in its own representation: a row type
//! derives `FromRow` once and reads the same fields from PostgreSQL and from SQLite.
//!
//! | type       | PostgreSQL    | SQLite                          |
//! |------------|---------------|---------------------------------|
//! | [`Time`]   | `TIMESTAMPTZ` | `INTEGER`, microseconds (UTC)   |
//! | [`Json`]   | `JSONB`       | `TEXT`                          |
//! | [`List`]   | `TEXT[]`      | `TEXT`, a JSON array of strings |
//! | [`Id`]     | `UUID`        | `TEXT`, hyphenated              |

use std::borrow::Borrow;

use chrono::{DateTime, Utc};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::sqlite::{SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, Encode, Postgres, Sqlite, Type};
use uuid::Uuid;

/// Implements `Type`, `Encode` and `Decode` for one database by converting to and from a
/// type that database already holds.
macro_rules! via {
    ($ty:ty, $db:ty, $info:ty, $value:ty, $repr:ty, |$s:ident| $to:expr, |$r:ident| $from:expr) => {
        impl Type<$db> for $ty {
            fn type_info() -> $info {
                <$repr as Type<$db>>::type_info()
            }
            fn compatible(ty: &$info) -> bool {
                <$repr as Type<$db>>::compatible(ty)
            }
        }

        impl<'q> Encode<'q, $db> for $ty {
            fn encode_by_ref(
                &self,
                buf: &mut <$db as sqlx::Database>::ArgumentBuffer,
            ) -> Result<IsNull, BoxDynError> {
                let $s = self;
                let repr: $repr = $to;
                <$repr as Encode<'q, $db>>::encode(repr, buf)
            }
        }

        impl<'r> Decode<'r, $db> for $ty {
            fn decode(value: $value) -> Result<Self, BoxDynError> {
                let $r = <$repr as Decode<'r, $db>>::decode(value)?;
                $from
            }
        }
    };
}

/// A point in time, stored to the microsecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Time(pub DateTime<Utc>);

via!(
    Time,
    Postgres,
    PgTypeInfo,
    PgValueRef<'r>,
    DateTime<Utc>,
    |t| t.0,
    |r| Ok(Time(r))
);
via!(
    Time,
    Sqlite,
    SqliteTypeInfo,
    SqliteValueRef<'r>,
    i64,
    |t| t.0.timestamp_micros(),
    |r| {
        DateTime::from_timestamp_micros(r)
            .map(Time)
            .ok_or_else(|| format!("time {r} µs is out of range").into())
    }
);

impl From<Time> for DateTime<Utc> {
    fn from(t: Time) -> Self {
        t.0
    }
}

/// A JSON document: owned when read, borrowed (`Json(&value)`) when only bound, so a bind
/// does not copy the document first.
#[derive(Debug, Clone, PartialEq)]
pub struct Json<T = serde_json::Value>(pub T);

impl<T> Type<Postgres> for Json<T> {
    fn type_info() -> PgTypeInfo {
        <serde_json::Value as Type<Postgres>>::type_info()
    }
    fn compatible(ty: &PgTypeInfo) -> bool {
        <serde_json::Value as Type<Postgres>>::compatible(ty)
    }
}

impl<'q, T: Borrow<serde_json::Value>> Encode<'q, Postgres> for Json<T> {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <serde_json::Value as Encode<'q, Postgres>>::encode_by_ref(self.0.borrow(), buf)
    }
}

impl<'r> Decode<'r, Postgres> for Json {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Json(<serde_json::Value as Decode<'r, Postgres>>::decode(
            value,
        )?))
    }
}

impl<T> Type<Sqlite> for Json<T> {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <String as Type<Sqlite>>::compatible(ty)
    }
}

impl<'q, T: Borrow<serde_json::Value>> Encode<'q, Sqlite> for Json<T> {
    fn encode_by_ref(
        &self,
        buf: &mut <Sqlite as sqlx::Database>::ArgumentBuffer,
    ) -> Result<IsNull, BoxDynError> {
        <String as Encode<'q, Sqlite>>::encode(self.0.borrow().to_string(), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for Json {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <String as Decode<'r, Sqlite>>::decode(value)?;
        Ok(Json(serde_json::from_str(&text)?))
    }
}

/// A list of strings (signer key IDs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct List(pub Vec<String>);

via!(
    List,
    Postgres,
    PgTypeInfo,
    PgValueRef<'r>,
    Vec<String>,
    |l| l.0.clone(),
    |r| Ok(List(r))
);
via!(
    List,
    Sqlite,
    SqliteTypeInfo,
    SqliteValueRef<'r>,
    String,
    |l| { serde_json::Value::from(l.0.clone()).to_string() },
    |r| Ok(List(serde_json::from_str(&r)?))
);

/// A UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Id(pub Uuid);

via!(
    Id,
    Postgres,
    PgTypeInfo,
    PgValueRef<'r>,
    Uuid,
    |i| i.0,
    |r| Ok(Id(r))
);
via!(
    Id,
    Sqlite,
    SqliteTypeInfo,
    SqliteValueRef<'r>,
    String,
    |i| i.0.to_string(),
    |r| Ok(Id(Uuid::parse_str(&r)?))
);
