//! Shutdown signals: SIGTERM (what Kubernetes and `kill` send) and SIGINT (Ctrl-C).

use std::io;

/// The two shutdown signals, installed up front so that a signal arriving while the server is
/// still starting is not lost (nor handled by the default action, which would kill the process
/// without a leadership transfer).
pub struct ShutdownSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Installs the handlers; must be called inside a tokio runtime.
    pub fn install() -> io::Result<ShutdownSignals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(ShutdownSignals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(ShutdownSignals {})
        }
    }

    /// Resolves on the next SIGTERM or SIGINT and names it.
    pub async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}

/// A future that resolves on the first SIGTERM or SIGINT, for a server's graceful shutdown.
/// A second signal during that shutdown ends the process at once with status 130.
pub fn shutdown_on_signal(mut signals: ShutdownSignals) -> impl Future<Output = ()> + Send {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let first = signals.recv().await;
        tracing::info!(
            signal = first,
            "shutting down (send it again to exit at once)"
        );
        let _ = tx.send(());
        let second = signals.recv().await;
        tracing::warn!(
            signal = second,
            "second signal: exiting without a clean shutdown"
        );
        std::process::exit(130);
    });
    async move {
        // An error only means the signal task is gone, i.e. the runtime is shutting down.
        let _ = rx.await;
    }
}
