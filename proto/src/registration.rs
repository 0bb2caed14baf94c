//! Registering the CSI driver with the kubelet, as node-driver-registrar
//! does, for clusters where that sidecar image cannot be had: the
//! `pluginregistration.Registration` service on a socket in the kubelet's
//! `plugins_registry` directory. The kubelet watches that directory, calls
//! `GetInfo`, dials the CSI endpoint named there (NodeGetInfo), records the
//! driver in the node's CSINode and answers `NotifyRegistrationStatus`.
//!
//! The kubelet dials this socket with its path as the HTTP/2 `:authority`
//! (its CSI calls say "localhost"; this dial does not), which the h2 server
//! under tonic refuses as malformed (PROTOCOL_ERROR). So each connection
//! goes through [`relay`], which rewrites that one header to "localhost"
//! and passes every other byte through.

use crate::pluginregistration::registration_server::{Registration, RegistrationServer};
use crate::pluginregistration::{
    InfoRequest, PluginInfo, RegistrationStatus, RegistrationStatusResponse,
};
use crate::socket::{self, SocketError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// The CSI versions the kubelet may speak to us.
const SUPPORTED_VERSIONS: &[&str] = &["1.0.0"];

/// What the kubelet last said about our registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// The kubelet has not answered yet.
    Waiting,
    /// The kubelet took the driver.
    Yes,
    /// The kubelet refused it, with its reason.
    Refused(String),
}

/// The registration service.
#[derive(Clone)]
pub struct RegistrationService {
    info: PluginInfo,
    status: Arc<Mutex<Registered>>,
}

impl RegistrationService {
    /// A CSI driver `name` whose socket the kubelet reaches at `csi_endpoint` (a path on the node).
    pub fn new(name: &str, csi_endpoint: &Path) -> Self {
        RegistrationService {
            info: PluginInfo {
                r#type: "CSIPlugin".into(),
                name: name.into(),
                endpoint: csi_endpoint.display().to_string(),
                supported_versions: SUPPORTED_VERSIONS.iter().map(|s| s.to_string()).collect(),
            },
            status: Arc::new(Mutex::new(Registered::Waiting)),
        }
    }

