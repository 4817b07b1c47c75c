//! The capacity report (`capacity.json`): what the search found, which limit binds, and the model
//! per Supabase compute size, each estimate marked measured or extrapolated.

use fleetbench_scenario::Plan;
use serde::{Deserialize, Serialize};

use crate::search::SearchOutcome;

/// Supabase compute sizes (from Supabase's compute docs): name, CPU cores (shared counted as their share),
/// database max connections, pooler max clients.
pub const SIZES: &[(&str, f64, u32, u32)] = &[
    ("Nano", 0.5, 60, 200),
    ("Micro", 1.0, 60, 200),
    ("Small", 1.0, 90, 400),
    ("Medium", 1.5, 120, 600),
    ("Large", 2.0, 160, 800),
    ("XL", 4.0, 240, 1_000),
    ("2XL", 8.0, 380, 1_500),
    ("4XL", 16.0, 480, 3_000),
    ("8XL", 32.0, 490, 6_000),
    ("12XL", 48.0, 500, 9_000),
    ("16XL", 64.0, 500, 12_000),
];

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
    match saturated {
        Some((n, _, v, l)) if l > 0.0 => format!("{n}: {v:.0} of {l:.0} at {at}"),
        Some((n, _, v, _)) => format!("{n}: {v:.0} at {at}"),
        None => format!(
            "no visible resource was near its limit at {at}; the SLO broke on {} (the target's own throughput)",
            out.broke_first.as_deref().unwrap_or("latency")
        ),
    }
}

/// Agents per compute size from the knee (`knee_agents`, measured on `cores` CPU cores, or on the
/// size named `measured_size`): scaled by CPU cores, capped by the pooler's client limit for the
/// share of agents on the pooler path.
pub fn model(
    knee_agents: Option<f64>,
    plan: &Plan,
    measured_size: Option<&str>,
    cores: f64,
) -> Vec<Estimate> {
    let Some(k) = knee_agents else {
        return Vec::new();
    };
    let pooler_share = plan
        .ingest
        .iter()
        .find(|(p, _)| p == "pooler")
        .map_or(0.0, |(_, s)| *s);
    SIZES
        .iter()
        .map(|(name, size_cores, _db, clients)| {
            let measured = measured_size.is_some_and(|m| m.eq_ignore_ascii_case(name));
            let cpu = if measured { k } else { k * size_cores / cores };
            // An agent on the pooler path holds a pooled client connection of its own.
            let pooled = if pooler_share > 0.0 {
                f64::from(*clients) / pooler_share
            } else {
                f64::INFINITY
            };
            let (agents, binds) = if pooled < cpu {
                (pooled, format!("pooler max clients ({clients})"))
            } else {
                (
                    cpu,
                    if measured {
                        "the measured knee".into()
                    } else {
                        format!("CPU ({size_cores} cores vs {cores} measured)")
                    },
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
