//! Worker threads that run part of each batch of events (see
//! [`Sim::set_threads`](crate::Sim::set_threads)).
//!
//! A batch's jobs are independent by construction: distinct nodes, and no
//! job can affect another's node within the batch. Each worker gets a
//! contiguous run of jobs, with their engines moved in (boxed, so only a
//! pointer moves), runs them, and hands the run back; the simulator thread
//! applies every job's outputs in pop order. Nothing a worker does depends on
//! timing, so results do not depend on the number of threads.
//!
//! Handing over is a mutex-guarded slot and a flag: the receiver spins on the
//! flag briefly (a batch takes some tens of µs, so the other side is usually
//! about to deliver), then yields the core between checks, then sleeps on a
//! condition variable, so an idle worker costs nothing for long.

use crate::engine::Engine;
use crate::sim::{Executor, Job};
use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// Checks of the flag with a CPU pause between, before yielding (~10 µs).
/// Measured on 100k nodes with two threads (BENCHMARKS.md): 300 gave
/// 114-118 s, 50 gave 133 s (more time in `sched_yield`), 3000 gave 145 s
/// (a spinning vCPU seems to slow the other down).
const SPINS: u32 = 300;
/// Checks with a `yield` between (each a few µs when no other thread wants
/// the core, so the whole wait is some ms), before sleeping. Yielding
/// rather than spinning hands the core over when this machine is shared:
/// the thread we wait for may be waiting for it.
const YIELDS: u32 = 1_000;

/// A one-item mailbox between two threads.
struct Slot<V> {
    ready: AtomicBool,
    data: Mutex<Option<V>>,
    /// Set by a receiver about to sleep, under the lock.
    sleeping: AtomicBool,
    cv: Condvar,
}

impl<V> Slot<V> {
    fn new() -> Self {
        Slot {
            ready: AtomicBool::new(false),
            data: Mutex::new(None),
            sleeping: AtomicBool::new(false),
            cv: Condvar::new(),
        }
    }

    fn put(&self, v: V) {
        let mut g = self.data.lock().unwrap_or_else(|p| p.into_inner());
        debug_assert!(g.is_none(), "slot already full");
        *g = Some(v);
        self.ready.store(true, Ordering::Release);
        let wake = self.sleeping.load(Ordering::Relaxed);
        drop(g);
        if wake {
            self.cv.notify_one();
        }
    }

    fn take(&self) -> V {
        'wait: {
            for _ in 0..SPINS {
                if self.ready.load(Ordering::Acquire) {
                    break 'wait;
                }
                std::hint::spin_loop();
            }
            for _ in 0..YIELDS {
                if self.ready.load(Ordering::Acquire) {
                    break 'wait;
                }
                std::thread::yield_now();
            }
        }
        let mut g = self.data.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(v) = g.take() {
                self.ready.store(false, Ordering::Relaxed);
                self.sleeping.store(false, Ordering::Relaxed);
                return v;
            }
            self.sleeping.store(true, Ordering::Relaxed);
            g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }
}

struct Worker<E> {
    /// `None` asks the worker to exit.
    to: Arc<Slot<Option<Vec<Job<E>>>>>,
    /// The jobs, run, or the panic message of an engine that panicked.
    from: Arc<Slot<Result<Vec<Job<E>>, String>>>,
    /// A job buffer kept for the next batch.
    spare: Vec<Job<E>>,
    thread: Option<JoinHandle<()>>,
}

/// `workers` threads running batch tails.
pub(crate) struct Pool<E> {
    workers: Vec<Worker<E>>,
}

impl<E: Engine + Send + 'static> Pool<E> {
    pub(crate) fn new(workers: usize, strict_drain: bool) -> Self {
        let workers = (0..workers)
            .map(|w| {
                let to = Arc::new(Slot::<Option<Vec<Job<E>>>>::new());
                let from = Arc::new(Slot::new());
                let (rx, tx) = (to.clone(), from.clone());
                let thread = std::thread::Builder::new()
                    .name(format!("alm-sim-worker-{w}"))
                    .spawn(move || {
                        while let Some(mut jobs) = rx.take() {
                            let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
                                run_jobs(&mut jobs, strict_drain);
                            }));
                            match run {
                                Ok(()) => tx.put(Ok(jobs)),
                                Err(e) => {
                                    tx.put(Err(panic_message(&*e)));
                                    return;
                                }
                            }
                        }
                    })
                    .expect("spawn a simulator worker thread");
                Worker {
                    to,
                    from,
                    spare: Vec::new(),
                    thread: Some(thread),
                }
            })
            .collect();
        Pool { workers }
    }
}

/// Run a worker's jobs in order, fetching a few ahead.
fn run_jobs<E: Engine>(jobs: &mut [Job<E>], strict: bool) {
    const AHEAD: usize = 3;
    for k in 0..jobs.len() {
        if let Some(ahead) = jobs.get(k + AHEAD) {
            ahead.prefetch(None);
        }
        let job = &mut jobs[k];
        if let Some(mut engine) = job.engine.take() {
            job.execute(&mut engine, strict);
            job.engine = Some(engine);
        }
    }
}

impl<E: Engine + Send + 'static> Executor<E> for Pool<E> {
    fn workers(&self) -> usize {
        self.workers.len()
    }
    fn buffer(&mut self, w: usize) -> Vec<Job<E>> {
        std::mem::take(&mut self.workers[w].spare)
    }
    fn start(&mut self, w: usize, jobs: Vec<Job<E>>) {
        self.workers[w].to.put(Some(jobs));
    }
    fn ready(&self, w: usize) -> bool {
        self.workers[w].from.ready.load(Ordering::Acquire)
    }
    fn finish(&mut self, w: usize) -> Vec<Job<E>> {
        match self.workers[w].from.take() {
            Ok(jobs) => jobs,
            Err(msg) => panic!("an engine panicked on worker thread {w}: {msg}"),
        }
    }
    fn give_back(&mut self, w: usize, jobs: Vec<Job<E>>) {
        debug_assert!(jobs.is_empty());
        self.workers[w].spare = jobs;
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
        for w in &mut self.workers {
            w.to.put(None);
            if let Some(t) = w.thread.take() {
                // A worker that panicked has already reported it.
                let _ = t.join();
            }
        }
    }
}
