//! SIGINT, SIGTERM and SIGHUP all mean "stop after this step and checkpoint": Ctrl-C, Slurm and
//! Kubernetes preemption, `timeout`, a closed ssh session. A second signal exits at once with
//! [`crate::exit::ABORTED`] and no checkpoint.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::signal::unix::{signal, SignalKind};

/// Installs the handlers on `runtime`; the returned cell holds the name of the first signal.
pub fn stop_on_signals(
    runtime: &tokio::runtime::Runtime,
    stop: Arc<AtomicBool>,
) -> std::io::Result<Arc<OnceLock<&'static str>>> {
    let received = Arc::new(OnceLock::new());
    let _guard = runtime.enter();
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let cell = received.clone();
    runtime.spawn(async move {
        loop {
            let name = tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
                _ = hup.recv() => "SIGHUP",
            };
            if cell.set(name).is_err() {
                eprintln!("{name} again: aborting without a checkpoint");
                std::process::exit(crate::exit::ABORTED as i32);
            }
            tracing::warn!(
                "{name}: finishing the current step and writing a checkpoint (send it again to abort)"
            );
            stop.store(true, Ordering::SeqCst);
        }
    });
    Ok(received)
}
