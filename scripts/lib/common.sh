# Sourced by the scripts in scripts/: shared setup. Not meant to be run.

# Repository root, whatever the caller's working directory.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export ROOT

# Debian packages the build and the tests need: the TPM stack (swtpm, the
# TSS libraries tss-esapi links against, tpm2-tools for independent checks).
SYSTEM_PACKAGES=(swtpm swtpm-tools tpm2-tools libtss2-dev pkg-config openssl)

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
