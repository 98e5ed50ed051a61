//! Manifest source: Kubernetes objects from YAML/JSON files and directories (`--manifests`).
//!
//! Every scan re-reads the files and re-parses only those whose bytes changed. A file that fails
//! to parse keeps its last good objects (or, the first time, the documents that did parse) and
//! reports the file, document and error. A top-level path that disappears keeps its objects too
//! (a remount in progress looks like that); a file removed inside a present directory takes its
//! objects with it, since deleting a manifest is how users delete routes.
//!
//! The source keeps the snapshot its files make (a later file's object wins over an earlier
//! file's of the same kind, namespace and name) and updates it in place as files change,
//! recording which objects changed for the incremental build: a change costs what it touches,
//! not what the files hold.

use std::collections::BTreeMap;
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_yaml_ng::Value;
use tokio::sync::mpsc;

use crate::diagnostic::{Diagnostic, ObjectRef};
use crate::snapshot::{Changes, Object, Snapshot};

/// One parsed document: its 1-based index in the file and the object.
pub type Doc = (usize, Object);

#[derive(Debug, Default)]
struct FileState {
    /// Set once the file was parsed; `objects` are then its last good objects.
    parsed: bool,
    /// Length and hash of the bytes last read, to skip parsing a file whose bytes did not
    /// change (keeping the bytes themselves would double a big file's cost in memory).
    digest: (usize, u64),
    /// What the file system said of the file when it was last read: a whole scan (the periodic
    /// safety net) does not read a file whose stamp is unchanged again. A 50,000-Ingress file is
    /// tens of megabytes, and reading and hashing it on every resync delayed changes queued
    /// behind it by up to 60 ms.
    stamp: Option<Stamp>,
    /// The objects this file contributes now.
    objects: Vec<Doc>,
    /// Positions in `objects`, sorted by identity (equal ones in file order): 4 bytes per object
    /// where a map of names would take a hundred or more.
    order: Vec<u32>,
    /// Documents of kinds we do not read.
    ignored: usize,
    /// Diagnostics of the last parse (errors mean the file kept older objects).
    diagnostics: Vec<Diagnostic>,
}

impl FileState {
    fn set_objects(&mut self, objects: Vec<Doc>) {
        let mut order: Vec<u32> = (0..objects.len() as u32).collect();
        order.sort_by(|&a, &b| objects[a as usize].1.identity().cmp(&objects[b as usize].1.identity()));
        self.objects = objects;
        self.order = order;
    }

    /// Where the object named `r` is in `objects` (the last one, if the file has it twice).
    fn find(&self, r: &ObjectRef) -> Option<usize> {
        let key = (r.kind.as_str(), r.namespace.as_str(), r.name.as_str());
        let identity = |i: u32| self.objects[i as usize].1.identity();
        let end = self.order.partition_point(|&i| identity(i) <= key);
        let last = *self.order.get(end.checked_sub(1)?)?;
        (identity(last) == key).then_some(last as usize)
    }

    /// The names of its objects.
    fn refs(&self) -> impl Iterator<Item = ObjectRef> + '_ {
        self.objects.iter().map(|(_, o)| o.object_ref())
    }
}

/// A file's identity, size and times: any write changes its change time (which no user can
/// set), a replacement by rename changes its inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    /// The file's stamp, when it can be trusted: file times are kept at the kernel's clock tick
    /// (milliseconds), so two writes within one tick may leave equal stamps. A file changed in
    /// the last second has no stamp, and is read.
    fn of(path: &Path) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
        .filter(|s| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            s.ctime.0 < now as i64 - 1
        })
    }
}

/// Hashed in chunks of this size, from memory or from the file, so both give the same digest.
const DIGEST_CHUNK: usize = 64 * 1024;

/// The hasher of [`digest`] and [`digest_file`].
fn digest_hasher() -> impl Hasher {
    use std::hash::BuildHasher;
    foldhash::quality::FixedState::with_seed(0).build_hasher()
}

/// Length and hash of a file's bytes: a change that keeps both is one chance in 2^64.
fn digest(bytes: &[u8]) -> (usize, u64) {
    let mut h = digest_hasher();
    for chunk in bytes.chunks(DIGEST_CHUNK) {
        h.write(chunk);
    }
    (bytes.len(), h.finish())
}

/// [`digest`] of the file's bytes, read a chunk at a time: checking that a large file is
/// unchanged takes no buffer its size (a 32 MB one: 10 ms of the kernel zeroing fresh pages).
fn digest_file(path: &Path) -> std::io::Result<(usize, u64)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut h = digest_hasher();
    let (mut buf, mut len) = (Vec::with_capacity(DIGEST_CHUNK), 0);
    loop {
        // A whole chunk unless the file ends, as `digest`'s chunks are.
        buf.clear();
        let n = (&mut file).take(DIGEST_CHUNK as u64).read_to_end(&mut buf)?;
        if n > 0 {
            h.write(&buf);
            len += n;
        }
        if n < DIGEST_CHUNK {
            return Ok((len, h.finish()));
        }
    }
}

