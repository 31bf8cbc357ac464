//! Data parallelism through libtorch's c10d (gloo on 127.0.0.1), with the real binary as
//! separate processes: 2 ranks × B/2 against 1 rank × B, resume (same and other world size),
//! a killed rank, SIGTERM on one rank, a torchrun launch, and rank 0 as the only writer.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// 64 samples: 8 steps per epoch at a global batch of 8.
const SOURCE: &str = "type = \"synthetic\"\ncount = 64\nwidth = 40\nheight = 40";

/// The tiny pipeline of tests/common without stochastic depth (its masks are drawn per row
/// of a rank's batch, so they would differ between 1 × 8 and 2 × 4 rows).
fn pipeline(dir: &Path) -> PathBuf {
    tiny_pipeline(
        dir,
        SOURCE,
        "[dist]\ntimeout_seconds = 20\ncheck_every = 2\n",
    )
}

/// Starts `world` ranks of `run PIPELINE ARGS`, rank r with `per_rank[r]` extra arguments.
fn spawn_ranks(dir: &Path, world: usize, args: &[&str], per_rank: &[Vec<String>]) -> Vec<Child> {
    let port = free_port().to_string();
    (0..world)
        .map(|r| {
            let mut cmd = Command::new(bin());
            cmd.current_dir(dir)
                .arg("run")
                .arg(dir.join("pipeline.toml"))
                .args(["--no-progress", "--set", "model.drop_path=0"])
                .args(args)
                .args(per_rank.get(r).cloned().unwrap_or_default())
                .env("RANK", r.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env("LOCAL_RANK", r.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", &port)
                .env("DINO_STREAM_LOG", "info")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            cmd.spawn().expect("spawn a rank")
        })
        .collect()
}

fn wait_all(children: Vec<Child>) -> Vec<Output> {
    children
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait for a rank"))
        .collect()
}

fn run_ranks(dir: &Path, world: usize, args: &[&str], per_rank: &[Vec<String>]) -> Vec<Output> {
    let outs = wait_all(spawn_ranks(dir, world, args, per_rank));
    for (r, o) in outs.iter().enumerate() {
        assert!(
            o.status.success(),
            "rank {r} of {world} failed:\n{}",
            text(o)
        );
    }
    outs
}

fn single(dir: &Path, args: &[&str]) {
    let mut all = vec![
        "run",
        dir.join("pipeline.toml")
            .to_str()
            .unwrap()
            .to_owned()
            .leak() as &str,
    ];
    all.extend(["--no-progress", "--set", "model.drop_path=0"]);
    all.extend(args);
    let out = run_in(dir, &all);
    assert!(out.status.success(), "{}", text(&out));
}

fn cursor_at(run: &Path, step: u64) -> (u64, u64) {
    let dir = dino_stream::checkpoint::list(run)
        .into_iter()
        .find(|(s, _)| *s == step)
        .unwrap_or_else(|| panic!("no checkpoint at step {step} in {}", run.display()))
        .1;
    let meta = dino_stream::checkpoint::load_meta(&dir).unwrap();
    (meta.cursor.epoch, meta.cursor.position)
}

/// Loss agreement between 2 × 4 and 1 × 8: the same samples and weights, summed in another
/// order (per-rank means averaged, gradients averaged in buckets), so the losses may differ by
/// float32 rounding amplified over a few AdamW steps, far below this.
const SUMMATION_TOLERANCE: f64 = 1e-4;

fn assert_close(a: &[(u64, f64)], b: &[(u64, f64)], what: &str) {
    assert_eq!(
        a.iter().map(|x| x.0).collect::<Vec<_>>(),
        b.iter().map(|x| x.0).collect::<Vec<_>>(),
        "{what}: steps"
    );
    let worst = a
        .iter()
        .zip(b)
        .map(|((_, x), (_, y))| (x - y).abs() / y.abs())
        .fold(0.0, f64::max);
    eprintln!("{what}: largest relative loss difference {worst:.2e}");
    assert!(worst < SUMMATION_TOLERANCE, "{what}: {a:?} vs {b:?}");
}

#[test]
fn two_ranks_match_one_rank_resume_exactly_and_only_rank_0_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = ["one", "two", "two_resumed", "then_one"]
        .iter()
        .map(|d| {
            let p = tmp.path().join(d);
            std::fs::create_dir_all(&p).unwrap();
            pipeline(&p);
            p
        })
        .collect();
    let [one, two, two_resumed, then_one] = [&dirs[0], &dirs[1], &dirs[2], &dirs[3]];
    let b4 = ["--set", "train.batch_size=4"];

    single(one, &["--max-steps", "6"]);
    // Rank 1 is pointed at its own checkpoint.dir: it must stay empty.
    let elsewhere = two.join("rank1-run");
    let rank1 = vec![
        vec![],
        vec![
            "--set".into(),
            format!("checkpoint.dir=\"{}\"", elsewhere.display()),
        ],
    ];
    let outs = run_ranks(two, 2, &[&b4[..], &["--max-steps", "6"]].concat(), &rank1);
    assert!(!elsewhere.exists(), "rank 1 wrote {}", elsewhere.display());
    assert!(text(&outs[0]).contains("checkpoint:"), "{}", text(&outs[0]));

    let l1 = losses(&one.join("run"));
    let l2 = losses(&two.join("run"));
    assert_eq!(l1.len(), 6);
    assert_close(&l2, &l1, "2 ranks x 4 vs 1 rank x 8");
    // The cursor is global: after 4 steps of 8 samples, position 32 in epoch 0, both ways.
    assert_eq!(cursor_at(&one.join("run"), 4), (0, 32));
    assert_eq!(cursor_at(&two.join("run"), 4), (0, 32));

    // Stopped after 3 steps and resumed on 2 ranks: the uninterrupted 2-rank losses, exactly.
    run_ranks(
        two_resumed,
        2,
        &[&b4[..], &["--max-steps", "3"]].concat(),
        &[],
    );
    assert_eq!(cursor_at(&two_resumed.join("run"), 3), (0, 24));
    run_ranks(two_resumed, 2, &[&b4[..], &["--resume"]].concat(), &[]);
    let resumed = losses(&two_resumed.join("run"));
    let uninterrupted = losses(&two.join("run"));
    assert_eq!(resumed[..6], uninterrupted[..], "2-rank resume");

    // Stopped on 2 ranks, resumed on 1 rank × 8: it continues from global position 24 (same
    // samples as the 1-rank run's step 4 on), so its losses follow the 1-rank run's. The
    // checkpoint's per-rank batch (4) is the recipe, so the new one is asked for explicitly.
    run_ranks(then_one, 2, &[&b4[..], &["--max-steps", "3"]].concat(), &[]);
    single(
        then_one,
        &[
            "--max-steps",
            "6",
            "--resume",
            "--set",
            "train.batch_size=8",
            "--allow-config-change",
        ],
    );
    assert_eq!(
        cursor_at(&then_one.join("run"), 6),
        cursor_at(&one.join("run"), 6)
    );
    assert_close(
        &losses(&then_one.join("run")),
        &l1,
        "2 ranks then 1 rank vs 1 rank",
    );
}

/// SyncBatchNorm end to end: with BatchNorm in the DINO head, 2 ranks × 4 follow 1 rank × 8
/// (with per-rank statistics and nothing else the teacher checksums of the ranks part after
/// the first check: that is how this test failed before SyncBatchNorm existed).
#[test]
fn sync_batchnorm_makes_two_ranks_match_one_rank_with_batchnorm_in_the_head() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = ["one", "two", "unsynced"]
        .iter()
        .map(|d| {
            let p = tmp.path().join(d);
            std::fs::create_dir_all(&p).unwrap();
            pipeline(&p);
            p
        })
        .collect();
    let bn = ["--set", "model.head_bn=true", "--max-steps", "4"];
    let b4 = ["--set", "train.batch_size=4"];
    single(&dirs[0], &bn);
    run_ranks(&dirs[1], 2, &[&b4[..], &bn[..]].concat(), &[]);
    let one = losses(&dirs[0].join("run"));
    assert_eq!(one.len(), 4);
    assert_close(
        &losses(&dirs[1].join("run")),
        &one,
        "SyncBatchNorm: 2 x 4 vs 1 x 8",
    );
    // model.sync_bn = false: per-rank statistics (other losses), with rank 0's running
    // statistics broadcast before each step so the replicas stay identical (the teacher
    // checksum every 2 steps would stop the run otherwise).
    let off = ["--set", "model.sync_bn=false"];
    run_ranks(&dirs[2], 2, &[&b4[..], &bn[..], &off[..]].concat(), &[]);
    let unsynced = losses(&dirs[2].join("run"));
    assert_eq!(unsynced.len(), 4);
    let worst = unsynced
        .iter()
        .zip(&one)
        .map(|((_, x), (_, y))| (x - y).abs() / y.abs())
        .fold(0.0, f64::max);
    assert!(
        worst > 100.0 * SUMMATION_TOLERANCE,
        "per-rank statistics should change the losses: {unsynced:?} vs {one:?}"
    );
}

