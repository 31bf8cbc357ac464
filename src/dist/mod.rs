//! Data-parallel training over libtorch's own c10d (the engine under PyTorch DDP), behind a
//! safe API: the trainer calls `Dist`, never the C++ shim.
//!
//! `Dist::from_env` reads torchrun's (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)
//! or Slurm's (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, the first host of the node list)
//! environment; with neither, the world has one rank and every collective is a no-op, so a
//! single-process run does exactly what it did before.
//!
//! Failure: every collective carries the `[dist]` timeout. Each rank also publishes, in the
//! rendezvous store, a heartbeat (a counter bumped every second by a small thread) and the step
//! it is working on. When a collective fails or times out, the rank reads both back and names
//! the peers that stopped beating (dead or stopped) or that are behind (hung), so the error
//! says which rank to look at instead of only "connection closed".

mod config;
pub mod env;
mod ffi;
mod group;
mod shard;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tch::{Device, Kind, Tensor};

pub use config::DistConfig;
pub use env::Launch;
pub use group::{built_with_nccl, Group, ReduceOp};
pub use shard::{Shard, Slot};

#[derive(Debug, thiserror::Error)]
pub enum DistError {
    #[error("distributed launch: {0}")]
    Env(String),
    #[error("joining the process group as rank {rank} of {world} ({launcher}, store {addr}:{port}): {msg}")]
    Init {
        rank: usize,
        world: usize,
        launcher: &'static str,
        addr: String,
        port: u16,
        msg: String,
    },
    #[error("{what} failed on rank {rank} at step {step}: {msg}{diagnosis}")]
    Collective {
        what: String,
        rank: usize,
        step: u64,
        msg: String,
        diagnosis: String,
    },
}

/// This process's place in the job and its process group (none when alone).
pub struct Dist {
    rank: usize,
    world: usize,
    local_rank: usize,
    timeout: Duration,
    inner: Option<Shared>,
    /// Nanoseconds spent inside collectives (the communication share of the step).
    comm_nanos: AtomicU64,
}

struct Shared {
    group: Arc<Group>,
    launch: Launch,
    step: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    heartbeat: Option<JoinHandle<()>>,
    /// Set after a failed collective: c10d's teardown would wait for the stuck work, so the
    /// group is leaked instead (the process is about to exit).
    poisoned: AtomicBool,
}

const BEAT_EVERY: Duration = Duration::from_secs(1);

impl Dist {
    /// One process, no group.
    pub fn single() -> Dist {
        Dist {
            rank: 0,
            world: 1,
            local_rank: 0,
            timeout: DistConfig::default().timeout(),
            inner: None,
            comm_nanos: AtomicU64::new(0),
        }
    }

    /// Joins the job the environment describes (or returns `single()` when it describes none).
    /// `cuda` asks for NCCL on CUDA device LOCAL_RANK besides gloo.
    pub fn from_env(cfg: &DistConfig, cuda: bool) -> Result<Dist, DistError> {
        let vars = std::env::vars().collect();
        // A launcher's world of 1 still joins (a one-rank group exercises the same path).
        match env::launch_from(&vars).map_err(DistError::Env)? {
            None => Ok(Dist::single()),
            Some(l) => Dist::join(l, cfg, cuda),
        }
    }

