//! Progress bars for long work (hidden automatically when stderr is not a terminal).

use indicatif::{ProgressBar, ProgressStyle};

/// A bar counting `len` `unit`s, labelled `what`.
pub fn counting_bar(len: usize, what: &str, unit: &str) -> ProgressBar {
    let template = format!("{{msg:>12}} {{bar:40}} {{pos}}/{{len}} {unit} [{{elapsed}} < {{eta}}]");
    ProgressBar::new(len as u64)
        .with_style(ProgressStyle::with_template(&template).expect("valid template"))
        .with_message(what.to_string())
}
