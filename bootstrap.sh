#!/usr/bin/env bash
# Turn a Debian 12 / Ubuntu 22.04+ machine into a gdl Salt master, from a checkout:
#
#   sudo ./bootstrap.sh [--provider local|openstack] [--cloud NAME] [--uninstall]
#
# Idempotent: a second run changes nothing and says "no changes".  See
# docs/bootstrap.md for what it writes and how --uninstall undoes it.
set -euo pipefail

PROG=bootstrap.sh
ARGS=("$@")
SOURCE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)

PREFIX=/opt/gdl
VENV=$PREFIX/venv
RECORD=$PREFIX/bootstrap.record          # what this script created, for --uninstall
SOURCE_STAMP=$PREFIX/source.sha256       # the checkout last installed into the venv
MASTER_STAMP=$PREFIX/master.sha256       # the config the running master was started with
SALT_ETC=/etc/salt
GDL_CONF=$SALT_ETC/master.d/gdl.conf
CLOUD_PROVIDERS_CONF=$SALT_ETC/cloud.providers.d/gdl.conf
CLOUD_PROFILES_DIR=$SALT_ETC/cloud.profiles.d
STATE_DIR=/var/lib/gdl
BIN_DIR=/usr/local/bin
UNIT_NAME=gdl-salt-master.service
UNIT_FILE=/etc/systemd/system/$UNIT_NAME
PID_FILE=/var/run/salt-master.pid
# Linked into BIN_DIR: Salt's commands and gdl's own (the console script of setup.py).
LINKED_COMMANDS=(salt salt-run salt-key salt-cloud salt-call salt-master gdl)
SALT_PORTS=(4505 4506)
OS_RELEASE=${GDL_OS_RELEASE:-/etc/os-release}   # overridable so tests can fake another OS
APT=(apt-get -o DPkg::Lock::Timeout=600 -y -q)
PACKAGES=(python3-venv python3-dev gcc iproute2 ebtables iptables nginx haproxy keepalived openssl procps psmisc
          ca-certificates)
# Installed for the servers gdl makes; the master itself must not run them.
SERVER_DAEMONS=(nginx haproxy keepalived)

provider=local
cloud=${OS_CLOUD:-}
master_address=
bridge=
cidr=
image=
network=
external_network=
uninstall=false
force=false
changes=()

usage() {
    cat <<EOF
Usage: sudo ./$PROG [OPTIONS]

Make this machine a gdl Salt master: Debian packages, a venv with Salt and gdl
in $VENV, the master's configuration in $SALT_ETC, and a running salt-master.

Options:
  --provider local|openstack  where servers are made (default: local)
  --cloud NAME                the clouds.yaml entry for openstack (default: \$OS_CLOUD)
  --master-address ADDR       openstack, required: the address the master listens on
                              (and only there) and servers reach it at
  --image NAME                openstack: the image servers boot (cloud-init on it)
  --network NAME              openstack: the network servers share
  --external-network NAME     openstack: where floating IPs come from
  --bridge NAME               local: the local cloud's bridge (default: gdl0)
  --cidr CIDR                 local: its subnet (default: the one in use, or a free /24)
  --uninstall                 stop the master and remove what bootstrap made
                              (Debian packages stay)
  --force                     with --uninstall: even when local servers still exist
  -h, --help                  show this help
EOF
}

say() { printf '%s: %s\n' "$PROG" "$*"; }
die() { printf '%s: %s\n' "$PROG" "$*" >&2; reported=true; exit 1; }
# A failure nobody reported (set -e) must not end the run silently.
reported=false
trap 'status=$?; if [[ $status -ne 0 && $reported == false ]]; then
    printf "%s: stopped by an unexpected failure (exit %s) at: %s\n" "$PROG" "$status" "$BASH_COMMAND" >&2
