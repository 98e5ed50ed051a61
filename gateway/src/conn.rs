//! A client connection as ferry's own listener loops accept it: the TCP stream, with a write
//! buffer that exists only while a response is being written and a way to wait for the client's
//! next bytes without holding a buffer.
//!
//! Why not Pingora's listener stream: it allocates its write buffer at accept and keeps it for
//! the connection's life, and a kept-alive connection waiting for its next request can only wait
//! by reading, into a buffer it must hold meanwhile. An idle connection here holds the socket,
//! the peer's address and nothing else (issue 17: memory per idle connection).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, TimingDigest, UniqueID,
    UniqueIDType,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Writes up to this size are gathered (a response head and a short body leave in one write);
/// larger ones go straight to the socket. Pingora's listener buffer is the same size.
const GATHER: usize = 1460;

/// An accepted client connection (plaintext; TLS runs over it).
#[derive(Debug)]
pub struct Conn {
    tcp: TcpStream,
    /// Bytes read ahead and given back (the h2c sniff, the TLS handshake's first byte), read
    /// again before the socket.
    rewound: Vec<u8>,
    /// Gathered writes not yet sent, from `sent` on. Empty, without an allocation, between
    /// responses.
    out: Vec<u8>,
    sent: usize,
    /// The client's address, as accepted.
    peer: Option<std::net::SocketAddr>,
    /// A socket digest set from outside; otherwise one is made when asked for (see
    /// [`GetSocketDigest`] below).
    socket: Option<Arc<SocketDigest>>,
    proxy: Option<Arc<ProxyDigest>>,
}

impl Conn {
    /// An accepted stream from `peer` (`TCP_NODELAY` set: responses leave when flushed, not
    /// later).
    pub fn accepted(tcp: TcpStream, peer: std::net::SocketAddr) -> Conn {
        let _ = tcp.set_nodelay(true);
        Conn { tcp, rewound: Vec::new(), out: Vec::new(), sent: 0, peer: Some(peer), socket: None, proxy: None }
    }

    /// Puts bytes already read back in front of the stream.
    pub fn rewind(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() {
            let mut front = bytes.to_vec();
            front.append(&mut self.rewound);
            self.rewound = front;
        }
    }

