//! Commands that work on the site directory alone.

use std::path::Path;

use anyhow::{Context, bail};
use provisioning::{
    CertificateRequest, IssuedCert, PASSPHRASE_ENV, Passphrase, ServerNames, Site, SubjectKey,
    UnlockedSite, Validity, check_bundle_target,
};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::cli::{ApplianceCmd, ClientCmd, CrlCmd, SiteCmd};

/// The passphrase from `PROVISION_PASSPHRASE`, else from the terminal
/// (asked twice when `confirm`, for a new site).
fn passphrase(confirm: bool) -> anyhow::Result<Passphrase> {
    match std::env::var(PASSPHRASE_ENV) {
        Ok(value) => return Ok(Passphrase::new(value)),
        Err(std::env::VarError::NotUnicode(_)) => {
            bail!("{PASSPHRASE_ENV} is set but is not valid UTF-8")
        }
        Err(std::env::VarError::NotPresent) => {}
    }
    let no_tty = || {
        format!(
            "cannot read the passphrase from the terminal (set {PASSPHRASE_ENV} to pass it from a script)"
        )
    };
    let first = Passphrase::new(
        rpassword::prompt_password(if confirm {
            "New site CA passphrase: "
        } else {
            "Site CA passphrase: "
        })
        .with_context(no_tty)?,
    );
    if confirm {
        first.check_new()?;
        let second = Passphrase::new(
            rpassword::prompt_password("Repeat the passphrase: ").with_context(no_tty)?,
        );
        if first != second {
            bail!("the two passphrases differ; nothing was created");
        }
    }
    Ok(first)
}

pub(crate) fn unlock(dir: &Path) -> anyhow::Result<UnlockedSite> {
    let site = Site::open(dir)?;
    Ok(site.unlock(&passphrase(false)?)?)
}

fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn date(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

pub fn site(cmd: SiteCmd) -> anyhow::Result<()> {
    match cmd {
        SiteCmd::Init { dir, name } => {
            let pass = passphrase(true)?;
            let site = Site::init(&dir, &name, &pass)?;
            println!("created site {name} in {}", dir.display());
            println!("  CA certificate  {}", dir.join("ca.pem").display());
            println!("  SHA-256         {}", fingerprint(site.ca_der().as_ref()));
            println!(
                "  CA key          {} (encrypted; keep the passphrase safe)",
                dir.join("ca.key.enc").display()
            );
            println!("  CRL             {}", dir.join("crl.pem").display());
            Ok(())
        }
        SiteCmd::Show { site } => {
            let site = Site::open(&site)?;
            let issued = site.issued()?;
            let revoked = site.revocations()?;
            let crl = site.crl_info()?;
            println!("site            {}", site.name());
            println!("directory       {}", site.dir().display());
            println!("created         {}", site.created());
            println!("CA SHA-256      {}", fingerprint(site.ca_der().as_ref()));
            println!("issued          {}", issued.len());
            println!("revoked         {}", revoked.len());
            print_crl_dates(&crl);
            Ok(())
        }
    }
}

fn print_crl_dates(crl: &provisioning::CrlInfo) {
    match crl.number {
        Some(n) => println!("CRL number      {n}"),
        None => println!("CRL number      (none)"),
    }
    println!("CRL thisUpdate  {}", date(crl.this_update));
    if let Some(next) = crl.next_update {
        let note = if next < OffsetDateTime::now_utc() {
            "  EXPIRED: run `provision crl update` and push it"
        } else {
            ""
        };
        println!("CRL nextUpdate  {}{note}", date(next));
    }
}

fn report_issued(cert: &IssuedCert, written: &[std::path::PathBuf]) {
    println!(
        "issued {} certificate for {} (serial {})",
        cert.kind(),
        cert.name(),
        cert.serial()
    );
    for path in written {
        println!("  wrote {}", path.display());
    }
    println!("  record {}", cert.record_path().display());
}

pub fn appliance(cmd: ApplianceCmd) -> anyhow::Result<()> {
    match cmd {
        ApplianceCmd::Issue {
            site,
            name,
            dns,
            ip,
            csr,
            generate_key,
            out,
            days,
        } => {
            let names = ServerNames::new(&dns, &ip)?;
            let validity = Validity::days(days)?;
            let key = match csr {
                Some(path) => {
                    let pem = std::fs::read(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    SubjectKey::Csr(CertificateRequest::from_pem(&pem, &path)?)
                }
                None if generate_key => SubjectKey::Generate,
                None => bail!("give --csr FILE or --generate-key"),
            };
            check_bundle_target(&out, matches!(key, SubjectKey::Generate))?;
            let mut site = unlock(&site)?;
            let cert = site.issue_appliance(&name, &names, key, validity)?;
            let written = cert.write_bundle(&out)?;
            report_issued(&cert, &written);
            Ok(())
        }
    }
}

pub fn client(cmd: ClientCmd) -> anyhow::Result<()> {
    match cmd {
        ClientCmd::Issue {
            site,
            name,
            out,
            days,
        } => {
            let validity = Validity::days(days)?;
            check_bundle_target(&out, true)?;
            let mut site = unlock(&site)?;
            let cert = site.issue_client(&name, validity)?;
            let written = cert.write_bundle(&out)?;
            report_issued(&cert, &written);
            Ok(())
        }
        ClientCmd::Revoke { site, name } => {
            let mut site = unlock(&site)?;
            let serials = site.revoke_client(&name)?;
            if serials.is_empty() {
                println!("every certificate of client {name} was revoked already; CRL unchanged");
                return Ok(());
            }
            println!("revoked {} certificate(s) of client {name}:", serials.len());
            for s in &serials {
                println!("  {s}");
            }
            let crl = site.crl_info()?;
            println!(
                "re-signed {} (CRL number {}); install it with `provision crl push`",
                site.dir().join("crl.pem").display(),
                crl.number.map_or_else(|| "?".to_owned(), |n| n.to_string())
            );
            Ok(())
        }
        ClientCmd::List { site } => {
            let site = Site::open(&site)?;
            let revoked = site.revocations()?;
            for r in site.issued()? {
                let state = if revoked.iter().any(|x| x.serial == r.serial) {
                    "revoked"
                } else {
                    "valid"
                };
                println!("{:<10} {:<24} {}  {state}", r.kind, r.name, r.serial);
            }
            Ok(())
        }
    }
}

pub fn crl(cmd: CrlCmd) -> anyhow::Result<()> {
    match cmd {
        CrlCmd::Show { site } => {
            let site = Site::open(&site)?;
            let crl = site.crl_info()?;
            let recorded = site.revocations()?;
            println!("CRL of          {}", crl.issuer);
            print_crl_dates(&crl);
            println!("revoked         {}", crl.revoked.len());
            for (serial, when) in &crl.revoked {
                let who = recorded
                    .iter()
                    .find(|r| &r.serial == serial)
                    .map(|r| format!("{} {}", r.kind, r.name))
                    .unwrap_or_default();
                println!("  {serial}  {}  {who}", date(*when));
            }
            Ok(())
        }
        CrlCmd::Update { site } => {
            let mut site = unlock(&site)?;
            site.sign_crl()?;
            let crl = site.crl_info()?;
            println!(
                "re-signed {} (CRL number {}, {} revoked)",
                site.dir().join("crl.pem").display(),
                crl.number.map_or_else(|| "?".to_owned(), |n| n.to_string()),
                crl.revoked.len()
            );
            print_crl_dates(&crl);
            Ok(())
        }
        CrlCmd::Push { .. } => unreachable_push(),
    }
}

/// `crl push` is online and dispatched in `main`.
fn unreachable_push() -> anyhow::Result<()> {
    bail!("internal: crl push is handled by the online commands")
}
