//! The shipped Grafana dashboards query only metrics that dino-stream exports, and use a
//! datasource variable (not `${DS_...}` import inputs) so file provisioning works.

use std::collections::BTreeSet;

use dino_stream::metrics::Metrics;

fn exported_names() -> BTreeSet<String> {
    let m = Metrics::new();
    // Labelled families appear in the registry once a label value exists.
    m.stage_items.with_label_values(&["x"]);
    m.stage_skipped.with_label_values(&["x"]);
    m.stage_busy_seconds.with_label_values(&["x"]);
    m.stage_wait_seconds.with_label_values(&["x"]);
    m.channel_depth.with_label_values(&["x"]);
    m.channel_capacity.with_label_values(&["x"]);
    m.knn_accuracy.with_label_values(&["x"]);
    // A video source registers its per-input families when it runs.
    let video = std::sync::Arc::new(dino_stream::source::video_stats::VideoStats::default());
    video.input("x", true);
    m.registry
        .register(Box::new(
            dino_stream::source::video_stats::VideoCollector::new(video),
        ))
        .unwrap();
    let mut names = BTreeSet::new();
    for family in m.registry.gather() {
        let name = family.name().to_string();
        if family.get_field_type() == prometheus::proto::MetricType::HISTOGRAM {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
        names.insert(name);
    }
    names
}

#[test]
fn every_dashboard_query_names_an_exported_metric() {
    let exported = exported_names();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains("${DS_"),
            "{}: uses an import input instead of a datasource variable",
            path.display()
        );
        let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
        let vars = dash["templating"]["list"].as_array().unwrap();
        assert!(
            vars.iter()
                .any(|v| v["type"] == "datasource" && v["name"] == "datasource"),
            "{}",
            path.display()
        );
        for panel in dash["panels"].as_array().unwrap() {
            assert_eq!(
                panel["datasource"]["uid"],
                "${datasource}",
                "{}: {}",
                path.display(),
                panel["title"]
            );
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                let mut found = false;
                for (i, _) in expr.match_indices("dino_stream_") {
                    let name: String = expr[i..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    assert!(
                        exported.contains(&name),
                        "{}: panel {}: unknown metric {name}",
                        path.display(),
                        panel["title"]
                    );
                    found = true;
                    checked += 1;
                }
                assert!(
                    found,
                    "{}: query without a dino_stream metric: {expr}",
                    path.display()
                );
            }
        }
    }
    assert!(checked >= 10, "only {checked} metric references checked");
}
