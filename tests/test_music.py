"""Music: the synthesiser's captions, the music adapter on Stable Audio (tiny, offline) and on the
mel DiT (tiny, random), long pieces from windows, loudness and fades, spectrogram PNGs, every
way in (CLI, REST, batch, Celery routing) and the refusals of bad input."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from genaccel.cli import main
from genaccel.errors import InvalidRequest
from genaccel.refdata.music import MelodySpec, caption, caption_variant, parse_caption, render
from genaccel.settings import Settings
from genaccel.spec import JobRequest
from pipelines.audio_post import apply_fades, crossfade, integrated_loudness, normalise_loudness
from pipelines.modality import RunHooks
from pipelines.music import MusicAdapter, plan_windows
from pipelines.prepare import prepare_request
from pipelines.registry import ModelDefaults, ModelInfo, ModelRegistry


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_captions_name_what_the_spec_holds() -> None:
    spec = MelodySpec("flute", "A", "minor", 72, "ascending")
    assert caption(spec) == "a slow ascending flute melody in A minor at 72 bpm"
    assert parse_caption(caption(spec)) == {"timbre": "flute", "key": "A minor", "bpm": 72, "tempo_word": "slow",
                                            "contour": "ascending"}
    plucked = MelodySpec("plucked", "C#", "major", 110, "arch")
    assert caption(plucked, ("timbre", "key")) == "a plucked string melody in C# major"
    assert parse_caption("an arch plucked string melody")["timbre"] == "plucked"
    rng = np.random.default_rng(0)
    for _ in range(20):  # every variant names at least one attribute, all of them right
        named = parse_caption(caption_variant(plucked, rng))
        assert named and named.get("timbre", "plucked") == "plucked" and named.get("bpm", 110) == 110
    assert spec.notes() == [69, 71, 72, 74]  # A minor from A4, one note a beat at 72 bpm over 4 s
    assert MelodySpec("strings", "C", "major", 120, "arch").notes() == [60, 62, 64, 65, 67, 65, 64, 62]
    np.testing.assert_array_equal(render(spec, 3), render(spec, 3))


def test_windows_cover_the_piece_with_overlaps() -> None:
    assert plan_windows(3.0, 4.0) == plan_windows(3.0, 4.0, 1.0)
    assert [(w.start_s, w.seconds) for w in plan_windows(10.0, 4.0)] == [(0.0, 4.0), (3.0, 4.0), (6.0, 4.0)]
    last = plan_windows(11.0, 4.0)[-1]
    assert last.start_s + last.seconds == 11.0


def test_loudness_fades_and_crossfades() -> None:
    rate = 16_000
    t = np.arange(rate * 2) / rate
    tone = (0.1 * np.sin(2 * np.pi * 440 * t))[:, None].astype(np.float32)
    louder, reached = normalise_loudness(tone, rate, -20.0)
    assert abs(integrated_loudness(louder, rate) + 20.0) < 0.1 and abs(reached + 20.0) < 0.1
    spiky = tone.copy()
    spiky[100] = 0.9
    capped, reached = normalise_loudness(spiky, rate, -10.0)  # would clip: held at -1 dBFS peak
    assert np.abs(capped).max() <= 10 ** (-1 / 20) + 1e-6 and reached < -10.0
    faded = apply_fades(tone + 0.5, rate, 0.1)
    assert faded[0, 0] == 0 and faded[-1, 0] == 0 and faded[rate, 0] == pytest.approx(tone[rate, 0] + 0.5)
    joined = crossfade([np.ones((100, 1), np.float32), np.ones((100, 1), np.float32)], 20)
    assert joined.shape == (180, 1) and joined.min() > 0.99  # equal power: no dip for equal signals


class Steps:
    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def __call__(self, step: int, total: int) -> None:
        self.seen.append((step, total))


def prepared(settings: Settings, registry: ModelRegistry, **flat: Any) -> JobRequest:
    return prepare_request(JobRequest.from_flat({"modality": "music", **flat}), registry, settings)[0]


@pytest.fixture(scope="module")
def stable_audio():  # type: ignore[no-untyped-def]
    from pipelines.tiny_audio import build_tiny_stable_audio

    pipe = build_tiny_stable_audio()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_stable_audio_long_piece_from_windows(settings: Settings, stable_audio: Any) -> None:
    registry = ModelRegistry(settings)
    request = prepared(settings, registry, prompt="a drum loop", model="tiny-stable-audio", duration=5.5, steps=2,
                       seed=4, num_outputs=2, loudness=-20, fade=0.05)
    steps = Steps()
    first, second = MusicAdapter().generate(stable_audio, [request], RunHooks(steps))[0]
    assert first.sample_rate == 16_000 and first.samples.shape == (88_000, 1)  # two 4 s windows, 1 s overlap
    assert steps.seen[-1] == (8, 8) and len(steps.seen) == 8  # progress over every window of every output
    assert not np.array_equal(first.samples, second.samples)  # seed 4, seed 5
    assert abs(integrated_loudness(first.samples, 16_000) + 20) < 0.5 and first.samples[0, 0] == 0
    again = MusicAdapter().generate(stable_audio, [request.model_copy(update={
        "params": request.params.model_copy(update={"num_outputs": 1})})], RunHooks(Steps()))[0][0]
    np.testing.assert_array_equal(again.samples, first.samples)  # num_outputs never changes a clip


def test_audioldm2_runs_offline_through_the_adapter(settings: Settings) -> None:
    registry = ModelRegistry(settings)
    info = registry.resolve("tiny-audioldm2")
    request = prepared(settings, registry, prompt="birdsong", model="tiny-audioldm2", duration=1.0, steps=2, seed=2)
    assert info.pipeline_class == "AudioLDM2Pipeline" and MusicAdapter().serves(info.pipeline_class)
    steps = Steps()
    (out,) = MusicAdapter().generate(info.builder(), [request], RunHooks(steps))[0]  # type: ignore[misc]
    assert out.samples.shape == (16_000, 1) and out.sample_rate == 16_000 and steps.seen[-1] == (2, 2)


@pytest.fixture(scope="module")
def mel_dit(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A random tiny mel DiT saved and loaded like ``music-ref``."""
    from genaccel.refdata.music import caption_words
    from pipelines.mel_codec import MelCodecConfig
    from pipelines.mel_dit import MelDiTConfig, MelDiTPipeline, build_mel_dit

    folder = tmp_path_factory.mktemp("mel") / "mel-dit"
    codec = MelCodecConfig(mean=-7.5, std=4.7, griffin_lim_iters=2)
    build_mel_dit(MelDiTConfig(layers=2, heads=2, kv_heads=1, head_dim=16, text_dim=32, text_layers=1),
                  caption_words(), codec=codec).save_pretrained(folder)
    pipe = MelDiTPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_mel_dit_windows_continue_each_other(settings: Settings, mel_dit: Any) -> None:
    registry = ModelRegistry(settings)
    registry.add(ModelInfo("mel-test", "music", "audio-dit", "builtin", "mel-test", "MelDiTPipeline",
                           ModelDefaults(steps=2, guidance_scale=2.0, duration_s=4.0, max_duration_s=20.0,
                                         sample_rate=16_000, channels=1), builder=lambda: mel_dit))
    request = prepared(settings, registry, prompt="a slow flute melody", model="mel-test", duration=6.0, seed=1)
    steps = Steps()
    (out,) = MusicAdapter().generate(mel_dit, [request], RunHooks(steps))[0]
    assert out.samples.shape == (96_000, 1) and steps.seen[-1] == (4, 4)
    first = mel_dit("a flute", audio_length_in_s=4.0, num_inference_steps=2, output_type="latent",
                    generator=torch.Generator().manual_seed(0)).mels
    tail = first[..., -8:]
    second = mel_dit("a flute", audio_length_in_s=2.0, num_inference_steps=2, output_type="latent",
                     generator=torch.Generator().manual_seed(1), prefix_mels=tail).mels
    torch.testing.assert_close(second[..., :8], tail)  # the held frames end exactly where the last window did


