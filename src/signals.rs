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
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "{name} again: aborting without a checkpoint"
                );
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

/// Ignores SIGPIPE for the rest of a training run. The binary restores SIGPIPE's default so
/// that `dino-stream config | head` ends quietly; but a run whose stderr is a `| tee` that died
/// with the ssh session would then be killed by its next log line, before the checkpoint the
/// SIGHUP asked for. With SIGPIPE ignored, a write to a gone pipe is an EPIPE error that logging
/// drops and the summary ([`crate::run`]) tolerates.
pub fn survive_lost_output() {
    // SAFETY: setting a signal's disposition to SIG_IGN has no memory-safety preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}
