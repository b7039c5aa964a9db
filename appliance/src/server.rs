//! The listener: TCP accept, bounded connections, TLS handshake with a
//! deadline, then HTTP/2 or HTTP/1.1 on each connection, carrying the gRPC
//! services, the protocol's REST form (`/v2/...`, [`crate::rest`]) and
//! `/metrics`. There is no other listener and no plaintext path.
//!
//! Shutdown: stop accepting, ask every connection to finish gracefully
//! (in-flight requests complete, new ones are refused), wait up to the
//! configured grace period.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, broadcast};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tonic::service::Routes;
use tower::ServiceExt;

use crate::frames::{Budget, Flood, FrameMeter};
use crate::identity::client_of;
use crate::state::{AppState, Need, Peer};

/// Serves until `shutdown` completes, then drains.
pub async fn serve(
    state: Arc<AppState>,
    routes: Routes,
    listener: TcpListener,
    shutdown: impl Future,
) {
    let limit = Arc::new(Semaphore::new(state.config.server.max_connections));
    // Request bytes held across all connections, in KiB.
    let inflight = Arc::new(Semaphore::new(state.config.server.max_inflight_mb << 10));
    let (stop_tx, _) = broadcast::channel::<()>(1);
    // Every connection task, so the ones still open when the grace period
    // ends can be closed.
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            // Reap finished connections as they end.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (tcp, peer_address) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    state.metrics.connections_refused.fetch_add(1, Ordering::Relaxed);
                    drop(tcp);
                    continue;
                };
                let state = state.clone();
                let routes = routes.clone();
                let stop = stop_tx.subscribe();
                let inflight = inflight.clone();
                tracing::debug!(peer = %peer_address, "connection accepted");
                connections.spawn(async move {
                    connection(state, routes, tcp, inflight, stop).await;
                    drop(permit);
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: no new connections; finishing requests in flight");
    let _ = stop_tx.send(());
    let grace = Duration::from_secs(state.config.server.shutdown_grace_s);
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        let open = connections.len();
        connections.abort_all();
        while connections.join_next().await.is_some() {}
        tracing::warn!(
            connections = open,
            "grace period over; closed the remaining connections"
        );
    }
}

async fn connection(
    state: Arc<AppState>,
    routes: Routes,
    tcp: TcpStream,
    inflight: Arc<Semaphore>,
    mut stop: broadcast::Receiver<()>,
) {
    let _ = tcp.set_nodelay(true);
    let peer_address = tcp.peer_addr().ok();
    let acceptor = tokio_rustls::TlsAcceptor::from(state.tls.config());
    let handshake = tokio::time::timeout(state.config.handshake_timeout(), acceptor.accept(tcp));
    let tls = match handshake.await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            state
                .metrics
                .handshakes_failed
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            state
                .metrics
                .handshakes_failed
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(peer = ?peer_address, "TLS handshake timed out");
            return;
        }
    };
    // The verifier made a client certificate mandatory; identify its owner
    // once per connection.
    let peer = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
        Some(leaf) => client_of(leaf, &state.tls.identity().site).map_err(|e| e.to_string()),
        None => Err("no client certificate".to_owned()),
    };
    let peer = Peer(Arc::new(peer));
    state.metrics.connections.fetch_add(1, Ordering::Relaxed);
    let activity = Arc::new(Activity::new());

    let service = {
        let state = state.clone();
        let activity = activity.clone();
        tower::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(peer.clone());
            let state = state.clone();
            let routes = routes.clone();
            // Open until the response body is done (or dropped).
            let open = activity.open();
            let inflight = inflight.clone();
            async move {
                if request.uri().path() == "/metrics" {
                    let response = metrics(&state, &peer_of(&request));
                    return Ok::<_, std::convert::Infallible>(tracked(response, open));
                }
                let peer = peer_of(&request);
                let method = request.uri().path().to_owned();
                let budget = Share::new(inflight, state.config.server.max_inflight_mb);
                let request = request.map(|body| Budgeted {
                    body,
                    budget: budget.clone(),
                });
                // The RPC a refusal is audited under: REST reads a body
                // only for inference.
                let (response, rpc) = if is_rest(&method) {
                    let response = crate::rest::handle(state.clone(), request).await;
                    (response, "ModelInfer")
                } else {
                    let response = routes.oneshot(request).await?;
                    let response = oversize_as_exhausted(&state, peer.as_ref(), &method, response);
                    (response, method.as_str())
                };
                if budget.refused() {
                    state
                        .metrics
                        .inflight_refused
                        .fetch_add(1, Ordering::Relaxed);
                    state.record_refusal(peer.as_ref(), rpc, "RESOURCE_EXHAUSTED");
                }
                // The bytes stay counted until the answer is sent: the
                // decoded request lives that long.
                Ok(tracked(response, open.holding(budget)))
            }
        })
    };
    let flood = Arc::new(OnceLock::new());
    let io = TokioIo::new(Metered::new(
        Idle::new(tls, state.config.idle_timeout()),
        flood.clone(),
    ));
    // HTTP/2 (gRPC, and REST from clients that offer it) or HTTP/1.1
    // (REST), told apart by the connection preface.
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let server = &state.config.server;
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(server.max_concurrent_streams)
        .keep_alive_interval(Some(Duration::from_secs(server.keepalive_interval_s)))
        .keep_alive_timeout(Duration::from_secs(server.keepalive_timeout_s));
    // A client that dribbles a request's header gets the handshake's
    // deadline to finish it.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(state.config.handshake_timeout());
    let conn = builder.serve_connection(io, TowerToHyperService::new(service));
    tokio::pin!(conn);
    let stall = Duration::from_secs(server.stall_timeout_s);
    let stalled = stalled(activity.clone(), stall);
    let idle = idle(activity, state.config.idle_timeout());
    tokio::select! {
        result = conn.as_mut() => {
            if let Some(kind) = flood.get() {
                state.metrics.cut_flood.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    peer = ?peer_address,
                    frames = kind.as_str(),
                    "connection cut: the client flooded control frames"
                );
            } else if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        () = stalled => {
            // Not graceful: a graceful close would wait for the very
            // answers the client refuses to take.
            state.metrics.cut_stalled.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                peer = ?peer_address,
                seconds = stall.as_secs(),
                "connection cut: the client took no answer for stall_timeout_s"
            );
        }
        _ = stop.recv() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
        () = idle => {
            // No open stream for idle_timeout_s: pings do not count.
            tracing::debug!(peer = ?peer_address, "idle connection closed");
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
    state.metrics.connections.fetch_sub(1, Ordering::Relaxed);
}

