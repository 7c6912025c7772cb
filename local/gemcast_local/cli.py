"""``gemcast-local``: the local stack's commands (``up``, ``token``, ``trigger``, ``drift``).

They live here, not in the gemcast package's ``gemcast`` command, because the layer, the image
and the GCP functions ship gemcast without gemcast_local.

    gemcast-local up                 # make demo: the AWS half on this machine
    gemcast-local up --cloud gcp     # make demo-gcp
    TOKEN=$(gemcast-local token)     # an ID token of the demo user
    gemcast-local trigger            # the daily training check, now
    gemcast-local drift              # the drift check of the prediction log; on alarm, the trigger
    gemcast-local drift --cloud gcp  # the same on the GCP half (make demo-gcp)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gemcast-local", description="The gemcast stack on this machine.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = sub.add_parser("up", help="run the whole AWS stack on this machine (make demo); Ctrl-C stops it")
    up.add_argument("--api-port", type=int, default=3000, help="local API gateway port (default 3000)")
    up.add_argument("--web-port", type=int, default=8050, help="web page port (default 8050)")
    up.add_argument("--state", default=".gemcast", help="state and logs folder (default .gemcast)")
    up.add_argument("--kind", choices=("gbm", "linear"), default="gbm", help="model kind (default gbm)")
    up.add_argument("--budget", type=float, default=30.0, help="search budget in seconds (default 30)")
    up.add_argument("--trials", type=int, default=1, help="training search candidates at most (default 1)")
    up.add_argument("--cloud", choices=("aws", "gcp"), default="aws",
                    help="which half to run on its stand-ins (default aws; gcp: make demo-gcp)")
    trigger = sub.add_parser("trigger", help="the daily training check, now, on the running local stack "
                             "(a job trains as a local process)")
    trigger.add_argument("--state", default=".gemcast", help="the local stack's state folder")
    trigger.add_argument("--kind", choices=("gbm", "linear"), help="model kind of the job")
    trigger.add_argument("--budget", type=float, help="the job's search budget in seconds")
    trigger.add_argument("--trials", type=int, help="the job's search candidates at most")
    drift = sub.add_parser("drift", help="the drift check, now, on the running local stack's prediction log; "
                           "on alarm, the training trigger")
    drift.add_argument("--state", default=".gemcast", help="the local stack's state folder")
    drift.add_argument("--cloud", choices=("aws", "gcp"), default="aws",
                       help="which half's running stack (default aws: make demo; gcp: make demo-gcp)")
    drift.add_argument("--event", help="an event file (window_end, window_hours) instead of the last day")
    drift.add_argument("--kind", choices=("gbm", "linear"), help="model kind of a retraining job (aws)")
    drift.add_argument("--budget", type=float, help="that job's search budget in seconds (aws)")
    token = sub.add_parser("token", help="print an ID token of the running local stack's demo user")
    token.add_argument("--state", default=".gemcast", help="the local stack's state (default .gemcast)")
    token.add_argument("--user", help="e-mail of another user of the local pool")
    token.add_argument("--password", help="that user's password")
    return parser


def cmd_up(args: argparse.Namespace) -> int:
    if args.cloud == "gcp":
        from gemcast_local.gcp_stack import GcpStack

        return GcpStack(workdir=Path(args.state) / "gcp", kind=args.kind, train_budget_s=args.budget,
                        trials=args.trials).run()
    from gemcast_local.stack import StackConfig, up

    return up(StackConfig(state_dir=Path(args.state), api_port=args.api_port, web_port=args.web_port,
                          kind=args.kind, budget_s=args.budget, trials=args.trials))


def cmd_token(args: argparse.Namespace) -> int:
    from gemcast_local.stack import token

    print(token(Path(args.state), args.user, args.password))
    return 0


def cmd_trigger(args: argparse.Namespace) -> int:
    from gemcast_local.trigger import run_trigger

    train_args = [f"--{name}={value}" for name in ("kind", "budget", "trials")
                  if (value := getattr(args, name)) is not None]
    print(json.dumps(run_trigger(state_dir=Path(args.state), train_args=train_args), indent=2, sort_keys=True))
    return 0


def cmd_drift(args: argparse.Namespace) -> int:
    from gemcast_local.drift import run_drift

    train_args = [f"--{name}={value}" for name in ("kind", "budget") if (value := getattr(args, name)) is not None]
    print(json.dumps(run_drift(cloud=args.cloud, state_dir=Path(args.state),
                               event_file=Path(args.event) if args.event else None, train_args=train_args),
                     indent=2, sort_keys=True))
    return 0


COMMANDS = {"up": cmd_up, "token": cmd_token, "trigger": cmd_trigger, "drift": cmd_drift}


def main(argv: Sequence[str] | None = None) -> int:
    from gemcast.cli import dispatch

    return dispatch("gemcast-local", COMMANDS, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
