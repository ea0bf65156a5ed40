"""``POST /audio/speech``: text to speech, answered with the audio bytes.

One call is one speech job for the whole input. Without ``stream_format`` the call waits for it
and answers one file. With ``stream_format: "audio"`` the answer is chunked: the speech job makes
its text sentence by sentence and records each sentence's audio as soon as it is made
(``genaccel.service.speech``), and each one is sent while the next is still being synthesised;
``stream_format: "sse"`` sends the same chunks as ``speech.audio.delta`` events (base64) and ends
with ``speech.audio.done``. Every built-in speech model streams this way; a plugin's adapter that
does not record sentences streams its whole file as one chunk when the job ends. A client that
leaves the stream cancels the job.

Honoured: ``model``, ``input``, ``voice`` (a voice of the model; OpenAI's built-in names such as
``alloy`` fall back to the model's default voice, with a warning), ``speed`` (within the model's
own bounds, else refused: 0.5-2 for the speech models), ``response_format`` (``wav``, ``flac``,
``mp3`` at the model's own sample rate; ``pcm``: 16-bit mono resampled to OpenAI's 24 kHz, with a
warning; ``opus`` and ``aac`` are refused), and ``stream_format``. Extras: ``seed``, ``steps``,
``profile``, ``priority``, ``cache``. Ignored: ``instructions``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import anyio
from anyio import to_thread
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from genaccel.api.deps import Caller, Service
from genaccel.api.openai import audio
from genaccel.api.openai.common import (
    JOB_HEADER,
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
from genaccel.api.openai.errors import NO_RETRY, OpenAIError, OpenAIRoute, invalid
from genaccel.errors import InvalidRequest
from genaccel.service import JobService
from genaccel.service.speech import AudioChunk, new_chunks, whole_chunk
from genaccel.spec import Job
from pipelines.modality import adapter_for
from pipelines.registry import ModelInfo

router = APIRouter(route_class=OpenAIRoute, tags=["openai"])

HONOURED = ("model", "input", "voice", "speed", "response_format", "stream_format")
IGNORED = {"instructions": "the voice is chosen by voice; no style instructions"}
EXTRAS = {"seed": "seed", "steps": "steps", "profile": "profile", "priority": "priority", "cache": "cache"}
OPENAI_VOICES = frozenset({"alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer",
                           "verse", "marin", "cedar"})


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


async def job_chunks(service: JobService, job: Job, owner: str) -> AsyncGenerator[AudioChunk, None]:
    """``job``'s sentences, in order, as its worker records them (its whole file at the end when it
    recorded none). The job is cancelled when the caller stops early (the client went away), and
    when no new audio came for ``GENACCEL_OPENAI_TIMEOUT_S``."""
    timeout = service.settings.openai_timeout_s
    seen, deadline, delay = 0, time.monotonic() + timeout, 0.005
    try:
        while True:
            found = await to_thread.run_sync(new_chunks, job, seen)
            for chunk in found:
                yield chunk
            if found:
                seen, deadline, delay = seen + len(found), time.monotonic() + timeout, 0.005
            if job.done:
                break
            if time.monotonic() >= deadline:
                raise OpenAIError(504, f"job {job.id} made no audio for {timeout:g} s and was cancelled; fix: ask "
                                       "for less (fewer steps, shorter text); the operator sets the limit with "
                                       "GENACCEL_OPENAI_TIMEOUT_S", "server_error", code="timeout",
                                  headers={**NO_RETRY, JOB_HEADER: job.id})
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.1)
            job = await to_thread.run_sync(service.store.get, job.id)
        job = succeeded(job)
        if seen == 0:
            yield await to_thread.run_sync(whole_chunk, service, job)
    finally:
        if not job.done:
            with anyio.CancelScope(shield=True):
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
    if not text.strip():
        raise invalid("input", "input is empty; fix: give the text to speak")
    rate = info.defaults.sample_rate
    if fmt == "pcm" and rate and rate != audio.PCM_RATE:
        body.warnings.append(f"pcm resampled from {info.name}'s {rate} Hz to {audio.PCM_RATE} Hz (OpenAI's pcm "
                             "layout); wav, flac and mp3 keep the model's own rate")
    try:
        job = await submit(service, {**flat, "prompt": text}, owner, key=key, endpoint="audio.speech")
    except InvalidRequest as exc:  # the text is OpenAI's input (characters the model cannot read, its length)
        if exc.field != "prompt":
            raise
        raise OpenAIError(400, exc.message.replace("prompt=", "input=", 1), param="input", code=exc.code) from None
    if stream is None:
        return await whole(request, service, owner, job, flat["output_format"], fmt, body.warnings)
    chunks = job_chunks(service, job, owner)  # the stream notices a client going away
    first = await anext(chunks)  # an error before any audio is still answered with its status
    return StreamingResponse(streamed(chunks, first, fmt, stream), media_type=(
        "text/event-stream" if stream == "sse" else audio.MEDIA_TYPES[fmt]),
        headers={**headers(body.warnings, [job]), "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def whole(request: Request, service: JobService, owner: str, job: Job, written: str, fmt: str,
                warnings: list[str]) -> Response:
    """One answer with the whole audio: the job's own file when it wrote that format, else re-encoded."""
    job = succeeded(await wait(service, job, owner, request, service.settings.openai_timeout_s))
    data = await to_thread.run_sync(artifact_bytes, service, job)
    if written != fmt:
        samples, rate = audio.decode(data)
        data = audio.encode(samples, rate, fmt)
    return Response(data, media_type=audio.MEDIA_TYPES[fmt], headers=headers(warnings, [job]))


async def streamed(chunks: AsyncGenerator[AudioChunk, None], first: AudioChunk, fmt: str,
                   stream: str) -> AsyncIterator[bytes]:
    """The response body of a streamed call: raw audio pieces, or SSE events carrying them. Each
    piece's edges are faded (``fade_edges``), so pieces simply concatenated do not click."""
    n = 0
    try:
        item: AudioChunk | None = first
        while item is not None:
            piece = audio.stream_piece(item.samples, item.sample_rate, fmt, first=n == 0)
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
    except OpenAIError as exc:  # the job failed after its first sentence: the status is sent already
        if stream == "sse":
            error = {"type": "error", "error": {"message": exc.message, "type": exc.type, "code": exc.code}}
            yield f"data: {json.dumps(error)}\n\n".encode()
    finally:  # also when the client went away (the stream is cancelled): the job is cancelled
        with anyio.CancelScope(shield=True):
            await chunks.aclose()
