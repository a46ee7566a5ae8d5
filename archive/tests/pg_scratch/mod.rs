//! A PostgreSQL database of its own for a test, on the server at `KNHK_TEST_POSTGRES_URL`
//! (.ci/run starts a throwaway cluster from Debian's package and sets it): created here,
//! dropped on drop. Without the variable the test prints a "SKIPPED:" line and passes, except
//! under CI (`CI` set), where a missing server fails it. Shared by knhk-archive's
//! tests/postgres.rs and knhk-shell's tests/grpc_archive.rs (included by path).

#![allow(dead_code)]

use tokio_postgres::config::Host;
use tokio_postgres::{Config, NoTls};

pub const URL_VAR: &str = "KNHK_TEST_POSTGRES_URL";

/// Runs `sql` on the server of `config` from a thread of its own (callers may be on a
/// runtime).
pub fn admin(config: &Config, sql: String) {
    let config = config.clone();
    let what = sql.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        rt.block_on(async {
            let (client, conn) = config
                .connect(NoTls)
                .await
                .unwrap_or_else(|e| panic!("connecting to {URL_VAR}: {e}"));
            tokio::spawn(conn);
            client
                .batch_execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        })
    })
    .join()
    .unwrap_or_else(|_| panic!("{what} panicked"));
}

/// A database of its own, dropped (with whatever is still connected) on drop.
pub struct Database {
    /// The server's configuration with the test's database.
    pub config: Config,
    pub name: String,
    admin: Config,
}

impl Database {
    /// The database as a `key=value` connection string (for a server's `--archive-url`).
    pub fn url(&self) -> String {
        let c = &self.config;
        let mut s = String::new();
        if let Some(h) = c.get_hosts().first() {
            match h {
                Host::Tcp(name) => s.push_str(&format!("host={name}")),
                Host::Unix(dir) => s.push_str(&format!("host={}", dir.display())),
            }
        }
        if let Some(p) = c.get_ports().first() {
            s.push_str(&format!(" port={p}"));
        }
        if let Some(u) = c.get_user() {
            s.push_str(&format!(" user={u}"));
        }
        if let Some(pw) = c.get_password() {
            s.push_str(&format!(" password={}", String::from_utf8_lossy(pw)));
        }
        s.push_str(&format!(" dbname={}", self.name));
        s
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        admin(
            &self.admin,
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// A new database named after `test`, or None (skipped, said so) without a server.
pub fn fresh(test: &str) -> Option<Database> {
    let Ok(url) = std::env::var(URL_VAR) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "{URL_VAR} is not set under CI: .ci/run must start PostgreSQL for {test}"
        );
        println!("SKIPPED: {test}: {URL_VAR} is not set (.ci/run starts a server and sets it)");
        return None;
    };
    let admin_config: Config = url
        .parse()
        .unwrap_or_else(|e| panic!("{URL_VAR} is not a PostgreSQL URL: {e}"));
    let name = format!("knhk_{test}_{}", std::process::id());
    admin(
        &admin_config,
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    );
    admin(&admin_config, format!("CREATE DATABASE {name}"));
    let mut config = admin_config.clone();
    config.dbname(&name);
    Some(Database {
        config,
        name,
        admin: admin_config,
    })
}
