//! Commands that talk to an appliance's admin service.

use std::fs::OpenOptions;
use std::future::Future;
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use provisioning::admin::{AdminCredentials, AdminSession};
use provisioning::grant::{GrantSpec, Quota};
use provisioning::{Error, Site};

use crate::cli::{AuditCmd, Conn, DeviceCmd, GrantCmd, GrantSub, ModelCmd};

/// Largest model file read into memory for upload.
const MAX_MODEL_FILE: u64 = 4 * 1024 * 1024 * 1024;

/// Runs one online command on a single-threaded runtime: the CLI makes one
/// call at a time.
pub fn run(fut: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(fut)
}

pub async fn device(cmd: DeviceCmd) -> anyhow::Result<()> {
    let DeviceCmd::Enroll {
        site,
        address,
        fingerprint,
        code,
        name,
        dns,
        ip,
        admin,
        update_root,
        days,
    } = cmd;
    let root = match &update_root {
        Some(path) => {
            Some(std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?)
        }
        None => None,
    };
    let validity = provisioning::Validity::days(days)?;
    // The passphrase first: a typo must not spend the code.
    let mut site = crate::offline::unlock(&site)?;
    let spec = provisioning::enroll::EnrollSpec {
        address: &address,
        fingerprint,
        code: &code,
        name: &name,
        dns: &dns,
        ips: &ip,
        admin: &admin,
        update_root: root.as_deref(),
        validity,
    };
    let done = provisioning::enroll::enroll(&mut site, &spec).await?;
    println!(
        "enrolled appliance `{}` of site `{}` at {address} in {} ms (certificate serial {}; \
         identity key {})",
        done.appliance,
        done.site,
        done.took.as_millis(),
        done.serial,
        done.key_holder
    );
    println!("client `{admin}` has the admin role");
    if done.update_root_version > 0 {
        println!(
            "update root installed (root version {})",
            done.update_root_version
        );
    } else {
        println!("no update root installed: signed model updates are refused until one is");
    }
    Ok(())
}

async fn connect(conn: &Conn) -> anyhow::Result<AdminSession> {
    let creds = AdminCredentials::from_dir(&conn.admin)?;
    Ok(AdminSession::connect(&conn.appliance, &creds).await?)
}

pub async fn crl_push(site: PathBuf, conn: Conn) -> anyhow::Result<()> {
    let site = Site::open(&site)?;
    let crl = site.crl_der()?;
    let info = site.crl_info()?;
    let mut session = connect(&conn).await?;
    let revoked = session.install_crl(crl.as_ref().to_vec()).await?;
    println!(
        "installed CRL number {} on {} ({revoked} revoked)",
        info.number
            .map_or_else(|| "?".to_owned(), |n| n.to_string()),
        conn.appliance
    );
    Ok(())
}

pub async fn grant(cmd: GrantCmd) -> anyhow::Result<()> {
    match cmd.sub {
        Some(GrantSub::List { conn }) => {
            let mut session = connect(&conn).await?;
            let grants = session.list_grants().await?;
            if grants.is_empty() {
                println!("no grants");
            }
            for g in grants {
                let models = if g.models.is_empty() {
                    "-".to_owned()
                } else {
                    g.models.join(",")
                };
                let rate = if g.rate_per_second == 0.0 {
                    "default".to_owned()
                } else {
                    format!("{}/s", g.rate_per_second)
                };
                let burst = if g.burst == 0 {
                    "default".to_owned()
                } else {
                    g.burst.to_string()
                };
                println!(
                    "{:<24} models={models} admin={} rate={rate} burst={burst} quota={}",
                    g.client,
                    g.admin,
                    Quota::from_wire(g.daily_quota)
                );
            }
            Ok(())
        }
        Some(GrantSub::Delete { conn, client }) => {
            let mut session = connect(&conn).await?;
            if session.delete_grant(&client).await? {
                println!("deleted the grant of {client}");
            } else {
                println!("{client} had no grant");
            }
            Ok(())
        }
        None => {
            let missing = |flag: &str| {
                anyhow::Error::new(Error::InvalidArgument {
                    what: "grant",
                    value: String::new(),
                    reason: format!("{flag} is required (see `provision grant --help`)"),
                })
            };
            let conn = Conn {
                appliance: cmd.appliance.ok_or_else(|| missing("--appliance"))?,
                admin: cmd.admin.ok_or_else(|| missing("--admin"))?,
            };
            let spec = GrantSpec::new(
                cmd.client.ok_or_else(|| missing("--client"))?,
                cmd.models.unwrap_or_default(),
                cmd.admin_role,
                cmd.rate.ok_or_else(|| missing("--rate"))?,
                cmd.burst,
                cmd.quota.ok_or_else(|| missing("--quota"))?,
            )?;
            let mut session = connect(&conn).await?;
            session.put_grant(&spec).await?;
            let models = if spec.models.as_slice().is_empty() {
                "none".to_owned()
            } else {
                spec.models.as_slice().join(",")
            };
            println!(
                "granted {}: models {models}{}, rate {}, burst {}, quota {}",
                spec.client,
                if spec.admin { ", admin" } else { "" },
                spec.rate,
                spec.burst
                    .map_or_else(|| "default".to_owned(), |b| b.to_string()),
                spec.quota
            );
            Ok(())
        }
    }
}

