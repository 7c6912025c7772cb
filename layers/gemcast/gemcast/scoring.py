"""Pricing a whole inventory: ``gemcast score --input URI --output URI [--on sagemaker|vertex]``.

Locally, a CSV or Parquet file of any size (``file://``, ``s3://``, ``gs://``, or a path) is
streamed in blocks of rows through the same Predictor as the serving image, in constant memory
(a remote file is copied to a temporary file first, and the output written to one, then
uploaded). Every row is answered, in order, with its price or its error: the output holds the
input's columns, then ``predicted_price`` and ``error``. Rejected rows are counted by reason at the end;
a progress line is drawn on a terminal.

With ``--on sagemaker`` the same file is priced by a SageMaker Batch Transform job on the
serving image (split by line, MultiRecord batches up to the payload limit the container gives
in /execution-parameters, each output line joined to its input line); with ``--on vertex`` by a
Vertex AI BatchPredictionJob on the same image (gemcast.gcp.submit_batch_prediction). That is
how a user who outgrows one machine prices millions of stones.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gemcast.errors import GemcastError, StorageError

BLOCK_ROWS = 20_000
PAYLOAD_MB = 6  # the serving image's MaxPayloadInMB (serving.MAX_BODY_BYTES)


@dataclass
class ScoreSummary:
    """What a local scoring run did: rows in, priced, rejected by reason, time."""

    input: str
    output: str
    rows: int = 0
    priced: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    model_version: str = ""

    @property
    def rejected(self) -> int:
        return self.rows - self.priced

    def as_dict(self) -> dict[str, Any]:
        return {"input": self.input, "output": self.output, "model_version": self.model_version,
                "rows": self.rows, "priced": self.priced, "rejected": self.rejected,
                "rejected_by_reason": dict(sorted(self.rejected_by_reason.items())),
                "seconds": round(self.seconds, 2),
                "rows_per_second": round(self.rows / self.seconds) if self.seconds else None}


# ----------------------------------------------------------------------------- where files live


def _split(uri: str) -> tuple[str, str, str]:
    if "://" not in uri:
        return "file", "", str(Path(uri).resolve())
    scheme, rest = uri.split("://", 1)
    if scheme == "file":
        return "file", "", rest
    if scheme not in {"s3", "gs"} or "/" not in rest or rest.endswith("/"):
        raise StorageError(f"{uri!r}: give a file as a path, file://..., s3://bucket/key or gs://bucket/key")
    bucket, key = rest.split("/", 1)
    return scheme, bucket, key


@contextlib.contextmanager
def local_input(uri: str) -> Iterator[Path]:
    """A local path holding the file at ``uri`` (downloaded to a temporary file when remote)."""
    scheme, bucket, key = _split(uri)
    if scheme == "file":
        path = Path(key)
        if not path.is_file():
            raise StorageError(f"no file {uri}")
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="gemcast-score-") as tmp:
        path = Path(tmp) / Path(key).name
        if scheme == "s3":
            import boto3
            from botocore.exceptions import ClientError

            try:
                boto3.client("s3").download_file(bucket, key, str(path))
            except ClientError as exc:
                raise StorageError(f"cannot read {uri}: {exc}") from exc
        else:
            from google.api_core.exceptions import GoogleAPICallError
            from google.cloud import storage  # type: ignore[attr-defined]

            try:
                storage.Client().bucket(bucket).blob(key).download_to_filename(str(path))
            except GoogleAPICallError as exc:
                raise StorageError(f"cannot read {uri}: {exc}") from exc
        yield path


@contextlib.contextmanager
def local_output(uri: str) -> Iterator[Path]:
    """A local path to write; uploaded to ``uri`` when the block ends without an error."""
    scheme, bucket, key = _split(uri)
    if scheme == "file":
        path = Path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        yield partial
        partial.replace(path)  # a reader never sees half a file
        return
    with tempfile.TemporaryDirectory(prefix="gemcast-score-") as tmp:
        path = Path(tmp) / Path(key).name
        yield path
        if scheme == "s3":
            import boto3
            from boto3.exceptions import S3UploadFailedError

            try:
                boto3.client("s3").upload_file(str(path), bucket, key)  # multipart past 8 MiB
            except S3UploadFailedError as exc:
                raise StorageError(f"cannot write {uri}: {exc}") from exc
        else:
            from google.api_core.exceptions import GoogleAPICallError
            from google.cloud import storage  # type: ignore[attr-defined]

            try:
                storage.Client().bucket(bucket).blob(key).upload_from_filename(str(path))
            except GoogleAPICallError as exc:
                raise StorageError(f"cannot write {uri}: {exc}") from exc


# ----------------------------------------------------------------------------- reading and writing


def _is_parquet(uri: str) -> bool:
    return uri.lower().split("?")[0].endswith((".parquet", ".pq"))


def _csv_blocks(path: Path, block_rows: int) -> Iterator[tuple[list[str] | None, list[str]]]:
    """(header or None, raw lines) per block of lines, blank lines kept; parsing is the workers'.

    Only the first line that is not blank is parsed here, to learn whether it is the header.
    """
    from gemcast.cleaning import csv_lines
    from gemcast.predict import csv_header

    header: list[str] | None = None
    with path.open("r", encoding="utf-8-sig", newline="", errors="replace") as handle:
        chunk: list[str] = []
        for line in handle:
            if line.strip():
                cells, problem = next(csv_lines(line))
                header = csv_header(cells) if problem is None else None
                if header is None:
                    chunk.append(line)
                break
            chunk.append(line)
        for line in handle:
            chunk.append(line)
            if len(chunk) >= block_rows:
                yield header, chunk
                chunk = []
        yield header, chunk


def _parquet_blocks(path: Path, block_rows: int) -> Iterator[list[dict[str, Any]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - pyarrow is in the score extra
        raise GemcastError("Parquet needs pyarrow: pip install 'gemcast[score]'") from exc
    for batch in pq.ParquetFile(path).iter_batches(batch_size=block_rows):
        yield batch.to_pylist()


class _Progress:
    """A progress line on a terminal (stderr), nothing otherwise."""

    def __init__(self, total_bytes: int, enabled: bool) -> None:
        self.total = max(1, total_bytes)
        self.enabled = enabled
        self.started = time.monotonic()

    def show(self, rows: int, done_bytes: int) -> None:
        if not self.enabled:
            return
        rate = rows / max(1e-9, time.monotonic() - self.started)
        share = min(1.0, done_bytes / self.total)
        bar = "#" * int(share * 30)
        sys.stderr.write(f"\r  [{bar:<30}] {share:6.1%}  {rows:>12,} rows  {rate:>9,.0f} rows/s")
        sys.stderr.flush()

    def end(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def _price_csv_block(header: list[str] | None, lines: list[str], columns: list[str] | None
                     ) -> tuple[Any, list[dict[str, Any]] | None, _Tally, int]:
    """One block of raw CSV lines priced: (output text, None) when ``columns`` (CSV out) is
    given, else (the cells, the answers) for the Parquet writer; then its tally and its bytes."""
    from gemcast.cleaning import csv_lines
    from gemcast.predict import Unreadable, csv_stone

    text = "".join(lines)
    kept = [(cells, problem) for cells, problem in csv_lines(text) if problem is not None or cells]
    stones = [Unreadable(problem) if problem is not None else csv_stone(cells, header) for cells, problem in kept]
    answers = _PREDICTOR.price(stones, reasons=False) if stones else []
    rows = [cells for cells, _ in kept]
    tally = _tally(answers)
    if columns is None:
        return rows, answers, tally, len(text)
    return _csv_text(*_shaped(columns, rows), answers), None, tally, len(text)


_PREDICTOR: Any = None  # the predictor of the running score_file, inherited by its forked workers


def _in_order(jobs: Iterator[tuple[Any, ...]], fn: Any, workers: int) -> Iterator[Any]:
    """fn(*job) for each job, in order; on ``workers`` forked processes, a few jobs ahead at most
    (so memory stays flat however long the file)."""
    if workers <= 1:
        for job in jobs:
            yield fn(*job)
        return
    import collections
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(workers) as pool:
        pending: collections.deque[Any] = collections.deque()
        for job in jobs:
            pending.append(pool.apply_async(fn, job))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def score_file(input_uri: str, output_uri: str, predictor: Any, *, block_rows: int = BLOCK_ROWS,
               progress: bool | None = None, workers: int | None = None) -> ScoreSummary:
    """Price every row of a CSV or Parquet file into ``output_uri`` (CSV or Parquet by its name).

    ``workers`` processes price blocks side by side (default: the machine's cores), each block
    answered in its place; the reading and writing stay in this process.
    """
    global _PREDICTOR
    from gemcast.schema import FEATURES

    summary = ScoreSummary(input_uri, output_uri, model_version=predictor.version)
    started = time.monotonic()
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    predictor.model.fast_predictor()  # built once, before any fork
    _PREDICTOR = predictor
    with local_input(input_uri) as source, local_output(output_uri) as target:
        size = source.stat().st_size
        meter = _Progress(size, sys.stderr.isatty() if progress is None else progress)
        writer = _Writer(target, parquet=_is_parquet(output_uri))
        try:
            if _is_parquet(input_uri):
                total = max(1, _parquet_rows(source))
                for records in _parquet_blocks(source, block_rows):
                    answers = predictor.price(records, reasons=False)
                    columns = list(records[0]) if records else list(FEATURES)
                    writer.write(columns, [[r.get(c) for c in columns] for r in records], answers)
                    _add(summary, _tally(answers))
                    meter.show(summary.rows, size * summary.rows // total)
            else:
                done = 0
                headers: list[list[str] | None] = []

                def jobs() -> Iterator[tuple[Any, ...]]:
                    for header, lines in _csv_blocks(source, block_rows):
                        headers.append(header)
                        yield header, lines, None if writer.parquet else headers[0] or list(FEATURES)

                for out, answers, tally, n_bytes in _in_order(jobs(), _price_csv_block, workers):
                    if answers is None:
                        writer.write_text(headers[0] or list(FEATURES), out)
                    else:
                        writer.write(headers[0] or list(FEATURES), out, answers)
                    _add(summary, tally)
                    done += n_bytes
                    meter.show(summary.rows, done)
        finally:
            writer.close()
            meter.end()
            _PREDICTOR = None
    summary.seconds = time.monotonic() - started
    return summary


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(path).metadata.num_rows)


_Tally = tuple[int, int, Counter[str]]  # rows, priced, rejected by reason


def _tally(answers: list[dict[str, Any]]) -> _Tally:
    from gemcast.cleaning import reason_kind
    from gemcast.schema import Problem

    priced = 0
    rejected: Counter[str] = Counter()
    for answer in answers:
        if "error" in answer:
            for name, reason in answer["error"].get("fields", {}).items():
                rejected[reason_kind(Problem(name, reason))] += 1
        else:
            priced += 1
    return len(answers), priced, rejected


def _add(summary: ScoreSummary, tally: _Tally) -> None:
    summary.rows += tally[0]
    summary.priced += tally[1]
    summary.rejected_by_reason.update(tally[2])


OUTPUT_COLUMNS = ("predicted_price", "error")


class _Writer:
    """The output file: the input's columns, then ``predicted_price`` and ``error``, a row per input row.

    Input columns of those names (a file priced before) are replaced, not repeated.
    """

    def __init__(self, path: Path, *, parquet: bool) -> None:
        self.path = path
        self.parquet = parquet
        self._handle: Any = None
        self._pq: Any = None

    def write(self, columns: list[str], rows: list[list[Any]], answers: list[dict[str, Any]]) -> None:
        columns, rows = _shaped(columns, rows)
        if not self.parquet:
            self.write_text(columns, _csv_text(columns, rows, answers))
            return
        prices = [a.get("price") for a in answers]
        errors = [a["error"]["message"] if "error" in a else None for a in answers]
        if self.parquet:
            import pyarrow as pa
            import pyarrow.parquet as pq

            data = {c: [None if r[i] is None else str(r[i]) for r in rows] for i, c in enumerate(columns)}
            table = pa.table({**data, OUTPUT_COLUMNS[0]: pa.array(prices, pa.float64()),
                              OUTPUT_COLUMNS[1]: pa.array(errors, pa.string())})
            if self._pq is None:
                self._pq = pq.ParquetWriter(self.path, table.schema)
            self._pq.write_table(table.cast(self._pq.schema))

    def write_text(self, columns: list[str], text: str) -> None:
        """CSV output lines made by _csv_text (in a worker), after the header line once."""
        if self._handle is None:
            self._handle = self.path.open("w", newline="", encoding="utf-8")
            header = [c for c in columns if c not in OUTPUT_COLUMNS]
            csv.writer(self._handle, lineterminator="\n").writerow([*header, *OUTPUT_COLUMNS])
        self._handle.write(text)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
        if self._pq is not None:
            self._pq.close()
        if not self.path.exists():
            self.path.write_text("")


def _shaped(columns: list[str], rows: list[list[Any]]) -> tuple[list[str], list[list[Any]]]:
    """The output's input columns and rows: columns named like the output's are dropped, and a
    line of the wrong width (or unreadable) is kept whole in the first column, so every output
    row has the header's width and nothing of the input is lost."""
    keep = [i for i, c in enumerate(columns) if c not in OUTPUT_COLUMNS]
    if len(keep) < len(columns):
        columns = [columns[i] for i in keep]
        rows = [[r[i] for i in keep if i < len(r)] for r in rows]
    width = len(columns)
    rows = [r if len(r) == width else [",".join("" if v is None else str(v) for v in r), *[""] * (width - 1)]
            for r in rows]
    return columns, rows


def _csv_text(columns: list[str], rows: list[list[Any]], answers: list[dict[str, Any]]) -> str:
    """The output lines of shaped rows and their answers: the row, its price, its error."""
    out = io.StringIO()
    lines = csv.writer(out, lineterminator="\n")
    for row, answer in zip(rows, answers, strict=True):
        price = answer.get("price")
        lines.writerow([*row, "" if price is None else price, answer["error"]["message"] if "error" in answer else ""])
    return out.getvalue()


# ----------------------------------------------------------------------------- the platforms' batch engines


def transform_job_request(job_name: str, model_name: str, input_uri: str, output_uri: str, *,
                          instance_type: str = "ml.m5.large", instance_count: int = 1,
                          max_concurrent: int = 2) -> dict[str, Any]:
    """CreateTransformJob for a CSV in S3: split by line, MultiRecord batches of up to 6 MB, each
    answer line joined to its input line, as the serving image answers text/csv."""
    for uri in (input_uri, output_uri):
        if not uri.startswith("s3://"):
            raise StorageError(f"a Batch Transform job reads and writes s3:// URIs, got {uri!r}")
    return {
        "TransformJobName": job_name,
        "ModelName": model_name,
        "MaxConcurrentTransforms": max_concurrent,
        "MaxPayloadInMB": PAYLOAD_MB,
        "BatchStrategy": "MultiRecord",
        "Environment": {"SAGEMAKER_MODEL_SERVER_TIMEOUT": "3600"},
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": input_uri}},
            "ContentType": "text/csv",
            "SplitType": "Line",
            "CompressionType": "None",
        },
        "TransformOutput": {"S3OutputPath": output_uri.rstrip("/") + "/", "Accept": "text/csv",
                            "AssembleWith": "Line"},
        "TransformResources": {"InstanceType": instance_type, "InstanceCount": instance_count},
        "DataProcessing": {"JoinSource": "Input", "OutputFilter": "$"},
    }


def job_name(prefix: str = "gemcast-score") -> str:
    """A job name that is unique enough and valid on both platforms (63 chars, [a-z0-9-])."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return re.sub(r"[^a-z0-9-]", "-", f"{prefix}-{stamp}-{os.getpid() % 10000:04d}")[:63]


def submit_sagemaker(client: Any, input_uri: str, output_uri: str, *, model_name: str,
                     instance_type: str = "ml.m5.large", instance_count: int = 1) -> dict[str, Any]:
    """Start a SageMaker Batch Transform job on the serving image; returns its name and ARN."""
    name = job_name()
    request = transform_job_request(name, model_name, input_uri, output_uri, instance_type=instance_type,
                                    instance_count=instance_count)
    response = client.create_transform_job(**request)
    return {"platform": "sagemaker", "job_name": name, "job_arn": response.get("TransformJobArn"),
            "output": request["TransformOutput"]["S3OutputPath"]}

