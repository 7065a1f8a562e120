//! The connection limits of a Flight server, as [`crate::http::serve_limited`] gives the HTTP
//! ones: at most `limits.max_connections` connections at once (more are closed on accept), the
//! HTTP/2 preface within `limits.http_header_timeout_ms` of the accept, and no connection silent
//! for `limits.flight_idle_timeout_ms` (the server pings an idle peer at half that, so a live
//! peer always answers in time and only a dead or stalled one is closed). The request deadline
//! and the per-connection concurrency are tonic's (`crate::node`).

use crate::config::LimitsConfig;
use crate::http::count;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Bytes of the HTTP/2 client preface (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`).
const PREFACE_LEN: u64 = 24;

/// The keep-alive a Flight server runs under `limits`: (ping interval, ping timeout), both
/// within the idle timeout so that a live peer's answer to the ping comes in time.
pub fn keepalive(limits: &LimitsConfig) -> (Duration, Duration) {
    let idle = Duration::from_millis(limits.flight_idle_timeout_ms);
    (idle / 2, idle / 4)
}

/// The accepted connections of `listener` under `limits`, each guarded as the module says.
pub fn incoming(
    listener: TcpListener,
    limits: &LimitsConfig,
) -> impl futures::Stream<Item = io::Result<Guarded>> + Send + 'static {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let handshake = Duration::from_millis(limits.http_header_timeout_ms);
    let idle = Duration::from_millis(limits.flight_idle_timeout_ms);
    futures::stream::unfold(listener, move |listener| {
        let slots = slots.clone();
        async move {
            loop {
                let tcp = match listener.accept().await {
                    Ok((tcp, _)) => tcp,
                    Err(e) => {
                        // out of file descriptors and the like: back off instead of spinning
                        tracing::warn!(error = %e, "flight accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    count("flight_connections_refused", 1);
                    drop(tcp);
                    continue;
                };
                // serve_with_incoming ignores the builder's tcp_nodelay: without it Nagle and
                // delayed ACKs add ~40 ms to some responses
                let _ = tcp.set_nodelay(true);
                let now = Instant::now();
                let conn = Guarded {
                    tcp,
                    _permit: permit,
                    opened: now,
                    last_read: now,
                    read: 0,
                    handshake,
                    idle,
                    timer: Box::pin(tokio::time::sleep_until(now + handshake)),
                };
                return Some((Ok(conn), listener));
            }
        }
    })
}

/// A TCP connection that holds a connection slot and fails its reads once the client is late
/// with the preface or silent for too long, so the server closes it.
pub struct Guarded {
    tcp: TcpStream,
    _permit: OwnedSemaphorePermit,
    opened: Instant,
    last_read: Instant,
    read: u64,
    handshake: Duration,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
}

impl Guarded {
    /// When the connection is closed unless the client sends more: the preface's deadline,
    /// then the idle timeout after the last byte read.
    fn deadline(&self) -> Instant {
        if self.read < PREFACE_LEN {
            self.opened + self.handshake
        } else {
            self.last_read + self.idle
        }
    }

    fn late(&self) -> io::Error {
        let (what, key) = if self.read < PREFACE_LEN {
            ("no HTTP/2 preface", "limits.http_header_timeout_ms")
        } else {
            ("silent", "limits.flight_idle_timeout_ms")
        };
        count("flight_connections_timed_out", 1);
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("flight connection closed: {what} within the deadline ({key})"),
        )
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.tcp).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = (buf.filled().len() - before) as u64;
                if n > 0 {
                    this.read += n;
                    this.last_read = Instant::now();
                }
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
        // nothing to read: wait for the socket or the deadline, whichever comes first (the
        // timer is moved only when the deadline did, so a read costs a clock read, no timer)
        loop {
            let deadline = this.deadline();
            if Instant::now() >= deadline {
                return Poll::Ready(Err(this.late()));
            }
            if this.timer.deadline() != deadline {
                this.timer.as_mut().reset(deadline);
            }
            match this.timer.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) => continue,
            }
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Guarded {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.tcp.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits(max_connections: usize) -> LimitsConfig {
        LimitsConfig {
            max_connections,
            http_header_timeout_ms: 200,
            flight_idle_timeout_ms: 400,
            ..LimitsConfig::default()
        }
    }

    /// Reads the server side of a guarded connection until it fails or ends: the error.
    async fn serve(mut conn: Guarded) -> Option<io::Error> {
        let mut buf = [0u8; 64];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => return Some(e),
            }
        }
    }

    #[tokio::test]
    async fn late_preface_and_silence_close_a_connection_talk_keeps_it() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut accepted = Box::pin(incoming(listener, &limits(10)));

        // silent from the start: closed for want of a preface
        let _silent = TcpStream::connect(addr).await.unwrap();
        let e = serve(accepted.next().await.unwrap().unwrap())
            .await
            .unwrap();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("http_header_timeout_ms"), "{e}");

        // the preface, then silence: closed once idle
        let mut quiet = TcpStream::connect(addr).await.unwrap();
        quiet
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let e = serve(accepted.next().await.unwrap().unwrap())
            .await
            .unwrap();
        assert!(e.to_string().contains("flight_idle_timeout_ms"), "{e}");

        // a client that keeps talking, for longer than both deadlines, is served to its end
        let mut talker = TcpStream::connect(addr).await.unwrap();
        let server = tokio::spawn(serve(accepted.next().await.unwrap().unwrap()));
        talker.write_all(&[b'x'; 24]).await.unwrap();
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            talker.write_all(b"y").await.unwrap();
        }
        drop(talker);
        assert!(server.await.unwrap().is_none(), "closed by its client only");
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_closed_on_accept() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut accepted = Box::pin(incoming(listener, &limits(2)));
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let held = [
            accepted.next().await.unwrap().unwrap(),
            accepted.next().await.unwrap().unwrap(),
        ];
        let mut over = TcpStream::connect(addr).await.unwrap();
        // the accept loop runs while the stream is polled for the next connection
        let next = tokio::spawn(async move { accepted.next().await.map(|c| c.is_ok()) });
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), over.read(&mut buf))
            .await
            .expect("the connection over the cap is closed at once");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        // a slot freed is a connection accepted
        drop(held);
        let _c = TcpStream::connect(addr).await.unwrap();
        assert_eq!(next.await.unwrap(), Some(true));
    }
}
