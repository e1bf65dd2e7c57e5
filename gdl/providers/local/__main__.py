"""Command line of the local provider, used by bootstrap and by hand.

    python -m gdl.providers.local choose-cidr
    python -m gdl.providers.local ensure-network --bridge gdl0 --cidr 10.213.7.0/24
    python -m gdl.providers.local remove-network --bridge gdl0
    python -m gdl.providers.local list
    python -m gdl.providers.local delete app-0-blog-dev
    python -m gdl.providers.local run app-0-blog-dev -- ip -br addr

``list``, ``delete`` and ``run`` read the local cloud's settings from the
master config (``--config``, default /etc/salt/master).  Errors print one
line and exit non-zero.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import os
import sys
from pathlib import Path

from gdl import keys, naming, servers
from gdl.config import Settings
from gdl.errors import GdlError
from gdl.providers.local import network
from gdl.providers.local.provider import LocalProvider


def _settings(args: argparse.Namespace) -> Settings:
    config = Path(args.config)
    opts: dict = {}
    if config.exists():
        import salt.config

        opts = salt.config.master_config(str(config))
    settings = Settings.from_opts(opts)
    local = dict(settings.local)
    if args.bridge:
        local["bridge"] = args.bridge
    if args.state_dir:
        local["state_dir"] = args.state_dir
    return dataclasses.replace(settings, master_config=config, local=local)


def _provider(args: argparse.Namespace) -> LocalProvider:
    return LocalProvider.from_settings(_settings(args))


def cmd_choose_cidr(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else int(naming.short_hash("gdl-local"), 16)
    chosen = network.choose_cidr(network.machine_networks(), seed=seed, prefix=args.prefix)
    if chosen is None:
        print(
            f"no free /{args.prefix} in 10.0.0.0/8 or 172.16.0.0/12: "
            "set gdl: local: cidr: to a subnet you know is free",
            file=sys.stderr,
        )
        return 1
    print(chosen)
    return 0


def cmd_ensure_network(args: argparse.Namespace) -> int:
    gateway = network.ensure_bridge(args.bridge, ipaddress.ip_network(args.cidr))
    print(f"{args.bridge} {gateway}")
    return 0


def cmd_remove_network(args: argparse.Namespace) -> int:
    network.remove_bridge(args.bridge)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    servers = _provider(args).list_servers()
    if args.json:
        print(json.dumps([s.as_dict() for s in servers], indent=2))
    for server in servers if not args.json else []:
        print(
            f"{server.name}\t{server.state}\t{server.address}\t{server.size}\t{server.extra['pid']}"
        )
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    settings = _settings(args)
    # The host's minion key goes with it, as with salt-cloud -d.
    deleted = servers.remove(
        LocalProvider.from_settings(settings), keys.MasterKeys(settings.master_opts), args.names
    )
    for name in deleted:
        print(f"deleted {name}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    argv = _provider(args).run(args.name, command or ["/bin/sh"])
    os.execvp(argv[0], argv)  # noqa: S606 - the argv is nsenter plus what the operator typed
    return 127  # not reached


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m gdl.providers.local", description=__doc__.split("\n")[0]
    )
    sub = top.add_subparsers(dest="command_name", required=True)

    choose = sub.add_parser("choose-cidr", help="print a free subnet for the local cloud")
    choose.add_argument("--seed", type=int, help="where to start probing (default: fixed)")
    choose.add_argument("--prefix", type=int, default=network.DEFAULT_PREFIX)
    choose.set_defaults(func=cmd_choose_cidr)

    ensure = sub.add_parser("ensure-network", help="make the bridge with its address (idempotent)")
    ensure.add_argument("--bridge", required=True)
    ensure.add_argument("--cidr", required=True)
    ensure.set_defaults(func=cmd_ensure_network)

    remove = sub.add_parser("remove-network", help="delete the bridge")
    remove.add_argument("--bridge", required=True)
    remove.set_defaults(func=cmd_remove_network)

    for name, func, help_text in (
        ("list", cmd_list, "list the local hosts"),
        ("delete", cmd_delete, "delete local hosts by name"),
        ("run", cmd_run, "run a command inside a host"),
    ):
        command = sub.add_parser(name, help=help_text)
        command.add_argument("--config", default="/etc/salt/master", help="the master config")
        command.add_argument("--bridge", help="override gdl: local: bridge:")
        command.add_argument("--state-dir", help="override gdl: local: state_dir:")
        command.set_defaults(func=func)
        if name == "list":
            command.add_argument("--json", action="store_true")
        elif name == "delete":
            command.add_argument("names", nargs="+")
        else:
            command.add_argument("name")
            command.add_argument("command", nargs=argparse.REMAINDER)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except GdlError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"{exc}: check the arguments", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
