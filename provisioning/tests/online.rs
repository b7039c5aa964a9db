//! The online commands against a stand-in admin server: a real tonic server
//! over mutual TLS with the site's appliance certificate, implementing
//! `appliance.admin.v1` just far enough to record what it receives. The
//! `provision` binary is the client, as an operator runs it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};
use wire::admin::admin_server::{Admin, AdminServer};
use wire::admin::*;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

const PASS: &str = "online passphrase 1";

#[derive(Default)]
struct Recorded {
    peers: Vec<String>,
    grants: Vec<Grant>,
    crls: Vec<Vec<u8>>,
    uploads: Vec<Upload>,
}

/// One LoadModel stream as received.
struct Upload {
    header: LoadModelHeader,
    onnx: Vec<u8>,
    tokenizer: Vec<u8>,
    /// Payload bytes per message.
    sizes: Vec<usize>,
    /// Whether a header appeared after the first message.
    late_header: bool,
}

#[derive(Default)]
struct FakeAdmin {
    rec: Mutex<Recorded>,
}

impl FakeAdmin {
    fn note_peer<T>(&self, req: &Request<T>) {
        let uri = req
            .peer_certs()
            .and_then(|certs| {
                let (_, x) = X509Certificate::from_der(certs.first()?.as_ref()).ok()?;
                let san = x.subject_alternative_name().ok()??;
                san.value.general_names.iter().find_map(|n| match n {
                    GeneralName::URI(u) => Some((*u).to_owned()),
                    _ => None,
                })
            })
            .unwrap_or_default();
        self.rec.lock().unwrap().peers.push(uri);
    }
}

type AuditStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<AuditRecord, Status>> + Send>>;

#[tonic::async_trait]
impl Admin for FakeAdmin {
    type UpdateModelsStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<UpdateEvent, Status>> + Send>>;

    async fn update_models(
        &self,
        _req: Request<tonic::Streaming<UpdateRequest>>,
    ) -> Result<Response<Self::UpdateModelsStream>, Status> {
        Err(Status::unimplemented("not in the stand-in"))
    }

    async fn rollback_model(
        &self,
        _req: Request<RollbackModelRequest>,
    ) -> Result<Response<RollbackModelResponse>, Status> {
        Err(Status::unimplemented("not in the stand-in"))
    }

    async fn list_model_lines(
        &self,
        _req: Request<ListModelLinesRequest>,
    ) -> Result<Response<ListModelLinesResponse>, Status> {
        Ok(Response::new(ListModelLinesResponse { lines: vec![] }))
    }

    async fn remove_model_line(
        &self,
        _req: Request<RemoveModelLineRequest>,
    ) -> Result<Response<RemoveModelLineResponse>, Status> {
        Err(Status::unimplemented("not in the stand-in"))
    }

    async fn put_grant(&self, req: Request<Grant>) -> Result<Response<PutGrantResponse>, Status> {
        self.note_peer(&req);
        let grant = req.into_inner();
        if grant.client == "denied" {
            return Err(Status::permission_denied(
                "grants for `denied` are not allowed here",
            ));
        }
        let mut rec = self.rec.lock().unwrap();
        rec.grants.retain(|g| g.client != grant.client);
        rec.grants.push(grant);
        Ok(Response::new(PutGrantResponse {}))
    }

    async fn delete_grant(
        &self,
        req: Request<DeleteGrantRequest>,
    ) -> Result<Response<DeleteGrantResponse>, Status> {
        self.note_peer(&req);
        let client = req.into_inner().client;
        let mut rec = self.rec.lock().unwrap();
        let before = rec.grants.len();
        rec.grants.retain(|g| g.client != client);
        Ok(Response::new(DeleteGrantResponse {
            existed: rec.grants.len() != before,
        }))
    }

