//! Live video streams served on 127.0.0.1 by the ffmpeg CLI: a stream that ends and comes back
//! is reconnected and read on; a slow consumer makes the source drop frames (counted) while its
//! reader keeps the stream's pace; a resumed pass goes on "from now"; the per-input counters
//! reach Prometheus' text format; the URL protocol whitelist is enforced.
#![cfg(feature = "video")]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::free_port;
use dino_stream::source::video::InputStats;
use dino_stream::source::{Pass, PassEnd, StreamSource, VideoConfig, VideoSampling, VideoSource};
use prometheus::Encoder;

fn live_config(url: &str) -> VideoConfig {
    VideoConfig {
        sampling: VideoSampling::Sequential,
        max_side: 0,
        shuffle_buffer: 1,
        live_buffer: 2,
        live_timeout_seconds: 2.0,
        reconnect_min_seconds: 0.05,
        reconnect_max_seconds: 0.4,
        ..VideoConfig::new(url)
    }
}

/// One ffmpeg CLI session serving `seconds` of a solid `color` at real speed as MPEG-TS to the
/// first client of `url` (a `tcp://...?listen=1` server), then exiting: a stream that drops.
fn serve(url: &str, color: &str, seconds: u32) -> Child {
    Command::new("ffmpeg")
        .args(["-loglevel", "error", "-re", "-f", "lavfi", "-i"])
        .arg(format!(
            "color=c={color}:size=64x48:rate=25:duration={seconds}"
        ))
        .args(["-c:v", "mpeg2video", "-g", "5", "-f", "mpegts"])
        .arg(format!("{url}?listen=1&listen_timeout=30000"))
        .stdin(Stdio::null())
        .spawn()
        .expect("the ffmpeg CLI")
}

struct Killed(Option<Child>);
impl Drop for Killed {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Colour {
    Red,
    Blue,
    Other,
}

fn colour(rgb: &[u8]) -> Colour {
    let mean = |c: usize| {
        rgb.iter()
            .skip(c)
            .step_by(3)
            .map(|&v| v as f64)
            .sum::<f64>()
            / (rgb.len() / 3) as f64
    };
    let (r, b) = (mean(0), mean(2));
    if r > 150.0 && b < 100.0 {
        Colour::Red
    } else if b > 150.0 && r < 100.0 {
        Colour::Blue
    } else {
        Colour::Other
    }
}

#[test]
fn a_dropped_live_stream_is_reconnected_and_a_full_pipeline_drops_frames() {
    let url = format!("tcp://127.0.0.1:{}", free_port());
    // The server: 2 s of red, then (after the first session ended and the client saw the
    // stream drop) 3 s of blue on the same port.
    let server = {
        let url = url.clone();
        std::thread::spawn(move || {
            let mut red = Killed(Some(serve(&url, "red", 2)));
            let _ = red.0.as_mut().unwrap().wait();
            std::thread::sleep(Duration::from_millis(300));
            let mut blue = Killed(Some(serve(&url, "blue", 3)));
            let _ = blue.0.as_mut().unwrap().wait();
        })
    };
    let mut src = VideoSource::open(live_config(&url)).unwrap();
    let stats = src.stats();
    let registry = prometheus::Registry::new();
    src.register_metrics(&registry);

    let deadline = Instant::now() + Duration::from_secs(40);
    let mut seen: Vec<(u64, Colour, f64)> = Vec::new();
    let mut skips = Vec::new();
    // Resumed at position 100: a live stream goes on from now, numbering from the cursor.
    let pass = Pass {
        seed: 1,
        epoch: 0,
        start: 100,
        max_pixels: 1 << 26,
    };
    let end = src.run_pass(
        &pass,
        &mut |pos, f| {
            let c = colour(f.data());
            let lag = stats
                .inputs()
                .first()
                .map(|i| i.lag_seconds())
                .unwrap_or(0.0);
            seen.push((pos, c, lag));
            if c == Colour::Red {
                // A slow pipeline: the reader must not wait for it.
                std::thread::sleep(Duration::from_millis(300));
            }
            let blue = seen.iter().filter(|s| s.1 == Colour::Blue).count();
            blue < 10 && Instant::now() < deadline
        },
        &mut |what, why| skips.push(format!("{what}: {why}")),
    );
    assert_eq!(end, PassEnd::Stopped, "skips: {skips:?}");
    server.join().unwrap();

    let input = stats
        .inputs()
        .into_iter()
        .find(|i| i.label == url)
        .expect("the stream's counters");
    let (decoded, dropped, reconnects) = (
        InputStats::get(&input.decoded),
        InputStats::get(&input.dropped),
        InputStats::get(&input.reconnects),
    );
    let red = seen.iter().filter(|s| s.1 == Colour::Red).count();
    let blue = seen.iter().filter(|s| s.1 == Colour::Blue).count();
    eprintln!(
        "emitted {} (red {red}, blue {blue}), decoded {decoded}, dropped {dropped}, reconnects {reconnects}, skips {skips:?}",
        seen.len()
    );
    // The stream came back and the source went on with it: red first, then blue.
    assert!(red >= 3, "red frames: {red}");
    assert_eq!(
        blue, 10,
        "the source did not go on after the stream came back"
    );
    let first_blue = seen.iter().position(|s| s.1 == Colour::Blue).unwrap();
    assert!(
        seen[first_blue..].iter().all(|s| s.1 != Colour::Red),
        "red after blue"
    );
    assert!(reconnects >= 1);
    // Positions go on from the resume cursor, without gaps.
    let positions: Vec<u64> = seen.iter().map(|s| s.0).collect();
    assert_eq!(
        positions,
        (100..100 + seen.len() as u64).collect::<Vec<_>>()
    );
    // The reader kept the stream's pace (2 s of red = 50 frames) while the consumer took one
    // red frame per 300 ms: the rest were dropped and counted, none lost uncounted.
    assert!(decoded >= 40 + 10, "decoded {decoded}");
    assert!(dropped >= 20, "dropped {dropped}");
    let unaccounted = decoded as i64 - seen.len() as i64 - dropped as i64;
    assert!(
        (0..=live_config(&url).live_buffer as i64 + 1).contains(&unaccounted),
        "decoded {decoded} = emitted {} + dropped {dropped} + queued {unaccounted}?",
        seen.len()
    );
    // Frames waited in the queue while the consumer slept: the lag shows it.
    let red_lag = seen
        .iter()
        .filter(|s| s.1 == Colour::Red)
        .map(|s| s.2)
        .fold(0.0, f64::max);
    assert!(
        red_lag >= 0.1,
        "lag behind the stream while slow: {red_lag} s"
    );

    // The counters as Prometheus reads them.
    let mut text = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&registry.gather(), &mut text)
        .unwrap();
    let text = String::from_utf8(text).unwrap();
    for (name, want) in [
        ("dino_stream_video_frames_decoded_total", decoded as f64),
        ("dino_stream_video_frames_dropped_total", dropped as f64),
        ("dino_stream_video_reconnects_total", reconnects as f64),
    ] {
        let key = format!("{name}{{input=\"{url}\"}}");
        let line = text
            .lines()
            .find(|l| l.starts_with(&key))
            .unwrap_or_else(|| panic!("{key} in\n{text}"));
        let v: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(v >= want, "{line}: want at least {want}");
    }
    assert!(text.contains(&format!("dino_stream_video_lag_seconds{{input=\"{url}\"}}")));
}

