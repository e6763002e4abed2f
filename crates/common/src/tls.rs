//! Transport security with rustls: a server identity (certificate chain and key) with optional
//! client verification (mutual TLS), and a client side that verifies servers against a CA bundle
//! and presents the same identity. Every file is re-read when it changes (cert-manager rotates
//! certificates in place), so rotation needs no restart: new connections get the new files,
//! established ones keep theirs until they are recycled by the maximum connection age.

use std::{
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, RwLock, Weak},
    task::{Context, Poll},
    time::Duration,
};

use rustls::{
    ClientConfig, RootCertStore, ServerConfig, crypto::CryptoProvider, server::WebPkiClientVerifier,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::config::{PeerArgs, TlsArgs};

/// Longest a client may take to finish its TLS handshake before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no usable PEM item of the kind needed.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// rustls refused the material (a key that does not match its certificate, ...).
    #[error("TLS configuration refused")]
    Rustls(#[from] rustls::Error),
    /// The client CA bundle cannot verify clients.
    #[error("the client CA bundle cannot verify clients: {0}")]
    ClientVerifier(String),
    /// Flags that only make sense together were given alone.
    #[error("{0}")]
    Flags(&'static str),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::Pem {
            path: path.to_owned(),
            what: format!("not PEM certificates: {err}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            what: "no CERTIFICATE in it".into(),
        });
    }
    Ok(certs)
}

fn private_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    // The parser's error is about the file's shape; it never holds key material.
    PrivateKeyDer::from_pem_slice(pem).map_err(|err| TlsError::Pem {
        path: path.to_owned(),
        what: format!("no usable PRIVATE KEY in it: {err}"),
    })
}

fn roots(path: &Path, pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path, pem)? {
        roots.add(cert)?;
    }
    Ok(roots)
}

/// The files of one TLS configuration and how to build it from their contents.
#[derive(Debug, Clone)]
struct Files {
    paths: Vec<PathBuf>,
}

impl Files {
    fn read(&self) -> Result<Vec<Vec<u8>>, TlsError> {
        self.paths.iter().map(|p| read(p)).collect()
    }
}

/// Builds a configuration from its files' paths (for messages) and contents.
type Build<T> = fn(&[PathBuf], &[Vec<u8>]) -> Result<T, TlsError>;

/// A configuration rebuilt whenever one of its files changes. A broken update (a key that does
/// not match its certificate, a half-written file) is logged and the last good one kept.
struct Reloading<T> {
    files: Files,
    build: Build<T>,
    current: RwLock<(Vec<Vec<u8>>, Arc<T>)>,
}

impl<T: Send + Sync + 'static> Reloading<T> {
    fn load(paths: Vec<PathBuf>, build: Build<T>, every: Duration) -> Result<Arc<Self>, TlsError> {
        let files = Files { paths };
        let contents = files.read()?;
        let config = Arc::new(build(&files.paths, &contents)?);
        let this = Arc::new(Self {
            files,
            build,
            current: RwLock::new((contents, config)),
        });
        if !every.is_zero() {
            tokio::spawn(watch(Arc::downgrade(&this), every));
        }
        Ok(this)
    }

    fn current(&self) -> Arc<T> {
        match self.current.read() {
            Ok(guard) => guard.1.clone(),
            Err(poisoned) => poisoned.into_inner().1.clone(),
        }
    }

    /// Re-reads the files and swaps in the new configuration when they changed.
    fn reload(&self) {
        let contents = match self.files.read() {
            Ok(contents) => contents,
            Err(err) => {
                tracing::warn!(error = %crate::error::SourceChain(&err), "TLS files unreadable; keeping the last good ones");
                return;
            }
        };
        let unchanged = match self.current.read() {
            Ok(guard) => guard.0 == contents,
            Err(poisoned) => poisoned.into_inner().0 == contents,
        };
        if unchanged {
            return;
        }
        match (self.build)(&self.files.paths, &contents) {
            Ok(config) => {
                let mut guard = match self.current.write() {
                    Ok(guard) => guard,
                    Err(poisoned) => poisoned.into_inner(),
                };
                *guard = (contents, Arc::new(config));
                tracing::info!(files = ?self.files.paths, "TLS files changed; new connections use them");
            }
            Err(err) => {
                tracing::warn!(error = %crate::error::SourceChain(&err), "TLS files changed but are not usable; keeping the last good ones");
            }
        }
    }
}

async fn watch<T: Send + Sync + 'static>(this: Weak<Reloading<T>>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let Some(this) = this.upgrade() else { return };
        // Reading a few small files; off the async threads all the same.
        let _ = tokio::task::spawn_blocking(move || this.reload()).await;
    }
}

