//! `voxrelay sim`: the simulator alone.

use std::net::SocketAddr;

/// Serves the simulator until interrupted.
pub async fn run(
    _listen: SocketAddr,
    _scenario: String,
    _api_key: Option<String>,
) -> anyhow::Result<()> {
    anyhow::bail!("the simulator is not part of this build yet")
}
