//! PyTorch `.pth` files (`torch.save`'s zip format) read without Python.
//!
//! A `.pth` is a zip archive (entries stored, not compressed) holding `<name>/data.pkl`, a
//! pickle of the saved object in which every tensor is a call to
//! `torch._utils._rebuild_tensor_v2(storage, offset, shape, stride, ...)`, its storage a
//! persistent id `("storage", torch.FloatStorage, key, location, numel)` naming the raw
//! little-endian bytes in `<name>/data/<key>`. The pickle is parsed and evaluated by the
//! `repugnant-pickle` crate (it never runs Python code: globals stay names); this module walks
//! the resulting tree, so nested objects such as DINO's full checkpoints
//! (`{"student": {...}, "teacher": {...}, "optimizer": ..., "args": Namespace, ...}`) come out
//! as flat dotted names (`teacher.backbone.blocks.0.attn.qkv.weight`). Values that are not
//! tensors (numbers, argparse namespaces, optimiser hyper-parameters) are skipped.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use repugnant_pickle::ops::PickleOp;
use repugnant_pickle::{SequenceType, Value};
use tch::{Kind, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum PthError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a PyTorch zip archive ({message}); files saved by torch < 1.6 (legacy format) must be re-saved with a newer torch")]
    Zip { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Pickle { path: PathBuf, message: String },
}

/// A tensor found in the pickle, before its bytes are read.
struct TensorRef {
    name: String,
    kind: Kind,
    storage: String,
    storage_numel: i64,
    offset: i64,
    shape: Vec<i64>,
    stride: Vec<i64>,
}

/// Reads every tensor of a `.pth` file as `(dotted name, CPU tensor)`, in file order.
/// Tensors keep their dtype (float16/bfloat16/float64 included) and come out contiguous.
pub fn read(path: &Path) -> Result<Vec<(String, Tensor)>, PthError> {
    let io = |source| PthError::Io {
        path: path.to_path_buf(),
        source,
    };
    let zip_err = |e: zip::result::ZipError| PthError::Zip {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let pickle_err = |message: String| PthError::Pickle {
        path: path.to_path_buf(),
        message,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut zip = zip::ZipArchive::new(file).map_err(zip_err)?;
    let pkl_name = zip
        .file_names()
        .find(|n| n.ends_with("/data.pkl") || *n == "data.pkl")
        .map(str::to_owned)
        .ok_or_else(|| pickle_err("no data.pkl in the archive".into()))?;
    let prefix = pkl_name.strip_suffix("data.pkl").unwrap_or("").to_string();
    let mut pkl = Vec::new();
    zip.by_name(&pkl_name)
        .map_err(zip_err)?
        .read_to_end(&mut pkl)
        .map_err(io)?;
    let (_, ops) = repugnant_pickle::parse_ops::<nom::error::Error<&[u8]>>(&pkl).map_err(|e| {
        let at = match &e {
            nom::Err::Error(e) | nom::Err::Failure(e) => pkl.len() - e.input.len(),
            nom::Err::Incomplete(_) => pkl.len(),
        };
        pickle_err(format!(
            "cannot parse data.pkl at byte {at} of {}",
            pkl.len()
        ))
    })?;
    let (values, _) = repugnant_pickle::evaluate(&ops, true)
        .map_err(|e| pickle_err(format!("cannot evaluate data.pkl: {e}")))?;
    let root = values
        .first()
        .ok_or_else(|| pickle_err("data.pkl is empty".into()))?;
    let mut refs = Vec::new();
    walk(root, "", &mut refs).map_err(pickle_err)?;

    let mut storages: HashMap<String, Tensor> = HashMap::new();
    let mut out = Vec::with_capacity(refs.len());
    for r in refs {
        if !storages.contains_key(&r.storage) {
            let entry = format!("{prefix}data/{}", r.storage);
            let mut bytes = Vec::new();
            zip.by_name(&entry)
                .map_err(zip_err)?
                .read_to_end(&mut bytes)
                .map_err(io)?;
            let elem = r.kind.elt_size_in_bytes() as i64;
            if (bytes.len() as i64) < r.storage_numel * elem {
                return Err(pickle_err(format!(
                    "{entry}: {} bytes, the pickle says {} elements of {elem} bytes",
                    bytes.len(),
                    r.storage_numel
                )));
            }
            let n = bytes.len() as i64 / elem;
            storages.insert(
                r.storage.clone(),
                Tensor::from_data_size(&bytes[..(n * elem) as usize], &[n], r.kind),
            );
        }
        let storage = &storages[&r.storage];
        let needed = r.offset
            + r.shape
                .iter()
                .zip(&r.stride)
                .map(|(s, st)| (s - 1).max(0) * st)
                .sum::<i64>()
            + 1;
        if r.shape.iter().all(|&s| s > 0) && needed > storage.size()[0] {
            return Err(pickle_err(format!(
                "{}: shape {:?} stride {:?} offset {} runs past its storage of {} elements",
                r.name,
                r.shape,
                r.stride,
                r.offset,
                storage.size()[0]
            )));
        }
        let t = storage
            .as_strided(r.shape.as_slice(), r.stride.as_slice(), Some(r.offset))
            .contiguous();
        out.push((r.name, t));
    }
    Ok(out)
}

fn global_name<'a>(v: &'a Value<'_>) -> Option<(&'a str, &'a str)> {
    match v {
        Value::Raw(op) => match op.as_ref() {
            PickleOp::GLOBAL(m, n) => Some((*m, *n)),
            _ => None,
        },
        Value::Global(inner, args) if args.is_empty() => match inner.as_ref() {
            // STACK_GLOBAL (protocol 4): a tuple of (name, module) strings.
            Value::Seq(SequenceType::Tuple, mn) => match mn.as_slice() {
                [Value::String(n), Value::String(m)] => Some((*m, *n)),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Collects the tensors under `v`, named by their path of dictionary keys.
fn walk(v: &Value, prefix: &str, out: &mut Vec<TensorRef>) -> Result<(), String> {
    match v {
        Value::Global(target, args) => match global_name(target) {
            Some(("torch._utils", "_rebuild_tensor_v2")) => {
                out.push(tensor_ref(args, prefix)?);
            }
            Some(("torch._utils", "_rebuild_parameter")) => {
                // (tensor, requires_grad, hooks): an nn.Parameter around a tensor.
                if let Some(Value::Seq(SequenceType::Tuple, a)) = args.first() {
                    if let Some(t) = a.first() {
                        walk(t, prefix, out)?;
                    }
                }
            }
            _ => {
                // A container built by a call (collections.OrderedDict): its items follow.
                for a in args {
                    entries(a, prefix, out)?;
                }
            }
        },
        Value::Build(target, _state) => walk(target, prefix, out)?,
        Value::Seq(SequenceType::Dict, items) => {
            for item in items {
                entries(item, prefix, out)?;
            }
        }
        Value::Seq(SequenceType::List, items) => {
            for (i, item) in items.iter().enumerate() {
                walk(item, &join(prefix, &i.to_string()), out)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// One dictionary member as repugnant-pickle leaves it: a `(key, value)` tuple, or a tuple of
/// such pairs (one SETITEMS batch).
fn entries(v: &Value, prefix: &str, out: &mut Vec<TensorRef>) -> Result<(), String> {
    let Value::Seq(SequenceType::Tuple, items) = v else {
        return Ok(());
    };
    match items.as_slice() {
        [Value::String(k), value] => walk(value, &join(prefix, k), out),
        [Value::Int(k), value] => walk(value, &join(prefix, &k.to_string()), out),
        _ => {
            for item in items {
                entries(item, prefix, out)?;
            }
            Ok(())
        }
    }
}

fn ints(v: &Value, what: &str, name: &str) -> Result<Vec<i64>, String> {
    match v {
        Value::Seq(SequenceType::Tuple, items) => items
            .iter()
            .map(|x| match x {
                Value::Int(n) => Ok(*n),
                other => Err(format!("{name}: {what} holds {other:?}")),
            })
            .collect(),
        other => Err(format!("{name}: {what} is {other:?}")),
    }
}

fn tensor_ref(args: &[Value], name: &str) -> Result<TensorRef, String> {
    let Some(Value::Seq(SequenceType::Tuple, a)) = args.first() else {
        return Err(format!("{name}: unexpected _rebuild_tensor_v2 arguments"));
    };
    let (pid, offset, shape, stride) = match a.as_slice() {
        [Value::PersId(pid), Value::Int(offset), shape, stride, ..] => {
            (pid, *offset, shape, stride)
        }
        _ => return Err(format!("{name}: unexpected _rebuild_tensor_v2 arguments")),
    };
    let Value::Seq(SequenceType::Tuple, p) = pid.as_ref() else {
        return Err(format!("{name}: unexpected storage id {pid:?}"));
    };
    let (stype, key, numel) = match p.as_slice() {
        [Value::String("storage"), stype, Value::String(key), _location, Value::Int(numel)] => {
            (stype, *key, *numel)
        }
        _ => return Err(format!("{name}: unexpected storage id {p:?}")),
    };
    let storage_type = global_name(stype)
        .map(|(_, n)| n)
        .ok_or_else(|| format!("{name}: unexpected storage type {stype:?}"))?;
    let kind = match storage_type {
        "FloatStorage" => Kind::Float,
        "DoubleStorage" => Kind::Double,
        "HalfStorage" => Kind::Half,
        "BFloat16Storage" => Kind::BFloat16,
        "LongStorage" => Kind::Int64,
        "IntStorage" => Kind::Int,
        "ShortStorage" => Kind::Int16,
        "CharStorage" => Kind::Int8,
        "ByteStorage" => Kind::Uint8,
        "BoolStorage" => Kind::Bool,
        other => return Err(format!("{name}: unsupported storage type {other}")),
    };
    let shape = ints(shape, "shape", name)?;
    let stride = ints(stride, "stride", name)?;
    if shape.len() != stride.len() {
        return Err(format!(
            "{name}: shape {shape:?} and stride {stride:?} differ in rank"
        ));
    }
    Ok(TensorRef {
        name: name.to_string(),
        kind,
        storage: key.to_string(),
        storage_numel: numel,
        offset,
        shape,
        stride,
    })
}
