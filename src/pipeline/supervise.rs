//! Actor supervision: a panic in any pipeline thread stops the whole run instead of ending the
//! stream early (which would look like a finished run) or leaving the batcher waiting for a
//! sequence number that will never come.
//!
//! Each actor's body runs under `catch_unwind`; a panic records the actor's name and message
//! (the first one wins) and raises the run's stop flag, so the source stops, the channels drain
//! and close, and the trainer finishes its step and writes a checkpoint of its last good state.
//! The caller then reports the failure and exits non-zero.

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The message of a panic payload (`panic!("...")` gives a `&str` or a `String`).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_string()
    }
}

/// Watches the actors of one pipeline.
#[derive(Clone)]
pub struct Supervisor {
    stop: Arc<AtomicBool>,
    failure: Arc<Mutex<Option<String>>>,
}

impl Supervisor {
    pub fn new(stop: Arc<AtomicBool>) -> Self {
        Supervisor {
            stop,
            failure: Arc::new(Mutex::new(None)),
        }
    }

    /// Runs an actor's body; a panic in it is recorded under `actor` and stops the run.
    pub fn guard(&self, actor: &str, body: impl FnOnce()) {
        if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
            let message = format!("actor {actor} panicked: {}", panic_message(&*panic));
            tracing::error!("{message}; stopping the run");
            let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
            failure.get_or_insert(message);
            self.stop.store(true, Ordering::SeqCst);
        }
    }

    /// The first actor failure, if any.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_recorded_with_the_actor_name_and_raises_stop() {
        let stop = Arc::new(AtomicBool::new(false));
        let sup = Supervisor::new(stop.clone());
        sup.guard("source", || {});
        assert!(sup.failure().is_none() && !stop.load(Ordering::SeqCst));
        sup.guard("augment-1", || panic!("bad crop {}", 7));
        sup.guard("batcher", || panic!("second"));
        assert_eq!(
            sup.failure().as_deref(),
            Some("actor augment-1 panicked: bad crop 7")
        );
        assert!(stop.load(Ordering::SeqCst));
    }
}
