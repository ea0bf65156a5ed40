"""Speech models side by side in one run: steps, real-time factor, word accuracy and exact match
(the speech evaluator), voice accuracy, duration error and MFCC-DTW distance to espeak-ng's
rendering of the same held-out sentences. espeak-ng itself is the first row (the ceiling).

    PYTHONPATH=. OMP_NUM_THREADS=1 python bench/speech.py --sentences 24 \
        --models tiny-vits tiny-fastspeech2 tiny-longcat tiny-speech-ref \
        --folder speech-ref=assets/speech-ref --steps speech-ref=8,2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genaccel.metrics.speech import VOICE_NAMES, SpeechEvaluator, duration_error, mfcc_dtw, word_scores
from genaccel.refdata.speech import VOICES, espeak, parse_words, split_sentences
from genaccel.settings import Settings
from pipelines.registry import ModelRegistry
from pipelines.speech import synthesize
from pipelines.speech_ref import SpeechRefModel


def score(name: str, make: Any, sentences: list[str], voices: tuple[str, ...], steps: int | None,
          evaluator: SpeechEvaluator, shallow: float | None = None,
          vocoder_iters: int | None = None) -> dict[str, Any]:
    clips, rates, compute, audio_s, dur_err, dist, asked = [], [], 0.0, 0.0, [], [], []
    model = make()
    if shallow is not None:
        model.shallow_t0 = shallow
    if vocoder_iters is not None:
        model.griffin_lim_iters = vocoder_iters
    for k, text in enumerate(sentences):
        voice = voices[k % len(voices)]
        t0 = time.perf_counter()
        wav, rate = make_audio(model, text, voice, steps, k)
        compute += time.perf_counter() - t0
        audio_s += len(wav) / rate
        ref = espeak().synth(text, voice if voice in VOICES else "us-male").samples
        dur_err.append(duration_error(wav, ref, rate))
        dist.append(mfcc_dtw(wav, ref, rate))
        clips.append(wav)
        rates.append(rate)
        asked.append(voice)
    said = [evaluator.read([c], r)[0] for c, r in zip(clips, rates, strict=True)]
    scores = word_scores(said, [parse_words(s) or () for s in sentences])
    voiced = [(evaluator.voice([c], r)[0], v) for c, r, v in zip(clips, rates, asked, strict=True) if v in VOICE_NAMES]
    return {"model": name, "steps": steps if steps is not None else "-", "rtf": round(compute / audio_s, 4),
            "word_acc": round(scores["word_acc"], 3), "exact_match": round(scores["exact_match"], 3),
            "voice_acc": round(sum(a == b for a, b in voiced) / len(voiced), 3) if voiced else None,
            "duration_err": round(float(np.mean(dur_err)), 3), "mfcc_dtw": round(float(np.mean(dist)), 1),
            "audio_s": round(audio_s, 2), "compute_s": round(compute, 2)}


def make_audio(model: Any, text: str, voice: str, steps: int | None, seed: int) -> tuple[np.ndarray, int]:
    if model == "espeak-ng":
        return espeak().synth(text, voice).samples, 22050
    out = synthesize(model, text, voice, 1.0, steps or 1, seed)
    return out.samples[:, 0], out.sample_rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*",
                    default=["tiny-vits", "tiny-fastspeech2", "tiny-longcat", "tiny-speech-ref"])
    ap.add_argument("--folder", nargs="*", default=[], help="NAME=PATH of a speech-ref folder")
    ap.add_argument("--steps", nargs="*", default=[], help="NAME=S1,S2 step counts to run (default: the model's)")
    ap.add_argument("--shallow", type=float, default=0.3, help="shallow-start t0 for the extra speech-ref rows")
    ap.add_argument("--vocoder-iters", type=int, default=8, help="Griffin-Lim iterations of the fastest row")
    ap.add_argument("--sentences", type=int, default=24)
    ap.add_argument("--out", type=Path, default=Path("bench/results/speech.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    sentences = split_sentences()[1][: args.sentences]
    evaluator = SpeechEvaluator.load()
    registry = ModelRegistry(Settings())
    steps = {k: [int(s) for s in v.split(",")] for k, v in (x.split("=", 1) for x in args.steps)}
    rows = [score("espeak-ng", lambda: "espeak-ng", sentences, tuple(VOICES), None, evaluator)]
    makers: dict[str, tuple[Any, tuple[str, ...], int, bool]] = {}
    for name in args.models:
        info = registry.resolve(name)
        makers[name] = (info.builder, info.defaults.voices, info.defaults.steps, info.family != "other")
    for spec in args.folder:
        name, path = spec.split("=", 1)
        model = SpeechRefModel.load(Path(path))
        makers[name] = (lambda p=Path(path): SpeechRefModel.load(p), model.voices, model.cfg.default_steps, True)
    for name, (make, voices, default, iterative) in makers.items():
        for s in steps.get(name, [default]) if iterative else [None]:
            rows.append(score(name, make, sentences, voices, s, evaluator))
            print(json.dumps(rows[-1]), flush=True)
            if name in dict(x.split("=", 1) for x in args.folder) and s is not None and s <= 4:
                rows.append(score(f"{name} shallow t0={args.shallow:g}", make, sentences, voices, s, evaluator,
                                  shallow=args.shallow))
                print(json.dumps(rows[-1]), flush=True)
                rows.append(score(f"{name} shallow t0={args.shallow:g}, Griffin-Lim {args.vocoder_iters}", make,
                                  sentences, voices, s, evaluator, shallow=args.shallow,
                                  vocoder_iters=args.vocoder_iters))
                print(json.dumps(rows[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"sentences": len(sentences), "rows": rows}, indent=1))
    print("| model | steps | RTF | word acc | exact match | voice acc | duration err | MFCC-DTW |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['steps']} | {r['rtf']} | {r['word_acc']} | {r['exact_match']} | "
              f"{r['voice_acc'] if r['voice_acc'] is not None else '-'} | {r['duration_err']} | {r['mfcc_dtw']} |")


if __name__ == "__main__":
    main()
