//! The operator's side of enrollment over the network
//! (`appliance.enroll.v1`).
//!
//! An appliance in enrollment mode serves a certificate self-signed by the
//! identity key in its TPM and prints the certificate's SHA-256 fingerprint
//! and a one-time code. [`enroll`] pins that fingerprint (trust on first
//! use, confirmed out of band: the operator reads it off the appliance's
//! console), spends the code for a CSR of the TPM key, signs it with the
//! site CA, and sends back the certificate, the site CA, the CRL, the
//! vendor's update root and the first admin grant. TLS 1.3 only; no client
//! certificate (the appliance knows no CA yet; the code authenticates).

use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tonic::transport::Endpoint;
use wire::enroll::enrollment_client::EnrollmentClient;
use wire::enroll::{BeginRequest, CompleteRequest, StatusRequest};

use crate::admin::{ApplianceAddress, error_chain, rpc_error};
use crate::cert::{CertificateRequest, ServerNames, SubjectKey, Validity};
use crate::error::{Error, Result};
use crate::names::{ApplianceId, ClientName};
use crate::site::UnlockedSite;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The appliance signs the CSR in its TPM; a hardware TPM is slow.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The SHA-256 fingerprint of the appliance's enrollment certificate, as
/// the appliance prints it (`SHA256:AB:CD:…`), or as bare hex with or
/// without colons, any case.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Fingerprint([u8; 32]);

impl FromStr for Fingerprint {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: &str| Error::invalid("fingerprint", s, reason);
        let body = s.trim();
        let body = body
            .strip_prefix("SHA256:")
            .or_else(|| body.strip_prefix("sha256:"))
            .unwrap_or(body);
        let hex: String = body.chars().filter(|c| *c != ':').collect();
        if hex.len() != 64 {
            return Err(bad("expected the 32-byte SHA-256 the appliance prints"));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(&hex, &mut out).map_err(|_| bad("not hexadecimal"))?;
        Ok(Fingerprint(out))
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex: Vec<String> = self.0.iter().map(|b| format!("{b:02X}")).collect();
        write!(f, "SHA256:{}", hex.join(":"))
    }
}

impl Fingerprint {
    /// The fingerprint of a DER certificate.
    pub fn of(der: &[u8]) -> Self {
        let mut out = [0u8; 32];
        out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, der).as_ref());
        Fingerprint(out)
    }
}

/// What to enroll and what to install.
#[derive(Debug)]
pub struct EnrollSpec<'a> {
    /// The appliance's enrollment listener.
    pub address: &'a ApplianceAddress,
    /// Its certificate's fingerprint, read off its console.
    pub fingerprint: Fingerprint,
    /// The code it shows beside it.
    pub code: &'a str,
    /// The appliance id to certify.
    pub name: &'a ApplianceId,
    /// The names clients use (empty: the address's host).
    pub dns: &'a [String],
    /// The addresses clients use.
    pub ips: &'a [IpAddr],
    /// The client granted the admin role.
    pub admin: &'a ClientName,
    /// The vendor's root.json, when given.
    pub update_root: Option<&'a [u8]>,
    /// The appliance certificate's validity.
    pub validity: Validity,
}

/// What an enrollment did.
#[derive(Debug, Clone)]
pub struct Enrolled {
    /// The site, as the appliance reports it.
    pub site: String,
    /// The appliance id.
    pub appliance: String,
    /// Where the identity key is held, as the appliance reports it.
    pub key_holder: String,
    /// The issued certificate's serial (hex).
    pub serial: String,
    /// The update root's version installed (0: none).
    pub update_root_version: u64,
    /// From connecting to the appliance's answer to Complete.
    pub took: Duration,
}

