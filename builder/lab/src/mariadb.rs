//! A REAL MariaDB server for `muster lab` and the tests: Debian's `mariadbd` run as root
//! with its own data directory (made by `mariadb-install-db`), listening on one address
//! inside a network namespace, detached like every lab daemon ([`crate::process`]); the
//! database and user of a k3s `datastore-endpoint` (`mysql://user:pass@tcp(host:port)/db`)
//! created in it.
//!
//! `muster lab up` runs it for clusters whose spec has `datastore: {type: external-sql}`,
//! in the namespace of the host that owns the endpoint's address, before any node boots;
//! the k3s stand-in servers then reach it over the lab network.
//!
//! Root reaches the server through its unix socket in the data directory (a path socket
//! works across network namespaces), as `root` without a password.

use crate::error::{LabError, Result};
use crate::process::{self, Service};
use model::dsn::{Dsn, Scheme};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the server may take to answer after it is started.
const START_PATIENCE: Duration = Duration::from_secs(60);
/// `(tool, Debian package)`: the server, its data-dir initializer, the client.
pub const TOOLS: [(&str, &str); 3] = [
    ("mariadbd", "mariadb-server"),
    ("mariadb-install-db", "mariadb-server"),
    ("mariadb", "mariadb-client"),
];

fn tool(name: &str) -> Result<PathBuf> {
    let package = TOOLS
        .iter()
        .find(|(t, _)| *t == name)
        .map_or("mariadb-server", |(_, p)| *p);
    crate::prereq::require(name, package)
}

/// `'text'` as an SQL string literal.
fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `` `name` `` as an SQL identifier.
fn sql_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// The statements that create the endpoint's database and user (from any host).
fn setup_sql(dsn: &Dsn) -> String {
    let user = format!("{}@'%'", sql_string(&dsn.user));
    let pass = sql_string(dsn.password.as_deref().unwrap_or(""));
    format!(
        "CREATE DATABASE IF NOT EXISTS {db};\n\
         CREATE USER IF NOT EXISTS {user} IDENTIFIED BY {pass};\n\
         ALTER USER {user} IDENTIFIED BY {pass};\n\
         GRANT ALL PRIVILEGES ON {db}.* TO {user};\n\
         FLUSH PRIVILEGES;\n",
        db = sql_ident(&dsn.database),
    )
}

/// A mysql:// endpoint, parsed; errors never repeat the endpoint (it holds a password).
pub fn endpoint_dsn(endpoint: &str) -> Result<Dsn> {
    let dsn = Dsn::parse(endpoint).map_err(|e| LabError::Command {
        cmd: "the MariaDB endpoint".into(),
        detail: e.to_string(),
    })?;
    if dsn.scheme != Scheme::Mysql {
        return Err(LabError::Unsupported(vec![
            "datastore endpoint: the lab runs MariaDB, so it needs a mysql:// endpoint".into(),
        ]));
    }
    Ok(dsn)
}

/// The detached `mariadbd` of the server whose directory is `dir`, in namespace `ns`
/// (`None`: this machine's own).
pub fn service(dir: &Path, ns: Option<&str>, listen: SocketAddr) -> Result<Service> {
    let data = dir.join("data");
    Ok(Service {
        name: "mariadb".into(),
        ns: ns.unwrap_or_default().to_string(),
        argv: vec![
            tool("mariadbd")?.display().to_string(),
            "--no-defaults".into(),
            format!("--datadir={}", data.display()),
            format!("--tmpdir={}", tmp(dir).display()),
            format!("--socket={}", socket(dir).display()),
            format!("--pid-file={}", dir.join("mysqld.pid").display()),
            format!("--bind-address={}", listen.ip()),
            format!("--port={}", listen.port()),
            "--user=root".into(),
            "--skip-name-resolve".into(),
            "--skip-log-bin".into(),
            "--innodb-buffer-pool-size=32M".into(),
            "--max-connections=200".into(),
        ],
        env: Vec::new(),
        log: dir.join("mariadbd.log"),
        pid_file: dir.join("mariadbd.pid"),
    })
}

fn socket(dir: &Path) -> PathBuf {
    dir.join("mysqld.sock")
}

/// The server's own temporary directory: in the shared /tmp, concurrent servers (tests run
/// several) and /tmp cleaners have removed each other's temporary tables mid-bootstrap.
fn tmp(dir: &Path) -> PathBuf {
    dir.join("tmp")
}

