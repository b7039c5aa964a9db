//! `provision`: the operator's command-line tool. A thin layer over the
//! `provisioning` library: parse the command line, get the passphrase,
//! call the library, print what happened. Online commands run on a
//! single-threaded tokio runtime built here.
#![forbid(unsafe_code)]

mod cli;
mod offline;
mod online;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, CrlCmd};

/// Exit code for usage errors (BSD `EX_USAGE`).
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version arrive here too, and are not errors.
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            let usage = e
                .downcast_ref::<provisioning::Error>()
                .is_some_and(provisioning::Error::is_usage);
            ExitCode::from(if usage { EXIT_USAGE } else { 1 })
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Site(cmd) => offline::site(cmd),
        Command::Appliance(cmd) => offline::appliance(cmd),
        Command::Device(cmd) => online::run(online::device(cmd)),
        Command::Client(cmd) => offline::client(cmd),
        Command::Crl(CrlCmd::Push { site, conn }) => online::run(online::crl_push(site, conn)),
        Command::Crl(cmd) => offline::crl(cmd),
        Command::Grant(cmd) => online::run(online::grant(cmd)),
        Command::Audit(cmd) => online::run(online::audit(cmd)),
        Command::Model(cmd) => online::run(online::model(cmd)),
    }
}
