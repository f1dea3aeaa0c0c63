"""Input files: plain files and the .csv members of zips, with clear errors for anything else."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from shared.inputs import IngestError, InputFile, resolve_inputs

SAMPLE = (
    Path(__file__).resolve().parents[2]
    / "data"
    / "sample"
    / "HISTDATA_COM_ASCII_GBPJPY_M1_2017-01-sample.zip"
)


def test_a_zip_gives_its_csv_members_and_a_plain_file_itself(tmp_path: Path) -> None:
    plain = tmp_path / "bars.csv"
    plain.write_text("time,open,high,low,close\n")
    archive = tmp_path / "two.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("b.csv", "x")
        z.writestr("a.csv", "y")
        z.writestr("report.txt", "gaps")
        z.writestr("__MACOSX/._a.csv", "fork")
    inputs = resolve_inputs([plain, archive])
    assert inputs == [InputFile(plain), InputFile(archive, "a.csv"), InputFile(archive, "b.csv")]
    assert [i.label for i in inputs] == ["bars.csv", "two.zip:a.csv", "two.zip:b.csv"]
    assert inputs[1].read() == b"y"
    (member,) = resolve_inputs([SAMPLE])
    assert member.member is not None and member.member.endswith(".csv") and len(member.read()) > 100_000


def test_what_cannot_be_read_is_said(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="no input files"):
        resolve_inputs([])
    with pytest.raises(IngestError, match="no such file"):
        resolve_inputs([tmp_path / "missing.csv"])
    with pytest.raises(IngestError, match="not a file"):
        resolve_inputs([tmp_path])
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(IngestError, match="not a readable zip"):
        resolve_inputs([broken])
