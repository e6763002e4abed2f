//! Brute-force protection: how many failed sign-ins a key (an account, a client address) gets
//! before each further attempt must wait, with the wait doubling up to a cap. The decision is a
//! pure function of the stored state; the database applies it with compare-and-set.

use std::time::Duration;

use chrono::NaiveDateTime;

/// The throttling rules for one kind of key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Attempts allowed back to back before delays start.
    pub free_attempts: i64,
    /// The first delay; each further attempt doubles it.
    pub base_delay: Duration,
    /// The longest delay.
    pub max_delay: Duration,
    /// Counters older than this start again from zero.
    pub window: Duration,
}

/// What is stored per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleState {
    /// Attempts counted in the current window (each counted before its password is checked).
    pub attempts: i64,
    /// The last counted attempt.
    pub last_attempt_at: NaiveDateTime,
    /// No attempt is considered before this.
    pub blocked_until: Option<NaiveDateTime>,
}

/// Whether an attempt may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Count it (store `next`) and check the password.
    Allow {
        /// The state to store.
        next: ThrottleState,
    },
    /// Refuse it without checking anything.
    Block {
        /// How long until an attempt will be considered.
        retry_after: Duration,
    },
}

impl ThrottlePolicy {
    /// The decision for an attempt at `now` given the stored `state`.
    pub fn decide(&self, state: Option<&ThrottleState>, now: NaiveDateTime) -> Decision {
        if let Some(until) = state.and_then(|s| s.blocked_until)
            && until > now
        {
            return Decision::Block {
                retry_after: (until - now).to_std().unwrap_or(Duration::ZERO),
            };
        }
        let window_start = chrono::Duration::from_std(self.window)
            .ok()
            .and_then(|window| now.checked_sub_signed(window))
            .unwrap_or(NaiveDateTime::MIN);
        let previous = state
            .filter(|s| s.last_attempt_at > window_start)
            .map_or(0, |s| s.attempts);
        let attempts = previous + 1;
        let blocked_until = (attempts >= self.free_attempts).then(|| {
            let doublings = u32::try_from(attempts - self.free_attempts)
                .unwrap_or(u32::MAX)
                .min(30);
            let delay = self
                .base_delay
                .saturating_mul(1 << doublings)
                .min(self.max_delay);
            super::after(now, delay)
        });
        Decision::Allow {
            next: ThrottleState {
                attempts,
                last_attempt_at: now,
                blocked_until,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ThrottlePolicy {
        ThrottlePolicy {
            free_attempts: 3,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            window: Duration::from_secs(900),
        }
    }

    #[test]
    fn free_attempts_then_doubling_delays() {
        let now = crate::domain::now();
        let mut state = None;
        let mut delays = Vec::new();
        let mut at = now;
        for _ in 0..6 {
            match policy().decide(state.as_ref(), at) {
                Decision::Allow { next } => {
                    delays.push(next.blocked_until.map(|u| (u - at).num_seconds()));
                    at = next.blocked_until.unwrap_or(at);
                    state = Some(next);
                }
                Decision::Block { .. } => panic!("blocked while waiting as told"),
            }
        }
        assert_eq!(delays, [None, None, Some(1), Some(2), Some(4), Some(8)]);
        // Trying before the wait is over is refused with the time left.
        let early = policy().decide(state.as_ref(), at - chrono::Duration::seconds(3));
        assert_eq!(
            early,
            Decision::Block {
                retry_after: Duration::from_secs(3)
            }
        );
    }

    #[test]
    fn an_old_counter_starts_over() {
        let now = crate::domain::now();
        let old = ThrottleState {
            attempts: 10,
            last_attempt_at: now - chrono::Duration::hours(2),
            blocked_until: None,
        };
        match policy().decide(Some(&old), now) {
            Decision::Allow { next } => assert_eq!(next.attempts, 1),
            other => panic!("{other:?}"),
        }
    }
}
