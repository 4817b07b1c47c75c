//! The Auth preflight: before anything is sent, what the project's `/token` limit allows this run.
//! GoTrue keeps one bucket per client address for `/token` (password and refresh grants alike): it
//! holds `burst` calls and refills `per_5min` every five minutes. From one address (no IP
//! forwarding), provisioning N agents takes (N − burst) / rate once the burst is spent, and a
//! steady fleet's refreshes (one per agent per refresh period) must fit the refill. With IP
//! forwarding each agent has its own bucket and shares nothing.

use std::time::Duration;

use fleetbench_fleet::target::AuthLimit;
use fleetbench_scenario::Plan;

/// What the limit allows the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Preflight {
    /// Agents this process provisions.
    pub agents: u32,
    pub forwarding: bool,
    /// `None`: no limit (the `unlimited` local stack).
    pub limit: Option<AuthLimit>,
    /// Seconds of sign-ins before the load can start (zero within the burst, or with forwarding).
    pub provisioning_s: f64,
    /// `/token` calls a steady fleet's refreshes need per hour, and what the bucket refills.
    pub refreshes_per_hour: f64,
    pub refills_per_hour: f64,
    /// Why the plan cannot be met as it stands; empty when it can.
    pub problems: Vec<String>,
}

/// The preflight of `plan` against `limit`, with access tokens living `token_lifetime` and
/// provisioning allowed at most `max_provisioning`.
pub fn preflight(
    plan: &Plan,
    limit: Option<AuthLimit>,
    forwarding: bool,
    token_lifetime: Duration,
    max_provisioning: Duration,
) -> Preflight {
    let agents = (0..plan.agents_needed())
        .filter(|&i| plan.in_shard(i))
        .count() as u32;
    let lifetime = token_lifetime.as_secs() as i64;
    let lead = fleetbench_fleet::agent::refresh_lead(plan.refresh_margin, lifetime);
    let period = (lifetime as f64 - lead).max(1.0);
    let mut p = Preflight {
        agents,
        forwarding,
        limit,
        provisioning_s: 0.0,
        refreshes_per_hour: f64::from(agents) * 3600.0 / period,
        refills_per_hour: f64::INFINITY,
        problems: Vec::new(),
    };
    let Some(l) = limit.filter(|_| !forwarding) else {
        return p;
    };
    let rate = l.per_second();
    p.refills_per_hour = rate * 3600.0;
    p.provisioning_s = f64::from(agents.saturating_sub(l.burst)) / rate.max(1e-9);
    if p.provisioning_s > max_provisioning.as_secs_f64() {
        p.problems.push(format!(
            "provisioning {agents} agents from one address takes {} at {} sign-ins per 5 min after a \
             burst of {} (at most {} allowed)",
            minutes(p.provisioning_s),
            l.per_5min,
            l.burst,
            minutes(max_provisioning.as_secs_f64())
        ));
    }
    if p.refreshes_per_hour > p.refills_per_hour {
        p.problems.push(format!(
            "{agents} agents refreshing every {} need {:.0} /token calls an hour; one address gets {:.0}",
            minutes(period),
            p.refreshes_per_hour,
            p.refills_per_hour
        ));
    }
    p
}

/// `s` seconds as minutes and seconds.
fn minutes(s: f64) -> String {
    let s = s.round() as u64;
    match (s / 60, s % 60) {
        (0, s) => format!("{s} s"),
        (m, 0) => format!("{m} min"),
        (m, s) => format!("{m} min {s} s"),
    }
}

impl Preflight {
    /// The preflight in a few lines, as `run` prints it.
    pub fn describe(&self) -> Vec<String> {
        let mut out = vec![match (self.limit, self.forwarding) {
            (None, _) => format!(
                "{} agents; no /token limit known for this target (a hosted project's default is \
                 150 per 5 min per address: say so in [target] token_rate_limit)",
                self.agents
            ),
            (Some(_), true) => format!(
                "{} agents, each signing in as its own address (IP forwarding): no shared /token bucket",
                self.agents
            ),
            (Some(l), false) => format!(
                "{} agents from one address: /token {} per 5 min, burst {}; provisioning takes {}; \
                 refreshes need {:.0} of {:.0} calls an hour",
                self.agents,
                l.per_5min,
                l.burst,
                minutes(self.provisioning_s),
                self.refreshes_per_hour,
                self.refills_per_hour
            ),
        }];
        out.extend(self.problems.iter().map(|p| format!("cannot: {p}")));
        out
    }

    /// What would make the plan fit, for the refusal.
    pub fn fixes() -> &'static str {
        "turn on the project's IP address forwarding and set FLEETBENCH_IP_FORWARDING=on with \
         SUPABASE_SECRET_KEY; or raise the project's token rate limit and say so in [target] \
         token_rate_limit; or run fewer agents; or spread them over more source addresses (shards on \
         separate machines, --shard I/N); or accept the slower start with --accept-slow-provisioning"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(agents: u32) -> Plan {
        let toml = format!(
            "name = \"t\"\n[fleet]\nagents = {agents}\n[[load.stages]]\nduration = \"1m\"\n\
             agents = {agents}\n[workload]\nsample_interval = \"1s\"\nupload_interval = \"10s\"\n"
        );
        let plan = fleetbench_scenario::load_str(&toml, "t.toml", &[])
            .unwrap()
            .1;
        assert_eq!(
            plan.refresh_margin,
            Duration::from_secs(60),
            "the default margin"
        );
        plan
    }

    #[test]
    fn one_address_takes_the_burst_then_the_refill() {
        // 1,000 agents at the hosted default: 30 at once, then 970 at 0.5/s = 1,940 s.
        let hour = Duration::from_secs(3600);
        let p = preflight(
            &plan(1000),
            Some(AuthLimit::HOSTED),
            false,
            hour,
            Duration::from_secs(600),
        );
        assert_eq!(p.provisioning_s, 1940.0);
        // Hour tokens refreshed 60 s early: 1,000 × 3,600 / 3,540 an hour against 1,800.
        assert!((p.refreshes_per_hour - 1000.0 * 3600.0 / 3540.0).abs() < 1e-6);
        assert_eq!(p.refills_per_hour, 1800.0);
        assert_eq!(p.problems.len(), 1, "{:?}", p.problems);
        assert!(p.problems[0].contains("32 min 20 s"), "{:?}", p.problems);
        // 2,000 agents also outrun the refill with their refreshes.
        let p = preflight(
            &plan(2000),
            Some(AuthLimit::HOSTED),
            false,
            hour,
            Duration::from_secs(600),
        );
        assert_eq!(p.problems.len(), 2, "{:?}", p.problems);
        // Within the burst, or with forwarding, or with no limit: nothing to wait for.
        for p in [
            preflight(
                &plan(30),
                Some(AuthLimit::HOSTED),
                false,
                hour,
                Duration::ZERO,
            ),
            preflight(
                &plan(5000),
                Some(AuthLimit::HOSTED),
                true,
                hour,
                Duration::ZERO,
            ),
            preflight(&plan(5000), None, false, hour, Duration::ZERO),
        ] {
            assert_eq!((p.provisioning_s, p.problems.len()), (0.0, 0), "{p:?}");
        }
    }
}
