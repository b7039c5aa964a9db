# Sourced by the scripts in scripts/: shared setup. Not meant to be run.

# Repository root, whatever the caller's working directory.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export ROOT

# Debian packages the build and the tests need: the TPM stack (swtpm, the
# TSS libraries tss-esapi links against, tpm2-tools for independent checks),
# openssl (the crypto benchmark's baseline), strace (the no-outbound test) and
# faketime (the TUF client's expiry tests run under it, as the TUF conformance
# suite does), systemd (systemd-analyze checks the packaged unit), curl (the
# REST tests type what a user types), libb64-0d (perf_analyzer links it),
# dpkg-dev (cargo deb computes the package's dependencies with
# dpkg-shlibdeps) and man-db (the package test renders the man pages).
SYSTEM_PACKAGES=(swtpm swtpm-tools tpm2-tools libtss2-dev pkg-config openssl strace faketime systemd
    curl libb64-0d dpkg-dev man-db)

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Installs whichever of SYSTEM_PACKAGES is missing; does nothing (and needs
# no network) when all are present.
ensure_system_packages() {
    local missing=()
    for pkg in "${SYSTEM_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing Debian packages: ${missing[*]}"
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The reference models and the cross-checks need Python 3.11+ with venv.
ensure_python() {
    if ! python3 -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        SYSTEM_PACKAGES=(python3 python3-venv)
        ensure_system_packages
    fi
}

ensure_rust() {
    command -v cargo >/dev/null || {
        echo "cargo is not installed: install Rust from https://rustup.rs first" >&2
        exit 1
    }
}

# Two consecutive free loopback ports (swtpm wants its control port next to
# its command port); prints the first. Below Linux's ephemeral range (32768
# and up), so no outgoing connection takes them meanwhile.
free_port_pair() {
    local p
    for _ in $(seq 1 200); do
        p=$(( (RANDOM % 6383) * 2 + 20000 ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null \
            && ! (exec 3<>"/dev/tcp/127.0.0.1/$((p + 1))") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    echo "no free port pair found" >&2
    return 1
}

# Stops the appliance (SIGTERM: it finishes requests and flushes) and swtpm
# of a demo directory, if they run.
stop_demo() {
    local dir="$1" pid
    if [ -f "$dir/appliance.pid" ]; then
        pid=$(cat "$dir/appliance.pid")
        if kill "$pid" 2>/dev/null; then
            for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
        rm -f "$dir/appliance.pid"
    fi
    if [ -f "$dir/swtpm.pid" ]; then
        kill "$(cat "$dir/swtpm.pid")" 2>/dev/null || true
        rm -f "$dir/swtpm.pid"
    fi
}

# cargo-deny, pinned, installed once into ~/.cargo/bin (about 3 minutes).
CARGO_DENY_VERSION=0.20.2
ensure_cargo_deny() {
    if ! cargo deny --version 2>/dev/null | grep -q " $CARGO_DENY_VERSION\$"; then
        say "installing cargo-deny $CARGO_DENY_VERSION (once)"
        cargo install --locked --quiet cargo-deny --version "$CARGO_DENY_VERSION"
    fi
}

# cargo-deb, pinned, installed once into ~/.cargo/bin (about a minute on 2
# cores): scripts/package and the package test (tests/tests/package.rs) use it.
CARGO_DEB_VERSION=3.8.0
ensure_cargo_deb() {
    if ! cargo deb --version 2>/dev/null | grep -q " $CARGO_DEB_VERSION\$"; then
        say "installing cargo-deb $CARGO_DEB_VERSION (once)"
        cargo install --locked --quiet cargo-deb --version "$CARGO_DEB_VERSION"
    fi
}

# Checks Cargo.lock: RustSec advisories, licences, bans, sources (deny.toml).
# The advisory database is the offline snapshot in ../shared/rustsec when it
# exists (these machines cannot fetch it), else cargo-deny fetches it.
check_supply_chain() {
    ensure_cargo_deny
    local bundle="$ROOT/../shared/rustsec/advisory-db.bundle"
    # cargo-deny looks for the database under this name (its default URL's).
    local db="$ROOT/target/advisory-db/advisory-db-3157b0e258782691"
    cargo fetch --locked --quiet
    if [ -f "$bundle" ]; then
        if [ ! -d "$db" ] || [ "$bundle" -nt "$db" ]; then
            rm -rf "$db"
            git -c advice.defaultBranchName=false clone --quiet "$bundle" "$db"
        fi
        cargo deny --offline --log-level error check
    else
        cargo deny --log-level error check
    fi
}

# perf_analyzer, Triton's load generator, for the statistics extension's
# test: the binary tritonclient 2.51.0 ships (the newest whose binary runs
# on Debian 12's glibc 2.36; the perf-analyzer wheels need 2.38, and pip
# quietly installs a placeholder instead) and the CUDA runtime library it
# links (loaded, never used: no GPU is needed). Both from PyPI, pinned by
# hash, into target/tools/perf_analyzer (about 30 MB, once).
PERF_ANALYZER_DIR="$ROOT/target/tools/perf_analyzer"
ensure_perf_analyzer() {
    [ -x "$PERF_ANALYZER_DIR/perf_analyzer" ] && [ -f "$PERF_ANALYZER_DIR/lib/libcudart.so.12" ] && return 0
    say "installing perf_analyzer (tritonclient 2.51.0's binary; once)"
    local tmp
    tmp="$(mktemp -d)"
    cat > "$tmp/requirements.txt" <<'REQ'
tritonclient==2.51.0 --hash=sha256:c485bb0123bdf310f90bc8b03d3489b28df2ffed55b30c7eee0b795b48113d52
nvidia-cuda-runtime-cu12==12.9.79 --hash=sha256:25bba2dfb01d48a9b59ca474a1ac43c6ebf7011f1b0b8cc44f54eb6ac48a96c3
REQ
    "$ROOT/target/venv/bin/pip" download --quiet --no-deps --only-binary=:all: \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
        --require-hashes -r "$tmp/requirements.txt" -d "$tmp"
    mkdir -p "$tmp/x" "$PERF_ANALYZER_DIR/lib"
    "$ROOT/target/venv/bin/python" -m zipfile -e "$tmp"/tritonclient-2.51.0-*.whl "$tmp/x"
    "$ROOT/target/venv/bin/python" -m zipfile -e "$tmp"/nvidia_cuda_runtime_cu12-*.whl "$tmp/x"
    install -m 0755 "$tmp/x/tritonclient-2.51.0.data/data/bin/perf_analyzer" "$PERF_ANALYZER_DIR/"
    install -m 0644 "$tmp/x/nvidia/cuda_runtime/lib/libcudart.so.12" "$PERF_ANALYZER_DIR/lib/"
    rm -rf "$tmp"
}
