//! One Prometheus registry for the whole run, typed handles for every stage, and the
//! `/metrics` HTTP endpoint on 127.0.0.1.
//!
//! The endpoint is hyper's HTTP/1 server on the run's tokio runtime, hardened so that nothing a
//! client does can reach training: at most [`MAX_CONNECTIONS`] connections are open at once
//! (more wait in the kernel's backlog, holding none of our file descriptors, which checkpoint
//! writes need), a client has [`HEADER_TIMEOUT`] to send its request and [`CONNECTION_TIMEOUT`]
//! for the whole exchange, one request per connection, and a failing `accept` (out of file
//! descriptors) backs off instead of spinning a core. A non-loopback address needs
//! `metrics.allow_remote = true`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Counter, CounterVec, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter,
    IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpSocket};

use crate::config::Problems;

/// `[metrics]`: the Prometheus endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Port for `/metrics`; 0 turns the endpoint off.
    pub port: u16,
    /// Address to bind; loopback by default.
    pub host: String,
    /// Allow a `host` other than loopback, which exposes the endpoint to the network.
    pub allow_remote: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            port: 9464,
            host: "127.0.0.1".into(),
            allow_remote: false,
        }
    }
}

impl MetricsConfig {
    pub fn validate(&self, problems: &mut Problems) {
        match self.host.parse::<std::net::IpAddr>() {
            Err(_) => problems.push(
                "metrics.host",
                format!("must be an IP address, got {:?}", self.host),
            ),
            Ok(ip) => problems.check(ip.is_loopback() || self.allow_remote, "metrics.host", || {
                format!(
                    "{ip} is not a loopback address: it serves /metrics to the network; set metrics.allow_remote = true to mean it"
                )
            }),
        }
    }
}

/// Connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 32;
/// Connections the kernel queues for us (capped by `net.core.somaxconn`). A queued connection
/// holds no file descriptor of ours; beyond the backlog Linux drops the client's SYN and the
/// client retries with exponential backoff (1, 3, 7, 15 s ...), so a scrape that arrives during
/// a flood of idle connections would wait long after the flood is gone. std's and mio's default
/// of 128 filled up at 160 idle clients; 1024 queues them and lets [`HEADER_TIMEOUT`] clear them.
pub const LISTEN_BACKLOG: u32 = 1024;
/// Time a client has to send its request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a connection may last in all.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Every metric of a run. Cheap to clone (handles are reference-counted).
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub stage_items: IntCounterVec,
    pub stage_skipped: IntCounterVec,
    pub stage_busy_seconds: CounterVec,
    pub stage_wait_seconds: CounterVec,
    pub channel_depth: IntGaugeVec,
    pub channel_capacity: IntGaugeVec,
    pub train_steps: IntCounter,
    pub train_images: IntCounter,
    pub train_loss: Gauge,
    pub train_lr: Gauge,
    pub train_weight_decay: Gauge,
    pub train_teacher_momentum: Gauge,
    pub train_teacher_temp: Gauge,
    pub train_images_per_second: Gauge,
    pub train_step_seconds: Histogram,
    pub train_epoch: Gauge,
    pub teacher_entropy: Gauge,
    pub teacher_mean_entropy: Gauge,
    pub kl_teacher_student: Gauge,
    pub center_norm: Gauge,
    pub active_dims: Gauge,
    pub collapse_warnings: IntCounter,
    pub knn_accuracy: GaugeVec,
    pub checkpoint_seconds: Counter,
    pub train_comm_seconds: Counter,
}

fn name(n: &str) -> String {
    format!("dino_stream_{n}")
}

impl Metrics {
    /// A single process's metrics: no `rank` label (the dashboard's `rank=~".*"` still
    /// matches them).
    pub fn new() -> Arc<Self> {
        Metrics::with_registry(Registry::new())
    }

    /// One rank's metrics: every metric carries a constant `rank` label, so one Prometheus
    /// scraping `metrics.port + LOCAL_RANK` of every process tells the ranks apart.
    pub fn for_rank(rank: usize) -> Arc<Self> {
        let labels = std::collections::HashMap::from([("rank".to_owned(), rank.to_string())]);
        Metrics::with_registry(
            Registry::new_custom(None, Some(labels)).expect("a valid constant label"),
        )
    }

