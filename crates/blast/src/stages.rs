//! Load stages (`--stages 10s:100,30s:100..500,10s:0`): a piecewise load
//! profile of steps and linear ramps.
//!
//! In `rate` mode (open loop) each value is messages per second and the
//! schedule puts send number `j` (counted over all shards) at the time the
//! integral of the rate reaches `j`; in `concurrency` mode (closed loop)
//! each value is a number of connections, and connection slot `g` is busy
//! while the (possibly ramping) value is at least `g + 0.5`. The run lasts
//! exactly the sum of the stage durations.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::BlastError;
use mailstorm_config::format_duration;

/// What the stage values mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StagesMode {
    /// Open loop: messages per second.
    #[default]
    Rate,
    /// Closed loop: connections sending back to back.
    Concurrency,
}

/// One stage: `duration:value` (a step) or `duration:from..to` (a ramp).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadStage {
    /// How long the stage lasts.
    pub duration: Duration,
    /// The value at the stage's start.
    pub from: f64,
    /// The value at the stage's end (equal to `from` for a step).
    pub to: f64,
}

impl LoadStage {
    /// The value `tau` seconds into the stage.
    fn value_at(&self, tau: f64) -> f64 {
        let d = self.duration.as_secs_f64();
        if d <= 0.0 {
            return self.to;
        }
        self.from + (self.to - self.from) * (tau / d).clamp(0.0, 1.0)
    }

    /// Integral of the value over the whole stage.
    fn area(&self) -> f64 {
        (self.from + self.to) / 2.0 * self.duration.as_secs_f64()
    }

    /// The `tau` in the stage where the integral from its start reaches `x`
    /// (`0 <= x < area`).
    fn invert(&self, x: f64) -> f64 {
        let d = self.duration.as_secs_f64();
        let a = self.from;
        let c2 = (self.to - self.from) / (2.0 * d);
        // c2·τ² + a·τ − x = 0, in the form that is stable for c2 → 0.
        let disc = (a * a + 4.0 * c2 * x).max(0.0);
        let den = a + disc.sqrt();
        if den <= 0.0 {
            0.0
        } else {
            (2.0 * x / den).min(d)
        }
    }
}

/// A parsed `--stages` list.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadStages {
    stages: Vec<LoadStage>,
    /// Stage start offsets, seconds.
    starts: Vec<f64>,
    /// Integral of the value up to each stage's start.
    cum: Vec<f64>,
}

/// Longest allowed stage list.
pub const MAX_STAGES: usize = 1000;

impl LoadStages {
    /// Builds the list.
    pub fn new(stages: Vec<LoadStage>) -> Result<LoadStages, BlastError> {
        if stages.is_empty() {
            return Err(BlastError::Config("--stages: no stage given".into()));
        }
        if stages.len() > MAX_STAGES {
            return Err(BlastError::Config(format!(
                "--stages: at most {MAX_STAGES} stages"
            )));
        }
        let (mut t, mut n) = (0.0, 0.0);
        let (mut starts, mut cum) = (Vec::new(), Vec::new());
        for s in &stages {
            if !(s.from.is_finite() && s.to.is_finite() && s.from >= 0.0 && s.to >= 0.0) {
                return Err(BlastError::Config(
                    "--stages: values must be non-negative numbers".into(),
                ));
            }
            if s.duration.is_zero() {
                return Err(BlastError::Config(
                    "--stages: every stage needs a positive duration".into(),
                ));
            }
            starts.push(t);
            cum.push(n);
            t += s.duration.as_secs_f64();
            n += s.area();
        }
        if stages.iter().all(|s| s.from == 0.0 && s.to == 0.0) {
            return Err(BlastError::Config("--stages: every stage is zero".into()));
        }
        Ok(LoadStages {
            stages,
            starts,
            cum,
        })
    }

