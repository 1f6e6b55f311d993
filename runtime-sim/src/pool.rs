//! Worker threads that run batches of events with the simulator's thread
//! (see [`Sim::set_threads`](crate::Sim::set_threads)).
//!
//! A batch's jobs are independent by construction: distinct nodes, and no
//! job can affect another's node within the batch. So they form one stream:
//! the simulator's thread *publishes* each job as soon as it has planned it
//! (its engine moved in, boxed, so only a pointer moves), any thread
//! *claims* the next unclaimed job and runs it, and the simulator's thread
//! *takes back* jobs in publication order, applying each one's outputs as
//! soon as it has run. Workers thus start on a batch while the simulator is
//! still forming it, and keep running its later jobs while the simulator
//! applies the earlier ones; the simulator runs jobs itself whenever the
//! next one to apply is still unclaimed. Who runs a job never changes what
//! it does, so results do not depend on the number of threads.
//!
//! The stream is a ring of [`RING`] slots indexed by a global job number.
//! Ownership of a slot passes by three counters: `filled` (published by the
//! simulator, release), `next` (claimed, compare-and-swap) and each slot's
//! `done` (its job's number + 1 once run, release). The simulator only
//! publishes into a slot after taking back its previous job, and a batch
//! never holds more jobs than the ring (`MAX_BATCH` < `RING`), since the
//! next batch is formed only after the last one was applied.
//!
//! An idle worker spins on the counters briefly (a batch takes some tens of
//! µs, so work is usually about to arrive), then yields the core between
//! checks, then parks until the simulator publishes again.

use crate::engine::Engine;
use crate::sim::{Executor, Job};
use std::any::Any;
use std::cell::UnsafeCell;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Slots in the ring: more than a batch can hold.
pub(crate) const RING: usize = 256;
/// Jobs ahead of the one it runs whose engines a runner prefetches.
const AHEAD: u64 = 2;

/// Checks of the counters with a CPU pause between, before yielding.
/// Measured with the earlier hand-over-a-batch pool on 100k nodes and two
/// threads (BENCHMARKS.md): 300 gave 114-118 s, 50 gave 133 s (more time
/// in `sched_yield`), 3000 gave 145 s (a spinning vCPU seems to slow the
/// other down).
const SPINS: u32 = 300;
/// Checks with a `yield` between (each a few µs when no other thread wants
/// the core, so the whole wait is some ms), before parking. Yielding
/// rather than spinning hands the core over when this machine is shared:
/// the thread we wait for may be waiting for it.
const YIELDS: u32 = 1_000;

struct Slot<E> {
    /// The number of the job last run in this slot, plus one.
    done: AtomicU64,
    /// Where the job's engine is, for a runner a few jobs behind to
    /// prefetch (only ever an address to prefetch, never dereferenced, so
    /// a stale one is harmless).
    engine_at: AtomicPtr<u8>,
    /// Written by the simulator before publishing, by the claimer while
    /// running, by the simulator when taking back; the counters say whose
    /// turn it is.
    job: UnsafeCell<Option<Job<E>>>,
}

struct Shared<E> {
    slots: Box<[Slot<E>]>,
    /// Jobs published so far.
    filled: AtomicU64,
    /// Jobs claimed so far.
    next: AtomicU64,
    stop: AtomicBool,
    /// Set (before `panic`) when an engine panicked on a worker.
    poisoned: AtomicBool,
    panic: Mutex<Option<String>>,
    /// Per worker: parked or about to park.
    sleeping: Box<[AtomicBool]>,
    strict_drain: bool,
}

// SAFETY: a slot's job is only touched by the one thread whose turn the
// counters say it is (module docs), and jobs are `Send`.
unsafe impl<E: Send> Sync for Shared<E> {}

impl<E: Engine> Shared<E> {
    fn slot(&self, i: u64) -> &Slot<E> {
        &self.slots[(i % RING as u64) as usize]
    }

    /// Claim the next published, unclaimed job.
    fn claim(&self) -> Option<u64> {
        let mut c = self.next.load(Ordering::Acquire);
        loop {
            if c >= self.filled.load(Ordering::Acquire) {
                return None;
            }
            match self
                .next
                .compare_exchange_weak(c, c + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(c),
                Err(now) => c = now,
            }
        }
    }

    /// Run claimed job `i` and mark it done, first prefetching the engines
    /// of the next few published jobs (whoever claims them: with two
    /// threads, often this one).
    fn run(&self, i: u64) {
        let filled = self.filled.load(Ordering::Acquire);
        for j in i + 1..(i + 1 + AHEAD).min(filled) {
            let p = self.slot(j).engine_at.load(Ordering::Relaxed);
            if !p.is_null() {
                E::prefetch_at(p);
            }
        }
        let slot = self.slot(i);
        // SAFETY: job `i` is published (claim checked `filled`, acquire)
        // and claimed by this thread alone; nobody else touches the slot
        // until `done` says it ran.
        let job = unsafe { &mut *slot.job.get() };
        if let Some(job) = job.as_mut() {
            job.run_own_engine(self.strict_drain);
        }
        slot.done.store(i + 1, Ordering::Release);
    }

