//! Access log: one JSON line per request, written by a thread of its own.
//!
//! The request path formats its line and hands it over a bounded channel; it never waits on
//! the output. If the writer falls behind by `QUEUE` lines, further lines are dropped and
//! counted (`ferry_access_log_dropped_total`) rather than slowing traffic down.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;

const QUEUE: usize = 64 * 1024;

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

#[derive(Debug)]
pub struct AccessLog {
    tx: SyncSender<String>,
    dropped: Counter,
}

/// One request as logged. Field names are the log's contract.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    pub time: String,
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
        let mut out: Box<dyn Write + Send> = match dest {
            Destination::Stdout => Box::new(std::io::stdout()),
            Destination::File(path) => Box::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?),
        };
        let (tx, rx) = sync_channel::<String>(QUEUE);
        std::thread::Builder::new().name("ferry-access-log".into()).spawn(move || {
            let mut buf = std::io::BufWriter::with_capacity(64 * 1024, &mut out);
            loop {
                // Write what is queued, then flush when the queue is momentarily empty.
                match rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(line) => {
                        let _ = buf.write_all(line.as_bytes());
                        while let Ok(line) = rx.try_recv() {
                            let _ = buf.write_all(line.as_bytes());
                        }
                        let _ = buf.flush();
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
        })?;
        Ok(AccessLog { tx, dropped })
    }

    pub fn log(&self, entry: &Entry<'_>) {
        let Ok(mut line) = serde_json::to_string(entry) else { return };
        line.push('\n');
        if let Err(TrySendError::Full(_)) = self.tx.try_send(line) {
            self.dropped.inc();
        }
    }
}

/// The current time as RFC 3339 UTC with microseconds.
pub fn now() -> String {
    format!("{:.6}", jiff::Timestamp::now())
}
