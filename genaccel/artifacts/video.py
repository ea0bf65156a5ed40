"""Video files: MP4 (H.264, yuv420p) and WebM (VP9) through PyAV, GIF through Pillow, with a
poster PNG (the middle frame). The metadata JSON goes into the container's ``comment`` tag
(MP4 with ``use_metadata_tags``, WebM) or the GIF comment, and always into the sidecar. Sound
that a pipeline returns with the frames is muxed in (AAC in MP4, Opus in WebM)."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from genaccel.artifacts.meta import payload, write_atomic, write_sidecar
from genaccel.spec import Artifact, JobRequest

VIDEO_FORMATS: dict[str, tuple[str, str, str]] = {
    "mp4": ("mp4", "libx264", "video/mp4"),
    "webm": ("webm", "libvpx-vp9", "video/webm"),
    "gif": ("gif", "", "image/gif"),
}
AUDIO_CODECS = {"mp4": "aac", "webm": "libopus"}


def _even(image: Image.Image) -> Image.Image:
    """yuv420p needs even sides: pad by one pixel where needed."""
    w, h = image.width + image.width % 2, image.height + image.height % 2
    if (w, h) == image.size:
        return image
    canvas = Image.new("RGB", (w, h))
    canvas.paste(image)
    return canvas


def _encode(frames: list[Image.Image], fps: float, tmp: Path, fmt: str, comment: str,
            audio: tuple[np.ndarray, int] | None) -> None:
    import av

    container_fmt, codec, _ = VIDEO_FORMATS[fmt]
    options = {"movflags": "use_metadata_tags"} if fmt == "mp4" else {}
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(tmp), mode="w", format=container_fmt, options=options) as out:
        out.metadata["comment"] = comment
        stream: Any = out.add_stream(codec, rate=rate)
        first = _even(frames[0].convert("RGB"))
        stream.width, stream.height, stream.pix_fmt = first.width, first.height, "yuv420p"
        sound: Any = None
        if audio is not None:
            samples, sample_rate = audio
            sound = out.add_stream(AUDIO_CODECS[fmt], rate=48000 if fmt == "webm" else sample_rate)
        for image in frames:
            frame = av.VideoFrame.from_image(_even(image.convert("RGB")))
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
        if sound is not None and audio is not None:
            samples, sample_rate = audio
            layout = "mono" if samples.shape[1] == 1 else "stereo"
            planar = np.ascontiguousarray(samples[:, :2].T.astype(np.float32))  # (channels, n)
            frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout=layout)
            frame.sample_rate = sample_rate
            out.mux(sound.encode(frame))
            out.mux(sound.encode())


def write_video(frames: list[Image.Image], fps: float, path: Path, fmt: str, request: JobRequest, seed: int,
                meta: dict[str, Any], audio: tuple[np.ndarray, int] | None = None) -> Artifact:
    """Write the clip atomically with its metadata, a sidecar and a poster PNG beside it."""
    data = payload(request, seed, meta)
    comment = json.dumps(data, sort_keys=True)
    if fmt == "gif":
        def write(tmp: Path) -> None:
            frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], loop=0,
                           duration=round(1000 / fps), comment=comment.encode())
    else:
        def write(tmp: Path) -> None:
            _encode(frames, fps, tmp, fmt, comment, audio)
    write_atomic(path, write)
    poster = path.with_name(f"{path.stem}.poster.png")
    write_atomic(poster, lambda tmp: frames[len(frames) // 2].save(tmp, format="PNG"))
    side = write_sidecar(path, {**data, "poster": poster.name})
    return Artifact(name=path.name, path=str(path.resolve()), media_type=VIDEO_FORMATS[fmt][2], seed=seed,
                    width=frames[0].width, height=frames[0].height, bytes=path.stat().st_size,
                    frames=len(frames), fps=fps, duration_s=round(len(frames) / fps, 4), sidecar=side.name)


def read_video_tag(path: Path) -> dict[str, Any] | None:
    """The metadata JSON in a clip's comment tag (``None``: not a clip, or no tag)."""
    if path.suffix.lower() == ".gif":
        try:
            with Image.open(path) as img:
                text = img.info.get("comment")
        except OSError:
            return None
        text = text.decode() if isinstance(text, bytes) else text
    else:
        import av

        try:
            with av.open(str(path)) as container:
                tags = {k.lower(): v for k, v in container.metadata.items()}
                text = tags.get("comment")
        except (av.FFmpegError, OSError):
            return None
    try:
        return dict(json.loads(text)) if text else None
    except ValueError:
        return None