/// The server side: its identity and, for mutual TLS, the CAs its clients must chain to.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<Reloading<ServerConfig>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.config.files.paths)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// TLS for a server from `args`; `None` when no certificate is configured (plaintext).
    /// Must run inside the Tokio runtime (the file watcher is a task).
    pub fn from_args(args: &TlsArgs) -> Result<Option<Self>, TlsError> {
        let (cert, key) = match (&args.tls_cert_file, &args.tls_key_file) {
            (Some(cert), Some(key)) => (cert.clone(), key.clone()),
            (None, None) if args.tls_client_ca_file.is_some() => {
                return Err(TlsError::Flags(
                    "--tls-client-ca-file needs --tls-cert-file and --tls-key-file",
                ));
            }
            (None, None) => return Ok(None),
            _ => {
                return Err(TlsError::Flags(
                    "--tls-cert-file and --tls-key-file go together",
                ));
            }
        };
        let mut paths = vec![cert, key];
        paths.extend(args.tls_client_ca_file.clone());
        let config = Reloading::load(paths, build_server, args.tls_reload_interval)?;
        Ok(Some(Self { config }))
    }

    /// Accepts connections on `listener` and completes their handshakes concurrently (a slow
    /// client never holds up the others); the stream ends when the listener fails for good.
    pub fn incoming(
        &self,
        listener: TcpListener,
    ) -> impl futures::Stream<Item = Result<TlsConnection, std::io::Error>> + Send + 'static {
        let (sender, receiver) = mpsc::channel(64);
        let config = self.config.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    // The server stopped taking connections: close the listener now.
                    () = sender.closed() => return,
                };
                let (stream, remote) = match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %err, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                if let Err(err) = crate::serve::KEEPALIVE.apply(&stream) {
                    tracing::debug!(%remote, error = %err, "TCP keepalive could not be set");
                }
                let acceptor = tokio_rustls::TlsAcceptor::from(config.current());
                let sender = sender.clone();
                tokio::spawn(async move {
                    let info = TcpConnectInfo {
                        local_addr: stream.local_addr().ok(),
                        remote_addr: Some(remote),
                    };
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let _ = sender.send(Ok(TlsConnection { stream, info })).await;
                        }
                        Ok(Err(err)) => {
                            tracing::debug!(%remote, error = %err, "TLS handshake failed");
                        }
                        Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                    }
                });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(receiver)
    }
}

fn build_server(paths: &[PathBuf], contents: &[Vec<u8>]) -> Result<ServerConfig, TlsError> {
    let certs = certificates(&paths[0], &contents[0])?;
    let key = private_key(&paths[1], &contents[1])?;
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match (paths.get(2), contents.get(2)) {
        (Some(path), Some(pem)) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(path, pem)?),
                provider(),
            )
            .build()
            .map_err(|err| TlsError::ClientVerifier(err.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// One accepted TLS connection, carrying the TCP addresses so `Request::remote_addr` works.
#[derive(Debug)]
pub struct TlsConnection {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    info: TcpConnectInfo,
}

impl Connected for TlsConnection {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The client side: the CAs that servers must chain to and, for mutual TLS, this process's own
/// certificate and key.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<Reloading<ClientConfig>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("files", &self.config.files.paths)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// TLS for outgoing calls from `args`; `None` without `--tls-ca-file` (peers are reached
    /// over plaintext `http://` URLs). The identity of `--tls-cert-file`/`--tls-key-file` is
    /// presented to servers that ask for one (mutual TLS).
    pub fn from_args(identity: &TlsArgs, peers: &PeerArgs) -> Result<Option<Self>, TlsError> {
        let Some(ca) = &peers.tls_ca_file else {
            return Ok(None);
        };
        let mut paths = vec![ca.clone()];
        if let (Some(cert), Some(key)) = (&identity.tls_cert_file, &identity.tls_key_file) {
            paths.extend([cert.clone(), key.clone()]);
        }
        let config = Reloading::load(paths, build_client, identity.tls_reload_interval)?;
        Ok(Some(Self { config }))
    }

    /// Opens a TLS connection to `host` over `tcp`, verifying the server's certificate for it.
    pub async fn connect(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidInput, err))?;
        tokio_rustls::TlsConnector::from(self.config.current())
            .connect(name, tcp)
            .await
    }
}

fn build_client(paths: &[PathBuf], contents: &[Vec<u8>]) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(&paths[0], &contents[0])?);
    let mut config = match (paths.get(1..3), contents.get(1..3)) {
        (Some([cert_path, key_path]), Some([cert, key])) => builder
            .with_client_auth_cert(certificates(cert_path, cert)?, private_key(key_path, key)?)?,
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}