    /// Joins the group of `launch` (blocks until every rank has arrived, or the timeout).
    pub fn join(launch: Launch, cfg: &DistConfig, cuda: bool) -> Result<Dist, DistError> {
        let timeout = cfg.timeout();
        let init_err = |msg: String| DistError::Init {
            rank: launch.rank,
            world: launch.world,
            launcher: launch.launcher,
            addr: launch.master_addr.clone(),
            port: launch.master_port,
            msg,
        };
        if cuda && !built_with_nccl() {
            return Err(init_err(
                "training on CUDA needs NCCL, and this binary was built without it (build.rs \
                 found no complete CUDA toolkit headers: set DINO_STREAM_CUDA_INCLUDE and rebuild)"
                    .into(),
            ));
        }
        let group = Group::new(
            &launch.master_addr,
            launch.master_port,
            launch.rank,
            launch.world,
            launch.agent_store,
            cuda.then_some(launch.local_rank),
            timeout,
        )
        .map_err(init_err)?;
        let group = Arc::new(group);
        let step = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let heartbeat = {
            let (group, stop, rank) = (group.clone(), stop.clone(), launch.rank);
            std::thread::Builder::new()
                .name("dist-heartbeat".into())
                .spawn(move || {
                    let mut beat = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        beat += 1;
                        // A failed write means the store is gone; the next collective reports it.
                        let _ = group.store_set(&format!("beat/{rank}"), &beat.to_le_bytes());
                        std::thread::park_timeout(BEAT_EVERY);
                    }
                })
                .ok()
        };
        tracing::info!(
            rank = launch.rank,
            world = launch.world,
            local_rank = launch.local_rank,
            launcher = launch.launcher,
            store = format!("{}:{}", launch.master_addr, launch.master_port),
            nccl = cuda,
            "joined the process group"
        );
        Ok(Dist {
            rank: launch.rank,
            world: launch.world,
            local_rank: launch.local_rank,
            timeout,
            inner: Some(Shared {
                group,
                launch,
                step,
                stop,
                heartbeat,
                poisoned: AtomicBool::new(false),
            }),
            comm_nanos: AtomicU64::new(0),
        })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }
    pub fn world(&self) -> usize {
        self.world
    }
    pub fn local_rank(&self) -> usize {
        self.local_rank
    }
    /// Rank 0: the one writer of checkpoints and logs.
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }
    pub fn is_distributed(&self) -> bool {
        self.inner.is_some()
    }

    /// Seconds spent in collectives so far.
    pub fn comm_seconds(&self) -> f64 {
        self.comm_nanos.load(Ordering::Relaxed) as f64 * 1e-9
    }

    /// Publishes the step this rank is working on (read back to diagnose failures).
    pub fn set_step(&self, step: u64) {
        if let Some(s) = &self.inner {
            s.step.store(step, Ordering::Relaxed);
            let _ = s
                .group
                .store_set(&format!("step/{}", self.rank), &step.to_le_bytes());
        }
    }

    fn run(
        &self,
        what: &str,
        f: impl FnOnce(&Group) -> Result<(), String>,
    ) -> Result<(), DistError> {
        let Some(s) = &self.inner else { return Ok(()) };
        let t = std::time::Instant::now();
        let result = f(&s.group);
        self.comm_nanos
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        result.map_err(|msg| {
            s.poisoned.store(true, Ordering::SeqCst);
            let step = s.step.load(Ordering::Relaxed);
            DistError::Collective {
                what: what.to_owned(),
                rank: self.rank,
                step,
                msg: first_line(&msg),
                diagnosis: self.diagnose(s, step),
            }
        })
    }

    /// Every rank's `t` stacked on a new leading axis (`[world, ...]`), differentiably: the
    /// gradient of rank r's slice flows back to rank r, summed over the ranks that used it. This
    /// is what SyncBatchNorm needs (see `model::layers::BatchNorm`). Alone: `t` itself.
    pub fn all_gather_autograd(&self, t: &Tensor, what: &str) -> Result<Tensor, DistError> {
        if self.inner.is_none() {
            return Ok(t.unsqueeze(0));
        }
        let mut gathered = None;
        self.run(&format!("all_gather of {what}"), |g| {
            gathered = Some(g.all_gather_autograd(&t.contiguous())?);
            Ok(())
        })?;
        let mut shape = vec![self.world as i64];
        shape.extend(t.size());
        Ok(gathered.expect("set on success").reshape(shape.as_slice()))
    }

    /// In place over ranks (no-op alone). `what` names the tensor in errors.
    pub fn all_reduce(&self, t: &Tensor, op: ReduceOp, what: &str) -> Result<(), DistError> {
        let timeout = self.timeout;
        self.run(&format!("all_reduce of {what}"), |g| {
            g.all_reduce(t, op, timeout)
        })
    }

    pub fn broadcast(&self, t: &Tensor, root: usize, what: &str) -> Result<(), DistError> {
        let timeout = self.timeout;
        self.run(&format!("broadcast of {what}"), |g| {
            g.broadcast(t, root, timeout)
        })
    }

    /// `[world, ...t.shape]`: every rank's `t`, by rank.
    pub fn all_gather(&self, t: &Tensor, what: &str) -> Result<Tensor, DistError> {
        let mut shape = vec![self.world as i64];
        shape.extend(t.size());
        if self.inner.is_none() {
            return Ok(t.unsqueeze(0).copy());
        }
        let out = Tensor::empty(shape.as_slice(), (t.kind(), t.device()));
        let timeout = self.timeout;
        self.run(&format!("all_gather of {what}"), |g| {
            g.all_gather(&out, t, timeout)
        })?;
        Ok(out)
    }

    pub fn barrier(&self, what: &str) -> Result<(), DistError> {
        let timeout = self.timeout;
        self.run(&format!("barrier ({what})"), |g| g.barrier(timeout))
    }

    /// Names the peers that stopped beating or fell behind `step`, reading the store.
    fn diagnose(&self, s: &Shared, step: u64) -> String {
        let short = Duration::from_secs(2);
        let read = |key: String| -> Result<Option<u64>, String> {
            match s.group.store_get(&key, short) {
                Ok(v) if v.len() == 8 => Ok(Some(u64::from_le_bytes(v.try_into().unwrap()))),
                Ok(_) => Ok(None),
                Err(e) if e.contains("imeout") || e.contains("imed out") => Ok(None),
                Err(e) => Err(e),
            }
        };
        let peers: Vec<usize> = (0..self.world).filter(|&r| r != self.rank).collect();
        let beats = |peers: &[usize]| -> Result<Vec<Option<u64>>, String> {
            peers.iter().map(|r| read(format!("beat/{r}"))).collect()
        };
        let store = if s.launch.agent_store {
            format!(
                "torchrun's store at {}:{}",
                s.launch.master_addr, s.launch.master_port
            )
        } else {
            format!(
                "the store that rank 0 hosts at {}:{}",
                s.launch.master_addr, s.launch.master_port
            )
        };
        let first = match beats(&peers) {
            Ok(b) => b,
            Err(e) => {
                return if s.launch.agent_store {
                    format!(
                        "; {store} does not answer ({}): the launcher is gone",
                        first_line(&e)
                    )
                } else {
                    format!(
                        "; {store} does not answer ({}): rank 0 is dead",
                        first_line(&e)
                    )
                };
            }
        };
        std::thread::sleep(BEAT_EVERY * 5 / 2);
        let second = beats(&peers).unwrap_or_else(|_| vec![None; peers.len()]);
        let mut dead = Vec::new();
        let mut behind = Vec::new();
        for (i, &r) in peers.iter().enumerate() {
            let alive = matches!((first[i], second[i]), (Some(a), Some(b)) if b > a);
            if !alive {
                dead.push(r);
            } else if let Ok(Some(theirs)) = read(format!("step/{r}")) {
                if theirs < step {
                    behind.push(format!("rank {r} (at step {theirs})"));
                }
            }
        }
        let mut out = String::new();
        if !dead.is_empty() {
            let names: Vec<String> = dead.iter().map(|r| format!("rank {r}")).collect();
            out += &format!("; {} stopped beating (dead or stopped)", names.join(", "));
        }
        if !behind.is_empty() {
            out += &format!("; {} behind this rank (hung?)", behind.join(", "));
        }
        if out.is_empty() {
            out = "; every peer is alive and at this step".into();
        }
        out
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_owned()
}

