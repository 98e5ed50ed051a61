//! Access log: one JSON line per request, written in batches by a thread of its own.
//!
//! The request path formats its line straight into a shared buffer (no intermediate value, no
//! allocation once the buffer has grown; the time's date part is formatted once a second per
//! thread) and never waits on the output. The writer thread takes the whole buffer every
//! [`BATCH`] (sooner once [`WAKE_AT`] bytes are waiting) and writes it with one write: no
//! wake-up or system call per request. If the output falls behind by [`MAX_PENDING`] bytes,
//! further lines are dropped and counted (`ferry_access_log_dropped_total`) rather than slowing
//! traffic down. [`AccessLog::flush`] writes what is pending before the process exits.

use std::cell::RefCell;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;

/// How often pending lines are written.
const BATCH: Duration = Duration::from_millis(100);
/// Pending bytes that wake the writer before [`BATCH`] ends.
const WAKE_AT: usize = 64 * 1024;
/// Pending bytes past which lines are dropped (the output is not keeping up).
const MAX_PENDING: usize = 16 * 1024 * 1024;

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Stdout,
    File(std::path::PathBuf),
}

impl std::str::FromStr for Destination {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stdout" | "-" => Ok(Destination::Stdout),
            "" => Err("empty access log path".into()),
            path => Ok(Destination::File(path.into())),
        }
    }
}

/// The writer's side: the output and the buffer it swaps with the pending one.
struct Output {
    out: Box<dyn Write + Send>,
    spare: Vec<u8>,
}

struct Shared {
    pending: Mutex<Vec<u8>>,
    /// Held while a batch is taken and written, so batches reach the output in order.
    output: Mutex<Output>,
}

impl Shared {
    /// Takes what is pending and writes it.
    fn write_pending(&self) {
        let mut output = self.output.lock().unwrap_or_else(|e| e.into_inner());
        let Output { out, spare } = &mut *output;
        {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::swap(&mut *pending, spare);
        }
        if !spare.is_empty() {
            let _ = out.write_all(spare);
            let _ = out.flush();
            spare.clear();
        }
    }
}

pub struct AccessLog {
    shared: Arc<Shared>,
    writer: std::thread::Thread,
    dropped: Counter,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog").finish_non_exhaustive()
    }
}

/// One request as logged. Field names and their order are the log's contract.
#[derive(Debug)]
pub struct Entry<'a> {
    pub time: SystemTime,
    pub client: Option<IpAddr>,
    pub host: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    /// 0 when no response was sent.
    pub status: u16,
    /// Response body bytes sent.
    pub bytes: usize,
    pub duration_ms: f64,
    pub upstream: Option<SocketAddr>,
    pub upstream_ms: Option<f64>,
    /// `namespace/ingress`, or none when no route matched.
    pub route: Option<&'a str>,
    pub request_id: &'a str,
    /// W3C trace id (the client's, or one ferry started).
    pub trace_id: &'a str,
}

impl AccessLog {
    /// Opens the destination (a file is appended to) and starts the writer thread.
    pub fn open(dest: &Destination, dropped: Counter) -> std::io::Result<AccessLog> {
        let out: Box<dyn Write + Send> = match dest {
            Destination::Stdout => Box::new(std::io::stdout()),
            Destination::File(path) => Box::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?),
        };
        let shared = Arc::new(Shared {
            pending: Mutex::new(Vec::with_capacity(WAKE_AT)),
            output: Mutex::new(Output { out, spare: Vec::with_capacity(WAKE_AT) }),
        });
        let batches = Arc::downgrade(&shared);
        let writer = std::thread::Builder::new().name("ferry-access-log".into()).spawn(move || loop {
            std::thread::park_timeout(BATCH);
            match batches.upgrade() {
                Some(shared) => shared.write_pending(),
                None => return,
            }
        })?;
        Ok(AccessLog { shared, writer: writer.thread().clone(), dropped })
    }

    pub fn log(&self, entry: &Entry<'_>) {
        let mut pending = self.shared.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.len() >= MAX_PENDING {
            drop(pending);
            self.dropped.inc();
            return;
        }
        let before = pending.len();
        format_line(&mut pending, entry);
        if before < WAKE_AT && pending.len() >= WAKE_AT {
            drop(pending);
            self.writer.unpark();
        }
    }

    /// Writes every pending line now (before the process exits).
    pub fn flush(&self) {
        self.shared.write_pending();
    }
}

