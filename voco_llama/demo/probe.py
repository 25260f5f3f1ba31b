"""What one frame's compressed form carries: linear probes on the moving world's frames.

The video questions need, per frame, which colours and shapes are present, how many objects there
are, and where the mover is. A linear probe fitted on 3/4 of the frames and scored on the rest says
whether a frame's features hold each of these, before any question is asked:

- "VoCo cache": the frame's VoCo K/V over every layer (what the LLM reads when it answers);
- "pooled vision": the frame's projected vision tokens averaged (about what avg-pool per frame keeps);
- "vision tokens": those N tokens side by side (all a full-token model is given; the ceiling).

Targets (ground truth from clips.json): colour presence and shape presence (one binary label per
colour / shape, accuracy over all labels), object count (classes, accuracy), and the mover's x and
y in direction clips (R^2 on held-out frames). Every probe is a ridge regression (on 0/1 targets for
the labels) with its strength chosen on held-out training rows. Each is printed beside the score of
predicting without the features (the training labels' majority; R^2 0), so "carries nothing" reads as
no gain over that floor.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..core.pipeline import VoCoPipeline
from ..core.video import sample_indices
from .toyworld import COLOR_NAMES, SHAPES

FRAMES_PER_CLIP = 4  # spread over each clip (its first and last included)


def _targets(clip: dict, frame: int) -> dict:
    present = [(o, o["track"][frame]) for o in clip["objects"] if o["track"][frame] is not None]
    moving = [
        o for o in clip["objects"] if o["track"][0] and o["track"][-1] and o["track"][0][:2] != o["track"][-1][:2]
    ]
    return {
        "colors": [COLOR_NAMES.index(state[2]) for _, state in present],
        "shapes": [SHAPES.index(o["shape"]) for o, _ in present],
        "count": len(present),
        "mover": moving[0]["track"][frame][:2] if clip["type"] == "direction" and moving else None,
    }


@torch.no_grad()
def frame_features(pipe: VoCoPipeline, frames: list[Path], batch: int = 64) -> dict[str, torch.Tensor]:
    """Per frame: its VoCo K/V over every layer, flattened; its projected vision tokens averaged; and
    those N tokens side by side (what the LLM reads with full tokens)."""
    from PIL import Image

    model, voco, pooled, tokens = pipe.model, [], [], []
    for i in range(0, len(frames), batch):
        images = []
        for path in frames[i : i + batch]:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        pixels = pipe.pixels(images)
        cache = model.compress(pixels)
        voco.append(torch.cat([t.flatten(1) for pair in zip(cache.keys, cache.values) for t in pair], 1))
        features = model.get_image_features(pixel_values=pixels)
        features = features.pooler_output if hasattr(features, "pooler_output") else features
        features = torch.stack(list(features)).reshape(len(images), -1, features[0].shape[-1])
        pooled.append(features.mean(1))
        tokens.append(features.flatten(1))
    return {
        "VoCo cache": torch.cat(voco).float(),
        "pooled vision": torch.cat(pooled).float(),
        "vision tokens": torch.cat(tokens).float(),
    }


def _standardize(x: torch.Tensor, train: int) -> torch.Tensor:
    mean, std = x[:train].mean(0), x[:train].std(0)
    std = torch.where(std > 1e-3 * std.mean(), std, torch.ones_like(std))  # constant on the training rows: leave
    return (x - mean) / std


def _ridge_predict(x: torch.Tensor, y: torch.Tensor, ridge: float, test: torch.Tensor) -> torch.Tensor:
    """Ridge regression fitted on (x, y), predicting `test`; the intercept (y's mean) is not shrunk, and
    the dual form is used when there are more dimensions than rows (the same solution, a smaller system)."""
    y_mean, x_mean = y.mean(0), x.mean(0)
    x, y, test = x - x_mean, y - y_mean, test - x_mean
    if x.shape[1] <= x.shape[0]:
        return y_mean + test @ torch.linalg.solve(x.T @ x + ridge * torch.eye(x.shape[1]), x.T @ y)
    return y_mean + test @ x.T @ torch.linalg.solve(x @ x.T + ridge * torch.eye(x.shape[0]), y)


RIDGES = tuple(10.0**e for e in range(-1, 6))


def _fit(x: torch.Tensor, y: torch.Tensor, train: int, quality) -> torch.Tensor:
    """Held-out predictions of a ridge fit whose strength is the best `quality` on the last fifth of the
    training rows (so a few thousand rows in thousands of dimensions do not just overfit)."""
    x = _standardize(x, train)
    fit = train * 4 // 5
    best = max(RIDGES, key=lambda r: quality(y[fit:train], _ridge_predict(x[:fit], y[:fit], r, x[fit:train])))
    return _ridge_predict(x[:train], y[:train], best, x[train:])


def _labels_right(y: torch.Tensor, predicted: torch.Tensor, multilabel: bool) -> float:
    if multilabel:
        return float(((predicted > 0.5).float() == y).float().mean())
    return float((predicted.argmax(1) == y.argmax(1)).float().mean())


def probe_accuracy(x: torch.Tensor, y: torch.Tensor, multilabel: bool, train: int) -> tuple[float, float]:
    """Held-out accuracy (%) of a linear probe (ridge on the 0/1 targets: per label > 0.5, or the argmax
    class), and of predicting the training labels' majority. `y`: [n, classes] one-hot
    (multilabel=False) or 0/1 per label (multilabel=True)."""
    predicted = _fit(x, y, train, lambda truth, guess: _labels_right(truth, guess, multilabel))
    majority = y[:train].mean(0, keepdim=True).expand_as(y[train:])
    if not multilabel:
        majority = torch.nn.functional.one_hot(y[:train].sum(0).argmax(), y.shape[1]).float().expand_as(y[train:])
    return 100 * _labels_right(y[train:], predicted, multilabel), 100 * _labels_right(y[train:], majority, multilabel)


def _r2(y: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
    return 1 - ((y - predicted) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)


def probe_r2(x: torch.Tensor, y: torch.Tensor, train: int) -> list[float]:
    """Held-out R^2 per output column of a ridge regression."""
    return _r2(y[train:], _fit(x, y, train, lambda truth, guess: float(_r2(truth, guess).mean()))).tolist()


def run_probe(model_dir: Path, world_root: Path, max_clips: int = 500) -> dict:
    """Probe the frames of the world's first `max_clips` training clips (FRAMES_PER_CLIP frames of each)."""
    clips = json.loads((world_root / "clips.json").read_text())["clips"]
    clips = [c for c in clips if c["split"] == "train"][:max_clips]
    rows = [(c, f) for c in clips for f in sample_indices(len(c["objects"][0]["track"]), FRAMES_PER_CLIP)]
    pipe = VoCoPipeline.from_pretrained(model_dir)
    features = frame_features(pipe, [world_root / "videos" / c["id"] / f"{f:03d}.png" for c, f in rows])
    targets = [_targets(c, f) for c, f in rows]
    n, train = len(rows), len(rows) * 3 // 4
    colors, shapes = torch.zeros(n, len(COLOR_NAMES)), torch.zeros(n, len(SHAPES))
    counts = torch.zeros(n, max(t["count"] for t in targets) + 1)
    for i, t in enumerate(targets):
        colors[i, t["colors"]], shapes[i, t["shapes"]], counts[i, t["count"]] = 1, 1, 1
    movers = [i for i, t in enumerate(targets) if t["mover"] is not None]
    mover_xy = torch.tensor([targets[i]["mover"] for i in movers], dtype=torch.float)
    result = {"frames": n, "held_out": n - train, "features": {}}
    for name, x in features.items():
        result["features"][name] = {
            "dims": x.shape[1],
            "colour presence": probe_accuracy(x, colors, True, train),
            "shape presence": probe_accuracy(x, shapes, True, train),
            "object count": probe_accuracy(x, counts, False, train),
            "mover x, y (R^2)": probe_r2(x[movers], mover_xy, len(movers) * 3 // 4) if len(movers) >= 40 else None,
        }
    return result


# ----------------------------------------------------------------------------------------------
# The vision tower: what its tokens say about the object under them
# ----------------------------------------------------------------------------------------------

TOWER_TARGETS = ("shape", "colour", "size", "cell")
TOWER_GOAL = 90.0  # % held-out probe accuracy per target (issue 24)


@torch.no_grad()
def tower_features(model, pixels: torch.Tensor, batch: int = 128) -> torch.Tensor:
    """[images, patches, dims]: the tower's tokens as the projector reads them (the config's
    `vision_feature_layer`, without CLIP's class token)."""
    tower, layer = model.model.vision_tower, model.config.vision_feature_layer
    vision = model.config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2
    out = []
    for i in range(0, len(pixels), batch):
        hidden = tower(pixels[i : i + batch].to(model.dtype), output_hidden_states=True).hidden_states[layer]
        out.append(hidden[:, -patches:].float())
    return torch.cat(out)


def _object_rows(scenes: list[dict], features: torch.Tensor, image_size: int, patch_size: int):
    """Per object: the token of the patch under its centre, and its shape, colour, size and cell."""
    from .toyworld import SIZES

    grid = image_size // patch_size
    x, y = [], {t: [] for t in TOWER_TARGETS}
    for scene, tokens in zip(scenes, features):
        for o in scene["objects"]:
            cx, cy = o["center"]
            x.append(tokens[(cy // patch_size) * grid + cx // patch_size])
            y["shape"].append(SHAPES.index(o["shape"]))
            y["colour"].append(COLOR_NAMES.index(o["color"]))
            y["size"].append(SIZES.index(o["size"]))
            y["cell"].append(o["cell"])
    return torch.stack(x), {t: torch.tensor(v) for t, v in y.items()}


def run_tower_probe(model, image_processor, world, max_train_images: int = 2000) -> dict:
    """Held-out linear probes of the frozen tower: fitted on the objects of the first
    `max_train_images` training images, scored on every eval image's objects. Returns per target
    (shape, colour, size, cell) the probe's accuracy (%) and the training labels' majority (%)."""
    from ..core.processing import load_image, process_images

    scenes = list(world.scenes().values())
    train = [s for s in scenes if s["split"] == "train"][:max_train_images]
    held_out = [s for s in scenes if s["split"] == "eval"]
    vision = model.config.vision_config
    rows = []
    for part in (train, held_out):
        pixels = process_images([load_image(world.images_dir / s["image"]) for s in part], image_processor)
        rows.append(_object_rows(part, tower_features(model, pixels), vision.image_size, vision.patch_size))
    x = torch.cat([rows[0][0], rows[1][0]])
    n_train = len(rows[0][0])
    result = {
        "targets": list(TOWER_TARGETS),
        "train_objects": n_train,
        "held_out_objects": len(rows[1][0]),
        "layer": model.config.vision_feature_layer,
    }
    for target in TOWER_TARGETS:
        labels = torch.cat([rows[0][1][target], rows[1][1][target]])
        y = torch.nn.functional.one_hot(labels).float()
        probe, majority = probe_accuracy(x, y, False, n_train)
        result[target] = {"accuracy": probe, "majority": majority}
    return result


def probe_line(probe: dict) -> str:
    """'shape 93.2%, colour 99.8%, ...': a tower probe's accuracies in one line."""
    return ", ".join(f"{t} {probe[t]['accuracy']:.1f}%" for t in probe["targets"])
