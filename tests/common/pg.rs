//! A schema of its own in the machine's PostgreSQL for one test
//! (`TENURE_PG_URL`, by default `postgres://postgres@127.0.0.1:5432/test`),
//! dropped when the test ends.

use tenure::store::{PostgresStore, PostgresTarget};

pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub fn base_url() -> String {
    std::env::var("TENURE_PG_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A schema of its own for one test, dropped when the test ends.
pub struct Schema {
    pub name: String,
}

impl Schema {
    pub fn fresh() -> Schema {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        Schema { name }
    }

    pub fn url(&self) -> String {
        let base = base_url();
        let sep = if base.contains('?') { '&' } else { '?' };
        format!("{base}{sep}schema={}", self.name)
    }

    pub fn open(&self) -> PostgresStore {
        PostgresStore::open(&self.url()).unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is needed for these tests and did not answer at {} ({e}); \
                 start it or point TENURE_PG_URL at one",
                base_url()
            )
        })
    }
}

impl Schema {
    /// Where a server finds this schema (`--store`).
    pub fn target(&self) -> PostgresTarget {
        PostgresTarget::parse(&self.url()).expect("a valid URL")
    }

    /// Runs `sql` in this schema on a thread of its own (the blocking
    /// client must not run on the test's runtime) and answers the first
    /// column of each row.
    pub fn query_i64(&self, sql: &str) -> Vec<i64> {
        self.rows(sql, |r| r.get::<_, i64>(0))
    }
}

impl Schema {
    /// Runs statements in this schema (on a thread of its own).
    pub fn execute(&self, sql: &str) {
        let (url, name, sql) = (base_url(), self.name.clone(), sql.to_owned());
        std::thread::spawn(move || {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
            client
                .batch_execute(&format!("SET search_path TO \"{name}\"; {sql}"))
                .expect("execute");
        })
        .join()
        .expect("execute thread");
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let url = base_url();
        let name = self.name.clone();
        // The blocking client runs on a thread of its own, never on the
        // test's runtime.
        let dropped = std::thread::spawn(move || -> Result<(), String> {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).map_err(|e| e.to_string())?;
            client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                .map_err(|e| e.to_string())
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop schema {}: {e}", self.name);
        }
    }
}

impl Schema {
    /// The plan PostgreSQL picks for `sql` in this schema (`EXPLAIN`), one
    /// line a node.
    pub fn explain(&self, sql: &str) -> String {
        let explain = format!("EXPLAIN {sql}");
        self.rows(&explain, |r| r.get::<_, String>(0)).join("\n")
    }

    /// Runs the query `sql` in this schema on a thread of its own (the
    /// blocking client must not run on the test's runtime); answers each
    /// row through `column`.
    fn rows<T: Send + 'static>(&self, sql: &str, column: fn(&postgres::Row) -> T) -> Vec<T> {
        let (url, name, sql) = (base_url(), self.name.clone(), sql.to_owned());
        std::thread::spawn(move || {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
            client
                .batch_execute(&format!("SET search_path TO \"{name}\""))
                .expect("search path");
            client.query(&sql, &[]).expect("query").iter().map(column).collect()
        })
        .join()
        .expect("query thread")
    }
}
