//! etcd's v3 JSON gateway with a client certificate (the `EtcdCreds` a control plane
//! publishes in the join material): member list and remove, `/health`. Used by a joining
//! control plane to remove its own stale member and by `muster remove` to remove a node's
//! member. Invocation here, the parsers of etcd's answers beside them (tested on captured
//! output in the agent's fixtures).

use crate::etcd_view::EtcdMember;
use crate::pem_client::ClientCache;
use crate::records::EtcdCreds;

/// A gateway call that failed: what, where, why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{step}: {url}: {detail}")]
pub struct GatewayError {
    pub step: &'static str,
    pub url: String,
    pub detail: String,
}

const LIST: &str = "list etcd members";
const REMOVE: &str = "remove etcd member";

fn etcd_client(
    step: &'static str,
    clients: &ClientCache,
    creds: &EtcdCreds,
) -> Result<reqwest::Client, GatewayError> {
    clients
        .client(
            &creds.ca_pem,
            Some((&creds.cert_pem, creds.key_pem.expose())),
        )
        .map_err(|detail| GatewayError {
            step,
            url: String::new(),
            detail,
        })
}

async fn post(
    step: &'static str,
    c: &reqwest::Client,
    url: &str,
    body: serde_json::Value,
) -> Result<String, GatewayError> {
    let err = |detail: String| GatewayError {
        step,
        url: url.to_string(),
        detail,
    };
    let r = c
        .post(url)
        .json(&body)
        .send()
        .await
        .map_err(|e| err(e.to_string()))?;
    let status = r.status().as_u16();
    let text = r.text().await.map_err(|e| err(e.to_string()))?;
    if status != 200 {
        return Err(err(format!("status {status}: {}", text.trim())));
    }
    Ok(text)
}

fn nobody(step: &'static str) -> GatewayError {
    GatewayError {
        step,
        url: String::new(),
        detail: "no etcd endpoint to ask".into(),
    }
}

/// Lists members through the first endpoint that answers.
pub async fn member_list(
    clients: &ClientCache,
    endpoints: &[String],
    creds: &EtcdCreds,
) -> Result<Vec<EtcdMember>, GatewayError> {
    let c = etcd_client(LIST, clients, creds)?;
    let mut last = None;
    for ep in endpoints {
        let url = format!("{ep}/v3/cluster/member/list");
        match post(LIST, &c, &url, serde_json::json!({})).await {
            Ok(text) => {
                return parse_members(&text).map_err(|detail| GatewayError {
                    step: LIST,
                    url,
                    detail,
                });
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| nobody(LIST)))
}

/// Removes member `id` (the gateway takes the uint64 as a decimal string). Already gone
/// counts as removed.
pub async fn member_remove(
    clients: &ClientCache,
    endpoints: &[String],
    creds: &EtcdCreds,
    id: u64,
) -> Result<(), GatewayError> {
    let c = etcd_client(REMOVE, clients, creds)?;
    let mut last = None;
    for ep in endpoints {
        let url = format!("{ep}/v3/cluster/member/remove");
        match post(REMOVE, &c, &url, serde_json::json!({"ID": id.to_string()})).await {
            Ok(_) => return Ok(()),
            Err(e) if e.detail.contains("member not found") => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| nobody(REMOVE)))
}

/// `GET {client_url}/health` with the client certificate: etcd answers
/// `{"health":"true"}` (200) when it has a leader and can commit, `{"health":"false"}` (503)
/// without quorum. Errors and timeouts count as unhealthy.
pub async fn health(clients: &ClientCache, creds: &EtcdCreds, client_url: &str) -> bool {
    let Ok(c) = etcd_client("etcd health", clients, creds) else {
        return false;
    };
    let url = format!("{}/health", client_url.trim_end_matches('/'));
    match c.get(&url).send().await {
        Ok(r) => match r.text().await {
            Ok(body) => parse_health(&body).unwrap_or(false),
            Err(_) => false,
        },
        Err(e) => {
            tracing::debug!(%url, error = %e, "etcd member unreachable");
            false
        }
    }
}

/// `etcdctl member list -w json` or the gateway's `/v3/cluster/member/list` answer (IDs
/// as numbers or, proto3 JSON, as strings).
pub fn parse_members(json: &str) -> Result<Vec<EtcdMember>, String> {
    #[derive(serde::Deserialize)]
    struct List {
        #[serde(default)]
        members: Vec<M>,
    }
    #[derive(serde::Deserialize)]
    struct M {
        #[serde(rename = "ID")]
        id: serde_json::Value,
        #[serde(default)]
        name: String,
        #[serde(rename = "peerURLs", default)]
        peer_urls: Vec<String>,
        #[serde(rename = "clientURLs", default)]
        client_urls: Vec<String>,
        #[serde(rename = "isLearner", default)]
        is_learner: bool,
    }
    let list: List = serde_json::from_str(json).map_err(|e| e.to_string())?;
    list.members
        .into_iter()
        .map(|m| {
            let id = match &m.id {
                serde_json::Value::Number(n) => n.as_u64(),
                serde_json::Value::String(s) => s.parse::<u64>().ok(),
                _ => None,
            }
            .ok_or_else(|| format!("member ID {} is not a uint64", m.id))?;
            Ok(EtcdMember {
                id,
                name: m.name,
                peer_urls: m.peer_urls,
                client_urls: m.client_urls,
                is_learner: m.is_learner,
            })
        })
        .collect()
}

/// etcd's `/health` body: `{"health":"true"}` or `{"health":"false"}` (a string in 3.4;
/// a bool is accepted too).
pub fn parse_health(body: &str) -> Result<bool, String> {
    #[derive(serde::Deserialize)]
    struct Health {
        health: serde_json::Value,
    }
    let h: Health = serde_json::from_str(body).map_err(|e| format!("etcd /health: {e}"))?;
    match &h.health {
        serde_json::Value::String(s) if s == "true" => Ok(true),
        serde_json::Value::String(s) if s == "false" => Ok(false),
        serde_json::Value::Bool(b) => Ok(*b),
        other => Err(format!("etcd /health: unexpected value {other}")),
    }
}
