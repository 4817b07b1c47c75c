//! Each probe against the local stack, its results checked against truths computed here
//! independently (alerts counted in the database, exact neighbours by brute force, partitions read
//! from the plan). One stack for the binary; its edge function forwards to a receiver of this binary.
//!
//! Contents:
//! - realtime: 4 dashboards, 24 injected alerts: the alerts in the database (one more, committed
//!   during the reconnect) equal the deliveries owed, each delivered once, none foreign; the
//!   partitioned-table caveat reported.
//! - realtime with 4 s tokens over a 12 s probe: the users refresh and push each token to their
//!   channels; no injection refused, every alert delivered.
//! - webhook: alerts counted in the database, each received once through the edge function.
//! - rag: memories counted, searches made; the probe's brute-force neighbours equal Postgres's exact
//!   search with index scans off; `ef_search = 1000` recalls them all.
//! - partitions: rows counted back; the partitions each query scanned equal those the catalog says
//!   its range overlaps; every check holds; the unpartitioned copy is dropped.
//! - pooler: `max_connections` + 50 clients all connect through PgBouncer on its pool of server
//!   connections, while directly each is connected or refused (53300).
//! - rls: all 31 attempts refused (`rls_broken.rs`: a broken policy is caught).

mod common;
mod delivery;
mod partitions;
mod pooler;
mod rag;
mod rls;
