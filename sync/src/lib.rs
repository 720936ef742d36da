//! attestgate-sync as a library: the pass a syncer runs, the state
//! directory it keeps, its configuration and metrics. The binary runs one
//! syncer; the fleet benchmark runs a thousand in one process.

#![forbid(unsafe_code)]

pub mod config;
pub mod metrics;
pub mod pass;
pub mod schedule;
pub mod versions;