#[test]
fn a_url_outside_the_protocol_whitelist_is_refused_and_a_dead_stream_is_given_up() {
    let url = format!("tcp://127.0.0.1:{}", free_port());
    let run = |cfg: VideoConfig| {
        let mut src = VideoSource::open(cfg).unwrap();
        let mut skips = Vec::new();
        let end = src.run_pass(
            &Pass {
                seed: 1,
                epoch: 0,
                start: 0,
                max_pixels: 1 << 26,
            },
            &mut |_, _| panic!("no frame expected"),
            &mut |what, why| skips.push((what.to_string(), why.to_string())),
        );
        assert_eq!(end, PassEnd::Finished);
        let reconnects: u64 = src
            .stats()
            .inputs()
            .iter()
            .map(|i| InputStats::get(&i.reconnects))
            .sum();
        (skips, reconnects)
    };
    // `tcp` is not whitelisted: refused before any connection, naming the key.
    let mut cfg = live_config(&url);
    cfg.url_protocols = "udp,rtp".into();
    let (skips, reconnects) = run(cfg);
    assert_eq!(skips.len(), 1, "{skips:?}");
    assert_eq!(skips[0].0, url);
    assert!(
        skips[0]
            .1
            .contains("protocol `tcp` is not in source.url_protocols"),
        "{skips:?}"
    );
    assert_eq!(reconnects, 0);
    // Nobody listens: two reconnection attempts after the first, then given up and skipped.
    let mut cfg = live_config(&url);
    cfg.reconnect_attempts = 2;
    let t = Instant::now();
    let (skips, reconnects) = run(cfg);
    assert_eq!(skips.len(), 1, "{skips:?}");
    assert!(
        skips[0].1.contains("after 2 reconnection attempts"),
        "{skips:?}"
    );
    assert_eq!(reconnects, 2);
    assert!(t.elapsed() < Duration::from_secs(10));
}
