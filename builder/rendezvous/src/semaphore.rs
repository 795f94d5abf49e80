//! Counting semaphores with leases: pure operations on a [`StoredSemaphore`]. Fencing
//! tokens come from `last_token`, which only grows, so a token identifies one grant
//! forever.

use crate::store::StoredSemaphore;
use protocol::wire::Holder;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    /// `fresh` is false when the holder already had a slot (idempotent re-acquire).
    Granted {
        token: u64,
        expires_at_ms: u64,
        fresh: bool,
    },
    Busy(Vec<Holder>),
}

impl StoredSemaphore {
    pub fn new(slots: u32) -> StoredSemaphore {
        StoredSemaphore {
            slots,
            last_token: 0,
            holders: Vec::new(),
        }
    }

    /// Grants a slot to `holder` if one is free; a holder that already has a slot keeps
    /// its token and gets its lease extended. Call [`Self::expire`] first.
    pub fn acquire(&mut self, holder: &str, ttl_ms: u64, now_ms: u64) -> Acquired {
        let expires_at_ms = now_ms.saturating_add(ttl_ms);
        if let Some(h) = self.holders.iter_mut().find(|h| h.holder == holder) {
            h.expires_at_ms = h.expires_at_ms.max(expires_at_ms);
            return Acquired::Granted {
                token: h.token,
                expires_at_ms: h.expires_at_ms,
                fresh: false,
            };
        }
        if self.holders.len() >= self.slots as usize {
            return Acquired::Busy(self.holders.clone());
        }
        self.last_token += 1;
        self.holders.push(Holder {
            holder: holder.to_string(),
            token: self.last_token,
            expires_at_ms,
        });
        Acquired::Granted {
            token: self.last_token,
            expires_at_ms,
            fresh: true,
        }
    }

    /// Sets the slot count to `slots` (a rebuilt spec changed it); the count before, or
    /// `None` when it was already `slots`. Growing admits more holders at once from the
    /// next acquire; shrinking takes no slot away: holders beyond the new count keep
    /// theirs until they release or expire, and [`Self::acquire`] grants only while fewer
    /// than the new count hold one.
    pub fn resize(&mut self, slots: u32) -> Option<u32> {
        (self.slots != slots).then(|| std::mem::replace(&mut self.slots, slots))
    }

    /// Extends the lease of `(holder, token)`; `None` if that slot is no longer held.
    pub fn renew(&mut self, holder: &str, token: u64, ttl_ms: u64, now_ms: u64) -> Option<u64> {
        let h = self
            .holders
            .iter_mut()
            .find(|h| h.holder == holder && h.token == token)?;
        h.expires_at_ms = h.expires_at_ms.max(now_ms.saturating_add(ttl_ms));
        Some(h.expires_at_ms)
    }

    /// Frees the slot of `(holder, token)`; false if it was not held.
    pub fn release(&mut self, holder: &str, token: u64) -> bool {
        let before = self.holders.len();
        self.holders
            .retain(|h| !(h.holder == holder && h.token == token));
        self.holders.len() != before
    }

    /// Removes and returns the holders whose lease ran out at `now_ms`.
    pub fn expire(&mut self, now_ms: u64) -> Vec<Holder> {
        let (gone, kept) = std::mem::take(&mut self.holders)
            .into_iter()
            .partition(|h| h.expires_at_ms <= now_ms);
        self.holders = kept;
        gone
    }

    pub fn is_held_by_token(&self, token: u64) -> bool {
        self.holders.iter().any(|h| h.token == token)
    }

    pub fn next_expiry(&self) -> Option<u64> {
        self.holders.iter().map(|h| h.expires_at_ms).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(a: Acquired) -> u64 {
        match a {
            Acquired::Granted { token, .. } => token,
            Acquired::Busy(h) => panic!("busy: {h:?}"),
        }
    }

    #[test]
    fn one_slot_is_exclusive_and_tokens_only_grow() {
        let mut s = StoredSemaphore::new(1);
        let t1 = token(s.acquire("a", 1000, 0));
        assert!(matches!(s.acquire("b", 1000, 10), Acquired::Busy(h) if h[0].holder == "a"));
        // Idempotent: same token, lease extended.
        assert_eq!(
            s.acquire("a", 1000, 500),
            Acquired::Granted {
                token: t1,
                expires_at_ms: 1500,
                fresh: false
            }
        );
        assert!(!s.release("a", t1 + 1));
        assert!(s.release("a", t1));
        let t2 = token(s.acquire("b", 1000, 600));
        assert!(t2 > t1);
        assert!(s.expire(1599).is_empty());
        assert_eq!(s.expire(1600).len(), 1);
        assert!(!s.is_held_by_token(t2));
        let t3 = token(s.acquire("a", 1000, 1700));
        assert!(t3 > t2);
        assert_eq!(s.renew("b", t2, 1000, 1700), None);
        assert_eq!(s.renew("a", t3, 1000, 2000), Some(3000));
    }

    #[test]
    fn n_slots_admit_n_holders() {
        let mut s = StoredSemaphore::new(3);
        for h in ["a", "b", "c"] {
            token(s.acquire(h, 1000, 0));
        }
        assert!(matches!(s.acquire("d", 1000, 0), Acquired::Busy(h) if h.len() == 3));
        assert_eq!(s.next_expiry(), Some(1000));
    }

    #[test]
    fn growing_admits_more_holders_at_once() {
        let mut s = StoredSemaphore::new(2);
        token(s.acquire("a", 1000, 0));
        token(s.acquire("b", 1000, 0));
        assert!(matches!(s.acquire("c", 1000, 0), Acquired::Busy(_)));
        assert_eq!(s.resize(2), None, "same count: no resize");
        assert_eq!(s.resize(3), Some(2));
        let t = token(s.acquire("c", 1000, 0));
        assert_eq!(t, 3, "tokens keep growing across a resize");
        assert!(matches!(s.acquire("d", 1000, 0), Acquired::Busy(h) if h.len() == 3));
    }

    #[test]
    fn shrinking_lets_holders_finish_and_grants_only_below_the_new_count() {
        let mut s = StoredSemaphore::new(3);
        let ta = token(s.acquire("a", 1000, 0));
        let tb = token(s.acquire("b", 1000, 0));
        let tc = token(s.acquire("c", 1000, 0));
        assert_eq!(s.resize(1), Some(3));
        // Nobody loses a slot: renewals and idempotent re-acquires still work.
        assert_eq!(s.renew("a", ta, 1000, 100), Some(1100));
        assert!(matches!(
            s.acquire("b", 1000, 100),
            Acquired::Granted { token, fresh: false, .. } if token == tb
        ));
        // A newcomer waits until fewer than 1 hold a slot, not merely fewer than 3.
        assert!(matches!(s.acquire("d", 1000, 100), Acquired::Busy(h) if h.len() == 3));
        assert!(s.release("a", ta));
        assert!(matches!(s.acquire("d", 1000, 200), Acquired::Busy(h) if h.len() == 2));
        assert!(s.release("b", tb));
        assert!(matches!(s.acquire("d", 1000, 300), Acquired::Busy(h) if h.len() == 1));
        assert!(s.release("c", tc));
        let td = token(s.acquire("d", 1000, 400));
        assert!(td > tc);
        assert!(matches!(s.acquire("e", 1000, 400), Acquired::Busy(h) if h.len() == 1));
    }
}
