//! nginx as a TCP (stream) load balancer for the API on the load-balancer nodes (seed 002),
//! rendered from the plan's control planes (the renderer is shared with the agent, which
//! renders it again when the membership grows: `model::lb_config::nginx`).

use super::common::Input;
use model::lb_config::{self, Backend};
use model::spec::Role;

/// Where Debian's libnginx-mod-stream puts the module.
pub const STREAM_MODULE: &str = lb_config::NGINX_STREAM_MODULE;

pub fn config(input: &Input<'_>) -> String {
    let backends: Vec<Backend> = input.nodes(Role::ControlPlane).map(Backend::of).collect();
    lb_config::nginx(input.api_port(), &backends)
}
