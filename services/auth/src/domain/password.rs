//! Passwords: the OWASP ASVS 5 policy (length, no composition rules, a real strength estimator)
//! and Argon2id hashing with one of OWASP's configurations ([`OwaspParams`]) on a [`HashPool`]
//! of dedicated background threads, so hashing never runs on the async workers, a login flood
//! queues boundedly, and memory stays at one Argon2 buffer per worker.

use std::{
    panic::AssertUnwindSafe,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use argon2::{
    Algorithm, Argon2, Block, Params, PasswordHash, Version,
    password_hash::{self, Output, ParamsString, Salt, SaltString},
};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use thread_priority::{
    NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
    set_thread_priority_and_policy, thread_native_id,
};
use tokio::sync::{Semaphore, oneshot};

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

/// A job of the pool: it borrows its worker's Argon2 memory.
type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// A worker frees its Argon2 memory after this long without a job.
const KEEP_MEMORY: Duration = Duration::from_secs(10);

/// The least a worker's Argon2 buffer reserves, in 1 KiB blocks: 33 MiB, above the largest
/// threshold glibc's malloc raises its mmap threshold to (32 MiB). So the buffer is always a
/// mapping of its own, and freeing it gives the memory back to the system. A 19 MiB buffer, freed,
/// raised the threshold to its size, and the next one came from a malloc arena that kept it after
/// it was freed in turn: auth's peak grew to 140 MiB over a bench whose login rounds had pauses.
/// Pages of the reservation that are never written take no memory.
const RESERVED_BLOCKS: usize = 33 * 1024;

/// Dedicated threads for password hashing, fed by a bounded queue.
///
/// - Each worker keeps one Argon2 memory buffer and reuses it, so memory is `workers` × m_cost
///   at most, however many logins arrive (tokio's blocking threads each left a freed 19 MiB
///   block in their own malloc arena: 480 MiB after a login flood). An idle worker frees it.
/// - Workers run at the lowest CPU priority (Linux `SCHED_IDLE`): hashing takes only the CPU
///   nothing else wants, so a login flood does not slow the other calls of the process (or of
///   the machine). Under a load that saturates the CPU, logins wait in the queue, and beyond
///   it are refused with [`PoolBusy`] at once.
#[derive(Debug, Clone)]
pub struct HashPool {
    jobs: Sender<Job>,
    admitted: Arc<Semaphore>,
    running: Arc<AtomicUsize>,
    workers: usize,
    queue: usize,
}

impl HashPool {
    /// A pool of `workers` threads (at least 1) with room for `queue` waiting jobs. The threads
    /// end when the last clone of the pool is dropped.
    pub fn new(workers: usize, queue: usize) -> std::io::Result<Self> {
        let workers = workers.max(1);
        let (jobs, receiver) = crossbeam_channel::unbounded::<Job>();
        for n in 0..workers {
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name(format!("password-hash-{n}"))
                .spawn(move || work(&receiver))?;
        }
        Ok(Self {
            jobs,
            admitted: Arc::new(Semaphore::new(workers + queue)),
            running: Arc::new(AtomicUsize::new(0)),
            workers,
            queue,
        })
    }

    /// Jobs running now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    /// Jobs admitted and waiting for a worker.
    pub fn queued(&self) -> usize {
        (self.workers + self.queue)
            .saturating_sub(self.admitted.available_permits())
            .saturating_sub(self.running())
    }

    /// Runs `job` on a worker with its Argon2 memory, or fails with [`PoolBusy`] when the pool
    /// and its queue are full.
    pub async fn run<T, F>(&self, job: F) -> Result<T, PoolBusy>
    where
        F: FnOnce(&mut Vec<Block>) -> T + Send + 'static,
        T: Send + 'static,
    {
        let admitted = self
            .admitted
            .clone()
            .try_acquire_owned()
            .map_err(|_| PoolBusy)?;
        let (answer, answered) = oneshot::channel();
        let running = self.running.clone();
        self.jobs
            .send(Box::new(move |memory| {
                running.fetch_add(1, Ordering::Relaxed);
                let result = std::panic::catch_unwind(AssertUnwindSafe(|| job(memory)));
                running.fetch_sub(1, Ordering::Relaxed);
                drop(admitted);
                // The caller may have given up (a cancelled call); the work is simply dropped.
                let _ = answer.send(result);
            }))
            .map_err(|_| PoolBusy)?;
        match answered.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            // The workers are gone: the service is shutting down.
            Err(_) => Err(PoolBusy),
        }
    }
}

