//! The client side of the appliance's admin service (`appliance.admin.v1`)
//! over mutual TLS.
//!
//! The admin identity is a directory with `ca.pem` (the site CA, the only
//! root trusted for the appliance's certificate), `cert.pem` and `key.pem`
//! (a client certificate whose grant has the admin role), as
//! `provision client issue` writes it.
//!
//! TLS is 1.3 only: [`AdminSession::connect`] installs, as the process's
//! default rustls provider, ring restricted to its TLS 1.3 cipher suites,
//! which tonic's client then uses. (tonic builds its rustls client config
//! from the process default and offers no protocol-version setting.) If
//! another default provider was installed first by the same process, that
//! one is used as it is; the `provision` binary always installs its own
//! first.

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use wire::admin::admin_client::AdminClient;
use wire::admin::{
    DeleteGrantRequest, ExportAuditRequest, InstallCrlRequest, ListGrantsRequest,
    ListModelsRequest, LoadModelChunk, LoadModelHeader, UnloadModelRequest,
};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::fsutil;
use crate::grant::GrantSpec;
use crate::names::{ClientName, ModelName};

/// Size of the ONNX and tokenizer pieces in a LoadModel stream: well under
/// any sane `server.max_message_bytes` of the appliance, framing included.
pub const MODEL_CHUNK_LEN: usize = 256 * 1024;
/// How long to wait for TCP and TLS to the appliance.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `host:port` of an appliance's mTLS port. The host (a DNS name or an IP
/// address, IPv6 in brackets) is also the TLS server name, so it must be in
/// the appliance certificate's SANs.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ApplianceAddress {
    host: String,
    ip: Option<IpAddr>,
    port: u16,
}

impl ApplianceAddress {
    /// The host part, the name checked against the server certificate.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn uri(&self) -> String {
        match self.ip {
            Some(IpAddr::V6(v6)) => format!("https://[{v6}]:{}", self.port),
            _ => format!("https://{}:{}", self.host, self.port),
        }
    }
}

impl FromStr for ApplianceAddress {
    type Err = Error;
    /// `host:port`, `1.2.3.4:port` or `[::1]:port`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: &str| Error::invalid("appliance address", s, reason);
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, p) = rest
                .split_once("]:")
                .ok_or_else(|| bad("expected [ipv6]:port"))?;
            (h, p)
        } else {
            let (h, p) = s
                .rsplit_once(':')
                .ok_or_else(|| bad("expected host:port"))?;
            if h.contains(':') {
                return Err(bad("IPv6 addresses go in brackets: [addr]:port"));
            }
            (h, p)
        };
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("the port must be 1 to 65535"))?;
        let ip = host.parse::<IpAddr>().ok();
        if s.starts_with('[') && !matches!(ip, Some(IpAddr::V6(_))) {
            return Err(bad("only IPv6 addresses go in brackets"));
        }
        if ip.is_none() && rustls_pki_types::DnsName::try_from(host).is_err() {
            return Err(bad("the host must be a DNS name or an IP address"));
        }
        Ok(Self {
            host: ip.map_or_else(|| host.to_ascii_lowercase(), |ip| ip.to_string()),
            ip,
            port,
        })
    }
}

impl std::fmt::Display for ApplianceAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.ip {
            Some(IpAddr::V6(v6)) => write!(f, "[{v6}]:{}", self.port),
            _ => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

/// The admin's TLS identity and trust root, read from a directory.
pub struct AdminCredentials {
    ca_pem: String,
    cert_pem: String,
    key_pem: Zeroizing<String>,
}

impl std::fmt::Debug for AdminCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminCredentials").finish_non_exhaustive()
    }
}

