//! Two ranks as two threads of this process, gloo over 127.0.0.1: the shim's collectives
//! against values computed by hand.

use super::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn launch(rank: usize, world: usize, port: u16) -> Launch {
    Launch {
        rank,
        world,
        local_rank: rank,
        master_addr: "127.0.0.1".into(),
        master_port: port,
        agent_store: false,
        launcher: "test",
    }
}

fn cfg(timeout_seconds: f64) -> DistConfig {
    DistConfig {
        timeout_seconds,
        ..DistConfig::default()
    }
}

/// Runs `f(dist)` on `world` ranks, one thread each, and returns their results by rank.
fn on_ranks<T: Send + 'static>(
    world: usize,
    timeout: f64,
    f: impl Fn(Dist) -> T + Send + Sync + 'static,
) -> Vec<T> {
    // Two process groups in one process race in libtorch's flight recorder (see
    // .cargo/config.toml, which turns it off for everything cargo runs).
    assert_eq!(
        std::env::var("TORCH_FR_BUFFER_SIZE").as_deref(),
        Ok("0"),
        "run these tests through cargo, or with TORCH_FR_BUFFER_SIZE=0"
    );
    let port = free_port();
    let f = Arc::new(f);
    let handles: Vec<_> = (0..world)
        .map(|r| {
            let f = f.clone();
            std::thread::spawn(move || {
                f(Dist::join(launch(r, world, port), &cfg(timeout), false).unwrap())
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn values(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.reshape([-1]).to_kind(Kind::Float)).unwrap()
}

#[test]
fn collectives_match_hand_computed_values() {
    let out = on_ranks(2, 30.0, |d| {
        let r = d.rank() as f32;
        let sum = Tensor::from_slice(&[1.0f32 + r, 10.0 * r]);
        d.all_reduce(&sum, ReduceOp::Sum, "sum").unwrap();
        let avg = Tensor::from_slice(&[2.0f32 + 2.0 * r]);
        d.all_reduce(&avg, ReduceOp::Avg, "avg").unwrap();
        let b = Tensor::from_slice(&[5.0f32 + r, 7.0]);
        d.broadcast(&b, 1, "b").unwrap();
        let g = d
            .all_gather(&Tensor::from_slice(&[r, r * r + 1.0]), "g")
            .unwrap();
        d.barrier("test").unwrap();
        // Buckets: a 1-value cap puts every tensor in its own flat buffer; a large one, all in one.
        let ts: Vec<Tensor> = (0..3)
            .map(|i| Tensor::full([2, 2], r as f64 + i as f64, (Kind::Float, Device::Cpu)))
            .collect();
        let n_small = all_reduce_bucketed(&d, &ts, ReduceOp::Sum, 4, "grads").unwrap();
        let n_big = all_reduce_bucketed(&d, &ts, ReduceOp::Avg, 1 << 20, "grads").unwrap();
        (
            values(&sum),
            values(&avg),
            values(&b),
            values(&g),
            ts.iter().map(values).collect::<Vec<_>>(),
            n_small,
            n_big,
        )
    });
    for (sum, avg, b, g, ts, n_small, n_big) in out {
        assert_eq!(sum, vec![3.0, 10.0]);
        assert_eq!(avg, vec![3.0]);
        assert_eq!(b, vec![6.0, 7.0]);
        assert_eq!(g, vec![0.0, 1.0, 1.0, 2.0]);
        // Each tensor: sum over ranks of (r + i) = 2i + 1, then the average of that over 2 ranks.
        for (i, t) in ts.iter().enumerate() {
            assert_eq!(t, &vec![(2 * i + 1) as f32; 4], "tensor {i}");
        }
        assert_eq!((n_small, n_big), (3, 1));
    }
}

#[test]
fn single_process_collectives_are_identity() {
    let d = Dist::single();
    let t = Tensor::from_slice(&[1.5f32, -2.0]);
    d.all_reduce(&t, ReduceOp::Avg, "t").unwrap();
    d.broadcast(&t, 0, "t").unwrap();
    assert_eq!(values(&t), vec![1.5, -2.0]);
    assert_eq!(values(&d.all_gather(&t, "t").unwrap()), vec![1.5, -2.0]);
    assert_eq!(
        all_reduce_bucketed(&d, &[t], ReduceOp::Sum, 1, "t").unwrap(),
        0
    );
}

#[test]
fn a_departed_rank_is_named_in_the_error() {
    let out = on_ranks(2, 20.0, |d| {
        d.set_step(3);
        if d.rank() == 1 {
            // Leaves: its connections close and its heartbeat stops.
            drop(d);
            return None;
        }
        std::thread::sleep(Duration::from_millis(1500));
        let t = Tensor::ones([4], (Kind::Float, Device::Cpu));
        let started = std::time::Instant::now();
        let err = d
            .all_reduce(&t, ReduceOp::Sum, "grads")
            .unwrap_err()
            .to_string();
        Some((err, started.elapsed()))
    });
    let (err, took) = out[0].clone().unwrap();
    assert!(err.contains("rank 1 stopped beating"), "{err}");
    assert!(
        err.contains("all_reduce of grads failed on rank 0 at step 3"),
        "{err}"
    );
    assert!(took < Duration::from_secs(25), "{took:?}");
}

#[test]
fn checksum_sees_a_changed_value() {
    let a = [Tensor::from_slice(&[1.0f32, 2.0, 3.0])];
    let b = [Tensor::from_slice(&[1.0f32, 3.0, 2.0])];
    let sa = values(&checksum(a.iter().map(|t| t.shallow_clone())));
    let sb = values(&checksum(b.iter().map(|t| t.shallow_clone())));
    assert_eq!(sa[0], sb[0]);
    assert_ne!(sa[1], sb[1], "a permutation changes the weighted sum");
}

/// Rank r's part of the SyncBatchNorm check: 3 samples of 4 channels × 5 × 5, different
/// sizes of batch per rank would also work, but DINO's ranks have equal ones.
fn bn_input(rank: usize) -> (Tensor, Tensor) {
    let x = Tensor::from_slice(
        &(0..300)
            .map(|i| ((i * 37 + rank * 101) % 97) as f32 * 0.05 + rank as f32)
            .collect::<Vec<_>>(),
    )
    .reshape([3, 4, 5, 5]);
    // The upstream gradient: a loss weighting every output differently.
    let g = Tensor::from_slice(
        &(0..300)
            .map(|i| ((i * 13 + rank * 7) % 11) as f32 - 5.0)
            .collect::<Vec<_>>(),
    )
    .reshape([3, 4, 5, 5]);
    (x, g)
}

fn bn_layer() -> (
    crate::model::params::Params,
    crate::model::layers::BatchNorm,
) {
    let mut p = crate::model::params::Params::new(Device::Cpu);
    let bn = crate::model::layers::BatchNorm::new(&mut p, "bn", 4);
    tch::no_grad(|| {
        bn.weight
            .shallow_clone()
            .copy_(&Tensor::from_slice(&[1.0f32, 0.5, 2.0, -1.0]));
        bn.bias
            .shallow_clone()
            .copy_(&Tensor::from_slice(&[0.0f32, 0.1, -0.2, 0.3]));
    });
    (p, bn)
}

/// SyncBatchNorm over two ranks computes what one BatchNorm computes on the two ranks' batches
/// concatenated (PyTorch's definition of nn.SyncBatchNorm): outputs, running statistics, the
/// gradient of every input (which depends on the other rank's samples through the shared
/// statistics) and, summed over ranks as DDP's all-reduce does, the weight and bias gradients.
#[test]
fn sync_batchnorm_equals_batchnorm_on_the_global_batch() {
    let out = on_ranks(2, 60.0, |d| {
        let rank = d.rank();
        let (p, bn) = bn_layer();
        p.sync_batchnorm(Arc::new(d));
        let (x, g) = bn_input(rank);
        let x = x.set_requires_grad(true);
        let y = bn.forward(&x, true);
        (&y * &g).sum(Kind::Float).backward();
        (
            values(&y),
            values(&x.grad()),
            values(&bn.weight.grad()),
            values(&bn.bias.grad()),
            values(&bn.running_mean),
            values(&bn.running_var),
        )
    });
    let (_p, bn) = bn_layer();
    let (x0, g0) = bn_input(0);
    let (x1, g1) = bn_input(1);
    let x = Tensor::cat(&[x0, x1], 0).set_requires_grad(true);
    let g = Tensor::cat(&[g0, g1], 0);
    let y = bn.forward(&x, true);
    (&y * &g).sum(Kind::Float).backward();
    let close = |got: &[f32], want: &[f32], what: &str| {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                "{what}[{i}]: {a} vs {b}"
            );
        }
    };
    let (y_all, x_grad) = (values(&y), values(&x.grad()));
    let half = y_all.len() / 2;
    for (rank, o) in out.iter().enumerate() {
        let part = rank * half..(rank + 1) * half;
        close(&o.0, &y_all[part.clone()], &format!("rank {rank} output"));
        close(&o.1, &x_grad[part], &format!("rank {rank} input gradient"));
        close(&o.4, &values(&bn.running_mean), "running mean");
        close(&o.5, &values(&bn.running_var), "running var");
    }
    let sum = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(a, b)| a + b).collect::<Vec<f32>>();
    let weight_grad = sum(&out[0].2, &out[1].2);
    let bias_grad = sum(&out[0].3, &out[1].3);
    close(&weight_grad, &values(&bn.weight.grad()), "weight gradient");
    close(&bias_grad, &values(&bn.bias.grad()), "bias gradient");
    // Without synchronisation each rank's output would differ (its own statistics): the check
    // above can fail.
    let (_p, alone) = bn_layer();
    let (x0, _) = bn_input(0);
    let own = values(&alone.forward(&x0, true));
    assert!(own.iter().zip(&out[0].0).any(|(a, b)| (a - b).abs() > 1e-2));
}