/// Wipes `dir` and makes a fresh data directory in it.
fn init_data(dir: &Path) -> Result<()> {
    let install_db = tool("mariadb-install-db")?;
    let _ = std::fs::remove_dir_all(dir);
    let data = dir.join("data");
    std::fs::create_dir_all(&data).map_err(LabError::io(&data))?;
    std::fs::create_dir_all(tmp(dir)).map_err(LabError::io(tmp(dir)))?;
    let out = Command::new(&install_db)
        .args([
            "--no-defaults",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--skip-name-resolve",
            "--user=root",
        ])
        .arg(format!("--datadir={}", data.display()))
        // Handed on to the bootstrapping mariadbd.
        .arg(format!("--tmpdir={}", tmp(dir).display()))
        .stdin(Stdio::null())
        .output()
        .map_err(LabError::io(&install_db))?;
    if !out.status.success() {
        return Err(LabError::Command {
            cmd: install_db.display().to_string(),
            detail: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    Ok(())
}

/// Runs SQL as root through the unix socket of the server in `dir` with the `mariadb`
/// client; returns what it printed (tab-separated, no column names).
pub fn root_sql(dir: &Path, sql: &str) -> Result<String> {
    let client = tool("mariadb")?;
    let out = Command::new(&client)
        .arg("--no-defaults")
        .arg(format!("--socket={}", socket(dir).display()))
        .args(["--user=root", "--batch", "--skip-column-names", "-e", sql])
        .stdin(Stdio::null())
        .output()
        .map_err(LabError::io(&client))?;
    if !out.status.success() {
        return Err(LabError::Command {
            cmd: "mariadb client (as root, on the server's socket)".into(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Initializes a data directory under `dir` (wiped first), starts the detached `mariadbd`
/// listening on `listen` (inside `ns` when given), waits until it answers and creates the database and
/// user `endpoint` names. Returns the service (pid file, log) for the caller to record.
pub fn launch(dir: &Path, ns: Option<&str>, listen: SocketAddr, endpoint: &str) -> Result<Service> {
    let dsn = endpoint_dsn(endpoint)?;
    init_data(dir)?;
    let svc = service(dir, ns, listen)?;
    process::start(&svc)?;
    let deadline = Instant::now() + START_PATIENCE;
    loop {
        if root_sql(dir, "SELECT 1").is_ok() {
            break;
        }
        if process::running(&svc.pid_file).is_none() {
            return Err(LabError::Died {
                node: ns.unwrap_or("this machine").to_string(),
                what: "mariadbd".into(),
                log: svc.log.clone(),
            });
        }
        if Instant::now() >= deadline {
            return Err(LabError::Timeout {
                what: format!("mariadbd to answer (see {})", svc.log.display()),
                patience: START_PATIENCE,
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    root_sql(dir, &setup_sql(&dsn))?;
    Ok(svc)
}

/// A running MariaDB server owned by its caller (tests): stopped and wiped on drop.
#[derive(Debug)]
pub struct Mariadb {
    svc: Service,
    dir: PathBuf,
    listen: SocketAddr,
    endpoint: String,
}

impl Mariadb {
    /// [`launch`], owned: the server stops and `dir` goes when this is dropped.
    pub fn start(
        dir: &Path,
        ns: Option<&str>,
        listen: SocketAddr,
        endpoint: &str,
    ) -> Result<Mariadb> {
        let svc = launch(dir, ns, listen, endpoint)?;
        Ok(Mariadb {
            svc,
            dir: dir.to_path_buf(),
            listen,
            endpoint: endpoint.to_string(),
        })
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.svc.log).unwrap_or_default()
    }

    /// The endpoint it was started for.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// [`root_sql`] on this server.
    pub fn root_sql(&self, sql: &str) -> Result<String> {
        root_sql(&self.dir, sql)
    }

    /// Stops the server (SIGTERM, SIGKILL after 20 s) and removes its directory.
    pub fn stop(&mut self) {
        process::stop(&self.svc.pid_file, Duration::from_secs(20));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_statements_quote_names_and_passwords() {
        let dsn = Dsn::parse("mysql://k3s:it's\\x@tcp(10.0.0.1:3306)/k`3s").unwrap();
        let sql = setup_sql(&dsn);
        assert!(
            sql.contains("CREATE DATABASE IF NOT EXISTS `k``3s`;"),
            "{sql}"
        );
        assert!(
            sql.contains("CREATE USER IF NOT EXISTS 'k3s'@'%' IDENTIFIED BY 'it\\'s\\\\x';"),
            "{sql}"
        );
    }

    #[test]
    fn only_mysql_endpoints() {
        assert!(endpoint_dsn("mysql://k3s:pw@tcp(10.0.0.1:3306)/k3s").is_ok());
        let pg = endpoint_dsn("postgres://k3s:pw@10.0.0.1:5432/k3s").unwrap_err();
        assert!(pg.to_string().contains("mysql://"), "{pg}");
        assert!(!pg.to_string().contains("pw"), "{pg}");
    }
}
