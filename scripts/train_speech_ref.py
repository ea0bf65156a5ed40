#!/usr/bin/env python
"""Train genaccel's own TTS, ``speech-ref`` (phoneme encoder + duration predictor, flow-matching
mel DiT, Griffin-Lim), on espeak-ng renderings of the corpus sentences.

Full run (the reference model; 120 minutes on one core):
    PYTHONPATH=. OMP_NUM_THREADS=1 python scripts/train_speech_ref.py --out assets/speech-ref --minutes 120
Smoke run (losses fall within a few minutes):
    PYTHONPATH=. OMP_NUM_THREADS=1 python scripts/train_speech_ref.py --out /tmp/speech-ref-smoke --minutes 4
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from genaccel.training.speech_ref import first_last, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("assets/speech-ref"))
    ap.add_argument("--minutes", type=float, default=120.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    log = train(args.out, args.minutes, seed=args.seed, batch_size=args.batch_size)
    history = log["history"]
    assert isinstance(history, list)
    for key in ("duration", "prior", "flow"):
        first, last = first_last(history, key)
        print(f"{key}: {first:.4f} -> {last:.4f}")


if __name__ == "__main__":
    main()
