//! Rolling upgrades (issue 15): every agent judges the release the operator published,
//! fetches and verifies its payload, waits for its turn (control planes first in a stable
//! order, workers after every control plane runs the new version, etcd quorum to spare),
//! takes the cluster's upgrade lock and runs its node's steps as the upstream upgrade
//! guide does, one at a time. An explicit state machine: [`state`] (what is persisted),
//! [`order`] (whose turn it is, pure), [`steps`] (the steps per node, pure),
//! [`transition`] (the pure guarded transitions), [`view`] (the roll from the rendezvous's
//! progress records and etcd view, pure) and [`driver`] (the thin loop that carries
//! out actions through an `Effects` trait and persists each phase), with
//! [`rendezvous_side`] (release, payload, lock, progress, resume at the rendezvous). The
//! kubeadm/k3s/API-server effects and the agent's wiring of the loop are not written yet.

pub mod driver;
pub mod order;
pub mod rendezvous_side;
pub mod state;
pub mod steps;
pub mod store;
pub mod transition;
pub mod view;
