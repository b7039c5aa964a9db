//! A bounded execution pool: a fixed set of worker threads and a queue of
//! fixed capacity. A full queue is refused at once, so a burst of requests
//! costs a `QueueFull` error, not unbounded memory.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use crate::error::{Error, Result};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Worker threads running blocking inference jobs.
pub struct Pool {
    sender: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
    waiting: Arc<AtomicUsize>,
    capacity: usize,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("threads", &self.workers.len())
            .field("capacity", &self.capacity)
            .field("waiting", &self.queue_depth())
            .finish()
    }
}

impl Pool {
    /// `threads` workers (at least one) and room for `capacity` waiting
    /// jobs. One worker per core suits single-threaded plans; a deployment
    /// that wants lower latency under load trades capacity for queueing.
    pub fn new(threads: usize, capacity: usize) -> Pool {
        let (sender, receiver) = sync_channel::<Job>(capacity);
        let receiver = Arc::new(Mutex::new(receiver));
        let waiting = Arc::new(AtomicUsize::new(0));
        let workers = (0..threads.max(1))
            .map(|i| {
                let receiver = receiver.clone();
                let waiting = waiting.clone();
                std::thread::Builder::new()
                    .name(format!("inference-{i}"))
                    .spawn(move || work(&receiver, &waiting))
                    .unwrap_or_else(|e| panic!("cannot start inference worker: {e}"))
            })
            .collect();
        Pool {
            sender: Some(sender),
            workers,
            waiting,
            capacity,
        }
    }

    /// A pool with one worker per available core.
    pub fn per_core(capacity: usize) -> Pool {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Pool::new(cores, capacity)
    }

    /// Queues `job`, or refuses it at once when the queue is full.
    pub fn try_submit(&self, job: impl FnOnce() + Send + 'static) -> Result<()> {
        let full = || Error::QueueFull {
            capacity: self.capacity,
        };
        let sender = self.sender.as_ref().ok_or_else(full)?;
        // Count before sending so a fast worker never decrements first.
        self.waiting.fetch_add(1, Ordering::SeqCst);
        match sender.try_send(Box::new(job)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                Err(full())
            }
        }
    }

    /// Jobs waiting for a worker.
    pub fn queue_depth(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.workers.len()
    }
}

fn work(receiver: &Mutex<Receiver<Job>>, waiting: &AtomicUsize) {
    loop {
        let job = {
            let receiver = receiver.lock().unwrap_or_else(PoisonError::into_inner);
            receiver.recv()
        };
        let Ok(job) = job else { return };
        waiting.fetch_sub(1, Ordering::SeqCst);
        // A panicking job (an engine bug) must not take the worker with it;
        // its caller sees its result channel closed.
        if catch_unwind(AssertUnwindSafe(job)).is_err() {
            tracing::error!("an inference job panicked; the worker continues");
        }
    }
}

impl Drop for Pool {
    /// Lets queued jobs finish, then joins the workers.
    fn drop(&mut self) {
        drop(self.sender.take());
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;
    use std::time::Duration;

    #[test]
    fn a_full_queue_refuses_instead_of_growing() {
        let pool = Pool::new(1, 2);
        let (release_tx, release_rx) = channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        let (started_tx, started_rx) = channel();
        // One job occupies the worker...
        let r = release_rx.clone();
        pool.try_submit(move || {
            started_tx.send(()).unwrap();
            let _ = r.lock().unwrap().recv();
        })
        .unwrap();
        started_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        // ...two fill the queue, the next is refused.
        for _ in 0..2 {
            let r = release_rx.clone();
            pool.try_submit(move || {
                let _ = r.lock().unwrap().recv();
            })
            .unwrap();
        }
        assert_eq!(pool.queue_depth(), 2);
        let err = pool.try_submit(|| {}).unwrap_err();
        assert!(matches!(err, Error::QueueFull { capacity: 2 }));
        for _ in 0..3 {
            release_tx.send(()).unwrap();
        }
        drop(pool); // joins: every queued job ran
    }

    #[test]
    fn a_panicking_job_does_not_kill_the_worker() {
        let pool = Pool::new(1, 4);
        pool.try_submit(|| panic!("engine bug")).unwrap();
        let (tx, rx) = channel();
        pool.try_submit(move || tx.send(42).unwrap()).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 42);
    }
}
