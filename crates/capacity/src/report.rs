//! The capacity report (`capacity.json`): what the search found, which limit binds, and the model
//! per Supabase compute size, each estimate marked measured or extrapolated.

use fleetbench_scenario::Plan;
use serde::{Deserialize, Serialize};

use crate::search::SearchOutcome;

/// A Supabase compute size as Supabase publishes it (the compute-and-disk docs: CPUs and
/// connection limits; the pooler's default pool size per size).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ComputeSize {
    pub name: &'static str,
    /// CPUs, as the Metrics API's node_exporter counts them.
    pub cpus: f64,
    /// Below Large the CPUs are shared and burstable: sustained load may get less than them.
    pub burstable: bool,
    /// Postgres' `max_connections` ("direct connections").
    pub max_connections: u32,
    /// The shared pooler's client limit.
    pub pooler_clients: u32,
    /// The pooler's default pool size (server connections per user, database and mode).
    pub pool_size: u32,
}

const fn size(
    name: &'static str,
    cpus: f64,
    burstable: bool,
    (max_connections, pooler_clients, pool_size): (u32, u32, u32),
) -> ComputeSize {
    ComputeSize {
        name,
        cpus,
        burstable,
        max_connections,
        pooler_clients,
        pool_size,
    }
}

/// Supabase's compute sizes, Nano to 16XL.
pub const SIZES: &[ComputeSize] = &[
    size("Nano", 2.0, true, (60, 200, 15)),
    size("Micro", 2.0, true, (60, 200, 15)),
    size("Small", 2.0, true, (90, 400, 15)),
    size("Medium", 2.0, true, (120, 600, 15)),
    size("Large", 2.0, false, (160, 800, 20)),
    size("XL", 4.0, false, (240, 1_000, 20)),
    size("2XL", 8.0, false, (380, 1_500, 25)),
    size("4XL", 16.0, false, (480, 3_000, 32)),
    size("8XL", 32.0, false, (490, 6_000, 64)),
    size("12XL", 48.0, false, (500, 9_000, 96)),
    size("16XL", 64.0, false, (500, 12_000, 128)),
];

/// The size named `name`, any case.
pub fn compute_size(name: &str) -> Option<&'static ComputeSize> {
    SIZES
        .iter()
        .find(|s| s.name.eq_ignore_ascii_case(name.trim()))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Estimate {
    pub size: String,
    pub agents: f64,
    /// `measured` or `extrapolated`.
    pub basis: String,
    pub binds: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    pub target: String,
    /// `agents` or `uploads/s`.
    pub unit: String,
    pub slo: Vec<String>,
    pub warmup_s: f64,
    pub hold_s: f64,
    pub outcome: SearchOutcome,
    /// Uploads per second at the knee.
    pub knee_uploads_per_s: Option<f64>,
    pub knee_agents: Option<f64>,
    /// The resource that saturated where the SLO broke, or why none is named.
    pub binding: String,
    pub confidence: String,
    /// The target's compute size and where it was read (`Micro (Management API)`), or why it is
    /// unknown; the model starts from it.
    #[serde(default)]
    pub target_size: String,
    /// One estimate per compute size; empty when the target's size is unknown (nothing is
    /// extrapolated from the load generator's machine).
    pub model: Vec<Estimate>,
}

/// The resource at 80 % or more of its limit where the SLO broke, or why none is named.
pub fn binding(out: &SearchOutcome) -> String {
    let Some(at) = out.broke_at else {
        return "none: every level up to the maximum held the SLO".into();
    };
    let step = out.steps.iter().find(|s| s.level == at);
    let saturated = step.and_then(|s| {
        s.resources
            .iter()
            .filter_map(|(n, v, l)| match l {
                Some(l) if *l > 0.0 => Some((n.clone(), v / l, *v, *l)),
                None if n.contains("waiting") && *v > 0.0 => Some((n.clone(), 1.0, *v, 0.0)),
                _ => None,
            })
            .filter(|r| r.1 >= 0.8)
            .max_by(|a, b| a.1.total_cmp(&b.1))
    });
    // Cores and other small quantities keep their decimals.
    let show = |x: f64| {
        if x < 10.0 {
            format!("{x:.2}")
        } else {
            format!("{x:.0}")
        }
    };
    match saturated {
        Some((n, _, v, l)) if l > 0.0 => format!("{n}: {} of {} at {at}", show(v), show(l)),
        Some((n, _, v, _)) => format!("{n}: {} at {at}", show(v)),
        None => format!(
            "no visible resource was near its limit at {at}; the SLO broke on {} (the target's own throughput)",
            out.broke_first.as_deref().unwrap_or("latency")
        ),
    }
}

