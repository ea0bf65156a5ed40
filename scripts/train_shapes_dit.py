#!/usr/bin/env python
"""Train the ``shapes-dit`` reference model (PixArt-α architecture) and save it (fp16).

Resumable: checkpoints go to --work; run the same command again to continue. With
--vae-from assets/shapes-sd the VAE of shapes-sd is reused instead of trained.

Example:
    python scripts/train_shapes_dit.py --out assets/shapes-dit --vae-from assets/shapes-sd --steps 3000
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genaccel.training.common import load_checkpoint, training_cli, write_log
from genaccel.training.shapes_dit import train_shapes_dit


def main() -> None:
    parser, progress, close = training_cli(__doc__ or "", "assets/shapes-dit", "runs/shapes-dit")
    parser.add_argument("--vae-from", type=Path, default=None, help="pipeline folder whose vae/ to reuse")
    args = parser.parse_args()
    started = time.time()
    train_shapes_dit(args.out, args.work, vae_steps=args.vae_steps, steps=args.unet_steps, batch=args.batch,
                     data=args.data, seed=args.seed, vae_from=args.vae_from, progress=progress,
                     offset_noise=args.offset_noise, offset_from=args.offset_from, vae_gate=args.vae_gate,
                     natural=args.natural, fg_weight=args.fg_weight,
                     deadline=started + 60 * args.max_minutes if args.max_minutes else None,
                     max_rotation=None if args.max_rotation is None else math.radians(args.max_rotation))
    close()
    write_log(args.out / "train_log.json", started, vae_steps=args.vae_steps, steps=args.unet_steps,
              batch=args.batch, data=args.data, seed=args.seed, vae_from=str(args.vae_from),
              offset_noise=args.offset_noise, offset_from=args.offset_from, natural=args.natural,
              fg_weight=args.fg_weight, max_minutes=args.max_minutes, max_rotation=args.max_rotation,
              steps_reached=int((load_checkpoint(args.work / "dit.pt") or {}).get("step", 0)))
    print(f"saved {args.out} in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
