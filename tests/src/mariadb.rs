//! A REAL MariaDB server for tests and for `muster lab`: Debian's `mariadbd` started as root
//! with its own data directory (made by `mariadb-install-db`), listening on one address,
//! optionally inside a network namespace; the database and user of a k3s
//! `datastore-endpoint` (`mysql://user:pass@tcp(host:port)/db`) created in it.
//!
//! The lab (builder/src/lab) is meant to call [`Mariadb::start`] for clusters whose spec has
//! `datastore: {type: external-sql}`, with the namespace of the host that owns the endpoint's
//! address; the k3s stand-in servers then reach it over the lab network.
//!
//! Root reaches the server through its unix socket in the data directory (a path socket
//! works across network namespaces), as `root` without a password.
//! [`Mariadb::stop`] (also on drop) stops the server and wipes its directory.

use anyhow::{Context, Result, bail};
use model::dsn::{Dsn, Scheme};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the server may take to answer after it is started.
const START_PATIENCE: Duration = Duration::from_secs(60);

/// A running MariaDB server. Stopped and wiped on drop.
#[derive(Debug)]
pub struct Mariadb {
    child: Option<Child>,
    dir: PathBuf,
    listen: SocketAddr,
    endpoint: String,
}

/// The first of `names` found on PATH (or in /usr/sbin, /usr/bin).
fn tool(names: &[&str], package: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .collect::<Vec<_>>();
    for name in names {
        for d in &dirs {
            let p = d.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    bail!(
        "none of {names:?} found: install it with `apt-get install -y {package}` \
         (scripts/install-test-deps.sh does)"
    )
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

impl Mariadb {
    /// Initialises a data directory under `dir` (wiped first), starts `mariadbd` listening on
    /// `listen` (inside network namespace `ns` when given), waits until it answers, and
    /// creates the database and user that `endpoint` (a `mysql://` k3s datastore endpoint)
    /// names. `endpoint`'s address should be `listen` as the clients see it.
    pub fn start(
        dir: &Path,
        ns: Option<&str>,
        listen: SocketAddr,
        endpoint: &str,
    ) -> Result<Mariadb> {
        let dsn = Dsn::parse(endpoint).context("the MariaDB endpoint")?;
        if dsn.scheme != Scheme::Mysql {
            bail!("Mariadb::start needs a mysql:// endpoint");
        }
        let mariadbd = tool(&["mariadbd", "mysqld"], "mariadb-server")?;
        let install_db = tool(
            &["mariadb-install-db", "mysql_install_db"],
            "mariadb-server",
        )?;
        let _ = std::fs::remove_dir_all(dir);
        let data = dir.join("data");
        std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
        let out = Command::new(&install_db)
            .args([
                "--no-defaults",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
                "--user=root",
            ])
            .arg(format!("--datadir={}", data.display()))
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", install_db.display()))?;
        if !out.status.success() {
            bail!(
                "{} failed: {}{}",
                install_db.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let log = std::fs::File::create(dir.join("mariadbd.log"))
            .with_context(|| format!("creating {}", dir.join("mariadbd.log").display()))?;
        let mut cmd = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&mariadbd);
                c
            }
            None => Command::new(&mariadbd),
        };
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", dir.join("mysqld.sock").display()))
            .arg(format!("--pid-file={}", dir.join("mysqld.pid").display()))
            .arg(format!("--bind-address={}", listen.ip()))
            .arg(format!("--port={}", listen.port()))
            .args([
                "--user=root",
                "--skip-name-resolve",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=32M",
                "--max-connections=200",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", mariadbd.display()))?;
        let mut db = Mariadb {
            child: Some(child),
            dir: dir.to_path_buf(),
            listen,
            endpoint: endpoint.to_string(),
        };
        db.wait_ready()?;
        db.root_sql(&setup_sql(&dsn))
            .context("creating the endpoint's database and user")?;
        Ok(db)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_PATIENCE;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(st) = child.try_wait()?
            {
                bail!(
                    "mariadbd exited with {st} while starting; its log:\n{}",
                    self.log()
                );
            }
            if self.root_sql("SELECT 1").is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "mariadbd did not answer within {START_PATIENCE:?}; its log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mariadbd.log")).unwrap_or_default()
    }

    /// The endpoint it was started for.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// Runs SQL as root through the unix socket with the `mariadb` client; returns what it
    /// printed (tab-separated, no column names).
    pub fn root_sql(&self, sql: &str) -> Result<String> {
        let client = tool(&["mariadb", "mysql"], "mariadb-client")?;
        let out = Command::new(&client)
            .arg("--no-defaults")
            .arg(format!(
                "--socket={}",
                self.dir.join("mysqld.sock").display()
            ))
            .args(["--user=root", "--batch", "--skip-column-names", "-e", sql])
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", client.display()))?;
        if !out.status.success() {
            bail!(
                "mariadb client: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Stops the server (SIGTERM, SIGKILL after 20 s) and removes its directory.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            use nix::sys::signal::{Signal, killpg};
            if let Ok(pid) = i32::try_from(child.id()) {
                let pgid = nix::unistd::Pid::from_raw(pid);
                let _ = killpg(pgid, Signal::SIGTERM);
                let deadline = Instant::now() + Duration::from_secs(20);
                while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = killpg(pgid, Signal::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
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
}
