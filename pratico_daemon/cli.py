"""`pratico-daemon` command line: serve, check-config, migrate, token, --version.

Wrong usage and invalid configuration exit 2 with one line naming the key and
the reason; nothing here prints a traceback for an operator's mistake.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import trio

from pratico_daemon import __version__, logs
from pratico_daemon.auth import ROLES, Authenticator
from pratico_daemon.config import Config, ConfigError, load

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pratico-daemon", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"pratico-daemon {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", metavar="FILE", help="TOML file (default: built-in defaults)")
        return p

    with_config(sub.add_parser("serve", help="run the daemon"))
    with_config(sub.add_parser("check-config", help="validate the configuration and exit"))
    with_config(sub.add_parser("migrate", help="apply database migrations and exit"))
    token = with_config(sub.add_parser("token", help="print a signed access token"))
    token.add_argument("--sub", required=True, help="user id")
    token.add_argument("--role", required=True, choices=ROLES)
    token.add_argument("--org", required=True, help="organisation id")
    token.add_argument("--ttl", type=int, default=3600, help="seconds (default 3600)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load(args.config)
        if args.command == "check-config":
            Authenticator.from_config(config)
            mode = "embedded" if config.embedded else "redis+postgres"
            print(f"configuration ok ({mode})")
            return 0
        if args.command == "token":
            print(Authenticator.from_config(config).mint(args.sub, args.role, args.org, args.ttl))
            return 0
        logs.setup(config.log.level, config.log.format, config.log.file)
        if args.command == "migrate":
            return trio.run(_migrate, config)
        return trio.run(_serve, config)
    except ConfigError as exc:
        print(f"pratico-daemon: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


async def _serve(config: Config) -> int:
    from pratico_daemon.daemon import Daemon
    from pratico_daemon.sdnotify import Notifier

    daemon = Daemon(config, notifier=Notifier.from_env())
    await daemon.run(handle_signals=True, tune_gc=True)
    return 0


async def _migrate(config: Config) -> int:
    from pratico_daemon.storage import migrate

    applied = await migrate.run(config)
    print(f"migrations applied: {applied}")
    return 0
