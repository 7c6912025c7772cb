"""Cleaning a dataset: every row accepted or rejected with its reasons, nothing dropped silently.

The rules are those of ``gemcast.schema.check_stone`` (with the price) plus exact duplicates.
Pure standard library, so the preprocess function needs neither pandas nor numpy.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from gemcast.errors import DatasetError
from gemcast.schema import CATEGORIES, COLUMNS, MAX_PRICE, Problem, check_stone, encode, plainly_valid, stone_id

MAX_REPORTED_EXAMPLES = 5


@dataclass
class RejectedRow:
    line: int  # line number in the file, the header being line 1
    raw: dict[str, Any]
    problems: list[Problem]
    source: str = ""

    def as_dict(self) -> dict[str, Any]:
        out = {"line": self.line, "row": self.raw, "reasons": [p.as_dict() for p in self.problems]}
        if self.source:
            out["source"] = self.source
        return out


@dataclass
class CleanResult:
    """Accepted rows (typed) and rejected rows (raw, with reasons), in file order."""

    accepted: list[dict[str, Any]] = field(default_factory=list)
    accepted_lines: list[int] = field(default_factory=list)
    rejected: list[RejectedRow] = field(default_factory=list)
    source: str = ""

    @property
    def total(self) -> int:
        return len(self.accepted) + len(self.rejected)

    def reason_counts(self) -> dict[str, int]:
        """How many rows were rejected for each kind of reason (first word pattern by field)."""
        counts: Counter[str] = Counter()
        for row in self.rejected:
            for problem in row.problems:
                counts[reason_kind(problem)] += 1
        return dict(sorted(counts.items()))

    def snapshot_id(self) -> str:
        """Content id of the accepted data: the same rows give the same id."""
        digest = hashlib.sha256()
        for row in self.accepted:
            digest.update(curated_line(row).encode())
        return "snap-" + digest.hexdigest()[:16]

    def summary(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "rows": self.total,
            "accepted": len(self.accepted),
            "rejected": len(self.rejected),
            "rejected_by_reason": self.reason_counts(),
            "snapshot_id": self.snapshot_id(),
        }

    def curated_csv(self) -> str:
        return ",".join(COLUMNS) + "\n" + "".join(curated_line(r) for r in self.accepted)

    def rejected_jsonl(self) -> str:
        return "".join(json.dumps(r.as_dict(), sort_keys=True) + "\n" for r in self.rejected)

    def matrix(self) -> tuple[list[list[float]], list[float]]:
        """(encoded features, prices) of the accepted rows."""
        return [encode(r) for r in self.accepted], [float(r["price"]) for r in self.accepted]


def reason_kind(problem: Problem) -> str:
    """The kind of a problem, for counts of rejected rows by reason ("carat: out of range")."""
    reason = problem.reason
    if reason.startswith("exact duplicate"):
        return "duplicate"
    if "NUL byte" in reason:
        return "row: NUL byte"
    if reason.startswith("is not a CSV line"):
        return "row: unreadable CSV"
    if reason == "is missing":
        return f"{problem.field}: missing"
    if "must be a number" in reason or "finite" in reason:
        return f"{problem.field}: not a number"
    if reason.startswith("unknown"):
        return f"{problem.field}: unknown category"
    if "greater than 0" in reason:
        return f"{problem.field}: not positive"
    if "contradicts" in reason or "impossible" in reason or "round stone" in reason:
        return f"{problem.field}: inconsistent measurements"
    if "at least" in reason or "at most" in reason:
        return f"{problem.field}: out of range"
    return problem.field


def curated_line(row: Mapping[str, Any]) -> str:
    price = row["price"]
    price_text = str(int(price)) if float(price).is_integer() else repr(float(price))
    return (
        f"{row['carat']:g},{row['cut']},{row['color']},{row['clarity']},{row['depth']:g},"
        f"{row['table']:g},{price_text},{row['x']:g},{row['y']:g},{row['z']:g}\n"
    )


def _raw_row(header: Iterable[str], cells: list[str]) -> dict[str, Any]:
    """A row as read: its header's names to its cells (made only for a row that is rejected)."""
    return dict(zip(header, cells, strict=True))


