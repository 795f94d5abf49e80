//! Rolling upgrades (issue 15): every agent judges the release the operator published,
//! fetches and verifies its payload, waits for its turn (control planes first in a stable
//! order, workers after every control plane runs the new version, etcd quorum to spare),
//! takes the cluster's upgrade lock and runs its node's steps as the upstream upgrade
//! guide does, one at a time. An explicit state machine: [`state`] (what is persisted),
//! [`order`] (whose turn it is, pure), [`steps`] (the steps per node, pure) and
//! [`transition`] (the pure guarded transitions). The driver that runs the steps against
//! kubeadm, the API server and the rendezvous is not written yet.

pub mod order;
pub mod state;
pub mod steps;
pub mod transition;
