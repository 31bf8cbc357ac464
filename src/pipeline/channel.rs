//! Bounded channels whose depth is a metric. Every link of the dataflow is one of these: a full
//! channel blocks its producer (backpressure), and dropping every sender ends the consumer.

use std::sync::Arc;

use prometheus::IntGauge;

use crate::metrics::Metrics;

/// Sending half; cloneable for a pool of producers.
pub struct Tx<T> {
    inner: kanal::Sender<T>,
    depth: IntGauge,
}

/// Receiving half; cloneable for a pool of consumers.
pub struct Rx<T> {
    inner: kanal::Receiver<T>,
    depth: IntGauge,
}

impl<T> Clone for Tx<T> {
    fn clone(&self) -> Self {
        Tx {
            inner: self.inner.clone(),
            depth: self.depth.clone(),
        }
    }
}

impl<T> Clone for Rx<T> {
    fn clone(&self) -> Self {
        Rx {
            inner: self.inner.clone(),
            depth: self.depth.clone(),
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
        },
        Rx { inner: rx, depth },
    )
}

impl<T> Tx<T> {
    /// Blocks while the channel is full.
    pub fn send(&self, value: T) -> Result<(), Closed> {
        self.inner.send(value).map_err(|_| Closed)?;
        self.depth.set(self.inner.len() as i64);
        Ok(())
    }
}

impl<T> Rx<T> {
    /// Blocks until an item arrives; `None` once every sender is gone and the queue is empty.
    pub fn recv(&self) -> Option<T> {
        let v = self.inner.recv().ok();
        self.depth.set(self.inner.len() as i64);
        v
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
        v
    }

    /// Closes the channel from the receiving side, so blocked producers return `Closed`.
    pub fn close(&self) {
        let _ = self.inner.close();
    }
}
