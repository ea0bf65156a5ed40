"""Speech: espeak-ng in process, the speech adapter over its four model kinds, bad input refused
before queueing, sentence streaming with crossfaded seams, every way in (CLI, REST, batch,
Celery routing), the speech evaluator and one training step of speech-ref."""

from __future__ import annotations

import io
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
from genaccel.refdata import speech as corpus
from genaccel.settings import Settings
from genaccel.spec import JobRequest
from pipelines.prepare import prepare_request
from pipelines.registry import ModelRegistry
from pipelines.speech import crossfade_join, split_sentences, synthesize, synthesize_stream

pytestmark = pytest.mark.skipif(not corpus.available(),
                                reason="libespeak-ng is not installed (apt-get install espeak-ng)")
SPEECH_MODELS = ("tiny-vits", "tiny-fastspeech2", "tiny-longcat", "tiny-speech-ref")


@pytest.fixture(scope="module")
def models() -> dict[str, Any]:
    registry = ModelRegistry(Settings())
    return {name: registry.resolve(name).builder() for name in SPEECH_MODELS}  # type: ignore[misc]


def test_espeak_renders_audio_ipa_and_phoneme_times() -> None:
    engine = corpus.espeak()
    u = engine.synth("red cat jumps seven", "us-male")
    assert u.samples.dtype == np.float32 and 0.8 < u.duration_s < 2.5 and np.abs(u.samples).max() > 0.1
    assert "".join(u.phonemes).startswith("ɹɛdkæt") and list(u.starts) == sorted(u.starts)
    assert len(u.durations()) == len(u.phonemes) and u.durations().sum() == pytest.approx(u.duration_s)
    assert engine.ipa("red cat. blue dog") == "ɹˈɛd kˈæt blˈuː dˈɑːɡ"
    slow, female = engine.synth("red cat jumps seven", "us-male", 0.7), engine.synth("red cat jumps seven", "us-female")
    assert slow.duration_s > u.duration_s * 1.2 and not np.array_equal(female.samples[:2000], u.samples[:2000])
    again = engine.synth("red cat jumps seven", "us-male")
    assert abs(len(again.samples) - len(u.samples)) < 50  # espeak-ng carries a little state between calls
    train, held = corpus.split_sentences()
    assert len(train) + len(held) == 3840 and not set(train) & set(held)
    assert corpus.parse_words("Red cat jumps seven.") == ("red", "cat", "jumps", "seven")
    assert corpus.parse_words("red zebra jumps seven") is None


