//! The Prometheus endpoint: `GET /metrics` over HTTP/1.1 on `metrics.listen`,
//! answered with the text exposition of the switch's counters
//! ([`crate::metrics::export`]); every other request gets 404.
//!
//! hyper serves the connections. A scrape is one short request, so the server
//! is bounded so that no client can hold it: a connection serves one request
//! (no keep-alive), must send its headers within 5 s and is closed after 10 s
//! whatever it is doing, and at most 16 are served at once (more are closed on
//! accept). See [`Limits`].

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::gateway::Gateways;
use crate::metrics::Metrics;
use crate::metrics::export::{self, ConnectionSeries, GatewaySeries, Gauges};
use crate::ratelimit::RateLimit;
use crate::registrar::location::LocationView;
use crate::transaction::TxBudget;
use crate::transport::connections::Connections;
use arc_swap::ArcSwap;

/// How much a client may take of the endpoint.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Time a client has to send its request headers.
    header_read: Duration,
    /// Time after which a connection is closed, finished or not (a client
    /// that reads its answer too slowly).
    lifetime: Duration,
    /// Connections served at once; Prometheus needs one per scrape.
    connections: usize,
}

impl Limits {
    const DEFAULT: Limits = Limits {
        header_read: Duration::from_secs(5),
        lifetime: Duration::from_secs(10),
        connections: 16,
    };
}

/// A request's head may not exceed this (hyper's minimum); `GET /metrics`
/// needs a few hundred bytes.
const MAX_HEAD: usize = 8 * 1024;

/// The bound `metrics.listen` socket, before it serves.
pub struct MetricsEndpoint {
    listener: TcpListener,
    limits: Limits,
}

/// What a scrape reads.
#[derive(Clone)]
struct Sources {
    metrics: Arc<Metrics>,
    /// The registrar's contacts, when users may register.
    location: Option<Arc<LocationView>>,
    budget: Arc<TxBudget>,
    gateways: Arc<ArcSwap<Gateways>>,
    connections: Option<Arc<Connections>>,
}