/// Two ranks of an endless run (`extra` appended to the pipeline), once both have logged two
/// steps.
fn two_running_ranks(dir: &Path, extra: &str, args: &[&str]) -> Vec<Child> {
    tiny_pipeline(dir, ENDLESS_SYNTHETIC, extra);
    let children = spawn_ranks(dir, 2, args, &[]);
    let run = dir.join("run");
    let started = wait_for(Duration::from_secs(120), || {
        (losses(&run).len() >= 2).then_some(())
    });
    assert!(started.is_some(), "no steps logged");
    children
}

fn signal(child: &Child, sig: &str) {
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap()
        .success());
}

#[test]
fn a_killed_rank_makes_the_other_fail_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut children = two_running_ranks(tmp.path(), "[dist]\ntimeout_seconds = 20\n", &[]);
    let mut victim = children.pop().unwrap();
    let killed_at = Instant::now();
    victim.kill().unwrap();
    let _ = victim.wait();
    let out = children.pop().unwrap().wait_with_output().unwrap();
    let took = killed_at.elapsed();
    let t = text(&out);
    assert!(!out.status.success(), "rank 0 should fail: {t}");
    assert!(took < Duration::from_secs(20 + 15), "rank 0 took {took:?}");
    assert!(t.contains("rank 1"), "the error names rank 1: {t}");
    eprintln!(
        "rank 0 failed {took:?} after rank 1 was killed:\n{}",
        t.lines().rev().take(3).collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn a_hung_rank_makes_the_other_fail_within_the_timeout_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut children = two_running_ranks(tmp.path(), "[dist]\ntimeout_seconds = 5\n", &[]);
    signal(&children[1], "-STOP");
    let stopped_at = Instant::now();
    let out = children.remove(0).wait_with_output().unwrap();
    let took = stopped_at.elapsed();
    let mut hung = children.pop().unwrap();
    hung.kill().unwrap();
    let _ = hung.wait();
    let t = text(&out);
    assert!(!out.status.success(), "rank 0 should fail: {t}");
    // The 5 s timeout, then ~3 s of reading the heartbeats back.
    assert!(took < Duration::from_secs(5 + 10), "rank 0 took {took:?}");
    assert!(
        t.contains("rank 1 stopped beating"),
        "the error names rank 1: {t}"
    );
}

