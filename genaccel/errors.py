"""One exception hierarchy for everything a user or client can get wrong or run into.

Every message names the field (or thing), the value received, the limit, and the fix, so the
CLI can print it on one line and the API can return it as is.
"""

from __future__ import annotations

from typing import Any


class GenAccelError(Exception):
    """Base of all genaccel errors. ``code`` is stable and machine-readable."""

    code = "genaccel_error"
    http_status = 400
    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:40] + f"...' ({len(str(value))} chars)"


class InvalidRequest(GenAccelError):
    """A request field is missing, malformed or out of its limits."""

    code = "invalid_request"
    http_status = 422

    def __init__(self, field: str, value: Any, limit: str, fix: str) -> None:
        self.field, self.value, self.limit, self.fix = field, value, limit, fix
        super().__init__(f"{field}={_show(value)} is invalid: {limit}; fix: {fix}")

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "field": self.field, "limit": self.limit, "fix": self.fix}


class UnknownModel(InvalidRequest):
    code = "unknown_model"


class UnsupportedModality(InvalidRequest):
    code = "unsupported_modality"


class UnknownProfile(InvalidRequest):
    code = "unknown_profile"


class ModelNotAvailable(GenAccelError):
    """The model is known by name but its files are not on this machine."""

    code = "model_not_available"
    http_status = 424


class UnsafeModel(GenAccelError):
    """The model folder holds pickled weights or asks for remote code."""

    code = "unsafe_model"
    http_status = 422


class JobNotFound(GenAccelError):
    code = "job_not_found"
    http_status = 404
    exit_code = 1

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} does not exist; fix: list jobs with `genaccel jobs list`")


class JobStateConflict(GenAccelError):
    code = "job_state_conflict"
    http_status = 409
    exit_code = 1


class BadInputFile(GenAccelError):
    """A batch file, init image or artifact that cannot be read."""

    code = "bad_input_file"


class PipelineFailed(GenAccelError):
    """The pipeline raised while running a job (kept with its traceback in the store)."""

    code = "pipeline_failed"
    http_status = 500
    exit_code = 1


class JobCancelled(GenAccelError):
    """Raised inside a pipeline's step callback to stop a job whose cancel flag is set."""

    code = "cancelled"
    http_status = 409
    exit_code = 1


class JobInterrupted(GenAccelError):
    """Raised inside a pipeline's step callback when the worker shuts down: the job goes back
    to the queue instead of finishing."""

    code = "interrupted"
    http_status = 503
    exit_code = 1


class TechniqueFailed(GenAccelError):
    """A technique raised while being applied to a loaded pipeline; what it had installed, and
    the techniques applied before it, were taken off again."""

    code = "technique_failed"
    http_status = 500
    exit_code = 1

    def __init__(self, technique: str, problem: str, fix: str) -> None:
        self.technique, self.problem, self.fix = technique, problem, fix
        super().__init__(f"technique {technique} {problem}; fix: {fix}")


class TechniqueAlreadyApplied(TechniqueFailed):
    """The same technique applied a second time to one pipeline (or to a module it shares)."""

    code = "technique_already_applied"


class TechniqueConflict(TechniqueFailed):
    """A technique that cannot stack with one already applied to the pipeline."""

    code = "technique_conflict"


class TechniqueRemoveFailed(GenAccelError):
    """Taking a technique off raised part-way: the pipeline may still carry some of its patches
    and must not serve another job (drop it from the model cache: ``ModelCache.evict``)."""

    code = "technique_remove_failed"
    http_status = 500
    exit_code = 1

    def __init__(self, techniques: list[str], detail: str) -> None:
        self.techniques = techniques
        super().__init__(f"removing technique {', '.join(techniques)} failed ({detail}); the pipeline may still "
                         "carry part of it; fix: drop the pipeline from the model cache (the worker does) and "
                         "report this error")