def plain_row_reader(header: list[str]) -> Callable[[list[str]], dict[str, Any] | None]:
    """For a checked header, a function from a row's cells (as many as the header's) to its
    typed values as ``check_stone(row, with_price=True)`` gives them, or None.

    It answers only for a row that is plainly valid: every number reads as ``float`` reads it,
    every grade is spelled as in ``CATEGORIES``, and ``plainly_valid`` passes the measurements.
    Any other row is None, and goes to ``check_stone`` to be decided and its reasons worded, so
    the two cannot disagree (tests/unit/test_cleaning.py compares them on damaged rows).
    """
    at = {name: header.index(name) for name in COLUMNS}
    carat_at, depth_at, table_at, price_at, x_at, y_at, z_at = (
        at[n] for n in ("carat", "depth", "table", "price", "x", "y", "z"))
    grades = [(name, at[name], frozenset(CATEGORIES[name])) for name in CATEGORIES]

    def read(cells: list[str]) -> dict[str, Any] | None:
        values: dict[str, Any] = {}
        for name, index, allowed in grades:
            if cells[index] not in allowed:
                return None
            values[name] = cells[index]
        try:
            carat, depth, table = float(cells[carat_at]), float(cells[depth_at]), float(cells[table_at])
            x, y, z, price = float(cells[x_at]), float(cells[y_at]), float(cells[z_at]), float(cells[price_at])
            if not (0.0 < price <= MAX_PRICE and plainly_valid(carat, depth, table, x, y, z)):
                return None
        except (ValueError, ZeroDivisionError):
            return None
        # In check_stone's order: the features, then the price.
        return {"carat": carat, "cut": values["cut"], "color": values["color"], "clarity": values["clarity"],
                "depth": depth, "table": table, "x": x, "y": y, "z": z, "price": price}

    return read


def _reads_back(row: Mapping[str, Any], cells: list[str]) -> bool:
    """Whether ``row`` read back from the cells of its ``curated_line`` gives the very same values."""
    for name, cell in zip(COLUMNS, cells, strict=True):
        value = row[name]
        if isinstance(value, str):
            if cell != value:
                return False
        elif not isinstance(value, float) or float(cell) != value:
            return False
    return True


def csv_lines(text: str) -> Iterator[tuple[list[str], Problem | None]]:
    """Each physical line of a CSV document as (cells, None), or ([line], problem) when unreadable.

    A line is parsed on its own, so an unterminated quote spoils only its line (csv.reader over
    the whole text would swallow the rest of the file into one field, or raise csv.Error), and
    a NUL byte is named as the reason. Blank lines come out as ([], None): callers skip them but
    keep counting lines. Shared by cleaning, the model server's ``text/csv`` and ``gemcast score``.
    """
    for raw in io.StringIO(text, newline=None):
        line = raw.rstrip("\r\n")
        if "\x00" in line:
            yield [line], Problem("row", "contains a NUL byte (\\x00): the file is damaged or not text")
        elif '"' not in line:
            yield (line.split(",") if line else []), None
        else:
            try:
                yield next(csv.reader([line], strict=True)), None
            except (csv.Error, StopIteration) as exc:
                yield [line], Problem("row", f"is not a CSV line: {exc} (an unterminated or stray quote?)")


def _check_header(header: list[str] | None) -> list[str]:
    if header is None:
        raise DatasetError("the file is empty: expected a header line " + ",".join(COLUMNS))
    names = [h.strip() for h in header]
    missing = [c for c in COLUMNS if c not in names]
    extra = [h for h in names if h not in COLUMNS]
    repeated = sorted({h for h in names if names.count(h) > 1})
    if missing or extra or repeated:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(missing))
        if extra:
            parts.append("unexpected " + ", ".join(repr(e) for e in extra))
        if repeated:
            parts.append("repeated " + ", ".join(repeated))
        raise DatasetError(f"wrong header ({'; '.join(parts)}): expected {','.join(COLUMNS)}")
    return names


