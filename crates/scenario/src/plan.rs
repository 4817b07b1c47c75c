//! The validated scenario as numbers: every load shape reduces to one plan, the target number of
//! active agents as a piecewise-linear function of elapsed time, plus the workload's cadences and
//! mixes (normalised) and the parsed thresholds.

use std::time::Duration;

use serde::Serialize;

use crate::model::LoadModel;
use crate::threshold::Threshold;

/// `[delivery]`: shares of the plan a run must deliver to pass.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DeliveryPlan {
    /// The least share of planned agents that must run.
    pub agents: f64,
    /// The most share of planned uploads that may be dropped.
    pub dropped: f64,
}

impl Default for DeliveryPlan {
    fn default() -> DeliveryPlan {
        DeliveryPlan {
            agents: 1.0,
            dropped: 0.01,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub name: String,
    pub agents: u32,
    pub seed: u64,
    pub provision_concurrency: u32,
    /// HTTP connections the fleet shares.
    pub connections: u32,
    pub model: LoadModel,
    /// (device profile, share), shares summing to 1.
    pub profiles: Vec<(String, f64)>,
    /// (end of stage since the start, level at that end): agents, or uploads per second for
    /// [`LoadModel::ArrivalRate`].
    pub stages: Vec<(Duration, f64)>,
    pub grace: Duration,
    pub sample_interval: Duration,
    pub upload_interval: Duration,
    pub batch_rows: u32,
    /// (ingestion path, share), shares summing to 1.
    pub ingest: Vec<(String, f64)>,
    /// (anomaly, share of agents).
    pub anomalies: Vec<(String, f64)>,
    pub refresh_margin: Duration,
    pub think_time: Duration,
    /// Closed model: uploads per agent before it stops (`None`: until the stages end).
    pub iterations: Option<u32>,
    /// A request not answered within this is a `timeout`.
    pub request_timeout: Duration,
    pub max_backlog_rows: u32,
    pub thresholds: Vec<Threshold>,
    pub cleanup: bool,
    /// `[target] token_rate_limit`: the project's `/token` calls per 5 minutes per address.
    pub token_rate_limit: Option<u32>,
    /// The least share of planned agents that must run, the most share of uploads dropped.
    pub delivery: DeliveryPlan,
    pub window: Duration,
    /// `[output] server_metrics`: how often the target's Metrics API is scraped.
    pub server_metrics: ServerMetrics,
    /// `[output] prometheus_remote_write`: where the live series go (every operation is then
    /// aggregated live as well).
    pub prometheus_remote_write: Option<String>,
    pub probes: crate::probes::ProbesPlan,
    /// Profiles from `[fleet] profile_files`, by name.
    pub custom_profiles: Vec<crate::profile::DeviceProfile>,
    pub replay: Option<ReplayPlan>,
    pub collectors: u32,
    /// This process's slice of the run: (shard index, shard count); (0, 1) is the whole run.
    pub shard: (u32, u32),
    /// `[target] allow_hosts`.
    pub allow_hosts: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplayPlan {
    pub traces: Vec<std::path::PathBuf>,
    pub share: f64,
    pub time_scale: f64,
    pub offsets: bool,
    pub jitter: f64,
}

impl Plan {
    /// How long the stages last.
    pub fn duration(&self) -> Duration {
        self.stages.last().map(|s| s.0).unwrap_or_default()
    }

    /// The highest rate of uploads per second the plan asks for.
    pub fn peak_rate(&self) -> f64 {
        let top = self.stages.iter().map(|s| s.1).fold(0.0, f64::max);
        match self.model {
            LoadModel::ArrivalRate => top,
            _ => top / self.upload_interval.as_secs_f64().max(1e-9),
        }
    }

    /// Whether agent `index` belongs to this process's shard.
    pub fn in_shard(&self, index: u32) -> bool {
        index % self.shard.1.max(1) == self.shard.0
    }

    /// How many agents the run provisions: all of them for an arrival rate (any may carry an
    /// upload), otherwise the most any stage asks for.
    pub fn agents_needed(&self) -> u32 {
        match self.model {
            LoadModel::ArrivalRate => self.agents,
            _ => {
                (self.stages.iter().map(|s| s.1).fold(0.0, f64::max).ceil() as u32).min(self.agents)
            }
        }
    }

    /// The level (active agents, or uploads per second) `elapsed` into the run: ramps are linear.
    pub fn active_at(&self, elapsed: Duration) -> f64 {
        let (mut start, mut from) = (Duration::ZERO, 0.0);
        for &(end, to) in &self.stages {
            if elapsed < end {
                let span = (end - start).as_secs_f64();
                let f = if span > 0.0 {
                    (elapsed - start).as_secs_f64() / span
                } else {
                    1.0
                };
                return from + (to - from) * f;
            }
            (start, from) = (end, to);
        }
        0.0
    }

    /// When upload number `k` (0-based) of an arrival-rate run starts: the moment the integral of
    /// the rate reaches `k` (so a constant rate `r` gives `k / r`). `None` after the stages end.
    pub fn arrival(&self, k: u64) -> Option<Duration> {
        let mut need = k as f64;
        let (mut start, mut from) = (Duration::ZERO, 0.0);
        for &(end, to) in &self.stages {
            let span = (end - start).as_secs_f64();
            let total = span * (from + to) / 2.0;
            if need < total || (need == 0.0 && total > 0.0) {
                // Solve from·t + (to − from)·t²/(2·span) = need in the form that stays exact as
                // the ramp flattens: t = 2·need / (from + √(from² + 4·a·need)), a = (to − from)/(2·span).
                let a = (to - from) / (2.0 * span);
                let root = (from * from + 4.0 * a * need).max(0.0).sqrt();
                let t = if from + root > 0.0 {
                    2.0 * need / (from + root)
                } else {
                    0.0
                };
                return Some(start + Duration::from_secs_f64(t.min(span)));
            }
            need -= total;
            (start, from) = (end, to);
        }
        None
    }

    /// When agent number `index` (0-based) becomes active: the first moment the target reaches
    /// `index + 1`. `None` if it never does.
    pub fn activation(&self, index: u32) -> Option<Duration> {
        let need = f64::from(index) + 1.0;
        let (mut start, mut from) = (Duration::ZERO, 0.0);
        for &(end, to_f) in &self.stages {
            if to_f >= need && from < need {
                let span = (end - start).as_secs_f64();
                let f = if to_f > from {
                    (need - from) / (to_f - from)
                } else {
                    0.0
                };
                return Some(start + Duration::from_secs_f64(span * f));
            }
            if from >= need && to_f >= need {
                return Some(start);
            }
            (start, from) = (end, to_f);
        }
        None
    }

    /// When agent `index` stops: the first moment after its activation that the target drops below
    /// `index + 1`, or the end of the stages.
    pub fn deactivation(&self, index: u32) -> Duration {
        let need = f64::from(index) + 1.0;
        let (mut start, mut from) = (Duration::ZERO, 0.0);
        let mut active = false;
        for &(end, to_f) in &self.stages {
            if !active && to_f >= need {
                active = true;
            }
            if active && to_f < need && from >= need {
                let span = (end - start).as_secs_f64();
                let f = (from - need) / (from - to_f);
                return start + Duration::from_secs_f64(span * f.clamp(0.0, 1.0));
            }
            (start, from) = (end, to_f);
        }
        self.duration()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(stages: &[(u64, u32)]) -> Plan {
        let mut end = Duration::ZERO;
        Plan {
            name: "t".into(),
            agents: 100,
            seed: 1,
            provision_concurrency: 1,
            connections: 1,
            model: LoadModel::Agents,
            profiles: vec![],
            stages: stages
                .iter()
                .map(|&(d, a)| {
                    end += Duration::from_secs(d);
                    (end, f64::from(a))
                })
                .collect(),
            grace: Duration::ZERO,
            sample_interval: Duration::from_secs(1),
            upload_interval: Duration::from_secs(10),
            batch_rows: 10,
            ingest: vec![],
            anomalies: vec![],
            refresh_margin: Duration::ZERO,
            think_time: Duration::ZERO,
            iterations: None,
            request_timeout: Duration::from_secs(30),
            max_backlog_rows: 0,
            thresholds: vec![],
            cleanup: false,
            token_rate_limit: None,
            delivery: DeliveryPlan::default(),
            window: Duration::from_secs(1),
            server_metrics: ServerMetrics::Off,
            prometheus_remote_write: None,
            probes: Default::default(),
            custom_profiles: vec![],
            replay: None,
            collectors: 0,
            shard: (0, 1),
            allow_hosts: vec![],
        }
    }

    #[test]
    fn ramps_are_linear_and_holds_flat() {
        let p = plan(&[(10, 100), (20, 100), (10, 0)]);
        assert_eq!(p.duration(), Duration::from_secs(40));
        assert!((p.active_at(Duration::from_secs(5)) - 50.0).abs() < 1e-9);
        assert!((p.active_at(Duration::from_secs(25)) - 100.0).abs() < 1e-9);
        assert!((p.active_at(Duration::from_secs(35)) - 50.0).abs() < 1e-9);
        // Agent 49 (the 50th) starts at 5 s and, ramping down, stops when the target falls below 50.
        assert_eq!(p.activation(49), Some(Duration::from_secs(5)));
        assert_eq!(p.activation(0), Some(Duration::from_millis(100)));
        assert_eq!(p.activation(100), None);
        let stop = p.deactivation(49);
        assert!((stop.as_secs_f64() - 35.0).abs() < 1e-6, "{stop:?}");
        // Active agents at any moment = floor(target): agent i runs on [activation(i), deactivation(i)).
        for t in [1.05, 5.55, 12.0, 31.35, 36.75, 39.95] {
            let at = Duration::from_secs_f64(t);
            let active = (0..100)
                .filter(|&i| p.activation(i).is_some_and(|a| a <= at) && at < p.deactivation(i))
                .count();
            assert_eq!(active as f64, p.active_at(at).floor(), "at {t} s");
        }
        // A step: all agents from zero.
        let step = plan(&[(0, 10), (5, 10)]);
        assert_eq!(step.activation(9), Some(Duration::ZERO));
        assert_eq!(step.deactivation(9), Duration::from_secs(5));
    }

    #[test]
    fn arrivals_follow_the_integral_of_the_rate() {
        // 10/s for 10 s, then a ramp from 10/s to 30/s over 10 s (200 more), then nothing.
        let mut p = plan(&[(10, 10), (10, 30)]);
        p.stages[0].1 = 10.0;
        p.stages.insert(0, (Duration::ZERO, 10.0));
        assert_eq!(p.arrival(0), Some(Duration::ZERO));
        assert_eq!(p.arrival(55), Some(Duration::from_secs_f64(5.5)));
        // In the ramp, rate(t) = 10 + 2t, so 100 + 10t + t² arrivals by 10 + t.
        for k in [100u64, 101, 150, 250, 299] {
            let t = (-10.0 + (100.0 + 4.0 * (k as f64 - 100.0)).sqrt()) / 2.0;
            let got = p.arrival(k).unwrap().as_secs_f64();
            assert!(
                (got - (10.0 + t)).abs() < 1e-6,
                "arrival {k}: {got} vs {}",
                10.0 + t
            );
        }
        assert_eq!(p.arrival(300), None);
        // Counting arrivals per second recovers the rate.
        let in_second = |s: f64| {
            (0..300)
                .filter(|&k| {
                    let t = p.arrival(k).unwrap().as_secs_f64();
                    t >= s && t < s + 1.0
                })
                .count()
        };
        assert_eq!(in_second(3.0), 10);
        assert_eq!(in_second(14.0), 10 + 2 * 4 + 1);
    }
}

/// How often a run scrapes the target's Metrics API (`[output] server_metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ServerMetrics {
    /// `"off"` (or a zero duration).
    Off,
    /// A duration the scenario gives.
    Every(Duration),
    /// Not given: every 60 s against a remote project (Supabase's advice for its Metrics API),
    /// every 5 s against a local stack.
    Default,
}

impl ServerMetrics {
    /// The interval for a target that is remote or not; `None` when off.
    pub fn every(self, remote: bool) -> Option<Duration> {
        match self {
            ServerMetrics::Off => None,
            ServerMetrics::Every(d) => Some(d),
            ServerMetrics::Default => Some(Duration::from_secs(if remote { 60 } else { 5 })),
        }
    }
}
