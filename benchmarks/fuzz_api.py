"""A long schemathesis run: every operation of /openapi.json fuzzed, every answer checked against it.

    python benchmarks/fuzz_api.py                     # serves the small test models itself, 1,200 cases
    python benchmarks/fuzz_api.py --model demo        # ... or the shipped demo models
    python benchmarks/fuzz_api.py --url http://127.0.0.1:5000 --key KEY --cases 3000

Without `--url` it starts `glide-api serve` on a free port (small limits and few steps, so each valid
generation is quick), waits for `/readyz`, and stops it at the end. The cases are spread evenly over
the operations, half valid by the document (positive) and half breaking it (negative). Each answer
is checked for: no 5xx, a documented status, content type and headers, a body matching its schema,
and (negative cases) a 4xx. It prints the cases run, the failures by check, and a reproduction
(`curl`) of the first few of each; the exit status is 1 if anything failed.

Not checked: that every valid case is accepted (positive_data_acceptance). The document cannot say
which sizes the loaded models make, nor which respacing strings fit `max_steps`: those are 400s by
the server's rules, named in the answer.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import requests
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

TESTS = Path(__file__).resolve().parents[1] / "tests"
CHECKS = (
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
)
NEGATIVE_CHECKS = (negative_data_rejection,)
SHOWN_PER_CHECK = 3
# The served app: few steps and small batches keep a valid generation under a second on a CPU.
SERVE_FLAGS = (
    "--base-steps=2",
    "--upsample-steps=2",
    "--max-steps=4",
    "--max-batch-size=2",
    "--max-prompt-chars=300",
    "--sync-timeout=60",
    "--device=cpu",
    "--precision=fp32",
    "--log-level=warning",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="fuzz this running server instead of starting one")
    parser.add_argument("--key", help="API key to send (Authorization: Bearer KEY)")
    parser.add_argument("--model", choices=("small", "demo"), default="small", help="models to serve")
    parser.add_argument("--cases", type=int, default=1200, help="cases in all (default: 1200)")
    parser.add_argument("--seed", type=int, default=0, help="another seed, other cases")
    args = parser.parse_args()
    if args.url:
        return fuzz(args.url.rstrip("/"), args)
    with serve(args.model) as url:
        return fuzz(url, args)


def fuzz(url: str, args: argparse.Namespace) -> int:
    headers = {"Authorization": f"Bearer {args.key}"} if args.key else {}
    document = requests.get(f"{url}/openapi.json", timeout=30).json()
    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations()]
    modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    per_run = math.ceil(args.cases / (len(operations) * len(modes)))
    ran: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    failures: dict[str, list[tuple[str, str, str]]] = defaultdict(list)  # check -> (operation, title, curl)

    def send(case, mode: GenerationMode) -> None:
        """One case: send it, then run each check on its own so that failures count by check."""
        ran[mode.value] += 1
        curl = case.as_curl_command(headers=headers, base_url=url)
        try:
            response = case.call(base_url=url, headers=headers, timeout=120)
        except requests.RequestException as e:
            failures["transport"].append((case.operation.label, type(e).__name__, curl))
            return
        statuses[response.status_code] += 1
        for check in CHECKS + (NEGATIVE_CHECKS if mode is GenerationMode.NEGATIVE else ()):
            try:
                case.validate_response(response, checks=[check], headers=headers)
            except (FailureGroup, Failure) as e:
                for failure in e.exceptions if isinstance(e, FailureGroup) else (e,):
                    failures[check.__name__].append((case.operation.label, failure.title, curl))

    start = time.monotonic()
    print(f"fuzzing {url}: {len(operations)} operations, positive and negative cases", flush=True)
    # Rounds of up to `per_run` cases per operation and mode, with new seeds, until `--cases` ran
    # (hypothesis stops early on an operation with few distinct cases, such as one without input).
    for round_ in itertools.count():
        for i, operation in enumerate(operations):
            for j, mode in enumerate(modes):
                run_cases(operation, mode, per_run, hash((args.seed, round_, i, j)) % 2**32, send)
        total = sum(ran.values())
        print(f"  round {round_ + 1}: {total} cases, {sum(map(len, failures.values()))} failures", flush=True)
        if total >= args.cases:
            break
    report(ran, statuses, failures, time.monotonic() - start)
    return 1 if failures else 0


def run_cases(operation, mode: GenerationMode, examples: int, seed_value: int, send) -> None:
    """`examples` cases of `operation` in `mode`, each handed to `send` (which never raises: a
    failure is counted, not shrunk)."""

    @seed(seed_value)
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def run(case) -> None:
        send(case, mode)

    with contextlib.suppress(Unsatisfiable):  # nothing to negate: no parameters, no body
        run()


def report(
    ran: Counter[str], statuses: Counter[int], failures: dict[str, list[tuple[str, str, str]]], seconds: float
) -> None:
    total = sum(ran.values())
    print(f"\ncases run: {total} ({', '.join(f'{n} {mode}' for mode, n in ran.items())}) in {seconds:.0f} s")
    print("answers by status: " + ", ".join(f"{status}: {n}" for status, n in sorted(statuses.items())))
    if not failures:
        print("failures: none")
        return
    print("failures by check:")
    for check, found in sorted(failures.items()):
        kinds = Counter((operation, title) for operation, title, _ in found)
        print(f"  {check}: {len(found)}")
        for (operation, title), n in kinds.most_common():
            print(f"    {n} x {operation}: {title}")
        for _, title, curl in found[:SHOWN_PER_CHECK]:
            print(f"    e.g. ({title})\n      {curl}")


class serve:
    """`glide-api serve` with `model` ("small": the test suite's golden small models, with
    inpainting; "demo": the shipped demo) on a free port, until the block ends."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.folder = tempfile.TemporaryDirectory(prefix="glide-fuzz-")

    def __enter__(self) -> str:
        port = free_port()
        flags = [f"--port={port}", *SERVE_FLAGS, *self._model_flags()]
        env = os.environ | {"GLIDE_API_OFFLINE": "1"}
        self.process = subprocess.Popen([sys.executable, "-m", "glide_api.cli", "serve", *flags], env=env)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"glide-api serve exited with {self.process.returncode}")
            try:
                if requests.get(f"{url}/readyz", timeout=5).status_code == 200:
                    return url
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        self.__exit__()
        raise SystemExit("glide-api serve: not ready within 300 s")

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.folder.cleanup()

    def _model_flags(self) -> list[str]:
        if self.model == "demo":
            return ["--model=demo"]
        sys.path.insert(0, str(TESTS))  # tests/small_models.py writes the golden small models
        from small_models import write_small_model_folders

        folders = write_small_model_folders(Path(self.folder.name))
        roles = {"base": "small-base", "upsample": "small-upsample"}
        roles |= {"base-inpaint": "small-base-inpaint", "upsample-inpaint": "small-upsample-inpaint"}
        return [f"--{role}={folders[name]}" for role, name in roles.items()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
