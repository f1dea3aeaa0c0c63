"""Input files of bars: plain files and the ``.csv`` members of zip archives (the vendor's zips), as
``smz ingest`` and the feature builder's file replay read them."""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_ZIP_MAGIC = b"PK\x03\x04"
_EMPTY_ZIP_MAGIC = b"PK\x05\x06"


class IngestError(Exception):
    """The ingest cannot run: bad arguments or unreadable input. Nothing was written."""


@dataclass(frozen=True)
class InputFile:
    """One file of bars: a plain file, or one member of a zip archive."""

    path: Path
    member: str | None = None

    @property
    def label(self) -> str:
        """The name rejected rows are stored under."""
        return self.path.name if self.member is None else f"{self.path.name}:{self.member}"

    def read(self) -> bytes:
        try:
            if self.member is None:
                return self.path.read_bytes()
            with zipfile.ZipFile(self.path) as archive:
                return archive.read(self.member)
        except (OSError, zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise IngestError(f"cannot read {self.label}: {exc}") from exc


def resolve_inputs(paths: Sequence[Path | str]) -> list[InputFile]:
    """Every file to ingest, in the given order; a zip contributes its ``.csv`` members in name order."""
    if not paths:
        raise IngestError("no input files given")
    inputs: list[InputFile] = []
    for raw_path in paths:
        path = Path(raw_path)
        if not path.exists():
            raise IngestError(f"{path}: no such file")
        if not path.is_file():
            raise IngestError(f"{path}: not a file")
        try:
            with path.open("rb") as handle:
                magic = handle.read(4)
        except OSError as exc:
            raise IngestError(f"{path}: cannot read: {exc}") from exc
        if magic not in (_ZIP_MAGIC, _EMPTY_ZIP_MAGIC) and path.suffix.lower() != ".zip":
            inputs.append(InputFile(path))
            continue
        try:
            with zipfile.ZipFile(path) as archive:
                names = [info.filename for info in archive.infolist() if not info.is_dir()]
        except (OSError, zipfile.BadZipFile) as exc:
            raise IngestError(f"{path}: not a readable zip archive ({exc})") from exc
        # The vendor's zips hold the bars (.csv) and a gap report (.txt); macOS adds resource forks.
        members = sorted(n for n in names if n.lower().endswith(".csv") and not Path(n).name.startswith("._"))
        if not members:
            raise IngestError(
                f"{path}: the zip holds no .csv file (it holds: {', '.join(names) or 'nothing'})"
            )
        inputs.extend(InputFile(path, member) for member in members)
    return inputs
