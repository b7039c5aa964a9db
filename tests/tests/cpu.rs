//! The appliance says which int8 kernels this CPU gives a quantized model,
//! and says plainly when they are the slow ones (issue 8: an appliance box
//! may have no VNNI, AMX or dot-product instructions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tests::{Appliance, vendor};

/// A box without int8 instructions, whatever this one has: tract reads
/// TRACT_CPU_ISA to mask what it probed.
const NO_INT8_INSTRUCTIONS: [&str; 2] = ["env", "TRACT_CPU_ISA=-avx512vnni,-avxvnni,-amx-int8"];

#[test]
fn an_int8_model_on_a_cpu_without_int8_instructions_says_so() {
    let mut app = Appliance::start("");
    app.stop();
    app.launch_wrapped(&NO_INT8_INSTRUCTIONS);
    // The digits model's three QLinear products run as float products, and
    // the trial line says so.
    let out = app.update_from(&vendor().repo(), &["--model", "digits"]);
    assert!(
        out.contains("; 3 int8 matrix products run as f32 (this CPU has no fast int8 kernels)"),
        "the operator is not told: {out}"
    );
    let log = app.log_text();
    assert!(
        log.contains("int8 matrix products on this CPU: plain kernels"),
        "{log}"
    );
    // And which vector instructions our element-wise passes run on.
    assert!(
        ["avx512", "avx2", "baseline"]
            .iter()
            .any(|level| log.contains(&format!("vector_loops=\"{level}\""))
                || log.contains(&format!("vector_loops={level}"))),
        "{log}"
    );
    assert!(
        log.contains("integer matrix products run as float products") && log.contains("products=3"),
        "{log}"
    );
    assert!(!log.contains("int8 model on a CPU without VNNI"), "{log}");

    // An operator who keeps int8 weights (memory over speed) is warned
    // that they run on the slow path, at the restart that reloads them.
    app.stop();
    app.edit_config(|c| c.replace("[inference]\n", "[inference]\nint8_as_float = false\n"));
    app.launch_wrapped(&NO_INT8_INSTRUCTIONS);
    let log = app.log_text();
    assert!(
        log.contains("int8 model on a CPU without VNNI, AMX or dot-product instructions")
            && log.contains("digits"),
        "{log}"
    );
}
