//! Each probe against the local stack, its results checked against truths computed here
//! independently (alerts counted in the database, exact neighbours by brute force, partitions read
//! from the plan). One stack for the binary; its edge function forwards to a receiver of this binary.

mod common;
mod delivery;
mod partitions;
mod pooler;
mod rag;
mod rls;
