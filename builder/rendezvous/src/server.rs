//! Serving: a function of a listener, an optional TLS config and a shutdown future.
//! HTTP/1.1 over TLS (or plain, when the operator asked for it), one task per
//! connection, a background sweeper for expiries, and a graceful drain at shutdown.

use crate::http::app;
use crate::peers::PeerTable;
use crate::service::Service;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

/// How often loaded clusters are swept for expired members, records and leases.
const SWEEP_EVERY: Duration = Duration::from_millis(250);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// In-flight requests get this long to finish after shutdown is asked for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves until `shutdown` resolves, then stops accepting, ends pending watches and
/// waits (bounded) for in-flight requests.
// Long on purpose: the accept loop and the per-connection task share the router's
// hyper/tower service type, which has no name outside this function; split, it would
// have to be boxed on every connection.
pub async fn run(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    svc: Service,
    shutdown: impl Future<Output = ()>,
) {
    let router = app(svc.clone());
    let acceptor = tls.map(TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let sweeper = tokio::spawn(sweep_loop(svc.clone()));
    let peers = PeerTable::new(svc.limits().max_unauthenticated_per_ip);
    let read_timeout = Duration::from_millis(svc.limits().read_timeout_ms);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors or similar: back off instead of spinning,
                    // then go on accepting (slow connections are cut off meanwhile).
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(ticket) = peers.admit(peer.ip()) else {
            tracing::debug!(
                "closing a connection from {peer}: too many unauthenticated ones from its IP"
            );
            continue;
        };
        let _ = stream.set_nodelay(true);
        // Each request carries the connection's ticket: its peer IP (for the per-IP rate
        // limit) and its place in the unauthenticated count.
        let conn_ticket = ticket.clone();
        let service = TowerToHyperService::new(router.clone().map_request(
            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(conn_ticket.clone());
                req
            },
        ));
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            // Held until the connection ends.
            let _ticket = ticket;
            let mut builder = http1::Builder::new();
            builder.timer(TokioTimer::new());
            // The body's deadline is enforced where it is read (`auth`).
            builder.header_read_timeout(read_timeout);
            let served = match acceptor {
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let conn = builder.serve_connection(TokioIo::new(tls), service);
                            watcher.watch(conn).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!("TLS handshake with {peer} failed: {e}");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake with {peer} timed out");
                            return;
                        }
                    }
                }
                None => {
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(conn).await
                }
            };
            if let Err(e) = served {
                tracing::debug!("connection from {peer}: {e}");
            }
        });
    }
    drop(listener);
    svc.begin_shutdown();
    sweeper.abort();
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish within {DRAIN_TIMEOUT:?}");
    }
}

async fn sweep_loop(svc: Service) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        svc.sweep_all().await;
    }
}