    /// Parses `10s:100,30s:100..500,10s:0`.
    pub fn parse(s: &str) -> Result<LoadStages, BlastError> {
        let bad = |why: &str| BlastError::Config(format!("--stages {s:?}: {why}"));
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (d, v) = part
                .split_once(':')
                .ok_or_else(|| bad("expected DURATION:VALUE or DURATION:FROM..TO"))?;
            let duration = mailstorm_config::parse_duration(d).map_err(|e| bad(&e.to_string()))?;
            let num = |t: &str| {
                t.trim()
                    .parse::<f64>()
                    .map_err(|_| bad(&format!("{t:?} is not a number")))
            };
            let (from, to) = match v.split_once("..") {
                Some((a, b)) => (num(a)?, num(b)?),
                None => (num(v)?, num(v)?),
            };
            out.push(LoadStage { duration, from, to });
        }
        LoadStages::new(out).map_err(|e| bad(&e.to_string().replace("--stages: ", "")))
    }

    /// The stages.
    pub fn stages(&self) -> &[LoadStage] {
        &self.stages
    }

    /// Sum of the stage durations: the run's length.
    pub fn total(&self) -> Duration {
        self.stages.iter().map(|s| s.duration).sum()
    }

    /// The largest value any stage reaches.
    pub fn max_value(&self) -> f64 {
        self.stages
            .iter()
            .map(|s| s.from.max(s.to))
            .fold(0.0, f64::max)
    }

    /// Integral of the value over the whole run (rate mode: the number of
    /// sends scheduled).
    pub fn total_area(&self) -> f64 {
        let last = self.stages.len() - 1;
        self.cum[last] + self.stages[last].area()
    }

    /// The stage running `t` after the start (the last one past the end).
    pub fn index_at(&self, t: Duration) -> usize {
        let t = t.as_secs_f64();
        self.starts.partition_point(|&s| s <= t).saturating_sub(1)
    }

    /// The value `t` after the start (0 past the end).
    pub fn value_at(&self, t: Duration) -> f64 {
        if t >= self.total() {
            return 0.0;
        }
        let i = self.index_at(t);
        self.stages[i].value_at(t.as_secs_f64() - self.starts[i])
    }

    /// Rate mode: when send number `j` (over all shards) is due, as an
    /// offset from the start; `None` once the stages are over. This is the
    /// last moment at which the rate's integral is still `<= j`, so sends
    /// are spread exactly as the rate says and a leading zero stage is a
    /// pause.
    pub fn send_time(&self, j: u64) -> Option<Duration> {
        let j = j as f64;
        for (i, s) in self.stages.iter().enumerate() {
            let end = self.cum[i] + s.area();
            if j < end {
                let tau = s.invert(j - self.cum[i]);
                return Some(Duration::from_secs_f64(self.starts[i] + tau));
            }
        }
        None
    }

    /// Concurrency mode: whether connection slot `g` is busy at `t`.
    pub fn slot_active(&self, g: u32, t: Duration) -> bool {
        self.value_at(t) >= f64::from(g) + 0.5
    }

    /// Concurrency mode: the earliest offset at or after `t` at which slot
    /// `g` is busy; `None` if it never is again.
    pub fn slot_next_active(&self, g: u32, t: Duration) -> Option<Duration> {
        let need = f64::from(g) + 0.5;
        let t = t.as_secs_f64();
        for (i, s) in self.stages.iter().enumerate() {
            let (start, d) = (self.starts[i], s.duration.as_secs_f64());
            if start + d <= t {
                continue;
            }
            let lo = (t - start).max(0.0);
            if s.value_at(lo) >= need {
                return Some(Duration::from_secs_f64(start + lo));
            }
            if s.to > s.from && s.to >= need {
                // Rising ramp: solve from + (to − from)·τ/d = need.
                let tau = (need - s.from) / (s.to - s.from) * d;
                if tau < d {
                    // Round up a little so the check at wake-up holds.
                    let at = start + tau.max(lo) + 1e-6;
                    return Some(Duration::from_secs_f64(at.min(start + d)));
                }
            }
        }
        None
    }
}

impl fmt::Display for LoadStages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.stages.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}:{}", format_duration(s.duration), s.from)?;
            if s.to != s.from {
                write!(f, "..{}", s.to)?;
            }
        }
        Ok(())
    }
}

impl Serialize for LoadStages {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for LoadStages {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<LoadStages, D::Error> {
        let s = String::deserialize(d)?;
        LoadStages::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(x: f64) -> Duration {
        Duration::from_secs_f64(x)
    }

    #[test]
    fn parse_and_print() {
        let s = LoadStages::parse("10s:100, 30s:100..500,500ms:0").unwrap();
        assert_eq!(s.stages().len(), 3);
        assert_eq!(s.total(), secs(40.5));
        assert_eq!(s.max_value(), 500.0);
        assert_eq!(s.to_string(), "10s:100,30s:100..500,500ms:0");
        assert_eq!(LoadStages::parse(&s.to_string()).unwrap(), s);
        for bad in ["", "10s", "0s:5", "1s:-1", "1s:x", "1s:0,2s:0", "1s:1..y"] {
            assert!(LoadStages::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn send_times_follow_steps_and_ramps() {
        let s = LoadStages::parse("1s:0,2s:100,2s:0..200,1s:0").unwrap();
        assert_eq!(s.total_area(), 400.0);
        // The leading zero stage is a pause.
        assert_eq!(s.send_time(0), Some(secs(1.0)));
        assert_eq!(s.send_time(100), Some(secs(2.0)));
        // Count per stage by where each send falls.
        let mut per = [0u32; 4];
        let mut j = 0;
        while let Some(t) = s.send_time(j) {
            per[s.index_at(t)] += 1;
            j += 1;
        }
        assert_eq!(per, [0, 200, 200, 0]);
        // In the ramp the rate grows linearly: the first half of it holds a
        // quarter of its sends.
        let first_half = (200..400)
            .filter(|&j| s.send_time(j).unwrap() < secs(4.0))
            .count();
        assert_eq!(first_half, 50);
        // Falling ramp.
        let d = LoadStages::parse("2s:100..0").unwrap();
        let last = d.send_time(99).unwrap();
        assert!(last < secs(2.0) && last > secs(1.7), "{last:?}");
        assert_eq!(d.send_time(100), None);
    }

    #[test]
    fn concurrency_slots() {
        let s = LoadStages::parse("1s:2,2s:0..4,1s:0").unwrap();
        assert!(s.slot_active(1, secs(0.5)));
        assert!(!s.slot_active(2, secs(0.5)));
        assert_eq!(s.slot_next_active(0, secs(0.2)), Some(secs(0.2)));
        // Slot 2 needs value 2.5: 1.25 s into the ramp.
        let t = s.slot_next_active(2, secs(0.2)).unwrap();
        assert!((t.as_secs_f64() - 2.25).abs() < 1e-3, "{t:?}");
        assert!(s.slot_active(2, t));
        assert_eq!(s.slot_next_active(4, secs(0.0)), None);
        assert!(!s.slot_active(0, secs(3.5)));
        assert_eq!(s.slot_next_active(0, secs(3.5)), None);
    }
}
