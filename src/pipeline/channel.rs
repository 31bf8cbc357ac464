//! Bounded channels whose depth is a metric. Every link of the dataflow is one of these: a full
//! channel blocks its producer (backpressure), and dropping every sender ends the consumer.
//!
//! The links that carry images ([`bounded_bytes`]: source → decode/augment, decode → augment)
//! are bounded in bytes as well as items, because an item is anything from a 2 KB thumbnail to
//! a 190 MB decoded frame: the producer waits until the bytes queued plus its item fit the
//! budget. An item larger than the whole budget still goes through once the queue is empty, so
//! the bound is `max(budget, one item)` and a large image never deadlocks the pipeline.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use prometheus::IntGauge;

use crate::metrics::Metrics;

/// Bytes of memory an item holds, for the byte budget of the channels that carry images.
pub trait Weigh {
    fn weight(&self) -> u64;
}

/// The bytes queued in one channel against its budget.
pub struct ByteBudget {
    limit: u64,
    held: Mutex<u64>,
    freed: Condvar,
    /// The most bytes ever queued at once: what the tests (and a curious operator) compare
    /// with `limit`.
    peak: AtomicU64,
}

impl ByteBudget {
    fn new(limit: u64) -> Arc<Self> {
        Arc::new(ByteBudget {
            limit,
            held: Mutex::new(0),
            freed: Condvar::new(),
            peak: AtomicU64::new(0),
        })
    }

    /// Takes `bytes` once they fit (or the queue is empty); false when `gone` says the
    /// consumers have left, so a producer never waits for bytes nobody will free.
    fn take(&self, bytes: u64, gone: impl Fn() -> bool) -> bool {
        let mut held = self.held.lock().expect("byte budget lock");
        while *held > 0 && held.saturating_add(bytes) > self.limit {
            if gone() {
                return false;
            }
            held = self
                .freed
                .wait_timeout(held, Duration::from_millis(100))
                .expect("byte budget lock")
                .0;
        }
        *held += bytes;
        self.peak.fetch_max(*held, Ordering::Relaxed);
        true
    }

    fn give(&self, bytes: u64) {
        let mut held = self.held.lock().expect("byte budget lock");
        *held = held.saturating_sub(bytes);
        self.freed.notify_all();
    }

    /// Bytes queued now.
    pub fn held(&self) -> u64 {
        *self.held.lock().expect("byte budget lock")
    }

    /// The most bytes queued at once so far.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// The budget.
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

/// A channel's byte budget and how to weigh its items (absent: bounded in items only).
struct Bytes<T> {
    budget: Arc<ByteBudget>,
    weigh: fn(&T) -> u64,
}

impl<T> Clone for Bytes<T> {
    fn clone(&self) -> Self {
        Bytes {
            budget: self.budget.clone(),
            weigh: self.weigh,
        }
    }
}

/// Sending half; cloneable for a pool of producers.
pub struct Tx<T> {
    inner: kanal::Sender<T>,
    depth: IntGauge,
    bytes: Option<Bytes<T>>,
}

/// Receiving half; cloneable for a pool of consumers.
pub struct Rx<T> {
    inner: kanal::Receiver<T>,
    depth: IntGauge,
    bytes: Option<Bytes<T>>,
}

impl<T> Clone for Tx<T> {
    fn clone(&self) -> Self {
        Tx {
            inner: self.inner.clone(),
            depth: self.depth.clone(),
            bytes: self.bytes.clone(),
        }
    }
}

impl<T> Clone for Rx<T> {
    fn clone(&self) -> Self {
        Rx {
            inner: self.inner.clone(),
            depth: self.depth.clone(),
            bytes: self.bytes.clone(),
        }
    }
}

/// The other side is gone: the pipeline is shutting down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// A bounded channel named `name` in the `channel` label of the depth and capacity gauges.
pub fn bounded<T>(name: &str, capacity: usize, metrics: &Arc<Metrics>) -> (Tx<T>, Rx<T>) {
    let (tx, rx) = kanal::bounded(capacity);
    let depth = metrics.channel_depth.with_label_values(&[name]);
    metrics
        .channel_capacity
        .with_label_values(&[name])
        .set(capacity as i64);
    depth.set(0);
    (
        Tx {
            inner: tx,
            depth: depth.clone(),
            bytes: None,
        },
        Rx {
            inner: rx,
            depth,
            bytes: None,
        },
    )
}

/// [`bounded`], and at most `max_bytes` of items queued (by [`Weigh`]; one larger item passes
/// alone).
pub fn bounded_bytes<T: Weigh>(
    name: &str,
    capacity: usize,
    max_bytes: u64,
    metrics: &Arc<Metrics>,
) -> (Tx<T>, Rx<T>) {
    let (mut tx, mut rx) = bounded(name, capacity, metrics);
    let bytes = Bytes {
        budget: ByteBudget::new(max_bytes),
        weigh: T::weight,
    };
    tx.bytes = Some(bytes.clone());
    rx.bytes = Some(bytes);
    (tx, rx)
}

impl<T> Tx<T> {
    /// Blocks while the channel is full (in items, or in bytes for [`bounded_bytes`]).
    pub fn send(&self, value: T) -> Result<(), Closed> {
        if let Some(b) = &self.bytes {
            let w = (b.weigh)(&value);
            if !b.budget.take(w, || self.inner.is_disconnected()) {
                return Err(Closed);
            }
            if self.inner.send(value).is_err() {
                b.budget.give(w);
                return Err(Closed);
            }
        } else {
            self.inner.send(value).map_err(|_| Closed)?;
        }
        self.depth.set(self.inner.len() as i64);
        Ok(())
    }