impl MetricsEndpoint {
    /// Binds `addr` at start, so that a taken port fails the daemon's start.
    pub async fn bind(addr: SocketAddr) -> io::Result<MetricsEndpoint> {
        let listener = TcpListener::bind(addr).await?;
        Ok(MetricsEndpoint {
            listener,
            limits: Limits::DEFAULT,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves scrapes until the task is aborted, which closes the connections
    /// in progress too.
    pub async fn serve(
        self,
        metrics: Arc<Metrics>,
        location: Option<Arc<LocationView>>,
        budget: Arc<TxBudget>,
        gateways: Arc<ArcSwap<Gateways>>,
        connections: Option<Arc<Connections>>,
    ) {
        let sources = Sources {
            metrics,
            location,
            budget,
            gateways,
            connections,
        };
        let mut connections = JoinSet::new();
        let mut errors_log = RateLimit::new(5, Duration::from_secs(10));
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) if connections.len() < self.limits.connections => {
                        let limits = self.limits;
                        connections.spawn(serve_connection(stream, peer, sources.clone(), limits));
                    }
                    Ok((_, peer)) => {
                        if let Some(suppressed) = errors_log.allow(Instant::now()) {
                            tracing::warn!(%peer, suppressed, "metrics: too many connections, one refused");
                        }
                    }
                    Err(e) => {
                        if let Some(suppressed) = errors_log.allow(Instant::now()) {
                            tracing::warn!(error = %e, suppressed, "metrics: accept failed");
                        }
                        // Out of file descriptors, say: give the others time to close.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    }
}

/// One connection: one request, within the limits.
async fn serve_connection(stream: TcpStream, peer: SocketAddr, sources: Sources, limits: Limits) {
    let service = service_fn(move |request| {
        let sources = sources.clone();
        async move { Ok::<_, Infallible>(respond(&request, &sources)) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .keep_alive(false)
        .max_buf_size(MAX_HEAD)
        .serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(limits.lifetime, connection).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "metrics: connection failed"),
        Err(_) => tracing::debug!(%peer, "metrics: connection closed after its time"),
    }
}

/// `GET /metrics` → the exposition; anything else → 404.
fn respond(request: &Request<Incoming>, sources: &Sources) -> Response<Full<Bytes>> {
    if request.method() != Method::GET || request.uri().path() != "/metrics" {
        return plain(StatusCode::NOT_FOUND, "not found: try GET /metrics\n");
    }
    let gauges = Gauges {
        registered_contacts: sources.location.as_ref().map(|l| l.contacts() as u64),
        transactions: sources.budget.live() as u64,
        gateways: sources
            .gateways
            .load()
            .snapshot(std::time::Instant::now())
            .into_iter()
            .map(|g| GatewaySeries {
                up: g.state == "up",
                trunk: g.trunk,
                gateway: g.address,
                attempts: g.attempts,
                failures: g.failures,
                calls_in_flight: u64::from(g.calls_in_flight),
            })
            .collect(),
        connections: sources
            .connections
            .iter()
            .flat_map(|c| c.snapshot())
            .map(|c| ConnectionSeries {
                transport: if c.transport == crate::sip::Protocol::Tls {
                    "tls"
                } else {
                    "tcp"
                },
                open: c.open,
                accepted: c.accepted,
                connected: c.connected,
                refused: c.refused,
                closed: c.closed,
                tls_failures: c.tls_failures,
            })
            .collect(),
    };
    match export::encode(&sources.metrics, gauges) {
        Ok(text) => {
            let mut response = Response::new(Full::new(Bytes::from(text)));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(export::CONTENT_TYPE));
            response
        }
        Err(e) => {
            tracing::error!(error = %e, "metrics: cannot encode");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n")
        }
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn endpoint() -> (SocketAddr, Arc<Metrics>, tokio::task::JoinHandle<()>) {
        let metrics = Arc::new(Metrics::default());
        let mut endpoint = MetricsEndpoint::bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        endpoint.limits = Limits {
            header_read: Duration::from_millis(300),
            lifetime: Duration::from_millis(600),
            connections: 2,
        };
        let addr = endpoint.local_addr().expect("addr");
        let gateways = Arc::new(ArcSwap::from_pointee(Gateways::empty(
            std::time::Instant::now(),
        )));
        let task =
            tokio::spawn(endpoint.serve(metrics.clone(), None, Arc::default(), gateways, None));
        (addr, metrics, task)
    }

    async fn get(addr: SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut answer))
            .await
            .expect("answered in time")
            .expect("read");
        answer
    }

    #[tokio::test]
    async fn get_metrics_answers_the_exposition_and_the_rest_404() {
        let (addr, metrics, task) = endpoint().await;
        Metrics::count(&metrics.calls_started);
        let answer = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(
            answer.contains("content-type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            "{answer}"
        );
        assert!(
            answer.contains("\nvigil_calls_started_total 1\n"),
            "{answer}"
        );
        assert!(answer.contains("connection: close\r\n"), "{answer}");
        let answer = get(addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\n"), "{answer}");
        let answer = get(addr, "POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\n"), "{answer}");
        task.abort();
    }

    #[tokio::test]
    async fn slow_clients_are_closed_and_cannot_crowd_out_scrapes() {
        let (addr, _, task) = endpoint().await;
        let started = Instant::now();
        // Two clients that never finish their request: the connection limit.
        let mut idle = TcpStream::connect(addr).await.expect("connect");
        let mut half = TcpStream::connect(addr).await.expect("connect");
        half.write_all(b"GET /metrics HTTP/1.1\r\n")
            .await
            .expect("write");
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "an idle client is closed");
        let read = tokio::time::timeout(Duration::from_secs(5), half.read_to_end(&mut buf)).await;
        assert!(
            read.is_ok(),
            "a client that never ends its headers is closed"
        );
        assert!(started.elapsed() < Duration::from_secs(3));
        let answer = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        task.abort();
    }
}