    fn with_registry(registry: Registry) -> Arc<Self> {
        macro_rules! reg {
            ($m:expr) => {{
                let m = $m.expect("metric definition");
                registry
                    .register(Box::new(m.clone()))
                    .expect("unique metric");
                m
            }};
        }
        let gauge = |n: &str, help: &str| Gauge::new(name(n), help);
        let m = Metrics {
            stage_items: reg!(IntCounterVec::new(Opts::new(name("stage_items_total"), "Items a stage has emitted."), &["stage"])),
            stage_skipped: reg!(IntCounterVec::new(Opts::new(name("stage_skipped_total"), "Samples a stage skipped (unreadable, corrupt, refused)."), &["stage"])),
            stage_busy_seconds: reg!(CounterVec::new(Opts::new(name("stage_busy_seconds_total"), "Seconds a stage's workers spent working."), &["stage"])),
            stage_wait_seconds: reg!(CounterVec::new(Opts::new(name("stage_wait_seconds_total"), "Seconds a stage's workers waited for input or for room downstream."), &["stage"])),
            channel_depth: reg!(IntGaugeVec::new(Opts::new(name("channel_depth"), "Items queued in a channel."), &["channel"])),
            channel_capacity: reg!(IntGaugeVec::new(Opts::new(name("channel_capacity"), "Capacity of a channel."), &["channel"])),
            train_steps: reg!(IntCounter::new(name("train_steps_total"), "Optimisation steps done.")),
            train_images: reg!(IntCounter::new(name("train_images_total"), "Images trained on.")),
            train_loss: reg!(gauge("train_loss", "DINO loss of the last step.")),
            train_lr: reg!(gauge("train_lr", "Learning rate of the last step.")),
            train_weight_decay: reg!(gauge("train_weight_decay", "Weight decay of the last step.")),
            train_teacher_momentum: reg!(gauge("train_teacher_momentum", "Teacher EMA momentum of the last step.")),
            train_teacher_temp: reg!(gauge("train_teacher_temp", "Teacher temperature of the last step.")),
            train_images_per_second: reg!(gauge("train_images_per_second", "Training throughput over the last log interval.")),
            train_step_seconds: reg!(Histogram::with_opts(
                HistogramOpts::new(name("train_step_seconds"), "Wall time of one optimisation step.")
                    .buckets(prometheus::exponential_buckets(0.005, 2.0, 14).expect("buckets"))
            )),
            train_epoch: reg!(gauge("train_epoch", "Epoch of the last step.")),
            teacher_entropy: reg!(gauge("teacher_entropy", "Mean per-sample entropy of the teacher output (nats); near 0 means one-hot collapse.")),
            teacher_mean_entropy: reg!(gauge("teacher_mean_entropy", "Entropy of the batch-mean teacher output (nats); near ln K with low per-sample entropy is healthy.")),
            kl_teacher_student: reg!(gauge("kl_teacher_student", "KL(teacher || student) (nats); near 0 means the outputs stopped carrying information.")),
            center_norm: reg!(gauge("center_norm", "L2 norm of the centre.")),
            active_dims: reg!(gauge("active_dims_ratio", "Share of output dimensions that carry mass.")),
            collapse_warnings: reg!(IntCounter::new(name("collapse_warnings_total"), "Monitor intervals flagged as collapsing.")),
            knn_accuracy: reg!(GaugeVec::new(Opts::new(name("knn_accuracy"), "Weighted k-NN top-1 accuracy of teacher features."), &["model"])),
            checkpoint_seconds: reg!(Counter::new(name("checkpoint_seconds_total"), "Seconds spent writing checkpoints.")),
            train_comm_seconds: reg!(Counter::new(name("train_comm_seconds_total"), "Seconds the trainer spent in collectives across ranks (gradients, loss, centre, checks).")),
            registry,
        };
        Arc::new(m)
    }

    /// The registry in Prometheus' text format.
    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding");
        buf
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot serve metrics on {addr}: {source} (is another run using metrics.port {port}? set metrics.port to a free port, or 0 to turn metrics off)")]
    Bind {
        addr: SocketAddr,
        port: u16,
        source: std::io::Error,
    },
    #[error("metrics.host {0:?} is not an IP address")]
    Host(String),
}

/// Binds the metrics port now (so a port in use fails before training) and serves `/metrics`
/// until the runtime shuts down. Returns the bound address (port 0 in the config turns the
/// endpoint off and returns `None`).
pub async fn serve(
    cfg: &MetricsConfig,
    metrics: Arc<Metrics>,
) -> Result<Option<SocketAddr>, MetricsError> {
    if cfg.port == 0 {
        return Ok(None);
    }
    let ip = cfg
        .host
        .parse()
        .map_err(|_| MetricsError::Host(cfg.host.clone()))?;
    let addr = SocketAddr::new(ip, cfg.port);
    let listener = listen(addr).map_err(|source| MetricsError::Bind {
        addr,
        port: cfg.port,
        source,
    })?;
    let bound = listener.local_addr().unwrap_or(addr);
    if !ip.is_loopback() {
        tracing::warn!("metrics.allow_remote: /metrics is served to the network on {bound}");
    }
    tokio::spawn(accept_loop(listener, metrics));
    Ok(Some(bound))
}

/// A listening socket on `addr` with [`LISTEN_BACKLOG`] (tokio's `TcpListener::bind` takes 128).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

async fn accept_loop(listener: TcpListener, metrics: Arc<Metrics>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        // Take a slot before accepting: at the limit, new connections wait in the kernel.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and friends: back off rather than spin on an error that persists.
                tracing::debug!("metrics accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(respond(&req, &metrics)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
            drop(slot);
        });
    }
}

fn respond<B>(
    req: &hyper::Request<B>,
    metrics: &Metrics,
) -> hyper::Response<http_body_util::Full<hyper::body::Bytes>> {
    use hyper::header::CONTENT_TYPE;
    let (status, ctype, body) = if req.uri().path() == "/metrics" {
        (
            hyper::StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        )
    } else {
        (
            hyper::StatusCode::NOT_FOUND,
            "text/plain",
            b"try /metrics\n".to_vec(),
        )
    };
    let mut response = hyper::Response::new(http_body_util::Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static(ctype));
    response
}
