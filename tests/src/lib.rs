//! Support for the end-to-end scenarios: a CRI client built from k8s-cri
//! ([`cri`]) and a real node environment — registry, containerd, runc, CNI,
//! images, and attestgate-proxy in front — driven by `support/env.sh`
//! ([`node`]); a private registry for bundle artifacts ([`registry`]);
//! bundles published and synced as an operator and a node do
//! ([`publisher`]); registry signatures laid out as other tools lay them
//! out ([`layout`]); processes as /proc shows them ([`process`]); a
//! registry relay that trickles replies, for pulls still under way when a
//! fault strikes ([`throttle`]).

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod cri;
pub mod flood;
pub mod layout;
pub mod metrics;
pub mod node;
pub mod process;
pub mod publisher;
pub mod raw_h2;
pub mod registry;
pub mod stats;
pub mod throttle;