    fn has_work(&self) -> bool {
        self.next.load(Ordering::SeqCst) < self.filled.load(Ordering::SeqCst)
    }
}

/// `workers` threads sharing a job stream with the simulator's thread.
pub(crate) struct Pool<E> {
    shared: Arc<Shared<E>>,
    threads: Vec<JoinHandle<()>>,
    /// Jobs published so far (this thread's copy of `filled`).
    pushed: u64,
    /// Jobs taken back so far.
    taken: u64,
}

impl<E: Engine + Send + 'static> Pool<E> {
    pub(crate) fn new(workers: usize, strict_drain: bool) -> Self {
        let shared = Arc::new(Shared {
            slots: (0..RING)
                .map(|_| Slot {
                    done: AtomicU64::new(0),
                    engine_at: AtomicPtr::new(std::ptr::null_mut()),
                    job: UnsafeCell::new(None),
                })
                .collect(),
            filled: AtomicU64::new(0),
            next: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            poisoned: AtomicBool::new(false),
            panic: Mutex::new(None),
            sleeping: (0..workers).map(|_| AtomicBool::new(false)).collect(),
            strict_drain,
        });
        let threads = (0..workers)
            .map(|w| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("alm-sim-worker-{w}"))
                    .spawn(move || work(&shared, w))
                    .expect("spawn a simulator worker thread")
            })
            .collect();
        Pool {
            shared,
            threads,
            pushed: 0,
            taken: 0,
        }
    }
}

/// A worker's loop: run jobs as they come, park when there are none.
fn work<E: Engine>(shared: &Shared<E>, w: usize) {
    let mut idle = 0u32;
    loop {
        if let Some(i) = shared.claim() {
            idle = 0;
            let run = std::panic::catch_unwind(AssertUnwindSafe(|| shared.run(i)));
            if let Err(e) = run {
                let mut p = shared.panic.lock().unwrap_or_else(|p| p.into_inner());
                *p = Some(panic_message(&*e));
                shared.poisoned.store(true, Ordering::Release);
                return;
            }
            continue;
        }
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        idle += 1;
        if idle <= SPINS {
            std::hint::spin_loop();
        } else if idle <= SPINS + YIELDS {
            std::thread::yield_now();
        } else {
            // Announce the nap, then look again: the simulator publishes
            // before it reads `sleeping` (both SeqCst), so either it sees
            // the flag and unparks us, or we see its job here.
            shared.sleeping[w].store(true, Ordering::SeqCst);
            if !shared.has_work() && !shared.stop.load(Ordering::SeqCst) {
                std::thread::park();
            }
            shared.sleeping[w].store(false, Ordering::SeqCst);
            idle = 0;
        }
    }
}

impl<E: Engine + Send + 'static> Executor<E> for Pool<E> {
    fn push(&mut self, job: Job<E>) {
        let i = self.pushed;
        assert!(
            i - self.taken < RING as u64,
            "more jobs in flight than the ring holds"
        );
        let slot = self.shared.slot(i);
        let at = job
            .engine
            .as_deref()
            .map_or(std::ptr::null_mut(), |e| (e as *const E).cast_mut().cast());
        slot.engine_at.store(at, Ordering::Relaxed);
        // SAFETY: the slot's previous job (number i - RING) was taken back
        // (checked above), and job `i` is not published yet: nobody else
        // can reach the slot.
        unsafe { *slot.job.get() = Some(job) };
        self.pushed += 1;
        self.shared.filled.store(self.pushed, Ordering::SeqCst);
        for (w, s) in self.shared.sleeping.iter().enumerate() {
            if s.load(Ordering::SeqCst) {
                self.threads[w].thread().unpark();
            }
        }
    }

    fn take(&mut self) -> Job<E> {
        let i = self.taken;
        assert!(i < self.pushed, "take without a job in flight");
        let slot = self.shared.slot(i);
        let mut spins = 0u32;
        while slot.done.load(Ordering::Acquire) != i + 1 {
            if self.shared.poisoned.load(Ordering::Acquire) {
                let p = self.shared.panic.lock().unwrap_or_else(|p| p.into_inner());
                let msg = p.as_deref().unwrap_or("(no message)");
                panic!("an engine panicked on a worker thread: {msg}");
            }
            // Help rather than wait: run the next unclaimed job here.
            if let Some(c) = self.shared.claim() {
                self.shared.run(c);
                spins = 0;
            } else if spins < SPINS {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        // SAFETY: job `i` ran (`done`, acquire) and its runner is done with
        // the slot; until it is published again only this thread uses it.
        let job = unsafe { (*slot.job.get()).take() };
        self.taken += 1;
        job.expect("a published job is in its slot")
    }
}

fn panic_message(e: &(dyn Any + Send)) -> String {
    if let Some(s) = e.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = e.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

impl<E> Drop for Pool<E> {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            t.thread().unpark();
            // A worker that panicked has already reported it.
            let _ = t.join();
        }
    }
}
