//! Enrollment mode: what an appliance without an identity serves (first
//! start, or after a factory reset), and nothing else.
//!
//! The identity key is made in the TPM; one TLS listener serves a
//! certificate self-signed by it, whose SHA-256 fingerprint is printed with
//! a one-time enrollment code (console and log). `provision device enroll`
//! pins that fingerprint, spends the code in `Begin` for a CSR of the key,
//! has the site CA sign it, and sends everything back in `Complete`. The
//! appliance then leaves enrollment mode on the same listening socket.
//!
//! The code: 16 characters from a 32-letter alphabet (80 bits), single use,
//! valid `enrollment.code_lifetime_s`; after [`MAX_WRONG`] wrong attempts
//! (or when it expires) it is replaced and the new one printed. Codes and
//! tickets are compared as SHA-256 digests in constant time. Every attempt
//! is audited (never the code itself). Other services answer UNIMPLEMENTED;
//! health answers NOT_SERVING.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use keystore::Store;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tonic::{Request, Response, Status};
use tower::ServiceExt;
use wire::enroll::enrollment_server::{Enrollment as EnrollmentRpc, EnrollmentServer};
use wire::enroll::{
    BeginRequest, BeginResponse, CompleteRequest, CompleteResponse, StatusRequest, StatusResponse,
};
use zeroize::Zeroizing;

use crate::audit::{AuditLog, Event};
use crate::config::Config;
use crate::error::AppError;

/// Wrong codes accepted before the code is replaced.
pub const MAX_WRONG: u32 = 5;
/// The code's alphabet: no 0/O or 1/I to misread.
const ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
const CODE_LEN: usize = 16;
/// Connections served at once in enrollment mode (one operator is enough).
const MAX_CONNECTIONS: usize = 8;
/// How long one enrollment connection may stay open, whatever it does.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);
/// Largest message (the update root is the biggest, a few KiB).
const MAX_MESSAGE: usize = 1 << 20;

/// How enrollment mode ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Enrolled: serve operationally from now on.
    Enrolled {
        /// The site (SPIFFE trust domain).
        site: String,
        /// This appliance's id.
        appliance: String,
    },
    /// Asked to stop before enrollment completed.
    Stopped,
}

struct Code {
    /// SHA-256 of the normalised code.
    digest: [u8; 32],
    issued: Instant,
    wrong: u32,
}

struct Ticket {
    digest: [u8; 32],
    issued: Instant,
}

struct Progress {
    code: Code,
    ticket: Option<Ticket>,
    done: bool,
}

/// The enrollment service's state.
pub struct Enrollment {
    store: Store,
    config: Config,
    audit: AuditLog,
    lifetime: Duration,
    fingerprint: String,
    key_holder: &'static str,
    progress: Mutex<Progress>,
    finished: watch::Sender<Option<Outcome>>,
}

impl Enrollment {
    /// Prepares enrollment mode: the identity key (created in the TPM on
    /// first start), its self-signed certificate and the first code, both
    /// printed. Returns the service and the TLS configuration to serve it.
    pub fn start(
        config: Config,
        store: Store,
        audit: AuditLog,
    ) -> Result<(Arc<Enrollment>, Arc<rustls::ServerConfig>), AppError> {
        let key = crate::identity::identity_key(&store)?;
        let certificate = crate::identity::enrollment_certificate(key.as_ref())?;
        let fingerprint = crate::identity::fingerprint(&certificate);
        let tls = crate::tls::enrollment_config(certificate, key.clone())?;
        let lifetime = Duration::from_secs(config.enrollment.code_lifetime_s);
        let (code, shown) = new_code()?;
        let enrollment = Arc::new(Enrollment {
            store,
            config,
            audit,
            lifetime,
            fingerprint,
            key_holder: key.holder(),
            progress: Mutex::new(Progress {
                code,
                ticket: None,
                done: false,
            }),
            finished: watch::channel(None).0,
        });
        tracing::warn!(
            fingerprint = %enrollment.fingerprint,
            key = enrollment.key_holder,
            "ENROLLMENT MODE: no identity installed; serving only the enrollment service"
        );
        println!(
            "enrollment mode: certificate fingerprint {}",
            enrollment.fingerprint
        );
        enrollment.announce(&shown, "first code");
        Ok((enrollment, tls))
    }

    /// The fingerprint of the enrollment certificate.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    fn announce(&self, shown: &str, why: &str) {
        let minutes = self.lifetime.as_secs().div_ceil(60);
        tracing::warn!(
            code = shown,
            valid_minutes = minutes,
            "enrollment code ({why})"
        );
        println!("enrollment code: {shown} (valid {minutes} min; {why})");
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn replace_code(&self, progress: &mut Progress, why: &str) -> Result<(), Status> {
        let (code, shown) = new_code().map_err(status)?;
        progress.code = code;
        self.announce(&shown, why);
        Ok(())
    }

