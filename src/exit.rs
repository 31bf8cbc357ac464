//! The binary's exit codes, so that automation (Slurm, Kubernetes, shell scripts) can tell a
//! finished run from one that has to be resumed:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | finished: the plan, or `--max-steps`, is done |
//! | 1 | error (including an actor's panic; the last good state is checkpointed when it can be) |
//! | 2 | invalid configuration (nothing ran) |
//! | 3 | interrupted by SIGINT, SIGTERM or SIGHUP after a whole step; a checkpoint was written |
//! | 4 | the data stream ended before the plan's steps (e.g. skipped samples); a checkpoint was written |
//! | 130 | a second signal aborted the run without a checkpoint |

/// An error (anything else than the codes below).
pub const ERROR: u8 = 1;
/// A configuration that failed validation.
pub const CONFIG: u8 = 2;
/// Stopped by a signal, checkpoint written.
pub const INTERRUPTED: u8 = 3;
/// The stream ended before the plan, checkpoint written.
pub const STREAM_ENDED: u8 = 4;
/// A second signal: exit at once.
pub const ABORTED: u8 = 130;

/// A run that stopped early but cleanly (its checkpoint is written); `main` maps it to its code.
#[derive(Debug, thiserror::Error)]
pub enum EarlyEnd {
    #[error("interrupted by {signal} after step {step}; the checkpoint is written, continue with --resume")]
    Interrupted { signal: &'static str, step: u64 },
    #[error("the data stream ended after step {step}, before the plan's {planned} steps; the checkpoint is written")]
    StreamEnded { step: u64, planned: u64 },
}

impl EarlyEnd {
    pub fn code(&self) -> u8 {
        match self {
            EarlyEnd::Interrupted { .. } => INTERRUPTED,
            EarlyEnd::StreamEnded { .. } => STREAM_ENDED,
        }
    }
}
