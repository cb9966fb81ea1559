//! Samples of durations, their percentiles, and the PASS/MISS verdict lines.
use std::time::Duration;

/// Durations of one kind of log entry.
#[derive(Default)]
pub struct Samples {
    v: Vec<Duration>,
}

impl Samples {
    pub fn push(&mut self, d: Duration) {
        self.v.push(d);
    }

    pub fn len(&self) -> usize {
        self.v.len()
    }

    pub fn total(&self) -> Duration {
        self.v.iter().sum()
    }

    /// The `p`-th percentile (nearest rank), `None` without samples.
    pub fn pct(&self, p: f64) -> Option<Duration> {
        if self.v.is_empty() {
            return None;
        }
        let mut s = self.v.clone();
        s.sort_unstable();
        let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
        Some(s[rank.clamp(1, s.len()) - 1])
    }

    /// `n=…  p50=… p99=… max=…` in milliseconds.
    pub fn summary(&self) -> String {
        let ms = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
        format!(
            "n={:<6} p50={:8.3} ms  p99={:8.3} ms  max={:8.3} ms",
            self.len(),
            ms(self.pct(50.0)),
            ms(self.pct(99.0)),
            ms(self.pct(100.0))
        )
    }
}

/// One target's line: `PASS`/`MISS`, what was measured, the number and the bar.
pub fn verdict(name: &str, value: f64, unit: &str, bar: f64, higher_is_better: bool) {
    let ok = if higher_is_better { value >= bar } else { value <= bar };
    let cmp = if higher_is_better { ">=" } else { "<=" };
    println!(
        "{} {name}: {value:.3} {unit} (target {cmp} {bar} {unit})",
        if ok { "PASS" } else { "MISS" }
    );
}

pub fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
