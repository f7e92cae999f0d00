//! Exponential backoff with jitter, for retrying remote calls and reconnects.
//!
//! Delays grow by `factor` from `initial` up to `cap`; each actual delay is drawn uniformly
//! from the upper half of the nominal one ("equal jitter"), so many clients that failed
//! together do not retry together, yet none retries much sooner than planned. Every wait
//! honours a cancellation token: shutdown never waits for a backoff to expire.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The shape of a backoff schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Nominal delay before the first retry.
    pub initial: Duration,
    /// No nominal delay exceeds this.
    pub cap: Duration,
    /// Growth per attempt; 2.0 doubles.
    pub factor: f64,
}

impl Default for Backoff {
    /// 100 ms, doubling, capped at 10 s: right for object storage and peer reconnects.
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            cap: Duration::from_secs(10),
            factor: 2.0,
        }
    }
}

impl Backoff {
    /// The nominal (jitter-free) delay before retry number `attempt` (0-based).
    pub fn nominal_delay(&self, attempt: u32) -> Duration {
        let exp = self.factor.max(1.0).powi(attempt.min(64) as i32);
        let secs = self.initial.as_secs_f64() * exp;
        if !secs.is_finite() || secs >= self.cap.as_secs_f64() {
            self.cap
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// The delay to actually wait before retry `attempt`: uniform in `[nominal/2, nominal]`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let nominal = self.nominal_delay(attempt);
        let half = nominal / 2;
        half + half.mul_f64(rand::random::<f64>())
    }
}

/// The wait was cut short because the token was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cancelled")]
pub struct Cancelled;

/// Sleeps for `delay` unless `cancel` fires first.
pub async fn sleep(delay: Duration, cancel: &CancellationToken) -> Result<(), Cancelled> {
    tokio::select! {
        _ = tokio::time::sleep(delay) => Ok(()),
        _ = cancel.cancelled() => Err(Cancelled),
    }
}

/// Why [`retry`] stopped without success.
#[derive(Debug)]
pub enum RetryError<E> {
    /// The error was not worth retrying.
    Permanent(E),
    /// The last error after `attempts` tries.
    Exhausted {
        /// How many times the operation ran.
        attempts: u32,
        /// The final error.
        last: E,
    },
    /// Shutdown (the token) stopped the retries.
    Cancelled,
}

impl<E: fmt::Display> fmt::Display for RetryError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetryError::Permanent(e) => write!(f, "{e}"),
            RetryError::Exhausted { attempts, last } => {
                write!(f, "gave up after {attempts} attempts: {last}")
            }
            RetryError::Cancelled => f.write_str("cancelled"),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for RetryError<E> {}

impl<E> RetryError<E> {
    /// The underlying error, if there is one.
    pub fn into_inner(self) -> Option<E> {
        match self {
            RetryError::Permanent(e) | RetryError::Exhausted { last: e, .. } => Some(e),
            RetryError::Cancelled => None,
        }
    }
}

/// How [`retry`] retries.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// The delays between attempts.
    pub backoff: Backoff,
    /// Total attempts at most (including the first); `None` retries until cancelled.
    pub max_attempts: Option<u32>,
    /// From this many failures on, each failure logs at WARN rather than INFO.
    pub warn_after: u32,
}

impl RetryPolicy {
    /// What to do after failure number `failures` (1-based) of `what` with `err`: at the
    /// attempt bound, give up ([`RetryError::Exhausted`]); otherwise log it (WARN from
    /// `warn_after` on) and wait the backoff delay ([`RetryError::Cancelled`] if `cancel`
    /// fires first). [`retry`] is built on it; so is anything that retries in a shape other
    /// than one repeated call (a listing resumed page by page).
    pub async fn wait_after_failure<E: fmt::Display>(
        &self,
        what: &str,
        failures: u32,
        err: E,
        cancel: &CancellationToken,
    ) -> Result<(), RetryError<E>> {
        if self.max_attempts.is_some_and(|max| failures >= max) {
            return Err(RetryError::Exhausted {
                attempts: failures,
                last: err,
            });
        }
        if failures >= self.warn_after {
            tracing::warn!("{what} failed (attempt {failures}), will retry: {err}");
        } else {
            tracing::info!("{what} failed (attempt {failures}), will retry: {err}");
        }
        sleep(self.backoff.delay(failures.saturating_sub(1)), cancel)
            .await
            .map_err(|_| RetryError::Cancelled)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            backoff: Backoff::default(),
            max_attempts: Some(10),
            warn_after: 3,
        }
    }
}

