//! HAProxy on the load-balancer nodes: the config rendered from the plan's control planes
//! (the renderer itself is shared with the agent, which renders it again when the
//! membership grows: `model::lb_config::haproxy`).

use super::common::Input;
use model::lb_config::{self, Backend};
use model::spec::Role;

pub fn config(input: &Input<'_>) -> String {
    let backends: Vec<Backend> = input.nodes(Role::ControlPlane).map(Backend::of).collect();
    lb_config::haproxy(input.api_port(), &backends)
}
