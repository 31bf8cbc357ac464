//! Progress bars for the slow, silent parts (k-NN feature extraction, cache build). They draw
//! on stderr only when it is a terminal, so logs and pipes stay clean.

use std::io::IsTerminal;

/// A bar with a count, a rate and an ETA, labelled `what`; hidden when stderr is no terminal.
pub fn bar(what: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(0);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} {bar:30} {pos}/{len} [{elapsed_precise} < {eta_precise}, {per_sec}]",
        )
        .expect("valid template"),
    );
    pb.set_message(what.to_string());
    pb
}