/// Appends `entry` as one JSON line (the fields in [`Entry`]'s order; absent ones `null`).
fn format_line(out: &mut Vec<u8>, e: &Entry<'_>) {
    out.extend_from_slice(b"{\"time\":\"");
    write_time(out, e.time);
    out.push(b'"');
    field(out, "client", e.client, |out, ip| {
        out.push(b'"');
        write_ip(out, ip);
        out.push(b'"');
    });
    field(out, "host", Some(e.host), json_str);
    field(out, "method", Some(e.method), json_str);
    field(out, "path", Some(e.path), json_str);
    field(out, "status", Some(e.status), |out, n| out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()));
    field(out, "bytes", Some(e.bytes), |out, n| out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()));
    field(out, "duration_ms", Some(e.duration_ms), json_f64);
    field(out, "upstream", e.upstream, |out, addr| {
        out.push(b'"');
        if addr.is_ipv6() {
            out.push(b'[');
            write_ip(out, addr.ip());
            out.push(b']');
        } else {
            write_ip(out, addr.ip());
        }
        out.push(b':');
        out.extend_from_slice(itoa::Buffer::new().format(addr.port()).as_bytes());
        out.push(b'"');
    });
    field(out, "upstream_ms", e.upstream_ms, json_f64);
    field(out, "route", e.route, json_str);
    field(out, "request_id", Some(e.request_id), json_str);
    field(out, "trace_id", Some(e.trace_id), json_str);
    out.extend_from_slice(b"}\n");
}

/// `,"name":` and the value as `write` formats it, or `null`.
fn field<T>(out: &mut Vec<u8>, name: &str, value: Option<T>, write: impl FnOnce(&mut Vec<u8>, T)) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    match value {
        Some(v) => write(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

/// An address as `Display` writes it; IPv4 (the common case) without the formatting machinery.
fn write_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(itoa::Buffer::new().format(octet).as_bytes());
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Whether a byte must be escaped in a JSON string (or is DEL, escaped for readability).
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f
}

/// A JSON string: `"`, `\` and control characters escaped (everything else is valid UTF-8
/// already).
fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    if !bytes.iter().any(|b| needs_escape(*b)) {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !needs_escape(b) {
            continue;
        }
        out.extend_from_slice(&bytes[from..i]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => {
                let _ = write!(out, "\\u{b:04x}");
            }
        }
        from = i + 1;
    }
    out.extend_from_slice(&bytes[from..]);
    out.push(b'"');
}

