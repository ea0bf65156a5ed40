#!/usr/bin/env python
"""Train the speech evaluator (word recogniser + voice classifier) on espeak-ng audio.

Example:
    PYTHONPATH=. python scripts/train_speech_evaluator.py --out assets/speech-evaluator
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from genaccel.training.speech_evaluator import train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("assets/speech-evaluator"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    log = train(args.out, seed=args.seed, steps=args.steps)
    print(json.dumps(log, indent=2))


if __name__ == "__main__":
    main()
