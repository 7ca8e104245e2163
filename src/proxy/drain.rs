//! The proxy's graceful drain: on shutdown every watched connection finishes the requests it
//! has and closes, and [`Drain::shutdown`] returns once all have.
//!
//! hyper-util's `GracefulShutdown` does the same for the connection types it knows, but not
//! for an HTTP/1 connection that allows upgrades, which `CONNECT` needs.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

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
    /// Runs `conn` to its end; when the drain starts, or `idle` completes first (the
    /// connection has idled past its limit), `graceful` is called on it once. After an idle
    /// close the connection has the grace `idle` gave to end, and is dropped after it (`None`):
    /// a client that never answers a GOAWAY's PING cannot keep it.
    pub async fn watch<C: Future>(
        mut self,
        conn: C,
        idle: impl Future<Output = Duration>,
        graceful: impl FnOnce(Pin<&mut C>),
    ) -> Option<C::Output> {
        let mut conn = std::pin::pin!(conn);
        let grace = tokio::select! {
            out = conn.as_mut() => return Some(out),
            _ = self.rx.changed() => None,
            grace = idle => Some(grace),
        };
        graceful(conn.as_mut());
        match grace {
            None => Some(conn.await),
            Some(grace) => tokio::time::timeout(grace, conn).await.ok(),
        }
    }
}