impl AdminCredentials {
    /// Reads `ca.pem`, `cert.pem` and `key.pem` from `dir` and checks that
    /// each holds what it should. `key.pem` must not be readable by group
    /// or others.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let read = |name: &str| -> Result<String> {
            let path = dir.join(name);
            let bytes = fsutil::read_limited(&path, 1024 * 1024)?;
            String::from_utf8(bytes).map_err(|_| Error::bad_object(&path, "not PEM text"))
        };
        let ca_pem = read("ca.pem")?;
        CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| {
            Error::bad_object(&dir.join("ca.pem"), format!("no PEM CERTIFICATE ({e})"))
        })?;
        let cert_pem = read("cert.pem")?;
        CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| {
            Error::bad_object(&dir.join("cert.pem"), format!("no PEM CERTIFICATE ({e})"))
        })?;
        let key_path = dir.join("key.pem");
        let mode = std::fs::metadata(&key_path)
            .map_err(|e| Error::io("read", &key_path, e))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(Error::bad_object(
                &key_path,
                format!(
                    "private key readable by group or others (mode {:o}); run chmod 600",
                    mode & 0o777
                ),
            ));
        }
        let key_pem = Zeroizing::new(read("key.pem")?);
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|_| Error::bad_object(&key_path, "no PEM PRIVATE KEY found".to_owned()))?;
        Ok(Self {
            ca_pem,
            cert_pem,
            key_pem,
        })
    }
}

/// A model as the appliance reports it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
#[non_exhaustive]
pub struct ModelStatus {
    /// Model name.
    pub name: String,
    /// Version.
    pub version: u64,
    /// The appliance's state word ("ready", "loading", ...).
    pub state: String,
}

/// One audit record, as exported (one JSON object per line).
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
#[non_exhaustive]
pub struct AuditEntry {
    /// Position in the log.
    pub sequence: u64,
    /// RFC 3339, UTC.
    pub time: String,
    /// Calling client.
    pub client: String,
    /// RPC name.
    pub rpc: String,
    /// Model, if any.
    pub model: String,
    /// Model version, if any.
    pub version: String,
    /// gRPC status code name.
    pub outcome: String,
    /// Request bytes.
    pub bytes_in: u64,
    /// Response bytes.
    pub bytes_out: u64,
    /// Latency in microseconds.
    pub latency_us: u64,
    /// Hash chaining this record to the previous one (hex).
    pub chain_hash: String,
    /// Why, for update refusals and rollbacks.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl From<wire::admin::AuditRecord> for AuditEntry {
    fn from(r: wire::admin::AuditRecord) -> Self {
        Self {
            sequence: r.sequence,
            time: r.time,
            client: r.client,
            rpc: r.rpc,
            model: r.model,
            version: r.version,
            outcome: r.outcome,
            bytes_in: r.bytes_in,
            bytes_out: r.bytes_out,
            latency_us: r.latency_us,
            chain_hash: r.chain_hash,
            detail: r.detail,
        }
    }
}

/// A connection to an appliance's admin service.
#[derive(Debug, Clone)]
pub struct AdminSession {
    client: AdminClient<Channel>,
}

pub(crate) fn rpc_error(rpc: &'static str) -> impl FnOnce(tonic::Status) -> Error {
    move |status| Error::Rpc {
        rpc,
        code: status.code(),
        message: status.message().to_owned(),
    }
}

/// An error and its causes on one line: tonic's transport errors say little
/// at the top level ("transport error") and the reason sits underneath.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Installs ring with only its TLS 1.3 cipher suites as the process's
/// default rustls provider, unless a default is installed already. Returns
/// whether the provider now in force allows TLS 1.3 only.
pub fn install_tls13_provider() -> bool {
    use rustls::SupportedCipherSuite;
    use rustls::crypto::CryptoProvider;
    if CryptoProvider::get_default().is_none() {
        let mut provider = rustls::crypto::ring::default_provider();
        provider
            .cipher_suites
            .retain(|s| matches!(s, SupportedCipherSuite::Tls13(_)));
        // Losing a race with another installer leaves theirs in force.
        let _ = provider.install_default();
    }
    CryptoProvider::get_default().is_some_and(|p| {
        p.cipher_suites
            .iter()
            .all(|s| matches!(s, SupportedCipherSuite::Tls13(_)))
    })
}

