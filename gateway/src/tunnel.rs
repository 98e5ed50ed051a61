//! The fast engine's upgraded connections (WebSocket and other `101` protocols): bytes relayed
//! both ways between the client's and the backend's connection, no longer through their HTTP
//! sessions, holding no buffer while both sides are quiet.
//!
//! Why: relayed through Pingora's HTTP/1 sessions, an open WebSocket held each session's 64 KiB
//! body buffer (152 KiB per WebSocket, nginx 17.6). Here a read goes into one scratch buffer per
//! worker thread and is written on at once; only bytes the other side cannot take yet are kept,
//! in a buffer of their size, until it can.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pingora::protocols::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The per-thread scratch buffer a read goes into (a TLS record's size).
const SCRATCH: usize = 16 * 1024;

thread_local! {
    static SCRATCH_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH].into_boxed_slice());
}

/// How a tunnel ended.
#[derive(Debug)]
pub enum End {
    /// Both sides closed their connections.
    Closed,
    /// Reading from or writing to the client failed.
    Client(io::Error),
    /// Reading from or writing to the backend failed.
    Backend(io::Error),
}

/// One direction of a tunnel.
#[derive(Default)]
struct Flow {
    /// Bytes read but not yet taken by the other side, and how many of them were written.
    held: Vec<u8>,
    written: usize,
    /// Bytes were written since the last flush.
    unflushed: bool,
    /// The reading side closed; the writing side is being shut down.
    closing: bool,
    /// Bytes moved.
    moved: u64,
}

/// Which side an error came from.
#[derive(Clone, Copy)]
enum Side {
    Reader,
    Writer,
}

impl Flow {
    /// A flow that starts with `held` (bytes a session had read past its head) to write.
    fn with(held: Vec<u8>) -> Flow {
        Flow { held, unflushed: true, ..Flow::default() }
    }

    /// Moves bytes from `from` to `to` until either would block (`Pending`) or `from` has closed
    /// and `to` is shut down (`Ready(Ok)`).
    fn poll_move(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut Stream,
        to: &mut Stream,
    ) -> Poll<Result<(), (Side, io::Error)>> {
        let writer = |e| (Side::Writer, e);
        loop {
            if self.written < self.held.len() {
                let n = ready!(poll_write_some(cx, to, &self.held[self.written..]))?;
                self.written += n;
                self.moved += n as u64;
                self.unflushed = true;
                if self.written == self.held.len() {
                    // Freed: a quiet tunnel holds nothing.
                    self.held = Vec::new();
                    self.written = 0;
                }
                continue;
            }
            if self.unflushed {
                ready!(Pin::new(&mut *to).poll_flush(cx)).map_err(writer)?;
                self.unflushed = false;
            }
            if self.closing {
                ready!(Pin::new(&mut *to).poll_shutdown(cx)).map_err(writer)?;
                return Poll::Ready(Ok(()));
            }
            let moved = SCRATCH_BUF.with_borrow_mut(|scratch| -> Poll<Result<(), (Side, io::Error)>> {
                let mut buf = ReadBuf::new(scratch);
                ready!(Pin::new(&mut *from).poll_read(cx, &mut buf)).map_err(|e| (Side::Reader, e))?;
                let read = buf.filled();
                if read.is_empty() {
                    self.closing = true;
                    return Poll::Ready(Ok(()));
                }
                // Written on at once; what the other side cannot take now is kept.
                let mut at = 0;
                while at < read.len() {
                    match poll_write_some(cx, to, &read[at..]) {
                        Poll::Ready(n) => at += n?,
                        Poll::Pending => break,
                    }
                }
                self.moved += at as u64;
                self.unflushed = true;
                if at < read.len() {
                    self.held = read[at..].to_vec();
                }
                Poll::Ready(Ok(()))
            });
            ready!(moved)?;
        }
    }
}

/// Writes what `to` takes of `bytes` now (at least one byte; a write of none is an error).
fn poll_write_some(cx: &mut Context<'_>, to: &mut Stream, bytes: &[u8]) -> Poll<Result<usize, (Side, io::Error)>> {
    let n = ready!(Pin::new(to).poll_write(cx, bytes)).map_err(|e| (Side::Writer, e))?;
    Poll::Ready(if n == 0 { Err((Side::Writer, io::ErrorKind::WriteZero.into())) } else { Ok(n) })
}

