//! Progress on a terminal (indicatif); nothing extra otherwise, where the
//! structured log lines already say what happens; and the clock behind
//! each `stage ... done` line.

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

/// Wall and CPU time of one stage of a run. CPU over wall tells how much of
/// the machine a stage kept busy (2.0 = both cores of a 2-core machine);
/// near 1.0 the stage ran serially, which is where overlapping work pays.
/// The CPU time is the process's (user + system): in a daemon running two
/// pipelines at once it counts both.
pub struct StageClock {
    wall: Instant,
    cpu: f64,
}

impl StageClock {
    pub fn start() -> Self {
        Self {
            wall: Instant::now(),
            cpu: process_cpu_seconds(),
        }
    }

    pub fn seconds(&self) -> f64 {
        self.wall.elapsed().as_secs_f64()
    }

    pub fn cpu_seconds(&self) -> f64 {
        process_cpu_seconds() - self.cpu
    }
}

/// User + system CPU seconds this process has used so far.
#[cfg(unix)]
fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// No portable source here: the lines then show 0.
#[cfg(not(unix))]
fn process_cpu_seconds() -> f64 {
    0.0
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn stage_clock_counts_the_cpu_a_stage_burns() {
        let clock = StageClock::start();
        // Busy for ~50 ms of wall time on this thread.
        let mut x = 0u64;
        while clock.seconds() < 0.05 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let (wall, cpu) = (clock.seconds(), clock.cpu_seconds());
        assert!(cpu >= 0.02, "a busy loop of {wall:.3}s counted {cpu:.3} CPU-s");
        // Other test threads may run meanwhile; no more than every core busy.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        assert!(
            cpu <= wall * cores + 0.05,
            "{cpu:.3} CPU-s in {wall:.3}s on {cores} cores"
        );
    }
}
