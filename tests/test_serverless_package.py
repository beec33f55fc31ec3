"""``pushpool serverless package``: each cloud's layout, built from this environment."""

from __future__ import annotations

import zipfile
from pathlib import Path

from typer.testing import CliRunner

from dispatcher.cli import app


def test_each_cloud_gets_its_layout_and_a_bad_cloud_exits_2(tmp_path: Path) -> None:
    runner = CliRunner()
    bad = runner.invoke(app, ["serverless", "package", "--cloud", "ibm"])
    assert bad.exit_code == 2 and "aws, gcp, azure" in bad.output
    aws = runner.invoke(app, ["serverless", "package", "--cloud", "aws", "--output",
                              str(tmp_path)])
    assert aws.exit_code == 0, aws.output
    names = set(zipfile.ZipFile(tmp_path / "pushpool-aws-lambda.zip").namelist())
    assert {"dispatcher/triggers/aws_lambda.py", "sqlalchemy/__init__.py",
            "boto3/__init__.py"} <= names
    azure = runner.invoke(app, ["serverless", "package", "--cloud", "azure", "--output",
                                str(tmp_path)])
    assert azure.exit_code == 0, azure.output
    folder = tmp_path / "pushpool-azure-functions"
    assert (folder / "function_app.py").is_file() and (folder / "host.json").is_file()
    assert (folder / ".python_packages/lib/site-packages/dispatcher/triggers/azure.py").is_file()


def test_a_folder_it_did_not_make_is_not_replaced(tmp_path: Path) -> None:
    mine = tmp_path / "pushpool-gcp-functions"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    answer = CliRunner().invoke(app, ["serverless", "package", "--cloud", "gcp", "--output",
                                      str(tmp_path)])
    assert answer.exit_code == 1 and "was not made by this command" in answer.output
    assert (mine / "keep.txt").read_text() == "mine"
