//! The gateway crate's modules depend in one direction (the order in `src/lib.rs`): a module may
//! use modules of lower layers only, so small helpers live in leaves, records below their
//! readers, data structures below the servers that use them, and no import cycle can come back.

use std::collections::BTreeMap;
use std::path::Path;

/// Every module and its layer; lower layers never use higher ones.
const LAYERS: &[(&str, u8)] = &[
    // the upstream request head as the lifecycle edits it (read by the safety rules)
    ("head", 0),
    // names → values in shards that tables share (used by `host`'s lookups)
    ("sharded", 0),
    // leaves
    ("host", 1),
    ("addr", 1),
    ("shared", 1),
    ("trace", 1),
    ("drain", 1),
    ("safety", 1),
    ("wire", 1),
    ("conn", 1),
    ("cors", 1),
    ("external", 1),
    ("rules", 1),
    // verified TLS to backends (BackendTLSPolicy): used by the model and the engines
    ("backend_tls", 1),
    // policies and counters
    ("balance", 2),
    ("affinity", 2),
    ("limits", 2),
    ("metrics", 3),
    // the state that outlives tables, handed to each build
    ("runtime", 3),
    // the model
    ("backend", 4),
    ("certs", 4),
    ("l4", 5),
    ("table", 6),
    // records and sinks
    ("record", 7),
    ("access_log", 7),
    ("otlp", 8),
    // the request lifecycle
    ("http", 9),
    // servers: TLS (resolver, handshake), the engines, the listener apps
    ("tls", 10),
    ("tunnel", 10),
    ("client", 10),
    ("proxy", 11),
    ("upstream", 11),
    ("l4_server", 11),
    ("udp", 12),
    ("listener", 12),
    ("h1", 12),
];

/// Items the crate root re-exports, by the module that defines them.
const ROOT_ITEMS: &[(&str, &str)] = &[
    ("SharedTable", "table"),
    ("RouteTable", "table"),
    ("Route", "table"),
    ("Metrics", "metrics"),
    ("Runtime", "runtime"),
    ("FastMap", "shared"),
    ("Backend", "backend"),
    ("BackendState", "backend"),
    ("UpstreamProtocol", "backend"),
    ("L4Table", "l4"),
    ("L4Route", "l4"),
    ("CertStore", "certs"),
];

/// The modules a source file names through `crate::` paths (comments left out).
fn uses(source: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in source.lines().map(str::trim_start).filter(|l| !l.starts_with("//")) {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let names: Vec<&str> = match rest.strip_prefix('{') {
                Some(group) => group[..group.find('}').unwrap_or(group.len())]
                    .split(',')
                    .map(|n| n.trim().split("::").next().unwrap_or("").trim())
                    .collect(),
                None => vec![&rest[..rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len())]],
            };
            for name in names.into_iter().filter(|n| !n.is_empty()) {
                let module = match ROOT_ITEMS.iter().find(|(item, _)| *item == name) {
                    Some((_, module)) => module,
                    None => name,
                };
                out.push(module.to_string());
            }
        }
    }
    out
}

#[test]
fn modules_depend_in_one_direction() {
    let layer: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            for sub in std::fs::read_dir(&path).unwrap() {
                files.push((path.file_name().unwrap().to_string_lossy().to_string(), sub.unwrap().path()));
            }
        } else if path.file_stem().unwrap() != "lib" {
            files.push((path.file_stem().unwrap().to_string_lossy().to_string(), path));
        }
    }
    let mut wrong = Vec::new();
    for (module, path) in &files {
        let Some(&own) = layer.get(module.as_str()) else {
            panic!("module {module} ({}) has no layer in LAYERS", path.display());
        };
        for used in uses(&std::fs::read_to_string(path).unwrap()) {
            if used == *module {
                continue;
            }
            match layer.get(used.as_str()) {
                None => wrong.push(format!("{}: uses crate::{used}, which has no layer", path.display())),
                Some(&other) if other >= own => {
                    wrong.push(format!("{}: {module} (layer {own}) uses {used} (layer {other})", path.display()))
                }
                Some(_) => {}
            }
        }
    }
    assert!(files.len() >= LAYERS.len(), "every module was read");
    assert!(wrong.is_empty(), "imports against the layer order:\n{}", wrong.join("\n"));
}

#[test]
fn the_check_sees_every_form_of_path() {
    let found =
        uses("use crate::table::Route;\nuse crate::{http, tls::ConnInfo};\n// crate::h1\nlet t: crate::SharedTable;");
    assert_eq!(found, ["table", "http", "tls", "table"]);
}
