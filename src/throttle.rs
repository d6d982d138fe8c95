//! Throttling for log lines a client can trigger (limit hits, protocol errors, refusals): one
//! line a second per kind, carrying the count of those left out since, so that a flood of
//! bad clients cannot fill a small host's disk. Time is passed in.

/// Log lines of `N` kinds, at most one a second each.
#[derive(Debug, Clone)]
pub struct Throttle<const N: usize> {
    /// When each kind was last logged (milliseconds), if ever.
    logged_at: [Option<u64>; N],
    /// Events of each kind left out since its last line.
    skipped: [u64; N],
}

impl<const N: usize> Default for Throttle<N> {
    fn default() -> Self {
        Self {
            logged_at: [None; N],
            skipped: [0; N],
        }
    }
}

/// Milliseconds between two lines of one kind.
const PERIOD_MS: u64 = 1000;

impl<const N: usize> Throttle<N> {
    /// An event of `kind` at `now`: `Some(skipped)` when it may be logged, with the number of
    /// events of that kind left out since the last line; `None` when it is left out. Kinds
    /// out of range are always logged.
    pub fn allow(&mut self, kind: usize, now: u64) -> Option<u64> {
        let (Some(at), Some(skipped)) = (self.logged_at.get_mut(kind), self.skipped.get_mut(kind))
        else {
            return Some(0);
        };
        match *at {
            Some(last) if now < last + PERIOD_MS => {
                *skipped += 1;
                None
            }
            _ => {
                *at = Some(now);
                Some(std::mem::take(skipped))
            }
        }
    }
}

/// `" (N more since the last such line)"`, or nothing when none were left out.
pub fn skipped_note(skipped: u64) -> String {
    if skipped == 0 {
        String::new()
    } else {
        format!(" ({skipped} more since the last such line)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_per_kind_with_the_count_of_the_rest() {
        let mut t = Throttle::<2>::default();
        assert_eq!(t.allow(0, 0), Some(0));
        assert_eq!((0..500).filter_map(|i| t.allow(0, i)).count(), 0);
        assert_eq!(t.allow(1, 10), Some(0), "kinds are apart");
        assert_eq!(t.allow(0, 999), None);
        assert_eq!(t.allow(0, 1000), Some(501));
        assert_eq!(t.allow(0, 5000), Some(0));
        assert_eq!(t.allow(7, 5000), Some(0), "an unknown kind is logged");
    }
}
