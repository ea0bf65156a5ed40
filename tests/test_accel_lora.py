"""LoRA adapters: built here with peft (nothing downloaded), loaded by name, hot-swapped between
jobs without reloading the base model, fused or not, removed exactly, refused when wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genaccel.accel import apply_techniques, parse_technique
from genaccel.accel.lora import LoRAConfig
from genaccel.errors import InvalidRequest
from genaccel.settings import Settings
from genaccel.spec import JobRequest, TechniqueSpec
from pipelines.engine import LocalEngine
from pipelines.prepare import prepare_request
from pipelines.registry import ModelRegistry


def make_lora(folder: Path, name: str, seed: int) -> Path:
    """A random rank-4 LoRA on tiny-sd's attention projections, saved like published ones."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from pipelines.tiny import build_tiny_sd

    pipe = build_tiny_sd()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                         target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    StableDiffusionPipeline.save_lora_weights(folder / name, unet_lora_layers=get_peft_model_state_dict(pipe.unet),
                                              safe_serialization=True)
    return folder / name


@pytest.fixture
def loras(isolated_home: Path) -> Path:
    folder = isolated_home / "loras"
    make_lora(folder, "style-a", 1)
    make_lora(folder, "style-b", 2)
    return folder


def run(pipe) -> np.ndarray:  # type: ignore[no-untyped-def]
    return pipe("a cat", num_inference_steps=3, height=64, width=64, output_type="np",
                generator=torch.Generator().manual_seed(4)).images


def test_three_runs_hot_swap_and_fuse(loras: Path) -> None:
    from pipelines.tiny import build_tiny_sd

    tiny_sd = build_tiny_sd()  # its own: adapters stay loaded (disabled) in a pipeline once used
    tiny_sd.set_progress_bar_config(disable=True)
    base = run(tiny_sd)
    outputs = {}
    for adapter in ["style-a", "style-b", "style-a"]:  # the second style-a reuses the loaded adapter
        t = apply_techniques(tiny_sd, [LoRAConfig(adapter)])
        outputs.setdefault(adapter, []).append(run(tiny_sd))
        t.remove()
        np.testing.assert_allclose(run(tiny_sd), base, atol=1e-4)
    a1, a2 = outputs["style-a"]
    np.testing.assert_allclose(a1, a2, atol=1e-6)
    assert np.abs(a1 - base).max() > 1e-3 and np.abs(outputs["style-b"][0] - a1).max() > 1e-3
    fused = apply_techniques(tiny_sd, [LoRAConfig("style-a", fuse=True)])
    np.testing.assert_allclose(run(tiny_sd), a1, atol=1e-4)
    fused.remove()
    np.testing.assert_allclose(run(tiny_sd), base, atol=1e-4)
    half = apply_techniques(tiny_sd, [LoRAConfig("style-a", scale=0.5)])
    assert 0 < np.abs(run(tiny_sd) - base).mean() < np.abs(a1 - base).mean()
    half.remove()


def test_jobs_swap_adapters_on_one_loaded_pipeline(loras: Path, settings: Settings, tmp_path: Path) -> None:
    def body(*adapters: str) -> JobRequest:
        return JobRequest.from_flat({"prompt": "a cat", "steps": 2, "seed": 1, "techniques": [
            {"name": "lora", "options": {"adapter": a}} for a in adapters]})

    with LocalEngine(settings) as engine:
        ids = [engine.submit(body(*a), output_dir=tmp_path / str(i)).id
               for i, a in enumerate([(), ("style-a",), ("style-b",), ("style-a", "style-b"), ()])]
        jobs = engine.wait(ids)
        loads = engine.runner.cache.loads
    assert [j.state for j in jobs] == ["succeeded"] * 5
    assert loads == 1  # one base model load for every adapter combination
    pixels = [np.asarray(Image.open(j.artifacts[0].path)) for j in jobs]
    np.testing.assert_array_equal(pixels[0], pixels[4])  # the base is back after the LoRA jobs
    assert len({p.tobytes() for p in pixels[:4]}) == 4
    assert [t["adapter"] for t in jobs[3].metadata["techniques"]] == ["style-a", "style-b"]


def test_lora_refusals(loras: Path, settings: Settings) -> None:
    registry = ModelRegistry(settings)
    with pytest.raises(InvalidRequest, match="no such LoRA"):
        prepare_request(JobRequest(prompt="a cat", techniques=(
            TechniqueSpec(name="lora", options={"adapter": "missing"}),)), registry, settings)
    with pytest.raises(InvalidRequest, match="must be a name"):
        parse_technique(TechniqueSpec(name="lora", options={"adapter": "../../etc/passwd"}))
    with pytest.raises(InvalidRequest, match=r"made for sd-unet, sdxl-unet, video-unet, not the image-dit "
                       "denoiser family"):
        prepare_request(JobRequest(prompt="a cat", model="tiny-dit", techniques=(
            TechniqueSpec(name="lora", options={"adapter": "style-a"}),)), registry, settings)


