"""``music-ref``: the reference music model. A ``StableAudioDiTModel`` on log-mel frames (64 bands
by default; ``--n-mels 128 --n-fft 2048 --fmin 100`` resolves a semitone at the melodies'
fundamentals, docs/music.md) of the synthesiser's melodies (``genaccel.refdata.music``), with a
small T5 text encoder, trained with EDM's preconditioning and loss (Karras et al. 2022: log-normal
sigmas, c_skip/c_out/c_in, unit-weighted target), caption variants drawn fresh each step, caption
dropout for guidance, and an EMA of the weights. Checkpoints every ``save_every`` steps and writes
the pipeline (fp16) to ``out`` each time, so a run stopped early still leaves usable weights.

    python -m genaccel.training.music_ref --steps 4000 --threads 1
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers.training_utils import EMAModel

from genaccel.refdata.music import MelodySpec, caption_variant, caption_words, make_dataset
from genaccel.training.common import load_checkpoint, plot_loss, save_checkpoint, write_log
from pipelines.mel_codec import MelCodec, MelCodecConfig
from pipelines.mel_dit import MelDiTConfig, MelDiTPipeline, build_mel_dit, dit_output, pack, text_states

log = logging.getLogger(__name__)
P_MEAN, P_STD, SIGMA_DATA = -1.2, 1.2, 0.5


def cached_mels(codec: MelCodec, work: Path, count: int, seed: int) -> tuple[torch.Tensor, list[MelodySpec]]:
    """Normalised log-mels (N, n_mels, frames) and specs of ``count`` clips, cached in ``work`` (the
    cache's name carries the codec's shape, so a run with another codec never reads it)."""
    c = codec.config
    cache = work / f"mels-{count}-{seed}-{c.n_mels}x{c.n_fft}-{c.fmin:g}.pt"
    if cache.is_file():
        stored = torch.load(cache, weights_only=False)
        return stored["mels"], [MelodySpec(**s) for s in stored["specs"]]
    mels, specs = [], []
    for start in range(0, count, 500):
        clips, chunk = make_dataset(min(500, count - start), seed * 7919 + start)
        mels.append(codec.encode(torch.from_numpy(clips)).half())
        specs += chunk
    out = torch.cat(mels)
    work.mkdir(parents=True, exist_ok=True)
    torch.save({"mels": out, "specs": [s.to_dict() for s in specs]}, cache)
    return out, specs


def edm_loss(pipe: MelDiTPipeline, x0: torch.Tensor, tokens: torch.Tensor, gen: torch.Generator,
             p_mean: float = P_MEAN, p_std: float = P_STD) -> torch.Tensor:
    """EDM's loss at log-normal sigmas (``p_mean``, ``p_std``: the mean and spread of ln sigma)."""
    sigma = torch.exp(p_mean + p_std * torch.randn(x0.shape[0], generator=gen))[:, None, None]
    noise = torch.randn(x0.shape, generator=gen)
    noisy = x0 + sigma * noise
    total = sigma**2 + SIGMA_DATA**2
    c_skip, c_out, c_in = SIGMA_DATA**2 / total, sigma * SIGMA_DATA / total.sqrt(), 1 / total.sqrt()
    states, pooled = text_states(pipe.text_encoder, tokens)
    out = dit_output(pipe.transformer, c_in * noisy, 0.25 * torch.log(sigma.flatten()), states, pooled)
    target = (x0 - c_skip * noisy) / c_out
    return (out - target).square().mean()


def export(pipe: MelDiTPipeline, ema: EMAModel, params: list[torch.nn.Parameter], out: Path) -> None:
    """Write the EMA weights as an fp16 pipeline without disturbing the training weights."""
    ema.store(params)
    ema.copy_to(params)
    pipe.to(torch.float16)
    pipe.save_pretrained(out, safe_serialization=True)
    pipe.to(torch.float32)
    ema.restore(params)


