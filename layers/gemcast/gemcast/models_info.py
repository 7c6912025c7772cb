"""What the registry says about the models, for the API: the champion, its card, the history.

``current_model`` answers GET /v1/models/current, ``current_card`` GET /v1/models/current/card
and ``model_history`` GET /v1/models, on every cloud alike (the registry is a storage URI).
"""

from __future__ import annotations

from typing import Any

from gemcast.errors import NotFoundError
from gemcast.registry import Registry, trained_on

_NO_CHAMPION = "no model has been promoted yet: train and promote one first"


def _champion(registry: Registry) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """The champion's pointer, version and manifest; NotFoundError when none was promoted."""
    pointer = registry.champion()
    if pointer is None:
        raise NotFoundError(_NO_CHAMPION)
    version = str(pointer["version"])
    return pointer, version, registry.manifest(version)


def current_model(registry: Registry) -> dict[str, Any]:
    """The champion: version, held-out metrics, and the data snapshot it was trained on."""
    pointer, version, manifest = _champion(registry)
    return {
        "version": version,
        "promoted_at": pointer.get("promoted_at"),
        "promotion_reason": pointer.get("reason"),
        "created": manifest.get("created"),
        "kind": manifest.get("model", {}).get("kind"),
        "metrics": manifest.get("metrics", {}).get("holdout", {}),
        "trained_on": trained_on(manifest),
    }


def current_card(registry: Registry) -> dict[str, Any]:
    """The champion's model card (Markdown) and its predicted-vs-actual plot (SVG text),
    both checked against the manifest's sha256 before they are served."""
    from gemcast.card import PLOT_FILE

    _, version, manifest = _champion(registry)
    return {
        "version": version,
        "markdown": registry.read_file(version, "model_card.md", manifest=manifest).decode(),
        "plot_svg": registry.read_file(version, PLOT_FILE, manifest=manifest).decode(),
    }


def model_history(registry: Registry) -> dict[str, Any]:
    """Every version trained, newest first: metrics, data snapshot and row counts, the gate's
    decision and reason, and which one is in service (``champion``)."""
    champion = registry.champion()
    promotions: dict[str, str] = {}
    for entry in (champion or {}).get("history", []):
        promotions[str(entry.get("version"))] = str(entry.get("at") or "")
    models = []
    for row in reversed(registry.history()):
        gate = row.get("gate") or {}
        models.append({
            "version": row["version"],
            "created": row.get("created"),
            "kind": row.get("kind"),
            "metrics": row.get("metrics") or {},
            "trained_on": row.get("trained_on") or {},
            "gate": {"promote": gate.get("promote"), "metric": gate.get("metric"),
                     "reason": gate.get("reason")} if gate else None,
            "champion": bool(row.get("champion")),
            "last_promoted_at": promotions.get(row["version"]),
        })
    return {
        "count": len(models),
        "champion": champion["version"] if champion else None,
        "models": models,
    }
