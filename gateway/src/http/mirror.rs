//! Gateway API `RequestMirror`: a copy of the request, as it goes upstream, to other backends;
//! their answers are read and dropped. A mirror never delays or fails the request itself: the
//! copies are sent from tasks of their own, after the original's head is ready, and any error
//! is only counted in the debug log.
//!
//! Only requests without a body are mirrored (a body is streamed once, to the real backend);
//! that covers the reads mirroring is mostly used for, and is documented.

use std::time::Duration;

use pingora::http::RequestHeader;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::balance::PickInput;
use crate::table::Mirror;

/// How long a mirrored exchange may take in all before it is dropped.
const MIRROR_DEADLINE: Duration = Duration::from_secs(10);
/// Mirrored exchanges in flight at most (process-wide): a slow mirror under load must not pile up
/// sockets and tasks; beyond it copies are skipped.
const MAX_IN_FLIGHT: usize = 1024;

static IN_FLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// One mirrored exchange counted in [`IN_FLIGHT`] while it lives.
struct Slot;

impl Slot {
    fn take() -> Option<Slot> {
        use std::sync::atomic::Ordering;
        IN_FLIGHT.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < MAX_IN_FLIGHT).then_some(n + 1)).ok()?;
        Some(Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Sends `req` (the upstream head) to each mirror whose share this request falls in.
pub(super) fn send(mirrors: &[Mirror], req: &RequestHeader, body_empty: bool, connect: Duration) {
    if !body_empty {
        return;
    }
    for m in mirrors {
        if m.denominator == 0 || fastrand::u32(..m.denominator) >= m.numerator {
            continue;
        }
        let Some(slot) = Slot::take() else {
            tracing::debug!(backend = %m.backend.name, "too many mirrored requests in flight; copy skipped");
            continue;
        };
        let Some(pick) = m.backend.pick(&PickInput::default()) else { continue };
        let head = head_bytes(req);
        let addr = pick.addr;
        let backend = m.backend.name.clone();
        let tls = m.backend.tls.clone();
        tokio::spawn(async move {
            let _in_flight = (pick, slot);
            let exchange = async {
                let tcp = tokio::time::timeout(connect, tokio::net::TcpStream::connect(addr)).await??;
                match &tls {
                    // A BackendTLSPolicy's backend: the same verified TLS as the requests it copies.
                    Some(tls) => relay(tokio::time::timeout(connect, tls.handshake(tcp, false)).await??, &head).await,
                    None => relay(tcp, &head).await,
                }
            };
            match tokio::time::timeout(MIRROR_DEADLINE, exchange).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%backend, endpoint = %addr, error = %e, "mirrored request failed"),
                Err(_) => tracing::debug!(%backend, endpoint = %addr, "mirrored request timed out"),
            }
        });
    }
}

/// Writes the head and reads the answer to its end (the head asks the backend to close).
async fn relay<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, head: &[u8]) -> std::io::Result<()> {
    s.write_all(head).await?;
    let mut sink = [0u8; 4096];
    while s.read(&mut sink).await? > 0 {}
    Ok(())
}

/// The HTTP/1.1 head of a mirrored request: the upstream head, closing the connection.
fn head_bytes(req: &RequestHeader) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(super::origin_form(req).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers.iter() {
        if name == http::header::CONNECTION {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mirrored_head_closes_its_connection() {
        let mut req = RequestHeader::build("GET", b"/mirror?x=1", None).unwrap();
        req.insert_header("Host", "a.test").unwrap();
        req.insert_header("Connection", "keep-alive").unwrap();
        let text = String::from_utf8(head_bytes(&req)).unwrap();
        assert!(text.starts_with("GET /mirror?x=1 HTTP/1.1\r\n"), "{text}");
        assert!(text.contains("host: a.test\r\n") && text.ends_with("Connection: close\r\n\r\n"), "{text}");
        assert!(!text.contains("keep-alive"));
    }
}