/// What a scan found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// Some file's objects changed; rebuild.
    pub changed: bool,
    /// Top-level paths that do not exist.
    pub missing: Vec<PathBuf>,
}

#[derive(Debug)]
pub struct ManifestSource {
    roots: Vec<PathBuf>,
    files: BTreeMap<PathBuf, FileState>,
    /// What the files say now.
    snapshot: Snapshot,
    /// The objects of `snapshot` that changed since [`Self::take_changes`].
    changes: Changes,
}

fn is_manifest(path: &Path) -> bool {
    matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json"))
}

fn is_hidden(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'))
}

/// Lists manifest files under `root` (a file is listed whatever its extension).
fn list(root: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if !root.is_dir() {
        if root.exists() {
            out.push(root.to_path_buf());
        }
        return Ok(());
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            // Hidden entries are skipped, except that ConfigMap mounts keep their files under
            // `..data`; the visible names there are symlinks, which we follow.
            if is_hidden(&path) {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if is_manifest(&path) {
                out.push(path);
            }
        }
    }
    Ok(())
}

impl ManifestSource {
    pub fn new(roots: Vec<PathBuf>) -> Self {
        ManifestSource { roots, files: BTreeMap::new(), snapshot: Snapshot::default(), changes: Changes::everything() }
    }

    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// Re-reads every file; re-parses the ones whose bytes changed.
    pub fn scan(&mut self) -> ScanReport {
        let mut report = ScanReport::default();
        let mut seen = Vec::new();
        for root in &self.roots {
            if !root.exists() {
                report.missing.push(root.clone());
                // Keep what we had from under it.
                seen.extend(self.files.keys().filter(|p| p.starts_with(root)).cloned());
                continue;
            }
            if let Err(e) = list(root, &mut seen) {
                tracing::warn!(path = %root.display(), error = %e, "cannot list manifest directory");
                seen.extend(self.files.keys().filter(|p| p.starts_with(root)).cloned());
            }
        }
        seen.sort();
        seen.dedup();
        // Objects whose winner may have changed (not followed until a first snapshot is taken:
        // that one is made whole).
        let follow = !self.changes.is_everything();
        let mut touched: Vec<ObjectRef> = Vec::new();
        let before = self.files.len();
        self.files.retain(|p, state| {
            let keep = seen.binary_search(p).is_ok();
            if !keep && follow {
                touched.extend(state.refs());
            }
            keep
        });
        report.changed |= self.files.len() != before;
        for path in seen {
            self.read(path, follow, true, &mut touched, &mut report);
        }
        self.settle_all(follow, touched);
        report
    }

    /// Re-reads only `paths`, the files that events named (changed, created, renamed or
    /// removed). What a path alone cannot settle takes a whole [`Self::scan`]: the first scan, a
    /// missing root, a directory (a new one, or a mount's swapped data directory) or a path
    /// outside every root. Hidden entries are skipped, as a scan skips them.
    pub fn scan_paths(&mut self, paths: &[PathBuf]) -> ScanReport {
        if self.changes.is_everything() || self.roots.iter().any(|r| !r.exists()) {
            return self.scan();
        }
        let mut files = Vec::new();
        for path in paths {
            let Some(root) = self.roots.iter().find(|r| path.starts_with(r)) else { return self.scan() };
            if path.strip_prefix(root).unwrap_or(path).ancestors().any(is_hidden) {
                continue;
            }
            if path.is_dir() {
                return self.scan();
            }
            if path == root || is_manifest(path) {
                files.push(path.clone());
            }
        }
        files.sort();
        files.dedup();
        let mut report = ScanReport::default();
        let mut touched = Vec::new();
        for path in files {
            if path.exists() {
                self.read(path, true, false, &mut touched, &mut report);
            } else if let Some(state) = self.files.remove(&path) {
                touched.extend(state.refs());
                report.changed = true;
            }
        }
        self.settle_all(true, touched);
        report
    }

