//! `cache build`: reads a whole source, decodes, resizes and encodes its pictures on
//! `cache.workers` threads, and writes the records in source order, so the cache is the same
//! whatever the thread count and an interrupted build resumes by position.

use std::collections::BTreeMap;
use std::path::Path;

use super::encoding::{encode_record, Encoded};
use super::writer::ShardWriter;
use super::{BuildSettings, CacheError};
use crate::frame::Frame;
use crate::source::{OpenedSource, PassEnd, Payload};

/// How to build, besides the source and the directory.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub settings: BuildSettings,
    /// Encoding threads (0: one per core).
    pub workers: usize,
    /// A stream source (video) is read as its epoch 0 with this seed.
    pub seed: u64,
    pub max_pixels: u64,
}

#[derive(Debug, Clone, Default)]
pub struct BuildReport {
    pub written: u64,
    pub skipped: u64,
    pub shards: usize,
    /// Samples already in the cache when this build started (a resumed build).
    pub resumed_from: u64,
}

/// One sample's outcome, in source order: its id, label and record, or why it was skipped.
struct Done {
    id: u64,
    label: Option<u32>,
    what: String,
    record: Result<Encoded, String>,
}

/// Decodes a whole source, in id order, into shards under `dir`. `decode` turns a payload into a
/// frame or an error message (it runs on the worker threads); `on_skip(description, message)`
/// hears about each sample skipped and `progress(consumed)` about progress.
pub fn build(
    source: OpenedSource,
    dir: &Path,
    opts: &BuildOptions,
    decode: &(dyn Fn(Payload) -> Result<Frame, String> + Sync),
    on_skip: &mut dyn FnMut(&str, &str),
    progress: &dyn Fn(u64),
) -> Result<BuildReport, CacheError> {
    let mut writer = ShardWriter::open(dir, &opts.settings)?;
    let resumed_from = writer.manifest().consumed;
    let mut report = BuildReport {
        resumed_from,
        ..Default::default()
    };
    if writer.manifest().complete {
        report.shards = writer.manifest().shards.len();
        return Ok(report);
    }
    let workers = match opts.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let records = &opts.settings.records;
    let mut consumed = resumed_from;
    let mut sink = |done: Done| -> Result<(), CacheError> {
        match done.record {
            Ok(rec) => {
                writer.push(done.id, done.label, rec)?;
                report.written += 1;
            }
            Err(message) => {
                on_skip(&done.what, &message);
                writer.skip();
                report.skipped += 1;
            }
        }
        consumed += 1;
        progress(consumed);
        Ok(())
    };
    match source {
        OpenedSource::Indexed(src) => {
            let work = |id: u64| Done {
                id,
                label: src.label(id),
                what: src.describe(id),
                record: src
                    .read(id)
                    .map_err(|e| e.to_string())
                    .and_then(decode)
                    .and_then(|f| encode_record(f, records)),
            };
            ordered(workers, &work, |pool| {
                for id in resumed_from..src.len() {
                    pool.submit(id, &mut sink)?;
                }
                pool.finish(&mut sink)
            })?;
        }
        OpenedSource::Stream(mut src) => {
            let work = |(pos, frame): (u64, Frame)| Done {
                id: pos,
                label: None,
                what: format!("frame {pos}"),
                record: encode_record(frame, records),
            };
            ordered(workers, &work, |pool| {
                let mut result = Ok(());
                let mut emit = |pos: u64, frame: Frame| match pool.submit((pos, frame), &mut sink) {
                    Ok(()) => true,
                    Err(e) => {
                        result = Err(e);
                        false
                    }
                };
                let pass = crate::source::Pass {
                    seed: opts.seed,
                    epoch: 0,
                    start: resumed_from,
                    max_pixels: opts.max_pixels,
                };
                // Frames the source itself skips are not positions: only emitted frames count.
                let mut skip = |what: &str, why: &str| tracing::warn!("skipped {what}: {why}");
                if src.run_pass(&pass, &mut emit, &mut skip) == PassEnd::Stopped {
                    result?;
                }
                pool.finish(&mut sink)
            })?;
        }
    }
    let manifest = writer.finish()?;
    report.shards = manifest.shards.len();
    Ok(report)
}

/// Jobs handed to worker threads and their results taken back in submission order, with at
/// most `window` in flight (so memory stays bounded however slow one job is).
struct Ordered<J> {
    jobs: Option<kanal::Sender<(u64, J)>>,
    results: kanal::Receiver<(u64, Done)>,
    submitted: u64,
    delivered: u64,
    held: BTreeMap<u64, Done>,
    window: u64,
}

impl<J> Ordered<J> {
    fn submit(
        &mut self,
        job: J,
        sink: &mut dyn FnMut(Done) -> Result<(), CacheError>,
    ) -> Result<(), CacheError> {
        while self.submitted - self.delivered >= self.window {
            self.take_one(sink)?;
        }
        let jobs = self.jobs.as_ref().expect("open until finish");
        if jobs.send((self.submitted, job)).is_err() {
            return Err(gone());
        }
        self.submitted += 1;
        Ok(())
    }

    fn take_one(
        &mut self,
        sink: &mut dyn FnMut(Done) -> Result<(), CacheError>,
    ) -> Result<(), CacheError> {
        let (k, done) = self.results.recv().map_err(|_| gone())?;
        self.held.insert(k, done);
        while let Some(done) = self.held.remove(&self.delivered) {
            self.delivered += 1;
            sink(done)?;
        }
        Ok(())
    }

    fn finish(
        &mut self,
        sink: &mut dyn FnMut(Done) -> Result<(), CacheError>,
    ) -> Result<(), CacheError> {
        self.jobs = None;
        while self.delivered < self.submitted {
            self.take_one(sink)?;
        }
        Ok(())
    }
}

fn gone() -> CacheError {
    CacheError::Io {
        path: "cache build workers".into(),
        source: std::io::Error::other("the encoding threads stopped"),
    }
}

/// Runs `body` with a pool of `workers` threads applying `work` (a panic in `work` becomes that
/// sample's error, so one bad picture cannot hang the build).
fn ordered<J: Send>(
    workers: usize,
    work: &(dyn Fn(J) -> Done + Sync),
    body: impl FnOnce(&mut Ordered<J>) -> Result<(), CacheError>,
) -> Result<(), CacheError> {
    let window = (workers * 4) as u64;
    std::thread::scope(|scope| {
        let (job_tx, job_rx) = kanal::bounded::<(u64, J)>(window as usize);
        let (done_tx, done_rx) = kanal::bounded::<(u64, Done)>(window as usize);
        for i in 0..workers {
            let (job_rx, done_tx) = (job_rx.clone(), done_tx.clone());
            std::thread::Builder::new()
                .name(format!("cache-build-{i}"))
                .spawn_scoped(scope, move || {
                    while let Ok((k, job)) = job_rx.recv() {
                        let done =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(job)))
                                .unwrap_or_else(|p| Done {
                                    id: u64::MAX,
                                    label: None,
                                    what: format!("sample {k}"),
                                    record: Err(format!(
                                        "encoding panicked: {}",
                                        crate::pipeline::supervise::panic_message(&*p)
                                    )),
                                });
                        if done_tx.send((k, done)).is_err() {
                            return;
                        }
                    }
                })
                .expect("spawn cache build worker");
        }
        drop((job_rx, done_tx));
        let mut pool = Ordered {
            jobs: Some(job_tx),
            results: done_rx,
            submitted: 0,
            delivered: 0,
            held: BTreeMap::new(),
            window,
        };
        let result = body(&mut pool);
        pool.jobs = None;
        result
    })
}
