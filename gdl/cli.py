"""``gdl``: the command line, over the same runner ``salt-run gdl.*`` calls.

    gdl build blog dev 2 m1.small            # salt-run gdl.build app=blog env=dev ...
    gdl build blog dev 2 m1.small --destroy  # salt-run gdl.destroy app=blog env=dev
    gdl status blog dev
    gdl list

Each command runs the runner function in this process through Salt's
``RunnerClient`` with the master's configuration, as ``salt-run`` does: the
arguments go in as ``salt-run`` would pass them, the runner checks them, and
its progress events print as the lines ``salt-run`` shows.  A request the
runner refuses, and a build that fails, print the runner's one line on stderr
and exit 1; a finished command prints a summary, the URL first.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Sequence
from typing import Any

import yaml

DEFAULT_CONFIG_DIR = "/etc/salt"


def parser() -> argparse.ArgumentParser:
    """The ``gdl`` command line: one subcommand per runner function."""
    top = argparse.ArgumentParser(
        prog="gdl",
        description="Highly available web apps, provisioned the Salt way "
        "(the gdl runner, as salt-run gdl.* runs it).",
    )
    _config_option(top, DEFAULT_CONFIG_DIR)
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    build = commands.add_parser(
        "build",
        help="build or converge an environment (or remove it with --destroy)",
        description="Build or converge an environment: NUM_SERVERS app servers of "
        "SERVER_SIZE behind a VRRP pair of load balancers; prints the URL.",
    )
    _config_option(build)
    _target(build)
    build.add_argument("num_servers", help="number of app servers, 1 to 50")
    build.add_argument("server_size", help="the provider's size (flavor), e.g. m1.small")
    build.add_argument("--provider", help="local or openstack (default: the master's)")
    build.add_argument("--vrrp", help="the VRRP timing profile: default or fast")
    build.add_argument("--tls", help="HTTPS at the VIP: auto (the master's CA) or off")
    build.add_argument("--tls-cert", help="HTTPS with this PEM certificate on the master")
    build.add_argument("--tls-key", help="... and this PEM private key")
    build.add_argument("--http", help="port 80 with HTTPS: redirect (301) or allow")
    # The load balancers' tuning (gdl.tuning), passed through for the runner to check.
    build.add_argument("--health-interval", metavar="SECONDS", help="app health check every ...")
    build.add_argument("--health-fall", metavar="N", help="failed checks before a server is out")
    build.add_argument("--health-rise", metavar="N", help="passed checks before it is back")
    build.add_argument("--sticky", metavar="true|false", help="a cookie keeps a client on a server")
    build.add_argument(
        "--timeout-server", metavar="SECONDS", help="wait for an app server's answer"
    )
    build.add_argument("--test", action="store_true", help="print the plan, change nothing")
    build.add_argument(
        "--destroy",
        action="store_true",
        help="remove the environment instead (NUM_SERVERS and SERVER_SIZE are not used)",
    )

    destroy = commands.add_parser(
        "destroy",
        help="remove everything an environment owns",
        description="Remove everything an environment owns: servers, VRRP pair, VIP, "
        "network parts, minion keys, pillar and records.",
    )
    _config_option(destroy)
    _target(destroy)
    destroy.add_argument("--provider", help="local or openstack (default: the environment's)")
    destroy.add_argument("--test", action="store_true", help="say what would go, remove nothing")

    status = commands.add_parser(
        "status",
        help="show an environment's servers, VIP holder and backends",
        description="Show an environment: its servers, which load balancer holds "
        "the VIP, each backend's health in haproxy, and the URL.",
    )
    _config_option(status)
    _target(status)

    _config_option(
        commands.add_parser(
            "list",
            help="list the environments that exist",
            description="List the environments found at the providers.",
        )
    )
    return top


def _config_option(command: argparse.ArgumentParser, default: str = argparse.SUPPRESS) -> None:
    # Taken before the command and after it (the later one wins); only the top has a default.
    command.add_argument(
        "-c",
        "--config-dir",
        default=default,
        help=f"the Salt master's configuration directory (default: {DEFAULT_CONFIG_DIR})",
    )


def _target(command: argparse.ArgumentParser) -> None:
    command.add_argument("app", help="an app under apps/ (blog, hello_world)")
    command.add_argument("environment", help="the environment's name, e.g. dev")


def runner_call(args: argparse.Namespace) -> tuple[str, list[str]]:
    """The runner function and its ``NAME=VALUE`` arguments, as salt-run takes them."""
    if args.command == "list":
        return "gdl.list", []
    call = [f"app={args.app}", f"env={args.environment}"]
    if args.command == "status":
        return "gdl.status", call
    if args.provider:
        call.append(f"provider={args.provider}")
    if args.test:
        call.append("test=True")
    if args.command == "destroy" or args.destroy:
        return "gdl.destroy", call
    call += [f"servers={args.num_servers}", f"size={args.server_size}"]
    if args.vrrp:
        call.append(f"vrrp={args.vrrp}")
    for name in ("tls", "tls_cert", "tls_key", "http"):
        if getattr(args, name):
            call.append(f"{name}={getattr(args, name)}")
    call += [f"{name}={value}" for name, value in tuning_options(args).items()]
    return "gdl.build", call


def tuning_options(args: argparse.Namespace) -> dict[str, str]:
    """The tuning options given to ``gdl build``, by runner argument."""
    from gdl.tuning import ARGUMENTS

    given = {name: getattr(args, name, None) for name in ARGUMENTS}
    return {name: value for name, value in given.items() if value is not None}


def summary(result: Any) -> list[str]:
    """What a finished command prints: the URL first, then the rest as YAML."""
    if isinstance(result, list):  # gdl.list
        if not result:
            return ["no environments"]
        return [
            f"{e['app']}-{e['env']}  {e['provider']}  {e['app_servers']} app servers, "
            f"{e['lbs']} load balancers"
            + (f" ({e['requested']} requested)" if "requested" in e else "")
            for e in result
        ]
    if not isinstance(result, dict):
        return [str(result)]
    rest = dict(result)
    rest.pop("outputter", None)  # how salt-run prints it: as this summary
    url = rest.pop("url", None)
    lines = [url] if url else []
    if rest.get("plan") and rest.get("test"):
        lines += rest.pop("plan")
    backends = rest.pop("backends") if isinstance(rest.get("backends"), list) else None
    lines.append(_as_yaml(rest))
    if backends is not None:
        lines += backend_table(backends, rest.get("vip_holder"))
    return lines


BACKEND_COLUMNS = (
    ("SERVER", "name"),
    ("STATUS", "status"),
    ("SESSIONS", "sessions"),
    ("REQ/S", "request_rate"),
    ("CHECK", "check"),
    ("ADDRESS", "address"),
)


def backend_table(backends: list[dict[str, Any]], holder: str | None) -> list[str]:
    """gdl.status's backends, a line each: haproxy's view on the LB that holds the VIP."""
    if not backends:
        return ["backends: none in haproxy"]
    rows = [[title for title, _ in BACKEND_COLUMNS]]
    # A load balancer with an older gdl_lb reports no request rate: shown as '-'.
    rows += [[str(row.get(key, "-")) for _, key in BACKEND_COLUMNS] for row in backends]
    widths = [max(len(row[i]) for row in rows) for i in range(len(BACKEND_COLUMNS))]
    numeric = {
        i for i, (_, key) in enumerate(BACKEND_COLUMNS) if key in ("sessions", "request_rate")
    }
    table = [
        "  ".join(
            cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ).rstrip()
        for row in rows
    ]
    return [f"backends (haproxy on {holder}):" if holder else "backends:"] + [
        f"  {line}" for line in table
    ]


def _as_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, default_flow_style=False, sort_keys=False).rstrip("\n")


def _runner_client(config_dir: str) -> Any:
    """Salt's runner client with the master's options, logging where salt-run logs."""
    import salt._logging
    import salt.config
    import salt.runner

    from gdl.terminal import quiet_salt_noise

    class ProgressClient(salt.runner.RunnerClient):
        def print_async_event(self, suffix: str, event: Any) -> None:
            # The progress lines only: the return is summarised by summary().
            if suffix == "progress":
                super().print_async_event(suffix, event)

        def destroy(self) -> None:
            # The master minion the client made for the call is its to close.
            mminion = self.__dict__.pop("_mminion", None)
            if mminion is not None:
                mminion.destroy()
            super().destroy()

    # The options salt-run reads: the master's, with what a client of it needs (master_uri).
    opts = salt.config.client_config(os.path.join(config_dir, "master"))
    salt._logging.set_logging_options_dict(opts)
    salt._logging.setup_logging()
    quiet_salt_noise()
    return ProgressClient(opts)


def _user() -> str:
    import salt.utils.user

    return salt.utils.user.get_specific_user()


def main(argv: Sequence[str] | None = None) -> int:
    command_line = parser()
    args = command_line.parse_args(argv)
    if args.command == "build" and args.destroy:
        for name in ("vrrp", "tls", "tls_cert", "tls_key", "http"):
            if getattr(args, name):
                option = "--" + name.replace("_", "-")
                command_line.error(f"{option} is a build setting: it has no meaning with --destroy")
        if tuning_options(args):
            command_line.error(
                "the tuning options are build settings: they have no meaning with --destroy"
            )
    function, call = runner_call(args)
    with _runner_client(args.config_dir) as client:
        # The calling user, as salt-run passes it: without it the master refuses the
        # jobs that the runner publishes from inside an orchestration.
        done = client.cmd(function, call, pub_data={"user": _user()}, full_return=True)
    # What the runner left to the garbage collector goes now, while logging still filters
    # Salt's warnings about it, not at exit.
    gc.collect()
    if not done.get("success", False):
        # The runner's one line (a refusal, or why the build failed).
        print(done.get("return"), file=sys.stderr)
        return 1
    print("\n".join(summary(done.get("return"))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
