//! Passwords: the OWASP ASVS 5 policy (length, no composition rules, a real strength estimator)
//! and Argon2id hashing with OWASP's parameters on a bounded blocking pool, so hashing never runs
//! on the async workers and a login flood queues boundedly instead of eating memory.

use std::sync::{Arc, OnceLock};

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher as _, PasswordVerifier as _, Version,
    password_hash::SaltString,
};
use tokio::sync::Semaphore;

/// Fewest characters accepted (ASVS 5 V6.2.1).
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Most characters accepted: at least 64 must be allowed (V6.2.9); the cap bounds the work of
/// the strength estimator and the hash.
pub const MAX_PASSWORD_CHARS: usize = 128;
/// Least zxcvbn score accepted (3: about 10^10 guesses).
const MIN_SCORE: u8 = 3;

/// Why a new password is refused, for a field violation; `None` if it is acceptable.
/// `context` holds the user's own words (email, display name) that must not make up the password.
pub fn weakness(password: &str, context: &[&str]) -> Option<String> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Some(format!("must be at least {MIN_PASSWORD_CHARS} characters"));
    }
    if chars > MAX_PASSWORD_CHARS {
        return Some(format!("must be at most {MAX_PASSWORD_CHARS} characters"));
    }
    let estimate = zxcvbn::zxcvbn(password, context);
    if u8::from(estimate.score()) >= MIN_SCORE {
        return None;
    }
    let mut reason = "is too easy to guess".to_owned();
    if let Some(feedback) = estimate.feedback() {
        if let Some(warning) = feedback.warning() {
            reason.push_str(&format!(": {warning}"));
        }
        let suggestions: Vec<String> = feedback
            .suggestions()
            .iter()
            .map(|s| s.to_string())
            .collect();
        if !suggestions.is_empty() {
            reason.push_str(&format!(" ({})", suggestions.join(" ")));
        }
    }
    Some(reason)
}

/// The pool and its queue are full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the password hashing pool is full")]
pub struct PoolBusy;

/// A bounded pool for CPU-heavy work: at most `workers` jobs run at once on tokio's blocking
/// threads, at most `queue` more wait; beyond that callers are refused at once.
#[derive(Debug, Clone)]
pub struct BlockingPool {
    running: Arc<Semaphore>,
    admitted: Arc<Semaphore>,
    workers: usize,
    queue: usize,
}

impl BlockingPool {
    /// A pool of `workers` (at least 1) with room for `queue` waiting jobs.
    pub fn new(workers: usize, queue: usize) -> Self {
        let workers = workers.max(1);
        Self {
            running: Arc::new(Semaphore::new(workers)),
            admitted: Arc::new(Semaphore::new(workers + queue)),
            workers,
            queue,
        }
    }

    /// Jobs running now.
    pub fn running(&self) -> usize {
        self.workers
            .saturating_sub(self.running.available_permits())
    }

    /// Jobs admitted and waiting for a worker.
    pub fn queued(&self) -> usize {
        (self.workers + self.queue)
            .saturating_sub(self.admitted.available_permits())
            .saturating_sub(self.running())
    }

    /// Runs `job` on the pool, or fails with [`PoolBusy`] when it and its queue are full.
    pub async fn run<T, F>(&self, job: F) -> Result<T, PoolBusy>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let admitted = self
            .admitted
            .clone()
            .try_acquire_owned()
            .map_err(|_| PoolBusy)?;
        let running = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| PoolBusy)?;
        let joined = tokio::task::spawn_blocking(move || {
            let _permits = (admitted, running);
            job()
        })
        .await;
        match joined {
            Ok(value) => Ok(value),
            Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
            // Cancelled only when the runtime shuts down.
            Err(_) => Err(PoolBusy),
        }
    }
}

/// The result of checking a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// The password matches.
    pub matches: bool,
    /// It matches but was hashed with other parameters: store a new hash.
    pub needs_rehash: bool,
}

/// Argon2id hashing and verification on a [`BlockingPool`].
#[derive(Debug, Clone)]
pub struct PasswordHasher {
    pool: BlockingPool,
    params: Params,
    /// A hash of a random password, checked when the account does not exist so that an unknown
    /// email costs the same time as a wrong password. Made on first use, on the pool.
    decoy: Arc<OnceLock<String>>,
}

impl PasswordHasher {
    /// OWASP's Argon2id parameters: m=19 MiB, t=2, p=1.
    pub fn owasp_params() -> Params {
        Params::new(19 * 1024, 2, 1, None).unwrap_or_default()
    }

