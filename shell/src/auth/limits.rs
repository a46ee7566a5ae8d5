//! Per-principal rate limits (keyed GCRA, the `governor` crate): calls per second (unary calls
//! and stream opens) and bulk events per second (`SubmitEvents`). Only authenticated
//! principals are limited: without authentication there is no principal to key on. And per
//! client address: failed authentications a second, past which the address is blocked for a
//! while (its calls refused before any credential is checked).

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
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
    /// Failed authentications a second per client address (`--rate-auth-failures`), and the
    /// burst (0: ten seconds' worth).
    pub auth_failures_per_second: u32,
    pub auth_failures_burst: u32,
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
            auth_failures_per_second: 10,
            auth_failures_burst: 0,
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

/// Failed authentications per client address: past the budget the address is blocked (its
/// calls refused before any credential is checked) until the budget has room again.
struct FailureLimit {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    per_second: u32,
    burst: u32,
    blocked: Mutex<HashMap<IpAddr, Instant>>,
    /// Entries in `blocked` (read without the lock on every call).
    n_blocked: AtomicUsize,
}

/// The limiters of a server.
pub struct RateLimits {
    calls: Option<Limit>,
    events: Option<Limit>,
    failures: Option<FailureLimit>,
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
            failures: NonZeroU32::new(cfg.auth_failures_per_second).map(|rate| {
                let burst = NonZeroU32::new(cfg.auth_failures_burst)
                    .unwrap_or_else(|| rate.saturating_mul(NonZeroU32::MIN.saturating_add(9)));
                FailureLimit {
                    limiter: DefaultKeyedRateLimiter::dashmap(
                        Quota::per_second(rate).allow_burst(burst),
                    ),
                    per_second: rate.get(),
                    burst: burst.get(),
                    blocked: Mutex::new(HashMap::new()),
                    n_blocked: AtomicUsize::new(0),
                }
            }),
        }
    }

    /// RESOURCE_EXHAUSTED for a call from `ip` while that address is blocked for failing to
    /// authenticate too often (checked before any credential, so a blocked address costs no
    /// signature check).
    pub fn check_address(&self, ip: IpAddr) -> Result<(), Throttled> {
        let Some(f) = &self.failures else {
            return Ok(());
        };
        if f.n_blocked.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        let until = f
            .blocked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&ip)
            .copied();
        match until {
            Some(t) if t > Instant::now() => {
                let wait = t - Instant::now();
                Err(Throttled {
                    message: format!(
                        "too many failed authentications from {ip}: at most {} a second (burst                          {}) per address (--rate-auth-failures); retry in {} ms",
                        f.per_second,
                        f.burst,
                        wait.as_millis().max(1)
                    ),
                    retry_after: wait,
                })
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed authentication from `ip`; past the budget the address is blocked.
    pub fn note_failure(&self, ip: IpAddr) {
        let Some(f) = &self.failures else { return };
        if let Err(not_until) = f.limiter.check_key(&ip) {
            let wait = not_until.wait_time_from(f.limiter.clock().now());
            let mut b = f.blocked.lock().unwrap_or_else(|p| p.into_inner());
            b.insert(ip, Instant::now() + wait);
            f.n_blocked.store(b.len(), Ordering::Relaxed);
        }
    }

    /// One line for the start-up log.
    pub fn describe(&self) -> String {
        let one = |l: &Option<Limit>, what: &str| match l {
            Some(l) => format!("{} {what}/s (burst {})", l.per_second, l.burst),
            None => format!("{what} unlimited"),
        };
        let failures = match &self.failures {
            Some(f) => format!(
                "; failed authentications per address: {}/s (burst {})",
                f.per_second, f.burst
            ),
            None => String::new(),
        };
        format!(
            "per principal: {}, {}{failures}",
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
        if let Some(f) = &self.failures {
            f.limiter.retain_recent();
            f.limiter.shrink_to_fit();
            let now = Instant::now();
            let mut b = f.blocked.lock().unwrap_or_else(|p| p.into_inner());
            b.retain(|_, until| *until > now);
            f.n_blocked.store(b.len(), Ordering::Relaxed);
        }
    }
}
