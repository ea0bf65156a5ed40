"""The video modality: every tiny video pipeline through the adapter, the files it writes (MP4
H.264 yuv420p, WebM, GIF, poster, tag and sidecar, muxed audio), ``render --from clip.mp4``, the
per-family checks before queueing (with their error texts), the long-clip window count, previews,
and every way in (CLI, batch, REST, UI fields, Celery queue)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from genaccel.cli import main
from genaccel.errors import InvalidRequest, UnknownModel
from genaccel.settings import Settings
from genaccel.spec import JobRequest
from pipelines.modality import AudioOutput, RunHooks, VideoOutput
from pipelines.prepare import prepare_request
from pipelines.registry import ModelRegistry, builtin_models, weights_digest
from pipelines.runner import save_output
from pipelines.video import VideoAdapter, frames_preview, windows

VIDEO_MODELS = ["tiny-wan", "tiny-wan-i2v", "tiny-ltx", "tiny-ltx-i2v", "tiny-animatediff", "tiny-latte",
                "tiny-cogvideox", "tiny-svd"]
NEEDS_IMAGE = {"tiny-wan-i2v", "tiny-ltx-i2v", "tiny-svd"}
SHORT = {"tiny-svd": {"frames": 2}, "tiny-animatediff": {"frames": 4}}  # the slow ones: fewer frames


@pytest.fixture
def first_frame(tmp_path: Path) -> Path:
    path = tmp_path / "first.png"
    Image.new("RGB", (64, 64), (220, 40, 40)).save(path)
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def decode(path: Path) -> tuple[np.ndarray, Any]:
    """Frames (F, H, W, 3) and the video stream's codec context."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
        return frames, (stream.codec_context.name, stream.codec_context.pix_fmt)


def prepared(settings: Settings, **flat: Any) -> JobRequest:
    request, _ = prepare_request(JobRequest.from_flat({"modality": "video", "prompt": "a red ball", **flat}),
                                 ModelRegistry(settings), settings)
    return request


@pytest.mark.parametrize("name", VIDEO_MODELS)
def test_every_tiny_video_model_makes_its_clip(settings: Settings, first_frame: Path, name: str) -> None:
    info = builtin_models()[name]
    assert info.modality == "video"
    request = prepared(settings, model=name, steps=2, seed=5, **SHORT.get(name, {}),
                       **({"init": str(first_frame)} if name in NEEDS_IMAGE else {}))
    pipe = info.builder()  # type: ignore[misc]
    pipe.set_progress_bar_config(disable=True)
    steps: list[tuple[int, int]] = []
    (outputs,) = VideoAdapter().generate(pipe, [request], RunHooks(lambda s, t: steps.append((s, t))))
    (clip,) = outputs
    assert isinstance(clip, VideoOutput) and len(clip.frames) == request.params.num_frames
    assert clip.frames[0].size == (64, 64) and clip.fps == 8.0
    assert steps[-1][0] == steps[-1][1] and len(steps) >= 2


def test_cli_mp4_with_poster_tag_and_sidecar_reruns_from_the_clip(capsys: pytest.CaptureFixture[str],
                                                                   tmp_path: Path) -> None:
    code, out, err = run(capsys, "render", "a red ball", "--modality", "video", "--model", "tiny-wan", "--steps", "2",
                         "--seed", "7", "--out", str(tmp_path / "a"))
    assert code == 0, err
    (clip,) = (Path(line) for line in out.splitlines())
    assert clip.suffix == ".mp4" and clip.with_name(f"{clip.stem}.poster.png").is_file()
    frames, codec = decode(clip)
    assert frames.shape == (9, 64, 64, 3) and codec == ("h264", "yuv420p")
    side = json.loads(clip.with_suffix(".json").read_text())
    assert side["request"]["params"]["num_frames"] == 9 and side["seed"] == 7 and side["model"] == "tiny-wan"
    clip.with_suffix(".json").unlink()  # the MP4's comment tag alone re-runs it
    code, out, err = run(capsys, "render", "--from", str(clip), "--no-cache", "--out", str(tmp_path / "b"))
    assert code == 0, err
    again = Path(out.strip())
    assert again != clip and np.array_equal(decode(again)[0], frames)


