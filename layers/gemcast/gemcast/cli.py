"""The ``gemcast`` command: train, predict, models, serve, score (the local stack's commands are
``gemcast-local``'s, in gemcast_local: nothing here reaches local code).

Every form prints what scripts rely on (``--json`` where a machine reads it) and exits
non-zero with a one-line error naming the problem.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gemcast.errors import GemcastError

DEFAULT_REGISTRY_ENV = "REGISTRY_URI"


def _registry_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--registry",
        default=os.environ.get(DEFAULT_REGISTRY_ENV),
        required=DEFAULT_REGISTRY_ENV not in os.environ,
        help="registry URI: file:///path, s3://bucket/models or gs://bucket/models (default: $REGISTRY_URI)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gemcast", description="Diamond pricing: train, serve, predict.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="clean data, train, score, gate and promote a model")
    train.add_argument("--data", required=True, help="CSV path or URI, or a folder URI ending in '/'")
    _registry_arg(train)
    train.add_argument("--kind", choices=("gbm", "linear"), default="gbm", help="model kind (default gbm)")
    train.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    train.add_argument("--budget", type=float, default=60.0, help="search time budget in seconds (default 60)")
    train.add_argument("--trials", type=int, default=6, help="search candidates at most (default 6)")
    train.add_argument("--max-iter", type=int, default=1500, help="boosting rounds at most (default 1500)")
    train.add_argument("--gate-metric", choices=("mae", "mape", "rmse"), default="mae")
    train.add_argument("--margin", type=float, default=float(os.environ.get("PROMOTION_MARGIN", "0") or 0),
                       help="relative improvement over the champion needed to promote (default 0)")
    train.add_argument("--no-promote", action="store_true", help="publish but never promote")
    train.add_argument("--json", action="store_true", help="print the outcome as JSON")

    predict = sub.add_parser("predict", help="price stones with the champion (or --version)")
    _registry_arg(predict)
    predict.add_argument("--json", dest="stones", required=True,
                         help='a stone or a list of stones as JSON, e.g. \'{"carat": 0.7, "cut": "Ideal", ...}\'')
    predict.add_argument("--version", help="a model version (default: the champion)")
    predict.add_argument("--no-reasons", action="store_true", help="prices only")
    predict.add_argument("--coverage", type=float, default=80,
                         help="percent of stones whose true price the range holds: 50, 80, 90 or 95 (default 80)")
    predict.add_argument("--what-if", action="store_true",
                         help="also price the stone one grade up and down, and at the next carat milestone")

    models = sub.add_parser("models", help="list, show, promote or roll back model versions")
    msub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    mlist = msub.add_parser("list", help="every model trained, with metrics; * marks the champion")
    _registry_arg(mlist)
    mlist.add_argument("--json", action="store_true")
    mshow = msub.add_parser("show", help="a version's manifest")
    mshow.add_argument("version")
    _registry_arg(mshow)
    mpromote = msub.add_parser("promote", help="make a version the champion (its sha256 is checked)")
    mpromote.add_argument("version")
    mpromote.add_argument("--reason", default="promoted by hand")
    _registry_arg(mpromote)
    mrollback = msub.add_parser("rollback", help="put back the previous champion, or VERSION")
    mrollback.add_argument("version", nargs="?")
    _registry_arg(mrollback)

    serve = sub.add_parser("serve", help="the model server (SageMaker and Vertex AI contracts)")
    where = serve.add_mutually_exclusive_group(required=DEFAULT_REGISTRY_ENV not in os.environ)
    where.add_argument("--registry", default=os.environ.get(DEFAULT_REGISTRY_ENV),
                       help="registry URI; serves the champion, or --version (default: $REGISTRY_URI)")
    where.add_argument("--model-dir", help="one model package folder URI (REGISTRY/VERSION), e.g. AIP_STORAGE_URI")
    serve.add_argument("--version", help="a pinned model version (default: the champion)")
    serve.add_argument("--port", type=int, default=None,
                       help="port (default $SAGEMAKER_BIND_TO_PORT, $AIP_HTTP_PORT or 8080)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 in the image)")
    serve.add_argument("--workers", type=int, default=None, help="worker processes (default: cores)")

    score = sub.add_parser("score", help="price a whole CSV or Parquet file (locally, or on SageMaker/Vertex batch)")
    score.add_argument("--input", required=True, help="CSV or Parquet: a path, file://, s3:// or gs:// URI")
    score.add_argument("--output", required=True, help="where the priced file goes (.parquet for Parquet); "
                       "with --on, the job's output prefix")
    score.add_argument("--on", choices=("sagemaker", "vertex"), help="submit a batch job instead of pricing here")
    score.add_argument("--registry", default=os.environ.get(DEFAULT_REGISTRY_ENV),
                       help="registry URI, to price locally (default: $REGISTRY_URI)")
    score.add_argument("--version", help="a model version to price locally with (default: the champion)")
    score.add_argument("--model", default=os.environ.get("GEMCAST_BATCH_MODEL"),
                       help="with --on: the SageMaker model name or Vertex model resource on the serving image "
                       "(default: $GEMCAST_BATCH_MODEL)")
    score.add_argument("--instance-type", help="with --on: ml.m5.large (SageMaker) or n1-standard-2 (Vertex)")
    score.add_argument("--instances", type=int, default=1, help="with --on: instances or replicas (default 1)")
    score.add_argument("--project", default=os.environ.get("GOOGLE_CLOUD_PROJECT"), help="with --on vertex")
    score.add_argument("--region", default=os.environ.get("GOOGLE_CLOUD_REGION", "us-central1"),
                       help="with --on vertex (default us-central1)")
    score.add_argument("--json", action="store_true", help="print the summary as JSON")

    return parser


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True))


def cmd_train(args: argparse.Namespace) -> int:
    from gemcast.pipeline import run_training

    outcome = run_training(
        args.data,
        args.registry,
        kind=args.kind,
        seed=args.seed,
        budget_s=args.budget,
        max_trials=args.trials,
        max_iter=args.max_iter,
        gate_metric=args.gate_metric,
        margin=args.margin,
        promote=not args.no_promote,
    )
    if args.json:
        _print_json({"version": outcome.version, "metrics": outcome.metrics, "promoted": outcome.promoted,
                     "gate": outcome.decision.as_dict()})
    else:
        m = outcome.metrics
        print(f"version   {outcome.version}")
        print(f"metrics   MAE ${m['mae']:.2f}  MAPE {m['mape']:.3f} %  RMSE ${m['rmse']:.2f}  R2 {m['r2']:.4f}"
              f"  ({m['n']} held-out stones)")
        print(f"gate      {'PASS' if outcome.decision.promote else 'FAIL'}: {outcome.decision.reason}")
        print(f"champion  {'promoted' if outcome.promoted else 'unchanged'}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from gemcast.answer import check_coverage
    from gemcast.predict import Predictor, PriceOptions, parse_instances
    from gemcast.registry import Registry

    coverage = check_coverage(args.coverage)
    try:
        body = json.loads(args.stones)
    except json.JSONDecodeError as exc:
        raise GemcastError(f"--json is not valid JSON: {exc}") from exc
    stones, single = parse_instances(body)
    registry = Registry(args.registry)
    loaded = registry.load(args.version) if args.version else registry.load_champion()
    options = PriceOptions(reasons=not args.no_reasons, coverage=coverage, what_if=args.what_if)
    results = Predictor(loaded.model, loaded.version).price(stones, options)
    out: dict[str, Any] = {"model_version": loaded.version}
    if single:
        out.update(results[0])
    else:
        out["predictions"] = results
    _print_json(out)
    return 1 if all("error" in r for r in results) else 0


def cmd_models(args: argparse.Namespace) -> int:
    from gemcast.registry import Registry

    registry = Registry(args.registry)
    action = args.models_command
    if action == "list":
        rows = registry.history()
        if args.json:
            _print_json(rows)
            return 0
        if not rows:
            print(f"no models in {args.registry}")
            return 0
        print(f"  {'version':<29} {'kind':<7} {'MAE':>9} {'MAPE %':>8} {'R2':>7}  {'gate':<5} snapshot")
        for r in rows:
            m = r["metrics"] or {}
            gate_text = "pass" if (r.get("gate") or {}).get("promote") else "fail"
            print(f"{'*' if r['champion'] else ' '} {r['version']:<29} {r['kind'] or '?':<7} "
                  f"{m.get('mae', float('nan')):>9.2f} {m.get('mape', float('nan')):>8.3f} "
                  f"{m.get('r2', float('nan')):>7.4f}  {gate_text:<5} {r['snapshot_id']}")
        return 0
    if action == "show":
        _print_json(registry.manifest(args.version))
        return 0
    if action == "promote":
        pointer = registry.promote(args.version, reason=args.reason)
        print(f"champion is now {pointer['version']}")
        return 0
    pointer = registry.rollback(args.version)
    print(f"champion is now {pointer['version']} (rolled back from {pointer['previous']})")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from gemcast.container import serve_port
    from gemcast.serving import run_server

    port = args.port if args.port is not None else int(serve_port(os.environ))
    registry, version = args.registry, args.version
    if args.model_dir:
        registry, _, version = args.model_dir.rstrip("/").rpartition("/")
    return run_server(registry, version=version, host=args.host, port=port, workers=args.workers)


def cmd_score(args: argparse.Namespace) -> int:
    from gemcast import scoring

    if args.on:
        if not args.model:
            raise GemcastError("--on needs --model (or $GEMCAST_BATCH_MODEL): the model on the serving image")
        if args.on == "sagemaker":
            import boto3

            job = scoring.submit_sagemaker(boto3.client("sagemaker"), args.input, args.output, model_name=args.model,
                                           instance_type=args.instance_type or "ml.m5.large",
                                           instance_count=args.instances)
        else:
            from gemcast.gcp import job_client, submit_batch_prediction

            if not args.project:
                raise GemcastError("--on vertex needs --project (or $GOOGLE_CLOUD_PROJECT)")
            endpoint = os.environ.get("VERTEX_API_ENDPOINT") or f"{args.region}-aiplatform.googleapis.com"
            job = submit_batch_prediction(job_client(endpoint), project=args.project, region=args.region,
                                          model=args.model, input_uri=args.input, output_uri=args.output,
                                          display_name=scoring.job_name(),
                                          machine_type=args.instance_type or "n1-standard-2", replicas=args.instances)
        _print_json(job)
        return 0
    if not args.registry:
        raise GemcastError("pricing locally needs --registry (or $REGISTRY_URI)")
    from gemcast.predict import Predictor
    from gemcast.registry import Registry

    registry = Registry(args.registry)
    loaded = registry.load(args.version) if args.version else registry.load_champion()
    summary = scoring.score_file(args.input, args.output, Predictor(loaded.model, loaded.version)).as_dict()
    if args.json:
        _print_json(summary)
    else:
        print(f"priced    {summary['priced']:,} of {summary['rows']:,} rows with {summary['model_version']} "
              f"in {summary['seconds']:.1f} s ({summary['rows_per_second'] or 0:,} rows/s) -> {summary['output']}")
        for reason, count in summary["rejected_by_reason"].items():
            print(f"rejected  {count:>9,}  {reason}")
    return 0


COMMANDS = {"train": cmd_train, "predict": cmd_predict, "models": cmd_models, "serve": cmd_serve,
            "score": cmd_score}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    return dispatch("gemcast", COMMANDS, parser.parse_args(argv))


def dispatch(prog: str, commands: Mapping[str, Callable[[argparse.Namespace], int]],
             args: argparse.Namespace) -> int:
    """Run the chosen command with logging on stderr; a GemcastError is one line and exit 2
    (the one way both command lines, ``gemcast`` and ``gemcast-local``, end on an error)."""
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return commands[args.command](args)
    except GemcastError as exc:
        print(f"{prog} {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
