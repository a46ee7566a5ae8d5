//! What makes the server re-read its files (TLS certificates, auth keys): SIGHUP, and a poll
//! every interval when one is set. One implementation for every file watcher.

use std::time::Duration;

/// Why a watcher should look at its files again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// SIGHUP: reload, changed or not.
    Hangup,
    /// The poll interval passed: reload what changed.
    Poll,
}

/// The SIGHUP stream and the poll timer of one watcher.
#[derive(Debug)]
pub struct Triggers {
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
    tick: Option<tokio::time::Interval>,
}

impl Triggers {
    /// Installs the SIGHUP handler now (inside a runtime): from here on a SIGHUP is queued for
    /// [`Triggers::next`] instead of meeting the default action, which ends the process.
    pub fn new(interval: Option<Duration>) -> Triggers {
        Triggers {
            #[cfg(unix)]
            hup: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(),
            tick: interval.map(|d| {
                let mut i = tokio::time::interval(d.max(Duration::from_millis(10)));
                i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                i
            }),
        }
    }

    /// The next trigger (pending forever when there is neither).
    pub async fn next(&mut self) -> Trigger {
        #[cfg(unix)]
        let hup = async {
            match self.hup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hup = std::future::pending::<()>();
        let tick = async {
            match self.tick.as_mut() {
                Some(t) => {
                    t.tick().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = hup => Trigger::Hangup,
            _ = tick => Trigger::Poll,
        }
    }
}
