"""The commands in docs/scaling.md and docs/examples/ compose valid configs as written."""

from __future__ import annotations

import re
import shlex

import pytest

from lw_lightning.cli import main

from .conftest import ROOT


def _commands() -> list[list[str]]:
    texts = [(ROOT / "docs" / "scaling.md").read_text()]
    texts += [p.read_text() for p in sorted((ROOT / "docs" / "examples").iterdir())]
    found = []
    for text in texts:
        joined = re.sub(r"\\\n\s*", " ", text)
        for line in joined.splitlines():
            if "lw_lightning fit" in line or "lw_lightning test" in line:
                words = shlex.split(line.split("-m lw_lightning", 1)[1].replace('"$@"', ""))
                found.append(words)
    return found


def test_docs_hold_the_launch_commands():
    commands = _commands()
    assert len(commands) >= 7
    assert any("conf/launch/ddp_gpu.yaml" in c for c in commands)


@pytest.mark.parametrize("argv", _commands(), ids=lambda a: " ".join(a)[:60])
def test_documented_command_config_is_valid(argv, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert main([*argv, "--print-config"]) == 0, capsys.readouterr().err
