"""Bad input, tried many more times: runs tests/test_fuzz.py with N inputs per property.

    python bench/fuzz.py                  # 2,000 inputs per property, a random seed
    python bench/fuzz.py --examples 500 --seed 7

Prints how many inputs each property tried and how they ended (accepted, refused with a
clear error, known escapes that bugs are filed for); exits non-zero if any property failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000, help="inputs per property")
    parser.add_argument("--seed", type=int, default=None, help="default: a random one")
    parser.add_argument("-k", default=None, help="only the properties matching (pytest -k)")
    args = parser.parse_args(argv)
    chosen = args.seed if args.seed is not None else random.randrange(2**32)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "fuzz.json"
        env = {
            **os.environ,
            "LOPPER_FUZZ_EXAMPLES": str(args.examples),
            "LOPPER_FUZZ_SEED": str(chosen),
            "LOPPER_FUZZ_REPORT": str(report),
        }
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--show-capture=no",
        ]
        command += ["tests/test_fuzz.py", *(["-k", args.k] if args.k else [])]
        print(f"seed {chosen}, {args.examples:,} inputs per property: {' '.join(command[1:])}")
        start = time.perf_counter()
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        summary = [line for line in result.stdout.splitlines() if line.strip()][-1:]
        data = json.loads(report.read_text()) if report.exists() else {"tried": {}, "outcomes": {}}
    total = sum(data["tried"].values())
    for test, count in sorted(data["tried"].items()):
        ends = ", ".join(
            f"{outcome.split(': ', 1)[1]} {n:,}"
            for outcome, n in sorted(data["outcomes"].items())
            if outcome.startswith(test + ": ")
        )
        print(f"{test}: {count:,} inputs ({ends})")
    print(f"total: {total:,} inputs in {seconds:.0f} s; pytest: {' '.join(summary)}")
    if result.returncode != 0:
        print(result.stdout[-6000:], file=sys.stderr)
    return result.returncode


if __name__ == "__main__":
    raise SystemExit(main())
