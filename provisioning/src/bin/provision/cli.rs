//! The command line: every command, its flags and its `--help` text.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use provisioning::admin::ApplianceAddress;
use provisioning::grant::{ModelList, Quota, Rate};
use provisioning::{ApplianceId, ClientName, ModelName, SiteName};

const PASSPHRASE_HELP: &str = "\
Passphrase: commands that use the CA key read the passphrase from the
environment variable PROVISION_PASSPHRASE when it is set (for scripts),
and otherwise ask for it on the terminal (twice at `site init`).";

const SITE_INIT_HELP: &str = "\
Passphrase: read from PROVISION_PASSPHRASE when it is set, otherwise asked
twice on the terminal.

Site directory layout (directories 0700):
  site.toml      site name, creation time, CRL number, CRL lifetime (crl_days)
  ca.pem         the site CA certificate (ECDSA P-256, 10 years)
  ca.key.enc     the CA private key, encrypted under the passphrase (0600;
                 PBKDF2-HMAC-SHA256, 600,000 iterations, AES-256-GCM)
  crl.pem        the current certificate revocation list, signed by the CA
  revoked.toml   every revocation (serial, kind, name, time)
  issued/        a copy of every certificate issued:
                 <kind>-<name>-<serial hex>.pem";

const APPLIANCE_HELP: &str =
    "The appliance's mTLS port, HOST:PORT (IPv6 as [ADDR]:PORT); HOST is the TLS server name";

const ONLINE_HELP: &str = "\
Connection: mutual TLS 1.3 to --appliance HOST:PORT. The admin directory
(--admin) holds ca.pem (trusted root for the appliance's certificate),
cert.pem and key.pem (an admin client certificate, as `provision client
issue` writes it; key.pem must be mode 0600). HOST is the TLS server name
and must be in the appliance certificate (a DNS name or an IP address).
Errors from the appliance are printed with their gRPC code and message.";

/// The operator's tool for an appliance site.
#[derive(Parser, Debug)]
#[command(
    name = "provision",
    version = env!("APPLIANCE_VERSION"),
    about = "The operator's tool for an appliance site: site CA, certificates, CRLs, grants, models, audit",
    long_about = "The operator's tool for an appliance site.\n\n\
        Offline commands (site, appliance issue, client, crl show/update) work on a site \
        directory holding the site CA. Online commands (crl push, grant, audit, model) talk to \
        an appliance's admin service over mutual TLS 1.3 with an admin client certificate.\n\n\
        Exit codes: 0 success, 1 failure, 64 usage error (bad flag or value).",
    after_long_help = PASSPHRASE_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create or inspect a site: the directory holding the site CA.
    #[command(subcommand)]
    Site(SiteCmd),
    /// Enroll an appliance over the network (its first start).
    #[command(subcommand)]
    Device(DeviceCmd),
    /// Issue an appliance's TLS server certificate (offline, from a CSR file).
    #[command(subcommand)]
    Appliance(ApplianceCmd),
    /// Issue, list and revoke client certificates.
    #[command(subcommand)]
    Client(ClientCmd),
    /// Show, re-sign or push the site's certificate revocation list.
    #[command(subcommand)]
    Crl(CrlCmd),
    /// Grant a client access on an appliance (online); or list/delete grants.
    #[command(
        long_about = "Create or replace a client's grant on the appliance (PutGrant): which models \
            it may call, whether it may use the admin service, its sustained rate and burst, and its \
            daily quota. `grant list` and `grant delete` show and remove grants.\n\n\
            Examples:\n  \
            provision grant --appliance box:8443 --admin ./admin --client billing \\\n      \
            --models digits,minilm --rate 50/s --quota 100000/day\n  \
            provision grant --appliance box:8443 --admin ./admin --client ops --admin-role \\\n      \
            --rate 5/s --quota unlimited\n\n\
            Reads: <admin>/ca.pem, cert.pem, key.pem."
    )]
    Grant(GrantCmd),
    /// Export the appliance's audit log (online).
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Signed model updates, rollback, listing; raw uploads (online).
    #[command(subcommand)]
    Model(ModelCmd),
}