    async fn list_grants(
        &self,
        req: Request<ListGrantsRequest>,
    ) -> Result<Response<ListGrantsResponse>, Status> {
        self.note_peer(&req);
        Ok(Response::new(ListGrantsResponse {
            grants: self.rec.lock().unwrap().grants.clone(),
        }))
    }

    async fn install_crl(
        &self,
        req: Request<InstallCrlRequest>,
    ) -> Result<Response<InstallCrlResponse>, Status> {
        self.note_peer(&req);
        let crl = req.into_inner().crl;
        let revoked = x509_parser::parse_x509_crl(&crl)
            .map_err(|_| Status::invalid_argument("crl: not a DER CRL"))?
            .1
            .iter_revoked_certificates()
            .count() as u64;
        self.rec.lock().unwrap().crls.push(crl);
        Ok(Response::new(InstallCrlResponse { revoked }))
    }

    async fn load_model(
        &self,
        req: Request<tonic::Streaming<LoadModelChunk>>,
    ) -> Result<Response<LoadModelResponse>, Status> {
        self.note_peer(&req);
        let mut stream = req.into_inner();
        let mut header = None;
        let (mut onnx, mut tok, mut sizes, mut late_header) =
            (Vec::new(), Vec::new(), Vec::new(), false);
        while let Some(chunk) = stream.message().await? {
            match (chunk.header, header.is_none()) {
                (Some(h), true) => header = Some(h),
                (Some(_), false) => late_header = true,
                (None, true) => return Err(Status::invalid_argument("header: missing")),
                (None, false) => {}
            }
            sizes.push(chunk.onnx.len() + chunk.tokenizer_json.len());
            onnx.extend_from_slice(&chunk.onnx);
            tok.extend_from_slice(&chunk.tokenizer_json);
        }
        let header = header.ok_or_else(|| Status::invalid_argument("header: missing"))?;
        let resp = LoadModelResponse {
            name: header.name.clone(),
            version: header.version,
            state: "ready".into(),
        };
        self.rec.lock().unwrap().uploads.push(Upload {
            header,
            onnx,
            tokenizer: tok,
            sizes,
            late_header,
        });
        Ok(Response::new(resp))
    }

    async fn unload_model(
        &self,
        req: Request<UnloadModelRequest>,
    ) -> Result<Response<UnloadModelResponse>, Status> {
        self.note_peer(&req);
        let r = req.into_inner();
        let existed = self
            .rec
            .lock()
            .unwrap()
            .uploads
            .iter()
            .any(|u| u.header.name == r.name && u.header.version == r.version);
        Ok(Response::new(UnloadModelResponse { existed }))
    }

    async fn list_models(
        &self,
        req: Request<ListModelsRequest>,
    ) -> Result<Response<ListModelsResponse>, Status> {
        self.note_peer(&req);
        let models = self
            .rec
            .lock()
            .unwrap()
            .uploads
            .iter()
            .map(|u| ModelState {
                name: u.header.name.clone(),
                version: u.header.version,
                state: "ready".into(),
            })
            .collect();
        Ok(Response::new(ListModelsResponse { models }))
    }

    type ExportAuditStream = AuditStream;

