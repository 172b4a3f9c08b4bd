"""Entry point: global flags, subcommand registration, and the one place that turns errors into exit codes.

Each command module exposes ``add_parsers(subparsers)``; its handlers take ``(args, workspace)`` and return an
exit code. Heavy libraries are imported inside handlers so that ``autoseg --help`` stays instant.
"""

from __future__ import annotations

import argparse
import os
import sys

from autoseg import __version__

COMMAND_MODULES = (
    "autoseg.cli.data_cmds",
    "autoseg.cli.fingerprint_cmds",
    "autoseg.cli.plan_cmds",
    "autoseg.cli.preprocess_cmds",
    "autoseg.cli.train_cmds",
    "autoseg.cli.infer_cmds",
    "autoseg.cli.demo_cmds",
    "autoseg.cli.tools_cmds",
)


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default only when it says something: not for None / False / [] defaults, nor when the
    help text already states the default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, [], argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="autoseg",
        description="Self-configuring medical image segmentation (nnU-Net's method, faster and easier).",
        epilog="example: autoseg plan_and_preprocess -d 4 && autoseg train -d 4 -f 0..4",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"autoseg {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--workspace",
        help="workspace root holding raw/, preprocessed/, results/ (default: $AUTOSEG_HOME, else ~/autoseg_workspace)",
    )
    common.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import a module that registers custom components (repeatable)",
    )
    common.add_argument("-v", "--verbose", action="store_true", help="more log output")
    common.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in COMMAND_MODULES:
        importlib.import_module(mod).add_parsers(sub, common, _Formatter)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    from autoseg.errors import AutosegError
    from autoseg.log import setup_console
    from autoseg.registry import import_plugins
    from autoseg.workspace import Workspace

    setup_console(args.verbose)
    try:
        env_plugins = [p for p in os.environ.get("AUTOSEG_PLUGINS", "").split(",") if p]
        import_plugins([*env_plugins, *args.plugin])
        ws = Workspace.from_env(args.workspace, os.environ)
        if ws.root_source == "default" and getattr(args, "needs_workspace", True):
            print(f"autoseg: workspace {ws.root} (default; set --workspace or AUTOSEG_HOME)", file=sys.stderr)
        code = int(args.handler(args, ws) or 0)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # Under torchrun all work is done and the process group destroyed; skip interpreter teardown, where
            # gloo's C++ threads can abort a rank ("terminate called without an active exception").
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        return code
    except AutosegError as exc:
        if args.debug:
            raise
        print(f"autoseg {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"autoseg {args.command}: interrupted", file=sys.stderr)
        return 130
    except (MemoryError, OSError) as exc:
        if args.debug:
            raise
        print(
            f"autoseg {args.command}: error: {type(exc).__name__}: {exc} (run with --debug for details)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