    /// The byte budget of a [`bounded_bytes`] channel.
    pub fn budget(&self) -> Option<&Arc<ByteBudget>> {
        self.bytes.as_ref().map(|b| &b.budget)
    }
}

impl<T> Rx<T> {
    /// Blocks until an item arrives; `None` once every sender is gone and the queue is empty.
    pub fn recv(&self) -> Option<T> {
        let v = self.inner.recv().ok();
        self.depth.set(self.inner.len() as i64);
        self.release(v.as_ref());
        v
    }

    /// Frees the bytes of an item taken off the queue.
    fn release(&self, item: Option<&T>) {
        if let (Some(b), Some(item)) = (&self.bytes, item) {
            b.budget.give((b.weigh)(item));
        }
    }

    /// Like [`Rx::recv`], but gives up at `deadline`: `Ok(None)` when it passed first,
    /// `Err(Closed)` once every sender is gone and the queue is empty.
    pub fn recv_until(&self, deadline: std::time::Instant) -> Result<Option<T>, Closed> {
        let wait = deadline.saturating_duration_since(std::time::Instant::now());
        let v = match self.inner.recv_timeout(wait) {
            Ok(v) => Ok(Some(v)),
            Err(kanal::ReceiveErrorTimeout::Timeout) => Ok(None),
            Err(_) => Err(Closed),
        };
        self.depth.set(self.inner.len() as i64);
        if let Ok(Some(item)) = &v {
            self.release(Some(item));
        }
        v
    }

    /// Closes the channel from the receiving side, so blocked producers return `Closed`.
    pub fn close(&self) {
        let _ = self.inner.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A decoded image of `bytes` bytes.
    struct Image(Vec<u8>);

    impl Weigh for Image {
        fn weight(&self) -> u64 {
            self.0.len() as u64
        }
    }

    const MB: usize = 1 << 20;

    /// Polls `f` until true (a deadline against a hang, not a speed check).
    fn until(f: impl Fn() -> bool) {
        let t = std::time::Instant::now();
        while !f() {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "condition never held"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A queue of 64 items and 10 MB fed 4 MB images by a fast producer: the bytes queued
    /// never pass the budget (two images, not 64), every image arrives in order, and the budget
    /// is all free again once they are taken.
    #[test]
    fn a_queue_of_large_images_stays_under_its_byte_budget() {
        let metrics = Metrics::new();
        let (tx, rx) = bounded_bytes::<Image>("test-bytes", 64, 10 * MB as u64, &metrics);
        let budget = tx.budget().unwrap().clone();
        let producer = std::thread::spawn(move || {
            for i in 0..40u8 {
                tx.send(Image(vec![i; 4 * MB])).unwrap();
            }
        });
        // The producer runs ahead until the bytes stop it: 2 images of 4 MB, far below 64 items.
        until(|| budget.held() == 8 * MB as u64);
        assert_eq!(rx.inner.len(), 2, "bounded by bytes, not items");
        let mut seen = 0u8;
        while let Some(img) = rx.recv() {
            assert_eq!(img.0[0], seen);
            assert!(budget.held() <= budget.limit());
            seen += 1;
        }
        producer.join().unwrap();
        assert_eq!(seen, 40);
        assert!(budget.peak() <= budget.limit(), "peak {}", budget.peak());
        assert_eq!(budget.peak(), 8 * MB as u64);
        assert_eq!(budget.held(), 0);
    }

    /// An image larger than the whole budget waits for an empty queue, then passes alone
    /// (no deadlock); a producer waiting for bytes returns `Closed` when the consumers leave.
    #[test]
    fn an_oversized_image_passes_alone_and_a_waiting_producer_sees_the_consumers_go() {
        let metrics = Metrics::new();
        let (tx, rx) = bounded_bytes::<Image>("test-big", 8, 2 * MB as u64, &metrics);
        let budget = tx.budget().unwrap().clone();
        tx.send(Image(vec![1; MB])).unwrap();
        let big = {
            let tx = tx.clone();
            std::thread::spawn(move || tx.send(Image(vec![2; 5 * MB])))
        };
        // It waits while the 1 MB image is queued...
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(budget.held(), MB as u64);
        assert_eq!(rx.recv().unwrap().0.len(), MB);
        // ...and goes through alone once the queue is empty.
        big.join().unwrap().unwrap();
        assert_eq!(budget.held(), 5 * MB as u64);
        let blocked = std::thread::spawn(move || tx.send(Image(vec![3; MB])));
        std::thread::sleep(Duration::from_millis(200));
        assert!(!blocked.is_finished(), "waits for bytes");
        drop(rx);
        assert_eq!(blocked.join().unwrap(), Err(Closed));
    }

    /// Channels without a budget ignore bytes.
    #[test]
    fn plain_channels_have_no_byte_budget() {
        let metrics = Metrics::new();
        let (tx, rx) = bounded::<Image>("test-plain", 4, &metrics);
        assert!(tx.budget().is_none());
        for _ in 0..4 {
            tx.send(Image(vec![0; 4 * MB])).unwrap();
        }
        assert_eq!(rx.inner.len(), 4);
    }
}
