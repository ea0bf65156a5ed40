"""The music evaluator reads the synthesiser's ground truth back right, says a noise clip matches
nothing, and its distances behave."""

from __future__ import annotations

import numpy as np
import pytest

from genaccel.metrics.music import (
    MusicEvaluator,
    frechet_distance,
    log_spectral_distance,
    named_attributes,
    read_contour,
)
from genaccel.refdata.music import SAMPLE_RATE, MelodySpec, render

SPECS = [MelodySpec("flute", "A", "minor", 72, "ascending"), MelodySpec("clarinet", "D", "major", 96, "descending"),
         MelodySpec("strings", "F#", "minor", 118, "arch"), MelodySpec("plucked", "C", "major", 64, "ascending")]


@pytest.fixture(scope="module")
def evaluator() -> MusicEvaluator:
    found = MusicEvaluator.load()
    assert found.classifier is not None, "assets/music-evaluator/timbre.json is missing"
    return found


def test_reads_the_synthesisers_ground_truth(evaluator: MusicEvaluator) -> None:
    for i, spec in enumerate(SPECS):
        score = evaluator.score(render(spec, 100 + i), SAMPLE_RATE, spec.caption())
        assert score["exact"], (spec, score)
        assert score["read"]["notes"] == spec.notes() and score["note_accuracy"] == 1.0
        assert set(score["attributes"]) == {"timbre", "key", "bpm", "tempo_word", "contour"}


def test_wrong_attributes_are_caught(evaluator: MusicEvaluator) -> None:
    audio = render(SPECS[0], 1)
    score = evaluator.score(audio, SAMPLE_RATE, "a fast descending clarinet melody in B major at 110 bpm")
    assert score["attributes"] == {"timbre": False, "key": False, "bpm": False, "tempo_word": False,
                                   "contour": False} and not score["exact"]
    only = evaluator.score(audio, SAMPLE_RATE, "a flute melody in C minor")  # only what the prompt names
    assert only["attributes"] == {"timbre": True, "key": False}


def test_a_noise_clip_matches_nothing(evaluator: MusicEvaluator) -> None:
    noise = np.random.default_rng(0).standard_normal(4 * SAMPLE_RATE).astype(np.float32) * 0.3
    score = evaluator.score(noise, SAMPLE_RATE, SPECS[2].caption())
    assert not score["exact"] and not any(score["attributes"].values())
    assert score["read"]["timbre"] is None and score["read"]["contour"] is None
    silence = evaluator.score(np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE, "a flute melody")
    assert silence["attributes"] == {"timbre": False} and silence["read"]["notes"] == []


def test_prompt_parsing_and_contours() -> None:
    assert named_attributes("plucked string melody at 80 bpm") == {"timbre": "plucked", "bpm": 80}
    assert named_attributes("a string melody in g# minor") == {"timbre": "strings", "key": "G# minor"}
    assert named_attributes("something else") == {}
    assert [read_contour(m) for m in ([60, 62, 64], [64, 62, 60], [60, 64, 62], [60, 64, 62, 65])] == [
        "ascending", "descending", "arch", None]


def test_distances() -> None:
    a, b = render(SPECS[0], 1), render(SPECS[1], 1)
    assert log_spectral_distance(a, a) == 0.0
    assert log_spectral_distance(a, b) > log_spectral_distance(a, a + 1e-4 * b) > 0
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 4))
    assert frechet_distance(x, x) == pytest.approx(0, abs=1e-6)
    assert frechet_distance(x, x + 3) == pytest.approx(36, rel=0.05)


def test_a_note_the_tracker_loses_for_a_moment_stays_one_note() -> None:
    """Inside one sounding stretch, a few frames of noise (the pitch tracker loses the note) do not
    split it; the same pitch played again after a gap (a new attack) is two notes."""
    from genaccel.metrics.music_notes import read_notes

    rate = SAMPLE_RATE
    t = np.arange(int(0.6 * rate)) / rate
    tone = 0.5 * np.sin(2 * np.pi * 440.0 * t)
    held = tone.copy()
    blip = slice(int(0.28 * rate), int(0.32 * rate))  # 40 ms of noise as loud as the tone, mid-note
    held[blip] = np.random.default_rng(0).standard_normal(blip.stop - blip.start) * 0.35
    assert [n.midi for n in read_notes(held.astype(np.float32), rate)] == [69]
    again = np.concatenate([tone, np.zeros(int(0.1 * rate)), tone]).astype(np.float32)
    assert [n.midi for n in read_notes(again, rate)] == [69, 69]