#[derive(Subcommand, Debug)]
pub enum SiteCmd {
    /// Create a new site: an ECDSA P-256 site CA and an empty CRL.
    #[command(
        long_about = "Create a new site in --dir: a self-signed ECDSA P-256 CA named \
            \"<name> site CA\" (CA, keyCertSign + cRLSign, valid 10 years), its private key \
            encrypted under a passphrase you choose (at least 8 characters), an empty signed \
            CRL, and the bookkeeping files. --dir must not exist or be empty; an existing site \
            is never overwritten.\n\n\
            Writes: <dir>/site.toml, ca.pem, ca.key.enc (0600), crl.pem, revoked.toml, issued/.",
        after_long_help = SITE_INIT_HELP
    )]
    Init {
        /// The new site directory (created 0700).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The site name: the SPIFFE trust domain of every identity it issues
        /// (a-z, 0-9, '.', '_', '-'), e.g. acme.example.
        #[arg(long, value_name = "SITE-NAME")]
        name: SiteName,
    },
    /// Show a site: name, CA fingerprint, CRL state, counts. No passphrase.
    #[command(
        long_about = "Show a site's name, creation time, CA certificate fingerprint, current CRL \
            number and dates, and how many certificates it issued and revoked.\n\n\
            Reads: <site>/site.toml, ca.pem, crl.pem, revoked.toml, issued/. Needs no passphrase."
    )]
    Show {
        /// The site directory.
        #[arg(long, value_name = "DIR")]
        site: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum DeviceCmd {
    /// Enroll an appliance in enrollment mode: pin its fingerprint, spend its
    /// code, certify its TPM key, install the site's trust on it.
    #[command(
        long_about = "Enroll an appliance that is in enrollment mode (its first start, or after \
            `appliance factory-reset`). Its console and log show the SHA-256 fingerprint of the \
            certificate it serves and a one-time enrollment code.\n\n\
            This command connects over TLS 1.3 to --address, refuses any certificate but the one \
            with --fingerprint (trust on first use: read the fingerprint off the appliance \
            itself, not off the network), sends --code, receives a certificate signing request \
            for the identity key the appliance made inside its TPM, signs it with the site CA \
            (URI SAN spiffe://<site>/appliance/<name>, the --dns and --ip names, serverAuth), \
            and installs on the appliance: that certificate, the site CA (for client \
            certificates), the current CRL, the vendor's update root (--update-root) and an \
            admin grant for --admin. The appliance then serves operationally on the same port.\n\n\
            The code is single use and expires (15 minutes unless configured); after 5 wrong \
            attempts the appliance replaces it and shows the new one.\n\n\
            Reads: <site>/site.toml, ca.pem, ca.key.enc (needs the passphrase), crl.pem.\n\
            Writes: a copy of the certificate in <site>/issued/.",
        after_long_help = PASSPHRASE_HELP
    )]
    Enroll {
        /// The site directory.
        #[arg(long, value_name = "DIR")]
        site: PathBuf,
        /// The appliance's address, HOST:PORT (IPv6 as [ADDR]:PORT).
        #[arg(long, value_name = "HOST:PORT")]
        address: ApplianceAddress,
        /// The fingerprint the appliance shows (SHA256:AB:CD:… or hex).
        #[arg(long, value_name = "FINGERPRINT")]
        fingerprint: provisioning::enroll::Fingerprint,
        /// The enrollment code the appliance shows (dashes optional).
        #[arg(long, value_name = "CODE")]
        code: String,
        /// The appliance id (a-z, 0-9, '.', '_', '-'; at most 63).
        #[arg(long, value_name = "ID")]
        name: ApplianceId,
        /// A DNS name clients use to reach the appliance (repeatable; with no
        /// --dns and no --ip, the host of --address).
        #[arg(long, value_name = "NAME")]
        dns: Vec<String>,
        /// An IP address clients use to reach the appliance (repeatable).
        #[arg(long, value_name = "ADDR")]
        ip: Vec<IpAddr>,
        /// The client (by certificate name) to grant the admin role.
        #[arg(long, value_name = "CLIENT")]
        admin: ClientName,
        /// The vendor's TUF root.json: the trust anchor of signed model updates.
        #[arg(long, value_name = "FILE")]
        update_root: Option<PathBuf>,
        /// Validity of the appliance certificate in days from now.
        #[arg(long, value_name = "N", default_value_t = 365)]
        days: u32,
    },
}

