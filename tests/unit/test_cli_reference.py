import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from autoseg.cli.main import build_parser
from autoseg.cli.reference import epilog_blocks, render_markdown, subcommands, usage

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
REGENERATE = "python -m autoseg.cli.reference > docs/cli.md"


def test_docs_cli_md_is_up_to_date():
    assert DOC.is_file(), f"{DOC} missing; generate it with `{REGENERATE}`"
    expected = render_markdown()
    current = DOC.read_text(encoding="utf-8")
    if current != expected:
        stale = [ln for ln in expected.splitlines() if ln not in set(current.splitlines())][:5]
        pytest.fail(f"docs/cli.md is stale (first new lines: {stale}); regenerate it with `{REGENERATE}`")


def test_every_command_is_documented_with_an_example():
    parser = build_parser()
    subs = subcommands(parser)
    assert {"verify", "plan", "preprocess", "train", "predict", "overlay", "benchmark"} <= set(subs)
    text = render_markdown(parser)
    missing = []
    for name, (sub, help_line) in subs.items():
        assert f"## autoseg {name}\n" in text
        assert help_line, f"`autoseg {name}` has no one-line help"
        if not re.search(r"^examples?:", sub.format_help(), re.MULTILINE):
            missing.append(name)
    assert not missing, f"commands whose --help has no 'example:' (or 'examples:') epilog: {', '.join(missing)}"


def test_help_output_of_the_cli_has_the_example():
    out = subprocess.run(
        [sys.executable, "-m", "autoseg", "benchmark", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "example: autoseg benchmark -d 4 -c 3d_fullres" in out


def test_rendering_of_a_toy_parser():
    parser = argparse.ArgumentParser(prog="autoseg", description="Toy <tool>.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--workspace", help="root")
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser(
        "run", parents=[common], help="run it", description="Runs *fast*.", epilog="example: autoseg run a b"
    )
    p.add_argument("inputs", nargs="+", help="input files")
    p.add_argument("-d", "--dataset", required=True, help="dataset id")
    p.add_argument("--mode", choices=["x", "y"], default="x", help="mode (default %(default)s)")
    p.add_argument("--dry", action="store_true", help="a | b")
    q = sub.add_parser("other", parents=[common], help="other one", epilog="example: autoseg other")
    q.add_argument("-n", type=int, default=3, metavar="N", help="count")
    assert (
        usage("autoseg run", p, {("--workspace",)})
        == "autoseg run inputs [inputs ...] -d DATASET [--mode {x,y}] [--dry]"
    )
    text = render_markdown(parser)
    assert "Toy &lt;tool&gt;." in text and "Runs \\*fast\\*." in text
    assert "| `--workspace WORKSPACE` |  | root |" in text  # shared by both commands: listed once, globally
    assert text.count("--workspace WORKSPACE") == 1
    assert "| `-d, --dataset DATASET` | required | dataset id |" in text
    assert "| `--mode {x,y}` | `x` | mode (default x) |" in text
    assert "| `--dry` |  | a \\| b |" in text
    assert "| `-n N` | `3` | count |" in text
    assert "```sh\nautoseg run a b\n```" in text
    assert "| [`other`](#autoseg-other) | other one |" in text


def test_epilog_blocks():
    blocks = epilog_blocks("example: autoseg a\nexample: autoseg b -x\nnote: slow on CPU")
    assert blocks == ["Examples:", "", "```sh", "autoseg a", "autoseg b -x", "```", "", "note: slow on CPU", ""]
    blocks = epilog_blocks("examples:\n  autoseg c\n  autoseg d --e\nsee docs/x.md")
    assert blocks == ["Examples:", "", "```sh", "autoseg c", "autoseg d --e", "```", "", "see docs/x.md", ""]
    assert epilog_blocks("example: autoseg z")[:4] == ["Example:", "", "```sh", "autoseg z"]
    assert epilog_blocks(None) == []


def test_every_example_is_a_command_line_the_parser_accepts(capsys):
    """Each subcommand's --help shows at least one example that runs that subcommand with valid options."""
    import shlex

    parser = build_parser()
    problems = []
    for name, (sub, _) in subcommands(parser).items():
        blocks = epilog_blocks(sub.epilog)
        examples = blocks[blocks.index("```sh") + 1 : blocks.index("```")] if "```sh" in blocks else []
        if not examples:
            problems.append(f"{name}: no example command line")
        for line in examples:
            argv = shlex.split(line)
            if argv[:2] != ["autoseg", name]:
                problems.append(f"{name}: example {line!r} does not run `autoseg {name}`")
                continue
            try:
                parser.parse_args(argv[1:])
            except SystemExit:
                problems.append(f"{name}: example {line!r} is refused: {capsys.readouterr().err.strip()}")
    assert not problems, "\n".join(problems)
