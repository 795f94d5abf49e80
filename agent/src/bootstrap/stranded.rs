//! A node stranded outside a cluster that is gone: the rendezvous says the cluster is
//! initialized, but none of its control planes answers at the API endpoint, for a long
//! time. Typical after the machines of an assembly were torn down without `muster reset`:
//! the node would otherwise retry its join silently forever. Pure: the driver feeds it
//! each probe's outcome and puts the verdict in the member report.

use protocol::clock::Millis;
use protocol::report::Unreachable;

/// How long the API endpoint may stay unreachable while joining before it is said.
pub const STRANDED_AFTER_MS: u64 = 300_000;

/// What the dependency probes name the API endpoint (`diagnosis::targets`).
pub const API_ENDPOINT: &str = "API endpoint";

/// Since when the API endpoint has been unreachable, after a probe that found
/// `unreachable` (`None` once it answers, or when it was not probed: not joining).
pub fn unreachable_since(
    since: Option<Millis>,
    probed_api: bool,
    unreachable: &[Unreachable],
    now: Millis,
) -> Option<Millis> {
    let down = probed_api && unreachable.iter().any(|u| u.what == API_ENDPOINT);
    if down {
        Some(since.unwrap_or(now))
    } else {
        None
    }
}

/// The status line for a node that has been stranded at least `after_ms`. It names the
/// patience, not the time elapsed: the line goes into the heartbeated report, and a text
/// that changed at every heartbeat would make each one a change that wakes every waiting
/// node (`report::settled`).
pub fn verdict(since: Option<Millis>, now: Millis, after_ms: u64) -> Option<String> {
    let since = since?;
    let for_ms = now.saturating_sub(since);
    (for_ms >= after_ms).then(|| {
        format!(
            "the cluster is initialized at the rendezvous but no control plane has answered \
             at the API endpoint for more than {}s: if its machines were torn down, `muster \
             reset` starts over",
            after_ms / 1000
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_down() -> Vec<Unreachable> {
        vec![Unreachable {
            what: API_ENDPOINT.into(),
            endpoint: "10.0.0.5:6443".into(),
            error: "connection refused".into(),
        }]
    }

    #[test]
    fn the_first_failed_probe_starts_the_clock_and_an_answer_stops_it() {
        let s = unreachable_since(None, true, &api_down(), 1_000);
        assert_eq!(s, Some(1_000));
        assert_eq!(unreachable_since(s, true, &api_down(), 9_000), Some(1_000));
        assert_eq!(unreachable_since(s, true, &[], 9_000), None, "answered");
        assert_eq!(
            unreachable_since(s, false, &api_down(), 9_000),
            None,
            "not probed: not joining any more"
        );
        let etcd_only = vec![Unreachable {
            what: "etcd".into(),
            ..api_down().remove(0)
        }];
        assert_eq!(unreachable_since(None, true, &etcd_only, 5), None);
    }

    #[test]
    fn said_only_after_the_patience() {
        assert_eq!(verdict(None, 10_000_000, STRANDED_AFTER_MS), None);
        assert_eq!(
            verdict(Some(0), STRANDED_AFTER_MS - 1, STRANDED_AFTER_MS),
            None
        );
        let v = verdict(Some(0), STRANDED_AFTER_MS, STRANDED_AFTER_MS).unwrap();
        assert!(
            v.contains("more than 300s") && v.contains("muster reset"),
            "{v}"
        );
        // The same words later: a heartbeat while stranded is no change at the rendezvous.
        assert_eq!(
            verdict(Some(0), 10 * STRANDED_AFTER_MS, STRANDED_AFTER_MS),
            Some(v)
        );
    }
}