def test_cli_renders_music_with_spectrogram_and_reruns_it(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(capsys, "render", "a flute melody", "--modality", "music", "--model", "tiny-stable-audio",
                         "--duration", "1", "--steps", "2", "--seed", "7", "--format", "flac", "--fade", "0.05",
                         "--out", str(tmp_path / "a"))
    assert code == 0, err
    flac = Path(out.strip())
    info = sf.info(flac)
    assert (info.samplerate, info.channels, info.duration) == (16_000, 1, 1.0)
    assert flac.with_name(flac.stem + ".spectrogram.png").is_file()
    side = json.loads(flac.with_suffix(".json").read_text())
    assert side["request"]["params"]["fade_s"] == 0.05 and side["model"] == "tiny-stable-audio"
    code, out, err = run(capsys, "render", "--from", str(flac), "--out", str(tmp_path / "b"))
    assert code == 0, err
    np.testing.assert_array_equal(sf.read(Path(out.strip()))[0], sf.read(flac)[0])


@pytest.mark.parametrize(("args", "message"), [
    (["--duration", "31"], "duration_s=31.0 is invalid: tiny-stable-audio makes at most 30 s (windows of 4 s "
                           "joined with crossfades); fix: pass --duration 30 or less"),
    (["--format", "aiff"], "output_format='aiff' is invalid: is not a format genaccel writes"),
    (["--format", "mp4"], "output_format='mp4' is invalid: music outputs are written as wav, flac, mp3, ogg"),
    (["--fade", "3", "--duration", "2"], "fade_s=3.0 is invalid: must be at most half the clip (1 s)"),
    (["--loudness", "3"], "loudness_db=3.0 is invalid: must be between -60 and -5"),
])
def test_bad_music_input_is_refused_before_queueing(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                    args: list[str], message: str) -> None:
    code, _, err = run(capsys, "render", "a tone", "--modality", "music", "--model", "tiny-stable-audio", *args,
                       "--out", str(tmp_path / "out"))
    assert code == 2 and message in err, err
    assert not (tmp_path / "out").exists()


def test_writer_refuses_a_rate_or_layout_it_cannot_write() -> None:
    from genaccel.artifacts import check_audio_format

    with pytest.raises(InvalidRequest, match="MP3 cannot hold 17000 Hz audio; fix: pass --format wav or flac"):
        check_audio_format("mp3", 17_000, 1)
    with pytest.raises(InvalidRequest, match="cannot hold 6 channels here; fix: pass --format wav"):
        check_audio_format("ogg", 16_000, 6)


def test_rest_and_batch_accept_music_and_serve_the_spectrogram(settings: Settings, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from fastapi.testclient import TestClient

    from genaccel.api import Backend, create_app
    from pipelines.engine import LocalEngine
    from workers.celery_app import queue_for

    assert queue_for("tiny-stable-audio", "music", settings) == "music"
    engine = LocalEngine(settings, scoped=False)
    engine.dispatcher.start()
    try:
        backend = Backend(settings, engine.store, engine.dispatcher, ModelRegistry(settings, allow_paths=False))
        client = TestClient(create_app(backend))
        r = client.post("/v1/jobs", json={"modality": "music", "model": "tiny-stable-audio", "prompt": "rain",
                                          "duration": 0.5, "steps": 1, "format": "ogg"})
        assert r.status_code == 202, r.text
        deadline = time.time() + 60
        while (job := client.get(f"/v1/jobs/{r.json()['id']}").json())["state"] not in ("succeeded", "failed"):
            assert time.time() < deadline
            time.sleep(0.05)
        assert job["state"] == "succeeded", job
        (art,) = job["artifacts"]
        assert art["media_type"] == "audio/ogg" and art["sample_rate"] == 16_000
        png = client.get(f"/v1/artifacts/{job['id']}/{art['name'].rsplit('.', 1)[0]}.spectrogram.png")
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        bad = client.post("/v1/jobs", json={"modality": "music", "model": "tiny-stable-audio", "prompt": "x",
                                            "duration": 99})
        assert bad.status_code == 422 and "makes at most 30 s" in bad.text
    finally:
        engine.dispatcher.stop(timeout=10)
    lines = tmp_path / "jobs.jsonl"
    lines.write_text(json.dumps({"modality": "music", "model": "tiny-stable-audio", "prompt": "wind",
                                 "duration": 0.5, "steps": 1, "format": "wav"}) + "\n")
    code, _, err = run(capsys, "batch", str(lines), "--out", str(tmp_path / "batch"))
    assert code == 0, err
    assert len(list((tmp_path / "batch").glob("*.wav"))) == 1


def test_ui_music_tab_shows_player_and_spectrogram(settings: Settings) -> None:
    from genaccel.spec import Artifact, Job
    from pipelines.modality import adapter_for
    from ui.render import outputs_html

    registry = ModelRegistry(settings)  # the tab's fields are its adapters' (ui.generate.tab_fields)
    fields = set(adapter_for(registry.resolve("tiny-stable-audio")).fields)
    assert {"duration_s", "loudness_db", "fade_s", "negative_prompt"} <= fields
    job = Job(id="j1", request=JobRequest(modality="music", prompt="x"), state="succeeded", created_at=0.0,
              artifacts=[Artifact(name="j1-0.wav", path="/o/j1-0.wav", media_type="audio/wav")])
    page = outputs_html(job, lambda job_id, name, download=False: f"/f/{job_id}/{name}")
    assert '<audio src="/f/j1/j1-0.wav"' in page and 'src="/f/j1/j1-0.spectrogram.png"' in page


def test_genaccel_bench_runs_music_rows_side_by_side(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """``genaccel bench`` on a music model: its own rows (profiles, techniques), with the real-time
    factor, exact match, log-spectral distance against ``off`` and the Fréchet distance to the
    synthesiser's clips of the same captions."""
    out = tmp_path / "music.json"
    code = main(["bench", "--model", "tiny-stable-audio", "--profiles", "off,taylorseer", "--prompts", "8",
                 "--json", str(out)])
    assert code == 0, capsys.readouterr().err
    rows = json.loads(out.read_text())["rows"]
    assert list(rows) == ["off", "taylorseer"]
    assert rows["taylorseer"]["techniques"] == ["taylorseer"] and rows["off"]["lsd_vs_off"] is None
    assert rows["taylorseer"]["lsd_vs_off"] is not None and "denoiser_speedup" in rows["taylorseer"]
    assert "fd_vs_data" in rows["off"] and "| taylorseer |" in out.with_suffix(".md").read_text()


@pytest.mark.parametrize(("args", "why"), [
    (["--model", "tiny-stable-audio", "--model", "tiny-sd"], "mixes music models with other modalities"),
    (["--model", "tiny-stable-audio", "--steps", "4"], "options='--steps' is invalid: not used by music rows"),
    (["--model", "tiny-stable-audio", "--profiles", "off,warp"], "is not a music benchmark row, profile or technique"),
])
def test_genaccel_bench_refuses_what_music_rows_cannot_run(capsys: pytest.CaptureFixture[str], args: list[str],
                                                          why: str) -> None:
    assert main(["bench", *args]) == 2
    assert why in capsys.readouterr().err