    /// Reads one file; when its bytes changed, parses it and notes its objects, old and new, in
    /// `touched` (if `follow`). With `by_stamp` (a whole scan), a file whose [`Stamp`] did not
    /// change is not read; a file an event named is always read.
    fn read(
        &mut self,
        path: PathBuf,
        follow: bool,
        by_stamp: bool,
        touched: &mut Vec<ObjectRef>,
        report: &mut ScanReport,
    ) {
        // Taken before reading: a write racing the read leaves an older stamp, so the next
        // scan reads the file again.
        let stamp = Stamp::of(&path);
        if by_stamp && stamp.is_some() && self.files.get(&path).is_some_and(|s| s.parsed && s.stamp == stamp) {
            return;
        }
        // A file read before is hashed from the disk first; its bytes are read whole (and
        // parsed) only if they changed.
        if let Some(state) = self.files.get_mut(&path).filter(|s| s.parsed) {
            if digest_file(&path).is_ok_and(|d| d == state.digest) {
                state.stamp = stamp;
                return;
            }
        }
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read manifest; keeping its objects");
                return;
            }
        };
        let state = self.files.entry(path.clone()).or_default();
        let digest = digest(&bytes);
        if state.parsed && state.digest == digest {
            state.stamp = stamp;
            return;
        }
        let parsed = parse_file(&path, &bytes);
        let failed = parsed.diagnostics.iter().any(|d| d.severity == crate::diagnostic::Severity::Error);
        for d in &parsed.diagnostics {
            tracing::warn!("{d}");
        }
        if failed && state.parsed {
            tracing::warn!(file = %path.display(), "manifest has errors; keeping its last good objects");
        } else {
            report.changed = true;
            if follow {
                touched.extend(state.refs());
            }
            state.set_objects(parsed.objects);
            if follow {
                touched.extend(state.refs());
            }
            state.ignored = parsed.ignored;
        }
        state.parsed = true;
        state.digest = digest;
        state.stamp = stamp;
        state.diagnostics = parsed.diagnostics;
    }

    /// Brings the snapshot up to date: whole (when not following), then object by object.
    fn settle_all(&mut self, follow: bool, mut touched: Vec<ObjectRef>) {
        if !follow {
            self.snapshot = Snapshot::default();
            for state in self.files.values() {
                for (_, obj) in &state.objects {
                    self.snapshot.insert(obj.clone());
                }
            }
        }
        touched.sort();
        touched.dedup();
        for r in touched {
            self.settle(r);
        }
        self.snapshot.ignored = self.files.values().map(|f| f.ignored).sum();
    }

    /// Puts the object of the last file that has `r` into the snapshot (or removes it when no
    /// file has it), recording a change when that is not what the snapshot held.
    fn settle(&mut self, r: ObjectRef) {
        let winner = self.files.values().rev().find_map(|f| f.find(&r).map(|i| &f.objects[i].1));
        match winner {
            // An equal object (a re-parsed file's unchanged documents) is no change.
            Some(obj) => {
                if !self.snapshot.get(&r).is_some_and(|held| held.same_as(obj)) {
                    self.snapshot.insert(obj.clone());
                    self.changes.push(r);
                }
            }
            None => {
                if self.snapshot.remove(&r) {
                    self.changes.push(r);
                }
            }
        }
    }

    /// The objects of every file, later files overriding earlier ones on the same name. Objects
    /// are shared with the source, not copied; origins are filled in by [`Self::annotate`].
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// The objects of [`Self::snapshot`] that changed since the last call (everything, the
    /// first time).
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    /// Sets `origin` (`file#document`) on diagnostics that lack one: the document of the file
    /// whose object the snapshot holds (the last file that has it). Looks up only those objects,
    /// so a rebuild costs nothing here for the objects without diagnostics.
    pub fn annotate(&self, diagnostics: &mut [Diagnostic]) {
        for d in diagnostics.iter_mut().filter(|d| d.origin.is_none()) {
            let found = self.files.iter().rev().find_map(|(path, f)| f.find(&d.object).map(|i| (path, f.objects[i].0)));
            d.origin = found.map(|(path, doc)| format!("{}#{doc}", path.display()));
        }
    }

    /// Parse diagnostics standing for the current files.
    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        self.files.values().flat_map(|s| s.diagnostics.iter().cloned()).collect()
    }
}

/// The result of parsing one file.
#[derive(Debug, Default)]
pub struct Parsed {
    pub objects: Vec<Doc>,
    pub ignored: usize,
    pub diagnostics: Vec<Diagnostic>,
}

