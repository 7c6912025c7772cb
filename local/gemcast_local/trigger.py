"""``gemcast-local trigger``: the schedule's handler, run now against the local stack, where a
training job is the image's ``train`` entrypoint as a subprocess instead of AWS Batch.

The handler (functions/schedule_trigger/app.py) makes the same decision as in the cloud:
train only when the curated data changed since the champion, at most once per data
snapshot (its idempotency records live in the local stack's DynamoDB table). Only the
submitter differs, and this module is the one place that knows.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from gemcast.errors import GemcastError
from gemcast.trigger import Submitter, TrainingPlan, job_name


class LocalJobError(GemcastError):
    """The local training job exited with an error (its output says why)."""


def train_command(plan: TrainingPlan, extra_args: Sequence[str] = ()) -> list[str]:
    """What the AWS Batch job definition runs in the training image, for this plan."""
    return [sys.executable, "-m", "gemcast.container", "train",
            "--data", plan.data_uri, "--registry", plan.registry_uri, *extra_args]


def local_submitter(*, env: Mapping[str, str] | None = None, extra_args: Sequence[str] = (),
                    output: TextIO | None = None) -> Submitter:
    """Run the training job to its end; its output goes to ``output`` (default stderr).

    A failed job raises, so the idempotency record of its snapshot is released and the next
    trigger tries again; in AWS a submitted job counts as done, whatever it does later.
    """

    def submit(plan: TrainingPlan) -> dict[str, Any]:
        name = job_name(plan)
        stream = output or sys.stderr
        print(f"[local job {name}] {' '.join(train_command(plan, extra_args)[1:])}", file=stream, flush=True)
        started = time.monotonic()
        process = subprocess.run(train_command(plan, extra_args), env={**os.environ, **(env or {})},
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
        stream.write(process.stdout)
        stream.flush()
        if process.returncode != 0:
            raise LocalJobError(f"training job {name} failed with exit code {process.returncode}")
        return {"job_id": f"local-{name}", "job_name": name, "exit_code": 0,
                "seconds": round(time.monotonic() - started, 1)}

    return submit


def run_trigger(*, state_dir: Path | None = None, train_args: Sequence[str] = ()) -> dict[str, Any]:
    """Invoke the schedule's handler against the running local stack; its response.

    ``train_args`` go to the job's ``train`` command (``--kind linear``, ``--budget 10``).
    """
    from gemcast_local.invoke import STATE_DIR, invoke

    response: dict[str, Any] = invoke("schedule_trigger", "daily", state_dir=state_dir or STATE_DIR,
                                      train_args=train_args, require_stack=True)
    return response
