//! What the stack daemon's database workers (the pg_cron and pg_net stand-ins) share: a connection
//! that turns `NOTIFY` on one channel into wake-ups, and a supervisor that reconnects with back-off
//! when the database goes away.

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_postgres::{AsyncMessage, Client, NoTls};

use crate::{Result, StackError};

/// A connection listening on one channel.
pub struct Listening {
    pub client: Client,
    /// One `()` per notification.
    pub wakeups: mpsc::UnboundedReceiver<()>,
    driver: tokio::task::JoinHandle<std::result::Result<(), tokio_postgres::Error>>,
}

impl Listening {
    pub async fn connect(db_url: &str, channel: &str) -> Result<Listening> {
        let (client, mut conn) = tokio_postgres::connect(db_url, NoTls).await?;
        let (tx, wakeups) = mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(_))) => {
                        let _ = tx.send(());
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e),
                    None => return Ok(()),
                }
            }
        });
        client.batch_execute(&format!("listen {channel}")).await?;
        Ok(Listening {
            client,
            wakeups,
            driver,
        })
    }

    /// An error once the connection has closed.
    pub fn check(&self, who: &str) -> Result<()> {
        if self.driver.is_finished() {
            return Err(StackError::Db(format!("the {who}'s connection closed")));
        }
        Ok(())
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Runs `work` until it returns `Ok` or `shutdown` is set, reconnecting after errors with back-off
/// from 200 ms to 10 s.
pub async fn supervise<F: Future<Output = Result<()>>>(
    who: &str,
    mut shutdown: watch::Receiver<bool>,
    mut work: impl FnMut(watch::Receiver<bool>) -> F,
) {
    let mut backoff = Duration::from_millis(200);
    while !*shutdown.borrow() {
        match work(shutdown.clone()).await {
            Ok(()) => return,
            Err(e) => tracing::warn!("{who}: {e}; reconnecting in {backoff:?}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}
