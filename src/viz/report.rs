//! `dino-stream report RUN_DIR`: one PNG of a run's curves from its `train_log.jsonl` (loss,
//! the schedules, teacher entropy and KL, online k-NN), for people who do not run Grafana.
//! Drawn with plotters' bitmap backend and an embedded DejaVu Sans, so no system fonts are
//! needed.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;

use super::VizError;

/// One step's values (absent ones are NaN and not drawn).
#[derive(Debug, Clone, Copy)]
struct Row {
    loss: f64,
    lr: f64,
    weight_decay: f64,
    momentum: f64,
    teacher_temp: f64,
    entropy: f64,
    mean_entropy: f64,
    kl: f64,
    knn: f64,
}

/// Reads the log; a resumed run appends steps again, so the last line of a step wins.
/// Unreadable lines are counted and skipped.
fn read_log(path: &Path) -> Result<(BTreeMap<u64, Row>, usize), VizError> {
    let text = std::fs::read_to_string(path).map_err(|e| VizError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut rows = BTreeMap::new();
    let mut bad = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            bad += 1;
            continue;
        };
        let Some(step) = v["step"].as_u64() else {
            bad += 1;
            continue;
        };
        let f = |x: &serde_json::Value| x.as_f64().unwrap_or(f64::NAN);
        let m = &v["monitors"];
        rows.insert(
            step,
            Row {
                loss: f(&v["loss"]),
                lr: f(&v["lr"]),
                weight_decay: f(&v["weight_decay"]),
                momentum: f(&v["teacher_momentum"]),
                teacher_temp: f(&v["teacher_temp"]),
                entropy: f(&m["teacher_entropy"]),
                mean_entropy: f(&m["teacher_mean_entropy"]),
                kl: f(&m["kl_teacher_student"]),
                knn: f(&v["knn_accuracy"]),
            },
        );
    }
    Ok((rows, bad))
}

type Series = (&'static str, Vec<(f64, f64)>, RGBColor);

fn series(
    rows: &BTreeMap<u64, Row>,
    name: &'static str,
    colour: RGBColor,
    get: fn(&Row) -> f64,
) -> Series {
    let pts = rows
        .iter()
        .map(|(s, r)| (*s as f64, get(r)))
        .filter(|(_, y)| y.is_finite())
        .collect();
    (name, pts, colour)
}

fn draw_err<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> VizError {
    VizError::Invalid(format!("drawing the report: {e}"))
}

/// Writes the report of the run whose log is `run_dir/train_log.jsonl` to `out`; returns the
/// number of steps drawn.
pub fn write(run_dir: &Path, out: &Path) -> Result<usize, VizError> {
    let log = run_dir.join("train_log.jsonl");
    let (rows, bad) = read_log(&log)?;
    if rows.is_empty() {
        return Err(VizError::Read {
            path: log,
            message: format!("no steps logged ({bad} unreadable lines)"),
        });
    }
    if bad > 0 {
        tracing::warn!(path = %log.display(), bad, "skipped unreadable log lines");
    }
    // Registering twice is harmless; without a registered font, text cannot be drawn.
    let _ = plotters::style::register_font(
        "sans-serif",
        plotters::style::FontStyle::Normal,
        dejavu::sans::regular(),
    );
    let blue = RGBColor(31, 119, 180);
    let orange = RGBColor(255, 127, 14);
    let green = RGBColor(44, 160, 44);
    let panels: Vec<(&str, Vec<Series>)> = vec![
        ("DINO loss", vec![series(&rows, "loss", blue, |r| r.loss)]),
        ("learning rate", vec![series(&rows, "lr", blue, |r| r.lr)]),
        (
            "weight decay",
            vec![series(&rows, "wd", blue, |r| r.weight_decay)],
        ),
        (
            "teacher EMA momentum",
            vec![series(&rows, "momentum", blue, |r| r.momentum)],
        ),
        (
            "teacher temperature",
            vec![series(&rows, "temp", blue, |r| r.teacher_temp)],
        ),
        (
            "teacher entropy (nats)",
            vec![
                series(&rows, "per sample", blue, |r| r.entropy),
                series(&rows, "batch mean", orange, |r| r.mean_entropy),
            ],
        ),
        (
            "KL(teacher || student) (nats)",
            vec![series(&rows, "KL", green, |r| r.kl)],
        ),
        (
            "online k-NN accuracy",
            vec![series(&rows, "k-NN", green, |r| r.knn)],
        ),
    ];
    let root = BitMapBackend::new(out, (1500, 1000)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let title = format!("{}  ({} steps)", run_dir.display(), rows.len());
    let root = root.titled(&title, ("sans-serif", 24)).map_err(draw_err)?;
    let (first, last) = (
        *rows.keys().next().expect("non-empty") as f64,
        *rows.keys().last().expect("non-empty") as f64,
    );
    let x_range = first..(last.max(first + 1.0));
    for (area, (name, lines)) in root.split_evenly((3, 3)).iter().zip(panels) {
        let ys: Vec<f64> = lines
            .iter()
            .flat_map(|(_, p, _)| p.iter().map(|q| q.1))
            .collect();
        let mut chart = ChartBuilder::on(area);
        chart
            .caption(name, ("sans-serif", 18))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(70);
        if ys.is_empty() {
            let mut c = chart
                .build_cartesian_2d(x_range.clone(), 0.0..1.0)
                .map_err(draw_err)?;
            c.configure_mesh().x_desc("step").draw().map_err(draw_err)?;
            c.draw_series(std::iter::once(Text::new(
                "not logged in this run",
                ((first + last) / 2.0, 0.5),
                ("sans-serif", 16),
            )))
            .map_err(draw_err)?;
            continue;
        }
        let lo = ys.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = ys.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let pad = ((hi - lo) * 0.05).max(hi.abs() * 1e-3).max(1e-12);
        let mut c = chart
            .build_cartesian_2d(x_range.clone(), (lo - pad)..(hi + pad))
            .map_err(draw_err)?;
        c.configure_mesh()
            .x_desc("step")
            .y_label_formatter(&|v| format!("{v:.3e}"))
            .draw()
            .map_err(draw_err)?;
        let several = lines.len() > 1;
        for (label, pts, colour) in lines {
            let single = pts.len() == 1;
            let drawn = c
                .draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))
                .map_err(draw_err)?;
            if several {
                drawn.label(label).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                });
            }
            if single || name.contains("k-NN") {
                c.draw_series(pts.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                    .map_err(draw_err)?;
            }
        }
        if several {
            c.configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(draw_err)?;
        }
    }
    root.present().map_err(draw_err)?;
    Ok(rows.len())
}
