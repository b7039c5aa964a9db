//! The appliance says which int8 kernels this CPU gives a quantized model,
//! and says plainly when they are the slow ones (issue 8: an appliance box
//! may have no VNNI, AMX or dot-product instructions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tests::{Appliance, vendor};

#[test]
fn an_int8_model_on_a_cpu_without_int8_instructions_says_so() {
    let mut app = Appliance::start("");
    app.stop();
    // A box without int8 instructions, whatever this one has: tract reads
    // TRACT_CPU_ISA to mask what it probed.
    app.launch_wrapped(&["env", "TRACT_CPU_ISA=-avx512vnni,-avxvnni,-amx-int8"]);
    let out = app.update_from(&vendor().repo(), &["--model", "digits"]);
    assert!(
        out.contains("; int8 on plain kernels (this CPU has no VNNI"),
        "the operator is not told: {out}"
    );
    let log = app.log_text();
    assert!(
        log.contains("int8 matrix products on this CPU: plain kernels"),
        "{log}"
    );
    assert!(
        log.contains("int8 model on a CPU without VNNI, AMX or dot-product instructions")
            && log.contains("digits"),
        "{log}"
    );
}