    /// What the kubelet last said.
    pub fn status(&self) -> Registered {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[tonic::async_trait]
impl Registration for RegistrationService {
    async fn get_info(&self, _: Request<InfoRequest>) -> Result<Response<PluginInfo>, Status> {
        tracing::info!(driver = %self.info.name, endpoint = %self.info.endpoint, "kubelet asked for the plugin's registration");
        Ok(Response::new(self.info.clone()))
    }

    async fn notify_registration_status(
        &self,
        r: Request<RegistrationStatus>,
    ) -> Result<Response<RegistrationStatusResponse>, Status> {
        let r = r.into_inner();
        let now = if r.plugin_registered {
            tracing::info!(driver = %self.info.name, "registered with the kubelet");
            Registered::Yes
        } else {
            tracing::error!(driver = %self.info.name, error = %r.error, "the kubelet refused the registration");
            Registered::Refused(r.error)
        };
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = now;
        Ok(Response::new(RegistrationStatusResponse {}))
    }
}

/// The registration socket for driver `name` in the kubelet's registry directory.
pub fn socket_in(registry_dir: &Path, name: &str) -> PathBuf {
    registry_dir.join(format!("{name}-reg.sock"))
}

/// Serve `service` on `path` (replacing a stale socket, refusing a
/// non-socket) until the process ends; the socket is removed on return.
pub async fn serve(service: RegistrationService, path: PathBuf) -> Result<(), SocketError> {
    let listener = socket::bind(&path)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<DuplexStream>>(4);
    let accept = async move {
        loop {
            match listener.accept().await {
                Ok((conn, _)) => {
                    let (ours, theirs) = tokio::io::duplex(64 * 1024);
                    if tx.send(Ok(theirs)).await.is_err() {
                        return;
                    }
                    tokio::spawn(async move {
                        if let Err(e) = relay(conn, ours).await {
                            tracing::debug!(error = %e, "kubelet registration connection ended");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "registration socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            }
        }
    };
    let server = tonic::transport::Server::builder()
        .add_service(RegistrationServer::new(service))
        .serve_with_incoming_shutdown(ReceiverStream::new(rx), socket::shutdown_signal());
    let result = tokio::select! {
        r = server => r,
        () = accept => Ok(()),
    };
    let _ = std::fs::remove_file(&path);
    result.map_err(|source| SocketError::Transport { path, source })
}

/// HTTP/2 frame types and flags this relay looks at (RFC 9113 §6).
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The smallest SETTINGS_MAX_FRAME_SIZE a peer may have (and h2's default).
const MAX_FRAME: usize = 16_384;
/// The client connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn bad(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_string())
}

/// Copy an HTTP/2 client connection to `server`, rewriting the
/// `:authority` of every request to "localhost"; the server's bytes go
/// back unchanged.
pub async fn relay<C, S>(client: C, server: S) -> std::io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_rd, mut client_wr) = tokio::io::split(client);
    let (mut server_rd, mut server_wr) = tokio::io::split(server);
    let up = async move {
        let mut preface = [0u8; 24];
        client_rd.read_exact(&mut preface).await?;
        if preface != PREFACE {
            return Err(bad("not an HTTP/2 client"));
        }
        server_wr.write_all(&preface).await?;
        let mut decoder = loona_hpack::Decoder::new();
        let mut encoder = loona_hpack::Encoder::new();
        // Never refer to our own dynamic table: the server's copy of it is
        // then irrelevant, whatever it keeps.
        encoder.set_max_table_size(0);
        loop {
            let (kind, flags, stream, payload) = match read_frame(&mut client_rd).await? {
                Some(f) => f,
                None => return server_wr.shutdown().await,
            };
            if kind != HEADERS {
                write_frame(&mut server_wr, kind, flags, stream, &payload).await?;
                continue;
            }
            let mut block = header_fragment(flags, &payload)?;
            let mut end = flags & END_HEADERS != 0;
            while !end {
                let (k, f, _, p) = read_frame(&mut client_rd)
                    .await?
                    .ok_or_else(|| bad("connection closed inside a header block"))?;
                if k != CONTINUATION {
                    return Err(bad("a header block not followed by CONTINUATION"));
                }
                block.extend_from_slice(&p);
                end = f & END_HEADERS != 0;
            }
            let headers = decoder
                .decode(&block)
                .map_err(|e| bad(&format!("HPACK: {e:?}")))?;
            let headers = with_local_authority(headers);
            let encoded = encoder.encode(headers.iter().map(|(n, v)| (&n[..], &v[..])));
            let mut chunks = encoded.chunks(MAX_FRAME).peekable();
            let mut first = true;
            while let Some(chunk) = chunks.next() {
                let last = chunks.peek().is_none();
                let (kind, mut f) = if first {
                    (HEADERS, flags & END_STREAM)
                } else {
                    (CONTINUATION, 0)
                };
                if last {
                    f |= END_HEADERS;
                }
                write_frame(&mut server_wr, kind, f, stream, chunk).await?;
                first = false;
            }
        }
    };
    let down = async move {
        tokio::io::copy(&mut server_rd, &mut client_wr).await?;
        client_wr.shutdown().await
    };
    let (a, b) = tokio::join!(up, down);
    a.and(b)
}

/// The headers with `:authority` set to "localhost".
fn with_local_authority(headers: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<(Vec<u8>, Vec<u8>)> {
    headers
        .into_iter()
        .map(|(n, v)| {
            if n == b":authority" {
                (n, b"localhost".to_vec())
            } else {
                (n, v)
            }
        })
        .collect()
}

/// The header block fragment of a HEADERS frame's payload (padding and
/// priority removed).
fn header_fragment(flags: u8, payload: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut start = 0;
    let mut end = payload.len();
    if flags & PADDED != 0 {
        let pad = *payload.first().ok_or_else(|| bad("empty padded frame"))? as usize;
        start = 1;
        end = end
            .checked_sub(pad)
            .ok_or_else(|| bad("padding longer than the frame"))?;
    }
    if flags & PRIORITY != 0 {
        start += 5;
    }
    if start > end {
        return Err(bad("HEADERS frame too short"));
    }
    Ok(payload[start..end].to_vec())
}

/// One frame: (type, flags, stream id, payload); None at a clean end.
async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
) -> std::io::Result<Option<(u8, u8, u32, Vec<u8>)>> {
    let mut head = [0u8; 9];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok(Some((head[3], head[4], stream, payload)))
}

async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    kind: u8,
    flags: u8,
    stream: u32,
    payload: &[u8],
) -> std::io::Result<()> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut head = [len[1], len[2], len[3], kind, flags, 0, 0, 0, 0];
    head[5..9].copy_from_slice(&stream.to_be_bytes());
    w.write_all(&head).await?;
    w.write_all(payload).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pluginregistration::registration_client::RegistrationClient;

    #[tokio::test]
    async fn the_relay_rewrites_a_path_authority_and_passes_the_rest() {
        // What the kubelet sends: its dial target, the socket path, as :authority.
        let (client, mut client_end) = tokio::io::duplex(1 << 16);
        let (server, mut server_end) = tokio::io::duplex(1 << 16);
        tokio::spawn(relay(client, server));
        let mut enc = loona_hpack::Encoder::new();
        let block = enc.encode([
            (&b":method"[..], &b"POST"[..]),
            (b":scheme", b"http"),
            (b":path", b"/pluginregistration.Registration/GetInfo"),
            (
                b":authority",
                b"/var/lib/kubelet/plugins_registry/dmraid.csi.io-reg.sock",
            ),
            (b"content-type", b"application/grpc"),
        ]);
        // Split over HEADERS + CONTINUATION, with padding, as a peer may.
        let (a, b) = block.split_at(block.len() / 2);
        let mut padded = vec![3u8];
        padded.extend_from_slice(a);
        padded.extend_from_slice(&[0, 0, 0]);
        client_end.write_all(PREFACE).await.unwrap();
        write_frame(&mut client_end, 0x4, 0, 0, &[]).await.unwrap(); // SETTINGS
        write_frame(&mut client_end, HEADERS, PADDED, 1, &padded)
            .await
            .unwrap();
        write_frame(&mut client_end, CONTINUATION, END_HEADERS, 1, b)
            .await
            .unwrap();
        write_frame(&mut client_end, 0x0, END_STREAM, 1, b"\0\0\0\0\0")
            .await
            .unwrap(); // DATA
        let mut preface = [0u8; 24];
        server_end.read_exact(&mut preface).await.unwrap();
        assert_eq!(&preface[..], PREFACE);
        let settings = read_frame(&mut server_end).await.unwrap().unwrap();
        assert_eq!((settings.0, settings.3.len()), (0x4, 0));
        let (kind, flags, stream, payload) = read_frame(&mut server_end).await.unwrap().unwrap();
        assert_eq!(
            (kind, flags & END_HEADERS, stream),
            (HEADERS, END_HEADERS, 1)
        );
        let headers = loona_hpack::Decoder::new().decode(&payload).unwrap();
        let get = |name: &[u8]| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(get(b":authority").as_deref(), Some("localhost"));
        assert_eq!(
            get(b":path").as_deref(),
            Some("/pluginregistration.Registration/GetInfo")
        );
        assert_eq!(get(b"content-type").as_deref(), Some("application/grpc"));
        let data = read_frame(&mut server_end).await.unwrap().unwrap();
        assert_eq!((data.0, data.1, data.3.len()), (0x0, END_STREAM, 5));
        // The server's bytes come back untouched.
        server_end.write_all(b"server bytes").await.unwrap();
        let mut back = [0u8; 12];
        client_end.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"server bytes");
    }

    #[tokio::test]
    async fn answers_the_kubelet_like_node_driver_registrar() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_in(dir.path(), "dmraid.csi.io");
        let svc = RegistrationService::new(
            "dmraid.csi.io",
            Path::new("/var/lib/kubelet/plugins/dmraid.csi.io/csi.sock"),
        );
        tokio::spawn(serve(svc.clone(), path.clone()));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let channel = loop {
            match socket::connect(&path.display().to_string()).await {
                Ok(c) => break c,
                Err(e) => {
                    assert!(std::time::Instant::now() < deadline, "{e}");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
        };
        let mut c = RegistrationClient::new(channel);
        let info = c.get_info(InfoRequest {}).await.unwrap().into_inner();
        assert_eq!(info.r#type, "CSIPlugin");
        assert_eq!(info.name, "dmraid.csi.io");
        assert_eq!(
            info.endpoint,
            "/var/lib/kubelet/plugins/dmraid.csi.io/csi.sock"
        );
        assert_eq!(info.supported_versions, vec!["1.0.0".to_string()]);
        assert_eq!(svc.status(), Registered::Waiting);
        c.notify_registration_status(RegistrationStatus {
            plugin_registered: false,
            error: "no such driver".into(),
        })
        .await
        .unwrap();
        assert_eq!(svc.status(), Registered::Refused("no such driver".into()));
        c.notify_registration_status(RegistrationStatus {
            plugin_registered: true,
            error: String::new(),
        })
        .await
        .unwrap();
        assert_eq!(svc.status(), Registered::Yes);
    }
}
