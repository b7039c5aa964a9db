//! `appliance`: the daemon and its local maintenance commands.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use appliance::config::{Backend, Config};
use clap::{Parser, Subcommand};

/// Exit code for a bad configuration or command line (sysexits EX_USAGE).
const EX_USAGE: u8 = 64;

/// glibc's malloc gives each busy thread its own arena and rarely returns
/// their freed pages: under sustained load the daemon's resident size grew
/// with every request served (about 750 bytes each) and never shrank.
/// jemalloc, with its background threads purging unused pages, keeps the
/// footprint flat.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "appliance",
    version = env!("APPLIANCE_VERSION"),
    about = "The on-premises inference appliance: Open Inference Protocol over mutual TLS"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve: open the keystore (the TPM unseals its key), load the
    /// installed models, and listen for mTLS clients until SIGTERM/SIGINT.
    Run {
        /// The configuration file (see appliance.example.toml).
        #[arg(long)]
        config: PathBuf,
        /// Allow keystore.backend = "insecure-software" (development only:
        /// everything at rest is then readable by anyone with the disk).
        #[arg(long)]
        insecure_software_keystore: bool,
    },
    /// The appliance's TLS identity.
    Identity {
        #[command(subcommand)]
        command: IdentityCommand,
    },
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Crypto-shred everything and return to enrollment mode (the daemon
    /// must be stopped).
    #[command(long_about = "Crypto-shred everything on this appliance.\n\n\
        The TPM destroys the store's root key, under which the key-encryption key is sealed and \
        the TLS identity key was made; every record, model and audit entry on the disk, and on \
        any copy of it, becomes unreadable. The store's files and the audit archive are then \
        deleted. The next start is in enrollment mode, with a new identity key; certificates \
        issued to the old identity no longer match it.\n\n\
        Asks you to type `factory reset` on the terminal, unless --confirm is given (scripts). \
        The daemon must be stopped: a running one holds the store, and the command refuses.")]
    FactoryReset {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Do not ask: confirm on the command line (for scripts).
        #[arg(long)]
        confirm: bool,
        /// Allow the insecure software keystore.
        #[arg(long)]
        insecure_software_keystore: bool,
    },
}