#[derive(Subcommand, Debug)]
pub enum ApplianceCmd {
    /// Issue an appliance's server certificate (serverAuth).
    #[command(
        long_about = "Issue an appliance's TLS server certificate, signed by the site CA: URI SAN \
            spiffe://<site-name>/appliance/<id>, the --dns and --ip SANs, CN = id, extended key \
            usage serverAuth only.\n\n\
            With --csr, the CSR's self-signature is verified and only its public key is \
            certified (the subject and names it requests are ignored; the flags decide). With \
            --generate-key, a fresh P-256 key is made here and written to <out>/key.pem (0600).\n\n\
            Reads: <site>/site.toml, ca.pem, ca.key.enc (needs the passphrase), the CSR file.\n\
            Writes: <out>/cert.pem, <out>/ca.pem [, <out>/key.pem]; a copy in \
            <site>/issued/appliance-<id>-<serial>.pem. Existing files in <out> are never overwritten.",
        after_long_help = PASSPHRASE_HELP
    )]
    Issue {
        /// The site directory.
        #[arg(long, value_name = "DIR")]
        site: PathBuf,
        /// The appliance id (a-z, 0-9, '.', '_', '-'; at most 63).
        #[arg(long, value_name = "ID")]
        name: ApplianceId,
        /// A DNS name clients use to reach the appliance (repeatable).
        #[arg(long, value_name = "NAME")]
        dns: Vec<String>,
        /// An IP address clients use to reach the appliance (repeatable).
        #[arg(long, value_name = "ADDR")]
        ip: Vec<IpAddr>,
        /// Certify the key of this PEM certificate signing request.
        #[arg(
            long,
            value_name = "FILE.pem",
            conflicts_with = "generate_key",
            required_unless_present = "generate_key"
        )]
        csr: Option<PathBuf>,
        #[arg(long, help = "Generate the key here and write it to <out>/key.pem")]
        generate_key: bool,
        /// Output directory (created 0700 if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Validity in days from now.
        #[arg(long, value_name = "N", default_value_t = 365)]
        days: u32,
    },
}

