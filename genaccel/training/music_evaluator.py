"""Train the music evaluator's timbre classifier on synthesised clips (seconds on one core):

    python -m genaccel.training.music_evaluator --out assets/music-evaluator

Writes ``timbre.json`` and ``train_log.json`` (accuracy on held-out clips, raw and after the
mel codec's Griffin-Lim round trip, so the classifier is known to read the reference model's
codec).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from genaccel.metrics.music import TIMBRES, MusicEvaluator, fit_timbre, timbre_features
from genaccel.metrics.music_notes import read_notes
from genaccel.refdata.music import SAMPLE_RATE, make_dataset
from genaccel.training.common import write_log


def features_of(clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Features of the clips that have any (and their row numbers)."""
    rows, feats = [], []
    for i, clip in enumerate(clips):
        f = timbre_features(clip, SAMPLE_RATE, read_notes(clip, SAMPLE_RATE))
        if f is not None:
            rows.append(i)
            feats.append(f)
    return np.stack(feats), np.array(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("assets/music-evaluator"))
    p.add_argument("--train", type=int, default=600)
    p.add_argument("--test", type=int, default=120)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    started = time.time()
    clips, specs = make_dataset(args.train, 10_000 + args.seed)
    x, rows = features_of(clips)
    y = np.array([TIMBRES.index(specs[i].timbre) for i in rows])
    classifier = fit_timbre(x, y)
    classifier.save(args.out)

    from pipelines.mel_codec import MelCodec, MelCodecConfig

    evaluator = MusicEvaluator(classifier)
    test, test_specs = make_dataset(args.test, 20_000 + args.seed)
    codec = MelCodec(MelCodecConfig(mean=-7.5, std=4.7))
    rebuilt = codec.decode(codec.encode(torch.from_numpy(test))).numpy()
    results = {}
    for name, audio in (("raw", test), ("griffin_lim", rebuilt)):
        scores = [evaluator.score(a, SAMPLE_RATE, s.caption()) for a, s in zip(audio, test_specs, strict=True)]
        results[name] = {
            "exact_match": float(np.mean([s["exact"] for s in scores])),
            **{attr: float(np.mean([s["attributes"][attr] for s in scores]))
               for attr in ("timbre", "key", "contour", "bpm", "tempo_word")},
        }
    write_log(args.out / "train_log.json", started, train_clips=len(rows), test_clips=args.test,
              held_out=results)
    print(results)


if __name__ == "__main__":
    main()
