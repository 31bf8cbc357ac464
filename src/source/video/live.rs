//! A live stream (a URL in sequential mode): a reader thread demuxes and decodes it at the
//! stream's pace and hands frames to the pass through a small queue (`live_buffer` frames).
//! When the queue is full the newest frame is dropped and counted, so a slow pipeline never
//! stalls the network reader (a stalled reader loses the connection or the socket's data
//! anyway, later and less visibly). When the stream drops (end of stream, error, or no data for
//! `live_timeout_seconds`), the reader reconnects with exponential backoff; each reconnection is
//! counted and logged. A live stream cannot be replayed, so resuming goes on "from now": the
//! positions continue from the cursor, and the log says so.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ffmpeg::util::frame::video::Video;
use ffmpeg_next as ffmpeg;

use super::frames::{frame_pts, open_decoder, FrameScaler};
use super::inputs::{open_input_interruptible, Input};
use crate::frame::Frame;
use crate::source::video_stats::InputStats;
use crate::source::{Pass, PassEnd, VideoConfig};

pub struct LivePass<'a> {
    pub url: &'a str,
    pub cfg: &'a VideoConfig,
    pub counters: Arc<InputStats>,
    /// Totals over the whole source (the tests' and the bench's view).
    pub decoded: &'a AtomicU64,
    pub corrupt_packets: &'a AtomicU64,
}

/// The URL's outer protocol when the whitelist does not name it (FFmpeg checks the nested
/// ones, such as `tls` under `https`, itself).
fn refused_scheme<'u>(url: &'u str, protocols: &str) -> Option<&'u str> {
    let scheme = match url.split_once(':') {
        Some((s, _)) => s,
        None if url == "-" => "pipe",
        None => return None,
    };
    let allowed = protocols
        .split(',')
        .any(|p| p.trim().eq_ignore_ascii_case(scheme));
    (!allowed).then_some(scheme)
}

/// A decoded frame and when it should have been shown, by the stream's clock mapped to ours.
struct Timed {
    frame: Frame,
    due: Instant,
}

/// Why a connection ended.
enum Ended {
    /// The pass stopped the reader.
    Stopped,
    /// The stream dropped after delivering `frames` frames.
    Dropped { frames: u64, why: String },
}