    async fn export_audit(
        &self,
        req: Request<ExportAuditRequest>,
    ) -> Result<Response<AuditStream>, Status> {
        self.note_peer(&req);
        let from = req.into_inner().from_sequence;
        let records: Vec<Result<AuditRecord, Status>> = (from..8)
            .map(|sequence| {
                Ok(AuditRecord {
                    sequence,
                    time: format!("2025-01-01T00:00:0{sequence}Z"),
                    client: "billing".into(),
                    rpc: "ModelInfer".into(),
                    model: "digits".into(),
                    version: "1".into(),
                    outcome: "OK".into(),
                    bytes_in: 256,
                    bytes_out: 40,
                    latency_us: 900 + sequence,
                    chain_hash: format!("{sequence:064x}"),
                    detail: String::new(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(records))))
    }
}

fn provision(args: Vec<String>) -> Output {
    Command::new(env!("CARGO_BIN_EXE_provision"))
        .args(args)
        .env("PROVISION_PASSPHRASE", PASS)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// Runs the binary off the async runtime (it blocks while the server
/// answers on the runtime).
async fn run(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || provision(args))
        .await
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

struct Env {
    _tmp: tempfile::TempDir,
    site: PathBuf,
    admin: PathBuf,
    appliance: String,
    fake: Arc<FakeAdmin>,
}

/// A site, an appliance certificate for 127.0.0.1, an admin client bundle,
/// and the fake admin server serving on a free loopback port.
async fn setup() -> Env {
    // rustls is built with both ring and aws-lc-rs in this workspace (tough
    // brings the latter), so the stand-in server needs a default chosen.
    provisioning::admin::install_tls13_provider();
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    let admin = tmp.path().join("admin");
    let server = tmp.path().join("server");
    ok(&run(&["site", "init", "--dir", s(&site), "--name", "online-test"]).await);
    ok(&run(&[
        "client",
        "issue",
        "--site",
        s(&site),
        "--name",
        "ops",
        "--out",
        s(&admin),
    ])
    .await);
    ok(&run(&[
        "appliance",
        "issue",
        "--site",
        s(&site),
        "--name",
        "box",
        "--ip",
        "127.0.0.1",
        "--dns",
        "localhost",
        "--generate-key",
        "--out",
        s(&server),
    ])
    .await);

    let read = |p: PathBuf| std::fs::read(p).unwrap();
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            read(server.join("cert.pem")),
            read(server.join("key.pem")),
        ))
        .client_ca_root(Certificate::from_pem(read(site.join("ca.pem"))));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let fake = Arc::new(FakeAdmin::default());
    let svc = AdminServer::from_arc(fake.clone());
    let router = Server::builder().tls_config(tls).unwrap().add_service(svc);
    tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
    Env {
        _tmp: tmp,
        site,
        admin,
        appliance: addr.to_string(),
        fake,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crl_push_sends_the_sites_crl_as_the_admin() {
    let env = setup().await;
    ok(&run(&[
        "client",
        "issue",
        "--site",
        s(&env.site),
        "--name",
        "gone",
        "--out",
        s(&env.site.join("../gone")),
    ])
    .await);
    ok(&run(&["client", "revoke", "--site", s(&env.site), "--name", "gone"]).await);
    let text = ok(&run(&[
        "crl",
        "push",
        "--site",
        s(&env.site),
        "--appliance",
        &env.appliance,
        "--admin",
        s(&env.admin),
    ])
    .await);
    assert!(
        text.contains("installed CRL number 2") && text.contains("(1 revoked)"),
        "{text}"
    );
    let rec = env.fake.rec.lock().unwrap();
    let site = provisioning::Site::open(&env.site).unwrap();
    assert_eq!(rec.crls, [site.crl_der().unwrap().as_ref().to_vec()]);
    assert_eq!(rec.peers, ["spiffe://online-test/client/ops"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_put_list_delete_and_server_errors() {
    let env = setup().await;
    let conn = [
        "--appliance",
        env.appliance.as_str(),
        "--admin",
        s(&env.admin),
    ];
    let mut args = vec!["grant"];
    args.extend(conn);
    args.extend([
        "--client",
        "billing",
        "--models",
        "digits,minilm",
        "--rate",
        "0.5/s",
        "--burst",
        "4",
        "--quota",
        "100000/day",
    ]);
    let text = ok(&run(&args).await);
    assert!(text.contains("granted billing"), "{text}");
    let mut args = vec!["grant"];
    args.extend(conn);
    args.extend([
        "--client",
        "ops",
        "--admin-role",
        "--rate",
        "120/min",
        "--quota",
        "unlimited",
    ]);
    ok(&run(&args).await);
    {
        let rec = env.fake.rec.lock().unwrap();
        let billing = rec.grants.iter().find(|g| g.client == "billing").unwrap();
        assert_eq!(billing.models, ["digits", "minilm"]);
        assert_eq!(billing.rate_per_second, 0.5);
        assert_eq!(billing.burst, 4);
        assert_eq!(billing.daily_quota, 100_000);
        assert!(!billing.admin);
        let ops = rec.grants.iter().find(|g| g.client == "ops").unwrap();
        assert!(ops.admin && ops.models.is_empty());
        assert_eq!(ops.rate_per_second, 2.0);
        assert_eq!((ops.burst, ops.daily_quota), (0, 0));
    }

    let mut args = vec!["grant", "list"];
    args.extend(conn);
    let text = ok(&run(&args).await);
    assert!(
        text.contains("billing") && text.contains("models=digits,minilm"),
        "{text}"
    );
    assert!(
        text.contains("quota=100000/day") && text.contains("quota=unlimited"),
        "{text}"
    );

    let mut args = vec!["grant", "delete"];
    args.extend(conn);
    args.extend(["--client", "billing"]);
    assert!(ok(&run(&args).await).contains("deleted the grant of billing"));
    assert!(ok(&run(&args).await).contains("billing had no grant"));

    // The server's refusal is printed with its code and message.
    let mut args = vec!["grant"];
    args.extend(conn);
    args.extend(["--client", "denied", "--rate", "1/s", "--quota", "1/day"]);
    let out = run(&args).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "PutGrant failed: PERMISSION_DENIED: grants for `denied` are not allowed here"
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_load_streams_bounded_chunks() {
    let env = setup().await;
    let dir = env.site.parent().unwrap().to_path_buf();
    let onnx: Vec<u8> = (0..(2 * 1024 * 1024 + 12345))
        .map(|i| (i % 251) as u8)
        .collect();
    let tok = br#"{"version":"1.0","model":{}}"#.to_vec();
    std::fs::write(dir.join("m.onnx"), &onnx).unwrap();
    std::fs::write(dir.join("tokenizer.json"), &tok).unwrap();
    let onnx_path = dir.join("m.onnx");
    let tok_path = dir.join("tokenizer.json");
    let text = ok(&run(&[
        "model",
        "load",
        "--appliance",
        &env.appliance,
        "--admin",
        s(&env.admin),
        "--name",
        "minilm",
        "--version",
        "3",
        "--onnx",
        s(&onnx_path),
        "--tokenizer",
        s(&tok_path),
    ])
    .await);
    assert!(text.contains("model minilm version 3: ready"), "{text}");
    {
        let rec = env.fake.rec.lock().unwrap();
        let Upload {
            header,
            onnx: got_onnx,
            tokenizer: got_tok,
            sizes,
            late_header,
        } = &rec.uploads[0];
        assert_eq!((header.name.as_str(), header.version), ("minilm", 3));
        assert_eq!(got_onnx, &onnx);
        assert_eq!(got_tok, &tok);
        assert!(!late_header);
        // ONNX pieces of MODEL_CHUNK_LEN, then the tokenizer's.
        let chunk = provisioning::admin::MODEL_CHUNK_LEN;
        assert_eq!(sizes.len(), onnx.len().div_ceil(chunk) + 1);
        assert!(sizes.iter().all(|n| *n <= chunk));
    }
    let text = ok(&run(&[
        "model",
        "list",
        "--appliance",
        &env.appliance,
        "--admin",
        s(&env.admin),
    ])
    .await);
    assert!(text.contains("minilm") && text.contains("ready"), "{text}");
    let text = ok(&run(&[
        "model",
        "unload",
        "--appliance",
        &env.appliance,
        "--admin",
        s(&env.admin),
        "--name",
        "minilm",
        "--version",
        "3",
    ])
    .await);
    assert!(text.contains("unloaded model minilm version 3"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_export_writes_json_lines() {
    let env = setup().await;
    let out_file = env.site.parent().unwrap().join("audit.jsonl");
    let text = ok(&run(&[
        "audit",
        "export",
        "--appliance",
        &env.appliance,
        "--admin",
        s(&env.admin),
        "--from",
        "5",
        "--out",
        s(&out_file),
    ])
    .await);
    assert!(text.contains("exported 3 audit record(s)"), "{text}");
    assert_eq!(
        std::fs::metadata(&out_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let body = std::fs::read_to_string(&out_file).unwrap();
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.len(), 3);
    for (line, seq) in lines.iter().zip(5u64..) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["sequence"], seq);
        assert_eq!(v["outcome"], "OK");
        assert_eq!(v["latency_us"], 900 + seq);
        assert_eq!(v["chain_hash"].as_str().unwrap().len(), 64);
    }
    // The file is never overwritten.
    let out = run(&[
        "audit",
        "export",
        "--appliance",
        &env.appliance,
        "--admin",
        s(&env.admin),
        "--out",
        s(&out_file),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    // To standard output.
    let text = ok(&run(&[
        "audit",
        "export",
        "--appliance",
        &env.appliance,
        "--admin",
        s(&env.admin),
    ])
    .await);
    assert_eq!(text.lines().count(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_session_directly() {
    let env = setup().await;
    let creds = provisioning::admin::AdminCredentials::from_dir(&env.admin).unwrap();
    let addr: provisioning::admin::ApplianceAddress = env.appliance.parse().unwrap();
    let mut session = provisioning::admin::AdminSession::connect(&addr, &creds)
        .await
        .unwrap();
    assert!(session.list_models().await.unwrap().is_empty());
    let mut seen = Vec::new();
    let n = session
        .export_audit(6, |e| {
            seen.push(e.sequence);
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!((n, seen), (2, vec![6, 7]));
    // A DNS name from the certificate works as well as its IP address.
    let by_name: provisioning::admin::ApplianceAddress =
        format!("localhost:{}", addr.port()).parse().unwrap();
    provisioning::admin::AdminSession::connect(&by_name, &creds)
        .await
        .unwrap();
}

/// An appliance that offers only TLS 1.2 is refused by the client, which
/// speaks TLS 1.3 only.
#[test]
fn the_client_speaks_tls13_only() {
    use std::io::Write as _;
    let tmp = tempfile::tempdir().unwrap();
    let site_dir = tmp.path().join("site");
    let mut site = provisioning::Site::init(
        &site_dir,
        &provisioning::SiteName::new("tls-test").unwrap(),
        &provisioning::Passphrase::new(PASS),
    )
    .unwrap();
    let server = site
        .issue_appliance(
            &provisioning::ApplianceId::new("box").unwrap(),
            &provisioning::ServerNames::new(&[], &["127.0.0.1".parse().unwrap()]).unwrap(),
            provisioning::SubjectKey::Generate,
            provisioning::Validity::days(1).unwrap(),
        )
        .unwrap();
    let admin = tmp.path().join("admin");
    site.issue_client(
        &provisioning::ClientName::new("ops").unwrap(),
        provisioning::Validity::days(1).unwrap(),
    )
    .unwrap()
    .write_bundle(&admin)
    .unwrap();

    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![server.cert_der().clone()], server.key_der().unwrap())
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        let mut conn = rustls::ServerConnection::new(Arc::new(config)).unwrap();
        let result = conn.complete_io(&mut sock);
        let _ = sock.flush();
        result.map(|_| ()).map_err(|e| e.to_string())
    });
    let out = provision(vec![
        "model".into(),
        "list".into(),
        "--appliance".into(),
        format!("127.0.0.1:{port}"),
        "--admin".into(),
        s(&admin).into(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let server_side = handle.join().unwrap().unwrap_err();
    // rustls' wording: the client offered no TLS 1.2 at all.
    assert!(
        server_side.contains("Tls12NotOfferedOrEnabled"),
        "{server_side}"
    );
}
