//! A pool of worker threads between two channels: the one piece of plumbing every CPU stage
//! (decode, augment) shares. Workers own their scratch state, count busy and waiting time, and
//! stop when their input ends or their output is closed. A worker that also runs an earlier
//! stage's work inline (decode inside augment) books that part to the earlier stage through
//! its [`Lap`], so each stage's metrics mean the same whichever threads do the work.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use super::channel::{Rx, Tx};
use super::supervise::Supervisor;
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

/// A worker's clock for the item in hand: [`Lap::book`] charges the time since the item arrived
/// (or since the last booking) to another stage; the pool charges the rest to its own.
pub struct Lap {
    start: Instant,
    metrics: Arc<Metrics>,
    booked: Vec<(&'static str, StageCounters)>,
}

impl Lap {
    fn new(metrics: Arc<Metrics>) -> Self {
        Lap {
            start: Instant::now(),
            metrics,
            booked: Vec::new(),
        }
    }

    /// Books the work done so far on this item as one item of `stage`, busy all along (it
    /// waited on no channel of its own).
    pub fn book(&mut self, stage: &'static str) {
        let now = Instant::now();
        let busy = (now - self.start).as_secs_f64();
        self.start = now;
        let i = match self.booked.iter().position(|(name, _)| *name == stage) {
            Some(i) => i,
            None => {
                self.booked
                    .push((stage, StageCounters::new(stage, &self.metrics)));
                self.booked.len() - 1
            }
        };
        self.booked[i].1.record(busy, 0.0);
    }
}

/// Runs `workers` threads named `{stage}-{i}`, each with its own work function from
/// `make_worker(i)`, moving items from `input` to `output`. A worker that panics is reported to
/// `supervisor` under its thread name, which stops the run.
pub fn spawn_pool<I, O, W, F>(
    stage: &'static str,
    workers: usize,
    input: Rx<I>,
    output: Tx<O>,
    metrics: &Arc<Metrics>,
    supervisor: &Supervisor,
    make_worker: F,
) -> Vec<JoinHandle<()>>
where
    I: Send + 'static,
    O: Send + 'static,
    W: FnMut(I, &mut Lap) -> O + Send + 'static,
    F: Fn(usize) -> W,
{
    (0..workers.max(1))
        .map(|i| {
            let input = input.clone();
            let output = output.clone();
            let mut work = make_worker(i);
            let metrics = metrics.clone();
            let supervisor = supervisor.clone();
            let name = format!("{stage}-{i}");
            std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || {
                    supervisor.guard(&name, move || {
                        let mut counters = StageCounters::new(stage, &metrics);
                        let mut lap = Lap::new(metrics);
                        loop {
                            let t0 = Instant::now();
                            let Some(item) = input.recv() else { break };
                            let t1 = Instant::now();
                            lap.start = t1;
                            let out = work(item, &mut lap);
                            let t2 = Instant::now();
                            if output.send(out).is_err() {
                                input.close();
                                break;
                            }
                            let t3 = Instant::now();
                            counters.record(
                                (t2 - lap.start).as_secs_f64(),
                                ((t1 - t0) + (t3 - t2)).as_secs_f64(),
                            );
                        }
                    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::channel::bounded;
    use std::time::Duration;

    /// A worker that books its first part to "decode" leaves that time out of its own stage:
    /// each stage counts every item once and only its own busy time.
    #[test]
    fn booked_time_goes_to_the_earlier_stage_only() {
        let metrics = Metrics::new();
        let (in_tx, in_rx) = bounded::<u32>("test-in", 8, &metrics);
        let (out_tx, out_rx) = bounded::<u32>("test-out", 8, &metrics);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let supervisor = Supervisor::new(stop);
        let threads = spawn_pool("augment", 2, in_rx, out_tx, &metrics, &supervisor, |_| {
            |x: u32, lap: &mut Lap| {
                std::thread::sleep(Duration::from_millis(30));
                lap.book("decode");
                x + 1
            }
        });
        for x in 0..6 {
            in_tx.send(x).unwrap();
        }
        drop(in_tx);
        let mut out: Vec<u32> = std::iter::from_fn(|| out_rx.recv()).collect();
        for t in threads {
            t.join().unwrap();
        }
        out.sort();
        assert_eq!(out, vec![1, 2, 3, 4, 5, 6]);
        let items = |s: &str| metrics.stage_items.with_label_values(&[s]).get();
        let busy = |s: &str| metrics.stage_busy_seconds.with_label_values(&[s]).get();
        let wait = |s: &str| metrics.stage_wait_seconds.with_label_values(&[s]).get();
        assert_eq!((items("decode"), items("augment")), (6, 6));
        assert!(
            busy("decode") >= 6.0 * 0.030,
            "decode busy {}",
            busy("decode")
        );
        assert!(wait("decode") == 0.0, "decode wait {}", wait("decode"));
        // The augment part does nothing: its busy time is tiny next to the 180 ms slept.
        assert!(
            busy("augment") < busy("decode") / 4.0,
            "augment busy {} includes the booked decode time {}",
            busy("augment"),
            busy("decode")
        );
    }

    /// A worker that panics loses the item in hand; the pool reports it (so the run stops
    /// instead of a batcher waiting for that item forever) and its other workers drain.
    #[test]
    fn a_panicking_worker_is_reported_and_the_others_drain() {
        let metrics = Metrics::new();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let supervisor = Supervisor::new(stop.clone());
        let (in_tx, in_rx) = bounded::<u32>("test-in", 8, &metrics);
        let (out_tx, out_rx) = bounded::<u32>("test-out", 8, &metrics);
        let threads = spawn_pool("augment", 2, in_rx, out_tx, &metrics, &supervisor, |_| {
            |x: u32, _: &mut Lap| {
                assert!(x != 3, "sample {x} is poison");
                x
            }
        });
        for x in 0..8 {
            in_tx.send(x).unwrap();
        }
        drop(in_tx);
        let out: Vec<u32> = std::iter::from_fn(|| out_rx.recv()).collect();
        for t in threads {
            t.join().expect("the panic is caught inside the thread");
        }
        assert!(!out.contains(&3) && out.len() >= 3, "{out:?}");
        assert!(stop.load(std::sync::atomic::Ordering::SeqCst));
        let failure = supervisor.failure().unwrap();
        assert!(
            failure.starts_with("actor augment-") && failure.contains("sample 3 is poison"),
            "{failure}"
        );
    }
}
