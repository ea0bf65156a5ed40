"""``POST /audio/speech``: text to speech, answered with the audio bytes.

Without ``stream_format`` the call waits for its job (one job for the whole input, or one per
group of sentences when the input is longer than a prompt may be) and answers one file. With
``stream_format: "audio"`` the input is cut into sentences, one job each, queued a few ahead of
the one being sent; the answer is chunked and each sentence's audio flows as soon as its job
finished, while the next ones are still being synthesised. ``stream_format: "sse"`` sends the
same chunks as ``speech.audio.delta`` events (base64) and ends with ``speech.audio.done``.

Honoured: ``model``, ``input``, ``voice`` (a voice of the model; OpenAI's built-in names such as
``alloy`` fall back to the model's default voice, with a warning), ``speed``, ``response_format``
(``wav``, ``flac``, ``mp3``, ``pcm``: 16-bit mono 24 kHz; ``opus`` and ``aac`` are refused), and
``stream_format``. Extras: ``seed``, ``steps``, ``profile``, ``priority``, ``cache``. Ignored:
``instructions``.
"""

from __future__ import annotations

import base64
import json
import re
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import anyio
import numpy as np
from anyio import to_thread
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from genaccel.api.deps import Caller, Service
from genaccel.api.openai import audio
from genaccel.api.openai.common import (
    Body,
    IdempotencyKey,
    cancel,
    form_or_json,
    headers,
    resolve_model,
    submit,
    succeeded,
    wait,
)
from genaccel.api.openai.errors import OpenAIError, OpenAIRoute, invalid
from genaccel.service import JobService
from genaccel.spec import Job
from pipelines.modality import adapter_for
from pipelines.registry import ModelInfo

router = APIRouter(route_class=OpenAIRoute, tags=["openai"])

HONOURED = ("model", "input", "voice", "speed", "response_format", "stream_format")
IGNORED = {"instructions": "the voice is chosen by voice; no style instructions"}
EXTRAS = {"seed": "seed", "steps": "steps", "profile": "profile", "priority": "priority", "cache": "cache"}
OPENAI_VOICES = frozenset({"alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer",
                           "verse", "marin", "cedar"})
AHEAD = 2
"""Sentence jobs queued beyond the one being streamed (a few, so a long text does not fill the
key's queued-job cap, and the workers always have the next sentence)."""
SENTENCE = re.compile(r"(?<=[.!?…。！？;])\s+")


def sentences(text: str, limit: int) -> list[str]:
    """``text`` cut after each sentence end; a sentence longer than ``limit`` is cut between words."""
    out: list[str] = []
    for part in (p.strip() for p in SENTENCE.split(text.strip())):
        while len(part) > limit:
            cut = part.rfind(" ", 0, limit + 1)
            cut = cut if cut > 0 else limit
            out.append(part[:cut].strip())
            part = part[cut:].strip()
        if part:
            out.append(part)
    return out


def grouped(parts: list[str], limit: int) -> list[str]:
    """Consecutive sentences joined into as few texts of at most ``limit`` characters as possible."""
    out: list[str] = []
    for part in parts:
        if out and len(out[-1]) + 1 + len(part) <= limit:
            out[-1] += " " + part
        else:
            out.append(part)
    return out


def job_format(fmt: str, offered: tuple[str, ...]) -> str:
    """What the job writes: ``fmt`` when the model writes it, else WAV (or the model's first
    format), which this route re-encodes (``pcm`` always comes from WAV)."""
    if fmt in offered and fmt != "pcm":
        return fmt
    return "wav" if "wav" in offered else offered[0]


def speech_request(body: Body, info: ModelInfo, fmt: str) -> tuple[dict[str, Any], list[str]]:
    """The flat request (without its text) and the warnings of mapping voice and speed."""
    adapter = adapter_for(info)
    honoured = set(adapter.fields)
    warnings: list[str] = []
    flat: dict[str, Any] = {"modality": "speech", "model": info.name, **body.extras(EXTRAS),
                            "output_format": job_format(fmt, adapter.formats)}
    voice = body.get("voice")
    if isinstance(voice, dict):
        voice = voice.get("id")
    if voice is not None and not isinstance(voice, str):
        raise invalid("voice", f"voice={voice!r} must be a voice name")
    if voice is not None:
        voices = info.defaults.voices
        if "voice" not in honoured:
            warnings.append(f"voice ignored: {info.name} has a single voice")
        elif voices and voice not in voices and voice in OPENAI_VOICES:
            warnings.append(f"voice {voice!r} is not a voice of {info.name}; used its default {voices[0]!r} "
                            f"(voices: {', '.join(voices)})")
            flat["voice"] = voices[0]
        else:
            flat["voice"] = voice
    speed = body.number("speed", float)
    if speed is not None:
        if "speed" in honoured:
            flat["speed"] = speed
        elif speed != 1.0:
            warnings.append(f"speed ignored: {info.name} speaks at one rate")
    return flat, warnings


