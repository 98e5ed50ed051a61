//! What the controller's integration tests share.

use std::path::Path;

use controller::BuildOptions;

/// The build options a case changes from the defaults (its `options.yaml`; the command-line flag
/// each stands for in brackets).
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct CaseOptions {
    /// `--nginx-annotations`
    #[serde(default)]
    nginx_annotations: bool,
    /// `--allow-external-name`
    #[serde(default)]
    allow_external_name: bool,
    /// `--l4-ports`
    #[serde(default)]
    l4_ports: Vec<u16>,
    /// `--default-tls-secret` (`namespace/name`)
    default_tls_secret: Option<String>,
}

pub fn options(case: &Path) -> BuildOptions {
    let path = case.join("options.yaml");
    let set: CaseOptions = match std::fs::read_to_string(&path) {
        Ok(text) => serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        Err(_) => CaseOptions::default(),
    };
    BuildOptions {
        nginx_annotations: set.nginx_annotations,
        allow_external_name: set.allow_external_name,
        l4_ports: set.l4_ports.into_iter().collect(),
        default_tls_secret: set.default_tls_secret.map(|s| {
            let (ns, name) = s.split_once('/').expect("default-tls-secret: namespace/name");
            (ns.to_string(), name.to_string())
        }),
        ..BuildOptions::default()
    }
}
