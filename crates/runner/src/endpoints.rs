//! Where a run sends: the project's API with its keys, and the SQL URLs it may use. Secrets stay in
//! here; what outputs may show is [`redact`]ed.

use fleetbench_fleet::TargetConfig;

#[derive(Clone)]
pub struct Endpoints {
    pub config: TargetConfig,
    /// Where cleanup and checks run SQL (session pooler or direct; never shown).
    pub admin_db_url: Option<String>,
    /// Where the pooler probe's comparison storm goes: Postgres itself locally, the session pooler
    /// remotely (hosted projects' direct host is not in the environment contract).
    pub direct_db_url: Option<String>,
}

impl Endpoints {
    /// The summary's account of the target: its kind and the URL without credentials or path.
    pub fn summary_target(&self) -> fleetbench_metrics::summary::TargetFacts {
        fleetbench_metrics::summary::TargetFacts {
            kind: self.config.kind.clone(),
            url: redact(&self.config.api_url),
        }
    }
}

/// `scheme://host[:port]` of a URL: what outputs may show of it.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or(host);
    format!("{scheme}://{host}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn redaction_keeps_scheme_host_and_port_only() {
        assert_eq!(
            super::redact("postgres://postgres.ref:s3cret@pooler.example:6543/postgres?x=1"),
            "postgres://pooler.example:6543"
        );
        assert_eq!(
            super::redact("https://abc.supabase.co/rest/v1"),
            "https://abc.supabase.co"
        );
    }
}