/// Runs `op` until it succeeds, fails permanently (`is_permanent`), runs out of attempts, or
/// `cancel` fires. `what` names the operation in logs.
pub async fn retry<T, E, Fut>(
    what: &str,
    policy: RetryPolicy,
    cancel: &CancellationToken,
    is_permanent: impl Fn(&E) -> bool,
    mut op: impl FnMut() -> Fut,
) -> Result<T, RetryError<E>>
where
    E: fmt::Display,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt: u32 = 0;
    loop {
        if cancel.is_cancelled() {
            return Err(RetryError::Cancelled);
        }
        let result = tokio::select! {
            r = op() => r,
            _ = cancel.cancelled() => return Err(RetryError::Cancelled),
        };
        let err = match result {
            Ok(v) => {
                if attempt > 0 {
                    tracing::info!("{what} succeeded after {} retries", attempt);
                }
                return Ok(v);
            }
            Err(e) => e,
        };
        attempt += 1;
        if is_permanent(&err) {
            return Err(RetryError::Permanent(err));
        }
        policy
            .wait_after_failure(what, attempt, err, cancel)
            .await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn fast() -> Backoff {
        Backoff {
            initial: Duration::from_millis(1),
            cap: Duration::from_millis(4),
            factor: 2.0,
        }
    }

    #[test]
    fn delays_grow_and_cap() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            cap: Duration::from_secs(1),
            factor: 2.0,
        };
        assert_eq!(b.nominal_delay(0), Duration::from_millis(100));
        assert_eq!(b.nominal_delay(1), Duration::from_millis(200));
        assert_eq!(b.nominal_delay(3), Duration::from_millis(800));
        assert_eq!(b.nominal_delay(4), Duration::from_secs(1));
        assert_eq!(b.nominal_delay(u32::MAX), Duration::from_secs(1));
        for attempt in 0..20 {
            let d = b.delay(attempt);
            let n = b.nominal_delay(attempt);
            assert!(d >= n / 2 && d <= n, "attempt {attempt}: {d:?} vs {n:?}");
        }
    }

    #[tokio::test]
    async fn retries_until_success() {
        let calls = AtomicU32::new(0);
        let policy = RetryPolicy {
            backoff: fast(),
            max_attempts: Some(5),
            warn_after: 1,
        };
        let r: Result<u32, RetryError<String>> = retry(
            "op",
            policy,
            &CancellationToken::new(),
            |_| false,
            || async {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                if n < 3 {
                    Err(format!("fail {n}"))
                } else {
                    Ok(n)
                }
            },
        )
        .await;
        assert_eq!(r.unwrap(), 3);
    }

    #[tokio::test]
    async fn gives_up_and_reports_last_error() {
        let policy = RetryPolicy {
            backoff: fast(),
            max_attempts: Some(3),
            warn_after: 1,
        };
        let r: Result<(), _> = retry(
            "op",
            policy,
            &CancellationToken::new(),
            |_| false,
            || async { Err::<(), _>("boom") },
        )
        .await;
        let e = r.unwrap_err();
        assert_eq!(e.to_string(), "gave up after 3 attempts: boom");
        assert!(matches!(e, RetryError::Exhausted { attempts: 3, .. }));
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried() {
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = retry(
            "op",
            RetryPolicy::default(),
            &CancellationToken::new(),
            |e: &&str| *e == "permanent",
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err("permanent")
            },
        )
        .await;
        assert!(matches!(r, Err(RetryError::Permanent("permanent"))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn cancellation_stops_waiting() {
        let cancel = CancellationToken::new();
        let policy = RetryPolicy {
            backoff: Backoff {
                initial: Duration::from_secs(3600),
                cap: Duration::from_secs(3600),
                factor: 2.0,
            },
            max_attempts: None,
            warn_after: 100,
        };
        let canceller = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            canceller.cancel();
        });
        let r: Result<(), _> = retry(
            "op",
            policy,
            &cancel,
            |_| false,
            || async { Err("transient") },
        )
        .await;
        assert!(matches!(r, Err(RetryError::Cancelled)));
        assert_eq!(
            sleep(Duration::from_secs(3600), &cancel).await,
            Err(Cancelled)
        );
    }
}