@pytest.mark.parametrize(("fmt", "media"), [("webm", "video/webm"), ("gif", "image/gif")])
def test_other_formats(settings: Settings, tmp_path: Path, fmt: str, media: str) -> None:
    request = prepared(settings, model="tiny-ltx", steps=1, seed=1, format=fmt)
    frames = [Image.new("RGB", (64, 64), (i * 20, 0, 0)) for i in range(9)]
    art = save_output(VideoOutput(frames, 8.0), tmp_path / f"c.{fmt}", fmt, request, 1, {})
    assert art.media_type == media and art.frames == 9 and Path(art.path).is_file()
    from genaccel.artifacts import request_from_artifact

    assert request_from_artifact(Path(art.path)).params.num_frames == 9


def test_audio_a_pipeline_returns_is_muxed(settings: Settings, tmp_path: Path) -> None:
    request = prepared(settings, model="tiny-wan", steps=1, seed=1)
    tone = (0.2 * np.sin(np.linspace(0, 400, 16000))).astype(np.float32)[:, None]
    frames = [Image.new("RGB", (64, 64), (0, 0, i * 20)) for i in range(9)]
    art = save_output(VideoOutput(frames, 8.0, AudioOutput(tone, 16000)), tmp_path / "s.mp4", "mp4", request, 1, {})
    with av.open(art.path) as container:
        assert [s.type for s in container.streams] == ["video", "audio"]
        assert container.streams.audio[0].codec_context.name == "aac"


