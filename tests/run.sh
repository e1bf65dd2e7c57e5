#!/usr/bin/env bash
# The test command: system packages, the project venv, lint, then pytest.
#
#   ./tests/run.sh                  everything under tests/
#   ./tests/run.sh tests/unit       one tier (arguments go to pytest as they are)
#   ./tests/run.sh -k keys -x       any pytest options
#
# On a fresh Debian 12 machine it must run as root (it installs Debian packages);
# once they are there it runs as any user.  GDL_SKIP_LINT=1 skips ruff and bandit.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
VENV=${GDL_TEST_VENV:-$REPO/.venv}
APT=(apt-get -o DPkg::Lock::Timeout=600 -y -q)

# What the suite runs for real: the daemons of the servers gdl makes, namespace
# tooling, the venv's build needs, the benchmark client and a browser for UI tests.
PACKAGES=(
    python3-venv python3-dev gcc ca-certificates
    iproute2 util-linux ebtables procps psmisc openssl
    nginx haproxy keepalived iptables
    wrk
    chromium chromium-driver
)

say() { printf 'tests/run.sh [%d s]: %s\n' "$SECONDS" "$*"; }
die() { printf 'tests/run.sh: %s\n' "$*" >&2; exit 1; }

install_packages() {
    local missing=() pkg
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    [[ $(id -u) -eq 0 ]] || die "missing Debian packages: ${missing[*]}: run as root, or apt-get install them"
    say "installing ${missing[*]}"
    # Daemon packages must not start their services on the test machine.
    local policy_made=false status=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        policy_made=true
    fi
    { DEBIAN_FRONTEND=noninteractive "${APT[@]}" update \
        && DEBIAN_FRONTEND=noninteractive "${APT[@]}" install --no-install-recommends "${missing[@]}"; } \
        || status=$?
    [[ $policy_made == true ]] && rm -f /usr/sbin/policy-rc.d
    [[ $status -eq 0 ]] || die "apt-get failed (exit $status)"
}

install_venv() {
    if [[ ! -x $VENV/bin/python ]]; then
        say "making $VENV"
        /usr/bin/python3 -m venv "$VENV"
    fi
    # Reinstall only when what pip reads changed (setup.py, pyproject.toml).
    local stamp=$VENV/.gdl-tests-installed wanted
    wanted=$(cat "$REPO/setup.py" "$REPO/pyproject.toml" | sha256sum | cut -d' ' -f1)
    if [[ -f $stamp && $(<"$stamp") == "$wanted" ]] \
        && "$VENV/bin/python" -c 'import gdl, salt, pytest' 2>/dev/null \
        && [[ -x $VENV/bin/ruff && -x $VENV/bin/bandit ]]; then
        return 0
    fi
    say "installing gdl (editable) with its test, lint and bench extras into $VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -e "$REPO[tests,lint,bench]"
    echo "$wanted" >"$stamp"
}

install_packages
cd "$REPO"

# The OpenStack tests run against a real control plane from Debian's packages;
# installing it is a no-op once done (GDL_RIG=0 skips those tests instead).
if [[ ${GDL_RIG:-1} != 0 ]]; then
    say "OpenStack test rig packages"
    "$REPO/tests/openstack/rig/rig" install
fi

# For the whole suite the rig starts in the background now, while the venv is made
# and the code is linted, and this script stops it when it started it; the tests'
# fixture then only waits for it (GDL_RIG_MANAGED). Its instances take Salt from
# the venv made next. With arguments, a test that needs the rig starts it itself.
if [[ $# -eq 0 && ${GDL_RIG:-1} != 0 ]] && ! "$REPO/tests/openstack/rig/rig" status >/dev/null; then
    say "starting the OpenStack test rig in the background (log: $REPO/.rig-up.log)"
    GDL_RIG_SALT_VENV=$VENV "$REPO/tests/openstack/rig/rig" up >"$REPO/.rig-up.log" 2>&1 &
    export GDL_RIG_MANAGED=1
    trap 'say "stopping the OpenStack test rig"; "$REPO/tests/openstack/rig/rig" down >/dev/null 2>&1 || true' EXIT
fi

install_venv

if [[ ${GDL_SKIP_LINT:-0} != 1 ]]; then
    say "ruff check"
    "$VENV/bin/ruff" check .
    say "ruff format --check"
    "$VENV/bin/ruff" format --check .
    # Medium and high findings fail the run; a false positive carries "# nosec BXXX" with a reason.
    say "bandit (medium and high)"
    "$VENV/bin/bandit" -q -r -ll gdl gdl_harness _runners _modules _clouds _output _engines
fi

started=$SECONDS
status=0
if [[ $# -gt 0 ]]; then
    say "pytest $*"
    "$VENV/bin/python" -m pytest "$@" || status=$?
else
    # The whole suite: test files run on several workers, since most of an integration
    # test is waiting for daemons. The few files marked `long` (many minutes each) run
    # in a session of their own from the start, beside the rest, so that they do not
    # end up running alone at the end. Within each session the slowest files are handed
    # out first (tests/module_seconds.py, refreshed from the two JUnit reports).
    long_log=$REPO/.pytest-long.log
    long_tmp=$(mktemp -d)
    say "pytest -m long (in the background; its report follows the other one)"
    "$VENV/bin/python" -m pytest -m long -n 2 --dist loadfile --no-loadscope-reorder \
        --durations=10 --junitxml="$REPO/.pytest-long.xml" \
        -p no:cacheprovider --basetemp "$long_tmp/t" tests >"$long_log" 2>&1 &
    long_pid=$!
    # The rest runs a little nicer, so that the long files (the OpenStack build among
    # them, with the rig) keep their share of a small machine and still end first.
    say "pytest -m 'not long' (nice 5)"
    nice -n 5 "$VENV/bin/python" -m pytest -m "not long" -n "${GDL_TEST_WORKERS:-3}" \
        --dist loadfile --no-loadscope-reorder --durations=20 \
        --junitxml="$REPO/.pytest-short.xml" tests || status=$?
    long_status=0
    wait "$long_pid" || long_status=$?
    say "pytest -m long exited $long_status:"
    cat "$long_log"
    rm -rf "$long_tmp"
    ((long_status == 0)) || status=$long_status
fi
say "pytest exited $status after $((SECONDS - started)) s"
exit "$status"
