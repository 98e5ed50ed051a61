//! An in-memory connection for Pingora's sessions: each scripted read returns exactly one piece
//! (so a body arrives split where the input says), then end of stream; writes are kept.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, TimingDigest, UniqueID,
    UniqueIDType,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Where an input's split offsets (u16 little-endian each, taken modulo `len + 1`) cut `len`
/// bytes; the end is always a cut.
pub fn cuts(offsets: &[u8], len: usize) -> std::collections::BTreeSet<usize> {
    let mut cuts: std::collections::BTreeSet<usize> =
        offsets.chunks_exact(2).map(|o| u16::from_le_bytes([o[0], o[1]]) as usize % (len + 1)).collect();
    cuts.insert(len);
    cuts
}

/// `data` in the pieces `cuts` make (no empty ones).
pub fn pieces(data: &[u8], cuts: &std::collections::BTreeSet<usize>) -> Vec<Vec<u8>> {
    let mut pieces = Vec::new();
    let mut start = 0;
    for &cut in cuts {
        if cut > start {
            pieces.push(data[start..cut].to_vec());
            start = cut;
        }
    }
    pieces
}

#[derive(Debug, Default)]
pub struct Pipe {
    reads: VecDeque<Vec<u8>>,
    /// Everything written, shared with whoever made the pipe.
    pub written: Arc<Mutex<Vec<u8>>>,
}

impl Pipe {
    pub fn new(reads: impl IntoIterator<Item = Vec<u8>>) -> Self {
        Pipe { reads: reads.into_iter().filter(|r| !r.is_empty()).collect(), written: Arc::default() }
    }

    /// The bytes no read has returned yet.
    pub fn unread(&self) -> Vec<u8> {
        self.reads.iter().flatten().copied().collect()
    }
}

impl AsyncRead for Pipe {
    fn poll_read(mut self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if let Some(mut piece) = self.reads.pop_front() {
            let n = piece.len().min(buf.remaining());
            buf.put_slice(&piece[..n]);
            if n < piece.len() {
                // A reader with less room gets the rest of the piece next time.
                self.reads.push_front(piece.split_off(n));
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Pipe {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.written.lock().unwrap().extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[async_trait]
impl Shutdown for Pipe {
    async fn shutdown(&mut self) {}
}

impl UniqueID for Pipe {
    fn id(&self) -> UniqueIDType {
        0
    }
}

impl Ssl for Pipe {}

impl GetTimingDigest for Pipe {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        Vec::new()
    }
}

impl GetProxyDigest for Pipe {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        None
    }
}

impl GetSocketDigest for Pipe {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        None
    }
}

impl Peek for Pipe {}