/// A worker: takes jobs until the pool is dropped, at background priority, with one reused
/// Argon2 buffer that it frees after [`KEEP_MEMORY`] without work.
fn work(receiver: &Receiver<Job>) {
    if let Err(err) = set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
    ) {
        tracing::warn!(error = %err, "password hashing runs at normal CPU priority");
    }
    let mut memory: Vec<Block> = Vec::new();
    loop {
        match receiver.recv_timeout(KEEP_MEMORY) {
            Ok(job) => job(&mut memory),
            Err(RecvTimeoutError::Timeout) => memory = Vec::new(),
            Err(RecvTimeoutError::Disconnected) => return,
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

/// Argon2id hashing and verification on a [`HashPool`].
#[derive(Debug, Clone)]
pub struct PasswordHasher {
    pool: HashPool,
    params: Params,
    /// A hash of a random password, checked when the account does not exist so that an unknown
    /// email costs the same time as a wrong password. Made on first use, on the pool.
    decoy: Arc<OnceLock<String>>,
}

/// The Argon2id configurations of OWASP's Password Storage Cheat Sheet, which it rates as equal
/// in defence: each trades memory for passes (all with one lane). Hashing speed is not equal:
/// on the bench's machine (2 cores, 32 MiB of L3 shared with other guests), two workers hashed
/// 6 to 30% (median 21%) more passwords per second with 7 MiB and 5 passes than with 19 MiB and
/// 2, likely as two 7 MiB buffers fit in that cache and two 19 MiB ones do not (the work itself
/// is only 8% less), and each worker holds 12 MiB less.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OwaspParams {
    /// m=46 MiB, t=1, p=1.
    #[value(name = "m46-t1")]
    M46T1,
    /// m=19 MiB, t=2, p=1.
    #[value(name = "m19-t2")]
    M19T2,
    /// m=12 MiB, t=3, p=1.
    #[value(name = "m12-t3")]
    M12T3,
    /// m=9 MiB, t=4, p=1.
    #[value(name = "m9-t4")]
    M9T4,
    /// m=7 MiB, t=5, p=1.
    #[default]
    #[value(name = "m7-t5")]
    M7T5,
}

impl OwaspParams {
    /// Memory in MiB and passes.
    pub const fn cost(self) -> (u32, u32) {
        match self {
            Self::M46T1 => (46, 1),
            Self::M19T2 => (19, 2),
            Self::M12T3 => (12, 3),
            Self::M9T4 => (9, 4),
            Self::M7T5 => (7, 5),
        }
    }

    /// The argon2 crate's parameters.
    pub fn params(self) -> Params {
        let (mib, passes) = self.cost();
        Params::new(mib * 1024, passes, 1, None).unwrap_or_default()
    }
}

impl std::fmt::Display for OwaspParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (mib, passes) = self.cost();
        write!(f, "m={mib} MiB, t={passes}, p=1")
    }
}

impl PasswordHasher {
    /// A hasher with `params` on `pool`.
    pub fn new(pool: HashPool, params: Params) -> Self {
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
            .run(move |memory| hash_with(memory, &params, &password))
            .await?
            .map_err(|_| PoolBusy)
    }

