//! Faults, through the real binary: SIGKILL at random moments (then resume, bit for bit), a
//! disk that fills up during a checkpoint, SIGTERM/SIGHUP, a second run into a locked directory,
//! a fresh run into an old one, a 0-step run, a run with no usable sample, actor panics, and
//! hundreds of idle and slow connections to /metrics.

mod common;

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use dino_stream::checkpoint;

/// A small synthetic source: no decoding, so a step is milliseconds.
const SMALL: &str = "type = \"synthetic\"\ncount = 64\nwidth = 32\nheight = 32";

fn cmd(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.current_dir(dir).args(args).env("DINO_STREAM_LOG", "info");
    for (k, _) in std::env::vars() {
        if k.starts_with("DINO_STREAM__") || k == "DINO_STREAM_FAILPOINT" {
            c.env_remove(k);
        }
    }
    c
}

fn run_ok(dir: &Path, args: &[&str]) -> String {
    let out = cmd(dir, args).output().unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{args:?} failed: {t}");
    t
}

fn tensors_of_latest(run: &Path) -> Vec<u8> {
    std::fs::read(checkpoint::latest(run).unwrap().join("tensors.safetensors")).unwrap()
}

fn temp_dirs(run: &Path) -> Vec<String> {
    std::fs::read_dir(run)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".tmp-"))
                .collect()
        })
        .unwrap_or_default()
}

