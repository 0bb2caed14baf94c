//! gRPC call metrics for both binaries: a tower layer that counts every CSI
//! call by service, method and status code and times it, and a small
//! `/metrics` endpoint for a registry's text.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Labels of a call count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// e.g. csi.v1.Controller
    pub service: String,
    /// e.g. CreateVolume
    pub method: String,
    /// gRPC status code name, e.g. Ok, InvalidArgument
    pub code: String,
}

/// Labels of a call duration.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// e.g. csi.v1.Controller
    pub service: String,
    /// e.g. CreateVolume
    pub method: String,
}

type Durations = Family<MethodLabels, Histogram, fn() -> Histogram>;

/// The call metrics.
pub struct GrpcMetrics {
    calls: Family<CallLabels, Counter>,
    seconds: Durations,
}

fn histogram() -> Histogram {
    // 1 ms .. ~65 s: a CreateVolume waits for the node.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl GrpcMetrics {
    /// New metrics registered in `registry` as `dmraid_grpc_requests_total`
    /// and `dmraid_grpc_request_duration_seconds`.
    pub fn register(registry: &mut Registry) -> Arc<GrpcMetrics> {
        let m = GrpcMetrics {
            calls: Family::default(),
            seconds: Family::new_with_constructor(histogram as fn() -> Histogram),
        };
        registry.register(
            "dmraid_grpc_requests",
            "CSI calls served, by service, method and status code",
            m.calls.clone(),
        );
        registry.register(
            "dmraid_grpc_request_duration_seconds",
            "Time to answer a CSI call",
            m.seconds.clone(),
        );
        Arc::new(m)
    }

    /// Count one call of `path` (`/csi.v1.Controller/CreateVolume`).
    pub fn observe(&self, path: &str, code: tonic::Code, took: Duration) {
        let mut parts = path.trim_start_matches('/').splitn(2, '/');
        let service = parts.next().unwrap_or("").to_string();
        let method = parts.next().unwrap_or("").to_string();
        self.calls
            .get_or_create(&CallLabels {
                service: service.clone(),
                method: method.clone(),
                code: format!("{code:?}"),
            })
            .inc();
        self.seconds
            .get_or_create(&MethodLabels { service, method })
            .observe(took.as_secs_f64());
    }

    /// The tower layer to put on a tonic server.
    pub fn layer(self: &Arc<Self>) -> GrpcMetricsLayer {
        GrpcMetricsLayer { m: self.clone() }
    }
}

/// Counts and times every call of the service it wraps.
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    m: Arc<GrpcMetrics>,
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService {
            inner,
            m: self.m.clone(),
        }
    }
}

/// See [`GrpcMetricsLayer`].
#[derive(Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
    m: Arc<GrpcMetrics>,
}

impl<S, B, RB> tower::Service<http::Request<B>> for GrpcMetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path().to_string();
        let start = Instant::now();
        let m = self.m.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            // Unary errors come as trailers-only responses: the status is a
            // header. A success carries it in the trailers: no header means Ok.
            let code = match &res {
                Ok(r) => r
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|s| s.parse::<i32>().ok())
                    .map(tonic::Code::from)
                    .unwrap_or(tonic::Code::Ok),
                Err(_) => tonic::Code::Unknown,
            };
            m.observe(&path, code, start.elapsed());
            res
        })
    }
}

/// Serve `GET /metrics` on `addr` with the text `render` gives, until the
/// process ends (one small thread per connection).
pub fn serve(addr: &str, render: Arc<dyn Fn() -> String + Send + Sync>) -> std::io::Result<()> {
    serve_routes(
        addr,
        vec![("/metrics", Arc::new(move || Ok(render())) as Route)],
    )
}

/// An HTTP GET handler: `Ok(body)` answers 200, `Err(body)` 503.
pub type Route = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// Serve plain-text GET routes on `addr` until the process ends (one small
/// thread per connection); any other path is a 404 naming the served ones.
pub fn serve_routes(addr: &str, routes: Vec<(&'static str, Route)>) -> std::io::Result<()> {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind(addr)?;
    let routes = Arc::new(routes);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let routes = routes.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(&conn);
                let mut request = String::new();
                if reader.read_line(&mut request).is_err() {
                    return;
                }
                let path = request
                    .strip_prefix("GET ")
                    .and_then(|r| r.split_whitespace().next())
                    .map(|p| p.split('?').next().unwrap_or(p))
                    .unwrap_or("");
                let (status, body) = match routes.iter().find(|(p, _)| *p == path) {
                    Some((_, route)) => match route() {
                        Ok(body) => ("200 OK", body),
                        Err(body) => ("503 Service Unavailable", body),
                    },
                    None => (
                        "404 Not Found",
                        format!(
                            "only {} served here\n",
                            routes
                                .iter()
                                .map(|(p, _)| *p)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ),
                };
                let mut conn = &conn;
                let _ = write!(
                    conn,
                    "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    Ok(())
}

/// A registry's text exposition.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_the_text_over_http_on_loopback() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        serve(&addr, Arc::new(|| "dmraid_x 1\n".to_string())).unwrap();
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut body = String::new();
        c.read_to_string(&mut body).unwrap();
        assert!(
            body.starts_with("HTTP/1.0 200 OK") && body.ends_with("dmraid_x 1\n"),
            "{body}"
        );
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        c.write_all(b"GET /other HTTP/1.0\r\n\r\n").unwrap();
        let mut body = String::new();
        c.read_to_string(&mut body).unwrap();
        assert!(body.starts_with("HTTP/1.0 404"), "{body}");
    }

    #[test]
    fn a_failing_route_answers_503_with_its_reason() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        let up = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let probe = up.clone();
        let route: Route = Arc::new(move || {
            if probe.load(std::sync::atomic::Ordering::SeqCst) {
                Ok("ok\n".into())
            } else {
                Err("device-mapper unavailable\n".into())
            }
        });
        serve_routes(&addr, vec![("/healthz", route)]).unwrap();
        let get = || {
            use std::io::{Read, Write};
            let mut c = std::net::TcpStream::connect(&addr).unwrap();
            c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut body = String::new();
            c.read_to_string(&mut body).unwrap();
            body
        };
        let down = get();
        assert!(
            down.starts_with("HTTP/1.0 503") && down.ends_with("device-mapper unavailable\n"),
            "{down}"
        );
        up.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(get().starts_with("HTTP/1.0 200"));
    }

    #[test]
    fn counts_by_method_and_code() {
        let mut r = Registry::default();
        let m = GrpcMetrics::register(&mut r);
        m.observe(
            "/csi.v1.Controller/CreateVolume",
            tonic::Code::Ok,
            Duration::from_millis(3),
        );
        m.observe(
            "/csi.v1.Controller/CreateVolume",
            tonic::Code::InvalidArgument,
            Duration::from_millis(1),
        );
        let text = render(&r);
        assert!(
            text.contains(r#"dmraid_grpc_requests_total{service="csi.v1.Controller",method="CreateVolume",code="InvalidArgument"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"dmraid_grpc_request_duration_seconds_count{service="csi.v1.Controller",method="CreateVolume"} 2"#),
            "{text}"
        );
    }
}
