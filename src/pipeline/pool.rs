//! A pool of worker threads between two channels: the one piece of plumbing every CPU stage
//! (decode, augment) shares. Workers own their scratch state, count busy and waiting time, and
//! stop when their input ends or their output is closed.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use super::channel::{Rx, Tx};
use crate::metrics::Metrics;

/// Time and item counts summed locally and flushed now and then, not per item.
struct StageCounters {
    items: prometheus::IntCounter,
    busy: prometheus::Counter,
    wait: prometheus::Counter,
    pending_items: u64,
    pending_busy: f64,
    pending_wait: f64,
}

impl StageCounters {
    fn new(stage: &str, metrics: &Metrics) -> Self {
        StageCounters {
            items: metrics.stage_items.with_label_values(&[stage]),
            busy: metrics.stage_busy_seconds.with_label_values(&[stage]),
            wait: metrics.stage_wait_seconds.with_label_values(&[stage]),
            pending_items: 0,
            pending_busy: 0.0,
            pending_wait: 0.0,
        }
    }

    fn record(&mut self, busy: f64, wait: f64) {
        self.pending_items += 1;
        self.pending_busy += busy;
        self.pending_wait += wait;
        if self.pending_items >= 32 || self.pending_busy + self.pending_wait > 0.5 {
            self.flush();
        }
    }

    fn flush(&mut self) {
        self.items.inc_by(self.pending_items);
        self.busy.inc_by(self.pending_busy);
        self.wait.inc_by(self.pending_wait);
        self.pending_items = 0;
        self.pending_busy = 0.0;
        self.pending_wait = 0.0;
    }
}

impl Drop for StageCounters {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Runs `workers` threads named `{stage}-{i}`, each with its own work function from
/// `make_worker(i)`, moving items from `input` to `output`.
pub fn spawn_pool<I, O, W, F>(
    stage: &'static str,
    workers: usize,
    input: Rx<I>,
    output: Tx<O>,
    metrics: &Arc<Metrics>,
    make_worker: F,
) -> Vec<JoinHandle<()>>
where
    I: Send + 'static,
    O: Send + 'static,
    W: FnMut(I) -> O + Send + 'static,
    F: Fn(usize) -> W,
{
    (0..workers.max(1))
        .map(|i| {
            let input = input.clone();
            let output = output.clone();
            let mut work = make_worker(i);
            let metrics = metrics.clone();
            std::thread::Builder::new()
                .name(format!("{stage}-{i}"))
                .spawn(move || {
                    let mut counters = StageCounters::new(stage, &metrics);
                    loop {
                        let t0 = Instant::now();
                        let Some(item) = input.recv() else { break };
                        let t1 = Instant::now();
                        let out = work(item);
                        let t2 = Instant::now();
                        if output.send(out).is_err() {
                            input.close();
                            break;
                        }
                        let t3 = Instant::now();
                        counters.record(
                            (t2 - t1).as_secs_f64(),
                            ((t1 - t0) + (t3 - t2)).as_secs_f64(),
                        );
                    }
                })
                .expect("spawn worker thread")
        })
        .collect()
}

/// Worker count from the config: 0 means one per CPU core.
pub fn worker_count(configured: usize) -> usize {
    if configured > 0 {
        configured
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}