    /// A hasher with `params` on `pool`.
    pub fn new(pool: BlockingPool, params: Params) -> Self {
        Self {
            pool,
            params,
            decoy: Arc::new(OnceLock::new()),
        }
    }

    /// The PHC string of `password` with the current parameters.
    pub async fn hash(&self, password: String) -> Result<String, PoolBusy> {
        let params = self.params.clone();
        self.pool
            .run(move || hash_with(&params, &password))
            .await?
            .map_err(|_| PoolBusy)
    }

    /// Checks `password` against `phc`, or against the decoy when there is no hash (unknown
    /// account, social-only account), which never matches.
    pub async fn check(&self, password: String, phc: Option<String>) -> Result<Checked, PoolBusy> {
        let params = self.params.clone();
        let decoy = self.decoy.clone();
        self.pool
            .run(move || {
                let real = phc.is_some();
                let phc = phc.unwrap_or_else(|| {
                    decoy
                        .get_or_init(|| {
                            hash_with(&params, &super::secrets::random_token()).unwrap_or_default()
                        })
                        .clone()
                });
                let Ok(parsed) = PasswordHash::new(&phc) else {
                    return Checked {
                        matches: false,
                        needs_rehash: false,
                    };
                };
                let matches = Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
                    && real;
                let current = parsed.algorithm.as_str() == "argon2id"
                    && Params::try_from(&parsed).is_ok_and(|p| {
                        p.m_cost() == params.m_cost()
                            && p.t_cost() == params.t_cost()
                            && p.p_cost() == params.p_cost()
                    });
                Checked {
                    matches,
                    needs_rehash: matches && !current,
                }
            })
            .await
    }
}

fn hash_with(params: &Params, password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_is_length_and_strength_not_composition() {
        assert!(weakness("short", &[]).is_some_and(|r| r.contains("at least 12")));
        assert!(weakness(&"x".repeat(129), &[]).is_some_and(|r| r.contains("at most 128")));
        assert!(weakness("password1234", &[]).is_some_and(|r| r.contains("too easy")));
        assert!(weakness("alice@example.com!", &["alice@example.com"]).is_some());
        // No composition rules: a long lowercase passphrase is fine, and 64 characters are allowed.
        assert_eq!(weakness("correct horse battery staple", &[]), None);
        assert_eq!(
            weakness(&"orange tulip quiet river ".repeat(3)[..64], &[]),
            None
        );
    }

    #[tokio::test]
    async fn hashes_are_phc_argon2id_and_old_parameters_ask_for_a_rehash() {
        let pool = BlockingPool::new(1, 4);
        let weak =
            PasswordHasher::new(pool.clone(), Params::new(1024, 1, 1, None).expect("params"));
        let strong = PasswordHasher::new(pool, Params::new(2048, 2, 1, None).expect("params"));
        let phc = weak
            .hash("correct horse battery staple".into())
            .await
            .expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{phc}");
        let same = weak
            .check("correct horse battery staple".into(), Some(phc.clone()))
            .await;
        assert_eq!(
            same,
            Ok(Checked {
                matches: true,
                needs_rehash: false
            })
        );
        let upgraded = strong
            .check("correct horse battery staple".into(), Some(phc.clone()))
            .await;
        assert_eq!(
            upgraded,
            Ok(Checked {
                matches: true,
                needs_rehash: true
            })
        );
        let wrong = strong
            .check("wrong horse battery staple".into(), Some(phc))
            .await;
        assert_eq!(
            wrong,
            Ok(Checked {
                matches: false,
                needs_rehash: false
            })
        );
        let unknown = strong.check("anything at all here".into(), None).await;
        assert_eq!(unknown.map(|c| c.matches), Ok(false));
    }

    #[tokio::test]
    async fn a_full_pool_refuses_instead_of_queueing_forever() {
        let pool = BlockingPool::new(1, 1);
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let busy = pool.clone();
        let first = tokio::spawn(async move { busy.run(move || wait.recv().ok()).await });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let queued_pool = pool.clone();
        let queued = tokio::spawn(async move { queued_pool.run(|| 2).await });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(pool.run(|| 3).await, Err(PoolBusy));
        release.send(()).expect("release");
        assert!(first.await.expect("join").is_ok());
        assert_eq!(queued.await.expect("join"), Ok(2));
    }
}
