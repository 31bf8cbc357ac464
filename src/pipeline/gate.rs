//! The reorder window: the source may run at most `window` samples ahead of the batcher, so the
//! batcher's reorder buffer stays bounded however unevenly the workers finish.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

pub struct ReorderGate {
    next: Mutex<u64>,
    moved: Condvar,
    window: u64,
}

impl ReorderGate {
    pub fn new(window: u64) -> Arc<Self> {
        Arc::new(ReorderGate {
            next: Mutex::new(0),
            moved: Condvar::new(),
            window: window.max(1),
        })
    }

    /// Blocks the source until sample `seq` fits in the window; false when `stop` was raised.
    pub fn admit(&self, seq: u64, stop: &AtomicBool) -> bool {
        let mut next = self.next.lock().expect("gate lock");
        while seq >= *next + self.window {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            next = self
                .moved
                .wait_timeout(next, Duration::from_millis(100))
                .expect("gate lock")
                .0;
        }
        true
    }

    /// The batcher has consumed every sample before `next`.
    pub fn advance(&self, next: u64) {
        *self.next.lock().expect("gate lock") = next;
        self.moved.notify_all();
    }
}
