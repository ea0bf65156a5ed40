#!/usr/bin/env python
"""Train the ``shapes-sd`` reference model and save it as a diffusers pipeline (fp16).

Resumable: checkpoints go to --work; run the same command again to continue.

The shipped weights (assets/shapes-sd/train_log.json has the exact commands): the VAE stage,
then the UNet and text encoder on that VAE:
    python scripts/train_shapes_sd.py --vae-only --work runs/shapes-sd --vae-steps 3000 --threads 1
    python scripts/train_shapes_sd.py --out assets/shapes-sd --work runs/shapes-sd --vae-from runs/shapes-sd \
        --steps 3000 --threads 1
Without --vae-from one command runs both stages.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genaccel.training.common import load_checkpoint, training_cli, write_log
from genaccel.training.shapes_sd import ShapesSDConfig, train_shapes_sd


def main() -> None:
    parser, progress, close = training_cli(__doc__ or "", "assets/shapes-sd", "runs/shapes-sd")
    parser.add_argument("--vae-only", action="store_true", help="train the VAE stage only (saved to WORK/vae)")
    parser.add_argument("--attention-all-levels", action="store_true",
                        help="UNet cross-attention at full latent resolution too")
    parser.add_argument("--vae-from", type=Path, help="reuse a trained VAE (pipeline or VAE folder): skips that stage")
    parser.add_argument("--unet-channels", default="64,128,128,128",
                        help="UNet block widths, one per level (16x16 latents halve per level)")
    parser.add_argument("--token-init-std", type=float, default=1.0,
                        help="initial std of the text token embeddings (CLIP's own init is 0.02)")
    args = parser.parse_args()
    channels = tuple(int(c) for c in args.unet_channels.split(","))
    started = time.time()
    train_shapes_sd(args.out, args.work, vae_steps=args.vae_steps, unet_steps=args.unet_steps, batch=args.batch,
                    data=args.data, seed=args.seed, progress=progress,
                    offset_noise=args.offset_noise, offset_from=args.offset_from, vae_only=args.vae_only,
                    vae_gate=args.vae_gate, natural=args.natural, fg_weight=args.fg_weight,
                    deadline=started + 60 * args.max_minutes if args.max_minutes else None,
                    max_rotation=None if args.max_rotation is None else math.radians(args.max_rotation),
                    vae_from=args.vae_from,
                    cfg=ShapesSDConfig(attention_all_levels=args.attention_all_levels, unet_channels=channels,
                                      token_init_std=args.token_init_std))
    close()
    if args.vae_only:
        print(f"VAE saved to {args.work / 'vae'}")
        return
    write_log(args.out / "train_log.json", started, vae_steps=args.vae_steps, unet_steps=args.unet_steps,
              batch=args.batch, data=args.data, seed=args.seed,
              offset_noise=args.offset_noise, offset_from=args.offset_from,
              attention_all_levels=args.attention_all_levels, unet_channels=list(channels),
              vae_from=str(args.vae_from) if args.vae_from else None, token_init_std=args.token_init_std,
              natural=args.natural, fg_weight=args.fg_weight, max_minutes=args.max_minutes,
              max_rotation=args.max_rotation,
              steps_reached=int((load_checkpoint(args.work / "unet.pt") or {}).get("step", 0)))
    print(f"saved {args.out} in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