/// Requests open on a connection, when the last one ended, and the answers
/// still being sent.
struct Activity {
    open: std::sync::atomic::AtomicUsize,
    since: std::sync::Mutex<std::time::Instant>,
    /// Each answer being sent, by id: since when it has waited for the
    /// client to take data (`None` while it waits for the server itself,
    /// e.g. a streaming answer between messages; today's RPCs all answer
    /// at once, health Watch included).
    sending: std::sync::Mutex<HashMap<u64, Option<std::time::Instant>>>,
    next: std::sync::atomic::AtomicU64,
}

/// One open request; closes it when dropped, with the request bytes it
/// holds against `server.max_inflight_mb`.
struct Open(Arc<Activity>, Option<Share>);

impl Open {
    fn holding(mut self, budget: Share) -> Open {
        self.1 = Some(budget);
        self
    }
}

impl Activity {
    fn new() -> Self {
        Activity {
            open: std::sync::atomic::AtomicUsize::new(0),
            since: std::sync::Mutex::new(std::time::Instant::now()),
            sending: std::sync::Mutex::new(HashMap::new()),
            next: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Registers an answer about to be sent. hyper asks a body for data
    /// only when the client's window has room, so until it asks, the
    /// answer waits on the client.
    fn sending(self: &Arc<Self>) -> Sending {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.set_waiting(id, Some(std::time::Instant::now()));
        Sending {
            activity: self.clone(),
            id,
        }
    }

    fn set_waiting(&self, id: u64, since: Option<std::time::Instant>) {
        self.sending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, since);
    }

    /// How long the longest-waiting answer has waited for the client.
    fn stalled_for(&self) -> Option<Duration> {
        self.sending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .flatten()
            .min()
            .map(std::time::Instant::elapsed)
    }

    fn open(self: &Arc<Self>) -> Open {
        self.open.fetch_add(1, Ordering::SeqCst);
        Open(self.clone(), None)
    }

    /// How long the connection has had no open request, if it has none.
    fn idle_for(&self) -> Option<Duration> {
        if self.open.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let since = *self
            .since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Some(since.elapsed())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        *self
            .0
            .since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = std::time::Instant::now();
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One answer being sent; unregisters it when dropped.
struct Sending {
    activity: Arc<Activity>,
    id: u64,
}

impl Drop for Sending {
    fn drop(&mut self) {
        self.activity
            .sending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// Completes once some answer has waited `timeout` for the client to take
/// data.
async fn stalled(activity: Arc<Activity>, timeout: Duration) {
    loop {
        match activity.stalled_for() {
            Some(waited) if waited >= timeout => return,
            Some(waited) => tokio::time::sleep(timeout - waited).await,
            None => tokio::time::sleep(timeout.min(Duration::from_secs(1))).await,
        }
    }
}

/// Completes once the connection has had no open request for `timeout`.
async fn idle(activity: Arc<Activity>, timeout: Duration) {
    loop {
        match activity.idle_for() {
            Some(idle) if idle >= timeout => return,
            Some(idle) => tokio::time::sleep(timeout - idle).await,
            None => tokio::time::sleep(timeout).await,
        }
    }
}

/// The response with `open` held until its body is done.
fn tracked(
    response: http::Response<tonic::body::Body>,
    open: Open,
) -> http::Response<tonic::body::Body> {
    let sending = open.0.sending();
    response.map(|body| {
        tonic::body::Body::new(Tracked {
            body,
            sending,
            _open: open,
        })
    })
}

/// A response body that keeps its request open while it streams, and says
/// whether it waits on the client or on the server.
struct Tracked {
    body: tonic::body::Body,
    sending: Sending,
    _open: Open,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, tonic::Status>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        // A frame handed over: hyper comes back for the next one once the
        // client's window has room. Pending: the server has nothing yet.
        let waiting = match &polled {
            Poll::Ready(Some(_)) => Some(std::time::Instant::now()),
            _ => None,
        };
        self.sending.activity.set_waiting(self.sending.id, waiting);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// tonic refuses a message over `max_message_bytes` with OUT_OF_RANGE
/// before any handler runs (so unaudited). gRPC's own servers say
/// RESOURCE_EXHAUSTED for that, and so do we; and we audit it. No handler
/// of ours answers OUT_OF_RANGE, so the code identifies the case.
fn oversize_as_exhausted(
    state: &AppState,
    peer: Option<&Peer>,
    method: &str,
    mut response: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let out_of_range = response
        .headers()
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"11");
    if out_of_range {
        let headers = response.headers_mut();
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
        let message = format!(
            "request larger than the server's limit of {} bytes (server.max_message_bytes)",
            state.config.server.max_message_bytes
        );
        if let Ok(value) = http::HeaderValue::from_str(&message) {
            headers.insert("grpc-message", value);
        }
        state.record_refusal(peer, method, "RESOURCE_EXHAUSTED");
    }
    response
}

/// The REST form's paths (`/v2` and below); everything else is gRPC.
fn is_rest(path: &str) -> bool {
    path == "/v2" || path.starts_with("/v2/")
}

fn peer_of<B>(request: &http::Request<B>) -> Option<Peer> {
    request.extensions().get::<Peer>().cloned()
}

/// `GET /metrics`, for admin certificates.
fn metrics(state: &AppState, peer: &Option<Peer>) -> http::Response<tonic::body::Body> {
    let reply = |status: u16, text: String| {
        http::Response::builder()
            .status(status)
            .header("content-type", "text/plain; version=0.0.4")
            .body(tonic::body::Body::new(Full::new(Bytes::from(text))))
            .unwrap_or_default()
    };
    match state.begin_peer(peer.as_ref(), "Metrics", Need::Admin, "", 0) {
        Ok(call) => {
            state.forget_unloaded_model_stats();
            let models_ready = state
                .registry
                .list()
                .iter()
                .filter(|(_, _, r)| *r == inference::Readiness::Ready)
                .count();
            let mut text = state.metrics.render(state.pool.queue_depth(), models_ready);
            text.push_str(&audit_metrics(&state.audit));
            call.succeed(text.len() as u64);
            reply(200, text)
        }
        Err(status) => {
            let code = if status.code() == tonic::Code::Unauthenticated {
                401
            } else {
                403
            };
            reply(code, format!("{}\n", status.message()))
        }
    }
}

/// The audit log's health, failed writes and pruned records.
fn audit_metrics(audit: &crate::audit::AuditLog) -> String {
    let stats = audit.stats();
    format!(
        "# HELP appliance_audit_healthy 1 while audit records are written; 0 while calls are refused.\n\
         # TYPE appliance_audit_healthy gauge\n\
         appliance_audit_healthy {}\n\
         # HELP appliance_audit_write_failures_total Audit batch writes that failed (and were retried).\n\
         # TYPE appliance_audit_write_failures_total counter\n\
         appliance_audit_write_failures_total {}\n\
         # HELP appliance_audit_pruned_total Audit records removed by retention.\n\
         # TYPE appliance_audit_pruned_total counter\n\
         appliance_audit_pruned_total {}\n",
        u8::from(audit.healthy()),
        stats.write_failures.load(Ordering::Relaxed),
        stats.pruned.load(Ordering::Relaxed),
    )
}

/// A stream that fails once neither side has moved a byte for `timeout`,
/// so idle connections cannot hold their slots forever.
struct Idle<T> {
    inner: T,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<T> Idle<T> {
    fn new(inner: T, timeout: Duration) -> Self {
        Idle {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    fn touch(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.timeout);
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Idle<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.touch();
                }
                Poll::Ready(result)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "idle connection",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Idle<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = &result
            && *n > 0
        {
            self.touch();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A stream that meters the client's HTTP/2 control frames (see
/// [`crate::frames`]) and fails the connection once the client floods them.
struct Metered<T> {
    inner: T,
    meter: FrameMeter,
    tripped: Arc<OnceLock<Flood>>,
}

impl<T> Metered<T> {
    fn new(inner: T, tripped: Arc<OnceLock<Flood>>) -> Self {
        Metered {
            inner,
            meter: FrameMeter::new(Budget::default(), std::time::Instant::now()),
            tripped,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Metered<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.tripped.get().is_some() {
            return Poll::Ready(Err(io::Error::other("control frame flood")));
        }
        let before = buf.filled().len();
        let result = ready!(Pin::new(&mut self.inner).poll_read(cx, buf));
        let this = &mut *self;
        if let Err(flood) = this
            .meter
            .feed(&buf.filled()[before..], std::time::Instant::now())
        {
            let _ = this.tripped.set(flood);
            return Poll::Ready(Err(io::Error::other("control frame flood")));
        }
        Poll::Ready(result)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Metered<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One request's share of `server.max_inflight_mb`: the request bytes it
/// has received, in KiB permits, held until its answer is sent.
#[derive(Clone)]
struct Share(Arc<std::sync::Mutex<Held>>);

struct Held {
    pool: Arc<Semaphore>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    bytes: u64,
    refused: bool,
    limit_mb: usize,
}

impl Share {
    fn new(pool: Arc<Semaphore>, limit_mb: usize) -> Share {
        Share(Arc::new(std::sync::Mutex::new(Held {
            pool,
            permit: None,
            bytes: 0,
            refused: false,
            limit_mb,
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts `n` more bytes; false if the server holds too many already.
    fn take(&self, n: usize) -> bool {
        let mut held = self.lock();
        let bytes = held.bytes + n as u64;
        let have = held.permit.as_ref().map_or(0, |p| p.num_permits());
        let need = usize::try_from(bytes.div_ceil(1024)).unwrap_or(usize::MAX);
        if need > have {
            match held
                .pool
                .clone()
                .try_acquire_many_owned(u32::try_from(need - have).unwrap_or(u32::MAX))
            {
                Ok(more) => match &mut held.permit {
                    Some(p) => p.merge(more),
                    None => held.permit = Some(more),
                },
                Err(_) => {
                    held.refused = true;
                    return false;
                }
            }
        }
        held.bytes = bytes;
        true
    }

    fn refused(&self) -> bool {
        self.lock().refused
    }
}

/// A request body that counts its bytes against the server's budget and
/// fails with RESOURCE_EXHAUSTED once the budget is spent.
struct Budgeted {
    body: hyper::body::Incoming,
    budget: Share,
}

impl http_body::Body for Budgeted {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, tonic::Status>>> {
        let frame = ready!(Pin::new(&mut self.body).poll_frame(cx));
        Poll::Ready(frame.map(|frame| {
            let frame = frame.map_err(|e| tonic::Status::from_error(Box::new(e)))?;
            let n = frame.data_ref().map_or(0, Bytes::len);
            if self.budget.take(n) {
                Ok(frame)
            } else {
                let limit = self.budget.lock().limit_mb;
                Err(tonic::Status::resource_exhausted(format!(
                    "the server is holding its limit of request bytes ({limit} MiB, \
                     server.max_inflight_mb); retry later"
                )))
            }
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
