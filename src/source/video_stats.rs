//! Per-input counters of a video source, and the Prometheus collector that exports them. The
//! decoders count into plain atomics (no metrics types on the hot path); a scrape reads them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, IntCounterVec, Opts};

/// One input's counters: a file or URL read sequentially, a live stream, or (random sampling)
/// the whole corpus under its configured path.
#[derive(Debug, Default)]
pub struct InputStats {
    pub label: String,
    pub live: bool,
    /// Pictures decoded, emitted or not (random sampling: shared with `VideoStats::decoded`,
    /// the whole corpus being one input).
    pub decoded: Arc<AtomicU64>,
    /// Live streams: frames dropped because the pipeline was full (or refused by the scaler).
    pub dropped: AtomicU64,
    /// Live streams: reconnections after the stream dropped.
    pub reconnects: AtomicU64,
    /// Packets the decoder refused (skipped).
    pub corrupt: AtomicU64,
    /// Live streams: how late the last emitted frame was behind the stream's clock, in µs.
    pub lag_micros: AtomicU64,
}

impl InputStats {
    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn lag_seconds(&self) -> f64 {
        self.lag_micros.load(Ordering::Relaxed) as f64 / 1e6
    }
}

/// Counters a test, a benchmark or a scrape can read while the source runs.
#[derive(Debug, Default)]
pub struct VideoStats {
    /// Pictures that came out of a decoder, drawn or not (all inputs).
    pub decoded: Arc<AtomicU64>,
    /// Packets the decoder refused (all inputs); each was skipped and decoding went on.
    pub corrupt_packets: AtomicU64,
    inputs: Mutex<Vec<Arc<InputStats>>>,
}

impl VideoStats {
    /// The counters of the input labelled `label`, made on first use.
    pub fn input(&self, label: &str, live: bool) -> Arc<InputStats> {
        self.input_counting(label, live, Arc::default())
    }

    /// As `input`, counting decoded pictures into `decoded` (made on first use only).
    pub fn input_counting(
        &self,
        label: &str,
        live: bool,
        decoded: Arc<AtomicU64>,
    ) -> Arc<InputStats> {
        let mut inputs = self.inputs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = inputs.iter().find(|i| i.label == label) {
            return i.clone();
        }
        let i = Arc::new(InputStats {
            label: label.to_string(),
            live,
            decoded,
            ..Default::default()
        });
        inputs.push(i.clone());
        i
    }

    pub fn inputs(&self) -> Vec<Arc<InputStats>> {
        self.inputs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Exports a source's per-input counters as `dino_stream_video_*{input="..."}`.
pub struct VideoCollector {
    stats: Arc<VideoStats>,
    descs: Vec<Desc>,
}

fn families() -> (
    IntCounterVec,
    IntCounterVec,
    IntCounterVec,
    IntCounterVec,
    GaugeVec,
) {
    let c = |n: &str, help: &str| {
        IntCounterVec::new(
            Opts::new(format!("dino_stream_video_{n}"), help),
            &["input"],
        )
        .expect("metric definition")
    };
    (
        c(
            "frames_decoded_total",
            "Pictures a video input decoded (rate: frames decoded/s).",
        ),
        c(
            "frames_dropped_total",
            "Frames a live stream dropped because the pipeline was full.",
        ),
        c(
            "reconnects_total",
            "Reconnections of a live stream after it dropped.",
        ),
        c(
            "corrupt_packets_total",
            "Packets a video input's decoder refused (skipped; decoding went on).",
        ),
        GaugeVec::new(
            Opts::new(
                "dino_stream_video_lag_seconds",
                "How far behind the stream's clock a live stream's last emitted frame was.",
            ),
            &["input"],
        )
        .expect("metric definition"),
    )
}

impl VideoCollector {
    pub fn new(stats: Arc<VideoStats>) -> Self {
        let (a, b, c, d, e) = families();
        let descs = [a.desc(), b.desc(), c.desc(), d.desc(), e.desc()]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        VideoCollector { stats, descs }
    }
}

impl Collector for VideoCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let (decoded, dropped, reconnects, corrupt, lag) = families();
        for i in self.stats.inputs() {
            let l = [i.label.as_str()];
            decoded
                .with_label_values(&l)
                .inc_by(InputStats::get(&i.decoded));
            corrupt
                .with_label_values(&l)
                .inc_by(InputStats::get(&i.corrupt));
            if i.live {
                dropped
                    .with_label_values(&l)
                    .inc_by(InputStats::get(&i.dropped));
                reconnects
                    .with_label_values(&l)
                    .inc_by(InputStats::get(&i.reconnects));
                lag.with_label_values(&l).set(i.lag_seconds());
            }
        }
        [
            decoded.collect(),
            dropped.collect(),
            reconnects.collect(),
            corrupt.collect(),
            lag.collect(),
        ]
        .concat()
    }
}
