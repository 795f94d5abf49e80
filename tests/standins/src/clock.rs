//! The stand-in clock: real time plus an optional offset, so tests can make tokens and the
//! uploaded certificates look expired without waiting hours.
//!
//! The offset comes from `MUSTER_STANDIN_CLOCK_OFFSET` (e.g. `3h`, `-10m`, `90s`), else from
//! `clock_offset=` in the knob file of the node root.

use anyhow::{Context, Result, bail};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const CLOCK_OFFSET_ENV: &str = "MUSTER_STANDIN_CLOCK_OFFSET";

/// Parses Go-style durations as kubeadm takes them: `24h0m0s`, `2h`, `90m`, `1h30m`, `500ms`,
/// `0` (and a leading `-`). Returns signed seconds.
pub fn parse_duration(s: &str) -> Result<i64> {
    let s = s.trim();
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if body == "0" {
        return Ok(0);
    }
    if body.is_empty() {
        bail!("invalid duration {s:?}");
    }
    let mut total_ms: i64 = 0;
    let mut rest = body;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .with_context(|| format!("invalid duration {s:?}: missing unit"))?;
        if digits == 0 {
            bail!("invalid duration {s:?}");
        }
        let n: i64 = rest[..digits]
            .parse()
            .with_context(|| format!("invalid duration {s:?}"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let ms = match unit {
            "h" => 3_600_000,
            "m" => 60_000,
            "s" => 1000,
            "ms" => 1,
            "d" => 86_400_000,
            _ => bail!("invalid duration {s:?}: unknown unit {unit:?}"),
        };
        total_ms += n * ms;
    }
    let secs = total_ms / 1000;
    Ok(if neg { -secs } else { secs })
}

/// The configured offset in seconds (env first, then the knob file).
pub fn offset_secs() -> i64 {
    if let Ok(v) = std::env::var(CLOCK_OFFSET_ENV)
        && !v.trim().is_empty()
    {
        return parse_duration(&v).unwrap_or(0);
    }
    let root = crate::node_root();
    crate::knobs::Knobs::load(&root)
        .ok()
        .and_then(|k| k.clock_offset)
        .unwrap_or(0)
}

/// Stand-in "now" as Unix seconds.
pub fn now_unix() -> i64 {
    let real = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64;
    real + offset_secs()
}

/// RFC 3339 rendering of Unix seconds (UTC), as Kubernetes writes timestamps.
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("24h0m0s").unwrap(), 86400);
        assert_eq!(parse_duration("2h").unwrap(), 7200);
        assert_eq!(parse_duration("1h30m").unwrap(), 5400);
        assert_eq!(parse_duration("-10m").unwrap(), -600);
        assert_eq!(parse_duration("0").unwrap(), 0);
        assert_eq!(parse_duration("1500ms").unwrap(), 1);
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }
}