fn log_lines(run: &Path) -> usize {
    std::fs::read_to_string(run.join("train_log.jsonl"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

fn assert_bitwise_equal(a: &[(u64, f64)], b: &[(u64, f64)]) {
    assert_eq!(a.len(), b.len(), "{a:?}\nvs\n{b:?}");
    for ((sa, x), (sb, y)) in a.iter().zip(b) {
        assert_eq!(sa, sb);
        assert_eq!(x.to_bits(), y.to_bits(), "step {sa}: {x} vs {y}");
    }
}

fn signal(child: &Child, sig: &str) {
    Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap();
}

/// Twenty SIGKILLs at random moments of one run (during steps and during checkpoint writes,
/// with a checkpoint after every step), each followed by `--resume`: the finished run's step
/// log and final weights equal an uninterrupted run's bit for bit, and nothing is left behind.
#[test]
fn kill_9_twenty_times_then_the_run_equals_an_uninterrupted_one() {
    let data = tempfile::tempdir().unwrap();
    let sets = [
        "--set",
        "checkpoint.every_steps=1",
        "--set",
        "checkpoint.keep=2",
        "--set",
        "train.epochs=40",
        "--no-progress",
    ];
    // Uninterrupted: 40 epochs × 8 steps (long enough that 20 kills, each after a step plus up
    // to 40 ms, never reach the end even when steps take a few milliseconds).
    let a = tempfile::tempdir().unwrap();
    let pa = tiny_pipeline(a.path(), SMALL, "");
    let mut args = vec!["run", pa.to_str().unwrap()];
    args.extend(sets);
    run_ok(a.path(), &args);
    let (run_a, steps) = (a.path().join("run"), 320);
    assert_eq!(losses(&run_a).len(), steps);

    let b = tempfile::tempdir().unwrap();
    let pb = tiny_pipeline(b.path(), SMALL, "");
    let run_b = b.path().join("run");
    let mut args = vec!["run", pb.to_str().unwrap(), "--resume"];
    args.extend(sets);
    let mut rng = dino_stream::rng::Rng::keyed(&[13, 20]);
    let (mut kills, mut during_write, mut finished_early) = (0, 0, 0);
    while kills < 20 {
        let before = log_lines(&run_b);
        let log = data.path().join(format!("attempt-{kills}.log"));
        let mut child = cmd(b.path(), &args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        // Kill after a step of this attempt, plus a random 0–40 ms: inside the next step or
        // inside a checkpoint write, wherever that moment falls.
        let progressed = wait_for(Duration::from_secs(60), || {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(Err(status));
            }
            (log_lines(&run_b) > before).then_some(Ok(()))
        });
        match progressed {
            Some(Ok(())) => {}
            Some(Err(status)) if status.success() => {
                finished_early += 1;
                break;
            }
            other => {
                let _ = child.kill();
                panic!(
                    "attempt {kills}: no step ({other:?}): {}",
                    std::fs::read_to_string(&log).unwrap()
                );
            }
        }
        std::thread::sleep(Duration::from_micros(rng.below(40_000)));
        if let Ok(Some(status)) = child.try_wait() {
            assert!(
                status.success(),
                "{}",
                std::fs::read_to_string(&log).unwrap()
            );
            finished_early += 1;
            break;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        if !temp_dirs(&run_b).is_empty() {
            during_write += 1;
        }
    }
    assert_eq!(
        (kills, finished_early),
        (20, 0),
        "the run finished before 20 kills; make it longer"
    );
    eprintln!(
        "20 SIGKILLs: {during_write} left a half-written checkpoint behind, {} landed between writes",
        20 - during_write
    );
    let t = run_ok(b.path(), &args);
    assert!(t.contains(&format!("of {steps}")), "{t}");
    assert_bitwise_equal(&losses(&run_a), &losses(&run_b));
    assert!(
        tensors_of_latest(&run_a) == tensors_of_latest(&run_b),
        "final weights differ"
    );
    assert_eq!(
        checkpoint::load_meta(&checkpoint::latest(&run_b).unwrap())
            .unwrap()
            .step,
        steps as u64
    );
    assert!(temp_dirs(&run_b).is_empty(), "{:?}", temp_dirs(&run_b));
    assert!(checkpoint::list(&run_b).len() <= 2, "pruned to keep = 2");
}

/// A checkpoint save that runs out of space (RLIMIT_FSIZE in the child: writes past the limit
/// fail with EFBIG, as on a full disk): the run fails naming the file, the previous checkpoint
/// survives, no temporary directory is left, and a later run with space resumes it exactly.
#[test]
fn a_full_disk_during_a_checkpoint_keeps_the_previous_one() {
    let a = tempfile::tempdir().unwrap();
    let pa = tiny_pipeline(a.path(), SMALL, "");
    run_ok(
        a.path(),
        &[
            "run",
            pa.to_str().unwrap(),
            "--max-steps",
            "8",
            "--no-progress",
        ],
    );

    let b = tempfile::tempdir().unwrap();
    let pb = tiny_pipeline(b.path(), SMALL, "");
    let p = pb.to_str().unwrap();
    run_ok(b.path(), &["run", p, "--max-steps", "4", "--no-progress"]);
    let run_b = b.path().join("run");
    let before = checkpoint::latest(&run_b).unwrap();
    let size = std::fs::metadata(before.join("tensors.safetensors"))
        .unwrap()
        .len();
    let limit = size / 2;
    let mut full = cmd(
        b.path(),
        &["run", p, "--resume", "--max-steps", "8", "--no-progress"],
    );
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        full.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = full.output().unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("tensors.safetensors") && t.contains(".tmp-step-000000006"),
        "the error names the file: {t}"
    );
    assert!(temp_dirs(&run_b).is_empty(), "{:?}", temp_dirs(&run_b));
    assert_eq!(checkpoint::latest(&run_b).unwrap(), before);
    checkpoint::load_tensors(&before).unwrap();

    run_ok(
        b.path(),
        &["run", p, "--resume", "--max-steps", "8", "--no-progress"],
    );
    assert_bitwise_equal(&losses(&a.path().join("run")), &losses(&run_b));
    assert!(tensors_of_latest(&a.path().join("run")) == tensors_of_latest(&run_b));
}

/// SIGTERM and SIGHUP stop the run like Ctrl-C: the current step finishes, a checkpoint of it is
/// written, and the exit code says "interrupted" (3), not "finished".
#[test]
fn sigterm_and_sighup_checkpoint_and_exit_with_the_interrupted_code() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = tiny_pipeline(dir.path(), ENDLESS_SYNTHETIC, "");
    let run = dir.path().join("run");
    for (i, sig) in ["TERM", "HUP"].into_iter().enumerate() {
        let mut args = vec!["run", pipeline.to_str().unwrap(), "--no-progress"];
        if i > 0 {
            args.push("--resume");
        }
        let before = log_lines(&run);
        let child = cmd(dir.path(), &args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stepped = wait_for(Duration::from_secs(60), || {
            (log_lines(&run) >= before + 3).then_some(())
        });
        signal(&child, sig);
        let out = child.wait_with_output().unwrap();
        let t = text(&out);
        assert!(stepped.is_some(), "{t}");
        assert_eq!(out.status.code(), Some(3), "SIG{sig}: {t}");
        assert!(t.contains(&format!("interrupted by SIG{sig}")), "{t}");
        let meta = checkpoint::load_meta(&checkpoint::latest(&run).unwrap()).unwrap();
        assert_eq!(meta.step, losses(&run).last().unwrap().0, "SIG{sig}: {t}");
    }
}

/// A run whose output is gone still ends with its own exit code and its checkpoint: stdout on
/// a full disk (/dev/full) for a run that finishes, and, for a run stopped by SIGHUP, stdout and
/// stderr pipes that nobody reads any more (a closed ssh session that took `| tee` with it).
#[test]
fn a_run_whose_output_is_gone_still_checkpoints_and_exits_with_its_code() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = tiny_pipeline(dir.path(), SMALL, "");
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = cmd(
        dir.path(),
        &[
            "run",
            pipeline.to_str().unwrap(),
            "--max-steps",
            "2",
            "--no-progress",
        ],
    )
    .stdout(Stdio::from(full))
    .output()
    .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("could not print the run summary"), "{t}");
    let meta =
        checkpoint::load_meta(&checkpoint::latest(&dir.path().join("run")).unwrap()).unwrap();
    assert_eq!(meta.step, 2);

    let dir = tempfile::tempdir().unwrap();
    let pipeline = tiny_pipeline(dir.path(), ENDLESS_SYNTHETIC, "");
    let run = dir.path().join("run");
    let mut child = cmd(
        dir.path(),
        &["run", pipeline.to_str().unwrap(), "--no-progress"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    drop(child.stdout.take());
    drop(child.stderr.take());
    let stepped = wait_for(Duration::from_secs(60), || {
        (log_lines(&run) >= 3).then_some(())
    });
    signal(&child, "HUP");
    let status = child.wait().unwrap();
    assert!(
        stepped.is_some(),
        "it trains with nobody reading its output: {status:?}"
    );
    assert_eq!(status.code(), Some(3), "{status:?}");
    let meta = checkpoint::load_meta(&checkpoint::latest(&run).unwrap()).unwrap();
    assert_eq!(meta.step, losses(&run).last().unwrap().0);
}

/// A second run into a directory in use fails at once naming the holder; a fresh run into a
/// directory holding a finished run is refused; `--restart` moves the old run aside.
#[test]
fn a_second_run_is_refused_and_restart_moves_the_old_run_aside() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = tiny_pipeline(dir.path(), ENDLESS_SYNTHETIC, "");
    let p = pipeline.to_str().unwrap();
    let run = dir.path().join("run");
    let mut first = cmd(dir.path(), &["run", p, "--no-progress"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(60), || {
        (log_lines(&run) >= 1).then_some(())
    })
    .expect("the first run steps");
    let t0 = Instant::now();
    let out = cmd(dir.path(), &["run", p, "--resume", "--no-progress"])
        .output()
        .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("in use") && t.contains(&format!("pid {}", first.id())),
        "{t}"
    );
    assert!(t0.elapsed() < Duration::from_secs(30), "fails fast");
    signal(&first, "TERM");
    assert_eq!(first.wait().unwrap().code(), Some(3));

    let out = cmd(dir.path(), &["run", p, "--max-steps", "2", "--no-progress"])
        .output()
        .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("already holds a run") && t.contains("--resume") && t.contains("--restart"),
        "{t}"
    );
    let old_steps = losses(&run).len();
    let t = run_ok(
        dir.path(),
        &["run", p, "--max-steps", "2", "--restart", "--no-progress"],
    );
    let aside = dir.path().join("run.old-1");
    assert!(t.contains(&aside.display().to_string()), "says where: {t}");
    assert_eq!(losses(&aside).len(), old_steps, "the old run is intact");
    assert_eq!(losses(&run).len(), 2, "the new run starts at step 1");
    assert!(checkpoint::latest(&aside).is_some());
}

/// A run stopped before its first step writes a step-0 checkpoint (loss `null`) that `--resume`,
/// `eval knn` and `export` all read.
#[test]
fn a_zero_step_checkpoint_resumes_evaluates_and_exports() {
    let dir = tempfile::tempdir().unwrap();
    let knn = "[eval.knn]\nk = 5\nbatch_size = 16\n[eval.knn.train]\ntype = \"synthetic\"\ncount = 32\nwidth = 32\nheight = 32\n[eval.knn.test]\ntype = \"synthetic\"\ncount = 16\nwidth = 32\nheight = 32\n";
    let pipeline = tiny_pipeline(dir.path(), SMALL, knn);
    let p = pipeline.to_str().unwrap();
    run_ok(dir.path(), &["run", p, "--max-steps", "0", "--no-progress"]);
    let run = dir.path().join("run");
    let zero = checkpoint::latest(&run).unwrap();
    let state = std::fs::read_to_string(zero.join("state.json")).unwrap();
    assert!(
        state.contains("\"step\": 0") && state.contains("\"loss\": null"),
        "{state}"
    );
    let t = run_ok(dir.path(), &["eval", "knn", p]);
    assert!(t.contains("k-NN accuracy"), "{t}");
    let out = dir.path().join("backbone.safetensors");
    run_ok(
        dir.path(),
        &[
            "export",
            zero.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(out.is_file());
    run_ok(
        dir.path(),
        &["run", p, "--resume", "--max-steps", "2", "--no-progress"],
    );
    assert_eq!(
        losses(&run).iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        vec![1, 2]
    );
}

/// Every sample unreadable: the run fails with the reason and leaves nothing behind.
#[test]
fn a_run_with_no_usable_sample_fails_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    for i in 0..12 {
        std::fs::write(images.join(format!("bad_{i}.jpg")), b"not a jpeg").unwrap();
    }
    let pipeline = tiny_pipeline(dir.path(), &image_folder_source(&images), "");
    let out = cmd(
        dir.path(),
        &["run", pipeline.to_str().unwrap(), "--no-progress"],
    )
    .output()
    .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("no usable sample") && t.contains("12 unreadable"),
        "{t}"
    );
    assert!(!dir.path().join("run").exists(), "nothing written: {t}");
}

fn run_with_failpoint(dir: &Path, pipeline: &Path, point: &str) -> Output {
    cmd(dir, &["run", pipeline.to_str().unwrap(), "--no-progress"])
        .env("DINO_STREAM_FAILPOINT", point)
        .output()
        .unwrap()
}

/// A panic in the source, an augment worker or the batcher's input stops the run: the trainer
/// checkpoints its last good state, the exit code is 1, and the log names the actor. The run
/// resumes from that checkpoint.
#[test]
fn an_actor_panic_stops_the_run_with_a_checkpoint_and_an_error() {
    for (point, actor) in [
        ("augment@40", "actor augment-"),
        ("source@40", "actor source"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let pipeline = tiny_pipeline(dir.path(), SMALL, "");
        let out = run_with_failpoint(dir.path(), &pipeline, point);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{point}: {t}");
        assert!(
            t.contains(actor) && t.contains(&format!("failpoint {}", point.replace('@', " at "))),
            "{t}"
        );
        let run = dir.path().join("run");
        let meta = checkpoint::load_meta(&checkpoint::latest(&run).unwrap()).unwrap();
        let last = losses(&run).last().map_or(0, |l| l.0);
        assert_eq!(meta.step, last, "the last good step is saved: {t}");
        assert!(last <= 5, "samples 0..40 make 5 batches: {t}");
        run_ok(
            dir.path(),
            &[
                "run",
                pipeline.to_str().unwrap(),
                "--resume",
                "--max-steps",
                "6",
                "--no-progress",
            ],
        );
        assert_eq!(losses(&run).len(), 6);
    }
    // A panic inside the trainer: an error naming it; its half-updated state is not saved.
    let dir = tempfile::tempdir().unwrap();
    let pipeline = tiny_pipeline(dir.path(), SMALL, "");
    let out = run_with_failpoint(dir.path(), &pipeline, "trainer@3");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("the trainer panicked: failpoint trainer at 3"),
        "{t}"
    );
    let meta =
        checkpoint::load_meta(&checkpoint::latest(&dir.path().join("run")).unwrap()).unwrap();
    assert_eq!(meta.step, 2, "the checkpoint of step 2 stays the latest");
}

/// Open file descriptors of a process.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Hundreds of idle and slow connections to /metrics: the server holds a bounded number of
/// them, training goes on and checkpoints, and once they are gone /metrics answers again.
#[test]
fn idle_and_slow_metrics_connections_do_not_stop_training() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let pipeline = tiny_pipeline(dir.path(), ENDLESS_SYNTHETIC, "");
    let run = dir.path().join("run");
    // 100 epochs: the run outlives the test however fast the steps are.
    let mut child = cmd(
        dir.path(),
        &[
            "run",
            pipeline.to_str().unwrap(),
            "--no-progress",
            "--set",
            &format!("metrics.port={port}"),
            "--set",
            "train.epochs=100",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    wait_for(Duration::from_secs(60), || http_get(port, "/metrics")).expect("metrics served");
    let baseline = open_fds(child.id());
    let mut abusers: Vec<std::net::TcpStream> = Vec::new();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    for i in 0..400 {
        // Past the listen backlog Linux drops the SYN and connect() retries for minutes; a
        // second is plenty for a queued connection.
        let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
            continue; // the backlog is full: the run is untouched
        };
        if i % 2 == 0 {
            let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"); // never finished
        }
        abusers.push(s);
    }
    // The kernel queues them all (metrics::LISTEN_BACKLOG, where net.core.somaxconn allows):
    // with the default backlog of 128, connections past ~160 waited out SYN retries, which
    // took ~40 s, long enough for the run to end before the test watched it.
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(128);
    let expected = 400.min(somaxconn.min(dino_stream::metrics::LISTEN_BACKLOG as usize) + 32);
    assert!(
        abusers.len() >= expected,
        "{} connections (somaxconn {somaxconn})",
        abusers.len()
    );
    let steps = log_lines(&run);
    let ckpt = checkpoint::latest(&run).map(|p| p.file_name().unwrap().to_owned());
    let progressed = wait_for(Duration::from_secs(60), || {
        let newer = checkpoint::latest(&run).map(|p| p.file_name().unwrap().to_owned()) != ckpt;
        (log_lines(&run) >= steps + 4 && newer).then_some(())
    });
    let fds = open_fds(child.id());
    // Slow connections trickle one more byte now and then; they get cut at the timeout.
    for s in abusers.iter_mut().step_by(2) {
        let _ = s.write_all(b"X");
    }
    drop(abusers);
    let answered = wait_for(Duration::from_secs(60), || http_get(port, "/metrics"));
    signal(&child, "TERM");
    let status = child.wait().unwrap();
    assert!(progressed.is_some(), "training and checkpoints went on");
    assert!(
        fds <= baseline + 80,
        "the server holds a bounded number of connections: {fds} fds, {baseline} before"
    );
    assert!(
        answered.is_some_and(|b| b.contains("dino_stream_train_steps_total")),
        "/metrics answers again"
    );
    assert_eq!(status.code(), Some(3));
}

/// A non-loopback metrics address is refused unless `metrics.allow_remote = true`.
#[test]
fn a_remote_metrics_bind_needs_allow_remote() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = tiny_pipeline(dir.path(), SMALL, "");
    let out = cmd(
        dir.path(),
        &[
            "validate",
            pipeline.to_str().unwrap(),
            "--set",
            "metrics.host=0.0.0.0",
        ],
    )
    .output()
    .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("metrics.host") && t.contains("metrics.allow_remote"),
        "{t}"
    );
    run_ok(
        dir.path(),
        &[
            "validate",
            pipeline.to_str().unwrap(),
            "--set",
            "metrics.host=0.0.0.0",
            "--set",
            "metrics.allow_remote=true",
        ],
    );
}

