//! An in-memory network for in-process clusters: members reach each other through byte pipes
//! instead of sockets, and a test can cut any link between two hosts at any moment.
//!
//! Why: the node's behaviours that matter most (join, hand-off, the preferred primary's return,
//! the membership rules, ReadIndex on a deposed leader) depend on timing and on who can reach
//! whom. Real processes on real sockets test them with wall-clock time and whatever the kernel
//! schedules, so such tests are slow and now and then flaky. With every member in one process on
//! a current-thread tokio runtime with paused time, and the network here, a test runs the real
//! node code in simulated time: timers fire in order, instantly, and a partition is a table
//! entry. (tokio pauses its auto-advance while `spawn_blocking` work runs, so the store's disk
//! I/O does not make timers fire early.)
//!
//! Addresses are ordinary socket addresses that are never bound; a host is an IP address. A
//! member registers its client and peer addresses ([`MemoryNetwork::listen`]); a member's
//! outbound channels (`tls::Dialer`) dial through [`MemoryNetwork::connector`] from its own
//! host. Each connection is a `tokio::io::duplex` pipe whose two ends check the link on every
//! read and write: once a link is cut, the connection fails (as a broken TCP connection would)
//! and new connections are refused until it is healed. Only plain text: TLS is not simulated.
//!
//! Written here rather than taken from a crate: simulation frameworks (turmoil and the like)
//! replace tokio's networking for the whole program, while kvset only needs tonic's two hooks, a
//! connector for channels and a stream of accepted connections for servers.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::sync::mpsc;
use tonic::transport::server::Connected;

/// Bytes buffered in each direction of a connection.
const PIPE_BYTES: usize = 256 * 1024;

/// The shared network; clone it freely (every clone is the same network).
#[derive(Clone, Default)]
pub struct MemoryNetwork {
    state: Arc<Mutex<NetState>>,
}

impl std::fmt::Debug for MemoryNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryNetwork")
    }
}

#[derive(Default)]
struct NetState {
    listeners: HashMap<SocketAddr, mpsc::UnboundedSender<MemoryStream>>,
    /// Links that carry nothing, as (from host, to host).
    cuts: HashSet<(IpAddr, IpAddr)>,
}

/// Why a connection could not be made or broke.
fn refused(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionRefused, what)
}

impl MemoryNetwork {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NetState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Listens on `addr`: the connections made to it, as a stream for tonic's
    /// `serve_with_incoming`. Listening again on the same address replaces the old listener
    /// (a member that restarts).
    pub fn listen(
        &self,
        addr: SocketAddr,
    ) -> impl tokio_stream::Stream<Item = io::Result<MemoryStream>> + Send + 'static {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().listeners.insert(addr, tx);
        tokio_stream::StreamExt::map(tokio_stream::wrappers::UnboundedReceiverStream::new(rx), Ok)
    }

    /// Stops listening on `addr`: new connections to it are refused.
    pub fn close(&self, addr: SocketAddr) {
        self.lock().listeners.remove(&addr);
    }

    /// True when `from` can send to `to`.
    pub fn link_open(&self, from: IpAddr, to: IpAddr) -> bool {
        !self.lock().cuts.contains(&(from, to))
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut(&self, a: IpAddr, b: IpAddr) {
        let mut state = self.lock();
        state.cuts.insert((a, b));
        state.cuts.insert((b, a));
    }

    /// Cuts `host` off from every host in `others`, both ways.
    pub fn isolate(&self, host: IpAddr, others: &[IpAddr]) {
        for other in others {
            if *other != host {
                self.cut(host, *other);
            }
        }
    }

    /// Heals every cut.
    pub fn heal(&self) {
        self.lock().cuts.clear();
    }

    /// Opens a connection from host `from` to `to`.
    pub fn connect(&self, from: IpAddr, to: SocketAddr) -> io::Result<MemoryStream> {
        let state = self.lock();
        if state.cuts.contains(&(from, to.ip())) || state.cuts.contains(&(to.ip(), from)) {
            return Err(refused(format!("{from} cannot reach {to} (link cut)")));
        }
        let listener = state
            .listeners
            .get(&to)
            .ok_or_else(|| refused(format!("nothing listens on {to}")))?;
        let (near, far) = tokio::io::duplex(PIPE_BYTES);
        let server_end = MemoryStream {
            pipe: far,
            net: self.clone(),
            local: to.ip(),
            remote: from,
        };
        listener
            .send(server_end)
            .map_err(|_| refused(format!("{to} stopped listening")))?;
        Ok(MemoryStream {
            pipe: near,
            net: self.clone(),
            local: from,
            remote: to.ip(),
        })
    }

    /// A connector for tonic channels that dials from host `from`.
    pub fn connector(&self, from: IpAddr) -> MemoryConnector {
        MemoryConnector {
            net: self.clone(),
            from,
        }
    }
}

/// One end of an in-memory connection. Reads fail once the link towards this end is cut,
/// writes once the link away from it is.
pub struct MemoryStream {
    pipe: DuplexStream,
    net: MemoryNetwork,
    local: IpAddr,
    remote: IpAddr,
}

impl MemoryStream {
    fn broken(&self, from: IpAddr, to: IpAddr) -> Option<io::Error> {
        (!self.net.link_open(from, to)).then(|| {
            io::Error::new(
                io::ErrorKind::ConnectionReset,
                format!("link {from} -> {to} cut"),
            )
        })
    }
}

impl AsyncRead for MemoryStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(e) = self.broken(self.remote, self.local) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.pipe).poll_read(cx, buf)
    }
}

impl AsyncWrite for MemoryStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(e) = self.broken(self.local, self.remote) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.pipe).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.pipe).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.pipe).poll_shutdown(cx)
    }
}

impl Connected for MemoryStream {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

/// Dials in-memory connections for a tonic `Channel` (see
/// `Endpoint::connect_with_connector_lazy`).
#[derive(Clone)]
pub struct MemoryConnector {
    net: MemoryNetwork,
    from: IpAddr,
}

impl tower_service::Service<http::Uri> for MemoryConnector {
    type Response = hyper_util::rt::TokioIo<MemoryStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let (net, from) = (self.net.clone(), self.from);
        Box::pin(async move {
            let authority = uri
                .authority()
                .ok_or_else(|| refused(format!("no address in {uri}")))?;
            let to: SocketAddr = authority
                .as_str()
                .parse()
                .map_err(|e| refused(format!("{authority} is not ip:port: {e}")))?;
            net.connect(from, to).map(hyper_util::rt::TokioIo::new)
        })
    }
}