class Cleaner:
    """Cleans one or more CSV documents as one dataset (duplicates are found across them)."""

    def __init__(self, *, on_accept: Callable[[dict[str, Any]], None] | None = None) -> None:
        """``on_accept`` is called with each row as it is accepted (an ingest loads it meanwhile)."""
        self.result = CleanResult()
        self._first_line_of: dict[str, str] = {}
        self._on_accept = on_accept

    def add_rows(self, rows: Iterable[list[str] | tuple[list[str], Problem | None]], *, source: str = "") -> None:
        """Rows of cells (the first is the header), or ``csv_lines`` pairs (cells, problem)."""
        iterator = (r if isinstance(r, tuple) else (r, None) for r in rows)
        where = f"{source}: " if source else ""
        first = next(iterator, None)
        try:
            if first is not None and first[1] is not None:
                raise DatasetError(f"the header line is unreadable: {first[1].reason}")
            header = _check_header(None if first is None else first[0])
        except DatasetError as exc:
            raise DatasetError(f"{where}{exc}") from exc
        self.result.source = ", ".join(s for s in (self.result.source, source) if s)
        before = self.result.total
        plain = plain_row_reader(header)
        for line, (cells, unreadable) in enumerate(iterator, start=2):
            if unreadable is not None:
                self.result.rejected.append(RejectedRow(line, {"line": cells[0]}, [unreadable], source))
                continue
            if not cells or all(not c.strip() for c in cells):
                continue  # a blank line is not a row
            values = plain(cells) if len(cells) == len(header) else None
            if values is not None:
                self._admit(line, functools.partial(_raw_row, header, cells), values, [], source)
                continue
            raw = dict(zip(header, cells, strict=False))
            problems: list[Problem] = []
            if len(cells) != len(header):
                problems.append(Problem("row", f"has {len(cells)} fields, expected {len(header)}"))
            values, stone_problems = check_stone(raw, with_price=True)
            problems.extend(stone_problems)
            self._admit(line, raw, values, problems, source)
        if self.result.total == before:
            raise DatasetError(f"{where}the file has a header but no data rows")

    def _admit(self, line: int, raw: dict[str, Any] | Callable[[], dict[str, Any]], values: dict[str, Any],
               problems: list[Problem], source: str) -> None:
        """Accept a checked row unless it has problems or repeats an accepted one (``raw``, the
        row as read, may be given as a function that makes it: only a rejected row keeps it)."""
        if not problems:
            key = stone_id(values) + f"|{values['price']:g}"
            if key in self._first_line_of:
                problems.append(Problem("row", f"exact duplicate of {self._first_line_of[key]}"))
            else:
                self._first_line_of[key] = f"{source}:{line}" if source else f"line {line}"
        if problems:
            self.result.rejected.append(RejectedRow(line, raw() if callable(raw) else raw, problems, source))
        else:
            self.result.accepted.append(values)
            self.result.accepted_lines.append(line)
            if self._on_accept is not None:
                self._on_accept(values)

    def add_curated(self, accepted: list[dict[str, Any]], *, source: str = "") -> bool:
        """Add the accepted rows of a batch as its curated CSV (``curated_csv``) would add them,
        without writing and checking that text again: possible when every row comes back from
        its curated line unchanged, since cleaning the same values gives the
        same answer. Returns False, having added nothing, when some row would not; then clean
        the curated text with ``add_csv``."""
        cells = [curated_line(row).rstrip("\n").split(",") for row in accepted]
        if not accepted or not all(_reads_back(row, text) for row, text in zip(accepted, cells, strict=True)):
            return False
        self.result.source = ", ".join(s for s in (self.result.source, source) if s)
        for line, (values, text) in enumerate(zip(accepted, cells, strict=True), start=2):
            self._admit(line, functools.partial(_raw_row, COLUMNS, text), dict(values), [], source)
        return True

    def add_csv(self, text: str | bytes, *, source: str = "") -> None:
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                raise DatasetError(f"{source or 'the file'} is not UTF-8 text: {exc}") from exc
        if not text.strip():
            raise DatasetError(
                f"{source + ' ' if source else ''}the file is empty: expected a header line " + ",".join(COLUMNS)
            )
        self.add_rows(csv_lines(text), source=source)

    def finish(self) -> CleanResult:
        result = self.result
        if result.total == 0:
            raise DatasetError("no data rows")
        if not result.accepted:
            kinds = ", ".join(f"{k} ({n})" for k, n in result.reason_counts().items())
            raise DatasetError(f"all {result.total} rows were rejected: {kinds}")
        return result


def clean_rows(rows: Iterable[list[str]], *, source: str = "") -> CleanResult:
    """Clean parsed CSV rows (the first is the header)."""
    cleaner = Cleaner()
    cleaner.add_rows(rows, source=source)
    return cleaner.finish()


def clean_csv(text: str | bytes, *, source: str = "",
              on_accept: Callable[[dict[str, Any]], None] | None = None) -> CleanResult:
    """Clean a whole CSV document (``on_accept``: see ``Cleaner``)."""
    cleaner = Cleaner(on_accept=on_accept)
    cleaner.add_csv(text, source=source)
    return cleaner.finish()
