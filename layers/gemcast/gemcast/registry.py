"""The model registry: model packages, their history, the promotion gate and the champion.

Layout under the registry URI (``s3://bucket/models``, ``gs://...``, ``file:///...``)::

    <version>/model.npz          the model (numpy arrays, never a pickle)
    <version>/metrics.json       held-out metrics
    <version>/model_card.md      the model card, with pred_vs_actual.svg
    <version>/pred_vs_actual.svg
    <version>/rejected.jsonl     rows the training data lost, with reasons (when any)
    <version>/manifest.json      written last: sha256 of every file above, and the rest
    champion.json                the version in service, with the promotion history

A version exists once its manifest exists; a model file is loaded only when its sha256
matches the manifest. The champion pointer is one object, replaced whole (an atomic rename
on file://, a single PUT on S3 and Cloud Storage).
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gemcast.errors import GateError, IntegrityError, NotFoundError, StorageError
from gemcast.storage import Storage, open_storage

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
CHAMPION = "champion.json"
MODEL_FILE = "model.npz"
GATE_METRICS = ("mae", "mape", "rmse")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_version(now: datetime | None = None) -> str:
    """Sortable, unique version id: UTC time to the millisecond plus 6 random hex digits (two
    runs at the same moment, even of the same data and parameters, get different versions)."""
    moment = now or datetime.now(UTC)
    return f"{moment.strftime('%Y%m%dT%H%M%S')}{moment.microsecond // 1000:03d}Z-{secrets.token_hex(3)}"


@dataclass
class ModelPackage:
    """What training hands to the registry: files by name, and the manifest's fields."""

    files: dict[str, bytes]
    manifest: dict[str, Any]


@dataclass
class LoadedModel:
    version: str
    manifest: dict[str, Any]
    model: Any  # gemcast.model.Model


@dataclass
class GateDecision:
    promote: bool
    metric: str
    candidate: float
    champion: float | None
    margin: float
    reason: str
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "promote": self.promote,
            "metric": self.metric,
            "candidate": self.candidate,
            "champion": self.champion,
            "margin": self.margin,
            "reason": self.reason,
        }


def gate(
    candidate: Mapping[str, float],
    champion: Mapping[str, float] | None,
    *,
    metric: str = "mae",
    margin: float = 0.0,
) -> GateDecision:
    """Promote only when the candidate beats the champion, on the same rows, by ``margin``.

    ``margin`` is relative: 0.01 asks for an error at least 1 % lower than the champion's.
    With margin 0 the candidate must still be strictly better: an equal model changes nothing.
    """
    if metric not in GATE_METRICS:
        raise GateError(f"unknown gate metric {metric!r}: use one of {', '.join(GATE_METRICS)}")
    if margin < 0 or margin >= 1:
        raise GateError(f"gate margin must be in [0, 1), got {margin}")
    score = float(candidate[metric])
    if champion is None:
        return GateDecision(True, metric, score, None, margin, "no champion yet")
    best = float(champion[metric])
    needed = best * (1.0 - margin)
    if score < needed:
        reason = f"{metric} {score:.4g} beats the champion's {best:.4g} (needed < {needed:.4g})"
        return GateDecision(True, metric, score, best, margin, reason)
    reason = f"{metric} {score:.4g} does not beat the champion's {best:.4g} (needed < {needed:.4g})"
    return GateDecision(False, metric, score, best, margin, reason)


