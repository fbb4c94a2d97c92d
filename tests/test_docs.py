"""The documentation stays true to the code it describes."""

from __future__ import annotations

from pathlib import Path

from glide_api.config import settings_table

ROOT = Path(__file__).resolve().parents[1]


def test_configuration_doc_lists_every_setting_as_the_code_defines_it() -> None:
    assert settings_table() in (ROOT / "docs" / "configuration.md").read_text()


def test_readme_gives_the_two_newcomer_commands_that_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = 'python -m pip install -e ".[dev]" && python -m pytest'
    assert test_command in readme and test_command in ci
    assert "python -m pip install . && glide-api serve" in readme
