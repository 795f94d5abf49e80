//! cloud-init NoCloud files per node: `meta-data` (instance id and host name),
//! `network-config` (v2: the cluster NIC matched by MAC, renamed to the spec's interface,
//! static address, default route as `to: 0.0.0.0/0`, name servers) and `user-data`
//! (`#cloud-config`: host name, the login user with its ssh keys, and the node identity
//! and cluster secret as files; on k3s servers with an external SQL datastore also the
//! `datastore-endpoint` drop-in, which holds the database password; on kubeadm control planes
//! with an external etcd the etcd CA and the API server's etcd client cert and key). Strings that YAML 1.1 could misread (MACs, modes,
//! addresses) are always quoted by `render::yaml`.

use super::common::{Input, RenderError};
use super::yaml::to_yaml;
use crate::bake::etcd_tls::EtcdClientTls;
use model::PlannedNode;
use model::baked::NodeIdentity;
use model::node_files::{self as nf, CLUSTER_SECRET, NODE_IDENTITY};
use model::spec::{Platform, Role};
use serde_json::{Map, Value, json};

pub const META_DATA: &str = "meta-data";
pub const NETWORK_CONFIG: &str = "network-config";
pub const USER_DATA: &str = "user-data";

/// The three NoCloud files of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSeed {
    pub meta_data: String,
    pub network_config: String,
    pub user_data: String,
}

impl NodeSeed {
    /// `(file name, contents)` in the order they go on the seed volume.
    pub fn files(&self) -> [(&'static str, &str); 3] {
        [
            (META_DATA, &self.meta_data),
            (NETWORK_CONFIG, &self.network_config),
            (USER_DATA, &self.user_data),
        ]
    }
}

/// The name cloud-init's networkd renderer gives the `.network` file of interface `iface`.
fn networkd_file_name(iface: &str) -> String {
    format!("10-cloud-init-{iface}.network")
}

/// The networkd drop-in every payload carries for the cluster NIC, `(path, contents)`:
/// no IPv6 router discovery on it. Its addresses are static and IPv4 (`network-config`);
/// and Debian 12's networkd (systemd 252) keeps a statically addressed link
/// "configuring" until router discovery gives up, ~13 s when no router answers, which held
/// wait-online, cloud-init's network stage and every service after it on each boot
/// (systemd 254 stopped waiting once a static address is set). cloud-init 22.4 renders
/// v2's `accept-ra` only for DHCPv6 links, hence a drop-in on the file it writes.
pub fn network_dropin(iface: &str) -> (String, &'static str) {
    (
        format!(
            "{}/{}.d/90-muster-no-router-advertisements.conf",
            nf::NETWORKD_DROPINS,
            networkd_file_name(iface)
        ),
        NETWORK_DROPIN,
    )
}

const NETWORK_DROPIN: &str = "\
# muster: the cluster NIC is addressed statically (IPv4, from the node's network-config);
# no IPv6 router discovery on it, which would also hold the link \"configuring\" (and
# network-online) until discovery gives up.
[Network]
IPv6AcceptRA=no
";

/// Unique per node and per build: the node name and the start of the payload's SHA-256.
pub fn instance_id(node: &PlannedNode, payload_sha256: &str) -> String {
    let short: String = payload_sha256.chars().take(16).collect();
    format!("{}-{short}", node.name)
}

// Long on purpose: a renderer is one straight run of output lines in the order the

// file shows them; split up, the layout of what it writes could no longer be read here.

pub fn render(
    input: &Input<'_>,
    node: &PlannedNode,
    cluster_id: &str,
    secret_hex: &str,
    payload_sha256: &str,
    etcd_tls: Option<&EtcdClientTls>,
) -> Result<NodeSeed, RenderError> {
    let c = input.cluster;
    let meta = json!({
        "instance-id": instance_id(node, payload_sha256),
        "local-hostname": node.name.as_str(),
    });

    let iface = c.network.interface.as_str();
    let mut ethernets = Map::new();
    ethernets.insert(
        iface.to_string(),
        json!({
            "match": {"macaddress": node.mac.to_string().to_ascii_lowercase()},
            "set-name": iface,
            "addresses": [format!("{}/{}", node.ip, input.prefix_len())],
            "routes": [{"to": "0.0.0.0/0", "via": c.network.gateway.to_string()}],
            "nameservers": {"addresses": c.network.dns.iter().map(|d| d.to_string()).collect::<Vec<_>>()},
        }),
    );
    if matches!(c.platform, Platform::Vagrant { .. }) && iface != "eth0" {
        // Vagrant's own NAT NIC (first, eth0): keep DHCP for `vagrant ssh`, but take
        // neither its default route nor its DNS over the cluster network's.
        ethernets.insert(
            "eth0".to_string(),
            json!({
                "match": {"name": "eth0"},
                "dhcp4": true,
                "dhcp4-overrides": {"use-routes": false, "use-dns": false},
            }),
        );
    }
    let network = json!({"version": 2, "ethernets": Value::Object(ethernets)});

    let identity = NodeIdentity {
        name: node.name.clone(),
        cluster_id: cluster_id.to_string(),
    };
    let identity_json =
        serde_json::to_string_pretty(&identity).map_err(|source| RenderError::Json {
            what: "the node identity",
            source,
        })? + "\n";
    let mut user = json!({
        "name": c.access.user,
        "shell": "/bin/bash",
        "sudo": "ALL=(ALL) NOPASSWD:ALL",
        "lock_passwd": true,
    });
    if !c.access.ssh_authorized_keys.is_empty()
        && let Some(m) = user.as_object_mut()
    {
        m.insert(
            "ssh_authorized_keys".into(),
            json!(c.access.ssh_authorized_keys),
        );
    }
    let mut write_files = vec![
        json!({
            "path": format!("/{NODE_IDENTITY}"),
            "owner": "root:root",
            "permissions": "0644",
            "content": identity_json,
        }),
        json!({
            "path": format!("/{CLUSTER_SECRET}"),
            "owner": "root:root",
            "permissions": "0600",
            "content": format!("{secret_hex}\n"),
        }),
    ];
    if let Some((path, content)) = super::k3s::datastore_dropin(input, node)? {
        // Carries the database password: this node's seed only, never the shared payload.
        write_files.push(json!({
            "path": format!("/{path}"),
            "owner": "root:root",
            "permissions": "0600",
            "content": content,
        }));
    }
    if node.role == Role::ControlPlane
        && let Some(tls) = etcd_tls
    {
        // The external etcd's client key is a secret: control-plane seeds only. The agent
        // copies the three to kubeadm's paths after each `kubeadm reset`, before init/join.
        for (path, mode, content) in [
            (nf::ETCD_EXTERNAL_SEED_CA, "0644", &tls.ca_pem),
            (nf::ETCD_EXTERNAL_SEED_CLIENT_CERT, "0644", &tls.cert_pem),
            (nf::ETCD_EXTERNAL_SEED_CLIENT_KEY, "0600", &tls.key_pem),
        ] {
            write_files.push(json!({
                "path": format!("/{path}"),
                "owner": "root:root",
                "permissions": mode,
                "content": content,
            }));
        }
    }
    let user_data = json!({
        "hostname": node.name.as_str(),
        "preserve_hostname": false,
        "users": [user],
        "write_files": write_files,
    });
    Ok(NodeSeed {
        meta_data: to_yaml("cloud-init meta-data", &meta)?,
        network_config: to_yaml("cloud-init network-config", &network)?,
        user_data: format!(
            "#cloud-config\n{}",
            to_yaml("cloud-init user-data", &user_data)?
        ),
    })
}
