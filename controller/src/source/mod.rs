//! Where objects come from. Each source produces a `Snapshot`; `build()` cannot tell them apart.

pub mod files;
pub mod kube;
mod secret_refs;
