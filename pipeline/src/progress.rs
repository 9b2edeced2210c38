//! Progress on a terminal (indicatif); nothing extra otherwise, where the
//! structured log lines already say what happens.

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(enabled: bool, files: u64, source: &str) -> Self {
        let bar = (enabled && files > 0).then(|| {
            let bar = ProgressBar::new(files);
            bar.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} files {msg}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(source.to_string());
            bar
        });
        Self { bar }
    }

    pub fn file(&self, name: &str) {
        if let Some(b) = &self.bar {
            b.set_message(name.to_string());
            b.inc(1);
        }
    }

    pub fn rows(&self, rows: u64) {
        if let Some(b) = &self.bar {
            b.set_message(format!("{rows} rows"));
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
