"""Minimal MATLAB level-5 MAT-file reader and writer (for the ImageNet devkit's ``meta.mat``).

scipy is not a dependency of this project, and ``meta.mat`` is the only MAT file we need. It
holds one struct array ``synsets`` (fields ``ILSVRC2012_ID``, ``WNID``, ``words``, ``gloss``,
``num_children``, ``children``, ``wordnet_height``, ``num_train_images``). Supported here:
numeric, char, cell and struct arrays, zlib-compressed variables (MATLAB's default since v7)
and the 4-byte "small data element" form. Not supported: sparse, objects, function handles and
v7.3 (HDF5) files, which the devkit does not use.

Format reference: MathWorks, "MAT-File Format", chapter 1 (Level 5 MAT-files).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

# data types (miXXX)
_MI_DTYPES = {
    1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8",
}
MI_INT8, MI_UINT8, MI_INT32, MI_UINT16, MI_UINT32, MI_DOUBLE = 1, 2, 5, 4, 6, 9
MI_MATRIX, MI_COMPRESSED, MI_UTF8, MI_UTF16 = 14, 15, 16, 17
# array classes (mxXXX)
MX_CELL, MX_STRUCT, MX_CHAR, MX_DOUBLE = 1, 2, 4, 6
_MX_NUMERIC = set(range(6, 16))


class MatFileError(ValueError):
    """The file is not a level-5 MAT-file this reader understands."""


def read_mat(path: str | Path) -> dict[str, Any]:
    """Read every variable of a level-5 MAT-file.

    Returns name -> value, where numeric arrays are numpy arrays (MATLAB shape), char arrays are
    ``str`` (rows joined by newlines when 2-D), cell arrays are lists (column-major), and struct
    arrays are lists of ``{field: value}`` dicts (column-major).
    """
    data = Path(path).read_bytes()
    if len(data) < 128:
        raise MatFileError(f"{path}: too short for a MAT-file header")
    if data[126:128] == b"IM":
        endian = "<"
    elif data[126:128] == b"MI":
        endian = ">"
    else:
        if data[:8] == b"\x89HDF\r\n\x1a\n" or b"MATLAB 7.3" in data[:116]:
            raise MatFileError(f"{path}: MAT v7.3 (HDF5) files are not supported; re-save with -v7")
        raise MatFileError(f"{path}: not a level-5 MAT-file")
    out: dict[str, Any] = {}
    pos = 128
    while pos + 8 <= len(data):
        mtype, payload, pos = _read_element(data, pos, endian)
        if mtype == MI_COMPRESSED:
            inner = zlib.decompress(payload)
            mtype, payload, _ = _read_element(inner, 0, endian)
        if mtype != MI_MATRIX:
            continue
        name, value = _parse_matrix(payload, endian)
        out[name] = value
    return out


def _read_element(buf: bytes, pos: int, endian: str) -> tuple[int, bytes, int]:
    """Return (data type, payload bytes, position of the next element)."""
    (word,) = struct.unpack_from(endian + "I", buf, pos)
    if word >> 16:  # small data element: size in the upper 2 bytes, data in the next 4 bytes
        mtype, nbytes = word & 0xFFFF, word >> 16
        return mtype, buf[pos + 4 : pos + 4 + nbytes], pos + 8
    mtype, nbytes = struct.unpack_from(endian + "II", buf, pos)
    start = pos + 8
    end = start + nbytes
    if end > len(buf):
        raise MatFileError("truncated data element")
    if mtype == MI_COMPRESSED:
        return mtype, buf[start:end], end  # compressed elements are not padded
    return mtype, buf[start:end], start + ((nbytes + 7) // 8) * 8


def _numeric(mtype: int, payload: bytes, endian: str) -> np.ndarray:
    if mtype not in _MI_DTYPES:
        raise MatFileError(f"unsupported numeric data type {mtype}")
    return np.frombuffer(payload, dtype=np.dtype(_MI_DTYPES[mtype]).newbyteorder(endian))


def _parse_matrix(payload: bytes, endian: str) -> tuple[str, Any]:
    if not payload:  # an empty miMATRIX (e.g. an unset struct field)
        return "", np.zeros((0, 0))
    pos = 0
    _, flags, pos = _read_element(payload, pos, endian)
    mx_class = struct.unpack_from(endian + "I", flags)[0] & 0xFF
    mtype, dims_raw, pos = _read_element(payload, pos, endian)
    dims = tuple(int(d) for d in _numeric(mtype, dims_raw, endian))
    _, name_raw, pos = _read_element(payload, pos, endian)
    name = name_raw.decode("ascii")
    count = int(np.prod(dims)) if dims else 0
    if mx_class in _MX_NUMERIC:
        mtype, real, pos = _read_element(payload, pos, endian)
        # MATLAB stores doubles in the smallest integer type that holds them; the class wins
        arr = _numeric(mtype, real, endian).astype(np.float64 if mx_class == MX_DOUBLE else _class_dtype(mx_class))
        return name, arr.reshape(dims, order="F")
    if mx_class == MX_CHAR:
        mtype, raw, pos = _read_element(payload, pos, endian)
        if mtype in (MI_UTF8, MI_UINT8, MI_INT8):
            chars = list(raw.decode("utf-8"))
        elif mtype in (MI_UINT16, MI_UTF16):
            chars = [chr(c) for c in _numeric(MI_UINT16, raw, endian)]
        else:
            raise MatFileError(f"unsupported char data type {mtype}")
        if count == 0:
            return name, ""
        grid = np.array(chars, dtype=object).reshape(dims, order="F")
        rows = ["".join(r) for r in grid.reshape(dims[0], -1)]
        return name, "\n".join(rows)
    if mx_class == MX_CELL:
        cells = []
        for _ in range(count):
            mtype, sub, pos = _read_element(payload, pos, endian)
            cells.append(_parse_matrix(sub, endian)[1])
        return name, cells
    if mx_class == MX_STRUCT:
        _, flen_raw, pos = _read_element(payload, pos, endian)
        flen = int(_numeric(MI_INT32, flen_raw, endian)[0])
        _, names_raw, pos = _read_element(payload, pos, endian)
        fields = [names_raw[i : i + flen].split(b"\0", 1)[0].decode("ascii") for i in range(0, len(names_raw), flen)]
        records = []
        for _ in range(count):
            rec = {}
            for field in fields:
                mtype, sub, pos = _read_element(payload, pos, endian)
                rec[field] = _parse_matrix(sub, endian)[1]
            records.append(rec)
        return name, records
    raise MatFileError(f"unsupported MATLAB array class {mx_class} for variable '{name}'")


def _class_dtype(mx_class: int) -> str:
    return {7: "f4", 8: "i1", 9: "u1", 10: "i2", 11: "u2", 12: "i4", 13: "u4", 14: "i8", 15: "u8"}[mx_class]


# ------------------------------------------------------------------------------------------
# writer (used by the tiny-copy generator; writes what MATLAB writes: compressed variables)
# ------------------------------------------------------------------------------------------


def _element(mtype: int, payload: bytes) -> bytes:
    if len(payload) <= 4:
        return struct.pack("<HH", mtype, len(payload)) + payload.ljust(4, b"\0")
    return struct.pack("<II", mtype, len(payload)) + payload + b"\0" * (-len(payload) % 8)


def _matrix(name: str, value: Any) -> bytes:
    def header(mx_class: int, dims: tuple[int, ...]) -> bytes:
        flags = _element(MI_UINT32, struct.pack("<II", mx_class, 0))
        return flags + _element(MI_INT32, struct.pack(f"<{len(dims)}i", *dims)) + _element(MI_INT8, name.encode())

    if isinstance(value, str):
        body = header(MX_CHAR, (1 if value else 0, len(value)))
        body += _element(MI_UINT16, np.array([ord(c) for c in value], dtype="<u2").tobytes())
    elif isinstance(value, list) and value and isinstance(value[0], dict):
        fields = list(value[0])
        flen = max(len(f) for f in fields) + 1
        body = header(MX_STRUCT, (len(value), 1))
        body += _element(MI_INT32, struct.pack("<i", flen))
        body += _element(MI_INT8, b"".join(f.encode().ljust(flen, b"\0") for f in fields))
        for rec in value:
            for f in fields:
                body += _matrix("", rec[f])
    else:
        arr = np.asarray(value, dtype=np.float64)
        arr = arr.reshape(1, -1) if arr.ndim < 2 else arr
        body = header(MX_DOUBLE, arr.shape)
        flat = arr.flatten(order="F")
        # like MATLAB, store integral doubles in the smallest unsigned type that holds them
        if flat.size and np.all(flat == np.round(flat)) and flat.min() >= 0 and flat.max() < 65536:
            small = flat.astype("<u1" if flat.max() < 256 else "<u2")
            body += _element(MI_UINT8 if small.dtype.itemsize == 1 else MI_UINT16, small.tobytes())
        else:
            body += _element(MI_DOUBLE, flat.astype("<f8").tobytes())
    return struct.pack("<II", MI_MATRIX, len(body)) + body


def write_mat(path: str | Path, variables: dict[str, Any]) -> None:
    """Write variables (str, numbers/arrays, or a list of same-keyed dicts = struct array)."""
    head = b"MATLAB 5.0 MAT-file, Platform: GLNXA64, Created by: lw_lightning".ljust(116, b" ")
    out = head + b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM"
    for name, value in variables.items():
        packed = zlib.compress(_matrix(name, value))
        out += struct.pack("<II", MI_COMPRESSED, len(packed)) + packed
    Path(path).write_bytes(out)