/// Relays an upgraded connection both ways until both sides have closed (a side's close shuts
/// down the write side of the other's connection; the other direction goes on, as over TCP) or
/// either fails. `to_backend` / `to_client`: bytes the sessions had read past their heads,
/// written first. Returns how it ended and the bytes sent to the client.
pub async fn relay(client: &mut Stream, backend: &mut Stream, to_backend: Vec<u8>, to_client: Vec<u8>) -> (End, u64) {
    let mut up = Flow::with(to_backend);
    let mut down = Flow::with(to_client);
    let (mut up_done, mut down_done) = (false, false);
    let end = std::future::poll_fn(|cx| {
        let error = |side, e, reader_is_client: bool| match (side, reader_is_client) {
            (Side::Reader, true) | (Side::Writer, false) => End::Client(e),
            _ => End::Backend(e),
        };
        if !up_done {
            match up.poll_move(cx, client, backend) {
                Poll::Ready(Ok(())) => up_done = true,
                Poll::Ready(Err((side, e))) => return Poll::Ready(error(side, e, true)),
                Poll::Pending => {}
            }
        }
        if !down_done {
            match down.poll_move(cx, backend, client) {
                Poll::Ready(Ok(())) => down_done = true,
                Poll::Ready(Err((side, e))) => return Poll::Ready(error(side, e, false)),
                Poll::Pending => {}
            }
        }
        if up_done && down_done {
            Poll::Ready(End::Closed)
        } else {
            Poll::Pending
        }
    })
    .await;
    (end, down.moved)
}

/// The bytes a session has already read and buffered, taken without waiting: `next` polls the
/// session's body read once ([`poll_now`]) and is called until it would wait or the body ends.
pub fn take_buffered(
    mut next: impl FnMut() -> Poll<pingora::Result<Option<bytes::Bytes>>>,
) -> pingora::Result<Vec<u8>> {
    let mut taken = Vec::new();
    while let Poll::Ready(read) = next() {
        match read? {
            Some(bytes) => taken.extend_from_slice(&bytes),
            None => break,
        }
    }
    Ok(taken)
}

/// Polls `future` once without waiting (a pending future is dropped, so it must be
/// cancel-safe, as session and socket reads are): how a session's already-buffered bytes are
/// taken, an idle connection tested, a kept connection given back. Unconstrained: a task out of
/// its cooperative budget would see every read pending.
pub fn poll_now<T>(future: impl Future<Output = T>) -> Poll<T> {
    let future = std::pin::pin!(tokio::task::unconstrained(future));
    future.poll(&mut Context::from_waker(std::task::Waker::noop()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// A loopback connection: ferry's end (as a Pingora stream) and the peer's.
    async fn pair() -> (Stream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (ours, _) = listener.accept().await.unwrap();
        (Box::new(pingora::protocols::l4::stream::Stream::from(ours)), peer)
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
    }

    /// Megabytes each way while neither reader reads at first (so writes block and bytes are
    /// held), in order and whole; the client's close ends the tunnel and reaches the backend.
    #[tokio::test]
    async fn bytes_arrive_whole_and_in_order_under_backpressure() {
        let (mut client_end, client) = pair().await;
        let (mut backend_end, backend) = pair().await;
        let relay = tokio::spawn(async move {
            relay(&mut client_end, &mut backend_end, b"early-up".to_vec(), b"early-down".to_vec()).await
        });
        let (up, down) = (pattern(3 << 20, 0x5a), pattern(2 << 20, 0xa5));
        let (mut client_rx, mut client_tx) = client.into_split();
        let (mut backend_rx, mut backend_tx) = backend.into_split();
        // Writers run apart from readers; each reader starts late, so the relay's writes block.
        let up_sent = up.clone();
        let client_writer = tokio::spawn(async move {
            client_tx.write_all(&up_sent).await.unwrap();
            client_tx
        });
        let down_sent = down.clone();
        let backend_writer = tokio::spawn(async move { backend_tx.write_all(&down_sent).await.unwrap() });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let to_client = async {
            let mut got = vec![0; down.len() + 10];
            if let Err(e) = client_rx.read_exact(&mut got).await {
                panic!("client read: {e}");
            }
            got
        };
        let to_backend = async {
            let mut got = vec![0; up.len() + 8];
            if let Err(e) = backend_rx.read_exact(&mut got).await {
                panic!("backend read: {e}");
            }
            got
        };
        let (to_client, to_backend) = tokio::join!(to_client, to_backend);
        backend_writer.await.unwrap();
        assert_eq!(&to_client[..10], b"early-down");
        assert!(to_client[10..] == down[..], "to the client, in order");
        assert_eq!(&to_backend[..8], b"early-up");
        assert!(to_backend[8..] == up[..], "to the backend, in order");
        // The backend closed its side when done writing: the client reads the end of the
        // stream, and the client's bytes still went on (above). The client closes: the backend
        // reads the end of the stream, the tunnel ends.
        let mut rest = Vec::new();
        client_rx.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        let mut client_tx = client_writer.await.unwrap();
        client_tx.shutdown().await.unwrap();
        backend_rx.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        let (end, sent) = relay.await.unwrap();
        assert!(matches!(end, End::Closed), "{end:?}");
        assert_eq!(sent, down.len() as u64 + 10);
    }
}
