//! A hashed timer wheel: heartbeat ticks, handshake and close deadlines for every connection,
//! without one OS timer per peer.
//!
//! Time is a plain number of milliseconds passed in by the caller; the wheel never reads a
//! clock. Entries are never cancelled: the caller checks, when one fires, whether it still
//! applies (the connection may be gone, its slot reused, or its phase changed), which keeps
//! insertion O(1) and needs no handle.

/// Number of slots; a power of two. With 1 ms slots one turn of the wheel is about 1 s, so a
/// 5 s heartbeat entry is looked at five times before it fires.
const DEFAULT_SLOTS: usize = 1024;

#[derive(Debug)]
struct Entry<T> {
    deadline: u64,
    value: T,
}

/// A hashed timer wheel of `T` values with 1 ms resolution. See the module documentation.
#[derive(Debug)]
pub struct TimerWheel<T> {
    slots: Box<[Vec<Entry<T>>]>,
    /// Every deadline below this has been expired.
    next_tick: u64,
    len: usize,
    /// Earliest deadline, when known; `None` means "recompute".
    earliest: Option<u64>,
}

impl<T> Default for TimerWheel<T> {
    fn default() -> Self {
        Self::with_slots(DEFAULT_SLOTS)
    }
}

impl<T> TimerWheel<T> {
    /// A wheel with `slots` slots (rounded up to a power of two).
    pub fn with_slots(slots: usize) -> Self {
        let n = slots.max(1).next_power_of_two();
        Self {
            slots: (0..n).map(|_| Vec::new()).collect(),
            next_tick: 0,
            len: 0,
            earliest: None,
        }
    }

    /// Number of pending entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Schedules `value` at `deadline` (ms). A deadline already past fires at the next expire.
    pub fn insert(&mut self, deadline: u64, value: T) {
        let deadline = deadline.max(self.next_tick);
        let mask = self.slots.len() as u64 - 1;
        self.slots[(deadline & mask) as usize].push(Entry { deadline, value });
        self.len += 1;
        if self.earliest.is_some_and(|e| deadline < e) || self.len == 1 {
            self.earliest = Some(deadline);
        }
    }

    /// The earliest pending deadline, for the poll timeout.
    pub fn next_deadline(&mut self) -> Option<u64> {
        if self.len == 0 {
            return None;
        }
        if self.earliest.is_none() {
            self.earliest = self.scan_earliest();
        }
        self.earliest
    }

    /// Moves every entry whose deadline is at or before `now` into `out`, in deadline order
    /// within a slot walk (entries of one millisecond come in insertion order).
    pub fn expire(&mut self, now: u64, out: &mut Vec<T>) {
        if now < self.next_tick {
            return;
        }
        if self.len == 0 {
            self.next_tick = now + 1;
            return;
        }
        let n = self.slots.len() as u64;
        let mask = n - 1;
        // Past one full turn every slot is visited once; visiting more would find nothing new.
        let last = now.min(self.next_tick + n - 1);
        let before = out.len();
        for tick in self.next_tick..=last {
            let slot = &mut self.slots[(tick & mask) as usize];
            if !slot.is_empty() {
                // One pass, order kept (entries of one millisecond fire as inserted).
                out.extend(slot.extract_if(.., |e| e.deadline <= now).map(|e| e.value));
            }
        }
        let fired = out.len() - before;
        self.len -= fired;
        self.next_tick = now + 1;
        if fired > 0 {
            self.earliest = None;
        }
    }

    fn scan_earliest(&self) -> Option<u64> {
        let n = self.slots.len() as u64;
        let mask = n - 1;
        // The first slot (from next_tick on) holding an entry due within this turn holds the
        // earliest entry; entries further out are only found by the full scan below.
        for tick in self.next_tick..self.next_tick + n {
            let due = self.slots[(tick & mask) as usize]
                .iter()
                .map(|e| e.deadline)
                .filter(|&d| d < self.next_tick + n)
                .min();
            if due.is_some() {
                return due;
            }
        }
        self.slots.iter().flatten().map(|e| e.deadline).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The naive reference: a list, scanned in full.
    #[derive(Default)]
    struct Naive(Vec<(u64, u32)>);

    impl Naive {
        fn expire(&mut self, now: u64) -> Vec<u32> {
            let mut due: Vec<(u64, u32)> = self.0.iter().copied().filter(|e| e.0 <= now).collect();
            self.0.retain(|e| e.0 > now);
            due.sort();
            due.into_iter().map(|e| e.1).collect()
        }
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self, bound: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % bound
        }
    }

    #[test]
    fn matches_the_naive_model() {
        for (slots, seed) in [(8, 1), (64, 2), (1024, 3), (1, 4)] {
            let mut wheel = TimerWheel::with_slots(slots);
            let mut naive = Naive::default();
            let mut rng = Rng(0x1234_5678 + seed);
            let mut now = 0;
            // Deadlines at or before an expired `now` fire at the next expire: clamp like the wheel.
            let mut floor = 0;
            for value in 0..5_000u32 {
                match rng.next(3) {
                    0 | 1 => {
                        let deadline = now + rng.next(3_000);
                        wheel.insert(deadline, value);
                        naive.0.push((deadline.max(floor), value));
                    }
                    _ => {
                        now += rng.next(700);
                        let expected_next = naive.0.iter().map(|e| e.0).min();
                        assert_eq!(wheel.next_deadline(), expected_next, "slots {slots}");
                        let mut got = Vec::new();
                        wheel.expire(now, &mut got);
                        floor = now + 1;
                        let mut want = naive.expire(now);
                        got.sort_unstable();
                        want.sort_unstable();
                        assert_eq!(got, want, "slots {slots}, now {now}");
                        assert_eq!(wheel.len(), naive.0.len());
                    }
                }
            }
        }
    }

    #[test]
    fn fires_at_the_deadline_not_before() {
        let mut wheel = TimerWheel::with_slots(16);
        wheel.insert(100, "a");
        let mut out = Vec::new();
        wheel.expire(99, &mut out);
        assert!(out.is_empty());
        assert_eq!(wheel.next_deadline(), Some(100));
        wheel.expire(100, &mut out);
        assert_eq!(out, ["a"]);
        assert_eq!(wheel.next_deadline(), None);
        assert!(wheel.is_empty());
    }

    #[test]
    fn far_deadlines_survive_many_turns() {
        let mut wheel = TimerWheel::with_slots(4);
        wheel.insert(1_000, 1);
        wheel.insert(3, 2);
        let mut out = Vec::new();
        for now in (0..1_000).step_by(3) {
            wheel.expire(now, &mut out);
        }
        assert_eq!(out, [2]);
        assert_eq!(wheel.next_deadline(), Some(1_000));
        wheel.expire(5_000, &mut out);
        assert_eq!(out, [2, 1]);
    }

    #[test]
    fn past_deadline_fires_on_next_expire() {
        let mut wheel = TimerWheel::with_slots(8);
        let mut out = Vec::new();
        wheel.expire(500, &mut out);
        wheel.insert(10, 'x');
        assert_eq!(wheel.next_deadline(), Some(501));
        wheel.expire(501, &mut out);
        assert_eq!(out, ['x']);
    }
}