/// The bench defects: a negative duration, zero steps, fewer samples than one batch, and a
/// folder whose every image is unreadable are errors, not panics or hangs. (`bench pipeline`
/// waits up to two minutes for a slow first batch; a source with nothing readable must not.)
#[test]
fn bench_rejects_bad_arguments_instead_of_panicking_or_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = tiny_pipeline(dir.path(), SMALL, "");
    let p = pipeline.to_str().unwrap();
    let tiny = tiny_pipeline(
        dir.path(),
        "type = \"synthetic\"\ncount = 5\nwidth = 32\nheight = 32",
        "",
    );
    let bad_dir = dir.path().join("bad");
    let bad_images = bad_dir.join("images");
    std::fs::create_dir_all(&bad_images).unwrap();
    for i in 0..12 {
        std::fs::write(bad_images.join(format!("bad_{i}.jpg")), b"not a jpeg").unwrap();
    }
    let bad = tiny_pipeline(&bad_dir, &image_folder_source(&bad_images), "");
    let cases: [(Vec<&str>, &str); 4] = [
        (
            vec!["bench", "pipeline", bad.to_str().unwrap(), "--seconds", "1"],
            "(12 unreadable samples skipped)",
        ),
        (vec!["bench", "pipeline", p, "--seconds=-1"], "--seconds"),
        (vec!["bench", "train", p, "--steps", "0"], "--steps"),
        (
            vec![
                "bench",
                "pipeline",
                tiny.to_str().unwrap(),
                "--seconds",
                "1",
            ],
            "fewer than one batch",
        ),
    ];
    for (args, needle) in cases {
        let t0 = Instant::now();
        let out = cmd(dir.path(), &args).output().unwrap();
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {t}");
        assert!(
            t.contains(needle) && !t.contains("panicked"),
            "{args:?}: {t}"
        );
        assert!(t0.elapsed() < Duration::from_secs(60));
    }
}