def make_wan_lora(folder: Path, seed: int) -> dict[str, torch.Tensor]:
    """A random rank-4 LoRA on tiny-wan's attention, saved in diffusers' layout and in the original
    Wan layout CausVid/LightX2V-style LoRAs are published in (``diffusion_model.blocks.N.self_attn.q``)."""
    from diffusers import WanPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    from pipelines.tiny_video import build_tiny_wan

    pipe = build_tiny_wan()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        pipe.transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    state = get_peft_model_state_dict(pipe.transformer)
    WanPipeline.save_lora_weights(folder / "wan-diffusers", transformer_lora_layers=state, safe_serialization=True)
    names = {"attn1.to_q": "self_attn.q", "attn1.to_k": "self_attn.k", "attn1.to_v": "self_attn.v",
             "attn1.to_out.0": "self_attn.o", "attn2.to_q": "cross_attn.q", "attn2.to_k": "cross_attn.k",
             "attn2.to_v": "cross_attn.v", "attn2.to_out.0": "cross_attn.o"}

    def original(key: str) -> str:
        for new, old in names.items():
            key = key.replace(new, old)
        return "diffusion_model." + key

    save_file({original(k): v.contiguous() for k, v in state.items()}, str(folder / "wan-causvid.safetensors"))
    return state


def run_wan(pipe) -> np.ndarray:  # type: ignore[no-untyped-def]
    return pipe("a cat", num_inference_steps=3, height=64, width=64, num_frames=9, output_type="np",
                generator=torch.Generator().manual_seed(4)).frames


def test_wan_loras_in_both_layouts_three_runs(isolated_home: Path) -> None:
    from pipelines.tiny_video import build_tiny_wan

    make_wan_lora(isolated_home / "loras", seed=1)
    pipe = build_tiny_wan()
    pipe.set_progress_bar_config(disable=True)
    base = run_wan(pipe)
    outputs = []
    for adapter in ["wan-diffusers", "wan-causvid"]:
        t = apply_techniques(pipe, [LoRAConfig(adapter)])
        outputs.append(run_wan(pipe))
        t.remove()
        np.testing.assert_allclose(run_wan(pipe), base, atol=1e-5)
    assert np.abs(outputs[0] - base).max() > 1e-3
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-6)  # the published layout loads as the same LoRA


def test_wan_lora_job_with_its_few_step_flow_sampler(isolated_home: Path, settings: Settings, tmp_path: Path) -> None:
    make_wan_lora(isolated_home / "loras", seed=1)
    request = JobRequest.from_flat({"modality": "video", "prompt": "a cat", "model": "tiny-wan", "steps": 4,
                                    "guidance_scale": 1.0, "seed": 3, "techniques": [
                                        {"name": "lora", "options": {"adapter": "wan-causvid"}},
                                        {"name": "solver", "options": {"kind": "euler", "spacing": "trailing",
                                                                       "shift": 5.0}}]})
    with LocalEngine(settings) as engine:
        job = engine.wait([engine.submit(request, output_dir=tmp_path).id])[0]
    assert job.state == "succeeded", job.error
    assert job.metadata["scheduler"] == "FlowMatchEulerDiscreteScheduler"
    assert [t["name"] for t in job.metadata["techniques"]] == ["lora", "solver"]


def test_wan_solver_reads_unipc_on_flow_sigmas_as_flow_matching() -> None:
    from diffusers import UniPCMultistepScheduler

    from genaccel.accel.solver import SolverConfig, flow_scheduler, is_flow

    wan = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    assert is_flow(wan) and not is_flow(UniPCMultistepScheduler())
    euler = flow_scheduler(wan, SolverConfig(kind="euler", spacing="trailing"))
    assert type(euler).__name__ == "FlowMatchEulerDiscreteScheduler" and euler.config.shift == 3.0


def test_video_lora_refusals(isolated_home: Path, settings: Settings) -> None:
    make_wan_lora(isolated_home / "loras", seed=1)
    registry = ModelRegistry(settings)
    lora = ({"name": "lora", "options": {"adapter": "wan-causvid"}},)
    with pytest.raises(InvalidRequest, match=r"made for video-dit, not the image-dit denoiser family"):
        prepare_request(JobRequest.from_flat({"prompt": "a cat", "model": "tiny-dit", "techniques": lora}),
                        registry, settings)
    with pytest.raises(InvalidRequest, match="LattePipeline cannot load LoRA adapters; fix: use a Stable Diffusion"):
        prepare_request(JobRequest.from_flat({"modality": "video", "prompt": "a cat", "model": "tiny-latte",
                                              "techniques": lora}), registry, settings)
