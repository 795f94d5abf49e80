//! A minimal NTP server (RFC 5905 server mode, no authentication) serving this host's
//! clock inside a network namespace, so the VMs' chrony has a source on a network with no
//! way out and the agent's time-sync preflight check can pass for real.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds from 1900-01-01 (NTP era 0) to 1970-01-01.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
const PACKET: usize = 48;

/// An NTP timestamp (32.32 fixed point seconds since 1900) for `t`.
pub fn timestamp(t: SystemTime) -> [u8; 8] {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = (d.as_secs() + NTP_UNIX_OFFSET) as u32;
    let frac = ((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000) as u32;
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&secs.to_be_bytes());
    out[4..].copy_from_slice(&frac.to_be_bytes());
    out
}

/// The server's answer to a client request (mode 3), or `None` for anything else.
pub fn answer(request: &[u8], received: SystemTime, now: SystemTime) -> Option<[u8; PACKET]> {
    if request.len() < PACKET || request[0] & 0x07 != 3 {
        return None;
    }
    let version = (request[0] >> 3) & 0x07;
    let mut r = [0u8; PACKET];
    r[0] = (version << 3) | 4; // leap 0 (synchronized), server mode
    r[1] = 2; // stratum: a secondary server
    r[2] = request[2]; // poll, as asked
    r[3] = (-20i8) as u8; // precision ~1 µs
    // root delay 0, root dispersion ~1 ms (16.16 seconds)
    r[8..12].copy_from_slice(&66u32.to_be_bytes());
    r[12..16].copy_from_slice(b"MUST"); // reference id
    r[16..24].copy_from_slice(&timestamp(now));
    r[24..32].copy_from_slice(&request[40..48]); // origin = client's transmit
    r[32..40].copy_from_slice(&timestamp(received));
    r[40..48].copy_from_slice(&timestamp(now));
    Some(r)
}

/// The server thread; stops when dropped.
#[derive(Debug)]
pub struct NtpServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub addr: SocketAddr,
}

impl NtpServer {
    /// Serves on `addr` inside the network namespace at `netns` (e.g.
    /// `/var/run/netns/NAME`; the thread enters it, the rest of the process does not).
    pub fn start(netns: Option<PathBuf>, addr: SocketAddr) -> std::io::Result<NtpServer> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let bound = (|| {
                if let Some(ns) = &netns {
                    let f = std::fs::File::open(ns)?;
                    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(std::io::Error::from)?;
                }
                let s = UdpSocket::bind(addr)?;
                s.set_read_timeout(Some(Duration::from_millis(300)))?;
                Ok::<_, std::io::Error>(s)
            })();
            let sock = match bound {
                Ok(s) => {
                    let _ = tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let mut buf = [0u8; 512];
            while !flag.load(Ordering::Relaxed) {
                let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let received = SystemTime::now();
                if let Some(reply) = buf
                    .get(..n)
                    .and_then(|req| answer(req, received, SystemTime::now()))
                    && let Err(e) = sock.send_to(&reply, peer)
                {
                    tracing::debug!("ntp reply to {peer}: {e}");
                }
            }
        });
        match rx.recv() {
            Ok(Ok(())) => Ok(NtpServer {
                stop,
                thread: Some(thread),
                addr,
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(std::io::Error::other("the NTP server thread died")),
        }
    }
}

impl Drop for NtpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_a_client_request_with_its_origin_and_the_time() {
        let mut req = [0u8; PACKET];
        req[0] = (4 << 3) | 3;
        req[2] = 6;
        req[40..48].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_500);
        let r = answer(&req, t, t).unwrap();
        assert_eq!(r[0], (4 << 3) | 4);
        assert_eq!(r[1], 2);
        assert_eq!(r[2], 6);
        assert_eq!(&r[24..32], &[1, 2, 3, 4, 5, 6, 7, 8]);
        let secs = u32::from_be_bytes(r[40..44].try_into().unwrap());
        assert_eq!(u64::from(secs), 1_700_000_000 + NTP_UNIX_OFFSET);
        let frac = u32::from_be_bytes(r[44..48].try_into().unwrap());
        assert_eq!(frac, 1 << 31); // half a second
        req[0] = (4 << 3) | 4; // a server packet is not answered
        assert!(answer(&req, t, t).is_none());
        assert!(answer(&[0u8; 10], t, t).is_none());
    }

    #[test]
    fn serves_on_loopback() {
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let server = NtpServer::start(None, ([127, 0, 0, 1], port).into()).unwrap();
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut req = [0u8; PACKET];
        req[0] = (4 << 3) | 3;
        c.send_to(&req, server.addr).unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = c.recv_from(&mut buf).unwrap();
        assert_eq!(n, PACKET);
        assert_eq!(buf[0] & 7, 4);
    }
}
