//! A real Prometheus server scrapes a running trainer: the metrics are usable as shipped.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn prometheus_query(port: u16, query: &str) -> Option<f64> {
    let encoded: String = query
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let body = http_get(port, &format!("/api/v1/query?query={encoded}"))?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let result = v["data"]["result"].as_array()?.first()?.clone();
    result["value"][1].as_str()?.parse().ok()
}

#[test]
fn prometheus_scrapes_stage_and_trainer_metrics() {
    let prom = which("prometheus")
        .expect("the prometheus binary (Debian package `prometheus`, installed by make)");
    let dir = tempfile::tempdir().unwrap();
    let (run_port, prom_port) = (free_port(), free_port());
    // Online k-NN every 2 steps on small labelled synthetic subsets.
    let knn = "[eval.knn]\nevery_steps = 2\nonline_bank = 64\nonline_queries = 32\n\
        [eval.knn.train]\ntype = \"synthetic\"\ncount = 64\nwidth = 32\nheight = 32\n\
        [eval.knn.test]\ntype = \"synthetic\"\ncount = 32\nwidth = 32\nheight = 32\n";
    let pipeline = tiny_pipeline(dir.path(), ENDLESS_SYNTHETIC, knn);
    let _run = Killed(spawn_run(dir.path(), &pipeline, run_port, Stdio::null));
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: dino\n    static_configs:\n      - targets: ['127.0.0.1:{run_port}']\n"
        ),
    )
    .unwrap();
    let _prom = Killed(
        Command::new(prom)
            .args([
                &format!("--config.file={}", config.display()),
                &format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()),
                &format!("--web.listen-address=127.0.0.1:{prom_port}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let steps = wait_for(Duration::from_secs(90), || {
        prometheus_query(prom_port, "dino_stream_train_steps_total").filter(|&v| v >= 1.0)
    });
    assert!(
        steps.is_some(),
        "Prometheus never saw dino_stream_train_steps_total"
    );
    let decoded = prometheus_query(
        prom_port,
        "sum(dino_stream_stage_items_total{stage=\"augment\"})",
    );
    assert!(
        decoded.is_some_and(|v| v > 0.0),
        "augment items: {decoded:?}"
    );
    let loss = prometheus_query(prom_port, "dino_stream_train_loss");
    assert!(
        loss.is_some_and(|v| v.is_finite() && v > 0.0),
        "loss: {loss:?}"
    );
    // The dashboard's k-NN panel has data while the run goes, and the step log has it too.
    let knn = wait_for(Duration::from_secs(60), || {
        prometheus_query(prom_port, "dino_stream_knn_accuracy{model=\"online\"}")
    });
    assert!(
        knn.is_some_and(|v| (0.0..=1.0).contains(&v)),
        "online k-NN: {knn:?}"
    );
    let logged = std::fs::read_to_string(dir.path().join("run/train_log.jsonl")).unwrap();
    assert!(
        logged.lines().any(|l| l.contains("\"knn_accuracy\"")),
        "no knn_accuracy in train_log.jsonl"
    );
    // The per-rank panels answer with all ranks selected (a single process has no `rank`
    // label, which `rank=~".*"` matches).
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/dashboards/dino-stream.json"
        ))
        .unwrap(),
    )
    .unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap();
        if !title.contains("per rank") {
            continue;
        }
        let expr = panel["targets"][0]["expr"]
            .as_str()
            .unwrap()
            .replace("$rank", ".*");
        let v = wait_for(Duration::from_secs(30), || {
            prometheus_query(prom_port, &expr)
        });
        assert!(v.is_some_and(f64::is_finite), "{title}: {expr} gave {v:?}");
    }
}

/// The video panels answer from a real scrape of a run that trains on a live stream (served
/// on 127.0.0.1 by the ffmpeg CLI, bounded in time): frames decoded/s, dropped and reconnects,
/// lag behind real time, corrupt packets.
#[cfg(feature = "video")]
#[test]
fn prometheus_scrapes_the_video_panels_from_a_live_run() {
    let prom = which("prometheus")
        .expect("the prometheus binary (Debian package `prometheus`, installed by make)");
    let dir = tempfile::tempdir().unwrap();
    let (run_port, prom_port, stream_port) = (free_port(), free_port(), free_port());
    let url = format!("tcp://127.0.0.1:{stream_port}");
    let _stream = Killed(
        Command::new("ffmpeg")
            .args(["-loglevel", "error", "-re", "-f", "lavfi", "-i"])
            .arg("testsrc2=size=64x48:rate=25:duration=120")
            .args(["-c:v", "mpeg2video", "-g", "5", "-f", "mpegts"])
            .arg(format!("{url}?listen=1&listen_timeout=60000"))
            .stdin(Stdio::null())
            .spawn()
            .expect("the ffmpeg CLI"),
    );
    let source = format!(
        "type = \"video\"\npath = \"{url}\"\nsampling = \"sequential\"\nmax_side = 0\nshuffle_buffer = 8\nreconnect_min_seconds = 0.1"
    );
    let pipeline = tiny_pipeline(dir.path(), &source, "");
    let _run = Killed(
        Command::new(bin())
            .current_dir(dir.path())
            .args(["run", pipeline.to_str().unwrap(), "--no-progress"])
            .args(["--set", &format!("metrics.port={run_port}")])
            .args(["--set", "train.steps_per_epoch=100000"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let _prom = Killed(spawn_prometheus(&prom, dir.path(), run_port, prom_port));
    let decoded = wait_for(Duration::from_secs(90), || {
        prometheus_query(prom_port, "sum(dino_stream_video_frames_decoded_total)")
            .filter(|&v| v >= 1.0)
    });
    assert!(
        decoded.is_some(),
        "Prometheus never saw decoded video frames"
    );
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/dashboards/dino-stream.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap();
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            if !expr.contains("dino_stream_video_") {
                continue;
            }
            let expr = expr.replace("$rank", ".*");
            let v = wait_for(Duration::from_secs(30), || {
                prometheus_query(prom_port, &expr)
            });
            assert!(v.is_some_and(f64::is_finite), "{title}: {expr} gave {v:?}");
            checked += 1;
        }
    }
    assert!(
        checked >= 5,
        "only {checked} video queries in the dashboard"
    );
    let rate = prometheus_query(
        prom_port,
        "sum(rate(dino_stream_video_frames_decoded_total[1m]))",
    );
    assert!(rate.is_some_and(|r| r > 0.0), "decoded frames/s: {rate:?}");
}

#[cfg(feature = "video")]
fn spawn_prometheus(
    prom: &std::path::Path,
    dir: &std::path::Path,
    run_port: u16,
    prom_port: u16,
) -> Child {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: dino\n    static_configs:\n      - targets: ['127.0.0.1:{run_port}']\n"
        ),
    )
    .unwrap();
    Command::new(prom)
        .args([
            &format!("--config.file={}", config.display()),
            &format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
            &format!("--web.listen-address=127.0.0.1:{prom_port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}
