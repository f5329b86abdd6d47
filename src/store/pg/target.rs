//! Where a PostgreSQL log lives: the connection settings, the schema,
//! and the keys and channel derived from the schema.

use std::str::FromStr;

use postgres::{Client, NoTls};
use sha2::{Digest, Sha256};

use super::io;
use crate::store::StoreError;

/// The schema used when the URL names none.
pub const DEFAULT_SCHEMA: &str = "tenure";

/// Where a PostgreSQL log lives: the connection settings and the schema.
#[derive(Clone)]
pub struct PostgresTarget {
    config: postgres::Config,
    schema: String,
}

impl std::fmt::Debug for PostgresTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("PostgresTarget")
            .field("hosts", &self.config.get_hosts())
            .field("dbname", &self.config.get_dbname())
            .field("schema", &self.schema)
            .finish()
    }
}

impl PostgresTarget {
    /// Parses `postgres://user@host:port/db?schema=NAME` (or the key=value
    /// form). `schema` is ours, every other parameter is libpq's.
    pub fn parse(url: &str) -> Result<PostgresTarget, String> {
        let (base, schema) = split_schema(url)?;
        let config = postgres::Config::from_str(&base).map_err(|e| format!("not a PostgreSQL URL: {e}"))?;
        PostgresTarget::new(config, schema.as_deref().unwrap_or(DEFAULT_SCHEMA))
    }

    pub fn new(config: postgres::Config, schema: &str) -> Result<PostgresTarget, String> {
        let valid = !schema.is_empty()
            && schema.len() <= 63
            && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(format!(
                "schema {schema:?}: use 1 to 63 lowercase letters, digits and underscores, not starting with a digit"
            ));
        }
        Ok(PostgresTarget {
            config,
            schema: schema.to_owned(),
        })
    }

    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// A connection whose search path is the schema. Blocking: call it on a
    /// thread of its own, never on an async runtime's.
    pub fn connect(&self) -> Result<Client, StoreError> {
        self.connect_with(&self.config)
    }

    /// A connection like [`PostgresTarget::connect`]'s that fails within
    /// `timeout` when the server stops answering (connecting, or a request
    /// unacknowledged that long: TCP user timeout), rather than after the
    /// kernel's minutes: the timers' election must notice a lost session
    /// quickly.
    pub(crate) fn connect_watchful(&self, timeout: std::time::Duration) -> Result<Client, StoreError> {
        let mut config = self.config.clone();
        config
            .connect_timeout(timeout)
            .tcp_user_timeout(timeout)
            .keepalives(true)
            .keepalives_idle(timeout);
        self.connect_with(&config)
    }

    fn connect_with(&self, config: &postgres::Config) -> Result<Client, StoreError> {
        let mut client = config
            .connect(NoTls)
            .map_err(|e| StoreError::Io(format!("cannot connect to PostgreSQL: {e}")))?;
        client
            .batch_execute(&format!("SET search_path TO \"{}\"", self.schema))
            .map_err(io)?;
        Ok(client)
    }

    /// The advisory lock every append batch of this schema holds.
    pub(super) fn lock_key(&self) -> i64 {
        let digest = Sha256::digest(format!("tenure-log:{}", self.schema).as_bytes());
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&digest[..8]);
        i64::from_be_bytes(bytes)
    }

    /// The session advisory lock held by the node that runs the timers
    /// (`store::election`); another key than the writers' lock.
    pub(crate) fn timers_key(&self) -> i64 {
        let digest = Sha256::digest(format!("tenure-timers:{}", self.schema).as_bytes());
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&digest[..8]);
        i64::from_be_bytes(bytes)
    }

    /// The channel the writers notify on.
    pub(super) fn channel(&self) -> String {
        format!("tenure_{}", self.schema)
    }
}

/// Takes our `schema` parameter out of a URL's query string.
fn split_schema(url: &str) -> Result<(String, Option<String>), String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), None));
    };
    let mut schema = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("schema", value)) => schema = Some(value.to_owned()),
            _ => rest.push(pair),
        }
    }
    let base = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((base, schema))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_parameter_is_ours_and_the_rest_is_libpq_s() {
        let (base, schema) = split_schema("postgres://u@h:5432/db?sslmode=disable&schema=s1").expect("parse");
        assert_eq!(base, "postgres://u@h:5432/db?sslmode=disable");
        assert_eq!(schema.as_deref(), Some("s1"));
        let target = PostgresTarget::parse("postgres://u@h/db").expect("parse");
        assert_eq!(target.schema(), DEFAULT_SCHEMA);
        for bad in ["", "1a", "A", "a-b", "a\"b"] {
            let url = format!("postgres://u@h/db?schema={bad}");
            assert!(PostgresTarget::parse(&url).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn schemas_lock_apart() {
        let a = PostgresTarget::parse("postgres://u@h/db?schema=a").expect("a");
        let b = PostgresTarget::parse("postgres://u@h/db?schema=b").expect("b");
        assert_ne!(a.lock_key(), b.lock_key());
        assert_eq!(a.lock_key(), a.clone().lock_key());
    }
}