pub async fn audit(cmd: AuditCmd) -> anyhow::Result<()> {
    match cmd {
        AuditCmd::Export { conn, from, out } => {
            let mut session = connect(&conn).await?;
            match out {
                None => {
                    let stdout = std::io::stdout();
                    let mut w = BufWriter::new(stdout.lock());
                    let n =
                        export(&mut session, from, &mut w, Path::new("standard output")).await?;
                    w.flush().context("cannot write to standard output")?;
                    drop(w);
                    eprintln!("exported {n} audit record(s)");
                }
                Some(path) => {
                    let file = OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&path)
                        .with_context(|| {
                            format!("cannot create {} (it must not exist yet)", path.display())
                        })?;
                    let mut w = BufWriter::new(file);
                    let n = export(&mut session, from, &mut w, &path).await;
                    let flushed = w
                        .into_inner()
                        .map_err(|e| e.into_error())
                        .and_then(|f| f.sync_all());
                    let n = n?;
                    flushed.with_context(|| format!("cannot write {}", path.display()))?;
                    println!("exported {n} audit record(s) to {}", path.display());
                }
            }
            Ok(())
        }
    }
}

async fn export(
    session: &mut AdminSession,
    from: u64,
    w: &mut impl Write,
    path: &Path,
) -> anyhow::Result<u64> {
    let mut written = 0u64;
    let result = session
        .export_audit(from, |entry| {
            let io = |source| Error::Io {
                op: "write",
                path: path.to_path_buf(),
                source,
            };
            serde_json::to_writer(&mut *w, &entry).map_err(|e| io(e.into()))?;
            w.write_all(b"\n").map_err(io)?;
            written += 1;
            Ok(())
        })
        .await;
    match result {
        Ok(n) => Ok(n),
        Err(e) => Err(anyhow::Error::new(e)
            .context(format!("audit export stopped after {written} record(s)"))),
    }
}