#[derive(Subcommand, Debug)]
pub enum ClientCmd {
    /// Issue a client certificate and key (clientAuth).
    #[command(
        long_about = "Issue a client certificate with a freshly generated P-256 key, signed by the \
            site CA: URI SAN spiffe://<site-name>/client/<name>, CN = name, extended key usage \
            clientAuth only. What the client may call is decided by its grant on the appliance \
            (`provision grant`), not by the certificate.\n\n\
            Reads: <site>/site.toml, ca.pem, ca.key.enc (needs the passphrase).\n\
            Writes exactly <out>/ca.pem, <out>/cert.pem and <out>/key.pem (0600): the three files \
            the stock Triton client takes as root_certificates, certificate_chain and \
            private_key. A copy of the certificate goes to \
            <site>/issued/client-<name>-<serial>.pem. Existing files in <out> are never overwritten.",
        after_long_help = PASSPHRASE_HELP
    )]
    Issue {
        /// The site directory.
        #[arg(long, value_name = "DIR")]
        site: PathBuf,
        #[arg(
            long,
            value_name = "NAME",
            help = "The client name: [a-z0-9][a-z0-9._-]{0,62}"
        )]
        name: ClientName,
        /// Output directory (created 0700 if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Validity in days from now.
        #[arg(long, value_name = "N", default_value_t = 365)]
        days: u32,
    },
    /// Revoke every certificate of a client and re-sign the CRL.
    #[command(
        long_about = "Revoke every not-yet-revoked certificate issued to the client (found in \
            <site>/issued/ and checked against its content), record the revocations in \
            <site>/revoked.toml, and re-sign <site>/crl.pem with the next CRL number, thisUpdate \
            now and nextUpdate 30 days later. The appliance learns of it when the new CRL is \
            pushed: `provision crl push`.\n\n\
            Reads: <site>/site.toml, ca.pem, ca.key.enc (needs the passphrase), issued/.\n\
            Writes: <site>/revoked.toml, crl.pem, site.toml.",
        after_long_help = PASSPHRASE_HELP
    )]
    Revoke {
        /// The site directory.
        #[arg(long, value_name = "DIR")]
        site: PathBuf,
        /// The client name.
        #[arg(long, value_name = "NAME")]
        name: ClientName,
    },
    /// List the certificates the site issued, with their revocation state.
    #[command(
        long_about = "List every certificate in <site>/issued/ (kind, name, serial) and whether it \
            is revoked.\n\nReads: <site>/issued/, revoked.toml. Needs no passphrase."
    )]
    List {
        /// The site directory.
        #[arg(long, value_name = "DIR")]
        site: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum CrlCmd {
    /// Print the current CRL: number, dates and revoked serials.
    #[command(
        long_about = "Parse <site>/crl.pem and print its issuer, CRL number, thisUpdate, \
            nextUpdate and revoked serials (with the client or appliance each belonged to, from \
            revoked.toml).\n\nReads: <site>/crl.pem, revoked.toml. Needs no passphrase."
    )]
    Show {
        /// The site directory.
        #[arg(long, value_name = "DIR")]
        site: PathBuf,
    },
    /// Re-sign the CRL with a fresh nextUpdate (run before it expires).
    #[command(
        long_about = "Re-sign <site>/crl.pem from <site>/revoked.toml with the next CRL number, \
            thisUpdate now and nextUpdate crl_days (30 by default) later. Run it (and push the \
            result) before the current CRL's nextUpdate.\n\n\
            Reads: <site>/site.toml, ca.pem, ca.key.enc (needs the passphrase), revoked.toml.\n\
            Writes: <site>/crl.pem, site.toml.",
        after_long_help = PASSPHRASE_HELP
    )]
    Update {
        /// The site directory.
        #[arg(long, value_name = "DIR")]
        site: PathBuf,
    },
    /// Install the site's current CRL on an appliance (online).
    #[command(
        long_about = "Send <site>/crl.pem to the appliance (InstallCrl). It takes effect for new \
            connections and for every later request on existing ones.\n\n\
            Reads: <site>/crl.pem, <admin>/ca.pem, cert.pem, key.pem. Needs no passphrase.",
        after_long_help = ONLINE_HELP
    )]
    Push {
        /// The site directory.
        #[arg(long, value_name = "DIR")]
        site: PathBuf,
        #[command(flatten)]
        conn: Conn,
    },
}

/// How to reach the appliance's admin service.
#[derive(Args, Debug, Clone)]
pub struct Conn {
    #[arg(long, value_name = "HOST:PORT", help = APPLIANCE_HELP)]
    pub appliance: ApplianceAddress,
    /// Directory with the admin identity: ca.pem, cert.pem, key.pem.
    #[arg(long, value_name = "DIR")]
    pub admin: PathBuf,
}

