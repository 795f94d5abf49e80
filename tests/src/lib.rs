//! Test support for muster, and the named stand-ins for kubeadm, the kubelet and k3s
//! (see `tests/README.md`). The stand-ins are NOT kubeadm or k3s: they accept the same
//! command lines and config files and do real etcd, TLS and quorum work underneath (k3s on
//! an external SQL datastore: a real MariaDB, `muster::lab::mariadb`).

pub mod harness;
pub mod standin;