    fn audit(&self, rpc: &str, outcome: tonic::Code, started: Instant, detail: String) {
        self.audit.record(Event {
            client: "-".into(),
            rpc: rpc.into(),
            model: String::new(),
            version: String::new(),
            outcome: wire::code_name(outcome).into(),
            bytes_in: 0,
            bytes_out: 0,
            latency_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            detail,
        });
    }

    /// `Begin`, blocking (the TPM signs the CSR).
    fn begin(&self, peer: &str, request: BeginRequest) -> Result<BeginResponse, Status> {
        let started = Instant::now();
        let result = self.begin_inner(request);
        let (code, detail) = match &result {
            Ok(_) => (
                tonic::Code::Ok,
                format!("from {peer}: code accepted, CSR issued"),
            ),
            Err(s) => (s.code(), format!("from {peer}: {}", s.message())),
        };
        self.audit("Enroll.Begin", code, started, detail);
        result
    }

    fn begin_inner(&self, request: BeginRequest) -> Result<BeginResponse, Status> {
        // Names first, so a typo does not spend the code.
        let ips = request
            .ip
            .iter()
            .map(|ip| {
                ip.parse::<IpAddr>().map_err(|_| {
                    Status::invalid_argument(format!("ip: `{ip}` is not an IP address"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for name in &request.dns {
            rustls_pki_types::DnsName::try_from(name.as_str()).map_err(|_| {
                Status::invalid_argument(format!("dns: `{name}` is not a DNS name"))
            })?;
        }
        if request.dns.is_empty() && ips.is_empty() {
            return Err(Status::invalid_argument(
                "dns, ip: give at least one name clients reach the appliance by",
            ));
        }
        if request.dns.len() + ips.len() > 32 {
            return Err(Status::invalid_argument("dns, ip: at most 32 names"));
        }

        let mut progress = self.lock();
        if progress.done {
            return Err(Status::failed_precondition(
                "this appliance is enrolled already",
            ));
        }
        if progress.code.issued.elapsed() > self.lifetime {
            self.replace_code(&mut progress, "the previous code expired")?;
            return Err(Status::failed_precondition(
                "the enrollment code expired; the appliance shows a new one on its console",
            ));
        }
        let given = normalise(&request.code);
        if !digests_equal(&sha256(given.as_bytes()), &progress.code.digest) {
            progress.code.wrong += 1;
            let wrong = progress.code.wrong;
            if wrong >= MAX_WRONG {
                self.replace_code(&mut progress, "the previous code had 5 wrong attempts")?;
                return Err(Status::permission_denied(format!(
                    "wrong enrollment code; after {MAX_WRONG} wrong attempts the code was \
                     replaced: read the new one on the appliance's console"
                )));
            }
            return Err(Status::permission_denied(format!(
                "wrong enrollment code ({} attempts left before it is replaced)",
                MAX_WRONG - wrong
            )));
        }
        // Spent: the next Begin needs the next code.
        self.replace_code(
            &mut progress,
            "the previous code was spent; this one is needed only if that enrollment does not \
             complete",
        )?;
        let ticket = random_hex().map_err(status)?;
        progress.ticket = Some(Ticket {
            digest: sha256(ticket.as_bytes()),
            issued: Instant::now(),
        });
        drop(progress);
        let csr = crate::identity::create_csr(&self.store, &request.dns, &ips).map_err(status)?;
        Ok(BeginResponse {
            csr_pem: csr,
            ticket: ticket.to_string(),
        })
    }

    /// `Complete`, blocking.
    fn complete(&self, peer: &str, request: CompleteRequest) -> Result<CompleteResponse, Status> {
        let started = Instant::now();
        let result = self.complete_inner(request);
        let (code, detail) = match &result {
            Ok(r) => (
                tonic::Code::Ok,
                format!(
                    "from {peer}: enrolled as `{}` of site `{}`",
                    r.appliance, r.site
                ),
            ),
            Err(s) => (s.code(), format!("from {peer}: {}", s.message())),
        };
        self.audit("Enroll.Complete", code, started, detail);
        if let Ok(r) = &result {
            self.audit.flush();
            self.finished.send_replace(Some(Outcome::Enrolled {
                site: r.site.clone(),
                appliance: r.appliance.clone(),
            }));
        }
        result
    }

    fn complete_inner(&self, request: CompleteRequest) -> Result<CompleteResponse, Status> {
        let mut progress = self.lock();
        if progress.done {
            return Err(Status::failed_precondition(
                "this appliance is enrolled already",
            ));
        }
        let valid = progress.ticket.as_ref().is_some_and(|t| {
            t.issued.elapsed() <= self.lifetime
                && digests_equal(&sha256(request.ticket.as_bytes()), &t.digest)
        });
        if !valid {
            return Err(Status::permission_denied(
                "unknown or expired enrollment ticket: begin again with the code the appliance \
                 shows",
            ));
        }
        // Everything is checked before anything is written; the
        // certificate goes last, as it is what makes the appliance enrolled.
        let identity = crate::identity::check_install(
            &self.store,
            request.certificate_pem.as_bytes(),
            request.client_ca_pem.as_bytes(),
        )
        .map_err(status)?;
        let crl = if request.crl_pem.is_empty() {
            None
        } else {
            Some(
                crate::identity::parse_crl(request.crl_pem.as_bytes(), identity.client_ca())
                    .map_err(status)?,
            )
        };
        let admin = ident::ClientName::new(&request.admin).map_err(|e| {
            Status::invalid_argument(format!("admin: `{}`: {e}", ident::shorten(&request.admin)))
        })?;
        let root = if request.update_root.is_empty() {
            None
        } else {
            images::tuf::verify::TrustedMetadata::from_root(&request.update_root)
                .map_err(|e| Status::invalid_argument(format!("update_root: {e}")))?;
            Some(request.update_root.as_slice())
        };

        let mut update_root_version = 0;
        if let Some(root) = root {
            match crate::updates::root_version(&self.store).map_err(status)? {
                // Installed by an earlier Complete that failed later on.
                Some(v) => update_root_version = v,
                None => {
                    update_root_version =
                        crate::updates::install_root(&self.store, root).map_err(status)?;
                }
            }
        }
        if let Some(crl) = &crl {
            crate::identity::store_crl(&self.store, crl).map_err(status)?;
        }
        let grants = crate::grants::Grants::load(self.store.clone(), self.config.limits.clone())
            .map_err(status)?;
        grants
            .put(crate::grants::Grant::admin(admin.as_str()))
            .map_err(status)?;
        crate::identity::install(&self.store, &identity).map_err(status)?;
        progress.done = true;
        progress.ticket = None;
        tracing::info!(
            site = %identity.site,
            appliance = %identity.appliance_id,
            admin = %admin,
            "enrolled"
        );
        Ok(CompleteResponse {
            site: identity.site,
            appliance: identity.appliance_id,
            update_root_version,
        })
    }
}

fn status(e: AppError) -> Status {
    crate::error::to_status(&e)
}

/// The gRPC face of [`Enrollment`].
#[derive(Clone)]
struct Service(Arc<Enrollment>);

/// The peer's address, put on each request by the connection.
#[derive(Clone, Copy)]
struct PeerAddress(Option<SocketAddr>);

fn peer_of<T>(request: &Request<T>) -> String {
    match request.extensions().get::<PeerAddress>() {
        Some(PeerAddress(Some(a))) => a.to_string(),
        _ => "-".into(),
    }
}

#[tonic::async_trait]
impl EnrollmentRpc for Service {
    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(StatusResponse {
            state: "enrolling".into(),
            key_holder: self.0.key_holder.into(),
        }))
    }

    async fn begin(
        &self,
        request: Request<BeginRequest>,
    ) -> Result<Response<BeginResponse>, Status> {
        self.blocking(request, Enrollment::begin).await
    }

    async fn complete(
        &self,
        request: Request<CompleteRequest>,
    ) -> Result<Response<CompleteResponse>, Status> {
        self.blocking(request, Enrollment::complete).await
    }
}

impl Service {
    /// Runs a handler on the blocking pool: the TPM and the store block.
    async fn blocking<Q: Send + 'static, A: Send + 'static>(
        &self,
        request: Request<Q>,
        handler: fn(&Enrollment, &str, Q) -> Result<A, Status>,
    ) -> Result<Response<A>, Status> {
        let peer = peer_of(&request);
        let inner = self.0.clone();
        tokio::task::spawn_blocking(move || handler(&inner, &peer, request.into_inner()))
            .await
            .map_err(|_| Status::internal("enrollment task failed"))?
            .map(Response::new)
    }
}

/// Serves enrollment on `listener` until enrollment completes or `stop`
/// turns true. The listener stays open for the operational server.
pub async fn serve(
    enrollment: Arc<Enrollment>,
    tls: Arc<rustls::ServerConfig>,
    listener: &TcpListener,
    mut stop: watch::Receiver<bool>,
) -> Outcome {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    let routes = tonic::service::Routes::new(
        EnrollmentServer::new(Service(enrollment.clone()))
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
    )
    .add_service(health_service);
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let handshake = enrollment.config.handshake_timeout();
    let mut finished = enrollment.finished.subscribe();
    let mut connections = JoinSet::new();
    let outcome = loop {
        tokio::select! {
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let Ok((tcp, address)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    continue;
                };
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
                let routes = routes.clone();
                connections.spawn(async move {
                    let _ = tokio::time::timeout(CONNECTION_LIFETIME, async move {
                        let Ok(Ok(stream)) =
                            tokio::time::timeout(handshake, acceptor.accept(tcp)).await
                        else {
                            return;
                        };
                        let service = tower::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
                            request.extensions_mut().insert(PeerAddress(Some(address)));
                            routes.clone().oneshot(request)
                        });
                        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                        builder.timer(TokioTimer::new()).max_concurrent_streams(4);
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                            .await;
                    })
                    .await;
                    drop(permit);
                });
            }
            changed = finished.changed() => {
                if changed.is_ok() {
                    if let Some(outcome) = finished.borrow().clone() {
                        break outcome;
                    }
                }
            }
            _ = stop.wait_for(|s| *s) => break Outcome::Stopped,
        }
    };
    // Let the Complete answer reach the operator before the connections go.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
    outcome
}

/// Enrollment mode from start to end: its own audit writer, the service on
/// `listener` until enrolled or stopped, then the writer flushed and ended
/// (the operational server starts its own on the same chain).
pub async fn run(
    config: Config,
    store: Store,
    listener: &TcpListener,
    stop: watch::Receiver<bool>,
) -> Result<Outcome, AppError> {
    let retention = config.audit_retention();
    let (audit, writer) = AuditLog::start(&store, retention)?;
    let (enrollment, tls) =
        tokio::task::spawn_blocking(move || Enrollment::start(config, store, audit))
            .await
            .map_err(|e| AppError::Internal(format!("enrollment start: {e}")))??;
    let outcome = serve(enrollment.clone(), tls, listener, stop).await;
    enrollment.audit.stop();
    drop(enrollment);
    tokio::task::spawn_blocking(move || writer.join())
        .await
        .map_err(|e| AppError::Internal(format!("audit writer: {e}")))?;
    Ok(outcome)
}

/// A fresh code: its digest, and its display form (groups of four).
fn new_code() -> Result<(Code, Zeroizing<String>), AppError> {
    let mut raw = Zeroizing::new([0u8; CODE_LEN]);
    keystore::crypto::fill_random(raw.as_mut())?;
    let plain: Zeroizing<String> = Zeroizing::new(
        raw.iter()
            .map(|b| char::from(ALPHABET[usize::from(b & 31)]))
            .collect(),
    );
    let shown = Zeroizing::new(
        plain
            .as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("-"),
    );
    Ok((
        Code {
            digest: sha256(plain.as_bytes()),
            issued: Instant::now(),
            wrong: 0,
        },
        shown,
    ))
}

/// Upper case, without the dashes and spaces people type; bounded.
fn normalise(code: &str) -> Zeroizing<String> {
    Zeroizing::new(
        code.chars()
            .take(64)
            .filter(|c| !matches!(c, '-' | ' '))
            .map(|c| c.to_ascii_uppercase())
            .collect(),
    )
}

fn random_hex() -> Result<Zeroizing<String>, AppError> {
    let mut raw = Zeroizing::new([0u8; 32]);
    keystore::crypto::fill_random(raw.as_mut())?;
    Ok(Zeroizing::new(crate::audit::hex(raw.as_ref())))
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

/// Constant time, so timing tells nothing about how much of a code matched.
fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn codes_are_shown_in_groups_and_typed_loosely() {
        let (code, shown) = new_code().unwrap();
        assert_eq!(shown.len(), 19);
        assert_eq!(shown.matches('-').count(), 3);
        assert!(shown.bytes().all(|b| b == b'-' || ALPHABET.contains(&b)));
        let typed = shown.to_lowercase().replace('-', " ");
        assert!(digests_equal(
            &sha256(normalise(&typed).as_bytes()),
            &code.digest
        ));
        let (other, _) = new_code().unwrap();
        assert!(!digests_equal(&other.digest, &code.digest));
    }

    proptest! {
        /// The code field comes from the network.
        #[test]
        fn normalise_is_bounded(s in ".{0,300}") {
            prop_assert!(normalise(&s).chars().count() <= 64);
        }
    }
}
