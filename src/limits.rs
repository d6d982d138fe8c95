//! Pure pieces of the limits the server enforces: the per-connection token bucket and the
//! process's open-file limit.

use std::io;

/// A token bucket of messages: `rate` per second, a burst of `rate`. Time is passed in.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    /// Thousandths of a message, so that one millisecond refills exactly `rate` of them.
    millitokens: u64,
    last_ms: u64,
}

impl TokenBucket {
    /// A full bucket at time `now_ms`.
    pub fn full(rate: u32, now_ms: u64) -> Self {
        Self {
            millitokens: u64::from(rate) * 1000,
            last_ms: now_ms,
        }
    }

    /// Takes one message's token at `now_ms`; false when the bucket is empty. A rate of 0
    /// means no limit.
    pub fn try_take(&mut self, rate: u32, now_ms: u64) -> bool {
        if rate == 0 {
            return true;
        }
        let capacity = u64::from(rate) * 1000;
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.last_ms = self.last_ms.max(now_ms);
        self.millitokens = self
            .millitokens
            .saturating_add(elapsed.saturating_mul(u64::from(rate)))
            .min(capacity);
        if self.millitokens >= 1000 {
            self.millitokens -= 1000;
            true
        } else {
            false
        }
    }
}

/// The open-file limits (soft and hard).
fn nofile() -> io::Result<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; no other memory is touched.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lim)
}

/// The soft limit of open files now.
pub fn fd_limit() -> io::Result<u64> {
    #[allow(clippy::unnecessary_cast)] // rlim_t is 32 bits on some targets (armv7)
    Ok(nofile()?.rlim_cur as u64)
}

/// Raises the soft limit of open files to the hard limit and returns the new soft limit.
pub fn raise_fd_limit() -> io::Result<u64> {
    let lim = nofile()?;
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own. A failure leaves the limit as it was,
        // which is what is returned then.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) };
    }
    fd_limit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let mut b = TokenBucket::full(10, 0);
        assert_eq!((0..20).filter(|_| b.try_take(10, 0)).count(), 10);
        assert!(!b.try_take(10, 50), "half a token after 50 ms");
        assert!(b.try_take(10, 100), "one token after 100 ms");
        assert!(!b.try_take(10, 100));
        // Refill never passes the burst.
        assert_eq!((0..50).filter(|_| b.try_take(10, 60_000)).count(), 10);
    }

    #[test]
    fn rate_zero_is_unlimited() {
        let mut b = TokenBucket::full(0, 0);
        assert!((0..10_000).all(|_| b.try_take(0, 0)));
    }

    #[test]
    fn time_going_back_does_not_refill() {
        let mut b = TokenBucket::full(1, 1000);
        assert!(b.try_take(1, 1000));
        assert!(!b.try_take(1, 500));
        assert!(!b.try_take(1, 1500));
        assert!(b.try_take(1, 2000));
    }

    #[test]
    fn fd_limit_is_readable_and_not_lowered() {
        let before = raise_fd_limit().unwrap();
        assert!(before > 0);
        assert!(raise_fd_limit().unwrap() >= before);
        assert_eq!(fd_limit().unwrap(), raise_fd_limit().unwrap());
    }
}
