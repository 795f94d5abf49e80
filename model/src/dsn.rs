//! k3s `--datastore-endpoint` strings for SQL datastores, parsed.
//!
//! MySQL/MariaDB endpoints are `mysql://` followed by a Go MySQL driver DSN:
//! `[user[:password]@][protocol[(address)]]/dbname[?param=value&…]`, e.g.
//! `mysql://k3s:secret@tcp(192.168.0.156:3306)/k3s`. As in that driver the database name
//! starts after the LAST `/` and the credentials end at the last `@` before it, so a
//! password may contain `@`, `:` and `/`; the password is everything after the first `:`.
//! PostgreSQL endpoints are URLs: `postgres://user:password@host:port/dbname?…`
//! (percent-encoded).
//!
//! The endpoint carries the database password, so muster never bakes it into the shared
//! image: [`redact`] is what the shared payload keeps.

use std::fmt;

/// Which database the endpoint names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Mysql,
    Postgres,
}

/// A parsed SQL datastore endpoint. `Debug` withholds the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Dsn {
    pub scheme: Scheme,
    pub user: String,
    pub password: Option<String>,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// For MySQL, `tcp` (the only transport muster's nodes use) or `unix` with a socket path
    /// in `host` and port 0.
    pub protocol: String,
    pub database: String,
    /// `?key=value&…`, verbatim, without the `?`.
    pub params: String,
}

impl fmt::Debug for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dsn")
            .field("scheme", &self.scheme)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<withheld>"))
            .field("host", &self.host)
            .field("port", &self.port)
            .field("protocol", &self.protocol)
            .field("database", &self.database)
            .field("params", &self.params)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DsnError {
    #[error("datastore endpoint must start with mysql://, postgres:// or postgresql://")]
    Scheme,
    #[error(
        "datastore endpoint {0}: no `/dbname` part (e.g. mysql://user:pass@tcp(host:3306)/k3s)"
    )]
    NoDatabase(&'static str),
    #[error(
        "datastore endpoint mysql://: `{0}` is not `protocol(address)` (e.g. tcp(192.168.0.156:3306))"
    )]
    Address(String),
    #[error("datastore endpoint: unsupported protocol `{0}` (tcp or unix)")]
    Protocol(String),
    #[error("datastore endpoint: `{0}` is not host:port")]
    HostPort(String),
    #[error("datastore endpoint: port `{0}` is not a number from 1 to 65535")]
    Port(String),
    #[error("datastore endpoint: bad percent-encoding in `{0}`")]
    Encoding(String),
}

/// The placeholder password the examples ship; a build warns about it.
pub const PLACEHOLDER_PASSWORD: &str = "CHANGE-ME";

impl Dsn {
    pub fn parse(endpoint: &str) -> Result<Dsn, DsnError> {
        if let Some(rest) = endpoint.strip_prefix("mysql://") {
            parse_mysql(rest)
        } else if let Some(rest) = endpoint
            .strip_prefix("postgres://")
            .or_else(|| endpoint.strip_prefix("postgresql://"))
        {
            parse_postgres(rest)
        } else {
            Err(DsnError::Scheme)
        }
    }

    /// `host:port` for TCP (IPv6 in brackets).
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

fn parse_mysql(rest: &str) -> Result<Dsn, DsnError> {
    let slash = rest.rfind('/').ok_or(DsnError::NoDatabase("mysql://"))?;
    let (head, tail) = (&rest[..slash], &rest[slash + 1..]);
    let (database, params) = tail.split_once('?').unwrap_or((tail, ""));
    let (userinfo, net) = match head.rfind('@') {
        Some(at) => (Some(&head[..at]), &head[at + 1..]),
        None => (None, head),
    };
    let (user, password) = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((user, pw)) => (user.to_string(), Some(pw.to_string())),
            None => (u.to_string(), None),
        },
        None => ("root".to_string(), None),
    };
    let (protocol, address) = if net.is_empty() {
        ("tcp", "127.0.0.1:3306")
    } else {
        match net.split_once('(') {
            Some((p, a)) => (
                p,
                a.strip_suffix(')')
                    .ok_or_else(|| DsnError::Address(net.to_string()))?,
            ),
            None if net.contains([')', ':', '.']) => {
                return Err(DsnError::Address(net.to_string()));
            }
            None => (net, ""),
        }
    };
    let (host, port) = match protocol {
        "tcp" if address.is_empty() => ("127.0.0.1".to_string(), 3306),
        "tcp" => host_port(address, 3306)?,
        "unix" => (address.to_string(), 0),
        other => return Err(DsnError::Protocol(other.to_string())),
    };
    Ok(Dsn {
        scheme: Scheme::Mysql,
        user,
        password,
        host,
        port,
        protocol: protocol.to_string(),
        // kine's default database name.
        database: if database.is_empty() {
            "kubernetes".into()
        } else {
            database.to_string()
        },
        params: params.to_string(),
    })
}