impl Drop for Dist {
    fn drop(&mut self) {
        if let Some(s) = self.inner.take() {
            s.stop.store(true, Ordering::Relaxed);
            if let Some(h) = s.heartbeat {
                h.thread().unpark();
                let _ = h.join();
            }
            if s.poisoned.load(Ordering::SeqCst) {
                std::mem::forget(s.group);
            }
        }
    }
}

/// Packs tensors into flat buffers of at most `cap_bytes` each (a tensor larger than the cap
/// gets a buffer of its own), all-reduces each buffer once, and copies the results back:
/// DDP's bucketing, a few large calls instead of one per tensor.
pub fn all_reduce_bucketed(
    dist: &Dist,
    tensors: &[Tensor],
    op: ReduceOp,
    cap_bytes: usize,
    what: &str,
) -> Result<usize, DistError> {
    if !dist.is_distributed() || tensors.is_empty() {
        return Ok(0);
    }
    let mut buckets: Vec<Vec<&Tensor>> = vec![Vec::new()];
    let mut bytes = 0usize;
    for t in tensors {
        let b = t.numel() * t.kind().elt_size_in_bytes();
        let last = buckets.last_mut().expect("one bucket");
        if !last.is_empty() && (bytes + b > cap_bytes || last[0].kind() != t.kind()) {
            buckets.push(Vec::new());
            bytes = 0;
        }
        buckets.last_mut().expect("one bucket").push(t);
        bytes += b;
    }
    tch::no_grad(|| -> Result<(), DistError> {
        for (i, bucket) in buckets.iter().enumerate() {
            let flat = Tensor::cat(
                &bucket.iter().map(|t| t.reshape([-1])).collect::<Vec<_>>(),
                0,
            );
            dist.all_reduce(
                &flat,
                op,
                &format!("{what} (bucket {i} of {})", buckets.len()),
            )?;
            let mut offset = 0i64;
            for t in bucket {
                let n = t.numel() as i64;
                let mut dst = (*t).shallow_clone();
                dst.copy_(&flat.narrow(0, offset, n).view_as(t));
                offset += n;
            }
        }
        Ok(())
    })?;
    Ok(buckets.len())
}

/// A checksum of tensors that differs when any value differs in practice: Σ x and Σ x·i over
/// the flattened values in float64.
pub fn checksum(tensors: impl Iterator<Item = Tensor>) -> Tensor {
    tch::no_grad(|| {
        let mut out = Tensor::zeros([2], (Kind::Double, Device::Cpu));
        for t in tensors {
            let x = t.to_kind(Kind::Double).reshape([-1]);
            let idx = Tensor::arange(x.numel() as i64, (Kind::Double, x.device())) / 4096.0 + 1.0;
            let s = Tensor::stack(&[x.sum(Kind::Double), (&x * idx).sum(Kind::Double)], 0);
            out += s.to_device(Device::Cpu);
        }
        out
    })
}

#[cfg(test)]
mod tests;