def test_sentences_split_and_join_without_clicks() -> None:
    assert split_sentences("Red cat jumps seven. Blue dog sits two!\nok") == [
        "Red cat jumps seven.", "Blue dog sits two!", "ok"]
    rate = 22050
    t = np.arange(rate // 4) / rate
    a, b = 0.5 * np.sin(2 * np.pi * 200 * t), -0.5 * np.cos(2 * np.pi * 300 * t)  # a hard step at the seam
    joined = crossfade_join([a, b], rate)
    fade = int(0.01 * rate)
    assert len(joined) == len(a) + len(b) - fade
    assert np.abs(np.diff(joined)).max() < 0.05  # butt-joined they jump by 0.5
    assert np.abs(np.diff(np.concatenate([a, b]))).max() > 0.4


@pytest.mark.parametrize("name", SPEECH_MODELS)
def test_every_speech_model_streams_sentences_deterministically(models: dict[str, Any], name: str) -> None:
    model = models[name]
    steps: list[tuple[int, int]] = []
    text = "red cat jumps seven. blue dog sits two."
    chunks = list(synthesize_stream(model, text, model.voices[-1], 1.0, 2, seed=5,
                                    on_step=lambda i, n: steps.append((i, n))))
    assert [c.text for c in chunks] == ["red cat jumps seven.", "blue dog sits two."]
    assert all(c.audio.sample_rate == model.sample_rate and c.audio.channels == 1 for c in chunks)
    per = 2 if model.iterative else 1
    assert steps[-1] == (2 * per, 2 * per) and len(steps) == 2 * per
    whole = synthesize(model, text, model.voices[-1], 1.0, 2, seed=5)
    parts = [c.audio.samples[:, 0] for c in chunks]
    assert np.allclose(whole.samples[:, 0], crossfade_join(parts, model.sample_rate), atol=1e-6)


@pytest.mark.parametrize(("flat", "message"), [
    ({"prompt": ""}, "prompt='' is invalid: must have 1..2000 characters"),
    ({"prompt": "red cat " * 130}, "speech text must have at most 1000 characters (got 1040); fix: split the text"),
    ({"prompt": "red café, naïve"}, "has 2 character(s) outside tiny-vits's alphabet (letters, digits, space and "
                                    ". , ! ? ; : ' \" -): 'é' at 7, 'ï' at 12; fix: spell those characters out"),
    ({"prompt": "red cat", "voice": "anna"}, "voice='anna' is invalid: tiny-vits has no such voice; fix: use one of: "
                                             "us-male, us-female"),
    ({"prompt": "red cat", "speed": 2.5}, "speed=2.5 is invalid: must be between 0.5 and 2 for speech models"),
    ({"prompt": "red cat", "speed": 9}, "speed=9.0 is invalid: must be between 0.25 and 4"),
    ({"prompt": "red cat", "format": "ogg"},
     "output_format='ogg' is invalid: speech outputs are written as wav, flac, mp3"),
    ({"prompt": "red cat", "duration": 3}, "duration_s=3.0 is invalid: does not apply to tiny-vits (speech)"),
    ({"prompt": "red cat", "steps": 8}, "steps=8 is invalid: tiny-vits makes speech in one pass"),
    ({"prompt": "the red cat", "model": "tiny-speech-ref"},
     "prompt='the' is invalid: tiny-speech-ref was never trained on the sound 'ð' (in the word 'the')"),
])
def test_bad_speech_input_is_refused_before_queueing(settings: Settings, flat: dict[str, Any], message: str) -> None:
    request = JobRequest.from_flat({"modality": "speech", "model": "tiny-vits", **flat})
    with pytest.raises(InvalidRequest) as err:
        prepare_request(request, ModelRegistry(settings), settings)
    assert message in err.value.message


def test_speech_request_resolves_voice_speed_and_format(settings: Settings) -> None:
    registry = ModelRegistry(settings)
    assert registry.default_model("speech") in SPEECH_MODELS
    request, info = prepare_request(JobRequest.from_flat({"modality": "speech", "prompt": "red cat",
                                                          "model": "tiny-speech-ref"}), registry, settings)
    p = request.params
    assert (p.voice, p.speed, p.output_format, p.steps) == ("us-male", 1.0, "wav", 2)
    assert info.defaults.voices == tuple(corpus.VOICES)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_renders_speech_with_text_and_phonemes_in_the_sidecar(
        settings: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(capsys, "render", "Red cat jumps seven. Blue dog sits two.", "--modality", "speech",
                         "--model", "tiny-speech-ref", "--voice", "gb-female", "--speed", "1.2", "--seed", "3",
                         "--format", "flac", "--out", str(tmp_path / "a"))
    assert code == 0, err
    path = Path(out.strip())
    assert path.suffix == ".flac" and sf.info(path).samplerate == 22050 and sf.info(path).channels == 1
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["request"]["params"]["voice"] == "gb-female" and side["request"]["params"]["speed"] == 1.2
    assert side["speech"]["phonemes"].startswith("ɹˈɛd kˈat") and side["speech"]["sentences"] == [
        "Red cat jumps seven.", "Blue dog sits two."]
    code, out, err = run(capsys, "render", "--from", str(path), "--out", str(tmp_path / "b"))
    assert code == 0, err and np.array_equal(sf.read(Path(out.strip()))[0], sf.read(path)[0])
    code, _, err = run(capsys, "render", "red cat", "--modality", "speech", "--model", "tiny-vits", "--voice", "x",
                       "--out", str(tmp_path / "c"))
    assert code == 2 and "voice='x' is invalid: tiny-vits has no such voice" in err


def test_batch_file_with_speech_lines(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    batch = tmp_path / "b.jsonl"
    batch.write_text("\n".join([
        json.dumps({"modality": "speech", "model": "tiny-vits", "text": "red cat", "voice": "us-female",
                    "format": "mp3", "seed": 1}),
        json.dumps({"modality": "speech", "model": "tiny-vits", "text": "red cat", "speed": 7}),
    ]))
    code, _, err = run(capsys, "batch", str(batch), "--out", str(tmp_path / "o"))
    assert code == 1 and "line 2: skipped: speed=7.0 is invalid" in err
    first = json.loads((tmp_path / "o" / "manifest.jsonl").read_text().splitlines()[0])
    assert first["state"] == "succeeded" and first["artifacts"][0].endswith(".mp3")


def test_rest_speech_job_and_celery_queue(settings: Settings) -> None:
    from fastapi.testclient import TestClient

    from genaccel.api import Backend, create_app
    from pipelines.engine import LocalEngine
    from workers.celery_app import queue_for

    assert queue_for("tiny-vits", "speech", settings) == "speech"
    engine = LocalEngine(settings, scoped=False)
    engine.dispatcher.start()
    try:
        client = TestClient(create_app(Backend(settings, engine.store, engine.dispatcher,
                                               ModelRegistry(settings, allow_paths=False))))
        r = client.post("/v1/jobs", json={"modality": "speech", "model": "tiny-vits", "text": "red cat. blue dog.",
                                          "voice": "us-female", "seed": 2})
        assert r.status_code == 202, r.text
        deadline = time.time() + 60
        while (job := client.get(f"/v1/jobs/{r.json()['id']}").json())["state"] in ("queued", "running"):
            assert time.time() < deadline
            time.sleep(0.05)
        assert job["state"] == "succeeded", job
        art = job["artifacts"][0]
        samples, rate = sf.read(io.BytesIO(client.get(art["url"]).content))
        assert rate == 16000 and len(samples) > 0 and art["media_type"] == "audio/wav"
        assert "audio_chunks" not in job["metadata"]  # sentences go out as SSE events, not in every job view
        text = client.get(f"/v1/jobs/{job['id']}/events").text
        names = [line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("event: ")]
        assert names == ["queued", "started", "audio", "progress", "audio", "succeeded"]
        first = json.loads(text.split("event: audio\ndata: ", 1)[1].split("\n", 1)[0])
        assert first["text"] == "red cat." and first["audio"].startswith("data:audio/flac;base64,")
        ids = [int(line.split(": ", 1)[1]) for line in text.splitlines() if line.startswith("id: ")]
        resumed = client.get(f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": str(ids[2])}).text
        assert [line for line in resumed.splitlines() if line.startswith("event: ")] == [
            "event: progress", "event: audio", "event: succeeded"]
        bad = client.post("/v1/jobs", json={"modality": "speech", "model": "tiny-vits", "text": "naïve"})
        assert bad.status_code == 422 and "'ï' at 2" in bad.text
    finally:
        engine.dispatcher.stop(timeout=10)


def test_speech_evaluator_reads_espeak_and_measures_distance() -> None:
    from genaccel.metrics.speech import SpeechEvaluator, duration_error, mfcc_dtw, word_scores

    evaluator = SpeechEvaluator.load()
    _, held = corpus.split_sentences()
    engine = corpus.espeak()
    clips = [engine.synth(s, corpus.HELDOUT_VOICE, 1.0).samples for s in held[:8]]
    expected = [corpus.parse_words(s) or () for s in held[:8]]
    assert word_scores(evaluator.read(clips), expected)["word_acc"] >= 0.75
    assert word_scores(evaluator.read([np.zeros(22050, np.float32)]), [expected[0]])["exact_match"] == 0.0
    voiced = [engine.synth(held[0], v).samples for v in corpus.VOICES]
    assert sum(a == b for a, b in zip(evaluator.voice(voiced), corpus.VOICES, strict=True)) >= 4
    ref = engine.synth(held[0], "us-male").samples
    assert mfcc_dtw(ref, ref) == pytest.approx(0.0, abs=1e-6)
    assert mfcc_dtw(engine.synth(held[0], "us-male", pitch=40).samples, ref) < mfcc_dtw(
        engine.synth(held[1], "gb-female").samples, ref)
    assert duration_error(engine.synth(held[0], "us-male", 0.5).samples, ref) > 0.5


def test_speech_ref_training_step_lowers_its_losses() -> None:
    from genaccel.training.speech_ref import collate, example, losses
    from pipelines.speech_ref import build_tiny_speech_ref

    model = build_tiny_speech_ref()
    utts = corpus.render_corpus(["red cat jumps seven", "blue dog sits two"], corpus.renderings(), per_text=1)
    batch = collate([example(u, model.ids) for u in utts])
    assert batch["frames"].sum(1).tolist() == batch["mask"].sum(1).tolist()
    params = [*model.encoder.parameters(), *model.transformer.parameters()]
    opt = torch.optim.Adam(params, lr=3e-3)
    model.encoder.train()
    model.transformer.train()
    first = None
    for _ in range(8):
        parts = losses(model, batch, torch.Generator().manual_seed(0))
        total = parts["duration"] + parts["prior"] + parts["flow"]
        first = first if first is not None else float(total.detach())
        opt.zero_grad()
        total.backward()
        opt.step()
    assert float(total.detach()) < first


def test_sentences_stream_as_events_sse_and_through_the_service(settings: Settings) -> None:
    from genaccel.api.events import job_events
    from genaccel.events import JobEvent
    from genaccel.service.jobs import JobService
    from genaccel.service.speech import stream_speech
    from pipelines.engine import LocalEngine

    events: list[JobEvent] = []
    engine = LocalEngine(settings, scoped=False)
    engine.runner.on_event = events.append
    engine.dispatcher.start()
    try:
        from genaccel.api import Backend

        service = JobService(Backend(settings, engine.store, engine.dispatcher, ModelRegistry(settings)))
        text = "red cat jumps seven. blue dog sits two. green fish eats one."
        chunks = list(stream_speech(service, {"text": text, "model": "tiny-speech-ref", "seed": 4}, "local"))
        assert [c.text for c in chunks] == split_sentences(text) and [c.index for c in chunks] == [0, 1, 2]
        assert all(c.sample_rate == 22050 and c.samples[0, 0] == 0 and c.samples[-1, 0] == 0 for c in chunks)
        audio = [e for e in events if e.name == "audio"]
        assert [e.chunk["index"] for e in audio if e.chunk] == [0, 1, 2]
        assert [(e.step, e.total) for e in audio] == [(2, 6), (4, 6), (6, 6)]
        job = engine.store.get(audio[0].job_id)
        names = [name for _, name, _ in job_events(job, lambda j: {})]
        assert names == ["queued", "started", "audio", "audio", "progress", "audio", "succeeded"]
        ids = [i for i, _, _ in job_events(job, lambda j: {})]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        # an identical request answered from the result cache streams its whole file at once
        again = list(stream_speech(service, {"text": text, "model": "tiny-speech-ref", "seed": 4}, "local"))
        assert len(again) == 1 and again[0].samples.shape[0] > sum(c.samples.shape[0] for c in chunks) * 0.9
    finally:
        engine.dispatcher.stop(timeout=10)


def test_ui_plays_streamed_sentences_while_the_job_runs() -> None:
    from genaccel.artifacts.audio import chunk_record
    from genaccel.spec import Job
    from ui.render import outputs_html

    record = chunk_record(0, 2, "red cat <b>", np.zeros((2205, 1), np.float32), 22050, 2)
    job = Job(request=JobRequest.from_flat({"modality": "speech", "prompt": "red cat. blue dog."}), state="running",
              metadata={"audio_chunks": [record]})
    page = outputs_html(job, lambda job_id, name, download=False: name)
    assert '<audio src="data:audio/flac;base64,' in page and "sentence 1 of 2: red cat &lt;b&gt;" in page
    assert outputs_html(job.model_copy(update={"state": "cancelled"}), lambda *a, **k: "") == ""


def test_profiles_give_speech_flow_decoders_fewer_steps(settings: Settings) -> None:
    registry = ModelRegistry(settings)
    for profile, steps in (("off", 2), ("balanced", 6), ("fast", 4), ("max", 2), ("turbo", 2)):
        request = JobRequest.from_flat({"modality": "speech", "prompt": "red cat", "model": "tiny-longcat",
                                        "profile": profile})
        assert prepare_request(request, registry, settings)[0].params.steps == (4 if profile == "off" else steps)


def test_speech_without_espeak_is_refused_before_queueing(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from genaccel.errors import ModelNotAvailable

    monkeypatch.setattr("pipelines.speech.espeak_available", lambda: False)
    request = JobRequest.from_flat({"modality": "speech", "model": "tiny-vits", "prompt": "red cat"})
    with pytest.raises(ModelNotAvailable, match="reads text through espeak-ng, which is not installed here; "
                                                "fix: apt-get install espeak-ng"):
        prepare_request(request, ModelRegistry(settings), settings)


def test_speech_ref_is_served_from_its_assets_folder(tmp_path: Path) -> None:
    from pipelines.registry import speech_models
    from pipelines.speech_ref import build_tiny_speech_ref

    assert "speech-ref" not in speech_models(tmp_path)
    model = build_tiny_speech_ref(seed=1)
    model.save(tmp_path / "speech-ref")
    info = speech_models(tmp_path)["speech-ref"]
    assert (info.source, info.family, info.defaults.steps, info.defaults.voices) == (
        "asset", "speech-dit", 2, tuple(corpus.VOICES))
    loaded = info.builder()  # type: ignore[misc]
    args = ("red cat", "us-male", 1.0, 2)
    assert np.array_equal(loaded.synthesize(*args, torch.Generator().manual_seed(0), lambda i, n: None),
                          model.synthesize(*args, torch.Generator().manual_seed(0), lambda i, n: None))
