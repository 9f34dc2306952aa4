"""Every command that README.md documents, and every command of the Makefile, is parsed as the
program would parse it: hydra commands are composed with their overrides (and their options
checked), argparse commands and scripts parse their arguments. A documented command cannot break
silently again."""
import argparse
import re
import runpy
import shlex
import sys

import pytest
from conftest import ROOT

HYDRA_COMMANDS = {"supernet.train": "train", "search.run": "search"}


def documented_commands() -> list[tuple[str, str]]:
    """``(where, command)`` for each ``python -m`` / ``python scripts/`` / ``torchrun`` command in
    README's shell blocks and inline code, and in the Makefile's recipes."""
    found = []
    readme = (ROOT / "README.md").read_text()
    for block in re.findall(r"```(?:bash|sh|shell|console)?\n(.*?)```", readme, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" # ")[0].strip()
            if re.match(r"(python3? |torchrun )", line):
                found.append(("README.md", line))
    for span in re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", readme, flags=re.S)):
        if re.match(r"python3? (-m \S+ \S|scripts/\S+\.py)", span) and "..." not in span:  # a module with arguments
            found.append(("README.md", span))
    for line in (ROOT / "Makefile").read_text().splitlines():
        match = re.match(r"\t\$\(BIN\)/(python -m \S+.*)", line)
        if match and "pytest" not in line and "pip" not in line:
            found.append(("Makefile", match.group(1)))
    return found


class _Parsed(Exception):
    """Raised by the patched ``parse_args``: the arguments parsed; nothing more is run."""


def target_and_args(command: str) -> tuple[str, list[str]]:
    words = shlex.split(command)
    if words[0] == "torchrun":
        words = ["python", *words[[i for i, w in enumerate(words) if w == "-m"][0]:]]
    assert words[0] in ("python", "python3"), command
    if words[1] == "-m":
        return words[2], words[3:]
    return words[1], words[2:]


COMMANDS = documented_commands()


def test_readme_and_makefile_document_the_main_commands():
    targets = {target_and_args(command)[0] for _, command in COMMANDS}
    assert {"supernet.train", "search.run", "search.measure", "supernet.export"} <= targets


@pytest.mark.parametrize(("where", "command"), COMMANDS, ids=[c for _, c in COMMANDS])
def test_documented_command_parses(where, command, monkeypatch):
    target, args = target_and_args(command)
    if target in HYDRA_COMMANDS:
        from hydra import compose, initialize_config_dir

        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            compose(config_name=HYDRA_COMMANDS[target], overrides=args)
        return

    parse_known = argparse.ArgumentParser.parse_known_args

    def parse_args(self, args=None, namespace=None):
        namespace, extra = parse_known(self, args, namespace)
        if extra:
            self.error(f"unrecognized arguments: {' '.join(extra)}")
        raise _Parsed(namespace)

    def parse_known_args(self, args=None, namespace=None):
        parsed = parse_known(self, args, namespace)
        if not self.add_help:  # a dispatcher that reads one option and hands the rest to a full parser
            return parsed
        raise _Parsed(parsed[0])  # the rest are the script's own key=value overrides

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_args)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", parse_known_args)
    monkeypatch.setattr(sys, "argv", [target, *args])
    try:
        if target.endswith(".py"):
            monkeypatch.syspath_prepend(str((ROOT / target).parent))  # as `python scripts/x.py` puts it first
            runpy.run_path(str(ROOT / target), run_name="__main__")
        else:
            runpy.run_module(target, run_name="__main__", alter_sys=True)
    except _Parsed:
        return
    except SystemExit as exit_:
        pytest.fail(f"{where}: {command!r} is refused by its parser (exit {exit_.code})")
    pytest.fail(f"{where}: {command!r} ran without parsing arguments")