pub async fn model(cmd: ModelCmd) -> anyhow::Result<()> {
    match cmd {
        ModelCmd::Update {
            conn,
            repo,
            mirror,
            local_dir,
            model,
        } => update(conn, repo, mirror, local_dir, model).await,
        ModelCmd::List { conn } => {
            let mut session = connect(&conn).await?;
            let lines = session.list_model_lines().await?;
            let models = session.list_models().await?;
            if lines.is_empty() && models.is_empty() {
                println!("no models");
                return Ok(());
            }
            if !lines.is_empty() {
                println!(
                    "{:<20} {:<16} {:<16} {:>6}  state",
                    "model line", "active", "previous", "floor"
                );
                let release = |r: u64, v: u64| match r {
                    0 => "-".to_owned(),
                    r => format!("r{r} (v{v})"),
                };
                for l in &lines {
                    println!(
                        "{:<20} {:<16} {:<16} {:>6}  {}",
                        l.name,
                        release(l.active_release, l.active_version),
                        release(l.previous_release, l.previous_version),
                        l.floor,
                        l.state
                    );
                }
            }
            let unsigned: Vec<_> = models
                .iter()
                .filter(|m| !lines.iter().any(|l| l.name == m.name))
                .collect();
            if !unsigned.is_empty() {
                println!("unsigned uploads:");
                for m in unsigned {
                    println!("{:<24} {:>6}  {}", m.name, m.version, m.state);
                }
            }
            Ok(())
        }
        ModelCmd::Remove { conn, name } => {
            let mut session = connect(&conn).await?;
            if session.remove_model_line(&name).await? {
                println!("removed model line {name}; its data key was shredded");
            } else {
                println!("no signed model line {name}");
            }
            Ok(())
        }
        ModelCmd::Rollback { conn, name } => {
            let mut session = connect(&conn).await?;
            let (release, version) = session.rollback_model(&name).await?;
            println!("rolled back {name}: serving release {release} (version {version})");
            Ok(())
        }
        ModelCmd::Load {
            conn,
            name,
            version,
            onnx,
            tokenizer,
        } => {
            let onnx_bytes = read_model_file(&onnx)?;
            if onnx_bytes.is_empty() {
                bail!("{} is empty", onnx.display());
            }
            let tokenizer_bytes = tokenizer.as_deref().map(read_model_file).transpose()?;
            let mut session = connect(&conn).await?;
            let status = session
                .load_model(&name, version, onnx_bytes, tokenizer_bytes)
                .await?;
            println!(
                "model {} version {}: {}",
                status.name, status.version, status.state
            );
            Ok(())
        }
        ModelCmd::Unload {
            conn,
            name,
            version,
        } => {
            let mut session = connect(&conn).await?;
            if session.unload_model(&name, version).await? {
                println!("unloaded model {name} version {version}");
            } else {
                println!("model {name} version {version} was not loaded");
            }
            Ok(())
        }
    }
}

async fn update(
    conn: Conn,
    repo: Option<PathBuf>,
    mirror: Option<String>,
    local_dir: Option<String>,
    models: Vec<provisioning::ModelName>,
) -> anyhow::Result<()> {
    use provisioning::admin::UpdateSource;
    use wire::admin::update_event::Event;
    let source = match (repo, mirror, local_dir) {
        (Some(dir), _, _) => {
            if !dir.join("metadata").is_dir() {
                bail!(
                    "{} is not a repository (no metadata/ directory); see `model-image repo`",
                    dir.display()
                );
            }
            UpdateSource::Push(dir)
        }
        (_, Some(url), _) => UpdateSource::Mirror(url),
        (_, _, Some(dir)) => UpdateSource::LocalDir(dir),
        _ => bail!("give --repo, --mirror or --local-dir"),
    };
    let mut session = connect(&conn).await?;
    let models = models.iter().map(ToString::to_string).collect();
    let result = session
        .update_models(source, models, |event| match event {
            Event::Verified(v) => println!(
                "verified {}: root v{}, timestamp v{}, snapshot v{}, targets v{} ({} target(s)); \
                 {} expires first, at {}",
                v.source,
                v.root_version,
                v.timestamp_version,
                v.snapshot_version,
                v.targets_version,
                v.targets,
                v.expiring_role,
                v.expires
            ),
            Event::Step(s) => println!("  {}: {}", s.model, s.message),
            Event::Outcome(o) => println!("{}", o.message),
            Event::Fetch(_) => {}
        })
        .await;
    let outcomes = match result {
        Ok(o) => o,
        Err(Error::Rpc {
            message,
            code: tonic::Code::FailedPrecondition | tonic::Code::Unavailable,
            ..
        }) => {
            // The appliance's own words: "refused: …; still serving …".
            bail!("{message}");
        }
        Err(e) => return Err(e.into()),
    };
    let refused = outcomes.iter().filter(|o| o.result == "refused").count();
    if refused > 0 {
        bail!("{refused} model line(s) not updated");
    }
    Ok(())
}

fn read_model_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    if len > MAX_MODEL_FILE {
        bail!("{} is larger than 4 GiB", path.display());
    }
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}