@pytest.mark.parametrize(("flat", "message"), [
    ({"model": "tiny-wan", "frames": 10},
     "num_frames=10 is invalid: Wan makes 4k+1 frames (1, 5, 9, ...); fix: pass --frames 9"),
    ({"model": "tiny-ltx", "frames": 12},
     "num_frames=12 is invalid: LTX makes 8k+1 frames (1, 9, 17, ...); fix: pass --frames 9"),
    ({"model": "tiny-ltx", "width": 88},
     "width=88 is invalid: LTX needs sizes in multiples of 32; fix: pass --width 96"),
    ({"model": "tiny-wan", "height": 72},
     "height=72 is invalid: Wan needs sizes in multiples of 16; fix: pass --height 64"),
    ({"model": "tiny-latte", "frames": 9},
     "num_frames=9 is invalid: tiny-latte (Latte) makes 8 frames a window (its temporal position embedding has "
     "that length); longer clips are windows overlapping by 4: 8, 12, 16, ... frames; fix: pass --frames 8"),
    ({"model": "tiny-latte", "frames": 5},
     "num_frames=5 is invalid: tiny-latte (Latte) makes 8 frames a window"),
    ({"model": "tiny-wan-i2v"},
     "init_image=None is invalid: tiny-wan-i2v (Wan image-to-video) makes a clip from an image; fix: pass --init "
     "IMAGE (the first frame), or use a text-to-video model"),
    ({"model": "tiny-wan", "frames": 9, "duration": 1.0},
     "duration_s=1.0 is invalid: was given together with num_frames; fix: pass --frames or --duration, not both"),
    ({"model": "tiny-wan", "fps": 500}, "fps=500.0 is invalid: must be in (0, 120]"),
    ({"model": "tiny-wan", "frames": 400}, "num_frames=400 is invalid: must be between 1 and 257"),
    ({"model": "tiny-wan", "voice": "anna"}, "voice='anna' is invalid: applies to modality speech, not video"),
    ({"model": "tiny-wan", "format": "wav"}, "output_format='wav' is invalid: video outputs are written as mp4, "
     "webm, gif"),
])
def test_bad_video_requests_are_refused_before_queueing(settings: Settings, flat: dict[str, Any],
                                                        message: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        prepared(settings, **flat)
    assert message in str(err.value)


def test_images_t2v_and_unreadable(settings: Settings, first_frame: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match=r"tiny-wan \(Wan\) is text-to-video only; fix: drop --init"):
        prepared(settings, model="tiny-wan", init=str(first_frame))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    with pytest.raises(InvalidRequest, match=r"init_image=.* is invalid: is not a readable image"):
        prepared(settings, model="tiny-wan-i2v", init=str(broken))


def test_duration_rounds_up_to_a_valid_frame_count(settings: Settings) -> None:
    assert prepared(settings, model="tiny-wan", duration=1.0).params.num_frames == 9  # 8 frames -> 4k+1
    assert prepared(settings, model="tiny-ltx", duration=1.0, fps=12).params.num_frames == 17
    assert prepared(settings, model="tiny-animatediff", duration=0.5).params.num_frames == 4


def test_memory_estimate_refuses_a_clip_that_cannot_fit(isolated_home: Path, capsys: pytest.CaptureFixture[str],
                                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small = Settings(home=isolated_home, job_memory_gb=0.01)
    assert prepared(small, model="tiny-wan", frames=9).params.num_frames == 9
    with pytest.raises(InvalidRequest, match=r"num_frames=129 is invalid: a 129-frame 512x512 clip needs about "
                                             r"[\d.]+ GB of activations, above this worker's 0.01 GB budget"):
        prepared(small, model="tiny-wan", frames=129, width=512, height=512)
    monkeypatch.setenv("GENACCEL_JOB_MEMORY_GB", "0.01")
    code, _, err = run(capsys, "render", "x", "--modality", "video", "--model", "tiny-wan", "--frames", "129",
                       "--width", "512", "--height", "512", "--out", str(tmp_path / "out"))
    assert code == 2 and "GENACCEL_JOB_MEMORY_GB" in err
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_animatediff_long_clip_runs_in_freenoise_windows(settings: Settings) -> None:
    request = prepared(settings, model="tiny-animatediff", frames=20, steps=2, seed=2)
    assert windows(20, 16) == 2 and windows(24, 16) == 3 and windows(16, 16) == 1
    pipe = builtin_models()["tiny-animatediff"].builder()  # type: ignore[misc]
    pipe.set_progress_bar_config(disable=True)
    ticks: list[tuple[int, int]] = []
    (outputs,) = VideoAdapter().generate(pipe, [request], RunHooks(lambda s, t: ticks.append((s, t))))
    assert len(outputs[0].frames) == 20  # type: ignore[union-attr]
    assert ticks == [(1, 4), (2, 4), (3, 4), (4, 4)]  # progress by window: 2 steps x 2 windows
    assert not getattr(pipe, "free_noise_enabled", False)  # switched off after the call
    assert not any(m._forward_hooks for m in pipe.unet.modules())  # the window counter is gone too


def test_latte_long_clip_runs_window_after_window_from_the_cached_past_frames(settings: Settings) -> None:
    from pipelines.video_rules import windowed_frames
    from pipelines.video_windows import long_clip, valid_frames, window_count

    assert [window_count(f, 8, 4) for f in (8, 12, 16, 20)] == [1, 2, 3, 4]
    assert valid_frames(16, 8, 4) and not valid_frames(14, 8, 4) and not valid_frames(5, 8, 4)
    assert (windowed_frames(14, 8), windowed_frames(13, 8, up=True), windowed_frames(3, 8)) == (16, 16, 8)
    request = prepared(settings, model="tiny-latte", frames=16, steps=3, seed=2)
    assert prepared(settings, model="tiny-latte", duration=1.6, steps=3).params.num_frames == 16  # 12.8 -> 16
    pipe = builtin_models()["tiny-latte"].builder()  # type: ignore[misc]
    pipe.set_progress_bar_config(disable=True)
    steps: list[tuple[int, int]] = []
    (outputs,) = VideoAdapter().generate(pipe, [request], RunHooks(lambda s, t: steps.append((s, t))))
    assert len(outputs[0].frames) == 16  # type: ignore[union-attr]
    assert steps == [(i, 9) for i in range(1, 10)]  # 3 windows x 3 steps, in order

    # the cache: every later window starts from the previous window's last clean latent frames
    finals: list[torch.Tensor] = []

    def call(**kwargs: Any) -> Any:
        held = kwargs["callback_on_step_end"]
        out = pipe(**kwargs)
        finals.append(held.last)
        return out

    kwargs = {"prompt": "a red ball", "num_inference_steps": 3, "guidance_scale": 4.5, "height": 64, "width": 64,
              "video_length": 8, "output_type": "pil", "clean_caption": False}
    frames = long_clip(call, kwargs, 12, 8, 4, torch.Generator().manual_seed(0), lambda s, t: None)
    assert len(frames) == 12 and len(finals) == 2
    torch.testing.assert_close(finals[1][:, :, :4], finals[0][:, :, 4:])
    assert not torch.allclose(finals[1][:, :, 4:], finals[0][:, :, 4:])


def test_preview_is_a_strip_of_frames() -> None:
    url = frames_preview(torch.randn(1, 16, 3, 8, 8), 0)
    assert url is not None and url.startswith("data:image/png;base64,")
    assert frames_preview(torch.randn(1, 16, 8), 0) is None  # packed tokens (LTX): no preview


def test_batch_file_with_video_lines(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    batch = tmp_path / "b.jsonl"
    batch.write_text(json.dumps({"prompt": "a ball", "modality": "video", "model": "tiny-ltx", "steps": 1,
                                 "frames": 9}) + "\n" + json.dumps({"prompt": "bad", "modality": "video",
                                                                    "model": "tiny-ltx", "frames": 10}) + "\n")
    code, _, err = run(capsys, "batch", str(batch), "--out", str(tmp_path / "o"))
    assert code == 1 and "line 2: skipped: num_frames=10 is invalid: LTX makes 8k+1 frames" in err
    records = [json.loads(x) for x in (tmp_path / "o" / "manifest.jsonl").read_text().splitlines()]
    assert records[0]["state"] == "succeeded" and records[0]["artifacts"][0].endswith(".mp4")


@pytest.fixture
def client(isolated_home: Path) -> Iterator[TestClient]:
    from genaccel.api import Backend, create_app
    from pipelines.engine import LocalEngine

    settings = Settings(home=isolated_home, default_model="tiny-sd", rate_limit_per_min=0)
    engine = LocalEngine(settings, scoped=False)
    engine.dispatcher.start()
    backend = Backend(settings, engine.store, engine.dispatcher, ModelRegistry(settings, allow_paths=False))
    yield TestClient(create_app(backend))
    engine.dispatcher.stop(timeout=10)


def test_rest_video_job(client: TestClient) -> None:
    r = client.post("/v1/jobs", json={"modality": "video", "model": "tiny-wan", "prompt": "a ball", "steps": 2,
                                      "frames": 5, "seed": 3})
    assert r.status_code == 202, r.text
    deadline = time.time() + 60
    while (job := client.get(f"/v1/jobs/{r.json()['id']}").json())["state"] not in ("succeeded", "failed"):
        assert time.time() < deadline
        time.sleep(0.05)
    assert job["state"] == "succeeded", job
    (art,) = job["artifacts"]
    assert art["media_type"] == "video/mp4" and art["frames"] == 5 and art["fps"] == 8.0
    got = client.get(art["url"])
    assert got.headers["content-type"] == "video/mp4" and got.content[4:8] == b"ftyp"
    bad = client.post("/v1/jobs", json={"modality": "video", "model": "tiny-wan", "prompt": "x", "frames": 6})
    assert bad.status_code == 422 and "Wan makes 4k+1 frames" in bad.text


def test_video_jobs_go_to_the_video_queue_and_the_ui_has_video_fields(settings: Settings) -> None:
    from ui.generate import tab_fields
    from workers.celery_app import queue_for

    assert queue_for("tiny-wan", "video", settings) == "video"
    registry = ModelRegistry(settings)
    videos = [m for m in registry.available() if m.modality == "video"]
    assert {"tiny-wan", "tiny-latte", "tiny-animatediff"} <= {m.name for m in videos}
    assert {"num_frames", "fps", "init_image", "duration_s"} <= tab_fields(videos)
    from pipelines.registry import ASSETS

    default = registry.default_model("video")
    if (ASSETS / "shapes-video" / "model_index.json").is_file():
        assert default == "shapes-video"  # the shipped reference video model is the default
    else:
        assert default.startswith("tiny-")


def test_ui_video_tab_plays_the_mp4_and_previews_frames_while_rendering(isolated_home: Path) -> None:
    from genaccel.api import Backend
    from pipelines.engine import LocalEngine
    from ui.links import FileLinks
    from ui.page import Page, unavailable_reason

    settings = Settings(home=isolated_home, default_model="tiny-sd", rate_limit_per_min=0)
    engine = LocalEngine(settings, scoped=False)
    engine.dispatcher.start()
    try:
        backend = Backend(settings, engine.store, engine.dispatcher, ModelRegistry(settings, allow_paths=False))
        assert unavailable_reason(backend, "video") is None
        page = Page(backend, FileLinks("/ui/files"))
        job = page.api_submit({"modality": "video", "model": "tiny-wan", "prompt": "a ball", "steps": 4,
                               "frames": 5})
        assert job["error"] is None, job
        deadline = time.time() + 60
        while job["state"] not in ("succeeded", "failed") and time.time() < deadline:
            time.sleep(0.05)
            job = page.api_job(job["id"])
        assert job["state"] == "succeeded", job["error"]
        (art,) = job["artifacts"]
        assert art["media_type"] == "video/mp4" and art["url"].startswith("/ui/files/")
        record = engine.store.get(job["id"])
        assert str(record.metadata.get("preview", "")).startswith("data:image/png;base64,")  # the frame strip
        from ui import render

        assert "<video src=" in render.outputs_html(record, lambda job_id, name, **_: f"/files/{name}")
    finally:
        engine.dispatcher.stop(timeout=10)


def test_text_to_image_then_image_to_video_counts_both_stages(settings: Settings, first_frame: Path) -> None:
    info = builtin_models()["tiny-t2i2v"]
    pipe = info.builder()  # type: ignore[misc]
    pipe.set_progress_bar_config(disable=True)
    request = prepared(settings, model="tiny-t2i2v", steps=2, seed=1, frames=5)
    steps: list[tuple[int, int]] = []
    (outputs,) = VideoAdapter().generate(pipe, [request], RunHooks(lambda s, t: steps.append((s, t))))
    assert len(outputs[0].frames) == 5  # type: ignore[union-attr]
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]  # 2 image steps, then 2 video steps, one total
    given = prepared(settings, model="tiny-t2i2v", steps=2, seed=1, frames=5, init=str(first_frame))
    steps.clear()
    VideoAdapter().generate(pipe, [given], RunHooks(lambda s, t: steps.append((s, t))))
    assert steps == [(1, 2), (2, 2)]  # an init image skips the image stage


def test_any_image_model_pairs_with_any_image_to_video_model(settings: Settings) -> None:
    """``IMAGE+VIDEO`` names a text-to-image-then-image-to-video pair of served models: the image
    model draws the first frame, the clip follows the video model's rules and defaults."""
    registry = ModelRegistry(settings)
    pair = registry.resolve("tiny-sd+tiny-ltx-i2v")
    assert pair.modality == "video" and pair.pipeline_class == "TextImageToVideoPipeline"
    assert pair.defaults == registry.resolve("tiny-ltx-i2v").defaults
    with pytest.raises(InvalidRequest, match=r"LTX image-to-video makes 8k\+1 frames.*pass --frames 9"):
        prepared(settings, model="tiny-sd+tiny-ltx-i2v", steps=2, frames=10)  # LTX's rule, not Wan's
    request = prepared(settings, model="tiny-sd+tiny-ltx-i2v", steps=2, seed=1, frames=9)  # no image needed
    pipe = pair.builder()  # type: ignore[misc]
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe.image).__name__ == "StableDiffusionPipeline"
    assert type(pipe.video).__name__ == "LTXImageToVideoPipeline"
    steps: list[tuple[int, int]] = []
    (outputs,) = VideoAdapter().generate(pipe, [request], RunHooks(lambda s, t: steps.append((s, t))))
    assert len(outputs[0].frames) == 9  # type: ignore[union-attr]
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert weights_digest(pair) != weights_digest(registry.resolve("tiny-dit+tiny-ltx-i2v"))


@pytest.mark.parametrize(("name", "why"), [
    ("tiny-wan+tiny-wan-i2v", "its first model tiny-wan is not a text-to-image model (it makes video)"),
    ("tiny-sd+tiny-wan", "its second model tiny-wan is not an image-to-video model (WanPipeline)"),
    ("tiny-sd+tiny-dit", "its second model tiny-dit is not an image-to-video model"),
    ("tiny-sd+tiny-wan-i2v+tiny-wan-i2v", "a pair names exactly two models, IMAGE+VIDEO"),
    ("tiny-sd+", "a pair names exactly two models, IMAGE+VIDEO"),
    ("tiny-sd+nosuch-i2v", "no such model"),
])
def test_a_bad_pair_is_refused_with_its_reason(settings: Settings, name: str, why: str) -> None:
    with pytest.raises(UnknownModel) as err:
        ModelRegistry(settings).resolve(name)
    assert why in str(err.value)


def test_a_models_longest_clip_is_enforced(settings: Settings) -> None:
    import dataclasses

    registry = ModelRegistry(settings)
    info = registry.resolve("tiny-wan")
    registry.add(dataclasses.replace(info, name="short-wan",
                                     defaults=dataclasses.replace(info.defaults, max_duration_s=2.0)))
    request = JobRequest.from_flat({"modality": "video", "prompt": "x", "model": "short-wan", "frames": 33})
    with pytest.raises(InvalidRequest, match=r"num_frames=33 is invalid: 33 frames at 8 fps last 4.125 s, and "
                                             r"short-wan makes at most 2 s; fix: pass --frames 16 or fewer"):
        prepare_request(request, registry, settings)


@pytest.mark.parametrize("name", ["tiny-wan", "tiny-ltx"])
def test_vae_tiling_on_video_vaes(settings: Settings, name: str) -> None:
    from genaccel.accel import apply_techniques, parse_technique
    from genaccel.spec import TechniqueSpec

    pipe = builtin_models()[name].builder()  # type: ignore[misc]
    pipe.set_progress_bar_config(disable=True)
    request = prepared(settings, model=name, steps=1, seed=1, techniques=[{"name": "vae_tiling"}])
    def run_clip() -> np.ndarray:
        (outputs,) = VideoAdapter().generate(pipe, [request], RunHooks(lambda s, t: None))
        return np.stack([np.asarray(f, dtype=np.float32) for f in outputs[0].frames])  # type: ignore[union-attr]

    base = run_clip()
    handle = apply_techniques(pipe, [parse_technique(TechniqueSpec(name="vae_tiling"))])
    try:
        assert pipe.vae.use_tiling
        np.testing.assert_allclose(run_clip(), base, atol=2.0)  # below the tile size: the same clip
    finally:
        handle.remove()
    assert not pipe.vae.use_tiling


def test_an_init_image_gone_before_the_run_fails_cleanly(settings: Settings, tmp_path: Path) -> None:
    from pipelines.engine import LocalEngine

    image = tmp_path / "frame.png"
    Image.new("RGB", (64, 64), (0, 200, 0)).save(image)
    out = tmp_path / "out"
    with LocalEngine(settings) as engine:
        request = engine.prepare(JobRequest.from_flat({"modality": "video", "prompt": "x", "model": "tiny-wan-i2v",
                                                       "steps": 1, "frames": 5, "init": str(image)}))
        image.write_bytes(b"not an image any more")  # changed after it was checked, before the job ran
        (job,) = engine.wait([engine.submit(request, output_dir=out, prepared=True).id])
    assert job.state == "failed" and job.error is not None
    assert "init_image=" in job.error.message and "is not a readable image" in job.error.message
    assert not out.exists() or not any(out.iterdir())  # nothing half-written
