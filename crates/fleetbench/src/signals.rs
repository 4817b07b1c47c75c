//! Stopping on a signal, the same way in every command: a first SIGINT (Ctrl-C) or SIGTERM raises a
//! stop flag that the work in hand obeys; a second exits at once (exit 1).

use tokio::signal::unix::{SignalKind, signal};

/// A stop flag that SIGTERM or SIGINT (Ctrl-C) raises, saying `message` when it does; a second
/// signal exits at once (exit 1). Call within a runtime.
pub fn stop_on_signal(message: &'static str) -> anyhow::Result<tokio::sync::watch::Receiver<bool>> {
    stop_on_signals(message, || {})
}

/// [`stop_on_signal`], with `last_words` run on the second signal before the process exits.
pub fn stop_on_signals(
    message: &'static str,
    last_words: impl FnOnce() + Send + 'static,
) -> anyhow::Result<tokio::sync::watch::Receiver<bool>> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        eprintln!("{message} (a second signal exits at once)");
        let _ = stop_tx.send(true);
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        last_words();
        eprintln!("stopped at once by a second signal");
        std::process::exit(i32::from(crate::EXIT_FAILED));
    });
    Ok(stop_rx)
}
