"""Reading the datasets' text files: annotation CSVs, list files, label maps, class tables.

Every one is read as ``utf-8-sig``: Excel's "CSV UTF-8" (and Windows Notepad) start a file with a
byte-order mark, which plain ``utf-8`` keeps as a character of the first field. A Kinetics
``train.csv`` then has a column ``'\\ufefflabel'`` instead of ``label`` and looks unlabelled;
``utf-8-sig`` drops the mark and reads a file without one exactly as ``utf-8`` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO

TEXT_ENCODING = "utf-8-sig"


def open_text(path: str | Path, newline: str | None = None) -> IO[str]:
    """``open(path)`` for reading a dataset's text file (``newline=""`` for the csv module)."""
    return open(path, encoding=TEXT_ENCODING, newline=newline)


def read_text(path: str | Path) -> str:
    """The whole text of a dataset's text file."""
    return Path(path).read_text(encoding=TEXT_ENCODING)
