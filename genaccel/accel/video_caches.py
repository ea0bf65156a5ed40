"""Which DiT caches fit which video transformer, checked before a clip is queued.

Measured on diffusers 0.42.1 (``tests/test_video_caches.py`` runs each on the tiny models):

* FasterCache's guidance mode fails on Wan (the conditional and unconditional passes are separate
  transformer calls, so there is no batch half to approximate: IndexError) and on LTX (its tokens
  are packed to 3-D, the frequency split expects 4-D: RuntimeError). Its attention-only mode
  (``attention_only=true``) works on both.
* First-block cache and MagCache fail on Latte: its blocks alternate between spatial
  ``(B*F, N, C)`` and temporal ``(B*N, F, C)`` layouts, so the first block's residual has another
  shape than the last block's output it stands in for.
* TaylorSeer attaches to Wan's ``blocks.N`` and LTX's ``transformer_blocks.N`` through genaccel's
  own block identifiers (diffusers' defaults attach nothing there).
"""

from __future__ import annotations

from genaccel.accel.dit_cache import FasterCache, FirstBlockCache, MagCache
from genaccel.accel.rules import RequestContext, checks
from genaccel.errors import InvalidRequest

SEPARATE_GUIDANCE = {"WanPipeline": "Wan", "WanImageToVideoPipeline": "Wan", "LTXPipeline": "LTX",
                     "LTXImageToVideoPipeline": "LTX"}
WHY_GUIDANCE = {"Wan": "Wan runs the conditional and unconditional passes as separate transformer calls, so "
                       "there is no unconditional half of a batch to approximate",
                "LTX": "LTX packs its tokens to 3-D, where the unconditional approximation's frequency split "
                       "needs 4-D latents"}
ALTERNATING = ("LattePipeline",)



@checks(FasterCache)
def check_fastercache_video(config: FasterCache, context: RequestContext) -> None:
    family = SEPARATE_GUIDANCE.get(context.pipeline_class)
    if family is not None and not config.attention_only:
        raise InvalidRequest("techniques", "fastercache", f"its guidance mode fails on {family}: "
                             f"{WHY_GUIDANCE[family]}",
                             "pass fastercache with attention_only=true, or use pab")


@checks(FirstBlockCache, MagCache)
def check_alternating_blocks(config: FirstBlockCache | MagCache, context: RequestContext) -> None:
    if context.pipeline_class in ALTERNATING:
        raise InvalidRequest("techniques", config.name, "fails on Latte: its blocks alternate between spatial "
                             "(B*F, N, C) and temporal (B*N, F, C) layouts, so one block's residual cannot stand "
                             "in for the others'", "use pab, taylorseer or fastercache")
