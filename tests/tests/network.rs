//! G3: the appliance opens no outbound connection. A whole session (models
//! loaded, grants, inference, CRL push, audit export, shutdown) runs under
//! `strace -f`; the only connections the daemon itself makes are to its
//! TPM (here swtpm on loopback, the TCTI from its configuration) and, during
//! an update an operator asked for, to the mirror the operator named (G3).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tests::{Appliance, HttpServer, vendor};

#[test]
fn a_whole_session_opens_no_outbound_connection() {
    let mut app = Appliance::start("");
    app.stop();
    let trace = app.dir.path().join("strace.txt");
    let trace_arg = trace.to_str().unwrap().to_owned();
    app.launch_wrapped(&[
        "strace",
        "-f",
        "-qq",
        "-e",
        "trace=connect,sendto,sendmsg",
        "-o",
        &trace_arg,
    ]);

    app.load_reference_models();
    let certs = app.client("observed-app");
    app.grant("observed-app", "*");
    let report = app.triton(
        &certs,
        &["check", test_support::models_dir().to_str().unwrap()],
    );
    assert_eq!(report["live"], true);
    let site = app.site.dir().to_str().unwrap().to_owned();
    app.provision_ok(&["crl", "push", "--site", &site]);
    app.provision_ok(&["audit", "export"]);
    let mirror = HttpServer::start(&vendor().repo());
    app.provision_ok(&["model", "update", "--mirror", &mirror.url()]);
    app.stop();

    let tcti = app.tpm.tcti();
    let tpm_port: u16 = tcti.rsplit('=').next().unwrap().parse().unwrap();
    let allowed = [tpm_port, tpm_port + 1]
        .map(|p| format!("sin_port=htons({p}), sin_addr=inet_addr(\"127.0.0.1\")"));
    let mirror_address = format!(
        "sin_port=htons({}), sin_addr=inet_addr(\"127.0.0.1\")",
        mirror.port
    );
    let text = std::fs::read_to_string(&trace).unwrap();
    let mut tpm_connects = 0;
    let mut mirror_connects = 0;
    for line in text.lines() {
        if line.contains("connect(") {
            if allowed.iter().any(|a| line.contains(a.as_str())) {
                tpm_connects += 1;
                continue;
            }
            if line.contains(&mirror_address) {
                mirror_connects += 1;
                continue;
            }
            panic!("outbound connection: {line}");
        }
        // A datagram with a destination address would be outbound too.
        assert!(
            !(line.contains("sin_addr") || line.contains("sin6_addr") || line.contains("sun_path")),
            "outbound datagram: {line}"
        );
    }
    assert!(
        tpm_connects > 0,
        "the trace saw no TPM connection; is strace working?\n{text}"
    );
    assert!(
        mirror_connects > 0,
        "the update from the mirror made no connection to it?\n{text}"
    );
}