/// Parses a multi-document YAML or JSON file. Every failure names the file and document.
pub fn parse_file(path: &Path, bytes: &[u8]) -> Parsed {
    let file = path.display().to_string();
    let file_ref = ObjectRef::new("File", "", &file);
    let mut out = Parsed::default();
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            out.diagnostics.push(Diagnostic::error(&file_ref, "", format!("not UTF-8: {e}")));
            return out;
        }
    };
    let is_json = path.extension().is_some_and(|e| e == "json");
    // Each document is read into its object as soon as it is parsed, so a big file never holds
    // all of its documents as values at once. The first document that does not parse ends the
    // file.
    let mut take = |doc: usize, value: Result<Value, String>| -> bool {
        let origin = format!("{file}#{doc}");
        match value {
            Err(e) => {
                let mut d = Diagnostic::error(&file_ref, format!("document {doc}"), e);
                d.origin = Some(origin);
                out.diagnostics.push(d);
                return false;
            }
            Ok(Value::Null) => {}
            Ok(v) => parse_value(v, &origin, doc, &mut out),
        }
        true
    };
    // JSON is read into the same values as YAML (JSON documents are YAML ones).
    if is_json {
        for (i, v) in serde_json::Deserializer::from_str(text).into_iter::<Value>().enumerate() {
            if !take(i + 1, v.map_err(|e| e.to_string())) {
                break;
            }
        }
    } else {
        for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            if !take(i + 1, Value::deserialize(doc).map_err(|e| e.to_string())) {
                break;
            }
        }
    }
    out
}

fn parse_value(mut v: Value, origin: &str, doc: usize, out: &mut Parsed) {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_string();
    let api_version = text(v.get("apiVersion"));
    let kind = text(v.get("kind"));
    let name = text(v.get("metadata").and_then(|m| m.get("name")));
    let ns =
        v.get("metadata").and_then(|m| m.get("namespace")).and_then(Value::as_str).unwrap_or("default").to_string();
    let obj_ref = ObjectRef::new(if kind.is_empty() { "Object" } else { &kind }, &ns, &name);
    let err = |out: &mut Parsed, field: &str, reason: String| {
        let mut d = Diagnostic::error(&obj_ref, field, reason);
        d.origin = Some(origin.to_string());
        out.diagnostics.push(d);
    };
    if !v.is_mapping() {
        return err(out, "", "document is not an object".into());
    }
    if kind.is_empty() || api_version.is_empty() {
        return err(out, "", "apiVersion and kind are required".into());
    }
    // Gateway API kinds are read in any version the API has served them in (the schemas of the
    // versions ferry reads agree on every field it uses).
    const GATEWAY_API: &str = "gateway.networking.k8s.io";
    let accepted: &[&str] = match kind.as_str() {
        "Ingress" | "IngressClass" => &["networking.k8s.io/v1"],
        "Service" | "Secret" | "ConfigMap" | "List" | "Namespace" => &["v1"],
        "EndpointSlice" => &["discovery.k8s.io/v1"],
        "L4Route" => &["ferry.dev/v1alpha1"],
        "GatewayClass" | "Gateway" | "HTTPRoute" => &["v1", "v1beta1"],
        "GRPCRoute" | "ListenerSet" => &["v1", "v1alpha2"],
        "ReferenceGrant" => &["v1", "v1beta1", "v1alpha2"],
        "TLSRoute" => &["v1", "v1alpha3", "v1alpha2"],
        "TCPRoute" | "UDPRoute" => &["v1", "v1alpha2"],
        "BackendTLSPolicy" => &["v1", "v1alpha3"],
        _ => {
            tracing::debug!(%origin, %kind, "ignoring object of a kind ferry does not read");
            out.ignored += 1;
            return;
        }
    };
    let gateway_api =
        accepted[0] == "v1" && !matches!(kind.as_str(), "Service" | "Secret" | "ConfigMap" | "List" | "Namespace");
    let ok = if gateway_api {
        api_version.split_once('/').is_some_and(|(g, v)| g == GATEWAY_API && accepted.contains(&v))
    } else {
        accepted.contains(&api_version.as_str())
    };
    if !ok {
        let list: Vec<String> =
            accepted.iter().map(|v| if gateway_api { format!("{GATEWAY_API}/{v}") } else { v.to_string() }).collect();
        return err(out, "apiVersion", format!("{kind} must be {}, not {api_version}", list.join(" or ")));
    }
    // One Rust type per kind: read older versions as the served one.
    if gateway_api {
        v["apiVersion"] = Value::String(format!("{GATEWAY_API}/v1"));
    }
    if kind == "List" {
        if let Some(Value::Sequence(items)) = v.get_mut("items") {
            for item in std::mem::take(items) {
                parse_value(item, origin, doc, out);
            }
        }
        return;
    }
    if name.is_empty() {
        return err(out, "metadata.name", "name is required".into());
    }
    use std::sync::Arc;
    let obj = match kind.as_str() {
        "Ingress" => typed(&v).map(|(o, u)| (Object::ingress(o), u)),
        "IngressClass" => typed(&v).map(|(o, u)| (Object::IngressClass(Arc::new(o)), u)),
        "Service" => typed(&v).map(|(o, u)| (Object::service(o), u)),
        "EndpointSlice" => typed(&v).map(|(o, u)| (Object::endpoint_slice(o), u)),
        "Secret" => typed(&v).map(|(o, u)| (Object::Secret(Arc::new(o)), u)),
        "ConfigMap" => typed(&v).map(|(o, u)| (Object::ConfigMap(Arc::new(o)), u)),
        "L4Route" => typed(&v).map(|(o, u)| (Object::L4Route(Arc::new(o)), u)),
        "Namespace" => typed(&v).map(|(o, u)| (Object::Namespace(Arc::new(o)), u)),
        "GatewayClass" => typed(&v).map(|(o, u)| (Object::GatewayClass(Arc::new(o)), u)),
        "Gateway" => typed(&v).map(|(o, u)| (Object::Gateway(Arc::new(o)), u)),
        "HTTPRoute" => typed(&v).map(|(o, u)| (Object::HTTPRoute(Arc::new(o)), u)),
        "GRPCRoute" => typed(&v).map(|(o, u)| (Object::GRPCRoute(Arc::new(o)), u)),
        "TLSRoute" => typed(&v).map(|(o, u)| (Object::TLSRoute(Arc::new(o)), u)),
        "TCPRoute" => typed(&v).map(|(o, u)| (Object::TCPRoute(Arc::new(o)), u)),
        "UDPRoute" => typed(&v).map(|(o, u)| (Object::UDPRoute(Arc::new(o)), u)),
        "ReferenceGrant" => typed(&v).map(|(o, u)| (Object::ReferenceGrant(Arc::new(o)), u)),
        "BackendTLSPolicy" => typed(&v).map(|(o, u)| (Object::BackendTLSPolicy(Arc::new(o)), u)),
        "ListenerSet" => typed(&v).map(|(o, u)| (Object::ListenerSet(Arc::new(o)), u)),
        _ => unreachable!("kinds filtered above"),
    };
    match obj {
        Err((field, reason)) => err(out, &field, reason),
        Ok((obj, unknown)) => {
            for field in unknown {
                let mut d = Diagnostic::warning(&obj_ref, field, "unknown field, ignored");
                d.origin = Some(origin.to_string());
                out.diagnostics.push(d);
            }
            out.objects.push((doc, obj));
        }
    }
}

