//! An ordered, named registry of a network's tensors.
//!
//! We keep our own registry rather than `tch::nn::VarStore` because the engine needs a stable
//! order (optimizer state is keyed by it), PyTorch names for export, and an explicit split
//! between learnable parameters and buffers (BatchNorm statistics are checkpointed but neither
//! optimised nor EMA-averaged, exactly as `nn.Module.parameters()` vs `buffers()`).

use tch::{Device, Kind, Tensor};

/// Whether a tensor is learned or only carried along (running statistics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A learnable parameter (`nn.Parameter`); `trainable = false` mirrors `requires_grad=False`.
    Param { trainable: bool },
    /// A buffer (`register_buffer`): saved and loaded, never optimised.
    Buffer,
}

/// One named tensor. Layers hold shallow clones of `tensor`, so in-place updates here are seen
/// by the forward pass and gradients accumulate on the same autograd leaf.
pub struct Entry {
    pub name: String,
    pub tensor: Tensor,
    pub role: Role,
}

/// Where a network's BatchNorm layers find the process group to synchronise their batch
/// statistics over (SyncBatchNorm). Empty until `Engine::attach_dist` fills it, so a network is
/// built the same way with or without ranks, and one alone never synchronises.
pub type SyncSlot = std::sync::Arc<std::sync::OnceLock<std::sync::Arc<crate::dist::Dist>>>;

/// Registration-ordered tensors of one network.
pub struct Params {
    device: Device,
    entries: Vec<Entry>,
    sync: SyncSlot,
}

impl Params {
    pub fn new(device: Device) -> Self {
        Params {
            device,
            entries: Vec::new(),
            sync: SyncSlot::default(),
        }
    }

    /// The slot this network's BatchNorm layers read (shared with every layer built from it).
    pub fn sync_slot(&self) -> SyncSlot {
        self.sync.clone()
    }

    /// Makes every BatchNorm of this network a SyncBatchNorm over `dist`'s ranks (in training
    /// mode). A second call is ignored: a network joins one process group.
    pub fn sync_batchnorm(&self, dist: std::sync::Arc<crate::dist::Dist>) {
        let _ = self.sync.set(dist);
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// Registers a learnable tensor (moved to the device, made an autograd leaf when trainable).
    pub fn param(&mut self, name: &str, init: Tensor, trainable: bool) -> Tensor {
        let t = init
            .to_device(self.device)
            .to_kind(Kind::Float)
            .detach()
            .set_requires_grad(trainable);
        self.entries.push(Entry {
            name: name.to_string(),
            tensor: t.shallow_clone(),
            role: Role::Param { trainable },
        });
        t
    }

    /// Registers a buffer (no gradient).
    pub fn buffer(&mut self, name: &str, init: Tensor) -> Tensor {
        let t = init.to_device(self.device).detach();
        self.entries.push(Entry {
            name: name.to_string(),
            tensor: t.shallow_clone(),
            role: Role::Buffer,
        });
        t
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Parameters that the optimiser updates, in registration order.
    pub fn trainable(&self) -> impl Iterator<Item = &Entry> {
        self.entries
            .iter()
            .filter(|e| e.role == Role::Param { trainable: true })
    }

    /// All parameters (trainable or not), as `nn.Module.parameters()` would list them.
    pub fn parameters(&self) -> impl Iterator<Item = &Entry> {
        self.entries
            .iter()
            .filter(|e| matches!(e.role, Role::Param { .. }))
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.entries
            .iter()
            .find(|e| e.name == name)
            .map(|e| &e.tensor)
    }

    /// Copies every tensor's value from `other` (same structure), without touching autograd.
    pub fn copy_from(&mut self, other: &Params) -> Result<(), String> {
        if self.entries.len() != other.entries.len() {
            return Err(format!(
                "{} tensors vs {}",
                self.entries.len(),
                other.entries.len()
            ));
        }
        tch::no_grad(|| {
            for (dst, src) in self.entries.iter_mut().zip(other.entries.iter()) {
                if dst.name != src.name || dst.tensor.size() != src.tensor.size() {
                    return Err(format!(
                        "{} {:?} vs {} {:?}",
                        dst.name,
                        dst.tensor.size(),
                        src.name,
                        src.tensor.size()
                    ));
                }
                dst.tensor.copy_(&src.tensor);
            }
            Ok(())
        })
    }

    /// `(name, deep copy)` of every tensor, for checkpoints.
    pub fn snapshot(&self, prefix: &str) -> Vec<(String, Tensor)> {
        self.entries
            .iter()
            .map(|e| (format!("{prefix}{}", e.name), e.tensor.detach().copy()))
            .collect()
    }

    /// Loads tensors named `prefix + name` from `tensors`; every entry must be present.
    pub fn load(
        &mut self,
        prefix: &str,
        tensors: &std::collections::HashMap<String, Tensor>,
    ) -> Result<(), String> {
        tch::no_grad(|| {
            for e in self.entries.iter_mut() {
                let key = format!("{prefix}{}", e.name);
                let src = tensors
                    .get(&key)
                    .ok_or_else(|| format!("missing tensor {key}"))?;
                if src.size() != e.tensor.size() {
                    return Err(format!(
                        "{key}: shape {:?}, expected {:?}",
                        src.size(),
                        e.tensor.size()
                    ));
                }
                e.tensor
                    .copy_(&src.to_device(self.device).to_kind(e.tensor.kind()));
            }
            Ok(())
        })
    }

    /// Drops accumulated gradients (sets them to zero, keeping the buffers).
    pub fn zero_grad(&mut self) {
        for e in self.entries.iter_mut() {
            if e.role == (Role::Param { trainable: true }) {
                e.tensor.zero_grad();
            }
        }
    }
}

impl Params {
    /// Stops gradient tracking on every tensor (the teacher).
    pub fn freeze(&mut self) {
        for e in self.entries.iter_mut() {
            let _ = e.tensor.set_requires_grad(false);
        }
    }
}
