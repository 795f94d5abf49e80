//! What a TEST image's reporter (`images/test-image.sh`) writes to a VM's second serial
//! port: blocks of named sections, the newest complete block wins. Read from outside the VM.

use std::collections::BTreeMap;
use std::path::Path;

pub const BEGIN: &str = "=== MUSTER-TEST-REPORT BEGIN ";
pub const END: &str = "=== MUSTER-TEST-REPORT END";

/// One report: the VM's host name, its uptime when written, and the sections' text.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeReport {
    pub hostname: String,
    pub uptime_s: f64,
    pub sections: BTreeMap<String, String>,
}

impl NodeReport {
    /// The newest complete report in `text` (`\r` from the tty is ignored).
    pub fn parse_last(text: &str) -> Option<NodeReport> {
        let text = text.replace('\r', "");
        let end = text.rfind(END)?;
        let begin = text[..end].rfind(BEGIN)?;
        let block = &text[begin + BEGIN.len()..end];
        let (head, body) = block.split_once('\n')?;
        let mut words = head.split_whitespace();
        let hostname = words.next()?.to_string();
        let uptime_s = words.next().and_then(|w| w.parse().ok()).unwrap_or(0.0);
        let mut sections = BTreeMap::new();
        let mut current: Option<(String, String)> = None;
        for line in body.lines() {
            if let Some(name) = line.strip_prefix("@@ ") {
                if let Some((n, t)) = current.take() {
                    sections.insert(n, t);
                }
                current = Some((name.trim().to_string(), String::new()));
            } else if let Some((_, t)) = current.as_mut() {
                t.push_str(line);
                t.push('\n');
            }
        }
        if let Some((n, t)) = current {
            sections.insert(n, t);
        }
        Some(NodeReport {
            hostname,
            uptime_s,
            sections,
        })
    }

    pub fn read(path: &Path) -> Option<NodeReport> {
        let bytes = std::fs::read(path).ok()?;
        NodeReport::parse_last(&String::from_utf8_lossy(&bytes))
    }

    /// `systemctl show` properties of `unit` (e.g. `ActiveState` → `active`).
    pub fn unit(&self, unit: &str) -> BTreeMap<String, String> {
        self.sections
            .get(&format!("unit {unit}"))
            .map(|t| {
                t.lines()
                    .filter_map(|l| l.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A section holding JSON (`nodeagent status`, `etcd members`, `identity`).
    pub fn json(&self, section: &str) -> Option<serde_json::Value> {
        serde_json::from_str(self.sections.get(section)?.trim()).ok()
    }

    pub fn text(&self, section: &str) -> &str {
        self.sections.get(section).map_or("", String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_complete_block_wins() {
        let text = "noise\r\n=== MUSTER-TEST-REPORT BEGIN cp-1 12.5\r\n@@ unit nodeagent.service\r\nType=notify\r\nActiveState=activating\r\n=== MUSTER-TEST-REPORT END\r\n\
            === MUSTER-TEST-REPORT BEGIN cp-1 22.5\n@@ unit nodeagent.service\nType=notify\nActiveState=active\n@@ nodeagent status\n{\"healthy\": true}\n=== MUSTER-TEST-REPORT END\n\
            === MUSTER-TEST-REPORT BEGIN cp-1 32.5\n@@ unit nodeagent.service\nType=no";
        let r = NodeReport::parse_last(text).unwrap();
        assert_eq!(r.hostname, "cp-1");
        assert_eq!(r.uptime_s, 22.5);
        assert_eq!(r.unit("nodeagent.service")["ActiveState"], "active");
        assert_eq!(r.unit("nodeagent.service")["Type"], "notify");
        assert_eq!(r.json("nodeagent status").unwrap()["healthy"], true);
        assert!(r.unit("keepalived.service").is_empty());
        assert!(NodeReport::parse_last("=== MUSTER-TEST-REPORT BEGIN x 1\n").is_none());
    }
}