/// Deserialises a document straight into its typed object, with the failing field's path on
/// error and the fields the type does not know (those it skipped while reading).
fn typed<T: DeserializeOwned>(v: &Value) -> Result<(T, Vec<String>), (String, String)> {
    let mut unknown = Vec::new();
    // Some types (the CRDs') skip `apiVersion` and `kind`, which were checked before.
    let mut skipped = |path: serde_ignored::Path| {
        let field = field_path(&path);
        if field != "apiVersion" && field != "kind" {
            unknown.push(field);
        }
    };
    // The path of every field read is kept only to say where an error is: a document that
    // reads without one is read without it.
    if let Ok(obj) = serde_ignored::deserialize(v, &mut skipped) {
        return Ok((obj, unknown));
    }
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(v, &mut track);
    match serde_ignored::deserialize(de, |_| {}) {
        // Reading is deterministic: this is the error of a moment ago, with its place.
        Ok(obj) => Ok((obj, Vec::new())),
        Err(e) => Err((track.path().to_string(), e.to_string())),
    }
}

/// `spec.tls[0].secretName`, as the other diagnostics spell fields.
fn field_path(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        Path::Map { parent, key } => match field_path(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => field_path(parent),
    }
}

/// What the watcher saw.
pub struct FileEvent {
    /// The paths it named; `None`: scan everything.
    pub paths: Option<Vec<PathBuf>>,
    /// The change is whole (a file closed after writing, renamed into place or removed): no
    /// need to wait for more events of it.
    pub complete: bool,
}