#[derive(Args, Debug)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_long_help = ONLINE_HELP
)]
pub struct GrantCmd {
    #[command(subcommand)]
    pub sub: Option<GrantSub>,
    // The PutGrant form's flags. They are `Option`s because `grant list`
    // and `grant delete` leave them out; without a subcommand clap requires
    // the `required` ones.
    #[arg(long, value_name = "HOST:PORT", required = true, help = APPLIANCE_HELP)]
    pub appliance: Option<ApplianceAddress>,
    /// Directory with the admin identity: ca.pem, cert.pem, key.pem.
    #[arg(long, value_name = "DIR", required = true)]
    pub admin: Option<PathBuf>,
    /// The client name the grant is for.
    #[arg(long, value_name = "NAME", required = true)]
    pub client: Option<ClientName>,
    /// Comma-separated model names, or * for all. Leave out for none.
    #[arg(long, value_name = "M1,M2")]
    pub models: Option<ModelList>,
    /// Also allow the admin service.
    #[arg(long)]
    pub admin_role: bool,
    /// Sustained rate: 50/s, 0.5/s, 120/min or 600/h.
    #[arg(long, value_name = "RATE", required = true)]
    pub rate: Option<Rate>,
    /// Burst size (requests). Leave out for the appliance's default.
    #[arg(long, value_name = "N")]
    pub burst: Option<u32>,
    /// Daily quota: 100000/day, or unlimited.
    #[arg(long, value_name = "QUOTA", required = true)]
    pub quota: Option<Quota>,
}

