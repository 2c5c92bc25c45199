//! A TCP proxy that injects network faults between a client and a server, for the
//! tests of Switchyard under faults: latency, a hold (bytes are read but not passed on
//! until released, as a stalled network or a paused peer would), and cutting every
//! connection.
//!
//! It relays bytes, so TLS passes through untouched: point a client at
//! [`FaultProxy::url`] instead of the server, with the server's certificate (the API
//! server's serving certificate covers 127.0.0.1, where the proxy listens).
//!
//! A held chunk is still delivered once released, even if its sender has given up and
//! closed the connection meanwhile: a client-side timeout does not take back a request
//! that is already on the wire, and the tests of fencing depend on exactly that.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

use crate::TestEnvError;

/// What the proxy does to the bytes it relays.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Each chunk waits this long before it is passed on, in both directions.
    pub latency: Duration,
    /// Chunks are read and kept, and passed on only once the hold is lifted.
    pub hold: bool,
    /// New connections are accepted and closed at once (as a server that is down).
    pub refuse: bool,
}

/// A running proxy. Dropping it stops it and closes its connections.
pub struct FaultProxy {
    addr: SocketAddr,
    faults: watch::Sender<Faults>,
    /// Bumped to close every open connection.
    cut: watch::Sender<u64>,
    connections: Arc<AtomicU64>,
    accept: JoinHandle<()>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("faults", &*self.faults.borrow())
            .finish_non_exhaustive()
    }
}

impl FaultProxy {
    /// Starts a proxy on a free port of 127.0.0.1 that relays to `upstream`. Must be
    /// called inside a Tokio runtime, which runs it.
    pub async fn start(upstream: SocketAddr) -> Result<Self, TestEnvError> {
        let listener =
            TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|source| TestEnvError::Io {
                    path: "127.0.0.1:0".into(),
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| TestEnvError::Io {
            path: "127.0.0.1:0".into(),
            source,
        })?;
        let (faults, faults_rx) = watch::channel(Faults::default());
        let (cut, cut_rx) = watch::channel(0u64);
        let connections = Arc::new(AtomicU64::new(0));
        let accept = tokio::spawn(accept_loop(
            listener,
            upstream,
            faults_rx,
            cut_rx,
            connections.clone(),
        ));
        Ok(Self {
            addr,
            faults,
            cut,
            connections,
            accept,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT`, for a kubeconfig.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The faults now in effect.
    pub fn faults(&self) -> Faults {
        *self.faults.borrow()
    }

    /// Replaces the faults in effect; held chunks flow again when `hold` goes false.
    pub fn set(&self, faults: Faults) {
        self.faults.send_replace(faults);
    }

    /// Sets only the latency.
    pub fn set_latency(&self, latency: Duration) {
        self.faults.send_modify(|f| f.latency = latency);
    }

    /// Holds (true) or releases (false) the bytes in flight.
    pub fn hold(&self, hold: bool) {
        self.faults.send_modify(|f| f.hold = hold);
    }

    /// Refuses (true) or accepts (false) new connections.
    pub fn refuse(&self, refuse: bool) {
        self.faults.send_modify(|f| f.refuse = refuse);
    }

    /// Closes every open connection at once, dropping what is held.
    pub fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    /// How many connections were accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    faults: watch::Receiver<Faults>,
    cut: watch::Receiver<u64>,
    connections: Arc<AtomicU64>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if faults.borrow().refuse {
            drop(client);
            continue;
        }
        connections.fetch_add(1, Ordering::Relaxed);
        let (faults, mut cut) = (faults.clone(), cut.clone());
        cut.mark_unchanged();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            let up = relay(client_read, server_write, faults.clone());
            let down = relay(server_read, client_write, faults);
            tokio::select! {
                _ = async { tokio::join!(up, down) } => {}
                _ = cut.changed() => {}
            }
        });
    }
}

/// Copies `from` to `to` chunk by chunk, each chunk delayed by the latency and kept
/// while the hold lasts. At end of input it delivers what it has, then shuts `to`
/// down for writing, so a request sent just before its sender hung up still arrives.
async fn relay(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut faults: watch::Receiver<Faults>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let latency = faults.borrow().latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if faults.wait_for(|f| !f.hold).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}

/// `kubeconfig` (YAML) with every cluster's server replaced by `server`, e.g. a
/// [`FaultProxy::url`], so that whoever uses it talks through the proxy.
pub fn kubeconfig_through(kubeconfig: &str, server: &str) -> Result<String, TestEnvError> {
    let mut config: serde_yaml::Value =
        serde_yaml::from_str(kubeconfig).map_err(|err| TestEnvError::Shared(err.to_string()))?;
    if let Some(clusters) = config
        .get_mut("clusters")
        .and_then(serde_yaml::Value::as_sequence_mut)
    {
        for cluster in clusters {
            if let Some(c) = cluster.get_mut("cluster") {
                c["server"] = server.into();
            }
        }
    }
    serde_yaml::to_string(&config).map_err(|err| TestEnvError::Shared(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kubeconfig_is_pointed_at_the_proxy() {
        let config =
            "clusters:\n- name: a\n  cluster: {server: 'https://127.0.0.1:1'}\nusers: []\n";
        let through = kubeconfig_through(config, "https://127.0.0.1:2").unwrap();
        assert!(through.contains("https://127.0.0.1:2"), "{through}");
        assert!(!through.contains("127.0.0.1:1'"), "{through}");
    }

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = socket.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn roundtrip(proxy: &FaultProxy, message: &[u8]) -> Vec<u8> {
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        stream.write_all(message).await.unwrap();
        let mut got = vec![0u8; message.len()];
        stream.read_exact(&mut got).await.unwrap();
        got
    }

    #[tokio::test]
    async fn bytes_pass_through_and_latency_delays_them() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        assert_eq!(roundtrip(&proxy, b"hello").await, b"hello");
        proxy.set_latency(Duration::from_millis(150));
        let started = tokio::time::Instant::now();
        assert_eq!(roundtrip(&proxy, b"slow").await, b"slow");
        // Both directions wait once each.
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(proxy.connections(), 2);
    }

    #[tokio::test]
    async fn a_held_request_is_delivered_on_release_even_after_its_sender_left() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = FaultProxy::start(listener.local_addr().unwrap())
            .await
            .unwrap();
        proxy.hold(true);
        let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
        client.write_all(b"late write").await.unwrap();
        drop(client);
        let (mut server, _) = listener.accept().await.unwrap();
        let (mut got, mut peek) = (Vec::new(), [0u8; 16]);
        let early = tokio::time::timeout(Duration::from_millis(300), server.read(&mut peek));
        assert!(early.await.is_err(), "a held byte got through");
        proxy.hold(false);
        tokio::time::timeout(Duration::from_secs(5), server.read_to_end(&mut got))
            .await
            .expect("released bytes arrive")
            .unwrap();
        assert_eq!(got, b"late write");
    }

    #[tokio::test]
    async fn refused_and_cut_connections_carry_nothing() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        open.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        open.read_exact(&mut one).await.unwrap();
        proxy.cut();
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), open.read_to_end(&mut rest));
        assert!(closed.await.is_ok(), "a cut connection stays open");
        proxy.refuse(true);
        let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
        let _ = refused.write_all(b"y").await;
        let read = tokio::time::timeout(Duration::from_secs(5), refused.read(&mut one)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    }
}