/// Watches the roots and sends the paths of every change (`None`: rescan everything). Also ticks
/// every `resync` with `None` as a safety net (file systems and mounts that miss events; roots
/// that do not exist yet), and sends `None` for an event that comes without paths or fails.
/// Events that only read are dropped, but closing a file after writing is sent: it ends a write.
/// Unbounded, so no event is lost; bursts are coalesced by the receiver. Returns the watcher,
/// which must be kept alive.
pub fn watch(
    roots: &[PathBuf],
    tx: mpsc::UnboundedSender<FileEvent>,
    resync: Duration,
) -> Option<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let tick = tx.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(resync);
        interval.tick().await;
        loop {
            interval.tick().await;
            if tick.send(FileEvent { paths: None, complete: true }).is_err() {
                return;
            }
        }
    });
    let mut watcher = match notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};
        let _ = match res {
            Ok(e) => {
                // The file is whole: closed after writing, renamed into place, or gone.
                let complete = matches!(
                    e.kind,
                    EventKind::Access(AccessKind::Close(AccessMode::Write))
                        | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
                        | EventKind::Remove(_)
                );
                if e.kind.is_access() && !complete {
                    return;
                }
                let rescan = e.need_rescan();
                let paths = Some(e.paths).filter(|p| !p.is_empty() && !rescan);
                tx.send(FileEvent { paths, complete })
            }
            Err(_) => tx.send(FileEvent { paths: None, complete: false }),
        };
    }) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "file watching unavailable; polling only");
            return None;
        }
    };
    for root in roots {
        // Watch the parent of a file: editors and ConfigMap updates replace files by rename.
        let (target, mode) = if root.is_dir() {
            (root.clone(), RecursiveMode::Recursive)
        } else {
            let parent = root.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            (parent.to_path_buf(), RecursiveMode::NonRecursive)
        };
        if let Err(e) = watcher.watch(&target, mode) {
            tracing::warn!(path = %target.display(), error = %e, "cannot watch; polling it");
        }
    }
    Some(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str, text: &str) -> Parsed {
        parse_file(Path::new(name), text.as_bytes())
    }

    #[test]
    fn multi_document_yaml_with_unknown_kind() {
        let p = parse(
            "m.yaml",
            "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: c}\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: b, namespace: x}\n",
        );
        assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
        let refs: Vec<String> = p.objects.iter().map(|(d, o)| format!("{d}:{}", o.object_ref())).collect();
        assert_eq!(refs, ["1:Service default/a", "4:Service x/b"]);
        assert_eq!(p.ignored, 1);
    }

    #[test]
    fn json_stream() {
        let p = parse(
            "m.json",
            r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"a"}} {"apiVersion":"v1","kind":"Service","metadata":{"name":"b"}}"#,
        );
        assert_eq!(p.objects.len(), 2);
    }

    #[test]
    fn malformed_json_names_document() {
        let p = parse("m.json", r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"a"}} {"apiVersion": }"#);
        assert_eq!(p.objects.len(), 1);
        assert_eq!(p.diagnostics.len(), 1);
        assert_eq!(p.diagnostics[0].origin.as_deref(), Some("m.json#2"));
        assert!(p.diagnostics[0].reason.contains("line 1"), "{}", p.diagnostics[0]);
    }

    #[test]
    fn malformed_yaml_names_document() {
        let p = parse("bad.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\nkind: [unclosed\n");
        let d = &p.diagnostics[0];
        assert_eq!(d.severity, crate::diagnostic::Severity::Error);
        assert_eq!(d.origin.as_deref(), Some("bad.yaml#2"));
        assert_eq!(d.field, "document 2");
        assert!(d.to_string().contains("bad.yaml#2"), "{d}");
    }

    #[test]
    fn type_error_has_field_path() {
        let p = parse(
            "i.yaml",
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web}\nspec:\n  rules:\n  - host: a.test\n    http:\n      paths: 7\n",
        );
        let d = &p.diagnostics[0];
        assert_eq!(d.field, "spec.rules[0].http.paths", "{d}");
        assert!(p.objects.is_empty());
    }

    #[test]
    fn unknown_fields_are_warnings() {
        let p = parse(
            "i.yaml",
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web}\nspec:\n  rulez: []\n  tls:\n  - hosts: [a.test]\n    secretNam: x\n",
        );
        let fields: Vec<_> = p.diagnostics.iter().map(|d| (d.severity, d.field.as_str())).collect();
        use crate::diagnostic::Severity::Warning;
        assert_eq!(fields, [(Warning, "spec.rulez"), (Warning, "spec.tls[0].secretNam")], "empty values too");
        assert_eq!(p.objects.len(), 1);
    }

    /// Unknown fields are found while reading, in every kind of type (k8s-openapi's, the Gateway
    /// API's, the L4Route CRD's), inside lists and optional parts; known fields set to null are
    /// not unknown.
    #[test]
    fn unknown_fields_of_every_kind_of_type() {
        let docs = [
            ("Service", "apiVersion: v1\nkind: Service\nmetadata: {name: s, labelz: {a: b}}\nspec: {ports: [{port: 80, targetPortt: 8080}], clusterIP: null}\n", vec!["metadata.labelz", "spec.ports[0].targetPortt"]),
            ("HTTPRoute", "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{name: gw, sectionNme: http}]\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /}, headerz: []}]\n", vec!["spec.parentRefs[0].sectionNme", "spec.rules[0].matches[0].headerz"]),
            ("L4Route", "apiVersion: ferry.dev/v1alpha1\nkind: L4Route\nmetadata: {name: l}\nspec: {port: 5432, protocl: TCP, backend: {service: db, port: 5432}}\n", vec!["spec.protocl"]),
            ("Ingress", "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: i}\nspec: {defaultBackend: null}\nstatus: null\n", vec![]),
        ];
        for (kind, text, want) in docs {
            let p = parse("x.yaml", text);
            assert_eq!(p.objects.len(), 1, "{kind}: {:?}", p.diagnostics);
            let fields: Vec<&str> = p.diagnostics.iter().map(|d| d.field.as_str()).collect();
            assert_eq!(fields, want, "{kind}");
        }
    }

    /// A whole scan skips files by their stamp only when it can be trusted: a file rewritten
    /// within the same clock tick, with the same length, is still read again.
    #[test]
    fn a_rewrite_of_the_same_length_is_seen_by_a_whole_scan() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.yaml");
        let svc = |port: u16| {
            format!("apiVersion: v1\nkind: Service\nmetadata: {{name: a}}\nspec: {{ports: [{{port: {port}}}]}}\n")
        };
        std::fs::write(&f, svc(80)).unwrap();
        let mut src = ManifestSource::new(vec![dir.path().to_path_buf()]);
        src.scan();
        for port in [81, 82, 83] {
            std::fs::write(&f, svc(port)).unwrap();
            assert!(src.scan().changed, "port {port}");
            let ports = src.snapshot().services.values().next().unwrap().spec.as_ref().unwrap().ports.clone();
            assert_eq!(ports[0].port, i32::from(port));
        }
    }

    #[test]
    fn wrong_api_version_is_an_error() {
        let p = parse("i.yaml", "apiVersion: extensions/v1beta1\nkind: Ingress\nmetadata: {name: web}\n");
        assert!(p.diagnostics[0].reason.contains("networking.k8s.io/v1"));
    }

    #[test]
    fn broken_file_keeps_last_good_objects() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.yaml");
        std::fs::write(&f, "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n").unwrap();
        let mut src = ManifestSource::new(vec![dir.path().to_path_buf()]);
        assert!(src.scan().changed);
        assert_eq!(src.snapshot().services.len(), 1);
        assert!(!src.scan().changed, "unchanged bytes do not rebuild");
        std::fs::write(&f, "apiVersion: v1\nkind: Service\nmetadata: {name: [\n").unwrap();
        assert!(!src.scan().changed);
        assert_eq!(src.snapshot().services.len(), 1);
        assert_eq!(src.diagnostics().len(), 1);
        std::fs::remove_file(&f).unwrap();
        assert!(src.scan().changed);
        assert_eq!(src.snapshot().services.len(), 0, "a deleted file takes its objects");
    }

    /// The source's snapshot follows its files as they change (a later file's object wins over
    /// an earlier file's of the same name) and records exactly what changed: the same snapshot a
    /// new source reading the files makes, and for the incremental build, the objects that differ.
    #[test]
    fn snapshot_follows_files_and_records_changes() {
        let dir = tempfile::tempdir().unwrap();
        let svc = |name: &str, port: u16| {
            format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{ports: [{{port: {port}}}]}}\n")
        };
        let (a, b) = (dir.path().join("a.yaml"), dir.path().join("b.yaml"));
        std::fs::write(&a, format!("{}---\n{}", svc("one", 80), svc("two", 80))).unwrap();
        let mut src = ManifestSource::new(vec![dir.path().to_path_buf()]);
        src.scan();
        assert!(src.take_changes().is_everything(), "the first build is a whole one");
        let port = |src: &ManifestSource, name: &str| {
            let key = ("default".to_string(), name.to_string());
            src.snapshot().services.get(&key).map(|s| s.spec.as_ref().unwrap().ports[0].port)
        };
        let names = |c: Changes| c.objects().iter().map(|r| r.name.clone()).collect::<Vec<_>>();
        // A later file overrides one object; the other is untouched.
        std::fs::write(&b, svc("one", 81)).unwrap();
        src.scan();
        assert_eq!((port(&src, "one"), port(&src, "two")), (Some(81), Some(80)));
        assert_eq!(names(src.take_changes()), ["one"]);
        // Rewriting the earlier file with one change: only that object changed (the overridden
        // one is still the later file's).
        std::fs::write(&a, format!("{}---\n{}", svc("one", 90), svc("two", 91))).unwrap();
        src.scan();
        assert_eq!((port(&src, "one"), port(&src, "two")), (Some(81), Some(91)));
        assert_eq!(names(src.take_changes()), ["two"]);
        // The later file goes: the earlier file's object is back.
        std::fs::remove_file(&b).unwrap();
        src.scan();
        assert_eq!(port(&src, "one"), Some(90));
        assert_eq!(names(src.take_changes()), ["one"]);
        // One file with the same object twice: its later document wins, on the first read and
        // after an edit of the earlier one (which changes nothing served).
        std::fs::write(&a, format!("{}---\n{}---\n{}", svc("one", 1), svc("two", 91), svc("one", 2))).unwrap();
        src.scan();
        assert_eq!(port(&src, "one"), Some(2));
        assert_eq!(names(src.take_changes()), ["one"]);
        std::fs::write(&a, format!("{}---\n{}---\n{}", svc("one", 3), svc("two", 91), svc("one", 2))).unwrap();
        src.scan();
        assert_eq!(port(&src, "one"), Some(2));
        assert!(src.take_changes().is_empty());
        // A fresh source reading the same files has the same objects.
        let mut fresh = ManifestSource::new(vec![dir.path().to_path_buf()]);
        fresh.scan();
        for name in ["one", "two"] {
            assert_eq!(port(&fresh, name), port(&src, name));
        }
        assert_eq!(fresh.snapshot().len(), src.snapshot().len());
    }

    /// A file's digest is the same read whole or a chunk at a time, whatever its length, and
    /// differs when a byte does.
    #[test]
    fn file_digest_read_in_chunks_equals_the_whole_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.yaml");
        for len in [0, 1, DIGEST_CHUNK - 1, DIGEST_CHUNK, DIGEST_CHUNK + 1, 3 * DIGEST_CHUNK + 17] {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            std::fs::write(&path, &bytes).unwrap();
            assert_eq!(digest_file(&path).unwrap(), digest(&bytes), "{len} bytes");
            if len > 0 {
                let mut other = bytes.clone();
                other[len / 2] ^= 1;
                assert_ne!(digest(&other), digest(&bytes), "{len} bytes, one changed");
            }
        }
        assert!(digest_file(&dir.path().join("missing.yaml")).is_err());
    }

    /// Reading only the paths events named gives what a whole scan gives: a changed file, a new
    /// one, a removed one; hidden files are skipped; what a path cannot settle (a directory, a
    /// path outside the roots) takes a whole scan.
    #[test]
    fn scanning_named_paths_matches_a_whole_scan() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let svc = |name: &str, port: u16| {
            format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{ports: [{{port: {port}}}]}}\n")
        };
        std::fs::write(root.join("a.yaml"), svc("one", 80)).unwrap();
        let mut src = ManifestSource::new(vec![root.clone()]);
        src.scan();
        src.take_changes();
        let ports = |src: &ManifestSource| {
            let mut out: Vec<(String, i32)> = src
                .snapshot()
                .services
                .iter()
                .map(|((_, n), s)| (n.clone(), s.spec.as_ref().unwrap().ports[0].port))
                .collect();
            out.sort();
            out
        };
        let whole = |root: &Path| {
            let mut fresh = ManifestSource::new(vec![root.to_path_buf()]);
            fresh.scan();
            ports(&fresh)
        };
        // Changed, added, and a hidden temporary file (skipped even if named).
        std::fs::write(root.join("a.yaml"), svc("one", 81)).unwrap();
        std::fs::write(root.join("b.yaml"), svc("two", 80)).unwrap();
        std::fs::write(root.join(".b.tmp.yaml"), svc("hidden", 80)).unwrap();
        let report = src.scan_paths(&[root.join("a.yaml"), root.join("b.yaml"), root.join(".b.tmp.yaml")]);
        assert!(report.changed);
        assert_eq!(ports(&src), whole(&root));
        assert_eq!(ports(&src), [("one".to_string(), 81), ("two".to_string(), 80)]);
        // Removed.
        std::fs::remove_file(root.join("b.yaml")).unwrap();
        src.scan_paths(&[root.join("b.yaml")]);
        assert_eq!(ports(&src), whole(&root));
        // A new directory is read whole.
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/c.yaml"), svc("three", 80)).unwrap();
        src.scan_paths(&[root.join("sub")]);
        assert_eq!(ports(&src), whole(&root));
        assert_eq!(ports(&src).len(), 2, "hidden file still skipped: {:?}", ports(&src));
    }

    #[test]
    fn missing_root_is_reported_and_keeps_objects() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("m");
        let mut src = ManifestSource::new(vec![root.clone()]);
        assert_eq!(src.scan().missing, vec![root.clone()]);
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("a.yaml"), "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n").unwrap();
        assert!(src.scan().missing.is_empty());
        std::fs::remove_dir_all(&root).unwrap();
        assert!(!src.scan().changed);
        assert_eq!(src.snapshot().services.len(), 1);
    }
}
