//! OpenTelemetry span export (OTLP over HTTP, protobuf), off unless `--otlp-endpoint` is set.
//!
//! Each sampled request becomes one server span whose id is the parent id ferry puts in the
//! upstream's `traceparent`, so the pod's spans hang under ferry's. The request path builds the
//! span and hands it over a bounded channel; a thread of its own batches spans and sends them
//! with the OpenTelemetry OTLP exporter. When the collector is slow or away, spans are dropped
//! and counted (`ferry_otlp_spans_total{outcome}`); requests never wait for it.
//!
//! Sampling is parent-based: a client's sampled `traceparent` is always exported, an unsampled
//! one never; a trace ferry starts itself is sampled with probability `sample_ratio`.

use std::borrow::Cow;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use opentelemetry_sdk::Resource;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use pingora::http::RequestHeader;

use crate::metrics::OtlpLabels;
use crate::record::Done;
use crate::trace::TraceContext;

/// Spans waiting for the exporter thread; more are dropped.
const QUEUE: usize = 16 * 1024;
/// Spans per export request.
const BATCH: usize = 512;
/// How long a span may wait for its batch to fill.
const LINGER: Duration = Duration::from_millis(500);
/// Time allowed for one export request.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct Config {
    /// The collector: a base URL (`http://collector:4318`, `/v1/traces` is appended) or the
    /// full traces URL when it has a path.
    pub endpoint: String,
    /// Probability that a trace ferry starts itself is sampled (0.0 – 1.0).
    pub sample_ratio: f64,
}

enum Msg {
    Span(Box<SpanData>),
    Flush(SyncSender<()>),
}

pub struct Exporter {
    tx: SyncSender<Msg>,
    sample_ratio: f64,
    spans: Family<OtlpLabels, Counter>,
}

/// `endpoint` as the traces URL: a bare base URL gets `/v1/traces`.
pub fn traces_url(endpoint: &str) -> Result<String, String> {
    let uri: http::Uri = endpoint.parse().map_err(|e| format!("{endpoint:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("{endpoint:?} must start with http:// or https://")),
    }
    if uri.host().is_none() {
        return Err(format!("{endpoint:?} has no host"));
    }
    Ok(match uri.path() {
        "" | "/" => format!("{}/v1/traces", endpoint.trim_end_matches('/')),
        _ => endpoint.to_string(),
    })
}

impl Exporter {
    /// Builds the OTLP exporter and starts the thread that sends batches.
    pub fn start(config: &Config, spans: Family<OtlpLabels, Counter>) -> Result<Exporter, String> {
        if !(0.0..=1.0).contains(&config.sample_ratio) {
            return Err(format!("sample ratio {} is not between 0 and 1", config.sample_ratio));
        }
        let url = traces_url(&config.endpoint)?;
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(url)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| e.to_string())?;
        exporter.set_resource(&resource());
        // The HTTP client needs a runtime; the exporter thread has its own so that exports
        // never take a worker from the data plane.
        let rt =
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| format!("runtime: {e}"))?;
        let (tx, rx) = sync_channel::<Msg>(QUEUE);
        let counters = spans.clone();
        std::thread::Builder::new()
            .name("ferry-otlp".into())
            .spawn(move || run(&rt, &exporter, &rx, &counters))
            .map_err(|e| format!("exporter thread: {e}"))?;
        Ok(Exporter { tx, sample_ratio: config.sample_ratio, spans })
    }

    pub fn sample_ratio(&self) -> f64 {
        self.sample_ratio
    }

    /// Queues the span of a finished request (`host` as the access log has it) if its trace is
    /// sampled.
    pub(crate) fn record(&self, req: &RequestHeader, host: &str, done: &Done<'_>) {
        let Some(trace) = done.trace.filter(|t| t.sampled) else { return };
        let Some(span) = span_data(req, host, trace, done) else { return };
        if self.tx.try_send(Msg::Span(Box::new(span))).is_err() {
            self.spans.get_or_create(&OtlpLabels { outcome: "dropped" }).inc();
        }
    }

    /// Sends what is queued, waiting at most `timeout` (used at shutdown).
    pub fn flush(&self, timeout: Duration) {
        let (done_tx, done_rx) = sync_channel(1);
        if self.tx.send(Msg::Flush(done_tx)).is_ok() {
            let _ = done_rx.recv_timeout(timeout);
        }
    }
}

