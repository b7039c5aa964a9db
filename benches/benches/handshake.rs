//! TLS 1.3 handshakes per second with the identity key held in the TPM
//! (swtpm, one connection per signature, as the daemon does) against the
//! same handshake with the key in process memory (ring), in the same run.
//!
//! Each handshake is a full TLS 1.3 handshake (ECDHE P-256/X25519, one
//! ECDSA P-256 signature by the server) between rustls client and server
//! connections in memory, so the figure is the server's signing path and
//! not the network. The server configuration is the daemon's own
//! (`appliance::tls`), without the client certificate (which costs both
//! variants the same). Sequential handshakes, then 4 clients at once (the
//! TPM serves one signature at a time, so its rate should not rise).
//!
//! Run: `cargo bench -p benches --bench handshake`

#![allow(clippy::expect_used, clippy::unwrap_used)] // a harness: failing loudly is right

use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::median_p99;
use keystore::{IdentityKey, InsecureSoftwareBackend, KeyBackend, Store, TpmBackend};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use test_support::Swtpm;

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tpm = Swtpm::start(&dir.path().join("swtpm"));
    let tpm_backend: Box<dyn KeyBackend> =
        Box::new(TpmBackend::new(&tpm.tcti(), "sha256:16".parse().unwrap()).unwrap());
    let soft_backend: Box<dyn KeyBackend> =
        Box::new(InsecureSoftwareBackend::open(&dir.path().join("root.key")).unwrap());
    let tpm_store = Store::open(&dir.path().join("tpm-data"), tpm_backend).unwrap();
    let soft_store = Store::open(&dir.path().join("soft-data"), soft_backend).unwrap();
    let tpm_key = appliance::identity::identity_key(&tpm_store).unwrap();
    let soft_key = appliance::identity::identity_key(&soft_store).unwrap();

    let client = client_config();
    let memory = server_config(&soft_key);
    let in_tpm = server_config(&tpm_key);

    // Warm-up.
    for config in [&memory, &in_tpm] {
        handshake(config, &client);
    }
    println!("TLS 1.3 handshakes, in memory, rustls client and the daemon's server configuration");
    let (m_med, m_p99, m_rate) = sequential(&memory, &client, Duration::from_secs(3));
    let (t_med, t_p99, t_rate) = sequential(&in_tpm, &client, Duration::from_secs(5));
    println!(
        "  key in process memory (ring)  {:>8.1} handshakes/s  median {:>8.3} ms  p99 {:>8.3} ms",
        m_rate,
        m_med.as_secs_f64() * 1e3,
        m_p99.as_secs_f64() * 1e3
    );
    println!(
        "  key in the TPM (swtpm)        {:>8.1} handshakes/s  median {:>8.3} ms  p99 {:>8.3} ms",
        t_rate,
        t_med.as_secs_f64() * 1e3,
        t_p99.as_secs_f64() * 1e3
    );
    println!("  ratio TPM / memory            {:>8.3}", t_rate / m_rate);
    let parallel = concurrent(&in_tpm, &client, 4, Duration::from_secs(5));
    println!(
        "  key in the TPM, 4 clients     {parallel:>8.1} handshakes/s (one TPM signs one at a time)"
    );
    // What one signature costs the TPM path alone.
    let mut signs = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        tpm_key.sign(b"handshake transcript").unwrap();
        signs.push(t.elapsed());
    }
    let (s_med, _) = median_p99(&mut signs);
    println!(
        "  one TPM signature (connect, load under the root, sign, flush): median {:.3} ms",
        s_med.as_secs_f64() * 1e3
    );
}

fn sequential(
    server: &Arc<ServerConfig>,
    client: &Arc<ClientConfig>,
    budget: Duration,
) -> (Duration, Duration, f64) {
    let mut samples = Vec::new();
    let started = Instant::now();
    while started.elapsed() < budget {
        let t = Instant::now();
        handshake(server, client);
        samples.push(t.elapsed());
    }
    let rate = samples.len() as f64 / started.elapsed().as_secs_f64();
    let (median, p99) = median_p99(&mut samples);
    (median, p99, rate)
}

fn concurrent(
    server: &Arc<ServerConfig>,
    client: &Arc<ClientConfig>,
    threads: usize,
    budget: Duration,
) -> f64 {
    let started = Instant::now();
    let done: usize = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut n = 0;
                    while started.elapsed() < budget {
                        handshake(server, client);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    done as f64 / started.elapsed().as_secs_f64()
}

fn server_config(key: &Arc<dyn IdentityKey>) -> Arc<ServerConfig> {
    let certificate = appliance::identity::enrollment_certificate(key.as_ref()).unwrap();
    appliance::tls::enrollment_config(certificate, key.clone()).unwrap()
}

/// One full handshake, bytes pumped between the two ends in memory.
fn handshake(server: &Arc<ServerConfig>, client: &Arc<ClientConfig>) {
    let mut s = ServerConnection::new(server.clone()).unwrap();
    let mut c =
        ClientConnection::new(client.clone(), ServerName::try_from("appliance").unwrap()).unwrap();
    let mut buf = Vec::new();
    while c.is_handshaking() || s.is_handshaking() {
        buf.clear();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            s.read_tls(&mut buf.as_slice()).unwrap();
            s.process_new_packets().unwrap();
        }
        buf.clear();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            c.read_tls(&mut buf.as_slice()).unwrap();
            c.process_new_packets().unwrap();
        }
    }
}

fn client_config() -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(CheckSignatureOnly(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// Trusts any certificate but checks the handshake signature, so the
/// server's signature is verified as a real client would.
#[derive(Debug)]
struct CheckSignatureOnly(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for CheckSignatureOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.3 only".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
