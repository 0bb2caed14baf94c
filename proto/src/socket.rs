//! Serving gRPC services on a Unix socket, and connecting to one.
//!
//! CSI endpoints are Unix sockets (`unix:///csi/csi.sock` or a plain path).
//! A path that exists and is not a socket is refused and left alone: it may
//! be someone's file. A stale socket from an earlier run is replaced.

use hyper_util::rt::TokioIo;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::{Channel, Endpoint};

/// Why an endpoint could not be served or reached.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// The endpoint is not `unix://` or a path.
    #[error("endpoint {0:?} is not a Unix socket; use unix:///path/to/csi.sock or a plain path")]
    BadEndpoint(String),
    /// Something other than a socket sits at the path.
    #[error("{0} exists and is not a socket; refusing to replace it (remove it or choose another --endpoint)")]
    NotASocket(PathBuf),
    /// An I/O error at the path.
    #[error("{path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The gRPC transport failed.
    #[error("gRPC transport on {path}: {source}")]
    Transport {
        /// The socket path.
        path: PathBuf,
        /// The error.
        source: tonic::transport::Error,
    },
}

/// The socket path of an endpoint given as `unix:///path`, `unix:path` or a plain path.
pub fn socket_path(endpoint: &str) -> Result<PathBuf, SocketError> {
    let path = if let Some(rest) = endpoint.strip_prefix("unix://") {
        rest
    } else if let Some(rest) = endpoint.strip_prefix("unix:") {
        rest
    } else if endpoint.contains("://") {
        return Err(SocketError::BadEndpoint(endpoint.to_string()));
    } else {
        endpoint
    };
    if path.is_empty() {
        return Err(SocketError::BadEndpoint(endpoint.to_string()));
    }
    Ok(PathBuf::from(path))
}

/// Bind a listener at `path`: refuse non-sockets, replace a stale socket,
/// create the parent directory.
pub fn bind(path: &Path) -> Result<UnixListener, SocketError> {
    let io = |source| SocketError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path).map_err(io)?,
        Ok(_) => return Err(SocketError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    UnixListener::bind(path).map_err(io)
}

/// Serve `router` on `listener` until `shutdown` resolves, then remove the socket.
pub async fn serve(
    router: tonic::transport::server::Router<
        tower::layer::util::Stack<
            crate::grpc_metrics::GrpcMetricsLayer,
            tower::layer::util::Identity,
        >,
    >,
    listener: UnixListener,
    path: &Path,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), SocketError> {
    let result = router
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await;
    let _ = std::fs::remove_file(path);
    result.map_err(|source| SocketError::Transport {
        path: path.to_path_buf(),
        source,
    })
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        // Without signal handlers, fall back to ctrl-c only.
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// A gRPC channel to the Unix socket of `endpoint`.
pub async fn connect(endpoint: &str) -> Result<Channel, SocketError> {
    let path = socket_path(endpoint)?;
    let target = path.clone();
    // The URI is required by tonic but unused: the connector dials the socket.
    Endpoint::from_static("http://[::1]:50051")
        .connect_with_connector(tower::service_fn(move |_| {
            let target = target.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(target).await?)) }
        }))
        .await
        .map_err(|source| SocketError::Transport { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_to_paths() {
        assert_eq!(
            socket_path("unix:///csi/csi.sock").unwrap(),
            PathBuf::from("/csi/csi.sock")
        );
        assert_eq!(
            socket_path("unix:rel.sock").unwrap(),
            PathBuf::from("rel.sock")
        );
        assert_eq!(
            socket_path("/tmp/x.sock").unwrap(),
            PathBuf::from("/tmp/x.sock")
        );
        assert!(matches!(
            socket_path("tcp://1.2.3.4:5"),
            Err(SocketError::BadEndpoint(_))
        ));
        assert!(matches!(
            socket_path("unix://"),
            Err(SocketError::BadEndpoint(_))
        ));
    }

    #[tokio::test]
    async fn bind_refuses_a_regular_file_and_leaves_it_intact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("csi.sock");
        std::fs::write(&path, b"precious").unwrap();
        let err = bind(&path).unwrap_err();
        assert!(err.to_string().contains("is not a socket"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    }

    #[tokio::test]
    async fn bind_replaces_a_stale_socket_and_creates_parents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/csi.sock");
        drop(bind(&path).unwrap());
        assert!(path.exists());
        // The old listener is gone but its file stays: binding again must work.
        drop(bind(&path).unwrap());
    }
}
