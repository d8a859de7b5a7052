"""The gamornet console script."""

import subprocess
import sys

import pytest

import gamornet
from gamornet.cli import main as cli


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"gamornet {gamornet.__version__}"


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "gamornet.cli.main", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and gamornet.__version__ in result.stdout


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "usage: gamornet" in capsys.readouterr().out


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["frobnicate"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
