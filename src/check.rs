//! `ferry check`: compile manifests once and print every diagnostic, for users' CI.
//!
//! Exit codes: 0 nothing skipped (warnings allowed), 1 something skipped or unparsable,
//! 2 a path could not be read.

use std::path::PathBuf;

use clap::Args;
use controller::source::files::ManifestSource;
use controller::{build_all, Diagnostic, Severity};

use crate::ClassArgs;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// File or directory of manifests (repeatable).
    #[arg(long, required = true, value_delimiter = ',')]
    manifests: Vec<PathBuf>,
    /// Output format.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    output: String,
    /// Also print the compiled routing table.
    #[arg(long)]
    routes: bool,
    #[command(flatten)]
    class: ClassArgs,
}

pub fn run(args: &CheckArgs) -> i32 {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let mut source = ManifestSource::new(args.manifests.clone());
    let report = source.scan();
    if !report.missing.is_empty() {
        for p in &report.missing {
            eprintln!("ferry check: {}: no such file or directory", p.display());
        }
        return 2;
    }
    let snapshot = source.snapshot();
    let built = build_all(snapshot, &args.class.build_options());
    let (table, mut build_diags) = (built.table, built.diagnostics);
    source.annotate(&mut build_diags);
    let mut diags: Vec<Diagnostic> = source.diagnostics().into_iter().chain(build_diags).collect();
    diags.sort_by(|a, b| (&a.origin, &a.object, &a.field).cmp(&(&b.origin, &b.object, &b.field)));
    let errors = diags.iter().filter(|d| d.severity == Severity::Error).count();
    let warnings = diags.len() - errors;

    if args.output == "json" {
        let out = serde_json::json!({
            "objects": snapshot.len(),
            "ignored": snapshot.ignored,
            "routes": table.route_count(),
            "errors": errors,
            "warnings": warnings,
            "diagnostics": diags,
            "table": if args.routes { serde_json::to_value(table.dump()).ok() } else { None },
            // What the status of each Gateway API object of ours would say.
            "gateway_status": built.gateway_status,
        });
        let _ = writeln!(stdout, "{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        for d in &diags {
            let _ = writeln!(stdout, "{d}");
        }
        if args.routes {
            let _ = writeln!(stdout, "{}", serde_json::to_string_pretty(&table.dump()).unwrap_or_default());
        }
        let _ = writeln!(
            stdout,
            "{} objects ({} of other kinds ignored), {} routes, {errors} errors, {warnings} warnings",
            snapshot.len(),
            snapshot.ignored,
            table.route_count()
        );
    }
    // Output cut short (`ferry check | head`) is not an error of the manifests.
    i32::from(errors > 0)
}