/// Commands for packagers only, outside [`Cli`] so that no help text, man
/// page or completion shows them.
#[derive(Parser)]
#[command(name = "appliance")]
enum Packaging {
    /// Write the man pages and shell completions of `appliance` (for
    /// packaging: `scripts/package` runs it before `cargo deb`).
    GenerateAssets {
        /// Directory to write into: `man/` and `completions/` are made in it.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum IdentityCommand {
    /// Create the TLS key inside the keystore and write a certificate
    /// signing request for the site CA (`provision appliance issue --csr`).
    Csr {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
        /// DNS names clients use to reach the appliance.
        #[arg(long)]
        dns: Vec<String>,
        /// IP addresses clients use to reach the appliance.
        #[arg(long)]
        ip: Vec<IpAddr>,
        /// Where to write the CSR (PEM).
        #[arg(long)]
        out: PathBuf,
        /// Allow the insecure software keystore.
        #[arg(long)]
        insecure_software_keystore: bool,
    },
    /// Install the certificate the site CA issued for the CSR, and the site
    /// CA that issues client certificates (and optionally a first CRL); and
    /// the vendor's update root.
    #[command(long_about = "Install the appliance's identity and trust anchors.\n\n\
        --cert and --ca: the certificate the site CA issued for `identity csr`, and the site CA \
        (which issues client certificates). --update-root: the vendor's TUF root.json, the trust \
        anchor of signed model updates; it can be installed once, and afterwards changes only \
        through root rotation inside a signed update.")]
    Install {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
        /// The appliance certificate (PEM).
        #[arg(long, requires = "ca", required_unless_present = "update_root")]
        cert: Option<PathBuf>,
        /// The site CA certificate (PEM).
        #[arg(long, requires = "cert")]
        ca: Option<PathBuf>,
        /// The vendor's root.json (`model-image keys init` writes it).
        #[arg(long, value_name = "FILE")]
        update_root: Option<PathBuf>,
        /// A CRL signed by the site CA (PEM or DER).
        #[arg(long)]
        crl: Option<PathBuf>,
        /// Grant this client (by certificate name) the admin role, so the
        /// operator can manage the appliance from then on.
        #[arg(long, value_name = "CLIENT")]
        admin: Option<String>,
        /// Allow the insecure software keystore.
        #[arg(long)]
        insecure_software_keystore: bool,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the whole hash chain (the daemon must be stopped). Exits 1 and
    /// names the first broken link if anything was changed or removed.
    Verify {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Allow the insecure software keystore.
        #[arg(long)]
        insecure_software_keystore: bool,
    },
}

fn main() -> ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "generate-assets")
    {
        let Packaging::GenerateAssets { out } = Packaging::parse();
        return match generate_assets(&out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("appliance: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    // Whatever starts it (the unit sets UMask=0077 too), nothing the
    // appliance writes (store, audit archive, exports) is readable by
    // other users.
    rustix::process::umask(rustix::fs::Mode::from_bits_truncate(0o077));
    let cli = Cli::parse();
    init_tracing();
    let (config_path, insecure) = match &cli.command {
        Command::Run {
            config,
            insecure_software_keystore,
        }
        | Command::Identity {
            command:
                IdentityCommand::Csr {
                    config,
                    insecure_software_keystore,
                    ..
                },
        }
        | Command::Identity {
            command:
                IdentityCommand::Install {
                    config,
                    insecure_software_keystore,
                    ..
                },
        }
        | Command::Audit {
            command:
                AuditCommand::Verify {
                    config,
                    insecure_software_keystore,
                },
        }
        | Command::FactoryReset {
            config,
            insecure_software_keystore,
            ..
        } => (config.clone(), *insecure_software_keystore),
    };
    let config = match Config::load(&config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("appliance: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    if let Ok(Backend::InsecureSoftware { .. }) = config.backend() {
        if !insecure {
            eprintln!(
                "appliance: {}: keystore.backend = \"insecure-software\" keeps keys in a plain file; \
                 refusing without --insecure-software-keystore",
                config_path.display()
            );
            return ExitCode::from(EX_USAGE);
        }
        tracing::warn!(
            "INSECURE: running with the software keystore; data at rest is not protected"
        );
    }
    let result = match cli.command {
        Command::Run { .. } => serve(config),
        Command::Identity {
            command: IdentityCommand::Csr { dns, ip, out, .. },
        } => csr(&config, &dns, &ip, &out),
        Command::Identity {
            command:
                IdentityCommand::Install {
                    cert,
                    ca,
                    crl,
                    admin,
                    update_root,
                    ..
                },
        } => install(
            &config,
            cert.as_deref().zip(ca.as_deref()),
            crl.as_deref(),
            admin,
            update_root.as_deref(),
        ),
        Command::Audit { .. } => verify(&config),
        Command::FactoryReset { confirm, .. } => {
            if !confirm && !confirmed_on_terminal() {
                eprintln!(
                    "appliance: factory reset not confirmed (type `factory reset` at the prompt, \
                     or pass --confirm)"
                );
                return ExitCode::from(EX_USAGE);
            }
            factory_reset(&config)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("appliance: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Man pages (`man/appliance.1`, `man/appliance-run.1`, … one per visible
/// subcommand, roff as clap_mangen writes it) and shell completions
/// (`completions/appliance.bash`, `_appliance` for zsh, `appliance.fish`)
/// under `out`, all from the clap definitions above, so they always match
/// the binary that wrote them.
fn generate_assets(out: &std::path::Path) -> anyhow::Result<()> {
    use clap::CommandFactory;
    use clap_complete::Shell;
    let man = out.join("man");
    let completions = out.join("completions");
    for dir in [&man, &completions] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // One page per command, named after its path (`appliance-identity-csr`),
    // each footed with the package's name and version.
    fn pages(command: &clap::Command, dir: &std::path::Path) -> std::io::Result<()> {
        for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
            pages(sub, dir)?;
        }
        clap_mangen::Man::new(command.clone())
            .source(format!("appliance {}", env!("CARGO_PKG_VERSION")))
            .manual("Appliance Manual")
            .generate_to(dir)
            .map(drop)
    }
    let mut command = Cli::command().disable_help_subcommand(true);
    command.build();
    pages(&command, &man).with_context(|| format!("writing man pages to {}", man.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut command = Cli::command();
        clap_complete::generate_to(shell, &mut command, "appliance", &completions)
            .with_context(|| format!("writing the {shell} completion"))?;
    }
    println!(
        "man pages in {}, completions in {}",
        man.display(),
        completions.display()
    );
    Ok(())
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("APPLIANCE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,tss_esapi=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn serve(config: Config) -> anyhow::Result<()> {
    // A core dump would hold the unsealed keys and request payloads.
    rlimit::setrlimit(rlimit::Resource::CORE, 0, 0).context("disabling core dumps")?;
    let listen = config.server.listen;
    let store = appliance::open_store(&config).context("opening the keystore")?;
    // An enrolled appliance loads everything before it binds its port; one
    // without an identity binds it for enrollment and loads afterwards.
    let ready = if appliance::identity::is_enrolled(&store)? {
        Some(appliance::start(config.clone(), store.clone())?)
    } else {
        None
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("appliance-io")
        .build()
        .context("starting the runtime")?;
    let writer = runtime.block_on(async move {
        // Handlers first: a SIGTERM that arrives once the address is
        // announced must mean a graceful stop, not the default death.
        let stop = shutdown_signal().context("installing the SIGTERM/SIGINT handlers")?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let address = listener.local_addr()?;
        tracing::info!(%address, "listening (mTLS only)");
        // On stdout for scripts and tests that start the daemon on port 0.
        println!("listening on {address}");
        let systemd = appliance::notify::Notifier::from_env().map(std::sync::Arc::new);
        let serving = std::sync::Arc::new(std::sync::OnceLock::new());
        if let Some(systemd) = &systemd {
            systemd.send(&match &ready {
                Some(_) => format!("READY=1\nSTATUS=serving mTLS on {address}"),
                None => format!(
                    "READY=1\nSTATUS=enrollment mode on {address}: the log shows the fingerprint \
                     and the code"
                ),
            });
            if let Some(every) = appliance::notify::Notifier::watchdog_interval() {
                tokio::spawn(watchdog(systemd.clone(), every, serving.clone()));
            }
        }
        let (state, writer) = match ready {
            Some(ready) => ready,
            None => {
                match appliance::enroll::run(config.clone(), store.clone(), &listener, stop.clone())
                    .await?
                {
                    appliance::enroll::Outcome::Stopped => return anyhow::Ok(None),
                    appliance::enroll::Outcome::Enrolled { site, appliance } => {
                        tracing::info!(%site, %appliance, "leaving enrollment mode");
                        println!("enrolled: appliance `{appliance}` of site `{site}`");
                    }
                }
                let ready = tokio::task::spawn_blocking(move || appliance::start(config, store))
                    .await
                    .context("starting after enrollment")??;
                if let Some(systemd) = &systemd {
                    systemd.send(&format!("STATUS=serving mTLS on {address}"));
                }
                ready
            }
        };
        let _ = serving.set(state.clone());
        let mut stop = stop;
        appliance::run(state, listener, async move {
            let _ = stop.wait_for(|s| *s).await;
            if let Some(systemd) = &systemd {
                systemd.send("STOPPING=1");
            }
        })
        .await;
        anyhow::Ok(Some(writer))
    })?;
    // Work still running on the blocking pool (a request whose connection
    // the grace period closed) must not hold the process.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    if let Some(writer) = writer {
        writer.join();
    }
    Ok(())
}

/// Pings systemd's watchdog while the daemon can serve: its runtime runs
/// this task, and (once operational) its audit log takes records, without
/// which every call is refused. A wedged runtime or a failed audit log
/// stops the pings, and systemd restarts the service.
async fn watchdog(
    systemd: std::sync::Arc<appliance::notify::Notifier>,
    every: std::time::Duration,
    serving: std::sync::Arc<std::sync::OnceLock<std::sync::Arc<appliance::state::AppState>>>,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if serving.get().is_none_or(|state| state.audit.healthy()) {
            systemd.send("WATCHDOG=1");
        }
    }
}

/// Installs the SIGTERM and SIGINT handlers now; the value turns true on
/// the first of either.
fn shutdown_signal() -> std::io::Result<tokio::sync::watch::Receiver<bool>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        let _ = tx.send(true);
    });
    Ok(rx)
}

/// Asks for `factory reset` on the terminal; false without a terminal.
fn confirmed_on_terminal() -> bool {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return false;
    }
    eprint!(
        "This destroys every key, record, model and audit entry of this appliance, for good.\n\
         Type `factory reset` to go on: "
    );
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).is_ok() && line.trim() == "factory reset"
}

fn factory_reset(config: &Config) -> anyhow::Result<()> {
    let backend = appliance::open_backend(config).context("reaching the key backend")?;
    let data = &config.keystore.data_dir;
    let reset = keystore::factory_reset(data, backend)
        .with_context(|| format!("resetting {} (is the daemon stopped?)", data.display()))?;
    if reset.root_destroyed {
        println!(
            "the {} destroyed the store's root key: the identity key and every record, model \
             and audit entry are unreadable, on this disk and on any copy of it",
            match config.backend() {
                Ok(Backend::Tpm { .. }) => "TPM",
                _ => "software backend (its root key file was overwritten and removed)",
            }
        );
    } else if reset.store_found {
        println!("no root key was left to destroy; the store's files were removed");
    } else {
        println!("no store in {}; nothing to destroy", data.display());
    }
    if let Some(archive) = config.audit_retention().archive
        && archive.exists()
    {
        std::fs::remove_dir_all(&archive)
            .with_context(|| format!("removing the audit archive {}", archive.display()))?;
        println!(
            "removed the audit archive {} (plain files: copies of it are not covered)",
            archive.display()
        );
    }
    println!("factory reset done: the next start is in enrollment mode");
    Ok(())
}

fn csr(
    config: &Config,
    dns: &[String],
    ip: &[IpAddr],
    out: &std::path::Path,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !dns.is_empty() || !ip.is_empty(),
        "give at least one --dns or --ip"
    );
    let store = appliance::open_store(config).context("opening the keystore")?;
    let pem = appliance::identity::create_csr(&store, dns, ip)?;
    std::fs::write(out, pem).with_context(|| format!("writing {}", out.display()))?;
    println!(
        "TLS key created in the keystore; CSR written to {}",
        out.display()
    );
    Ok(())
}

fn install(
    config: &Config,
    cert_and_ca: Option<(&std::path::Path, &std::path::Path)>,
    crl: Option<&std::path::Path>,
    admin: Option<String>,
    update_root: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let read =
        |p: &std::path::Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let store = appliance::open_store(config).context("opening the keystore")?;
    if let Some((cert, ca)) = cert_and_ca {
        let checked = appliance::identity::check_install(&store, &read(cert)?, &read(ca)?)?;
        appliance::identity::install(&store, &checked)?;
        println!(
            "identity installed: appliance `{}` of site `{}`",
            checked.appliance_id, checked.site
        );
    }
    if let Some(root) = update_root {
        let version = appliance::updates::install_root(&store, &read(root)?)
            .with_context(|| format!("{}", root.display()))?;
        println!(
            "update root installed: {} (root version {version})",
            root.display()
        );
    }
    if let Some(crl) = crl {
        let identity = appliance::identity::load(&store)?;
        let crl = appliance::identity::parse_crl(&read(crl)?, &identity.client_ca)?;
        appliance::identity::store_crl(&store, &crl)?;
    }
    if let Some(client) = admin {
        let grants = appliance::grants::Grants::load(store.clone(), config.limits.clone())?;
        grants.put(appliance::grants::Grant::admin(&client))?;
        println!("client `{client}` granted the admin role");
    }
    Ok(())
}

fn verify(config: &Config) -> anyhow::Result<()> {
    let store = appliance::open_store(config).context("opening the keystore")?;
    let archive = config.audit_retention().archive;
    match appliance::audit::verify(&store, archive.as_deref()) {
        Ok(v) if v.first == 0 && v.archived == 0 => {
            println!("audit log intact: {} records, hash chain verified", v.end);
            Ok(())
        }
        Ok(v) if v.archived > 0 => {
            println!(
                "audit log intact: records {} to {}, hash chain verified{} ({} archived in {}, \
                 {} kept)",
                v.first,
                v.end.saturating_sub(1),
                if v.first == 0 {
                    " from the first record"
                } else {
                    " from the oldest archived record"
                },
                v.archived,
                archive
                    .as_deref()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default(),
                v.end - v.first - v.archived
            );
            Ok(())
        }
        Ok(v) => {
            println!(
                "audit log intact: records {} to {} ({} kept), hash chain verified from the \
                 retention checkpoint (records before {} were pruned)",
                v.first,
                v.end.saturating_sub(1),
                v.end - v.first,
                v.first
            );
            Ok(())
        }
        Err(broken) => anyhow::bail!("audit log damaged: {broken}"),
    }
}
