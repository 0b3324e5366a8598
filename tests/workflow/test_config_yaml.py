"""A YAML syntax error in config/config.yaml names the file, the line and the column (issue 16);
Snakemake's own message ("Config file is not valid JSON or YAML") names neither."""

from __future__ import annotations

from collections.abc import Callable

from workflow_harness import Workflow


def test_yaml_syntax_error_names_the_file_and_line(new_workflow: Callable[[], Workflow]) -> None:
    workflow = new_workflow()
    config = workflow.root / "config" / "config.yaml"
    lines = config.read_text().splitlines()
    config.write_text("\n".join([*lines, "run: demo", "  oops: [1, 2"]) + "\n")
    result = workflow.snakemake("--dry-run", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert (
        f"config/config.yaml, line {len(lines) + 2}, column 7: YAML syntax error: mapping values are not "
        "allowed here" in output
    ), output[-2000:]
