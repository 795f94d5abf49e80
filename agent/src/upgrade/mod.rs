//! Rolling upgrades (issue 15): every agent judges the release the operator published,
//! fetches and verifies its payload, waits for its turn (control planes first in a stable
//! order, workers after every control plane runs the new version, etcd quorum to spare),
//! takes the cluster's upgrade lock and runs its node's steps as the upstream upgrade
//! guide does, one at a time. An explicit state machine: [`state`] (what is persisted),
//! [`order`] (whose turn it is, pure), [`quorum_guard`] (etcd's say, on a fresh view, pure), [`steps`] (the steps per node, pure),
//! [`transition`] (the pure guarded transitions), [`view`] (the roll from the rendezvous's
//! progress records and etcd view, pure) and [`driver`] (the thin loop that carries
//! out actions through an `Effects` trait and persists each phase), with
//! [`rendezvous_side`] (release, payload, lock, progress, resume at the rendezvous),
//! [`node_side`] (kubeadm, k3s's binary swap and unit restart, cordon, drain, kubelet,
//! readiness) and [`live`] (the real effects and the round the daemon loop runs once its
//! node is done); [`self_update`] moves the agent to the release's own binary afterwards.

pub mod driver;
pub mod live;
pub mod node_side;
pub mod order;
pub mod quorum_guard;
pub mod rendezvous_side;
pub mod self_update;
pub mod state;
pub mod steps;
pub mod store;
pub mod transition;
pub mod view;