/// Agents per compute size from the knee (`knee_agents`, measured on the target's compute size
/// `measured_size`): scaled by the sizes' CPU cores, capped by the pooler's client limit for the
/// share of agents on the pooler path. Empty when the target's size is unknown or not one of
/// [`SIZES`]: nothing is extrapolated from a size that was not measured.
pub fn model(knee_agents: Option<f64>, plan: &Plan, measured_size: Option<&str>) -> Vec<Estimate> {
    let (Some(k), Some(measured)) = (knee_agents, measured_size) else {
        return Vec::new();
    };
    let Some(at) = compute_size(measured) else {
        return Vec::new();
    };
    let pooler_share = plan
        .ingest
        .iter()
        .find(|(p, _)| p == "pooler")
        .map_or(0.0, |(_, s)| *s);
    SIZES
        .iter()
        .map(|size| {
            let (name, clients) = (size.name, size.pooler_clients);
            let measured = name == at.name;
            let cpu = k * size.cpus / at.cpus;
            // An agent on the pooler path holds a pooled client connection of its own.
            let pooled = if pooler_share > 0.0 {
                f64::from(clients) / pooler_share
            } else {
                f64::INFINITY
            };
            let (agents, binds) = if pooled < cpu {
                (pooled, format!("pooler max clients ({clients})"))
            } else if measured {
                (cpu, "the measured knee".into())
            } else {
                let burst = if size.burstable || at.burstable {
                    "; burstable CPUs below Large: sustained load may get less"
                } else {
                    ""
                };
                (
                    cpu,
                    format!(
                        "CPU ({} cores vs {}'s {}{burst})",
                        size.cpus, at.name, at.cpus
                    ),
                )
            };
            Estimate {
                size: name.to_string(),
                agents: agents.floor(),
                basis: if measured { "measured" } else { "extrapolated" }.into(),
                binds,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        fleetbench_scenario::load_str(
            "name = \"m\"\n[fleet]\nagents = 10\n[[load.stages]]\nduration = \"1s\"\nagents = 10\n[workload]\nsample_interval = \"1s\"\nupload_interval = \"10s\"\ningest = { rest = 1.0 }\n",
            "m.toml",
            &[],
        )
        .unwrap()
        .1
    }

    #[test]
    fn the_binding_resource_is_the_one_nearest_its_limit_where_the_slo_broke() {
        let step = |level: f64, cpu: f64| crate::search::Step {
            level,
            resources: vec![
                ("load generator CPU %".into(), 40.0, Some(100.0)),
                (
                    "database CPU (cores busy, of the compute size's 1)".into(),
                    cpu,
                    Some(1.0),
                ),
                ("database connections".into(), 20.0, Some(60.0)),
            ],
            ..Default::default()
        };
        let mut out = crate::search::SearchOutcome {
            steps: vec![step(10.0, 0.4), step(20.0, 0.93)],
            knee: Some(10.0),
            broke_at: Some(20.0),
            ..Default::default()
        };
        assert_eq!(
            binding(&out),
            "database CPU (cores busy, of the compute size's 1): 0.93 of 1.00 at 20"
        );
        out.steps[1] = step(20.0, 0.5);
        assert!(binding(&out).starts_with("no visible resource was near its limit at 20"));
    }

    #[test]
    fn the_model_starts_from_the_target_s_size_or_says_nothing() {
        let p = plan();
        assert!(model(Some(100.0), &p, None).is_empty());
        assert!(model(Some(100.0), &p, Some("Huge")).is_empty());
        let m = model(Some(100.0), &p, Some("micro"));
        let row = |s: &str| m.iter().find(|e| e.size == s).unwrap();
        assert_eq!(
            (row("Micro").agents, row("Micro").basis.as_str()),
            (100.0, "measured")
        );
        // Micro shows 2 CPUs, as hosted's node_exporter counts them.
        assert_eq!(row("XL").agents, 200.0);
        assert_eq!(
            row("XL").binds,
            "CPU (4 cores vs Micro's 2; burstable CPUs below Large: sustained load may get less)"
        );
        assert_eq!(
            row("4XL").binds,
            "CPU (16 cores vs Micro's 2; burstable CPUs below Large: sustained load may get less)"
        );
        assert_eq!(row("XL").basis, "extrapolated");
    }
}
