//! The fleet engine against a real stack (one per test binary), in-process gateways, and
//! `fleetbench sink`.
//!
//! Contents:
//! - [`stack`]: against the stack: rows in `system_metrics` equal the rows the run reports written,
//!   per path; short-lived tokens refreshed before expiry, once or twice a lifetime and not per
//!   upload; an expired access token signs in again;
//!   `hosted` rate limits backed off until every agent is in; a backlog that survives an outage.
//! - [`calendar`]: a fleet whose clock crosses a month's end: every row lands, each in its month.
//! - [`sink`]: against the calibration sink: arrival rates held and ramped, dropped arrivals counted,
//!   closed agents, the connection cap, pacing, percentiles against the analytic truth under
//!   stalls, waits behind a stall in intended-start latency only, `abort_on_fail`.
//! - [`http`]: the upload client against a scripted raw server: framings, reuse, closes, failures.
//! - [`tls`]: uploads over verified TLS; a self-signed certificate refused.
//! - [`common`]: the shared stack, gateways, targets, scenarios and runs; `QUIET`, which keeps the
//!   sink's timing comparisons apart from the tests that load the machine.

mod calendar;
mod collectors;
mod common;
mod http;
mod sink;
mod stack;
mod tls;