class Registry:
    """Model packages under one storage URI."""

    def __init__(self, uri: str, storage: Storage | None = None) -> None:
        self.uri = uri
        self.storage = storage if storage is not None else open_storage(uri)

    # -- writing --------------------------------------------------------------------------
    def publish(self, package: ModelPackage) -> str:
        """Write a package; the manifest goes last, so a half-written version never exists."""
        manifest = dict(package.manifest)
        version = str(manifest["version"])
        if self.storage.exists(f"{version}/{MANIFEST}"):
            raise StorageError(f"version {version} already exists in {self.uri}")
        if MODEL_FILE not in package.files:
            raise StorageError(f"a model package needs {MODEL_FILE}")
        manifest["files"] = {name: sha256_hex(data) for name, data in sorted(package.files.items())}
        manifest["sizes"] = {name: len(data) for name, data in sorted(package.files.items())}
        for name, data in package.files.items():
            self.storage.write_bytes(f"{version}/{name}", data, _content_type(name))
        self.storage.write_bytes(f"{version}/{MANIFEST}", _dump(manifest), "application/json")
        return version

    # -- reading --------------------------------------------------------------------------
    def versions(self) -> list[str]:
        keys = self.storage.list("")
        return sorted({k.split("/")[0] for k in keys if k.endswith("/" + MANIFEST) and k.count("/") == 1})

    def manifest(self, version: str) -> dict[str, Any]:
        try:
            return dict(json.loads(self.storage.read_bytes(f"{version}/{MANIFEST}")))
        except NotFoundError as exc:
            raise NotFoundError(f"no model version {version!r} in {self.uri}") from exc

    def history(self) -> list[dict[str, Any]]:
        """Every model trained, oldest first, with its metrics and whether it is in service."""
        champion = self.champion()
        current = champion["version"] if champion else None
        rows = []
        for version in self.versions():
            m = self.manifest(version)
            rows.append(
                {
                    "version": version,
                    "created": m.get("created"),
                    "kind": m.get("model", {}).get("kind"),
                    "snapshot_id": m.get("data", {}).get("snapshot_id"),
                    "trained_on": trained_on(m),
                    "metrics": m.get("metrics", {}).get("holdout", {}),
                    "gate": m.get("gate"),
                    "champion": version == current,
                }
            )
        return rows

    def read_file(
        self, version: str, name: str, *, verify: bool = True, manifest: dict[str, Any] | None = None
    ) -> bytes:
        """A file of a version, checked against the manifest's sha256 (``manifest``: the
        version's manifest when the caller has already read it)."""
        manifest = manifest if manifest is not None else self.manifest(version)
        expected = manifest.get("files", {}).get(name)
        if expected is None:
            raise NotFoundError(f"version {version} has no file {name!r}")
        data = self.storage.read_bytes(f"{version}/{name}")
        if verify and sha256_hex(data) != expected:
            raise IntegrityError(
                f"{self.uri}/{version}/{name} does not match its manifest: sha256 {sha256_hex(data)} "
                f"!= {expected}; refusing to load it"
            )
        return data

    def load(self, version: str) -> LoadedModel:
        from gemcast.model import load_model

        manifest = self.manifest(version)
        data = self.read_file(version, MODEL_FILE, manifest=manifest)
        # A package folder copied elsewhere (SageMaker's /opt/ml/model) keeps its own version name.
        return LoadedModel(str(manifest.get("version", version)), manifest, load_model(data))

    # -- the champion ---------------------------------------------------------------------
    def champion(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads(self.storage.read_bytes(CHAMPION)))
        except NotFoundError:
            return None

    def load_champion(self) -> LoadedModel:
        pointer = self.champion()
        if pointer is None:
            raise NotFoundError(f"no champion in {self.uri}: train and promote a model first")
        return self.load(pointer["version"])

    def promote(self, version: str, *, reason: str, action: str = "promote") -> dict[str, Any]:
        """Make ``version`` the champion (its package is verified first)."""
        manifest = self.manifest(version)
        self.read_file(version, MODEL_FILE, manifest=manifest)  # refuses a tampered or missing model, loudly
        previous = self.champion()
        history = list(previous.get("history", [])) if previous else []
        entry = {"version": version, "at": utc_now(), "action": action, "reason": reason}
        history.append(entry)
        pointer = {
            "version": version,
            "promoted_at": entry["at"],
            "reason": reason,
            "previous": previous["version"] if previous else None,
            "metrics": manifest.get("metrics", {}).get("holdout", {}),
            "snapshot_id": manifest.get("data", {}).get("snapshot_id"),
            "model_uri": f"{self.uri.rstrip('/')}/{version}/{MODEL_FILE}",
            "history": history,
        }
        self.storage.write_bytes(CHAMPION, _dump(pointer), "application/json")
        logger.info("champion is now %s (%s)", version, reason)
        return pointer

    def rollback(self, version: str | None = None) -> dict[str, Any]:
        """Put back ``version``, or the champion before the current one."""
        pointer = self.champion()
        if pointer is None:
            raise NotFoundError(f"no champion in {self.uri}: nothing to roll back")
        if version is None:
            version = pointer.get("previous")
            if not version:
                raise NotFoundError(f"the champion {pointer['version']} has no earlier champion")
        if version == pointer["version"]:
            raise GateError(f"{version} is already the champion")
        return self.promote(version, reason=f"rollback from {pointer['version']}", action="rollback")


def trained_on(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The data a version was trained on: snapshot, date, row counts, carat range."""
    data = manifest.get("data", {})
    return {
        "snapshot_id": data.get("snapshot_id"),
        "date": manifest.get("created"),
        "rows": data.get("rows"),
        "accepted": data.get("accepted"),
        "rejected": data.get("rejected"),
        "train_rows": data.get("train_rows"),
        "holdout_rows": data.get("holdout_rows"),
        "carat_range": data.get("carat_range"),
    }


def _dump(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def _content_type(name: str) -> str:
    return {
        ".json": "application/json",
        ".md": "text/markdown",
        ".svg": "image/svg+xml",
        ".jsonl": "application/x-ndjson",
    }.get(name[name.rfind("."):], "application/octet-stream")
