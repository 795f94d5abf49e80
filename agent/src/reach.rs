//! The reachability probe: a TCP connection to each endpoint `bootstrap::diagnosis::targets`
//! names, within a deadline. The driver runs it; what to probe is decided there, purely.

use crate::bootstrap::diagnosis::Target;
use protocol::report::Unreachable;
use std::time::Duration;

/// How long one connection attempt may take before the endpoint counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The targets that did not accept a connection, each with why; probed concurrently, so a
/// round takes at most `timeout`.
pub async fn unreachable(targets: &[Target], timeout: Duration) -> Vec<Unreachable> {
    let probes = targets.iter().map(|t| async move {
        connect(&t.endpoint, timeout)
            .await
            .err()
            .map(|error| Unreachable {
                what: t.what.to_string(),
                endpoint: t.endpoint.clone(),
                error,
            })
    });
    futures::future::join_all(probes)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// One TCP connection to `host:port`, closed at once.
pub async fn connect(endpoint: &str, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(endpoint)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(describe(&e)),
        Err(_) => Err(format!("no answer within {}s", timeout.as_secs())),
    }
}

/// The error as an operator reads it: `connection refused`, not `Connection refused (os
/// error 111)`.
fn describe(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => "connection refused".into(),
        K::TimedOut => "timed out".into(),
        K::HostUnreachable => "no route to host".into(),
        K::NetworkUnreachable => "network unreachable".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_port_is_named_and_an_open_one_is_not() {
        let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open_addr = open.local_addr().unwrap().to_string();
        // A port that was just free: bind, note, close.
        let closed_addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let targets = vec![
            Target {
                what: "datastore",
                endpoint: closed_addr.clone(),
            },
            Target {
                what: "rendezvous",
                endpoint: open_addr,
            },
        ];
        let u = unreachable(&targets, CONNECT_TIMEOUT).await;
        assert_eq!(u.len(), 1, "{u:?}");
        assert_eq!(
            u[0].to_string(),
            format!("datastore {closed_addr} unreachable: connection refused")
        );
    }
}
