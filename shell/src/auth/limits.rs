//! Per-principal rate limits (keyed GCRA, the `governor` crate): calls per second (unary calls
//! and stream opens) and bulk events per second (`SubmitEvents`). Only authenticated
//! principals are limited: without authentication there is no principal to key on.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};

/// How long a bulk batch may wait for its principal's event budget before it is refused.
pub const MAX_EVENT_WAIT: Duration = Duration::from_secs(1);

/// `--rate-*` settings: `per_second` 0 turns a limit off; `burst` 0 means one second's worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateConfig {
    pub calls_per_second: u32,
    pub calls_burst: u32,
    pub events_per_second: u32,
    pub events_burst: u32,
}

impl Default for RateConfig {
    /// The server's defaults: 2400 calls/s per principal (Temporal's per-namespace default),
    /// bulk events unlimited.
    fn default() -> Self {
        RateConfig {
            calls_per_second: 2400,
            calls_burst: 0,
            events_per_second: 0,
            events_burst: 0,
        }
    }
}

struct Limit {
    limiter: DefaultKeyedRateLimiter<String>,
    per_second: u32,
    burst: u32,
}

impl Limit {
    fn new(per_second: u32, burst: u32) -> Option<Limit> {
        let rate = NonZeroU32::new(per_second)?;
        let burst = NonZeroU32::new(burst).unwrap_or(rate);
        Some(Limit {
            limiter: DefaultKeyedRateLimiter::dashmap(Quota::per_second(rate).allow_burst(burst)),
            per_second,
            burst: burst.get(),
        })
    }
}

/// The limiters of a server.
pub struct RateLimits {
    calls: Option<Limit>,
    events: Option<Limit>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field(
                "calls",
                &self.calls.as_ref().map(|l| (l.per_second, l.burst)),
            )
            .field(
                "events",
                &self.events.as_ref().map(|l| (l.per_second, l.burst)),
            )
            .finish()
    }
}

/// A refusal for lack of budget: the message and when to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttled {
    pub message: String,
    pub retry_after: Duration,
}

impl RateLimits {
    pub fn new(cfg: RateConfig) -> RateLimits {
        RateLimits {
            calls: Limit::new(cfg.calls_per_second, cfg.calls_burst),
            events: Limit::new(cfg.events_per_second, cfg.events_burst),
        }
    }

    /// One line for the start-up log.
    pub fn describe(&self) -> String {
        let one = |l: &Option<Limit>, what: &str| match l {
            Some(l) => format!("{} {what}/s (burst {})", l.per_second, l.burst),
            None => format!("{what} unlimited"),
        };
        format!(
            "per principal: {}, {}",
            one(&self.calls, "calls"),
            one(&self.events, "events")
        )
    }

    /// Takes one call from `key`'s budget.
    pub fn admit_call(&self, key: &str) -> Result<(), Throttled> {
        let Some(l) = &self.calls else { return Ok(()) };
        match l.limiter.check_key(&key.to_string()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(l.limiter.clock().now());
                Err(Throttled {
                    message: format!(
                        "rate limit: at most {} calls a second (burst {}) per principal; retry \
                         in {} ms",
                        l.per_second,
                        l.burst,
                        wait.as_millis().max(1)
                    ),
                    retry_after: wait,
                })
            }
        }
    }

    /// Takes `n` events from `key`'s budget, waiting up to [`MAX_EVENT_WAIT`] for it. A batch
    /// larger than the burst can never pass and is refused at once.
    pub async fn admit_events(&self, key: &str, n: usize) -> Result<(), Throttled> {
        let Some(l) = &self.events else { return Ok(()) };
        let Some(n32) = NonZeroU32::new(u32::try_from(n).unwrap_or(u32::MAX)) else {
            return Ok(());
        };
        let key = key.to_string();
        let deadline = Instant::now() + MAX_EVENT_WAIT;
        loop {
            match l.limiter.check_key_n(&key, n32) {
                Ok(Ok(())) => return Ok(()),
                Err(_) => {
                    return Err(Throttled {
                        message: format!(
                            "rate limit: a batch of {n} events exceeds the {} events a principal \
                             may send at once (--rate-events-burst): split it",
                            l.burst
                        ),
                        retry_after: Duration::ZERO,
                    })
                }
                Ok(Err(not_until)) => {
                    let wait = not_until.wait_time_from(l.limiter.clock().now());
                    if Instant::now() + wait > deadline {
                        return Err(Throttled {
                            message: format!(
                                "rate limit: at most {} bulk events a second (burst {}) per \
                                 principal; retry in {} ms",
                                l.per_second,
                                l.burst,
                                wait.as_millis().max(1)
                            ),
                            retry_after: wait,
                        });
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// True when bulk events are limited.
    pub fn limits_events(&self) -> bool {
        self.events.is_some()
    }

    /// Forgets principals whose budget is full again (bounds the limiters' memory).
    pub fn housekeep(&self) {
        for l in [&self.calls, &self.events].into_iter().flatten() {
            l.limiter.retain_recent();
            l.limiter.shrink_to_fit();
        }
    }
}