/// SIGTERM (a preempted node; torchrun forwards it to its workers) on one rank stops every rank
/// after the same step with the interrupted exit code, and rank 0 writes one checkpoint.
#[test]
fn sigterm_on_one_rank_stops_both_after_the_same_step_with_one_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let metrics_port = format!("metrics.port={port}");
    let args = ["--set", "checkpoint.every_steps=0", "--set", &metrics_port];
    let children = two_running_ranks(tmp.path(), "", &args);
    // Each rank serves metrics.port + LOCAL_RANK, every series labelled with its rank.
    for r in 0..2u16 {
        let body = http_get(port + r, "/metrics").expect("a rank's /metrics");
        let steps = metric_value(
            &body,
            &format!("dino_stream_train_steps_total{{rank=\"{r}\"}}"),
        );
        assert!(steps.is_some_and(|v| v >= 1.0), "rank {r}: {body}");
    }
    let run = tmp.path().join("run");
    signal(&children[1], "-TERM");
    let outs = wait_all(children);
    for (r, o) in outs.iter().enumerate() {
        assert_eq!(
            o.status.code(),
            Some(i32::from(dino_stream::exit::INTERRUPTED)),
            "rank {r}: {}",
            text(o)
        );
        assert!(text(o).contains("(interrupted)"), "rank {r}: {}", text(o));
    }
    let ckpts = dino_stream::checkpoint::list(&run);
    let logged = losses(&run).last().unwrap().0;
    assert_eq!(
        ckpts.iter().map(|c| c.0).collect::<Vec<_>>(),
        vec![logged],
        "one checkpoint, at the last step"
    );
}

#[test]
fn torchrun_launches_two_ranks() {
    let tmp = tempfile::tempdir().unwrap();
    pipeline(tmp.path());
    let torchrun = python().with_file_name("torchrun");
    let out = Command::new(&torchrun)
        .current_dir(tmp.path())
        .args([
            "--nproc_per_node=2",
            "--master_addr=127.0.0.1",
            &format!("--master_port={}", free_port()),
            "--no-python",
        ])
        .arg(bin())
        .args([
            "run",
            "pipeline.toml",
            "--no-progress",
            "--max-steps",
            "2",
            "--set",
            "train.batch_size=4",
        ])
        .output()
        .expect("run torchrun");
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("joined the process group"), "{t}");
    assert_eq!(losses(&tmp.path().join("run")).len(), 2, "{t}");
}