fi' EXIT
changed() { changes+=("$1"); say "$1"; }
# A value from the command line, fit to quote in a one-line message.
shown() {
    local value=${1//[[:cntrl:]]/?}
    ((${#value} <= 40)) || value="${value:0:37}..."
    printf '%s' "$value"
}

# --- arguments --------------------------------------------------------------------
need_value() { [[ $# -ge 2 && -n $2 && $2 != --* ]] || die "$1 needs a value (see --help)"; }
# The --option=VALUE form: an empty VALUE is a mistake, not the default.
need_eq_value() { [[ -n ${1#*=} ]] || die "${1%%=*} needs a value (see --help)"; }
while [[ $# -gt 0 ]]; do
    case $1 in
        --provider) need_value "$@"; provider=$2; shift 2 ;;
        --provider=*) need_eq_value "$1"; provider=${1#*=}; shift ;;
        --cloud) need_value "$@"; cloud=$2; shift 2 ;;
        --cloud=*) need_eq_value "$1"; cloud=${1#*=}; shift ;;
        --master-address) need_value "$@"; master_address=$2; shift 2 ;;
        --master-address=*) need_eq_value "$1"; master_address=${1#*=}; shift ;;
        --image) need_value "$@"; image=$2; shift 2 ;;
        --image=*) need_eq_value "$1"; image=${1#*=}; shift ;;
        --network) need_value "$@"; network=$2; shift 2 ;;
        --network=*) need_eq_value "$1"; network=${1#*=}; shift ;;
        --external-network) need_value "$@"; external_network=$2; shift 2 ;;
        --external-network=*) need_eq_value "$1"; external_network=${1#*=}; shift ;;
        --bridge) need_value "$@"; bridge=$2; shift 2 ;;
        --bridge=*) need_eq_value "$1"; bridge=${1#*=}; shift ;;
        --cidr) need_value "$@"; cidr=$2; shift 2 ;;
        --cidr=*) need_eq_value "$1"; cidr=${1#*=}; shift ;;
        --uninstall) uninstall=true; shift ;;
        --force) force=true; shift ;;
        -h|--help) usage; exit 0 ;;
        *) printf '%s: unknown option %s (see --help)\n' "$PROG" "$(shown "$1")" >&2; reported=true; exit 2 ;;
    esac
done

case $provider in
    local|openstack) ;;
    *) die "unknown provider '$(shown "$provider")': use --provider local or --provider openstack" ;;
esac
if [[ $uninstall == false && $provider == openstack && -z $cloud ]]; then
    die "--provider openstack needs the cloud to use: pass --cloud NAME (an entry of clouds.yaml) or set OS_CLOUD"
fi
if [[ $provider == local && -n $master_address ]]; then
    die "--master-address is for openstack: the local provider's master listens on its bridge"
fi
if [[ $provider == openstack && ( -n $bridge || -n $cidr ) ]]; then
    die "--bridge and --cidr are for the local provider"
fi
if [[ $provider == local && ( -n $image || -n $network || -n $external_network ) ]]; then
    die "--image, --network and --external-network are for the openstack provider"
fi

