"""Cleaning: each planted error of diamonds.csv comes out rejected with the right reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gemcast.cleaning import Cleaner, clean_csv
from gemcast.errors import DatasetError

DATA = Path(__file__).resolve().parents[2] / "data"
HEADER = "carat,cut,color,clarity,depth,table,price,x,y,z\n"
ROW = "0.7,Ideal,E,VS1,61.8,56,2757,5.7,5.73,3.53\n"


@pytest.fixture(scope="module")
def sample():
    return clean_csv((DATA / "diamonds.csv").read_bytes(), source="diamonds.csv")


def rejected_by_row_index(result):
    # pandas' 0-based row index = file line - 2
    return {r.line - 2: r for r in result.rejected}


def reasons(rejected_row):
    return {p.field: p.reason for p in rejected_row.problems}


def test_every_planted_error_is_rejected_with_its_reason(sample):
    by_row = rejected_by_row_index(sample)
    for row in (331, 2121, 2484, 2933, 3155, 3317, 3445, 3904, 3980, 4188):
        assert "greater than 0" in reasons(by_row[row])["price"], row
    zero = reasons(by_row[4321])
    assert all("greater than 0" in zero[f] for f in ("x", "y", "z"))
    assert "at most 80" in reasons(by_row[679])["table"]
    assert "contradicts" in reasons(by_row[1889])["depth"]
    assert "contradicts" in reasons(by_row[1776])["depth"]
    assert "exact duplicate" in reasons(by_row[4943])["row"]
    assert 2429 not in by_row  # the first of the two duplicates is kept


def test_counts_add_up_and_nothing_is_lost(sample):
    assert sample.total == 5000
    assert len(sample.accepted) + len(sample.rejected) == 5000
    # xtream's rule keeps 4,989; ours also rejects the impossible stones and the duplicate.
    assert 4975 <= len(sample.accepted) <= 4989
    lines = sample.rejected_jsonl().splitlines()
    assert len(lines) == len(sample.rejected)
    first = json.loads(lines[0])
    assert first["row"]["price"] == "-1" and first["reasons"][0]["field"] == "price"


def test_snapshot_id_depends_on_content_only(sample):
    again = clean_csv((DATA / "diamonds.csv").read_bytes())
    assert again.snapshot_id() == sample.snapshot_id()
    other = clean_csv(HEADER + ROW)
    assert other.snapshot_id() != sample.snapshot_id()


def test_curated_csv_cleans_to_itself(sample):
    again = clean_csv(sample.curated_csv())
    assert len(again.accepted) == len(sample.accepted) and not again.rejected
    assert again.snapshot_id() == sample.snapshot_id()


def test_columns_in_another_order_are_read():
    result = clean_csv("price,carat,cut,color,clarity,depth,table,x,y,z\n2757,0.7,Ideal,E,VS1,61.8,56,5.7,5.73,3.53\n")
    assert result.accepted[0]["price"] == 2757


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("carat,cut,color\n0.7,Ideal,E\n", "missing clarity"),
        (HEADER.replace("price", "cost"), "unexpected 'cost'"),
        (HEADER, "no data rows"),
        (HEADER + "0.7,Ideal,E,VS1,61.8,56,-5,5.7,5.73,3.53\n", "all 1 rows were rejected"),
    ],
)
def test_unusable_files_give_a_clear_error(text, words):
    with pytest.raises(DatasetError, match=words):
        clean_csv(text)


def test_missing_values_unknown_categories_and_short_rows():
    text = HEADER + ROW + "0.7,Ideal,E,,61.8,56,2757,5.7,5.73,3.53\n" + "0.7,Superb,E,VS1,61.8,56,2757,5.7,5.73\n"
    result = clean_csv(text)
    assert len(result.accepted) == 1
    missing, bad = result.rejected
    assert reasons(missing)["clarity"] == "is missing"
    assert "fields" in reasons(bad)["row"] and "unknown cut" in reasons(bad)["cut"]


def test_duplicates_are_found_across_files():
    cleaner = Cleaner()
    cleaner.add_csv(HEADER + ROW, source="a.csv")
    cleaner.add_csv(HEADER + ROW, source="b.csv")
    result = cleaner.finish()
    assert len(result.accepted) == 1
    assert "a.csv:2" in result.rejected[0].problems[0].reason
    assert result.rejected[0].as_dict()["source"] == "b.csv"


def test_not_utf8():
    with pytest.raises(DatasetError, match="UTF-8"):
        clean_csv(b"\xff\xfe\x00carat")


def test_an_unterminated_quote_or_a_nul_byte_spoils_only_its_line_and_is_kept_with_its_reason():
    good = "0.7,Ideal,E,VS1,61.8,56,3000,5.7,5.72,3.53\n"
    other = "1.51,Premium,G,VS2,61.9,58,9000,7.32,7.28,4.52\n"
    text = HEADER + good + '"0.7,Ideal,E,VS1,61.8,56,3000,5.7,5.72,3.53\n' + "0.8,Ideal\x00,E\n" + other
    result = clean_csv(text)
    assert len(result.accepted) == 2 and result.accepted_lines == [2, 5]
    lines = {r.line: r.as_dict()["reasons"][0]["reason"] for r in result.rejected}
    assert set(lines) == {3, 4}
    assert "quote" in lines[3] and "NUL" in lines[4]
    assert result.reason_counts() == {"row: NUL byte": 1, "row: unreadable CSV": 1}
    assert "\\u0000" in result.rejected_jsonl()  # the damaged line itself is kept


def test_rows_with_numbers_at_the_edge_of_floating_point_are_rejected_with_their_reasons():
    underflow = "0.7,Ideal,E,VS1,61.8,56,2757,1e-200,1e-200,1e-200\n"
    huge = f"{10**400},Ideal,E,VS1,61.8,56,2757,5.7,5.73,3.53\n"
    text = HEADER + ROW + underflow + huge
    result = clean_csv(text)
    assert len(result.accepted) == 1 and [r.line for r in result.rejected] == [3, 4]
    assert "carat" in {p.field for p in result.rejected[1].problems}


def _same(a, b):
    assert a.snapshot_id() == b.snapshot_id() and a.accepted == b.accepted
    assert a.accepted_lines == b.accepted_lines and a.source == b.source
    assert [r.as_dict() for r in a.rejected] == [r.as_dict() for r in b.rejected]


def test_a_batch_added_as_curated_rows_counts_as_its_curated_csv_cleaned_again():
    # ingest's snapshot: the batch just curated is not read and cleaned a second time.
    text = (DATA / "diamonds.csv").read_text()
    first = clean_csv(text, source="a.csv")
    lines = text.splitlines(keepends=True)
    second = clean_csv("".join(lines[:1] + lines[3000:] + lines[1:200]), source="b.csv")  # overlaps `first`
    for batches in ([("a.csv", first), ("b.csv", second)], [("b.csv", second), ("a.csv", first)]):
        cleaned, added = Cleaner(), Cleaner()
        for name, result in batches:
            cleaned.add_csv(result.curated_csv().encode(), source=name)
            assert added.add_curated(result.accepted, source=name)
        _same(cleaned.finish(), added.finish())
        assert any("exact duplicate" in r.problems[0].reason for r in added.result.rejected)


def test_rows_that_their_curated_line_would_change_are_cleaned_from_the_text():
    text = "carat,cut,color,clarity,depth,table,price,x,y,z\n0.2345678,Ideal,E,SI2,61.5,55,326,3.95,3.98,2.43\n"
    result = clean_csv(text)
    cleaner = Cleaner()
    assert not cleaner.add_curated(result.accepted, source="c.csv")  # 0.2345678 is written 0.234568
    assert cleaner.result.total == 0
    cleaner.add_csv(result.curated_csv(), source="c.csv")
    assert cleaner.finish().accepted[0]["carat"] == 0.234568


DAMAGE = ["", " ", "nan", "inf", "-inf", "1e-200", "0", "-1", "1_0", " 5.7", "5.7 ", "abc", "1e400", "9" * 400,
          "ideal", " Ideal", "IDEAL", "e", "vs1", "Fair", "D", "IF", "I1", "J", "3", "15", "15.000001", "0.1",
          "6", "6.01", "40", "80", "80.5", "39.9", "10000000", "10000000.5", "5e-324"]


def damaged_rows(rng):
    """Rows of diamonds_large.csv with cells swapped for damage, shifted a little, or cut short."""
    lines = (DATA / "diamonds_large.csv").read_text().splitlines()[1:]
    for line in rng.sample(lines, 4000):
        cells = line.split(",")
        for _ in range(rng.choice([0, 0, 1, 1, 2])):
            i = rng.randrange(len(cells))
            near = []
            if cells[i].replace(".", "").isdigit():
                value = float(cells[i])
                near = [f"{value * rng.uniform(0.8, 1.25):.4g}", f"{value + rng.uniform(-5.5, 5.5):.3f}"] * 3
            cells[i] = rng.choice([*DAMAGE, *near])
        if rng.random() < 0.02:
            cells = cells[:-1] if rng.random() < 0.5 else [*cells, "1"]
        yield ",".join(cells)


def boundary_rows():
    """Stones just inside and just outside each range and each consistency rule."""
    from gemcast.schema import DENSITY_RANGE, DEPTH_TOLERANCE, RANGES, ROUNDNESS_RANGE

    def row(carat, depth, table, x, y, z, price=2757.0):
        return f"{carat!r},Ideal,E,VS1,{depth!r},{table!r},{price!r},{x!r},{y!r},{z!r}"

    def consistent(x, y, depth=61.8, density=0.006, table=56.0):
        z = depth * (x + y) / 200.0
        return row(density * x * y * z, depth, table, x, y, z)

    out = []
    for nudge in (1 - 1e-6, 1.0, 1 + 1e-6):
        for bound in ROUNDNESS_RANGE:
            out.append(consistent(5.7 * bound * nudge, 5.7))
        for bound in DENSITY_RANGE:
            out.append(consistent(5.7, 5.72, density=bound * nudge))
        for bound in RANGES["table"]:
            out.append(consistent(5.7, 5.72, table=bound * nudge))
        for sign in (-1, 1):
            z = 3.53
            implied = 200.0 * z / (5.7 + 5.72)
            out.append(row(0.006 * 5.7 * 5.72 * z, implied + sign * DEPTH_TOLERANCE * nudge, 56.0, 5.7, 5.72, z))
        out.append(row(0.7, 61.8, 56.0, 5.7, 5.72, 3.53, price=1e7 * nudge))
    return out


@pytest.mark.parametrize("order", [HEADER.strip(), "price,z,y,x,table,depth,clarity,color,cut,carat"])
def test_the_fast_path_keeps_every_answer_and_reason_of_check_stone(order, monkeypatch):
    import random

    import gemcast.cleaning as cleaning

    rng = random.Random(7)
    names = order.split(",")
    rows = []
    for row in damaged_rows(rng):
        cells = dict(zip(HEADER.strip().split(","), row.split(","), strict=False))
        rows.append(",".join(cells.get(n, "") for n in names) if len(row.split(",")) == len(names) else row)
    rows += rows[:50]  # exact duplicates too
    if order == HEADER.strip():
        rows += boundary_rows()
    text = order + "\n" + "\n".join(rows) + "\n"
    fast = clean_csv(text, source="raw/x.csv")
    monkeypatch.setattr(cleaning, "plain_row_reader", lambda header: lambda cells: None)
    slow = clean_csv(text, source="raw/x.csv")
    assert fast.accepted == slow.accepted and [list(v) for v in fast.accepted] == [list(v) for v in slow.accepted]
    assert fast.accepted_lines == slow.accepted_lines
    assert [r.as_dict() for r in fast.rejected] == [r.as_dict() for r in slow.rejected]
    assert fast.curated_csv() == slow.curated_csv() and fast.rejected_jsonl() == slow.rejected_jsonl()
    assert 1000 < len(fast.rejected) < len(rows) - 1000  # both answers well represented