    /// Waits until the client sends something, holding no buffer meanwhile, then reads it into
    /// `buf` (which takes `size` bytes then). `Some(0)`: the client closed; `None`: bytes given
    /// back with [`rewind`](Self::rewind) are there, to be read as usual.
    ///
    /// The socket's readiness can be stale (set by the last read, which returned data): a read
    /// that would block then releases the buffer and waits again, so the wait is never the
    /// reader's (with its own timeout) while the client is idle.
    pub async fn read_when_ready(&self, buf: &mut bytes::BytesMut, size: usize) -> io::Result<Option<usize>> {
        if !self.rewound.is_empty() {
            return Ok(None);
        }
        loop {
            self.tcp.readable().await?;
            buf.reserve(size);
            match self.tcp.try_read_buf(buf) {
                Ok(n) => return Ok(Some(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => *buf = bytes::BytesMut::new(),
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends the gathered writes; the buffer is released once they are out.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.out[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.out = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.rewound.is_empty() {
            let n = self.rewound.len().min(buf.remaining());
            buf.put_slice(&self.rewound[..n]);
            self.rewound.drain(..n);
            if self.rewound.is_empty() {
                self.rewound = Vec::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.out.len() + buf.len() > GATHER {
            ready!(this.poll_send(cx))?;
        }
        if buf.len() >= GATHER {
            return Pin::new(&mut this.tcp).poll_write(cx, buf);
        }
        if this.out.capacity() == 0 {
            this.out.reserve_exact(GATHER);
        }
        this.out.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send(cx))?;
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send(cx))?;
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[async_trait::async_trait]
impl Shutdown for Conn {
    async fn shutdown(&mut self) {
        let _ = tokio::io::AsyncWriteExt::shutdown(self).await;
    }
}

impl UniqueID for Conn {
    fn id(&self) -> UniqueIDType {
        std::os::fd::AsRawFd::as_raw_fd(&self.tcp)
    }
}

impl Ssl for Conn {}

/// Nothing in ferry reads connection timings; Pingora's sessions ask for them per request, so
/// none are kept (an empty list allocates nothing).
impl GetTimingDigest for Conn {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        Vec::new()
    }
}

impl GetProxyDigest for Conn {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.proxy.clone()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.proxy = Some(Arc::new(digest));
    }
}

/// Pingora's socket digest is ~400 bytes (room for three Unix socket addresses); kept for the
/// connection's life it was a seventh of an idle connection's memory. It is made when asked for
/// (once per request, by the session), with the accepted peer address already in it.
impl GetSocketDigest for Conn {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        if let Some(set) = &self.socket {
            return Some(set.clone());
        }
        let digest = SocketDigest::from_raw_fd(std::os::fd::AsRawFd::as_raw_fd(&self.tcp));
        let _ = digest.peer_addr.set(self.peer.map(pingora::protocols::l4::socket::SocketAddr::Inet));
        Some(Arc::new(digest))
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.socket = Some(Arc::new(digest));
    }
}

impl Peek for Conn {}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (Conn, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let peer = server.peer_addr().unwrap();
        (Conn::accepted(server, peer), client)
    }

    #[tokio::test]
    async fn writes_are_gathered_until_flushed_and_the_buffer_released() {
        let (mut conn, mut client) = pair().await;
        conn.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        conn.write_all(b"ok").await.unwrap();
        assert!(conn.out.capacity() > 0, "small writes wait for the flush");
        conn.flush().await.unwrap();
        assert_eq!(conn.out.capacity(), 0, "nothing held after the flush");
        let mut got = [0u8; 21];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"HTTP/1.1 200 OK\r\n\r\nok");
        // A large write after a small one keeps the order.
        let big = vec![b'x'; 10_000];
        conn.write_all(b"head").await.unwrap();
        conn.write_all(&big).await.unwrap();
        conn.flush().await.unwrap();
        let mut got = vec![0u8; 10_004];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..4], b"head");
        assert!(got[4..].iter().all(|b| *b == b'x'));
    }

    #[tokio::test]
    async fn waiting_for_the_next_bytes_holds_no_buffer() {
        let (mut conn, mut client) = pair().await;
        client.write_all(b"GET /1").await.unwrap();
        let mut buf = bytes::BytesMut::new();
        assert_eq!(conn.read_when_ready(&mut buf, 1024).await.unwrap(), Some(6));
        assert_eq!(&buf[..], b"GET /1");
        // The socket's readiness is stale now (that read returned data): the wait must not end
        // with a buffer taken and nothing read.
        let mut next = bytes::BytesMut::new();
        let waited = tokio::time::timeout(std::time::Duration::from_millis(200), conn.read_when_ready(&mut next, 1024));
        assert!(waited.await.is_err(), "still waiting");
        assert_eq!(next.capacity(), 0, "no buffer held while waiting");
        client.write_all(b"GET /2").await.unwrap();
        assert_eq!(conn.read_when_ready(&mut next, 1024).await.unwrap(), Some(6));
        assert_eq!(&next[..], b"GET /2");
        drop(client);
        let mut last = bytes::BytesMut::new();
        assert_eq!(conn.read_when_ready(&mut last, 1024).await.unwrap(), Some(0), "closed");
        // Bytes given back are read as usual.
        conn.rewind(b"x");
        assert_eq!(conn.read_when_ready(&mut last, 1024).await.unwrap(), None);
    }

    #[tokio::test]
    async fn rewound_bytes_are_read_first() {
        let (mut conn, mut client) = pair().await;
        client.write_all(b"def").await.unwrap();
        conn.rewind(b"c");
        conn.rewind(b"ab");
        let mut got = [0u8; 2];
        conn.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ab");
        let mut rest = [0u8; 4];
        conn.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"cdef");
        assert_eq!(conn.rewound.capacity(), 0);
    }
}
