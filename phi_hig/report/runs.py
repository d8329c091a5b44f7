"""A run folder's data files: ``metrics.csv`` (one row per record) and ``summary.json``, written atomically
(`phi_hig.files.atomic_write`) and read back with every cell checked (`read_run`)."""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from typing import List

from .. import checks
from ..errors import InvalidInputError
from ..files import atomic_write

__all__ = ['BASE_COLUMNS', 'NUMBER_COLUMNS', 'write_metrics_csv', 'write_summary', 'read_run']


BASE_COLUMNS = ['experiment', 'method', 'step', 'wall_time', 'train_loss', 'test_loss']
NUMBER_COLUMNS = ('wall_time', 'train_loss', 'test_loss')
"""Columns of ``metrics.csv`` that hold a number or nothing (NaN) in every row; ``step`` holds an integer >= 0."""


def write_metrics_csv(records: List[dict], path: str) -> None:
    """One row per record; the base columns first, then every metric any record has."""
    extra = []
    for r in records:
        extra += [k for k in r if k not in BASE_COLUMNS and k not in extra]
    text = io.StringIO(newline='')
    writer = csv.DictWriter(text, fieldnames=BASE_COLUMNS + extra, restval='')
    writer.writeheader()
    for r in records:
        writer.writerow({k: ('' if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()})
    atomic_write(path, text.getvalue())


def write_summary(summary: dict, path: str) -> None:
    """``summary`` as indented JSON (NumPy scalars as floats; NaN and ±Inf as JSON's NaN / Infinity)."""
    atomic_write(path, json.dumps(summary, indent=2, default=float))


def _text(path: str) -> str:
    """The UTF-8 text of ``path``; a byte that is not UTF-8 is refused naming its row (line) and column."""
    with open(path, 'rb') as f:
        raw = f.read()
    try:
        return raw.decode('utf-8')
    except UnicodeDecodeError as err:
        row = raw.count(b'\n', 0, err.start) + 1
        col = err.start - (raw.rfind(b'\n', 0, err.start) + 1) + 1
        raise InvalidInputError(f"{path} is unreadable: row {row}, column {col} holds the byte "
                                f"0x{raw[err.start]:02x}, which is not UTF-8 text") from None


def _number(text: str):
    if text is None or text == '':
        return float('nan')
    try:
        v = float(text)
    except ValueError:
        return text
    return int(v) if v.is_integer() and re.fullmatch(r'[+-]?\d+', text.strip()) else v


def read_run(path: str) -> tuple:
    """Read a run directory written by `write_run`.

    A folder with ``metrics.csv`` but no ``summary.json`` (e.g. written by hand or by another tool) is accepted:
    the report then derives what it can (methods, steps, times, losses) from the rows.

    Returns:
        ``(records, summary)``: the metrics rows as dicts (numbers parsed, empty cells NaN) and the summary
        dict (``{}`` when ``summary.json`` is missing).

    Raises:
        FileNotFoundError: when ``path`` is not a directory or has no ``metrics.csv``.
        InvalidInputError: naming the file, when ``metrics.csv`` or ``summary.json`` is unreadable or malformed:
            columns ``method`` or ``step`` missing, a row with more or fewer cells than the header, or, naming
            the row and the column, a ``step`` that is not an integer >= 0 or a ``wall_time`` / ``train_loss`` /
            ``test_loss`` that is neither a number nor empty, a byte that is not UTF-8, or no row at all (a
            header only).
    """
    if not os.path.isdir(path):
        raise FileNotFoundError(f"run directory {path!r} does not exist")
    csv_path = os.path.join(path, 'metrics.csv')
    if not os.path.exists(csv_path):
        raise FileNotFoundError(f"{path!r} has no metrics.csv (write one with `python -m phi_hig run ... --out DIR`)")
    try:
        reader = csv.DictReader(io.StringIO(_text(csv_path), newline=''))
        missing = [c for c in ('method', 'step') if c not in (reader.fieldnames or [])]
        if missing:
            raise InvalidInputError(f"{csv_path}: missing columns {missing}")
        rows = list(reader)
    except (OSError, csv.Error) as err:
        raise InvalidInputError(f"{csv_path} is unreadable ({type(err).__name__}: {err})") from None
    if not rows:
        raise InvalidInputError(f"{csv_path} holds no records (a header only): nothing to report")
    for i, row in enumerate(rows):
        if None in row or any(v is None for v in row.values()):
            raise InvalidInputError(f"{csv_path} is malformed: row {i + 2} has more or fewer cells than the header")
    records = [{k: (v if k in ('experiment', 'method', 'status', 'flags') else _number(v)) for k, v in row.items()}
               for row in rows]
    for i, record in enumerate(records):
        where = f"{csv_path} is malformed: row {i + 2}, column"
        checks.integer(f"{where} 'step'", record['step'], low=0)
        for column in NUMBER_COLUMNS:
            if column in record and not checks.is_number(record[column]):  # empty: NaN, a number
                raise InvalidInputError(f"{where} {column!r} must be a number or empty, got {record[column]!r}")
    summary = {}
    summary_path = os.path.join(path, 'summary.json')
    if os.path.exists(summary_path):
        try:
            with open(summary_path) as f:
                summary = json.load(f)
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise InvalidInputError(f"{summary_path} is unreadable ({type(err).__name__}: {err})") from None
        if not isinstance(summary, dict) or not isinstance(summary.get('final', {}), dict):
            raise InvalidInputError(f"{summary_path} is malformed: not a phi_hig run summary")
    return records, summary