impl LivePass<'_> {
    pub fn run(
        &self,
        pass: &Pass,
        emit: &mut dyn FnMut(u64, Frame) -> bool,
        skip: &mut dyn FnMut(&str, &str),
    ) -> PassEnd {
        if pass.start > 0 {
            tracing::info!(
                "{}: a live stream resumes from now: frames after the checkpoint's position {} were not kept and are not replayed; positions go on from {}",
                self.url,
                pass.start,
                pass.start
            );
        }
        if let Some(scheme) = refused_scheme(self.url, &self.cfg.url_protocols) {
            // FFmpeg would answer "Invalid argument"; say which key decides.
            skip(
                self.url,
                &format!(
                    "protocol `{scheme}` is not in source.url_protocols ({})",
                    self.cfg.url_protocols
                ),
            );
            return PassEnd::Finished;
        }
        let (tx, rx) = sync_channel::<Timed>(self.cfg.live_buffer.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let given_up = std::thread::scope(|scope| {
            let reader = scope.spawn(|| self.read(pass.max_pixels, tx, stop.clone()));
            let end = self.consume(pass, rx, emit);
            stop.store(true, Ordering::Relaxed);
            let reason = reader
                .join()
                .unwrap_or_else(|_| Some("the reader panicked".into()));
            (end, reason)
        });
        match given_up {
            (PassEnd::Stopped, _) => PassEnd::Stopped,
            (PassEnd::Finished, reason) => {
                if let Some(why) = reason {
                    skip(self.url, &why);
                }
                PassEnd::Finished
            }
        }
    }

    /// Hands queued frames to the pass until it stops or the reader gives up (its sender is
    /// dropped).
    fn consume(
        &self,
        pass: &Pass,
        rx: Receiver<Timed>,
        emit: &mut dyn FnMut(u64, Frame) -> bool,
    ) -> PassEnd {
        let mut position = pass.start;
        let stride = self.cfg.stride.max(1) as u64;
        let mut seen = 0u64;
        loop {
            let timed = match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(t) => t,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return PassEnd::Finished,
            };
            let take = seen.is_multiple_of(stride);
            seen += 1;
            if !take {
                continue;
            }
            if self.cfg.limit.is_some_and(|l| position >= l) {
                return PassEnd::Finished;
            }
            let lag = Instant::now().saturating_duration_since(timed.due);
            self.counters
                .lag_micros
                .store(lag.as_micros() as u64, Ordering::Relaxed);
            if !emit(position, timed.frame) {
                return PassEnd::Stopped;
            }
            position += 1;
        }
    }

    /// Connects, reads and reconnects until stopped or given up; returns why it gave up.
    fn read(
        &self,
        max_pixels: u64,
        tx: SyncSender<Timed>,
        stop: Arc<AtomicBool>,
    ) -> Option<String> {
        let min = Duration::from_secs_f64(self.cfg.reconnect_min_seconds);
        let max = Duration::from_secs_f64(self.cfg.reconnect_max_seconds);
        let mut wait = min;
        let mut failures = 0u32;
        let mut connections = 0u64;
        let mut scaler = FrameScaler::new(self.cfg.max_side, max_pixels);
        loop {
            if connections > 0 {
                InputStats::add(&self.counters.reconnects);
            }
            connections += 1;
            match self.connection(&tx, &stop, &mut scaler) {
                Ended::Stopped => return None,
                Ended::Dropped { frames, why } => {
                    if stop.load(Ordering::Relaxed) {
                        return None;
                    }
                    if frames > 0 {
                        failures = 0;
                        wait = min;
                    }
                    failures += 1;
                    let attempts = self.cfg.reconnect_attempts;
                    if attempts > 0 && failures > attempts {
                        tracing::error!(
                            "{}: live stream gone: {why}; gave up after {attempts} reconnection attempts",
                            self.url
                        );
                        return Some(format!(
                            "live stream gone after {attempts} reconnection attempts: {why}"
                        ));
                    }
                    tracing::warn!(
                        "{}: live stream dropped after {frames} frames ({why}); reconnecting in {:.1} s",
                        self.url,
                        wait.as_secs_f64()
                    );
                    let until = Instant::now() + wait;
                    while Instant::now() < until {
                        if stop.load(Ordering::Relaxed) {
                            return None;
                        }
                        std::thread::sleep(Duration::from_millis(20).min(wait));
                    }
                    wait = (wait * 2).min(max);
                }
            }
        }
    }

    /// One connection: open, then demux and decode until the stream ends, fails, goes silent
    /// for `live_timeout_seconds`, or the pass stops.
    fn connection(
        &self,
        tx: &SyncSender<Timed>,
        stop: &Arc<AtomicBool>,
        scaler: &mut FrameScaler,
    ) -> Ended {
        let timeout_ms = (self.cfg.live_timeout_seconds * 1000.0) as u64;
        let clock = Instant::now();
        // Milliseconds since `clock` of the last data; the interrupt callback aborts FFmpeg's
        // blocking calls when the stream has been silent too long or the pass stopped.
        let active = Arc::new(AtomicU64::new(0));
        let interrupt = {
            let (stop, active) = (stop.clone(), active.clone());
            move || {
                stop.load(Ordering::Relaxed)
                    || (clock.elapsed().as_millis() as u64)
                        .saturating_sub(active.load(Ordering::Relaxed))
                        > timeout_ms
            }
        };
        let input = Input::Url(self.url.to_string());
        let mut ictx = match open_input_interruptible(&input, &self.cfg.url_protocols, interrupt) {
            Ok(c) => c,
            Err(e) => return self.ended(stop, 0, format!("cannot open: {e}")),
        };
        let (index, mut decoder) = match open_decoder(&ictx, self.cfg.threads) {
            Ok(d) => d,
            Err(e) => return self.ended(stop, 0, format!("no video stream: {e}")),
        };
        let time_base = ictx.stream(index).map(|s| s.time_base());
        let seconds = |pts: i64| -> Option<f64> {
            time_base
                .filter(|tb| tb.denominator() != 0)
                .map(|tb| pts as f64 * tb.numerator() as f64 / tb.denominator() as f64)
        };
        // The stream's clock at our first frame: a frame is due at that instant plus its
        // distance from the first frame in stream time.
        let mut origin: Option<(f64, Instant)> = None;
        let mut frames = 0u64;
        let mut decoded = Video::empty();
        let mut drain = |decoder: &mut ffmpeg::decoder::Video, frames: &mut u64| {
            while decoder.receive_frame(&mut decoded).is_ok() {
                *frames += 1;
                self.decoded.fetch_add(1, Ordering::Relaxed);
                InputStats::add(&self.counters.decoded);
                let now = Instant::now();
                let t = frame_pts(&decoded).and_then(seconds);
                let due = match (t, origin) {
                    (Some(t), Some((t0, w0))) => w0 + Duration::from_secs_f64((t - t0).max(0.0)),
                    (Some(t), None) => {
                        origin = Some((t, now));
                        now
                    }
                    (None, _) => now,
                };
                let Ok(frame) = scaler.convert(&decoded) else {
                    InputStats::add(&self.counters.dropped);
                    continue;
                };
                match tx.try_send(Timed { frame, due }) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => InputStats::add(&self.counters.dropped),
                    Err(TrySendError::Disconnected(_)) => return false,
                }
            }
            true
        };
        let mut packet = ffmpeg::Packet::empty();
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ended::Stopped;
            }
            match packet.read(&mut ictx) {
                Ok(()) => {}
                Err(ffmpeg::Error::Eof) => {
                    let _ = decoder.send_eof();
                    drain(&mut decoder, &mut frames);
                    return self.ended(stop, frames, "end of stream".into());
                }
                Err(e) => {
                    let silent = (clock.elapsed().as_millis() as u64)
                        .saturating_sub(active.load(Ordering::Relaxed));
                    let why = if silent > timeout_ms {
                        format!("no data for {:.1} s", silent as f64 / 1000.0)
                    } else {
                        e.to_string()
                    };
                    return self.ended(stop, frames, why);
                }
            }
            active.store(clock.elapsed().as_millis() as u64, Ordering::Relaxed);
            if packet.stream() != index {
                continue;
            }
            if decoder.send_packet(&packet).is_err() {
                self.corrupt_packets.fetch_add(1, Ordering::Relaxed);
                InputStats::add(&self.counters.corrupt);
                continue;
            }
            if !drain(&mut decoder, &mut frames) {
                return Ended::Stopped;
            }
        }
    }

    fn ended(&self, stop: &AtomicBool, frames: u64, why: String) -> Ended {
        if stop.load(Ordering::Relaxed) {
            Ended::Stopped
        } else {
            Ended::Dropped { frames, why }
        }
    }
}