def train_music_ref(out: Path, work: Path, *, steps: int, batch: int = 16, data: int = 6000, seed: int = 0,
                    lr: float = 4e-4, cfg_dropout: float = 0.1, save_every: int = 100,
                    cfg: MelDiTConfig | None = None, codec_cfg: MelCodecConfig | None = None,
                    time_limit: float | None = None, init_from: Path | None = None,
                    p_mean: float = P_MEAN, p_std: float = P_STD) -> MelDiTPipeline:
    """Train (resuming from ``work/dit.pt``) and export to ``out`` every ``save_every`` steps.
    Without a checkpoint, ``init_from`` (an exported ``music-ref`` folder) gives the starting
    weights and step count, with a fresh optimiser: how a run continues when its checkpoint is gone.
    ``p_mean``/``p_std`` place the training sigmas (ln sigma ~ N(p_mean, p_std^2)); a higher mean
    trains the high-noise steps where a sampler starting at sigma 80 lays out the notes."""
    codec_cfg = codec_cfg or MelCodecConfig(mean=-7.5, std=4.7)
    cfg = replace(cfg or MelDiTConfig(), n_mels=codec_cfg.n_mels)
    pipe = build_mel_dit(cfg, caption_words(), seed, codec_cfg)
    first = 0
    if init_from is not None and not (work / "dit.pt").is_file():
        trained = MelDiTPipeline.from_pretrained(init_from)
        pipe.transformer.load_state_dict({k: v.float() for k, v in trained.transformer.state_dict().items()})
        pipe.text_encoder.load_state_dict({k: v.float() for k, v in trained.text_encoder.state_dict().items()})
        first = int(json.loads((init_from / "train_state.json").read_text())["step"])
    mels, specs = cached_mels(pipe.codec, work, data, seed + 1)
    mels = mels[..., : mels.shape[-1] // cfg.patch * cfg.patch]
    params = [*pipe.transformer.parameters(), *pipe.text_encoder.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 200))
    ema = EMAModel(params, decay=0.999, use_ema_warmup=True, power=2 / 3)
    empty = pipe.tokens([""])[0]
    ckpt = work / "dit.pt"
    state = load_checkpoint(ckpt) if ckpt.is_file() else None
    start, losses = first, []
    if state is not None:
        pipe.transformer.load_state_dict(state["transformer"])
        pipe.text_encoder.load_state_dict(state["text_encoder"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        ema.load_state_dict(state["ema"])
        start, losses = int(state["step"]), list(state["losses"])
    gen = torch.Generator().manual_seed(seed * 1_000_003 + start)
    rng = np.random.default_rng(seed * 7 + start)
    pipe.transformer.train()
    pipe.text_encoder.train()
    began = time.time()
    step = start
    for step in range(start, steps):
        idx = torch.randint(len(mels), (batch,), generator=gen)
        tokens = pipe.tokens([caption_variant(specs[int(i)], rng) for i in idx])
        drop = torch.rand(batch, generator=gen) < cfg_dropout
        tokens = torch.where(drop[:, None], empty[None], tokens)
        loss = edm_loss(pipe, pack(mels[idx].float(), cfg.patch), tokens, gen, p_mean, p_std)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        ema.step(params)
        losses.append(loss.item())
        done = step + 1
        stop = time_limit is not None and time.time() - began > time_limit
        if done % 10 == 0:
            log.info("step %d/%d loss %.4f (%.2f s/step)", done, steps, np.mean(losses[-10:]),
                     (time.time() - began) / (done - start))
        if done % save_every == 0 or done == steps or stop:
            save_checkpoint(ckpt, {"transformer": pipe.transformer.state_dict(),
                                   "text_encoder": pipe.text_encoder.state_dict(), "opt": opt.state_dict(),
                                   "sched": sched.state_dict(), "ema": ema.state_dict(), "step": done,
                                   "losses": losses})
            export(pipe, ema, params, out)
            (out / "train_state.json").write_text(json.dumps({"step": done, "loss": float(np.mean(losses[-50:])),
                                                              "p_mean": p_mean, "p_std": p_std}))
            plot_loss(losses, out / "loss_curve.png", "music-ref mel DiT + text encoder (EDM loss)")
        if stop:
            break
    ema.copy_to(params)
    pipe.transformer.eval()
    pipe.text_encoder.eval()
    return pipe


def calibrate_magcache(out: Path, prompts: int = 4, steps: int = 25, seed: int = 0) -> list[float]:
    """Measure MagCache's residual-ratio curve on music captions and keep it in the model's
    ``genaccel.json``, so ``magcache`` runs on ``music-ref`` without a calibration step."""
    from genaccel.accel.calibration import measure_magcache_ratios
    from genaccel.refdata.music import random_spec

    pipe = MelDiTPipeline.from_pretrained(out).to(torch.float32)
    rng = np.random.default_rng(seed + 4321)
    captions = [random_spec(rng).caption() for _ in range(prompts)]
    ratios = measure_magcache_ratios(pipe, captions, steps, seed=seed, audio_length_in_s=4.0, guidance_scale=3.0)
    card_path = out / "genaccel.json"
    card = json.loads(card_path.read_text()) if card_path.is_file() else {}
    card["magcache"] = {"steps": steps, "ratios": ratios}
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return ratios


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("assets/music-ref"))
    p.add_argument("--work", type=Path, default=Path(".work/music-ref"), help="checkpoints and the mel cache")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--data", type=int, default=6000, help="training clips (mels cached)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--time-limit", type=float, default=None, help="stop (and export) after this many seconds")
    p.add_argument("--init-from", type=Path, default=None,
                   help="start from an exported music-ref folder (fresh optimiser) when WORK has no checkpoint")
    p.add_argument("--n-mels", type=int, default=64, help="mel bands of the codec (the model's input width follows)")
    p.add_argument("--n-fft", type=int, default=1024, help="FFT size of the codec's spectrogram")
    p.add_argument("--fmin", type=float, default=0.0, help="lowest mel band edge (Hz)")
    p.add_argument("--p-mean", type=float, default=P_MEAN, help="mean of ln sigma in training (EDM: -1.2)")
    p.add_argument("--p-std", type=float, default=P_STD, help="spread of ln sigma in training (EDM: 1.2)")
    p.add_argument("--calibrate-only", action="store_true", help="only measure MagCache's ratios of --out")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.calibrate_only:
        print(calibrate_magcache(args.out))
        return
    started = time.time()
    train_music_ref(args.out, args.work, steps=args.steps, batch=args.batch, data=args.data, seed=args.seed,
                    lr=args.lr, save_every=args.save_every, time_limit=args.time_limit, init_from=args.init_from,
                    p_mean=args.p_mean, p_std=args.p_std,
                    codec_cfg=MelCodecConfig(mean=-7.5, std=4.7, n_mels=args.n_mels, n_fft=args.n_fft,
                                             fmin=args.fmin))
    state: dict[str, Any] = json.loads((args.out / "train_state.json").read_text())
    write_log(args.out / "train_log.json", started, **state)


if __name__ == "__main__":
    main()
