"""Reading one data file: formats, encodings, compression, and lines that cannot be parsed.

Errors name the file, the line and the setting that fixes it; a line that cannot be parsed
comes back as a row with PARSE_ERROR and LINE_CONTENT (the clean stage quarantines it).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pandas as pd
from charset_normalizer import from_bytes
from pandas.io.common import get_handle


class DataSourceError(ValueError):
    """The data source cannot be read as configured; the message says how to fix it."""


# A byte-order mark names its encoding: it wins over the configured one.
_BOMS = (
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)
# Rows that could not be parsed travel in the raw snapshot with these columns; clean quarantines them.
PARSE_ERROR, LINE_CONTENT = "parse_error", "line_content"
MAX_SHOWN_LINE = 500


def read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed by extension (.gz, .bz2, .xz, .zst, .zip) the way pandas reads them."""
    with get_handle(path, "rb", compression="infer", is_text=False) as handle:
        return handle.handle.read()


def detect_encoding(data: bytes) -> str:
    """The encoding charset-normalizer finds most likely (UTF-8 when the bytes are valid UTF-8)."""
    try:
        data.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        pass
    results = from_bytes(data)
    best = results.best()
    if best is None:
        return "utf-8"
    # Short Western texts often tie between cp1250/cp1252/cp1257 (same chaos, same coherence) and the
    # first listed wins; on a tie take cp1252, Windows' (and Excel's) Western default, by far the likeliest.
    tied = [m for m in results if (m.chaos, m.coherence) == (best.chaos, best.coherence)]
    return "cp1252" if any("cp1252" in m.could_be_from_charset for m in tied) else best.encoding


def decode_text(data: bytes, encoding: str, path: Path) -> tuple[str, str]:
    """(text, encoding used): a BOM wins, `auto` detects, else the configured encoding.

    A byte the encoding cannot read is reported with its line number and the setting that fixes it.
    """
    bom = next((name for mark, name in _BOMS if data.startswith(mark)), None)
    used = bom or (detect_encoding(data) if encoding == "auto" else encoding)
    try:
        text = data.decode(used)
    except LookupError:
        raise DataSourceError(
            f"data.source.encoding '{encoding}' is not an encoding Python knows; "
            "use e.g. utf-8, cp1252, latin-1, utf-16, or auto"
        ) from None
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        guess = detect_encoding(data)
        raise DataSourceError(
            f"{path}:{line}: byte {data[e.start : e.start + 1].hex(' ')} (offset {e.start}) is not {used}; "
            f"set data.source.encoding to the file's encoding (it looks like {guess}) or to auto, "
            f"or re-save the file as UTF-8"
        ) from None
    return text.removeprefix("\ufeff"), used


def read_text(path: Path, encoding: str = "utf-8") -> str:
    return decode_text(read_bytes(path), encoding, path)[0]


def _infer_format(path: Path, declared: str | None) -> str:
    if declared:
        return declared
    suffixes = [s.lstrip(".") for s in path.suffixes if s not in (".gz", ".bz2", ".zst", ".xz", ".zip")]
    ext = suffixes[-1].lower() if suffixes else ""
    ext = {"txt": "tsv", "ndjson": "jsonl", "pq": "parquet"}.get(ext, ext)
    if ext not in ("csv", "tsv", "jsonl", "json", "parquet"):
        raise DataSourceError(
            f"cannot tell the format of '{path}' from its extension; set data.source.format "
            "to csv, tsv, jsonl, json or parquet"
        )
    return ext


def bad_line(path: Path, lineno: int, reason: str, content: str) -> dict:
    """The raw-snapshot row of a line that could not be parsed: where, why, and what it held."""
    return {PARSE_ERROR: f"{path.name}:{lineno}: {reason}", LINE_CONTENT: content[:MAX_SHOWN_LINE]}


def parse_jsonl(text: str, path: Path) -> tuple[list[dict], list[dict]]:
    """(records, bad lines) of a JSON Lines text; blank lines are skipped."""
    records, bad = [], []
    # "\n" only: str.splitlines would also cut at U+2028 and U+0085, which JSON strings may hold as they are.
    for lineno, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            bad.append(bad_line(path, lineno, f"invalid JSON: {e.msg} at column {e.colno}", line))
            continue
        if not isinstance(record, dict):
            bad.append(bad_line(path, lineno, f"a JSON {type(record).__name__}, not an object", line))
            continue
        records.append(record)
    return records, bad


