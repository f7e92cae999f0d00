//! Graceful shutdown on SIGTERM / SIGINT.
//!
//! Every service owns one root [`CancellationToken`]; tasks take child tokens
//! (`root.child_token()`), so cancelling the root stops the whole tree while a subsystem can
//! still be stopped alone. The first SIGTERM or SIGINT cancels the root and lets the
//! service drain; a second one, or SIGQUIT at any time, exits at once (the "immediate stop"
//! the harness uses to simulate a crash without kill -9).

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Exit code used for an immediate stop (SIGQUIT or a repeated signal).
pub const IMMEDIATE_EXIT_CODE: i32 = 111;

/// Spawns the task that turns signals into cancellation of `root`.
///
/// Must be called inside a tokio runtime. Fails only if signal handlers cannot be installed.
pub fn spawn_signal_handler(
    root: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut quit = signal(SignalKind::quit())?;
    Ok(tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                _ = quit.recv() => {
                    tracing::info!("got SIGQUIT, exiting immediately");
                    std::process::exit(IMMEDIATE_EXIT_CODE);
                }
            };
            if root.is_cancelled() {
                tracing::info!("got {name} again during shutdown, exiting immediately");
                std::process::exit(IMMEDIATE_EXIT_CODE);
            }
            tracing::info!("got {name}, shutting down");
            root.cancel();
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sigterm_cancels_the_tree() {
        let root = CancellationToken::new();
        let child = root.child_token();
        let _handler = spawn_signal_handler(root.clone()).unwrap();
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), child.cancelled())
            .await
            .expect("child token cancelled by SIGTERM");
        assert!(root.is_cancelled());
    }
}
