//! The proxy's graceful drain: on shutdown every watched connection finishes the requests it
//! has and closes, and [`Drain::shutdown`] returns once all have.
//!
//! hyper-util's `GracefulShutdown` does the same for the connection types it knows, but not
//! for an HTTP/1 connection that allows upgrades, which `CONNECT` needs.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::watch;

/// The sending side: one per listener.
#[derive(Debug)]
pub struct Drain {
    tx: watch::Sender<()>,
}

/// One connection's view of the drain; the drain waits for every one to be dropped.
#[derive(Debug)]
pub struct Watcher {
    rx: watch::Receiver<()>,
}

impl Default for Drain {
    fn default() -> Self {
        let (tx, _) = watch::channel(());
        Drain { tx }
    }
}

impl Drain {
    pub fn watcher(&self) -> Watcher {
        Watcher {
            rx: self.tx.subscribe(),
        }
    }

    /// Asks every watched connection to finish and waits until all have.
    pub async fn shutdown(self) {
        let _ = self.tx.send(());
        self.tx.closed().await;
    }
}

impl Watcher {
    /// Runs `conn` to its end; when the drain starts, `graceful` is called on it once.
    pub async fn watch<C: Future>(
        mut self,
        conn: C,
        graceful: impl FnOnce(Pin<&mut C>),
    ) -> C::Output {
        let mut conn = std::pin::pin!(conn);
        tokio::select! {
            out = conn.as_mut() => return out,
            _ = self.rx.changed() => graceful(conn.as_mut()),
        }
        conn.await
    }
}