def parse_delimited(text: str, sep: str, path: Path) -> tuple[pd.DataFrame, list[dict]]:
    """(rows, bad lines) of a CSV/TSV text: a row with another field count than the header is a bad line.

    Python's csv reader, not pandas': it gives each row's line number, and pandas fills short
    rows with empty cells without a word.
    """
    # The default cap (128 KiB per field) would refuse a long document; the clean stage's max_chars judges it.
    csv.field_size_limit(max(csv.field_size_limit(), len(text)))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    header = next(reader, [])
    rows, bad = [], []
    start = reader.line_num + 1
    for fields in reader:
        if fields and len(fields) != len(header):
            bad.append(bad_line(path, start, f"{len(fields)} fields, the header has {len(header)}", sep.join(fields)))
        elif fields:
            rows.append(fields)
        start = reader.line_num + 1
    df = pd.DataFrame(rows, columns=header, dtype=object)
    return df.mask(df.eq("")), bad  # an empty cell is missing, as pandas reads it


def read_table(
    path: Path, fmt: str | None = None, encoding: str = "utf-8", on_bad_lines: str = "quarantine"
) -> pd.DataFrame:
    """Read one CSV/TSV/JSONL/JSON/Parquet file with errors that name the file, the line and the fix.

    Lines that cannot be parsed (invalid JSON, a CSV row with the wrong number of fields) come back
    as rows holding only `parse_error` and `line_content` (on_bad_lines=quarantine), or refuse the
    file naming them (error). `df.attrs["encoding"]` is the encoding the text was read with.
    """
    fmt = _infer_format(path, fmt)
    if fmt == "parquet":
        try:
            return pd.read_parquet(path)
        except (OSError, ValueError) as e:
            raise DataSourceError(f"{path}: cannot be read as parquet: {e}") from None
    text, used = decode_text(read_bytes(path), encoding, path)
    bad: list[dict] = []
    try:
        if fmt == "json":
            df = pd.read_json(io.StringIO(text), dtype=False)
        elif fmt == "jsonl":
            records, bad = parse_jsonl(text, path)
            df = pd.DataFrame.from_records(records)
        else:
            df, bad = parse_delimited(text, "," if fmt == "csv" else "\t", path)
    except ValueError as e:
        raise DataSourceError(f"{path}: cannot be read as {fmt}: {e}") from None
    if bad and on_bad_lines == "error":
        shown = "; ".join(b[PARSE_ERROR] for b in bad[:5])
        raise DataSourceError(
            f"{path}: {len(bad)} line(s) cannot be parsed ({shown}); fix them, or set "
            "data.source.on_bad_lines=quarantine to set them aside and read the rest"
        )
    if bad:
        df = pd.concat([df, pd.DataFrame(bad)], ignore_index=True)
    df.attrs["encoding"] = used
    return df


def describe_file(path: Path, df: pd.DataFrame) -> dict:
    """What reading one file gave: rows, unparseable lines, and the encoding used (None for parquet)."""
    unparseable = int(df[PARSE_ERROR].notna().sum()) if PARSE_ERROR in df.columns else 0
    return {
        "file": str(path),
        "encoding": df.attrs.get("encoding"),
        "rows": len(df) - unparseable,
        "unparseable_lines": unparseable,
    }


def read_conll(path: str | Path, encoding: str = "utf-8") -> pd.DataFrame:
    """Read `token<TAB>tag` lines, a blank line between sentences."""
    tokens: list[str] = []
    tags: list[str] = []
    sentences: list[tuple[list[str], list[str]]] = []
    text = read_text(Path(path), encoding)
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.rstrip("\r")
        if not line.strip() or line.startswith("-DOCSTART-"):
            if tokens:
                sentences.append((tokens, tags))
                tokens, tags = [], []
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) < 2:
            raise DataSourceError(
                f"{path}:{lineno}: expected 'token<TAB>tag', got {line[:80]!r}; "
                "CoNLL files need one token and its tag per line"
            )
        tokens.append(parts[0])
        tags.append(parts[-1])
    if tokens:
        sentences.append((tokens, tags))
    return pd.DataFrame({"tokens": [s[0] for s in sentences], "tags": [s[1] for s in sentences]})
