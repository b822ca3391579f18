//! How the SQLite store keeps a record's values: ids as text, digests as 32-byte `BLOB`s,
//! times as microseconds since the Unix epoch (UTC), permissions and networks as JSON.

use ipnet::IpNet;
use sqlx::Row as _;
use sqlx::sqlite::{Sqlite, SqliteArguments, SqliteRow};
use time::OffsetDateTime;

use crate::error::StoreError;
use crate::identity::Permissions;
use crate::record::TokenId;
use crate::store::codec::{Binder, Row};
use crate::token::TokenHash;

/// A row the schema allows but keygate never writes (e.g. a digest of the wrong length).
#[derive(Debug, thiserror::Error)]
#[error("invalid value in column `{0}` of the SQLite token store")]
pub(super) struct Corrupt(pub(super) &'static str);

/// A time outside the range the store can keep.
#[derive(Debug, thiserror::Error)]
#[error("time out of the range the SQLite token store keeps")]
struct OutOfRange;

pub(super) fn micros(t: OffsetDateTime) -> Result<i64, StoreError> {
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000))
        .map_err(|_| StoreError::backend(OutOfRange))
}

pub(super) fn opt_micros(t: Option<OffsetDateTime>) -> Result<Option<i64>, StoreError> {
    t.map(micros).transpose()
}

pub(super) fn from_micros(us: i64, column: &'static str) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000)
        .map_err(|_| StoreError::backend(Corrupt(column)))
}

pub(super) fn opt_from_micros(
    us: Option<i64>,
    column: &'static str,
) -> Result<Option<OffsetDateTime>, StoreError> {
    us.map(|us| from_micros(us, column)).transpose()
}

pub(super) fn permissions_json(p: &Permissions) -> Result<String, StoreError> {
    serde_json::to_string(p).map_err(StoreError::backend)
}

pub(super) fn permissions_from_json(s: &str) -> Result<Permissions, StoreError> {
    serde_json::from_str(s).map_err(|_| StoreError::backend(Corrupt("permissions")))
}

pub(super) fn get<'r, T>(row: &'r SqliteRow, column: &'static str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(column).map_err(StoreError::backend)
}

pub(super) fn decode_id(s: &str, column: &'static str) -> Result<TokenId, StoreError> {
    s.parse().map_err(|_| StoreError::backend(Corrupt(column)))
}

impl Row for SqliteRow {
    fn id(&self, column: &'static str) -> Result<TokenId, StoreError> {
        decode_id(&get::<String>(self, column)?, column)
    }

    fn opt_id(&self, column: &'static str) -> Result<Option<TokenId>, StoreError> {
        get::<Option<String>>(self, column)?
            .map(|s| decode_id(&s, column))
            .transpose()
    }

    fn hash(&self, column: &'static str) -> Result<TokenHash, StoreError> {
        let hash: Vec<u8> = get(self, column)?;
        let hash: [u8; 32] = hash
            .try_into()
            .map_err(|_| StoreError::backend(Corrupt(column)))?;
        Ok(TokenHash::from_bytes(hash))
    }

    fn text(&self, column: &'static str) -> Result<String, StoreError> {
        get(self, column)
    }

    fn opt_text(&self, column: &'static str) -> Result<Option<String>, StoreError> {
        get(self, column)
    }

    fn time(&self, column: &'static str) -> Result<OffsetDateTime, StoreError> {
        from_micros(get(self, column)?, column)
    }

    fn opt_time(&self, column: &'static str) -> Result<Option<OffsetDateTime>, StoreError> {
        opt_from_micros(get(self, column)?, column)
    }

    fn permissions(&self, column: &'static str) -> Result<Permissions, StoreError> {
        permissions_from_json(&get::<String>(self, column)?)
    }

    fn networks(&self, column: &'static str) -> Result<Vec<IpNet>, StoreError> {
        serde_json::from_str(&get::<String>(self, column)?)
            .map_err(|_| StoreError::backend(Corrupt(column)))
    }

    fn opt_u32(&self, column: &'static str) -> Result<Option<u32>, StoreError> {
        get::<Option<i64>>(self, column)?
            .map(|n| u32::try_from(n).map_err(|_| StoreError::backend(Corrupt(column))))
            .transpose()
    }
}

/// A SQLite statement whose values are being bound.
pub(super) struct Bind<'q>(pub(super) sqlx::query::Query<'q, Sqlite, SqliteArguments>);

impl Binder for Bind<'_> {
    fn id(self, _: &'static str, v: TokenId) -> Result<Self, StoreError> {
        Ok(Self(self.0.bind(v.to_string())))
    }

    fn opt_id(self, _: &'static str, v: Option<TokenId>) -> Result<Self, StoreError> {
        Ok(Self(self.0.bind(v.map(|id| id.to_string()))))
    }

    fn hash(self, _: &'static str, v: &TokenHash) -> Result<Self, StoreError> {
        Ok(Self(self.0.bind(&v.as_bytes()[..])))
    }

    fn text(self, _: &'static str, v: &str) -> Result<Self, StoreError> {
        Ok(Self(self.0.bind(v)))
    }

    fn opt_text(self, _: &'static str, v: Option<&str>) -> Result<Self, StoreError> {
        Ok(Self(self.0.bind(v)))
    }

    fn time(self, _: &'static str, v: OffsetDateTime) -> Result<Self, StoreError> {
        Ok(Self(self.0.bind(micros(v)?)))
    }

    fn opt_time(self, _: &'static str, v: Option<OffsetDateTime>) -> Result<Self, StoreError> {
        Ok(Self(self.0.bind(opt_micros(v)?)))
    }

    fn permissions(self, _: &'static str, v: &Permissions) -> Result<Self, StoreError> {
        Ok(Self(self.0.bind(permissions_json(v)?)))
    }

    fn networks(self, _: &'static str, v: &[IpNet]) -> Result<Self, StoreError> {
        Ok(Self(self.0.bind(
            serde_json::to_string(v).map_err(StoreError::backend)?,
        )))
    }

    fn opt_u32(self, _: &'static str, v: Option<u32>) -> Result<Self, StoreError> {
        Ok(Self(self.0.bind(v.map(i64::from))))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn times_round_trip_at_microsecond_precision() {
        for t in [
            OffsetDateTime::UNIX_EPOCH,
            OffsetDateTime::UNIX_EPOCH - Duration::from_micros(1),
            time::macros::datetime!(1969-07-20 20:17:40.123456 UTC),
            time::macros::datetime!(2999-12-31 23:59:59.999999 UTC),
        ] {
            assert_eq!(
                from_micros(micros(t).expect("in range"), "t").expect("valid"),
                t
            );
        }
    }
}
