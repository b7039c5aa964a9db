//! G3: the appliance opens no outbound connection. A whole session (models
//! loaded, grants, inference, CRL push, audit export, shutdown) runs under
//! `strace -f`; the only connections the daemon itself makes are to its
//! TPM (here swtpm on loopback, the TCTI from its configuration).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tests::Appliance;

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
    app.stop();

    let tcti = app.tpm.tcti();
    let tpm_port: u16 = tcti.rsplit('=').next().unwrap().parse().unwrap();
    let allowed = [tpm_port, tpm_port + 1]
        .map(|p| format!("sin_port=htons({p}), sin_addr=inet_addr(\"127.0.0.1\")"));
    let text = std::fs::read_to_string(&trace).unwrap();
    let mut tpm_connects = 0;
    for line in text.lines() {
        if line.contains("connect(") {
            if allowed.iter().any(|a| line.contains(a.as_str())) {
                tpm_connects += 1;
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
}