# Values end up in the master's configuration, in a systemd unit and on ip(8)'s
# command line: refuse anything but the plain forms, before anything is done.
ipv4_valid() {
    local address=$1 octet
    [[ $address =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$ ]] || return 1
    for octet in "${BASH_REMATCH[@]:1}"; do
        [[ $octet == 0 || $octet != 0* ]] && ((10#$octet <= 255)) || return 1
    done
}
check_cidr() {
    local value=$1 address prefix a b c d host_bits
    [[ $value == */* ]] && address=${value%/*} && prefix=${value##*/} \
        && ipv4_valid "$address" && [[ $prefix =~ ^[0-9]{1,2}$ ]] \
        || die "--cidr '$(shown "$value")' is not an IPv4 subnet: give one like 10.213.7.0/24"
    ((10#$prefix >= 16 && 10#$prefix <= 29)) \
        || die "--cidr '$value' has a /$prefix: give a /16 to /29 (a /24 holds 250 servers)"
    IFS=. read -r a b c d <<<"$address"
    host_bits=$(( ((10#$a << 24) | (10#$b << 16) | (10#$c << 8) | 10#$d) & ((1 << (32 - 10#$prefix)) - 1) ))
    ((host_bits == 0)) || die "--cidr '$value' has host bits set: give the subnet's first address, /$prefix"
}
if [[ -n $bridge ]] && ! [[ $bridge =~ ^[A-Za-z][A-Za-z0-9_-]{0,14}$ ]]; then
    die "--bridge '$(shown "$bridge")' is not an interface name: use a letter, then letters, digits, '_' or '-', 15 at most"
fi
if [[ -n $cidr ]]; then
    check_cidr "$cidr"
fi
if [[ -n $master_address ]]; then
    ipv4_valid "$master_address" \
        || die "--master-address '$(shown "$master_address")' is not an IPv4 address: give the address your servers reach the master at"
    [[ $master_address != 0.0.0.0 ]] \
        || die "--master-address 0.0.0.0 listens on every network: give the address your servers reach the master at"
fi
for option in cloud image network external_network; do
    value=${!option}
    if [[ $value == *[[:cntrl:]]* || $value == *[\'\"\\\`\$]* ]]; then
        die "--${option//_/-} '$(shown "$value")' has quotes, '\\', '\$', backquotes or control characters: give the name as the cloud shows it"
    fi
done
if [[ $uninstall == false && $provider == openstack && -z $master_address ]]; then
    die "--provider openstack needs --master-address ADDR: the address servers reach the master at (it listens there only)"
fi

# --- checks that change nothing ------------------------------------------------------
[[ $(id -u) -eq 0 ]] || die "must run as root: sudo ./$PROG${ARGS[*]:+ ${ARGS[*]}}"

check_os() {
    [[ -r $OS_RELEASE ]] || die "cannot read $OS_RELEASE: supported systems are Debian 12+ and Ubuntu 22.04+"
    local id version
    id=$(. "$OS_RELEASE" && echo "${ID:-}")
    version=$(. "$OS_RELEASE" && echo "${VERSION_ID:-}")
    local minimum
    case $id in
        debian) minimum=12 ;;
        ubuntu) minimum=22.04 ;;
        *) die "unsupported system '${id:-unknown}': gdl's master needs Debian 12+ or Ubuntu 22.04+" ;;
    esac
    if [[ -z $version || $(printf '%s\n%s\n' "$minimum" "$version" | sort -V | head -1) != "$minimum" ]]; then
        die "unsupported $id ${version:-(no version)}: gdl's master needs Debian 12+ or Ubuntu 22.04+"
    fi
}

# PIDs of the master this script runs (systemd unit or PID file), one a line.
our_master_pids() {
    local pid pgid
    if [[ -d /run/systemd/system ]] && systemctl is-active --quiet "$UNIT_NAME" 2>/dev/null; then
        local cgroup
        cgroup=$(systemctl show -p ControlGroup --value "$UNIT_NAME")
        cat "/sys/fs/cgroup$cgroup/cgroup.procs" 2>/dev/null \
            || systemctl show -p MainPID --value "$UNIT_NAME"
        return
    fi
    [[ -s $PID_FILE ]] || return 0
    pid=$(<"$PID_FILE")
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    # Only a salt-master of our venv counts: a stale PID file may name anything.
    tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q "$VENV/bin/salt-master" || return 0
    pgid=$(ps -o pgid= -p "$pid" | tr -d ' ' || true)
    echo "$pid"
    if [[ -n $pgid ]]; then ps -e -o pid=,pgid= | awk -v g="$pgid" '$2 == g {print $1}'; fi
}

# Refuse when another program holds the Salt ports on the address the master needs.
check_ports() {
    local address=$1 port line pid ours
    ours=$(our_master_pids | sort -u)
    for port in "${SALT_PORTS[@]}"; do
        while read -r line; do
            [[ -n $line ]] || continue
            local local_address=${line%:*}
            if [[ $address != 0.0.0.0 && $local_address != "$address" && $local_address != 0.0.0.0 \
                  && $local_address != '*' && $local_address != '[::]' ]]; then
                continue
            fi
            pid=$(ss -Htlnp "sport = :$port" | grep -F "$line " | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
            if [[ -z $pid ]] || ! grep -qx "$pid" <<<"$ours"; then
                die "port $port on $line is in use by $(ps -o comm= -p "${pid:-0}" 2>/dev/null || echo 'another program'): stop it, or run gdl's master on another machine"
            fi
        done < <(ss -Htln "sport = :$port" | awk '{print $4}')
    done
}

# --- helpers that change things, each saying what it did ------------------------------
record() { mkdir -p "$PREFIX"; grep -qxF "$1" "$RECORD" 2>/dev/null || echo "$1" >>"$RECORD"; }

# write_file PATH MODE < content: replace PATH only when the content differs.
write_file() {
    local path=$1 mode=$2 tmp
    tmp=$(mktemp)
    cat >"$tmp"
    if [[ -f $path ]] && cmp -s "$tmp" "$path"; then
        rm -f "$tmp"
        return 0
    fi
    mkdir -p "$(dirname "$path")"
    install -m "$mode" "$tmp" "$path"
    rm -f "$tmp"
    changed "wrote $path"
}

ensure_dir() {
    local dir=$1
    [[ -d $dir ]] && return 0
    mkdir -p "$dir"
    record "dir $dir"
    changed "made $dir"
}

ensure_symlink() {
    local target=$1 link=$2
    if [[ -L $link && $(readlink "$link") == "$target" ]]; then
        return 0
    fi
    if [[ -e $link || -L $link ]] && ! [[ -L $link && $(readlink "$link") == "$VENV"/* ]]; then
        say "warning: $link exists and is not gdl's; left as it is"
        return 0
    fi
    ln -sfn "$target" "$link"
    changed "linked $link -> $target"
}

install_packages() {
    local missing=() pkg
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    say "installing Debian packages: ${missing[*]}"
    # Keep daemons from starting while they are installed, unless a policy already does.
    local policy_made=false
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        policy_made=true
    fi
    local status=0
    { DEBIAN_FRONTEND=noninteractive "${APT[@]}" update \
        && DEBIAN_FRONTEND=noninteractive "${APT[@]}" install --no-install-recommends "${missing[@]}"; } \
        || status=$?
    [[ $policy_made == true ]] && rm -f /usr/sbin/policy-rc.d
    [[ $status -eq 0 ]] || die "apt-get failed (exit $status): see the messages above"
    changed "installed ${missing[*]}"
    # The servers run these daemons, not the master: keep them off here.
    if [[ -d /run/systemd/system ]]; then
        for pkg in "${SERVER_DAEMONS[@]}"; do
            if printf '%s\n' "${missing[@]}" | grep -qx "$pkg"; then
                systemctl disable --now "$pkg" >/dev/null 2>&1 || true
            fi
        done
    fi
}

source_hash() {
    local paths=() path
    # The package and the Salt module dirs (_runners, _modules, ...) it carries.
    for path in setup.py pyproject.toml README.md gdl gdl_harness "$SOURCE_DIR"/_*/; do
        path=${path#"$SOURCE_DIR"/}
        path=${path%/}
        [[ -e $SOURCE_DIR/$path ]] && paths+=("$path")
    done
    (cd "$SOURCE_DIR" && find "${paths[@]}" -type f ! -name '*.pyc' ! -path '*/__pycache__/*' \
        -print0 | sort -z | xargs -0 -r sha256sum) | sha256sum | cut -d' ' -f1
}

install_venv() {
    if [[ -x $VENV/bin/python ]] && ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
        say "the venv in $VENV is broken: making it again"
        rm -rf "$VENV"
    fi
    if [[ ! -x $VENV/bin/python ]]; then
        mkdir -p "$PREFIX"
        /usr/bin/python3 -m venv "$VENV"
        changed "made the venv $VENV"
    fi
    local wanted
    wanted=$(source_hash)
    if [[ -f $SOURCE_STAMP && $(<"$SOURCE_STAMP") == "$wanted" ]] \
        && "$VENV/bin/python" -c 'import gdl, salt' 2>/dev/null; then
        return 0
    fi
    say "installing gdl and Salt into $VENV (a few minutes the first time)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "$SOURCE_DIR"
    echo "$wanted" >"$SOURCE_STAMP"
    changed "installed gdl from $SOURCE_DIR into $VENV"
}

bridge_address() {
    { ip -4 -o addr show dev "$bridge" 2>/dev/null || true; } | awk '{print $4; exit}'
}

local_module_available() {
    "$VENV/bin/python" -c 'import gdl.providers.local.__main__' 2>/dev/null
}

# Sets interface, the address the master listens on; for the local provider, makes the bridge.
prepare_network() {
    if [[ $provider == openstack ]]; then
        # Required by the option checks: the master never listens on every network.
        interface=$master_address
        return
    fi
    if ! local_module_available; then
        say "the local provider is not installed: the master listens on 127.0.0.1 only"
        interface=127.0.0.1
        return
    fi
    local had_address out
    had_address=$(bridge_address)
    if [[ -z $cidr ]]; then
        if [[ -n $had_address ]]; then
            cidr=$("$VENV/bin/python" -c 'import ipaddress, sys; print(ipaddress.ip_interface(sys.argv[1]).network)' "$had_address")
        else
            cidr=$("$VENV/bin/python" -m gdl.providers.local choose-cidr) \
                || die "no free subnet for the local cloud: pass --cidr CIDR"
        fi
    fi
    out=$("$VENV/bin/python" -m gdl.providers.local ensure-network --bridge "$bridge" --cidr "$cidr") \
        || die "could not make the local cloud's bridge $bridge ($cidr)"
    interface=${out#* }
    interface=${interface%/*}
    if [[ -z $had_address ]]; then
        record "bridge $bridge"
        changed "made the bridge $bridge with $interface"
    fi
}

write_config() {
    local interface=$1
    ensure_dir "$SALT_ETC"
    ensure_dir "$STATE_DIR"
    ensure_dir "$STATE_DIR/pillar"
    if [[ ! -e $SALT_ETC/master ]]; then
        write_file "$SALT_ETC/master" 0644 <<EOF
# Salt master configuration.  gdl's settings are in master.d/gdl.conf (bootstrap.sh).
EOF
        record "file $SALT_ETC/master"
    fi
    local provider_settings
    if [[ $provider == local ]]; then
        provider_settings="  local:
    bridge: $bridge${cidr:+
    cidr: $cidr}"
    else
        provider_settings="  openstack:
    cloud: $cloud${image:+
    image: $image}${network:+
    network: $network}${external_network:+
    external_network: $external_network}"
        [[ $interface != 0.0.0.0 ]] && provider_settings+="
    master_address: $interface"
    fi
    write_file "$GDL_CONF" 0644 <<EOF
# gdl's master settings, written by $SOURCE_DIR/bootstrap.sh: re-run it to change them.
interface: $interface
user: root
auto_accept: False
open_mode: False
# Salt's loader stops looking for a function at the modules named after it, instead of
# importing all of them (a second of CPU per orchestration step with onlyif/unless).
lazy_loader_strict_matching: True
# What minions fetch, and nothing else of the checkout: the roles and top.sls,
# the orchestration (states/orch) and gdl_lb (states/_modules), then the
# release archives the runner builds.
file_roots:
  base:
    - $SOURCE_DIR/states
    - $STATE_DIR/files
pillar_roots:
  base:
    - $SOURCE_DIR/pillar
    - $STATE_DIR/pillar
# Python caches beside gdl_lb are not files to serve.
file_ignore_regex:
  - '(^|/)\.(git|venv|tox|pytest_cache|ruff_cache)(/|$)'
  - '(^|/)(__pycache__|build|dist|[^/]*\.egg-info)(/|$)'
# The servers' package source: Salt's wheels over HTTP on gdl:package_port (4507), read-only,
# started and stopped with the master (_engines/gdl_package_source.py).
engines:
  - gdl_package_source: {}
gdl:
  provider: $provider
  state_dir: $STATE_DIR
  source_dir: $SOURCE_DIR
$provider_settings
EOF
    if [[ $provider == local ]]; then
        write_file "$CLOUD_PROVIDERS_CONF" 0644 <<EOF
# salt-cloud providers for gdl, written by bootstrap.sh.
gdl-local:
  driver: gdl_local
EOF
    else
        write_file "$CLOUD_PROVIDERS_CONF" 0600 <<EOF
# salt-cloud providers for gdl, written by bootstrap.sh.  Credentials stay in clouds.yaml.
gdl-openstack:
  driver: gdl_openstack
  cloud: $cloud
EOF
    fi
    ensure_dir "$CLOUD_PROFILES_DIR"
    local profile
    for profile in "$SOURCE_DIR"/cloud.profiles.d/*.conf; do
        [[ -e $profile ]] || continue
        ensure_symlink "$profile" "$CLOUD_PROFILES_DIR/gdl-$(basename "$profile")"
    done
    # Profiles of a checkout file that no longer exists.
    for profile in "$CLOUD_PROFILES_DIR"/gdl-*.conf; do
        if [[ -L $profile && ! -e $profile ]]; then
            rm -f "$profile"
            changed "removed the stale profile link $profile"
        fi
    done
}

# --- the master -----------------------------------------------------------------------
master_fingerprint() {
    local file
    for file in "$SALT_ETC/master" "$SALT_ETC"/master.d/*.conf "$SOURCE_STAMP" "$UNIT_FILE"; do
        if [[ -f $file ]]; then cat "$file"; fi
    done | sha256sum | cut -d' ' -f1
}

master_running() { [[ -n $(our_master_pids) ]]; }

wait_for_port() {
    local address=$1 port=$2 i
    [[ $address == 0.0.0.0 ]] && address=127.0.0.1
    for ((i = 0; i < 600; i++)); do
        if (exec 3<>"/dev/tcp/$address/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}

stop_master() {
    if [[ -d /run/systemd/system && -f $UNIT_FILE ]]; then
        systemctl stop "$UNIT_NAME"
        return
    fi
    local pids pid i
    pids=$(our_master_pids | sort -u)
    [[ -n $pids ]] || return 0
    pid=$(<"$PID_FILE")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do
        # Exited processes may linger as zombies until their parent reaps them.
        ps -o stat= -p "$(paste -sd, <<<"$pids")" 2>/dev/null | grep -qv '^Z' || break
        sleep 0.1
    done
    # Whatever of it outlived the grace period.
    for pid in $pids; do
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -f "$PID_FILE"
}

write_unit() {
    local pre=
    if [[ $provider == local ]] && local_module_available; then
        # The bridge does not survive a reboot; the master cannot bind without it.
        pre="ExecStartPre=$VENV/bin/python -m gdl.providers.local ensure-network --bridge $bridge --cidr $cidr"
    fi
    write_file "$UNIT_FILE" 0644 <<EOF
[Unit]
Description=Salt master for gdl
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
${pre}
ExecStart=$VENV/bin/salt-master -c $SALT_ETC
LimitNOFILE=100000
Restart=on-failure

[Install]
WantedBy=multi-user.target
EOF
}

start_master() {
    local address=$1 fingerprint
    if [[ -d /run/systemd/system ]]; then
        write_unit
        if [[ " ${changes[*]} " == *" wrote $UNIT_FILE "* ]]; then
            systemctl daemon-reload
        fi
        systemctl is-enabled --quiet "$UNIT_NAME" 2>/dev/null || {
            systemctl enable --quiet "$UNIT_NAME"
            changed "enabled $UNIT_NAME"
        }
    fi
    fingerprint=$(master_fingerprint)
    if master_running && [[ -f $MASTER_STAMP && $(<"$MASTER_STAMP") == "$fingerprint" ]]; then
        return 0
    fi
    if master_running; then
        stop_master
        changed "stopped the master to apply the new configuration"
    fi
    if [[ -d /run/systemd/system ]]; then
        systemctl start "$UNIT_NAME"
    else
        mkdir -p /var/log/salt
        "$VENV/bin/salt-master" -c "$SALT_ETC" -d
    fi
    echo "$fingerprint" >"$MASTER_STAMP"
    local port
    for port in "${SALT_PORTS[@]}"; do
        wait_for_port "$address" "$port" \
            || die "the master does not answer on $address:$port: see /var/log/salt/master"
    done
    changed "started the master on $address"
}

check_master() {
    "$VENV/bin/salt-run" -c "$SALT_ETC" saltutil.sync_all >/dev/null 2>&1 \
        || say "warning: salt-run saltutil.sync_all failed"
    local out
    out=$("$VENV/bin/salt-run" -c "$SALT_ETC" --out=json test.arg 1 2>/dev/null) \
        || die "the master does not run runners (salt-run test.arg 1 failed): see /var/log/salt/master"
    grep -q '"args"' <<<"$out" || die "unexpected answer from salt-run test.arg 1: $out"
}

# --- uninstall --------------------------------------------------------------------------
recorded() { [[ -f $RECORD ]] && grep -qxF "$1" "$RECORD"; }

uninstall() {
    local bridge_made
    bridge_made=$(awk '$1 == "bridge" {print $2}' "$RECORD" 2>/dev/null || true)
    if [[ -n $bridge_made && $force == false && -x $VENV/bin/python ]]; then
        local hosts
        hosts=$("$VENV/bin/python" -m gdl.providers.local list --bridge "$bridge_made" 2>/dev/null || true)
        if [[ -n $hosts ]]; then
            die "local servers still exist ($(awk '{print $1}' <<<"$hosts" | tr '\n' ' ')): destroy them with salt-run gdl.destroy first, or pass --force"
        fi
    fi
    if master_running; then
        stop_master
        changed "stopped the master"
    fi
    if [[ -f $UNIT_FILE ]]; then
        if [[ -d /run/systemd/system ]]; then
            systemctl disable --now --quiet "$UNIT_NAME" 2>/dev/null || true
        fi
        rm -f "$UNIT_FILE"
        [[ -d /run/systemd/system ]] && systemctl daemon-reload
        changed "removed $UNIT_FILE"
    fi
    local name link
    for name in "${LINKED_COMMANDS[@]}"; do
        link=$BIN_DIR/$name
        if [[ -L $link && $(readlink "$link") == "$VENV"/* ]]; then
            rm -f "$link"
            changed "removed $link"
        fi
    done
    for link in "$CLOUD_PROFILES_DIR"/gdl-*.conf; do
        if [[ -L $link ]]; then
            rm -f "$link"
            changed "removed $link"
        fi
    done
    local file
    for file in "$GDL_CONF" "$CLOUD_PROVIDERS_CONF"; do
        if [[ -e $file ]]; then
            rm -f "$file"
            changed "removed $file"
        fi
    done
    if recorded "file $SALT_ETC/master" && [[ -f $SALT_ETC/master ]] \
        && grep -q 'bootstrap.sh' "$SALT_ETC/master" && [[ $(wc -l <"$SALT_ETC/master") -eq 1 ]]; then
        rm -f "$SALT_ETC/master"
        changed "removed $SALT_ETC/master"
    fi
    if [[ -n $bridge_made && -x $VENV/bin/python ]] && ip link show dev "$bridge_made" >/dev/null 2>&1; then
        "$VENV/bin/python" -m gdl.providers.local remove-network --bridge "$bridge_made" \
            && changed "removed the bridge $bridge_made"
    fi
    if [[ -d $STATE_DIR ]]; then
        say "removing $STATE_DIR (environment pillar and local cloud state)"
        rm -rf "$STATE_DIR"
        changed "removed $STATE_DIR"
    fi
    # Salt's own directories, when bootstrap made /etc/salt: the master's keys, cache, logs.
    if recorded "dir $SALT_ETC"; then
        local dir
        for dir in "$SALT_ETC" /var/cache/salt /var/log/salt /var/run/salt; do
            if [[ -e $dir ]]; then
                rm -rf "$dir"
                changed "removed $dir"
            fi
        done
    fi
    if [[ -d $PREFIX ]]; then
        rm -rf "$PREFIX"
        changed "removed $PREFIX"
    fi
    if [[ ${#changes[@]} -eq 0 ]]; then
        say "nothing to remove"
    else
        say "uninstalled (Debian packages were left installed)"
    fi
}

# --- main -------------------------------------------------------------------------------
if [[ $uninstall == true ]]; then
    uninstall
    exit 0
fi

check_os
if [[ $provider == local ]]; then
    bridge=${bridge:-gdl0}
    # Keep the subnet a previous run chose, unless told otherwise.
    if [[ -z $cidr && -f $GDL_CONF ]]; then
        cidr=$(awk '$1 == "cidr:" {print $2; exit}' "$GDL_CONF")
    fi
fi
# The address the master will need; empty when it is a new bridge's (only listeners on
# all addresses can be in its way then).
if [[ $provider == openstack ]]; then
    check_ports "${master_address:-0.0.0.0}"
elif [[ -n $(bridge_address) ]]; then
    address=$(bridge_address)
    check_ports "${address%/*}"
else
    check_ports ""
fi

if [[ ! -e $SALT_ETC ]]; then
    mkdir -p "$PREFIX"
    record "dir $SALT_ETC"
fi
install_packages
install_venv
for name in "${LINKED_COMMANDS[@]}"; do
    ensure_symlink "$VENV/bin/$name" "$BIN_DIR/$name"
done
prepare_network
write_config "$interface"
start_master "$interface"
check_master

if [[ ${#changes[@]} -eq 0 ]]; then
    say "no changes: the gdl master is running on $interface"
else
    say "done: the gdl master is running on $interface (${#changes[@]} changes)"
    say "try: salt-run gdl.build app=hello_world env=dev servers=2"
fi