    /// Checks `password` against `phc`, or against the decoy when there is no hash (unknown
    /// account, social-only account), which never matches.
    pub async fn check(&self, password: String, phc: Option<String>) -> Result<Checked, PoolBusy> {
        let params = self.params.clone();
        let decoy = self.decoy.clone();
        self.pool
            .run(move |memory| {
                let real = phc.is_some();
                let phc = phc.unwrap_or_else(|| {
                    decoy
                        .get_or_init(|| {
                            hash_with(memory, &params, &super::secrets::random_token())
                                .unwrap_or_default()
                        })
                        .clone()
                });
                let Ok(parsed) = PasswordHash::new(&phc) else {
                    return Checked {
                        matches: false,
                        needs_rehash: false,
                    };
                };
                let matches = verify(memory, &parsed, password.as_bytes()) && real;
                // A hash made with more memory than ours leaves a bigger buffer: give it back
                // (the next job reserves a new one).
                if memory.len() > params.block_count() {
                    *memory = Vec::new();
                }
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

/// Argon2 of `password` and `salt` into an output of `len` bytes, in `memory` (grown as needed).
fn compute(
    memory: &mut Vec<Block>,
    argon2: &Argon2<'_>,
    block_count: usize,
    password: &[u8],
    salt: Salt<'_>,
    len: usize,
) -> password_hash::Result<Output> {
    let mut salt_bytes = [0u8; Salt::MAX_LENGTH];
    let salt = salt.decode_b64(&mut salt_bytes)?;
    if memory.len() < block_count {
        memory.reserve_exact(block_count.max(RESERVED_BLOCKS) - memory.len());
        memory.resize(block_count, Block::default());
    }
    Output::init_with(len, |out| {
        Ok(argon2.hash_password_into_with_memory(password, salt, out, &mut memory[..])?)
    })
}

/// The PHC string of `password` with `params` and a new random salt.
fn hash_with(
    memory: &mut Vec<Block>,
    params: &Params,
    password: &str,
) -> password_hash::Result<String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let output = compute(
        memory,
        &argon2,
        params.block_count(),
        password.as_bytes(),
        salt.as_salt(),
        len,
    )?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params)?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(hash.to_string())
}

/// Whether `password` matches `hash` (any Argon2 variant, version and parameters), compared in
/// constant time.
fn verify(memory: &mut Vec<Block>, hash: &PasswordHash<'_>, password: &[u8]) -> bool {
    let mut checked = || -> password_hash::Result<bool> {
        let algorithm = Algorithm::try_from(hash.algorithm)?;
        let version = hash
            .version
            .map(Version::try_from)
            .transpose()?
            .unwrap_or_default();
        let params = Params::try_from(hash)?;
        let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
            return Ok(false);
        };
        let block_count = params.block_count();
        let argon2 = Argon2::new(algorithm, version, params);
        let computed = compute(memory, &argon2, block_count, password, salt, expected.len())?;
        // `Output`'s equality is constant-time.
        Ok(computed == expected)
    };
    checked().unwrap_or(false)
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
        let pool = HashPool::new(1, 4).expect("pool");
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
    async fn hashes_made_elsewhere_verify_and_ours_verify_elsewhere() {
        use argon2::{PasswordHasher as _, PasswordVerifier as _};
        let pool = HashPool::new(1, 4).expect("pool");
        let params = Params::new(1024, 1, 1, None).expect("params");
        let hasher = PasswordHasher::new(pool, params.clone());
        let password = "correct horse battery staple";
        // By the argon2 crate's own API, in each variant and with a bigger memory than ours.
        for (algorithm, m_cost) in [
            (Algorithm::Argon2id, 1024),
            (Algorithm::Argon2i, 2048),
            (Algorithm::Argon2d, 1024),
        ] {
            let salt = SaltString::generate(&mut rand::rngs::OsRng);
            let phc = Argon2::new(
                algorithm,
                Version::V0x13,
                Params::new(m_cost, 2, 1, None).expect("params"),
            )
            .hash_password(password.as_bytes(), &salt)
            .expect("hash")
            .to_string();
            let checked = hasher
                .check(password.into(), Some(phc.clone()))
                .await
                .expect("check");
            assert!(checked.matches && checked.needs_rehash, "{phc}");
            let wrong = hasher
                .check("correct horse battery stapler".into(), Some(phc))
                .await
                .expect("check");
            assert!(!wrong.matches);
        }
        // Ours, by the crate's verifier.
        let ours = hasher.hash(password.into()).await.expect("hash");
        let parsed = PasswordHash::new(&ours).expect("phc");
        assert!(
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        );
        // A broken hash never matches.
        let broken = ours.replace("$argon2id$", "$argon2x$");
        let checked = hasher
            .check(password.into(), Some(broken))
            .await
            .expect("check");
        assert!(!checked.matches);
    }

    #[tokio::test]
    async fn a_full_pool_refuses_instead_of_queueing_forever() {
        let pool = HashPool::new(1, 1).expect("pool");
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let busy = pool.clone();
        let first = tokio::spawn(async move { busy.run(move |_| wait.recv().ok()).await });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let queued_pool = pool.clone();
        let queued = tokio::spawn(async move { queued_pool.run(|_| 2).await });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(pool.run(|_| 3).await, Err(PoolBusy));
        release.send(()).expect("release");
        assert!(first.await.expect("join").is_ok());
        assert_eq!(queued.await.expect("join"), Ok(2));
    }
}