#[derive(Subcommand, Debug)]
pub enum GrantSub {
    /// List every grant on the appliance.
    #[command(
        long_about = "List every grant on the appliance (ListGrants).\n\n\
            Reads: <admin>/ca.pem, cert.pem, key.pem.",
        after_long_help = ONLINE_HELP
    )]
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Remove a client's grant; the client is then denied everything.
    #[command(
        long_about = "Remove a client's grant (DeleteGrant). The client's certificate stays valid \
            but every call it makes is denied.\n\n\
            Reads: <admin>/ca.pem, cert.pem, key.pem.",
        after_long_help = ONLINE_HELP
    )]
    Delete {
        #[command(flatten)]
        conn: Conn,
        /// The client name.
        #[arg(long, value_name = "NAME")]
        client: ClientName,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// Export audit records as JSON lines, one record per line.
    #[command(
        long_about = "Stream the appliance's audit records (ExportAudit) from sequence --from on, \
            and write each as one JSON object per line: sequence, time, client, rpc, model, \
            version, outcome, bytes_in, bytes_out, latency_us, chain_hash.\n\n\
            Reads: <admin>/ca.pem, cert.pem, key.pem.\n\
            Writes: --out FILE (created 0600, never overwritten), or standard output.",
        after_long_help = ONLINE_HELP
    )]
    Export {
        #[command(flatten)]
        conn: Conn,
        /// First sequence number to export.
        #[arg(long, value_name = "N", default_value_t = 0)]
        from: u64,
        /// Output file (default: standard output).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ModelCmd {
    /// Install signed model images from a TUF repository: push one from
    /// here, or have the appliance read a LAN mirror or a local directory.
    #[command(
        long_about = "Install signed model images (UpdateModels). The appliance verifies the \
            repository against the vendor's root (signatures, thresholds, versions, expiry), \
            stages each model line's newest image in a new slot while re-encrypting it, runs its \
            golden vectors and budgets, switches traffic to it atomically and commits; any \
            failure rolls back by itself and the old release keeps serving.\n\n\
            Sources (one of):\n  \
            --repo DIR       a repository here (`model-image repo`), pushed over the admin \
            connection; the appliance asks for each file piece by piece\n  \
            --mirror URL     an http:// mirror on the LAN the appliance reads itself (its only \
            outbound connection)\n  \
            --local-dir DIR  a repository in a directory on the appliance (USB media)\n\n\
            Prints what was verified, each line's trial, and its outcome, e.g. \"installed \
            digits release 7 (version 3)\" or \"refused: timestamp expired at ...; still serving \
            digits release 6\". Exit status 1 if the repository or any line was refused.\n\n\
            Reads: <admin>/ca.pem, cert.pem, key.pem; with --repo, the files under DIR/metadata/ \
            and DIR/targets/ that the appliance asks for.",
        after_long_help = ONLINE_HELP,
        group = clap::ArgGroup::new("source").required(true).args(["repo", "mirror", "local_dir"])
    )]
    Update {
        #[command(flatten)]
        conn: Conn,
        /// A repository directory to push.
        #[arg(long, value_name = "DIR")]
        repo: Option<PathBuf>,
        /// An http:// mirror the appliance reads.
        #[arg(long, value_name = "URL")]
        mirror: Option<String>,
        /// A repository directory on the appliance.
        #[arg(long, value_name = "DIR")]
        local_dir: Option<String>,
        /// Update only these model lines (repeat or comma-separate); by
        /// default every line the repository holds.
        #[arg(long, value_name = "NAME", value_delimiter = ',')]
        model: Vec<ModelName>,
    },
    /// List model lines (signed) and loaded models, with their state.
    #[command(
        long_about = "List the appliance's models (ListModelLines, ListModels): for each signed \
            model line its active and previous release, state (verifying, staging, trial, \
            serving, rolled back with the reason) and release floor; then every loaded model \
            version and its readiness.\n\n\
            Reads: <admin>/ca.pem, cert.pem, key.pem.",
        after_long_help = ONLINE_HELP
    )]
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Switch a signed model line back to its previous release.
    #[command(
        long_about = "Switch a signed model line back to the release it served before the last \
            install (RollbackModel), after that release passes its golden vectors again. Never \
            below the release floor declared by the newer image; the image rolled back from is \
            not installed again. Audited.\n\n\
            Reads: <admin>/ca.pem, cert.pem, key.pem.",
        after_long_help = ONLINE_HELP
    )]
    Rollback {
        #[command(flatten)]
        conn: Conn,
        /// The model line.
        name: ModelName,
    },
    /// Remove a signed model line and crypto-shred its data key.
    #[command(
        long_about = "Remove a signed model line (RemoveModelLine): it stops serving (requests \
            in flight finish), its images are deleted, and its data key is destroyed, so no \
            copy of the appliance's disk can decrypt them afterwards. Audited. The line's release \
            floor and rejected images are kept: a later `model update` installs it again only \
            from a release at or above that floor.\n\n\
            Reads: <admin>/ca.pem, cert.pem, key.pem.",
        after_long_help = ONLINE_HELP
    )]
    Remove {
        #[command(flatten)]
        conn: Conn,
        /// The model line.
        name: ModelName,
    },
    /// Upload a raw ONNX model, unsigned (development appliances only).
    #[command(
        long_about = "Upload a raw, unsigned model to the appliance (LoadModel): a header with \
            the name and version, then the ONNX file in 256 KiB chunks, then the tokenizer file. \
            Refused unless the appliance runs with `[models] allow_unsigned = true`, a \
            development setting: production models arrive as signed images (`model update`).\n\n\
            Reads: the --onnx and --tokenizer files, <admin>/ca.pem, cert.pem, key.pem.",
        after_long_help = ONLINE_HELP
    )]
    Load {
        #[command(flatten)]
        conn: Conn,
        /// Model name.
        #[arg(long, value_name = "NAME")]
        name: ModelName,
        /// Model version.
        #[arg(long, value_name = "V")]
        version: u64,
        /// The ONNX file.
        #[arg(long, value_name = "FILE")]
        onnx: PathBuf,
        /// The model's tokenizer.json (text models).
        #[arg(long, value_name = "FILE")]
        tokenizer: Option<PathBuf>,
    },
    /// Unload one unsigned model version.
    #[command(
        long_about = "Unload one model version (UnloadModel).\n\n\
            Reads: <admin>/ca.pem, cert.pem, key.pem.",
        after_long_help = ONLINE_HELP
    )]
    Unload {
        #[command(flatten)]
        conn: Conn,
        /// Model name.
        #[arg(long, value_name = "NAME")]
        name: ModelName,
        /// Model version.
        #[arg(long, value_name = "V")]
        version: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
