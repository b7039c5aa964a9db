//! What this CPU gives tract for integer matrix products.
//!
//! tract picks its int8 matrix kernels at run time from the CPU's features:
//! AMX, AVX-512 VNNI, AVX-VNNI (or Arm's dot product) multiply-accumulate
//! int8 in one instruction; without them it falls back to plain kernels
//! that measured tens of times slower (int8 MiniLM: 4.4 s against 54 ms
//! with VNNI and AMX masked through `TRACT_CPU_ISA`). An appliance box may
//! lack all of them, so the load says so rather than leave an operator to
//! wonder why the quantized model is the slow one.

use std::fmt;

use tract_linalg::isa::{Isa, IsaSet};

/// The family of int8 matrix kernels tract will use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Int8Kernels {
    /// Intel AMX tiles.
    Amx,
    /// AVX-512 VNNI.
    Avx512Vnni,
    /// AVX-VNNI (256-bit).
    AvxVnni,
    /// Arm's SDOT/UDOT.
    DotProduct,
    /// None of the above: plain SIMD, the slow path.
    Plain,
}

impl Int8Kernels {
    /// The family for a set of CPU features.
    pub fn of(set: IsaSet) -> Int8Kernels {
        let has = |isa: Isa| set.iter().any(|i| i == isa);
        if has(Isa::X86_64AmxInt8) {
            Int8Kernels::Amx
        } else if has(Isa::X86_64Avx512Vnni) {
            Int8Kernels::Avx512Vnni
        } else if has(Isa::X86_64AvxVnni) {
            Int8Kernels::AvxVnni
        } else if has(Isa::Aarch64DotProd) {
            Int8Kernels::DotProduct
        } else {
            Int8Kernels::Plain
        }
    }

    /// This machine's family (`TRACT_CPU_ISA` applied, as tract does;
    /// AMX masked, see [`mask_faulty_kernels`]).
    pub fn native() -> Int8Kernels {
        mask_faulty_kernels();
        Int8Kernels::of(tract_linalg::isa::native())
    }

    /// Whether int8 runs on instructions made for it.
    pub fn is_fast(self) -> bool {
        self != Int8Kernels::Plain
    }

    /// A short name, for logs and reports.
    pub fn name(self) -> &'static str {
        match self {
            Int8Kernels::Amx => "amx-int8",
            Int8Kernels::Avx512Vnni => "avx512-vnni",
            Int8Kernels::AvxVnni => "avx-vnni",
            Int8Kernels::DotProduct => "arm-dotprod",
            Int8Kernels::Plain => "plain",
        }
    }
}

/// Takes tract's AMX kernels out of its pool, once per process, before
/// tract first asks what this CPU has (it asks once and keeps the answer).
///
/// tract 0.23.9's AMX int8 matrix kernel reads past the end of its packed
/// operands: on a Sapphire Rapids box the appliance died of SIGSEGV inside
/// `avx512amx_mmm_i32_8x8` on about half the runs of a 1 MiB digits request
/// (tests/tests/abuse.rs), whenever the over-read crossed into an unmapped
/// page. Such a CPU also has AVX-512 VNNI, whose kernels give the same
/// integer sums, so int8 stays on fast kernels. (AMX bf16 is masked too: the
/// same tiles, and lossy besides.) This is a process-wide setting below the
/// environment: an operator who sets `TRACT_CPU_ISA` decides alone.
pub(crate) fn mask_faulty_kernels() {
    static MASKED: std::sync::Once = std::sync::Once::new();
    MASKED.call_once(|| {
        if cfg!(target_arch = "x86_64") {
            // Cannot fail: the name is tract's and nothing else sets it.
            let _ = tract_onnx::tract_core::knobs::set_config_global(
                "TRACT_CPU_ISA",
                "-amx-int8,-amx-bf16",
            );
        }
    });
}

impl fmt::Display for Int8Kernels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Int8Kernels::Plain => f.write_str(
                "plain kernels (this CPU has no VNNI, AMX or dot-product instructions: int8 \
                 matrix products run on tract's slow path, often slower than the float model)",
            ),
            other => write!(f, "{} kernels", other.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_linalg::isa::Arch;

    #[test]
    fn the_best_int8_instructions_win() {
        let x86 = IsaSet::of_arch(Arch::X86_64)
            .with(Isa::X86_64Avx2)
            .with(Isa::X86_64Fma);
        assert_eq!(Int8Kernels::of(x86), Int8Kernels::Plain);
        assert!(!Int8Kernels::of(x86).is_fast());
        assert_eq!(
            Int8Kernels::of(x86.with(Isa::X86_64AvxVnni)),
            Int8Kernels::AvxVnni
        );
        let server = x86
            .with(Isa::X86_64Avx512f)
            .with(Isa::X86_64Avx512Vnni)
            .with(Isa::X86_64AmxInt8);
        assert_eq!(Int8Kernels::of(server), Int8Kernels::Amx);
        assert_eq!(
            Int8Kernels::of(server.without(Isa::X86_64AmxInt8)),
            Int8Kernels::Avx512Vnni
        );
        let arm = IsaSet::of_arch(Arch::Aarch64).with(Isa::Aarch64DotProd);
        assert_eq!(Int8Kernels::of(arm), Int8Kernels::DotProduct);
    }

    #[test]
    fn tracts_amx_kernels_are_never_picked() {
        // Unless the environment says otherwise (tests/tests/cpu.rs masks
        // through it; nothing here adds AMX back).
        let forced = std::env::var("TRACT_CPU_ISA").unwrap_or_default();
        if forced.contains("+amx") {
            return;
        }
        let _ = Int8Kernels::native();
        let set = tract_linalg::isa::native();
        assert!(!set.iter().any(|i| i == Isa::X86_64AmxInt8), "{set:?}");
        assert!(!set.iter().any(|i| i == Isa::X86_64AmxBf16), "{set:?}");
        assert_ne!(Int8Kernels::native(), Int8Kernels::Amx);
    }
}
