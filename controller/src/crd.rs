//! ferry's own resource kinds (`ferry.dev/v1alpha1`).
//!
//! The Rust types are the source of truth; `crds/` holds the CustomResourceDefinitions generated
//! from them (`ferry crd`), and a test fails when the files drift from the types.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A TCP listener port of the gateway routed to a Service port in the same namespace; with `sni`,
/// TLS connections are routed by the server name of their ClientHello without being terminated
/// (TLS passthrough: the pod holds the certificate).
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "L4Route",
    namespaced,
    status = "L4RouteStatus",
    shortname = "l4r",
    printcolumn = r#"{"name":"Port","type":"integer","jsonPath":".spec.port"}"#,
    printcolumn = r#"{"name":"Service","type":"string","jsonPath":".spec.backend.service"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct L4RouteSpec {
    /// Gateway port; it must be one of the ports the gateway was started with (`--l4-ports`).
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Server names (SNI) routed to the backend on a TLS passthrough port; `*.example.com`
    /// matches one label. Empty: every connection on the port goes to the backend.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sni: Vec<String>,
    pub backend: L4Backend,
    /// Close a stream after this long without traffic in either direction (`30s`, `10m`, `1h`,
    /// or seconds); default 1h, at most 24h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
}

/// A Service port in the L4Route's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct L4Backend {
    /// Service name.
    pub service: String,
    /// Service port number.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct L4RouteStatus {
    /// `Accepted` (served on its port) and `ResolvedRefs` (its Service and port exist).
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// A status condition, as in `metav1.Condition`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    #[serde(default)]
    pub message: String,
    /// RFC 3339 time of the last change of `status`.
    #[serde(default)]
    pub last_transition_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The CRD YAML files under `crds/`: (file name, content).
pub fn crd_files() -> Vec<(&'static str, String)> {
    use kube::CustomResourceExt as _;
    let yaml = serde_yaml_ng::to_string(&L4Route::crd()).expect("a CRD serialises");
    vec![(
        "ferry.dev_l4routes.yaml",
        format!("# Generated from controller/src/crd.rs by `ferry crd`; do not edit.\n{yaml}"),
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `crds/` must be what the types generate. Regenerate with `FERRY_BLESS=1 cargo test`.
    #[test]
    fn crds_folder_matches_the_types() {
        // `crds/` and the Helm chart's copy, which Helm installs with the release.
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for (dir, (name, content)) in
            ["crds", "charts/ferry/crds"].into_iter().flat_map(|d| crd_files().into_iter().map(move |f| (d, f)))
        {
            let path = root.join(dir).join(name);
            if std::env::var_os("FERRY_BLESS").is_some() {
                std::fs::write(&path, &content).unwrap();
            }
            let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                on_disk == content,
                "{} differs from the L4Route type; run `FERRY_BLESS=1 cargo test -p controller crds` and commit it",
                path.display()
            );
        }
    }
}
