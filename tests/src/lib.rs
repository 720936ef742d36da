//! Helpers for the end-to-end scenarios (real containerd, runc, CNI, registry).
