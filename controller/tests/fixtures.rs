//! Golden tests for `build()`: each `tests/fixtures/<case>/input.yaml` is compiled (with default
//! options, or those its `options.yaml` sets) and compared with `expected.yaml` (the routing table
//! dump, the diagnostics and, for Gateway API cases, the status each object would get).
//! Regenerate with `FERRY_BLESS=1 cargo test -p controller --test fixtures` and review the diff.

use std::path::{Path, PathBuf};

use controller::source::files::ManifestSource;
use controller::{build_all, BuildOptions};

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

fn options(case: &Path) -> BuildOptions {
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

fn render(case: &Path) -> String {
    let mut source = ManifestSource::new(vec![case.join("input.yaml")]);
    let report = source.scan();
    assert!(report.missing.is_empty());
    let snapshot = source.snapshot();
    let built = build_all(&snapshot, &options(case));
    let mut diagnostics = built.diagnostics;
    source.annotate(&mut diagnostics);
    let diagnostics: Vec<_> = source.diagnostics().into_iter().chain(diagnostics).collect();
    let mut table = built.table.dump();
    table.l4_status = built.l4_status;
    let mut out = serde_json::json!({ "table": table, "diagnostics": diagnostics });
    // Gateway API cases: what the status of each object would say.
    let status = &built.gateway_status;
    if !(status.classes.is_empty() && status.gateways.is_empty() && status.routes.is_empty()) {
        out["gateway_status"] = serde_json::to_value(status).expect("status");
    }
    serde_yaml_ng::to_string(&out).expect("yaml")
}

#[test]
fn fixtures() {
    let root = Path::new("tests/fixtures");
    let mut cases: Vec<PathBuf> =
        std::fs::read_dir(root).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    cases.sort();
    assert!(cases.len() >= 8, "fixture cases missing");
    let bless = std::env::var_os("FERRY_BLESS").is_some();
    let mut failed = Vec::new();
    for case in cases {
        let got = render(&case);
        // Determinism: the same input compiles to the same output.
        assert_eq!(got, render(&case), "{}: build is not deterministic", case.display());
        let expected_path = case.join("expected.yaml");
        if bless {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if got != expected {
            eprintln!("--- {} differs; got:\n{got}", case.display());
            failed.push(case.display().to_string());
        }
    }
    assert!(failed.is_empty(), "fixtures differ (FERRY_BLESS=1 to regenerate, then review the diff): {failed:?}");
}
