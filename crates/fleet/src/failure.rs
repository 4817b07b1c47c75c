//! Why a call to the target failed, as the run counts it: errors are data, each with the kind the
//! run counts it by, whether a retry may help, and how long the server asked to wait.

use std::time::Duration;

/// Why a call failed, as the run counts it.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// An HTTP error status, with `Retry-After` when the server sent one.
    Status {
        status: u16,
        retry_after: Option<Duration>,
        body: String,
    },
    /// No answer: `timeout`, `connect`, `transport`.
    Transport(&'static str),
    /// A database error by SQLSTATE, or `pool`.
    Db(String),
    /// An answer that does not have the shape the wire reference promises.
    Protocol(String),
}

impl Failure {
    /// The error kind a result's sample carries: none for success.
    pub fn kind_of<T>(result: &Result<T, Failure>) -> Option<String> {
        result.as_ref().err().map(Failure::kind)
    }

    pub fn kind(&self) -> String {
        match self {
            Failure::Status { status, .. } => format!("http_{status}"),
            Failure::Transport(k) => (*k).to_string(),
            Failure::Db(code) => format!("db_{code}"),
            Failure::Protocol(_) => "protocol".into(),
        }
    }

    /// Worth retrying later (rate limits, server and transport trouble).
    pub fn retryable(&self) -> bool {
        match self {
            Failure::Status { status, .. } => *status == 429 || *status >= 500,
            Failure::Transport(_) => true,
            Failure::Db(code) => {
                // `connection`: the pooler or the database went away mid-statement.
                code == "pool"
                    || code == "connection"
                    || code.starts_with("08")
                    || code.starts_with("53")
                    || code == "57P01"
            }
            Failure::Protocol(_) => false,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Failure::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Status { status, body, .. } => write!(
                f,
                "HTTP {status}: {}",
                body.chars().take(300).collect::<String>()
            ),
            Failure::Transport(k) => write!(f, "no answer ({k})"),
            Failure::Db(code) => write!(f, "database error {code}"),
            Failure::Protocol(m) => write!(f, "unexpected answer: {m}"),
        }
    }
}