fn parse_postgres(rest: &str) -> Result<Dsn, DsnError> {
    let (authority, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    let (database, params) = tail.split_once('?').unwrap_or((tail, ""));
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((user, pw)) => (percent_decode(user)?, Some(percent_decode(pw)?)),
            None => (percent_decode(u)?, None),
        },
        None => ("postgres".to_string(), None),
    };
    let (host, port) = if hostport.is_empty() {
        ("localhost".to_string(), 5432)
    } else {
        host_port(hostport, 5432)?
    };
    Ok(Dsn {
        scheme: Scheme::Postgres,
        user,
        password,
        host,
        port,
        protocol: "tcp".into(),
        database: if database.is_empty() {
            "kubernetes".into()
        } else {
            percent_decode(database)?
        },
        params: params.to_string(),
    })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn host_port(s: &str, default_port: u16) -> Result<(String, u16), DsnError> {
    let bad = || DsnError::HostPort(s.to_string());
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(bad)?;
        match after {
            "" => (h, None),
            p => (h, Some(p.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) if !p.contains(':') => (h, Some(p)),
            Some(_) => return Err(bad()),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err(bad());
    }
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(DsnError::Port(p.to_string())),
        },
    };
    Ok((host.to_string(), port))
}

fn percent_decode(s: &str) -> Result<String, DsnError> {
    let bad = || DsnError::Encoding(s.to_string());
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or_else(bad)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// The endpoint with its password replaced by `REDACTED`, for anything shared or shown (the
/// baked cluster config, plan output). An endpoint that does not parse is withheld whole.
pub fn redact(endpoint: &str) -> String {
    let scheme_end = endpoint.find("://").map_or(0, |i| i + 3);
    match Dsn::parse(endpoint) {
        Ok(Dsn { password: None, .. }) => endpoint.to_string(),
        Ok(d) => {
            let rest = &endpoint[scheme_end..];
            // The credentials end at the last `@` before the database (MySQL) or the first
            // `/` (PostgreSQL); the password starts after the user's `:`.
            let head_end = match d.scheme {
                Scheme::Mysql => rest.rfind('/'),
                Scheme::Postgres => rest.find('/'),
            }
            .unwrap_or(rest.len());
            match (rest[..head_end].rfind('@'), rest.find(':')) {
                (Some(at), Some(colon)) if colon < at => format!(
                    "{}{}REDACTED{}",
                    &endpoint[..scheme_end],
                    &rest[..=colon],
                    &rest[at..]
                ),
                _ => "<endpoint withheld>".to_string(),
            }
        }
        Err(_) => "<endpoint withheld: it does not parse>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_002_endpoint() {
        let d = Dsn::parse("mysql://k3s:CHANGE-ME@tcp(192.168.0.156:3306)/k3s").unwrap();
        assert_eq!(d.scheme, Scheme::Mysql);
        assert_eq!(d.user, "k3s");
        assert_eq!(d.password.as_deref(), Some("CHANGE-ME"));
        assert_eq!((d.host.as_str(), d.port), ("192.168.0.156", 3306));
        assert_eq!(d.database, "k3s");
        assert_eq!(d.address(), "192.168.0.156:3306");
        assert!(!format!("{d:?}").contains("CHANGE-ME"));
    }

    #[test]
    fn mysql_passwords_with_separators_and_params() {
        let d = Dsn::parse("mysql://u:p@ss:w/rd@tcp([fd00::5]:3307)/db?tls=false&x=1").unwrap();
        assert_eq!(d.password.as_deref(), Some("p@ss:w/rd"));
        assert_eq!((d.host.as_str(), d.port), ("fd00::5", 3307));
        assert_eq!(d.address(), "[fd00::5]:3307");
        assert_eq!(d.database, "db");
        assert_eq!(d.params, "tls=false&x=1");
        assert_eq!(
            redact("mysql://u:p@ss:w/rd@tcp([fd00::5]:3307)/db?tls=false&x=1"),
            "mysql://u:REDACTED@tcp([fd00::5]:3307)/db?tls=false&x=1"
        );
    }

    #[test]
    fn mysql_defaults() {
        let d = Dsn::parse("mysql://root@tcp(db.lan)/").unwrap();
        assert_eq!((d.user.as_str(), d.password, d.port), ("root", None, 3306));
        assert_eq!(d.database, "kubernetes");
        let d = Dsn::parse("mysql:///k3s").unwrap();
        assert_eq!(d.address(), "127.0.0.1:3306");
        let d = Dsn::parse("mysql://k3s:pw@unix(/run/mysqld/mysqld.sock)/k3s").unwrap();
        assert_eq!(
            (d.protocol.as_str(), d.host.as_str()),
            ("unix", "/run/mysqld/mysqld.sock")
        );
    }

    #[test]
    fn postgres_urls() {
        let d = Dsn::parse("postgres://k3s:p%40ss@10.0.0.9:5433/k3s?sslmode=disable").unwrap();
        assert_eq!(d.scheme, Scheme::Postgres);
        assert_eq!(d.password.as_deref(), Some("p@ss"));
        assert_eq!(d.address(), "10.0.0.9:5433");
        assert_eq!(d.params, "sslmode=disable");
        assert_eq!(
            redact("postgres://k3s:p%40ss@10.0.0.9:5433/k3s?sslmode=disable"),
            "postgres://k3s:REDACTED@10.0.0.9:5433/k3s?sslmode=disable"
        );
        assert_eq!(Dsn::parse("postgresql://h/db").unwrap().port, 5432);
    }

    #[test]
    fn bad_endpoints_say_what_is_wrong() {
        let err = |s: &str| Dsn::parse(s).unwrap_err();
        assert_eq!(err("sqlite:///x.db"), DsnError::Scheme);
        assert_eq!(
            err("mysql://k3s:pw@tcp(10.0.0.1:3306)"),
            DsnError::NoDatabase("mysql://")
        );
        assert!(matches!(err("mysql:k3s"), DsnError::Scheme));
        assert_eq!(
            err("mysql://k3s:pw@10.0.0.1:3306/k3s"),
            DsnError::Address("10.0.0.1:3306".into())
        );
        assert_eq!(
            err("mysql://k3s:pw@tcp(10.0.0.1:3306/k3s"),
            DsnError::Address("tcp(10.0.0.1:3306".into())
        );
        assert_eq!(
            err("mysql://k3s:pw@tcp(10.0.0.1:99999)/k3s"),
            DsnError::Port("99999".into())
        );
        assert_eq!(
            err("mysql://k3s:pw@tcp(10.0.0.1:)/k3s"),
            DsnError::Port("".into())
        );
        assert_eq!(
            err("mysql://k3s:pw@udp(10.0.0.1:3306)/k3s"),
            DsnError::Protocol("udp".into())
        );
        assert_eq!(
            err("mysql://k3s:pw@tcp(fd00::1:3306)/k3s"),
            DsnError::HostPort("fd00::1:3306".into())
        );
        assert_eq!(err("mysql://k3s"), DsnError::NoDatabase("mysql://"));
        assert_eq!(
            err("postgres://u:%zz@h/db"),
            DsnError::Encoding("%zz".into())
        );
        assert!(redact("mysql://k3s:secret@10.0.0.1/k3s").starts_with("<endpoint withheld"));
    }
}
