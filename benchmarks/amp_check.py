"""Mixed-precision check: each task's training loss on one fixed batch under fp32, bf16-mixed and
16-mixed (same weights), plus the relative difference to fp32. Run on a GPU machine:

    python benchmarks/amp_check.py               # cuda if available, else cpu (fp32 + bf16 only)
    python benchmarks/amp_check.py --device cuda --size 224

A loss reported as nan means the loss or a gradient was not finite.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from lw_lightning.precision_check import PRECISIONS, TASKS, compare  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=112, help="image side (multiple of 28)")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    args = parser.parse_args()
    precisions = PRECISIONS if args.device.startswith("cuda") else ("32-true", "bf16-mixed")
    if args.device.startswith("cuda") and not torch.cuda.is_bf16_supported():
        precisions = ("32-true", "16-mixed")
    table = compare(args.device, precisions, tuple(args.tasks), size=args.size)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"device: {name}  torch {torch.__version__}  size {args.size}")
    print(f"{'task':<16}" + "".join(f"{p:>14}" for p in precisions) + "".join(f"{'rel ' + p:>18}" for p in precisions[1:]))
    ok = True
    for task, losses in table.items():
        rel = [abs(losses[p] - losses["32-true"]) / abs(losses["32-true"]) for p in precisions[1:]]
        ok &= all(math.isfinite(losses[p]) for p in precisions) and all(r < 3e-2 for r in rel)
        print(f"{task:<16}" + "".join(f"{losses[p]:>14.6f}" for p in precisions) + "".join(f"{r:>18.2e}" for r in rel))
    print("all finite and within 3% of fp32" if ok else "FAILED: a loss is not finite or differs from fp32 by 3% or more")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