/// Enrolls an appliance (see the module documentation).
pub async fn enroll(site: &mut UnlockedSite, spec: &EnrollSpec<'_>) -> Result<Enrolled> {
    let started = Instant::now();
    let (dns, ips) = if spec.dns.is_empty() && spec.ips.is_empty() {
        match spec.address.host().parse::<IpAddr>() {
            Ok(ip) => (Vec::new(), vec![ip]),
            Err(_) => (vec![spec.address.host().to_owned()], Vec::new()),
        }
    } else {
        (spec.dns.to_vec(), spec.ips.to_vec())
    };
    let names = ServerNames::new(&dns, &ips)?;
    let mut client = EnrollmentClient::new(pinned_channel(spec.address, spec.fingerprint).await?);
    let status = client
        .status(StatusRequest {})
        .await
        .map_err(rpc_error("Status"))?
        .into_inner();
    let begun = client
        .begin(BeginRequest {
            code: spec.code.to_owned(),
            dns: dns.clone(),
            ip: ips.iter().map(ToString::to_string).collect(),
        })
        .await
        .map_err(rpc_error("Begin"))?
        .into_inner();
    let request =
        CertificateRequest::from_pem(begun.csr_pem.as_bytes(), Path::new("the appliance's CSR"))?;
    let issued =
        site.issue_appliance(spec.name, &names, SubjectKey::Csr(request), spec.validity)?;
    let done = client
        .complete(CompleteRequest {
            ticket: begun.ticket,
            certificate_pem: issued.cert_pem().to_owned(),
            client_ca_pem: site.site().ca_pem().to_owned(),
            crl_pem: site.site().crl_pem()?,
            update_root: spec.update_root.map(<[u8]>::to_vec).unwrap_or_default(),
            admin: spec.admin.to_string(),
        })
        .await
        .map_err(rpc_error("Complete"))?
        .into_inner();
    Ok(Enrolled {
        site: done.site,
        appliance: done.appliance,
        key_holder: status.key_holder,
        serial: issued.serial().to_string(),
        update_root_version: done.update_root_version,
        took: started.elapsed(),
    })
}

/// A gRPC channel over TLS 1.3 to `address` that accepts only the
/// certificate with fingerprint `pin`, with no client certificate.
pub async fn pinned_channel(
    address: &ApplianceAddress,
    pin: Fingerprint,
) -> Result<tonic::transport::Channel> {
    let connect_err = |detail: String| Error::Connect {
        addr: address.to_string(),
        detail,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| connect_err(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { pin, provider }))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let target = format!("{}:{}", address.host(), address.port());
    let server_name =
        ServerName::try_from(address.host().to_owned()).map_err(|e| connect_err(e.to_string()))?;
    // tonic must not do TLS itself: the URI is http, the connector is TLS.
    let endpoint = Endpoint::from_shared(address.uri().replacen("https://", "http://", 1))
        .map_err(|e| connect_err(error_chain(&e)))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT);
    let channel = endpoint
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let connector = connector.clone();
            let target = target.clone();
            let server_name = server_name.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(&target).await?;
                let _ = tcp.set_nodelay(true);
                let tls = connector.connect(server_name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .map_err(|e| connect_err(error_chain(&e)))?;
    Ok(channel)
}

/// Accepts exactly the certificate with the pinned fingerprint, and checks
/// that the handshake was signed by its key.
#[derive(Debug)]
struct Pinned {
    pin: Fingerprint,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let seen = Fingerprint::of(end_entity);
        if seen == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the appliance's certificate has fingerprint {seen}, not the {} given: \
                 either this is not the appliance whose console you read, or it is not in \
                 enrollment mode (enrolled already?)",
                self.pin
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("enrollment is TLS 1.3 only".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fingerprints_parse_as_printed_and_as_hex() {
        let f = Fingerprint::of(b"certificate");
        let printed = f.to_string();
        assert!(printed.starts_with("SHA256:"));
        assert_eq!(printed.parse::<Fingerprint>().unwrap(), f);
        let bare = printed
            .trim_start_matches("SHA256:")
            .replace(':', "")
            .to_lowercase();
        assert_eq!(bare.parse::<Fingerprint>().unwrap(), f);
        for bad in ["", "SHA256:", "zz", &"ab".repeat(31), &"g".repeat(64)] {
            assert!(bad.parse::<Fingerprint>().is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn fingerprint_parser_never_panics(s in ".{0,200}") {
            let _ = s.parse::<Fingerprint>();
        }
    }
}
