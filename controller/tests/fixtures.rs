//! Golden tests for `build()`: each `tests/fixtures/<case>/input.yaml` is compiled (with default
//! options, or those its `options.yaml` sets) and compared with `expected.yaml` (the routing table
//! dump, the diagnostics and, for Gateway API cases, the status each object would get).
//! Regenerate with `FERRY_BLESS=1 cargo test -p controller --test fixtures` and review the diff.

use std::path::{Path, PathBuf};

use controller::build_all;
use controller::source::files::ManifestSource;

mod common;
use common::options;

fn render(case: &Path) -> String {
    let mut source = ManifestSource::new(vec![case.join("input.yaml")]);
    let report = source.scan();
    assert!(report.missing.is_empty());
    let snapshot = source.snapshot();
    let built = build_all(snapshot, &options(case));
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
