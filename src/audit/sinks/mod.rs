//! Audit sinks. The writer thread hands each sink whole [`Batch`]es of sealed JSON lines in
//! `seq` order; a sink makes them durable (written to its file or stream, or appended to its
//! disk spool) and says how many lines it took.
//!
//! `file` and `stdout` write in the writer thread. `http` and `syslog` only append to their
//! spool there ([`crate::audit::spool`]); a sender thread of their own delivers from the spool,
//! so a slow or absent collector never holds the writer up.

pub mod file;
pub mod http;
pub mod stdout;
pub mod syslog;

use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::audit::queue::Release;
use crate::audit::spool::SpoolReader;
use crate::audit::AuditSetupError;

/// Sealed records, each rendered once as its canonical JSON line (ending in `\n`), in `seq`
/// order without gaps.
pub struct Batch {
    /// `seq` of the first line.
    pub first_seq: u64,
    bytes: Vec<u8>,
    /// End offset (exclusive, after the `\n`) of each line.
    ends: Vec<usize>,
    _release: Release,
}

impl Batch {
    pub fn new(first_seq: u64, bytes: Vec<u8>, ends: Vec<usize>, release: Release) -> Self {
        Self {
            first_seq,
            bytes,
            ends,
            _release: release,
        }
    }

    /// Number of lines.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    fn start_of(&self, i: usize) -> usize {
        match i.checked_sub(1) {
            Some(p) => self.ends.get(p).copied().unwrap_or(self.bytes.len()),
            None => 0,
        }
    }

    /// The bytes of lines `from..to`.
    pub fn lines(&self, from: usize, to: usize) -> &[u8] {
        let a = self.start_of(from);
        let b = self.start_of(to);
        self.bytes.get(a..b).unwrap_or_default()
    }

    /// The byte length of line `i`.
    pub fn line_len(&self, i: usize) -> usize {
        self.start_of(i + 1) - self.start_of(i)
    }

    /// All bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// What a sink did with lines `from..` of a batch.
pub struct Taken {
    /// Lines made durable, counted from `from`.
    pub lines: usize,
    /// Why it stopped before the end, if it failed (fewer lines and no error: it is full).
    pub error: Option<io::Error>,
}

impl Taken {
    pub fn all(n: usize) -> Self {
        Self {
            lines: n,
            error: None,
        }
    }
    pub fn failed(lines: usize, e: io::Error) -> Self {
        Self {
            lines,
            error: Some(e),
        }
    }
}

/// A destination for audit lines, driven by the writer thread.
pub trait Sink: Send {
    /// A fixed name for logs and the `sink` metric label.
    fn name(&self) -> &'static str;
    /// Makes lines `from..` of `batch` durable, in order; see [`Taken`].
    fn write(&mut self, batch: &Batch, from: usize) -> Taken;
    /// Called every writer tick: deferred work such as an interval fsync.
    fn tick(&mut self, _now: Instant) -> io::Result<()> {
        Ok(())
    }
    /// Forces everything written so far to stable storage (flush and shutdown).
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// At shutdown: lift any size limit, so that records held in memory go to disk rather
    /// than being lost with the process.
    fn lift_limit(&mut self) {}
}

/// Tells a sender thread to finish: deliver until its spool is empty or the deadline passes.
#[derive(Clone, Default)]
pub struct Stop(Arc<StopInner>);

#[derive(Default)]
struct StopInner {
    deadline: Mutex<Option<Instant>>,
    notify: tokio::sync::Notify,
}

impl Stop {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the sender to finish by `deadline` (an earlier request keeps its earlier one).
    pub fn request(&self, deadline: Instant) {
        {
            let mut d = self
                .0
                .deadline
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            *d = Some(d.map_or(deadline, |old| old.min(deadline)));
        }
        self.0.notify.notify_one();
    }

    pub fn deadline(&self) -> Option<Instant> {
        *self
            .0
            .deadline
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Once asked to stop: the spool is empty or time is up.
    pub fn should_exit(&self, unsent: u64) -> bool {
        self.deadline()
            .is_some_and(|d| unsent == 0 || Instant::now() >= d)
    }

    /// Sleeps `d`, cut short by a stop request, and never past the stop deadline.
    pub async fn pause(&self, d: Duration) {
        let d = match self.deadline() {
            Some(dl) => d.min(dl.saturating_duration_since(Instant::now())),
            None => d,
        };
        tokio::select! {
            () = tokio::time::sleep(d) => {}
            () = self.0.notify.notified() => {}
        }
    }

    /// Waits for new spool data, a stop request, or `d`.
    pub async fn idle(&self, reader: &SpoolReader, d: Duration) {
        tokio::select! {
            () = reader.data() => {}
            () = self.pause(d) => {}
        }
    }
}

/// Runs a sender's loop on a thread of its own with a single-threaded runtime, so that a
/// collector never competes with the request path for the proxy's runtime.
pub(crate) fn spawn_sender<F>(name: &str, fut: F) -> Result<JoinHandle<()>, AuditSetupError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| AuditSetupError::Thread {
            what: "sender runtime",
            source,
        })?;
    std::thread::Builder::new()
        .name(format!("wardgate-audit-{name}"))
        .spawn(move || rt.block_on(fut))
        .map_err(|source| AuditSetupError::Thread {
            what: "sender",
            source,
        })
}

/// Exponential backoff with jitter: the n-th wait is uniformly drawn from
/// `[d/2, d]` where `d = min(max, initial · 2ⁿ)`.
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        let seed = uuid::Uuid::now_v7().as_u128();
        Self {
            initial,
            max,
            attempt: 0,
            rng: (seed as u64 ^ (seed >> 64) as u64) | 1,
        }
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The next wait.
    pub fn next_wait(&mut self) -> Duration {
        let d = self
            .initial
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        // xorshift64*: jitter needs spread, not secrecy.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let half = d / 2;
        let span = u64::try_from((d - half).as_micros()).unwrap_or(u64::MAX);
        half + Duration::from_micros(if span == 0 { 0 } else { r % (span + 1) })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::audit::queue::Gate;
    use std::sync::Arc;

    pub(crate) fn batch(first_seq: u64, lines: &[&str]) -> Batch {
        let mut bytes = Vec::new();
        let mut ends = Vec::new();
        for l in lines {
            bytes.extend_from_slice(l.as_bytes());
            bytes.push(b'\n');
            ends.push(bytes.len());
        }
        let gate = Arc::new(Gate::new(16, crate::metrics::Metrics::new()));
        Batch::new(first_seq, bytes, ends, Release::none(gate))
    }

    #[test]
    fn batch_slices_lines() {
        let b = batch(7, &["a", "bb", "ccc"]);
        assert_eq!(b.len(), 3);
        assert_eq!(b.lines(0, 1), b"a\n");
        assert_eq!(b.lines(1, 3), b"bb\nccc\n");
        assert_eq!(b.lines(3, 3), b"");
        assert_eq!(b.line_len(2), 4);
    }

    #[test]
    fn backoff_grows_to_its_max_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let waits: Vec<Duration> = (0..8).map(|_| b.next_wait()).collect();
        assert!(waits[0] >= Duration::from_millis(50) && waits[0] <= Duration::from_millis(100));
        assert!(waits[3] >= Duration::from_millis(400) && waits[3] <= Duration::from_millis(800));
        for w in &waits[4..] {
            assert!(*w >= Duration::from_millis(500) && *w <= Duration::from_millis(1000));
        }
        b.reset();
        assert!(b.next_wait() <= Duration::from_millis(100));
    }
}