impl AdminSession {
    /// Connects over mutual TLS: the appliance's certificate must chain to
    /// the admin directory's `ca.pem` and name `addr`'s host; the admin
    /// certificate is presented as the client identity.
    pub async fn connect(addr: &ApplianceAddress, creds: &AdminCredentials) -> Result<Self> {
        install_tls13_provider();
        let connect_err = |detail: String| Error::Connect {
            addr: addr.to_string(),
            detail,
        };
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&creds.ca_pem))
            .identity(Identity::from_pem(
                &creds.cert_pem,
                creds.key_pem.as_bytes(),
            ))
            .domain_name(addr.host().to_owned());
        let endpoint = Endpoint::from_shared(addr.uri())
            .and_then(|e| e.tls_config(tls))
            .map_err(|e| connect_err(error_chain(&e)))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| connect_err(error_chain(&e)))?;
        Ok(Self {
            client: AdminClient::new(channel),
        })
    }

    /// Installs a CRL (DER or PEM); returns how many revoked certificates
    /// the appliance counted in it.
    pub async fn install_crl(&mut self, crl: Vec<u8>) -> Result<u64> {
        let resp = self
            .client
            .install_crl(InstallCrlRequest { crl })
            .await
            .map_err(rpc_error("InstallCrl"))?;
        Ok(resp.into_inner().revoked)
    }

    /// Creates or replaces a client's grant.
    pub async fn put_grant(&mut self, grant: &GrantSpec) -> Result<()> {
        self.client
            .put_grant(grant.to_wire())
            .await
            .map_err(rpc_error("PutGrant"))?;
        Ok(())
    }

    /// Removes a client's grant; returns whether it existed.
    pub async fn delete_grant(&mut self, client: &ClientName) -> Result<bool> {
        let resp = self
            .client
            .delete_grant(DeleteGrantRequest {
                client: client.to_string(),
            })
            .await
            .map_err(rpc_error("DeleteGrant"))?;
        Ok(resp.into_inner().existed)
    }

    /// Every grant on the appliance, as the wire carries them.
    pub async fn list_grants(&mut self) -> Result<Vec<wire::admin::Grant>> {
        let resp = self
            .client
            .list_grants(ListGrantsRequest {})
            .await
            .map_err(rpc_error("ListGrants"))?;
        Ok(resp.into_inner().grants)
    }

    /// Uploads a model: a header, the ONNX bytes in
    /// [`MODEL_CHUNK_LEN`] pieces, then the tokenizer's.
    pub async fn load_model(
        &mut self,
        name: &ModelName,
        version: u64,
        onnx: Vec<u8>,
        tokenizer_json: Option<Vec<u8>>,
    ) -> Result<ModelStatus> {
        let chunks = model_chunks(name, version, onnx, tokenizer_json.unwrap_or_default());
        let resp = self
            .client
            .load_model(tokio_stream::iter(chunks))
            .await
            .map_err(rpc_error("LoadModel"))?
            .into_inner();
        Ok(ModelStatus {
            name: resp.name,
            version: resp.version,
            state: resp.state,
        })
    }

    /// Unloads one model version; returns whether it existed.
    pub async fn unload_model(&mut self, name: &ModelName, version: u64) -> Result<bool> {
        let resp = self
            .client
            .unload_model(UnloadModelRequest {
                name: name.to_string(),
                version,
            })
            .await
            .map_err(rpc_error("UnloadModel"))?;
        Ok(resp.into_inner().existed)
    }

    /// The models on the appliance.
    pub async fn list_models(&mut self) -> Result<Vec<ModelStatus>> {
        let resp = self
            .client
            .list_models(ListModelsRequest {})
            .await
            .map_err(rpc_error("ListModels"))?;
        Ok(resp
            .into_inner()
            .models
            .into_iter()
            .map(|m| ModelStatus {
                name: m.name,
                version: m.version,
                state: m.state,
            })
            .collect())
    }

    /// Signed model lines and their state.
    pub async fn list_model_lines(&mut self) -> Result<Vec<wire::admin::ModelLine>> {
        let resp = self
            .client
            .list_model_lines(wire::admin::ListModelLinesRequest {})
            .await
            .map_err(rpc_error("ListModelLines"))?;
        Ok(resp.into_inner().lines)
    }

    /// Removes a signed line and shreds its key; returns whether it existed.
    pub async fn remove_model_line(&mut self, name: &ModelName) -> Result<bool> {
        let resp = self
            .client
            .remove_model_line(wire::admin::RemoveModelLineRequest {
                name: name.to_string(),
            })
            .await
            .map_err(rpc_error("RemoveModelLine"))?
            .into_inner();
        Ok(resp.existed)
    }

    /// Switches a signed line back to its previous release; returns
    /// (release, version) now serving.
    pub async fn rollback_model(&mut self, name: &ModelName) -> Result<(u64, u64)> {
        let resp = self
            .client
            .rollback_model(wire::admin::RollbackModelRequest {
                name: name.to_string(),
            })
            .await
            .map_err(rpc_error("RollbackModel"))?
            .into_inner();
        Ok((resp.release, resp.version))
    }

    /// Runs a signed update from `source` for `models` (empty: every line
    /// the repository holds). Each event the appliance reports is handed to
    /// `on_event`; for a pushed repository, the appliance's requests for
    /// files are answered here from the directory. Returns the per-line
    /// outcomes; an error means the repository was refused as a whole.
    pub async fn update_models(
        &mut self,
        source: UpdateSource,
        models: Vec<String>,
        mut on_event: impl FnMut(&wire::admin::update_event::Event),
    ) -> Result<Vec<wire::admin::UpdateOutcome>> {
        use wire::admin::update_event::Event;
        use wire::admin::update_start::Source;
        use wire::admin::{UpdateRequest, UpdateStart, update_request::Message};
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let (wire_source, repo) = match source {
            UpdateSource::Push(dir) => (Source::Push(true), Some(dir)),
            UpdateSource::Mirror(url) => (Source::MirrorUrl(url), None),
            UpdateSource::LocalDir(dir) => (Source::LocalDir(dir), None),
        };
        let start = UpdateRequest {
            message: Some(Message::Start(UpdateStart {
                source: Some(wire_source),
                models,
            })),
        };
        let _ = tx.send(start).await;
        let mut events = self
            .client
            .update_models(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map_err(rpc_error("UpdateModels"))?
            .into_inner();
        let mut outcomes = Vec::new();
        while let Some(event) = events.message().await.map_err(rpc_error("UpdateModels"))? {
            let Some(event) = event.event else { continue };
            match (&event, &repo) {
                (Event::Fetch(fetch), Some(dir)) => {
                    let file = read_repository_piece(dir, fetch)?;
                    if tx
                        .send(UpdateRequest {
                            message: Some(Message::File(file)),
                        })
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                (Event::Outcome(o), _) => {
                    outcomes.push(o.clone());
                    on_event(&event);
                }
                _ => on_event(&event),
            }
        }
        Ok(outcomes)
    }

    /// Streams audit records from sequence `from` on into `sink`, in order;
    /// returns how many were delivered. Stops at the first error of the
    /// stream or of `sink`.
    pub async fn export_audit<F>(&mut self, from: u64, mut sink: F) -> Result<u64>
    where
        F: FnMut(AuditEntry) -> Result<()>,
    {
        let mut stream = self
            .client
            .export_audit(ExportAuditRequest {
                from_sequence: from,
            })
            .await
            .map_err(rpc_error("ExportAudit"))?
            .into_inner();
        let mut count = 0;
        while let Some(record) = stream.message().await.map_err(rpc_error("ExportAudit"))? {
            sink(record.into())?;
            count += 1;
        }
        Ok(count)
    }
}

/// The LoadModel stream: the first message carries the header; the ONNX
/// bytes follow in [`MODEL_CHUNK_LEN`] pieces, then the tokenizer's. Pieces
/// are copied out one at a time as the stream is polled.
pub fn model_chunks(
    name: &ModelName,
    version: u64,
    onnx: Vec<u8>,
    tokenizer_json: Vec<u8>,
) -> impl Iterator<Item = LoadModelChunk> + Send + 'static {
    let name = name.to_string();
    let onnx_chunks = onnx.len().div_ceil(MODEL_CHUNK_LEN);
    let tok_chunks = tokenizer_json.len().div_ceil(MODEL_CHUNK_LEN);
    let total = (onnx_chunks + tok_chunks).max(1);
    let piece = |bytes: &[u8], i: usize| {
        let start = i * MODEL_CHUNK_LEN;
        bytes[start..(start + MODEL_CHUNK_LEN).min(bytes.len())].to_vec()
    };
    (0..total).map(move |i| LoadModelChunk {
        header: (i == 0).then(|| LoadModelHeader {
            name: name.clone(),
            version,
        }),
        onnx: if i < onnx_chunks {
            piece(&onnx, i)
        } else {
            Vec::new()
        },
        tokenizer_json: if i >= onnx_chunks && i - onnx_chunks < tok_chunks {
            piece(&tokenizer_json, i - onnx_chunks)
        } else {
            Vec::new()
        },
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn addresses() {
        let a: ApplianceAddress = "Box.Example:8443".parse().unwrap();
        assert_eq!((a.host(), a.port()), ("box.example", 8443));
        assert_eq!(a.uri(), "https://box.example:8443");
        let a: ApplianceAddress = "10.0.0.7:443".parse().unwrap();
        assert_eq!(a.host(), "10.0.0.7");
        let a: ApplianceAddress = "[::1]:9000".parse().unwrap();
        assert_eq!(a.host(), "::1");
        assert_eq!(a.uri(), "https://[::1]:9000");
        assert_eq!(a.to_string(), "[::1]:9000");
        for bad in [
            "",
            "box",
            "box:",
            "box:0",
            "box:70000",
            "[10.0.0.1]:1",
            "::1:80",
            "a b:1",
        ] {
            let err = bad.parse::<ApplianceAddress>().unwrap_err();
            assert!(err.is_usage(), "{bad}");
        }
    }

    #[test]
    fn chunking() {
        let name = ModelName::new("digits").unwrap();
        let onnx = vec![7u8; 2 * MODEL_CHUNK_LEN + 5];
        let tok = vec![9u8; 10];
        let chunks: Vec<_> = model_chunks(&name, 3, onnx.clone(), tok.clone()).collect();
        assert_eq!(chunks.len(), 4);
        assert_eq!(chunks[0].header.as_ref().unwrap().name, "digits");
        assert_eq!(chunks[0].header.as_ref().unwrap().version, 3);
        assert!(chunks[1..].iter().all(|c| c.header.is_none()));
        let all_onnx: Vec<u8> = chunks.iter().flat_map(|c| c.onnx.clone()).collect();
        let all_tok: Vec<u8> = chunks
            .iter()
            .flat_map(|c| c.tokenizer_json.clone())
            .collect();
        assert_eq!(all_onnx, onnx);
        assert_eq!(all_tok, tok);
        assert!(chunks.iter().all(|c| c.onnx.len() <= MODEL_CHUNK_LEN));
        assert!(chunks[3].onnx.is_empty() && chunks[3].tokenizer_json.len() == 10);
        // Without a tokenizer the ONNX pieces are all there is.
        assert_eq!(model_chunks(&name, 1, vec![1; 10], Vec::new()).count(), 1);
    }
}

/// Where an update's repository is.
#[derive(Debug, Clone)]
pub enum UpdateSource {
    /// A repository directory here, pushed over the admin stream.
    Push(std::path::PathBuf),
    /// A LAN mirror the appliance reads (`http://…`).
    Mirror(String),
    /// A directory on the appliance itself (e.g. mounted USB media).
    LocalDir(String),
}

/// Reads the piece of a repository file the appliance asked for. Only
/// `metadata/<name>` and `targets/<name>` with flat names are served.
fn read_repository_piece(
    dir: &Path,
    fetch: &wire::admin::FetchFile,
) -> Result<wire::admin::RepositoryFile> {
    use std::io::{Read, Seek, SeekFrom};
    let answer = |data: Vec<u8>, eof: bool, missing: bool| wire::admin::RepositoryFile {
        path: fetch.path.clone(),
        offset: fetch.offset,
        data,
        eof,
        missing,
    };
    let flat = |name: &str| {
        !name.is_empty()
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'))
    };
    let Some((folder, name)) = fetch.path.split_once('/') else {
        return Ok(answer(Vec::new(), true, true));
    };
    if !matches!(folder, "metadata" | "targets") || !flat(name) {
        return Ok(answer(Vec::new(), true, true));
    }
    let path = dir.join(folder).join(name);
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(answer(Vec::new(), true, true));
        }
        Err(e) => return Err(Error::io("read", &path, e)),
    };
    let size = file
        .metadata()
        .map_err(|e| Error::io("read", &path, e))?
        .len();
    let length = fetch.length.min(MODEL_CHUNK_LEN as u64 * 4);
    file.seek(SeekFrom::Start(fetch.offset.min(size)))
        .map_err(|e| Error::io("read", &path, e))?;
    let mut data = Vec::with_capacity(length as usize);
    file.take(length)
        .read_to_end(&mut data)
        .map_err(|e| Error::io("read", &path, e))?;
    let eof = fetch.offset + data.len() as u64 >= size;
    Ok(answer(data, eof, false))
}
