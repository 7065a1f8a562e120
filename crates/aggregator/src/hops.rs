//! The bounds of each part of a recall (profile, lists, clusters, popular boards, two-tower,
//! similarity, traffic): one deadline over all of a part's attempts
//! (`aggregator.hop_timeout_ms`), retries of an unavailable answer within it
//! (`aggregator.hop_retries`, `aggregator.hop_retry_backoff_ms`), and the record of the parts an
//! answer was built without.

use crate::config::AggregatorConfig;
use coldstart_runtime::error::ErrorCode;
use coldstart_runtime::{ServiceError, ServiceResult};
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// How one part of a recall is called.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hop {
    /// The deadline of the part, its retries included.
    pub deadline: Duration,
    /// Further attempts after an unavailable answer (a refused connection, a member that went
    /// away); bad input and internal errors are never retried.
    pub retries: u32,
    /// The wait before the first retry; each further retry waits twice as long.
    pub backoff: Duration,
}

impl Hop {
    /// The hop of `cfg`.
    pub fn of(cfg: &AggregatorConfig) -> Self {
        Self {
            deadline: Duration::from_millis(cfg.hop_timeout_ms),
            retries: cfg.hop_retries,
            backoff: Duration::from_millis(cfg.hop_retry_backoff_ms),
        }
    }

    /// `call()`'s answer, tried again while it is unavailable, the retries last and the
    /// deadline allows a wait and another try; an unavailable error naming `part` once the
    /// deadline passes. One slow or missing dependency degrades an answer instead of delaying
    /// it, and one dropped connection does not degrade it at all.
    pub async fn call<T, F, Fut>(&self, part: &'static str, mut call: F) -> ServiceResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = ServiceResult<T>>,
    {
        let end = Instant::now() + self.deadline;
        let mut wait = self.backoff;
        let mut attempt = 0u32;
        loop {
            let e = match tokio::time::timeout_at(end, call()).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => e,
                Err(_) => return Err(self.late(part)),
            };
            let retry = e.code == ErrorCode::Unavailable
                && attempt < self.retries
                && Instant::now() + wait < end;
            if !retry {
                return Err(e);
            }
            attempt += 1;
            tracing::debug!(part, attempt, error = %e, "recall part unavailable: retrying");
            coldstart_runtime::http::count(&format!("recall_retry_{part}"), 1);
            tokio::time::sleep(wait).await;
            wait = wait.saturating_mul(2);
        }
    }

    fn late(&self, part: &str) -> ServiceError {
        ServiceError::unavailable(format!(
            "{part}: no answer within {} ms (aggregator.hop_timeout_ms)",
            self.deadline.as_millis()
        ))
    }
}

/// The parts an answer was built without, each logged and counted once.
#[derive(Default)]
pub(crate) struct Degraded(pub Vec<&'static str>);

impl Degraded {
    /// `r`'s value, or `fallback` with `part` noted as missing.
    pub fn or<T>(&mut self, part: &'static str, r: ServiceResult<T>, fallback: T) -> T {
        match r {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(part, error = %e, "recall degraded: answering without it");
                coldstart_runtime::http::count(&format!("recall_degraded_{part}"), 1);
                self.0.push(part);
                fallback
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn hop(retries: u32) -> Hop {
        Hop {
            deadline: Duration::from_secs(5),
            retries,
            backoff: Duration::from_millis(1),
        }
    }

    /// A call that fails `fails` times with `code`, then answers with its attempt number.
    async fn flaky(n: &AtomicU32, fails: u32, code: ErrorCode) -> ServiceResult<u32> {
        let i = n.fetch_add(1, Ordering::SeqCst);
        if i < fails {
            let mut e = ServiceError::unavailable(format!("attempt {i} refused"));
            e.code = code;
            return Err(e);
        }
        Ok(i)
    }

    #[tokio::test]
    async fn unavailable_answers_are_retried_as_configured() {
        let n = AtomicU32::new(0);
        let got = hop(2)
            .call("profile", || flaky(&n, 2, ErrorCode::Unavailable))
            .await;
        assert_eq!(got.unwrap(), 2, "the third attempt answers");

        let n = AtomicU32::new(0);
        let got = hop(1)
            .call("profile", || flaky(&n, 2, ErrorCode::Unavailable))
            .await;
        let e = got.unwrap_err();
        assert_eq!(e.code, ErrorCode::Unavailable);
        assert!(e.to_string().contains("attempt 1 refused"), "{e}");
        assert_eq!(n.load(Ordering::SeqCst), 2, "one try and one retry");

        let n = AtomicU32::new(0);
        let got = hop(0)
            .call("profile", || flaky(&n, 1, ErrorCode::Unavailable))
            .await;
        assert!(got.is_err());
        assert_eq!(n.load(Ordering::SeqCst), 1, "retries = 0: one try");
    }

    #[tokio::test]
    async fn bad_input_is_never_retried() {
        for code in [ErrorCode::InvalidArgument, ErrorCode::Internal] {
            let n = AtomicU32::new(0);
            let got = hop(3).call("lists", || flaky(&n, 1, code)).await;
            assert_eq!(got.unwrap_err().code, code);
            assert_eq!(n.load(Ordering::SeqCst), 1, "{code:?} is not retried");
        }
    }

    #[tokio::test]
    async fn the_deadline_covers_every_attempt() {
        // a dependency that hangs: the part fails at its deadline, naming it and the key
        let h = Hop {
            deadline: Duration::from_millis(50),
            retries: 3,
            backoff: Duration::from_millis(1),
        };
        let e = h
            .call("clusters", std::future::pending::<ServiceResult<()>>)
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::Unavailable);
        let msg = e.to_string();
        assert!(
            msg.contains("clusters") && msg.contains("hop_timeout_ms"),
            "{msg}"
        );

        // a backoff that would outlast the deadline is not waited: the error comes back as is
        let h = Hop {
            deadline: Duration::from_millis(50),
            retries: 3,
            backoff: Duration::from_secs(60),
        };
        let n = AtomicU32::new(0);
        let e = h
            .call("traffic", || flaky(&n, 9, ErrorCode::Unavailable))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("attempt 0 refused"), "{e}");
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }
}
