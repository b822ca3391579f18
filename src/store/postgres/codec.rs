//! How the PostgreSQL store keeps a record's values: ids as `UUID`, digests as 32-byte
//! `BYTEA`, times as `timestamptz`, permissions and networks as `TEXT[]`.

use ipnet::IpNet;
use sqlx::Row as _;
use sqlx::postgres::{PgArguments, PgRow, Postgres};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{insert_err, pg_err};
use crate::error::StoreError;
use crate::identity::Permissions;
use crate::record::{TokenId, TokenRecord};
use crate::store::codec::{self, Binder, Row};
use crate::store::sql;
use crate::token::TokenHash;

impl Row for PgRow {
    fn id(&self, column: &'static str) -> Result<TokenId, StoreError> {
        self.try_get::<Uuid, _>(column).map(TokenId).map_err(pg_err)
    }

    fn opt_id(&self, column: &'static str) -> Result<Option<TokenId>, StoreError> {
        self.try_get::<Option<Uuid>, _>(column)
            .map(|id| id.map(TokenId))
            .map_err(pg_err)
    }

    fn hash(&self, column: &'static str) -> Result<TokenHash, StoreError> {
        let hash: Vec<u8> = self.try_get(column).map_err(pg_err)?;
        let hash: [u8; 32] = hash.try_into().map_err(|_| {
            StoreError::backend(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "stored token hash is not 32 bytes",
            ))
        })?;
        Ok(TokenHash::from_bytes(hash))
    }

    fn text(&self, column: &'static str) -> Result<String, StoreError> {
        self.try_get(column).map_err(pg_err)
    }

    fn opt_text(&self, column: &'static str) -> Result<Option<String>, StoreError> {
        self.try_get(column).map_err(pg_err)
    }

    fn time(&self, column: &'static str) -> Result<OffsetDateTime, StoreError> {
        self.try_get(column).map_err(pg_err)
    }

    fn opt_time(&self, column: &'static str) -> Result<Option<OffsetDateTime>, StoreError> {
        self.try_get(column).map_err(pg_err)
    }

    fn permissions(&self, column: &'static str) -> Result<Permissions, StoreError> {
        let permissions: Vec<String> = self.try_get(column).map_err(pg_err)?;
        Permissions::parse(permissions).map_err(StoreError::backend)
    }

    fn networks(&self, column: &'static str) -> Result<Vec<IpNet>, StoreError> {
        self.try_get::<Vec<String>, _>(column)
            .map_err(pg_err)?
            .iter()
            .map(|s| s.parse().map_err(StoreError::backend))
            .collect()
    }

    fn opt_u32(&self, column: &'static str) -> Result<Option<u32>, StoreError> {
        self.try_get::<Option<i64>, _>(column)
            .map_err(pg_err)?
            .map(|n| u32::try_from(n).map_err(StoreError::backend))
            .transpose()
    }
}

/// A PostgreSQL statement whose values are being bound.
struct Bind<'q>(sqlx::query::Query<'q, Postgres, PgArguments>);

impl Binder for Bind<'_> {
    fn id(self, _: &'static str, v: TokenId) -> Result<Self, StoreError> {
        Ok(Self(self.0.bind(v.0)))
    }

    fn opt_id(self, _: &'static str, v: Option<TokenId>) -> Result<Self, StoreError> {
        Ok(Self(self.0.bind(v.map(|id| id.0))))
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
        Ok(Self(self.0.bind(v)))
    }

    fn opt_time(self, _: &'static str, v: Option<OffsetDateTime>) -> Result<Self, StoreError> {
        Ok(Self(self.0.bind(v)))
    }

    fn permissions(self, _: &'static str, v: &Permissions) -> Result<Self, StoreError> {
        let permissions: Vec<&str> = v.iter().map(|p| p.as_str()).collect();
        Ok(Self(self.0.bind(permissions)))
    }

    fn networks(self, _: &'static str, v: &[IpNet]) -> Result<Self, StoreError> {
        let networks: Vec<String> = v.iter().map(ToString::to_string).collect();
        Ok(Self(self.0.bind(networks)))
    }

    fn opt_u32(self, _: &'static str, v: Option<u32>) -> Result<Self, StoreError> {
        Ok(Self(self.0.bind(v.map(i64::from))))
    }
}

/// `INSERT INTO keygate_tokens (every column) VALUES ($1, $2, ...)`.
static INSERT: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| sql::insert_statement("keygate_tokens", |n| format!("${n}")));

/// Inserts `r` on `conn` without checks. A unique violation (id or hash) is
/// [`StoreError::Duplicate`].
pub(super) async fn insert_row(
    conn: &mut sqlx::PgConnection,
    r: &TokenRecord,
) -> Result<(), StoreError> {
    let Bind(query) = codec::bind_record(Bind(sqlx::query(INSERT.as_str())), r)?;
    query.execute(conn).await.map_err(insert_err)?;
    Ok(())
}

/// `UPDATE keygate_tokens SET (the editable columns) WHERE id = $7`.
static UPDATE: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| sql::update_statement("keygate_tokens", |n| format!("${n}")));

/// Writes the editable columns of `r` on `conn`.
pub(super) async fn update_row(
    conn: &mut sqlx::PgConnection,
    r: &TokenRecord,
) -> Result<(), StoreError> {
    let Bind(query) = codec::bind_editable(Bind(sqlx::query(UPDATE.as_str())), r)?;
    query.execute(conn).await.map_err(pg_err)?;
    Ok(())
}
