#!/usr/bin/env python
"""Train the ``shapes-video`` reference model: Latte initialised from ``assets/shapes-dit``, on
moving-shape clips (8 frames at 64 px, latents from the image VAE frame by frame), the temporal
blocks and three new caption words first, then every weight from --all-from.

Resumable: checkpoints go to --work; run the same command again to continue.

Example (the full run, about 120 minutes on 2 cores):
    python scripts/train_shapes_video.py --out assets/shapes-video --steps 2500 --all-from 1500
A smoke run (loss falls within minutes):
    python scripts/train_shapes_video.py --out runs/shapes-video-smoke/model --work runs/shapes-video-smoke \
        --steps 100000 --data 400 --max-seconds 150
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genaccel.training.common import write_log
from genaccel.training.shapes_video import smoothed, train_shapes_video


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("assets/shapes-video"))
    parser.add_argument("--work", type=Path, default=Path("runs/shapes-video"))
    parser.add_argument("--image-model", type=Path, default=Path("assets/shapes-dit"))
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--all-from", type=int, default=None, help="step from which every weight trains")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--data", type=int, default=2000, help="clips rendered and encoded once")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=None, help="stop (and save) after this long")
    parser.add_argument("--max-rotation", type=float, default=None,
                        help="degrees: tilt shapes at most this much from upright (default: any angle)")
    parser.add_argument("--cfg-dropout", type=float, default=0.0, help="share of captions replaced by the empty one")
    parser.add_argument("--train-text", action="store_true", help="train the text encoder's layers from the start")
    parser.add_argument("--natural", type=float, default=0.0,
                        help="share of captions in a user's words (attributes left out, synonyms, 'going up')")
    parser.add_argument("--pyramid", type=float, default=0.0,
                        help="coarse-noise weight (0.8: multi-resolution noise; hides the clip's trace at the last "
                             "timesteps so the caption sets the motion)")
    parser.add_argument("--direction-text", type=int, default=0,
                        help="steps: first tune the text encoder so opposite directions read differently, then "
                             "freeze it (genaccel/training/direction_text.py)")
    parser.add_argument("--caption-modulation", action="store_true",
                        help="the pooled caption also shifts every block's timestep modulation, temporal blocks "
                             "included (pipelines/caption_latte.py)")
    parser.add_argument("--caption-lr-scale", type=float, default=1.0,
                        help="learning-rate multiple for the caption MLP of --caption-modulation")
    parser.add_argument("--high-noise", type=float, default=0.0,
                        help="share of training timesteps drawn from 750-999, where the clip's track is decided")
    args = parser.parse_args()
    started = time.time()

    def progress(step: int, total: int, loss: float) -> None:
        if step % 10 == 0:
            print(f"step {step}/{total} loss {loss:.4f} ({time.time() - started:.0f} s)", flush=True)

    losses = train_shapes_video(args.out, args.work, image_dir=args.image_model, steps=args.steps,
                                frames=args.frames, batch=args.batch, data=args.data, seed=args.seed, lr=args.lr,
                                all_from=args.all_from, max_seconds=args.max_seconds, progress=progress,
                                max_rotation=None if args.max_rotation is None else math.radians(args.max_rotation),
                                cfg_dropout=args.cfg_dropout, train_text=args.train_text, natural=args.natural,
                                pyramid=args.pyramid, direction_text=args.direction_text,
                                caption_modulation=args.caption_modulation,
                                caption_lr_scale=args.caption_lr_scale, high_noise=args.high_noise)
    first, last = smoothed(losses)
    tuned = args.work / "direction_text.json"
    write_log(args.out / "train_log.json", started, steps=len(losses), frames=args.frames, batch=args.batch,
              data=args.data, seed=args.seed, lr=args.lr, all_from=args.all_from, max_rotation=args.max_rotation,
              cfg_dropout=args.cfg_dropout, train_text=args.train_text, natural=args.natural,
              pyramid=args.pyramid, direction_text=args.direction_text,
              caption_modulation=args.caption_modulation, caption_lr_scale=args.caption_lr_scale,
              high_noise=args.high_noise, loss_first=first, loss_last=last,
              direction_text_result=json.loads(tuned.read_text()) if tuned.is_file() else None)
    print(f"saved {args.out} after {len(losses)} steps in {time.time() - started:.0f} s: "
          f"loss {first:.4f} -> {last:.4f} (mean of the first and last 20 steps)")


if __name__ == "__main__":
    main()
