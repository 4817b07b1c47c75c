//! The gateway over HTTP, against a real stack (one per test binary): every request goes through
//! the real PgBouncer and Postgres, and every figure a test checks is read back from the database
//! or computed independently.
//!
//! Contents:
//! - [`auth`]: API keys, admin user creation, password and refresh grants (rotation, reuse
//!   detection), logout, sign-up (also anonymous), and the `hosted` profile's 429 buckets.
//! - [`rest`]: the Data API: bulk insert (`PGRST102`, `PGRST204`, `?columns=`, `missing=default`),
//!   reads with filters, order, paging and exact counts, RLS denials (401/403), `PATCH`/`DELETE`,
//!   RPC (`match_memories` against an independent cosine ranking), statement timeouts, `PGRST003`.
//! - [`clients`]: the official clients, unmodified: `@supabase/supabase-js` under Deno and the
//!   Python `supabase` package, each running the dashboard's and an agent's calls.
//! - [`functions`]: Edge Functions through the gateway, `verify_jwt` per function.
//! - [`realtime`]: Realtime over the WAL: delivery to the owner only, payload shape, join errors,
//!   limits, heartbeat timeout, token refresh and expiry, broadcast, 10,000 inserts in order,
//!   restarts (graceful and a crash) without loss, and absent subscribers reported lost.
//! - [`ws`]: the Realtime test client.
//! - [`common`]: the fixtures: a gateway on a free port, users, signed-in agents with a device.

mod auth;
mod clients;
mod common;
mod functions;
mod realtime;
mod rest;
mod ws;