/// A JSON number, shortest form (a non-finite value, which JSON has no number for, as `null`).
fn json_f64(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        out.extend_from_slice(ryu::Buffer::new().format_finite(v).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

thread_local! {
    /// The second last formatted on this thread and its `YYYY-MM-DDTHH:MM:SS`.
    static SECOND: RefCell<(u64, [u8; 19])> = const { RefCell::new((u64::MAX, [0; 19])) };
}

/// RFC 3339 UTC with microseconds (`2026-12-02T21:00:49.123456Z`); the date and time of day are
/// formatted once per second per thread.
fn write_time(out: &mut Vec<u8>, at: SystemTime) {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != secs {
            let text = jiff::Timestamp::from_second(secs as i64).map(|t| t.to_string()).unwrap_or_default();
            // `2026-12-02T21:00:49Z`: the part before the `Z`.
            if text.len() == 20 {
                cached.1.copy_from_slice(&text.as_bytes()[..19]);
                cached.0 = secs;
            }
        }
        out.extend_from_slice(&cached.1);
    });
    let mut digits = itoa::Buffer::new();
    let micros = digits.format(since.subsec_micros());
    out.push(b'.');
    out.extend(std::iter::repeat_n(b'0', 6 - micros.len()));
    out.extend_from_slice(micros.as_bytes());
    out.push(b'Z');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(entry: &Entry<'_>) -> String {
        let mut out = Vec::new();
        format_line(&mut out, entry);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_line_is_one_json_object_in_the_contract_order() {
        let at = UNIX_EPOCH + Duration::from_micros(1_796_245_249_000_042);
        let entry = Entry {
            time: at,
            client: Some([10, 0, 0, 1].into()),
            host: "a.test",
            method: "GET",
            path: "/q?\"x\"\\\u{1}\t\u{e9}",
            status: 200,
            bytes: 42,
            duration_ms: 1.25,
            upstream: Some("[::1]:8080".parse().unwrap()),
            upstream_ms: None,
            route: Some("default/shop"),
            request_id: "abc",
            trace_id: "0af7651916cd43dd8448eb211c80319c",
        };
        let text = line(&entry);
        assert!(text.ends_with("}\n") && text.matches('\n').count() == 1, "{text}");
        assert_eq!(
            text,
            "{\"time\":\"2026-12-02T21:00:49.000042Z\",\"client\":\"10.0.0.1\",\"host\":\"a.test\",\"method\":\"GET\",\
             \"path\":\"/q?\\\"x\\\"\\\\\\u0001\\t\u{e9}\",\"status\":200,\"bytes\":42,\"duration_ms\":1.25,\
             \"upstream\":\"[::1]:8080\",\"upstream_ms\":null,\"route\":\"default/shop\",\"request_id\":\"abc\",\
             \"trace_id\":\"0af7651916cd43dd8448eb211c80319c\"}\n"
        );
        let none = Entry { client: None, upstream: None, route: None, duration_ms: f64::NAN, ..entry };
        assert!(line(&none).contains("\"client\":null,"), "{}", line(&none));
        assert!(line(&none).contains("\"duration_ms\":null,"), "{}", line(&none));
    }

    #[test]
    fn the_cached_second_follows_the_clock() {
        let mut out = Vec::new();
        for micros in [1_796_245_249_999_999u64, 1_796_245_250_000_000, 1_796_245_249_500_000] {
            write_time(&mut out, UNIX_EPOCH + Duration::from_micros(micros));
            out.push(b' ');
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-12-02T21:00:49.999999Z 2026-12-02T21:00:50.000000Z 2026-12-02T21:00:49.500000Z "
        );
    }

    #[test]
    fn lines_reach_the_file_in_batches_and_on_flush() {
        let dir = std::env::temp_dir().join(format!("ferry-access-log-{}", std::process::id()));
        let path = dir.with_extension("log");
        let log = AccessLog::open(&Destination::File(path.clone()), Counter::default()).unwrap();
        let entry = |n: usize| Entry {
            time: SystemTime::now(),
            client: None,
            host: "a",
            method: "GET",
            path: "/",
            status: 200,
            bytes: n,
            duration_ms: 0.5,
            upstream: None,
            upstream_ms: None,
            route: None,
            request_id: "r",
            trace_id: "t",
        };
        for n in 0..1000 {
            log.log(&entry(n));
        }
        log.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        let bytes: Vec<usize> = text
            .lines()
            .map(|l| l.split("\"bytes\":").nth(1).unwrap().split(',').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(bytes, (0..1000).collect::<Vec<_>>(), "every line, in order");
        // Without a flush, the writer thread writes within a batch period.
        log.log(&entry(1000));
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while !std::fs::read_to_string(&path).unwrap().contains("\"bytes\":1000,") {
            assert!(std::time::Instant::now() < deadline, "the batch was written");
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = std::fs::remove_file(&path);
    }
}