fn resource() -> Resource {
    // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are honoured; the name defaults to ferry.
    let builder = Resource::builder().with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if std::env::var_os("OTEL_SERVICE_NAME").is_some() {
        builder.build()
    } else {
        builder.with_service_name("ferry").build()
    }
}

/// The exporter thread: batches of up to `BATCH` spans, each sent within `LINGER` of its first.
fn run(
    rt: &tokio::runtime::Runtime,
    exporter: &opentelemetry_otlp::SpanExporter,
    rx: &Receiver<Msg>,
    counters: &Family<OtlpLabels, Counter>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut flushes = Vec::new();
    loop {
        let first = match rx.recv() {
            Ok(m) => m,
            Err(_) => return,
        };
        let deadline = Instant::now() + LINGER;
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Span(s) => batch.push(*s),
                Msg::Flush(done) => {
                    flushes.push(done);
                    break;
                }
            }
            if batch.len() >= BATCH {
                break;
            }
            // Timed out or disconnected: send what we have.
            next = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).ok();
        }
        if !batch.is_empty() {
            let n = batch.len() as u64;
            let outcome = match rt.block_on(exporter.export(std::mem::take(&mut batch))) {
                Ok(()) => "exported",
                Err(e) => {
                    tracing::warn!(error = %e, spans = n, "OTLP export failed; spans dropped");
                    "failed"
                }
            };
            counters.get_or_create(&OtlpLabels { outcome }).inc_by(n);
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

fn scope() -> &'static InstrumentationScope {
    static SCOPE: std::sync::OnceLock<InstrumentationScope> = std::sync::OnceLock::new();
    SCOPE.get_or_init(|| InstrumentationScope::builder("ferry").with_version(env!("CARGO_PKG_VERSION")).build())
}

fn span_data(req: &RequestHeader, host: &str, trace: &TraceContext, r: &Done<'_>) -> Option<SpanData> {
    let trace_id = TraceId::from_hex(trace.trace_id()).ok()?;
    let end_time = SystemTime::now();
    let start_time = end_time.checked_sub(r.started.elapsed()).unwrap_or(end_time);
    let method = req.method.as_str();
    let mut attributes = vec![
        KeyValue::new("http.request.method", method.to_string()),
        KeyValue::new("url.path", req.uri.path().to_string()),
        KeyValue::new("server.address", host.to_string()),
        KeyValue::new("ferry.request_id", r.request_id.to_string()),
    ];
    if r.status != 0 {
        attributes.push(KeyValue::new("http.response.status_code", i64::from(r.status)));
    }
    if let Some(ip) = r.client {
        attributes.push(KeyValue::new("client.address", ip.to_string()));
    }
    if let Some(route) = r.route {
        attributes.push(KeyValue::new("ferry.route", route.name.to_string()));
        attributes.push(KeyValue::new("ferry.backend", route.backend.name.to_string()));
    }
    if let Some(up) = r.upstream {
        attributes.push(KeyValue::new("network.peer.address", up.ip().to_string()));
        attributes.push(KeyValue::new("network.peer.port", i64::from(up.port())));
    }
    let status = match r.status {
        0 => Status::error("no response"),
        s if s >= 500 => Status::error(format!("{s}")),
        _ => Status::Unset,
    };
    Some(SpanData {
        span_context: SpanContext::new(
            trace_id,
            SpanId::from(trace.span_id()),
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        ),
        parent_span_id: trace.parent_id().map_or(SpanId::INVALID, SpanId::from),
        parent_span_is_remote: trace.parent_id().is_some(),
        span_kind: SpanKind::Server,
        name: Cow::Owned(method.to_string()),
        start_time,
        end_time,
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope().clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls() {
        assert_eq!(traces_url("http://c:4318").unwrap(), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/").unwrap(), "http://c:4318/v1/traces");
        assert_eq!(traces_url("https://c/custom/traces").unwrap(), "https://c/custom/traces");
        assert!(traces_url("c:4318").is_err());
        assert!(traces_url("ftp://c/").is_err());
        assert!(traces_url("not a url").is_err());
    }
}
