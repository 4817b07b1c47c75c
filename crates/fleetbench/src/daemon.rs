//! `fleetbench stack serve`: the stack daemon that `stack up` starts in the background
//! ([`fleetbench_gateway::daemon`]), with fleetbench's webhook receiver beside the gateway. It stops
//! on SIGTERM or SIGINT.

use std::path::PathBuf;

use tokio::signal::unix::{SignalKind, signal};

use crate::CommandError;

pub fn serve(instance: PathBuf) -> Result<(), CommandError> {
    let state = fleetbench_gateway::daemon::load_state(instance)?;
    // The far end of the alert webhook (the stack's default ANOMALY_WEBHOOK_URL), read by the
    // webhook probe with the service-role or the secret key.
    let keys = std::iter::once(state.secrets.service_role_key.clone())
        .chain(state.secrets.opaque.as_ref().map(|k| k.secret.clone()))
        .collect();
    let receiver = fleetbench_probes::receiver::Receiver::new(keys);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let stop = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        let extra = fleetbench_probes::receiver::router(receiver);
        fleetbench_gateway::daemon::serve(state, extra, stop).await
    })?;
    Ok(())
}
