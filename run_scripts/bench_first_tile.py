"""A benchmark child (run_scripts/benchmark.py, startup section): run_infer.py with its arguments,
printing as JSON the wall time at which the network first encodes (process start to first tile)."""
from __future__ import annotations

import json
import sys
import time

import run_infer


def main(argv=None) -> int:
    run_infer.build_parser().parse_args(argv)  # --help and bad flags as run_infer.py's, before torch
    from models import densefuse
    first, encode = [], densefuse.DenseFuse.encode

    def timed_encode(self, x):  # wraps the class's method: run_infer builds the model itself
        if not first:
            first.append(time.time())
        return encode(self, x)
    densefuse.DenseFuse.encode = timed_encode
    if run_infer.main(argv) != 0:
        return 1
    print(json.dumps({"first_tile": first[0]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