async def chunk_jobs(service: JobService, owner: str, flat: dict[str, Any], texts: list[str], key: str | None,
                     request: Request | None) -> AsyncGenerator[tuple[Job, bytes], None]:
    """One finished job per text, in order, with its first artifact's bytes: jobs are queued
    ``AHEAD`` beyond the one awaited; whatever is still queued is cancelled when the caller stops
    (the client went away, a job failed or timed out)."""
    pending: deque[Job] = deque()
    timeout = service.settings.openai_timeout_s
    i = 0
    try:
        while i < len(texts) or pending:
            while i < len(texts) and len(pending) <= AHEAD:
                pending.append(await submit(service, {**flat, "prompt": texts[i]}, owner,
                                            key=f"{key}:{i}" if key else None, endpoint="audio.speech",
                                            extra={"part": [i, len(texts)]}))
                i += 1
            job = succeeded(await wait(service, pending.popleft(), owner, request, timeout))
            data = await to_thread.run_sync(artifact_bytes, service, job)
            yield job, data
    finally:
        with anyio.CancelScope(shield=True):
            for job in pending:
                await cancel(service, job.id, owner)


def artifact_bytes(service: JobService, job: Job) -> bytes:
    return b"".join(service.file(job, job.artifacts[0].name).chunks())


@router.post("/v1/audio/speech", response_model=None, responses={
    200: {"content": {m: {} for m in audio.MEDIA_TYPES.values()}, "description": "the audio"}})
async def speech(request: Request, service: Service, owner: Caller, key: IdempotencyKey) -> Response:
    """Text to speech (OpenAI's ``audio.speech.create``)."""
    values, _ = await form_or_json(request)
    body = Body.read(values, HONOURED, IGNORED, EXTRAS)
    text = body.text("input", required=True) or ""
    fmt = body.text("response_format") or "mp3"
    if fmt not in audio.MEDIA_TYPES:
        raise invalid("response_format", f"response_format={fmt!r} is not written here; fix: use "
                                         f"{', '.join(audio.MEDIA_TYPES)}", "unsupported_value")
    stream = body.text("stream_format")
    if stream not in (None, "audio", "sse"):
        raise invalid("stream_format", f"stream_format={stream!r} is invalid; fix: use audio or sse")
    if stream is not None and fmt not in audio.STREAMABLE:
        raise invalid("response_format", f"{fmt} cannot be streamed as it is made; fix: use "
                                         f"{', '.join(audio.STREAMABLE)}, or drop stream_format", "unsupported_value")
    info = resolve_model(service, body.model(service), "speech")
    flat, notes = speech_request(body, info, fmt)
    body.warnings += notes
    limit = service.settings.limits.prompt_max_chars
    if not text.strip():
        raise invalid("input", "input is empty; fix: give the text to speak")
    parts = sentences(text, limit)
    if stream is None:
        return await whole(request, service, owner, flat, grouped(parts, limit), key, fmt, body.warnings)
    chunks = chunk_jobs(service, owner, flat, parts, key, None)  # the stream notices a client going away
    first = await anext(chunks)  # an error before any audio is still answered with its status
    return StreamingResponse(streamed(chunks, first, fmt, stream), media_type=(
        "text/event-stream" if stream == "sse" else audio.MEDIA_TYPES[fmt]),
        headers={**headers(body.warnings, [first[0]]), "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def whole(request: Request, service: JobService, owner: str, flat: dict[str, Any], texts: list[str],
                key: str | None, fmt: str, warnings: list[str]) -> Response:
    """One answer with the whole audio: the job's own file when one job made it in that format."""
    got = [item async for item in chunk_jobs(service, owner, flat, texts, key, request)]
    jobs = [job for job, _ in got]
    if len(got) == 1 and flat["output_format"] == fmt:
        data = got[0][1]
    else:
        decoded = [audio.decode(data) for _, data in got]
        rate = decoded[0][1]
        data = audio.encode(np.concatenate([s for s, _ in decoded]), rate, fmt)
    return Response(data, media_type=audio.MEDIA_TYPES[fmt], headers=headers(warnings, jobs))


async def streamed(chunks: AsyncGenerator[tuple[Job, bytes], None], first: tuple[Job, bytes], fmt: str,
                   stream: str) -> AsyncIterator[bytes]:
    """The response body of a streamed call: raw audio pieces, or SSE events carrying them."""
    n = 0
    try:
        item: tuple[Job, bytes] | None = first
        while item is not None:
            samples, rate = audio.decode(item[1])
            piece = audio.stream_piece(samples, rate, fmt, first=n == 0)
            n += 1
            if stream == "sse":
                event = {"type": "speech.audio.delta", "audio": base64.b64encode(piece).decode()}
                yield f"data: {json.dumps(event)}\n\n".encode()
            else:
                yield piece
            item = await anext(chunks, None)
        if stream == "sse":
            done = {"type": "speech.audio.done", "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}}
            yield f"data: {json.dumps(done)}\n\n".encode()
    except OpenAIError as exc:  # a later sentence failed: the status is sent already
        if stream == "sse":
            error = {"type": "error", "error": {"message": exc.message, "type": exc.type, "code": exc.code}}
            yield f"data: {json.dumps(error)}\n\n".encode()
    finally:  # also when the client went away (the stream is cancelled): the queued sentences are cancelled
        with anyio.CancelScope(shield=True):
            await chunks.aclose()
