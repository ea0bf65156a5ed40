"""Small multi-head CNN that reads the attributes of reference shape images.

Architecture: four 3x3 conv blocks (conv-BN-ReLU-maxpool; 16/32/64/64
channels) take 64x64 -> 4x4, then a linear layer to a ``feature_dim``
(default 128) feature vector (used for Fréchet distance) and one linear head
per attribute in :data:`genaccel.refdata.ATTRIBUTES`.  ~0.2 M parameters
(< 0.5 MB as fp16).  Saved as ``model.safetensors`` (fp16) + ``config.json``.

Saying "none": an attribute whose value list holds ``"none"`` (the shape head of the shipped
evaluator, trained on negatives from :mod:`genaccel.refdata.negatives`) reads "none" when that
class wins, and any attribute with a confidence threshold (``thresholds`` in ``config.json``)
reads "none" when its top softmax probability is below it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from genaccel.refdata.shapes import ATTRIBUTES, IMAGE_SIZE

ImageInput = (
    torch.Tensor | np.ndarray | Image.Image | Sequence[Image.Image | np.ndarray]
)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def to_tensor(images: ImageInput) -> torch.Tensor:
    """Convert PIL image(s), uint8/float arrays (H,W,3)/(N,H,W,3) or a float
    tensor (B,3,H,W) in [0,1] to a float32 tensor (B,3,H,W) in [0,1]."""
    if isinstance(images, torch.Tensor):
        x = images.float()
        return x.unsqueeze(0) if x.ndim == 3 else x
    if isinstance(images, Image.Image):
        images = [images]
    if isinstance(images, np.ndarray):
        arr = images
    else:
        arr = np.stack(
            [
                np.asarray(im.convert("RGB") if isinstance(im, Image.Image) else im)
                for im in images
            ]
        )
    if arr.ndim == 3:
        arr = arr[None]
    x = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2)
    return x.float() / 255.0 if arr.dtype == np.uint8 else x.float()


class Evaluator(nn.Module):
    """Attribute classifier: ``forward`` -> dict attr -> logits, ``features`` -> (B, D)."""

    def __init__(
        self,
        channels: Sequence[int] = (16, 32, 64, 64),
        feature_dim: int = 128,
        attributes: dict[str, Sequence[str]] | None = None,
        thresholds: dict[str, float] | None = None,
    ) -> None:
        super().__init__()
        self.thresholds = {k: float(v) for k, v in (thresholds or {}).items()}
        self.channels = tuple(int(c) for c in channels)
        self.feature_dim = int(feature_dim)
        self.attributes = {k: tuple(v) for k, v in (attributes or ATTRIBUTES).items()}
        layers: list[nn.Module] = []
        cin = 3
        for cout in self.channels:
            layers += [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            cin = cout
        self.conv = nn.Sequential(*layers)
        side = IMAGE_SIZE // 2 ** len(self.channels)
        self.fc = nn.Linear(cin * side * side, self.feature_dim)
        self.heads = nn.ModuleDict(
            {k: nn.Linear(self.feature_dim, len(v)) for k, v in self.attributes.items()}
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate (post-ReLU) features (B, feature_dim) for x (B,3,H,W) in [0,1]."""
        if x.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
            x = F.interpolate(
                x,
                size=(IMAGE_SIZE, IMAGE_SIZE),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
        h = self.conv((x - 0.5) * 2.0)
        return F.relu(self.fc(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(x)
        return {k: head(f) for k, head in self.heads.items()}

    @torch.no_grad()
    def predict(
        self, images: ImageInput, batch_size: int = 256
    ) -> list[dict[str, str]]:
        """Predicted attribute values, one dict per image (model put in eval mode)."""
        self.eval()
        x = to_tensor(images)
        out: list[dict[str, str]] = []
        for i in range(0, len(x), batch_size):
            logits = self(x[i : i + batch_size].to(self._device()))
            probs = {k: v.softmax(1).max(1) for k, v in logits.items()}
            idx = {k: p.indices.tolist() for k, p in probs.items()}
            conf = {k: p.values.tolist() for k, p in probs.items()}
            for j in range(len(next(iter(idx.values())))):
                out.append({
                    k: "none" if conf[k][j] < self.thresholds.get(k, 0.0) else self.attributes[k][idx[k][j]]
                    for k in self.attributes
                })
        return out

    @torch.no_grad()
    def extract_features(self, images: ImageInput, batch_size: int = 256) -> np.ndarray:
        """``features`` for any accepted image input, as float64 numpy (N, D)."""
        self.eval()
        x = to_tensor(images)
        chunks = [
            self.features(x[i : i + batch_size].to(self._device()))
            .double()
            .cpu()
            .numpy()
            for i in range(0, len(x), batch_size)
        ]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.feature_dim))

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def config(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments."""
        return {
            "channels": list(self.channels),
            "feature_dim": self.feature_dim,
            "attributes": {k: list(v) for k, v in self.attributes.items()},
            "thresholds": dict(self.thresholds),
            "image_size": IMAGE_SIZE,
        }

    def save(self, path_dir: str | Path) -> None:
        """Write fp16 ``model.safetensors`` and ``config.json`` into ``path_dir``."""
        d = Path(path_dir)
        d.mkdir(parents=True, exist_ok=True)
        state = {
            k: (v.half() if v.is_floating_point() else v).contiguous().cpu()
            for k, v in self.state_dict().items()
        }
        save_file(state, str(d / WEIGHTS_NAME))
        (d / CONFIG_NAME).write_text(json.dumps(self.config(), indent=2) + "\n")

    @classmethod
    def load(
        cls, path_dir: str | Path, device: str | torch.device = "cpu"
    ) -> Evaluator:
        """Load a saved evaluator (weights cast to fp32), in eval mode."""
        d = Path(path_dir)
        cfg = json.loads((d / CONFIG_NAME).read_text())
        model = cls(
            channels=cfg["channels"],
            feature_dim=cfg["feature_dim"],
            attributes=cfg["attributes"],
            thresholds=cfg.get("thresholds"),
        )
        state = load_file(str(d / WEIGHTS_NAME))
        model.load_state_dict(
            {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
        )
        return model.to(device).eval()
