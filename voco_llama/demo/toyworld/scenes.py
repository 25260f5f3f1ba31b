"""The world's vocabulary and its scenes: sampling, drawing (`render`), captions, and the dense
per-patch labels a vision tower is pretrained on.
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

# ----------------------------------------------------------------------------------------------
# Vocabulary
# ----------------------------------------------------------------------------------------------

SHAPES = ("circle", "square", "triangle", "star", "cross")
SHAPE_PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars", "cross": "crosses"}
# Relative frequency of each shape in scenes (colours are uniform).
SHAPE_WEIGHTS = {"circle": 1.6, "square": 1.3, "triangle": 1.0, "star": 0.8, "cross": 0.6}
COLORS = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (40, 80, 230),
    "yellow": (245, 215, 30),
    "purple": (140, 50, 190),
    "orange": (250, 135, 20),
}
COLOR_NAMES = tuple(COLORS)
SIZES = ("small", "large")
POSITIONS = (
    "top left", "top center", "top right",
    "middle left", "center", "middle right",
    "bottom left", "bottom center", "bottom right",
)  # fmt: skip
# name -> (base colour, pattern colour); all gray levels.
BACKGROUNDS = {
    "white": ((255, 255, 255), None),
    "gray": ((128, 128, 128), None),
    "black": ((25, 25, 25), None),
    "striped": ((236, 236, 236), (196, 196, 196)),
    "checkered": ((228, 228, 228), (168, 168, 168)),
}
BACKGROUND_NAMES = tuple(BACKGROUNDS)
NUMBER_WORDS = ("one", "two", "three", "four")
MAX_OBJECTS = len(NUMBER_WORDS)
OBJECT_NAMES = tuple(f"{c} {s}" for c in COLOR_NAMES for s in SHAPES)  # POPE's object vocabulary
SIDES = ("left", "right", "top", "bottom")
OPPOSITE_SIDE = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}

# ----------------------------------------------------------------------------------------------
# Scenes: sampling, drawing, captions
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Obj:
    shape: str
    color: str
    size: str
    cell: int  # 0..8, row-major on the 3x3 grid
    x: int  # centre, pixels
    y: int
    r: int  # radius, pixels

    @property
    def row(self) -> int:
        return self.cell // 3

    @property
    def col(self) -> int:
        return self.cell % 3

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"

    @property
    def position(self) -> str:
        return POSITIONS[self.cell]

    @property
    def sides(self) -> tuple[str, ...]:
        """The image sides the object is on ("left" = left column, "top" = top row)."""
        on = {"left": self.col == 0, "right": self.col == 2, "top": self.row == 0, "bottom": self.row == 2}
        return tuple(side for side in SIDES if on[side])


@dataclass(frozen=True)
class Scene:
    id: str
    split: str
    background: str
    objects: tuple[Obj, ...]  # in reading order (by cell)

    @property
    def image(self) -> str:
        return f"{self.id}.png"

    def signature(self) -> tuple:
        return self.background, tuple((o.cell, o.shape, o.color, o.size) for o in self.objects)

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "image": self.image,
            "split": self.split,
            "background": self.background,
            "objects": [
                {
                    "shape": o.shape,
                    "color": o.color,
                    "size": o.size,
                    "position": o.position,
                    "cell": o.cell,
                    "row": o.row,
                    "col": o.col,
                    "center": [o.x, o.y],
                    "radius": o.r,
                }
                for o in self.objects
            ],
            "caption": caption(self),
        }


def _sample_scene(rng: random.Random, scene_id: str, split: str, image_size: int) -> Scene:
    n = rng.randint(1, MAX_OBJECTS)
    cells = sorted(rng.sample(range(9), n))
    # Distinct (colour, shape) pairs; shapes follow SHAPE_WEIGHTS, colours are uniform.
    pool = list(OBJECT_NAMES)
    weights = [SHAPE_WEIGHTS[name.split()[1]] for name in pool]
    names = []
    for _ in range(n):
        i = rng.choices(range(len(pool)), weights=weights)[0]
        names.append(pool.pop(i))
        weights.pop(i)
    cell_px = image_size / 3
    objects = []
    for cell, name in zip(cells, names):
        color, shape = name.split()
        size = rng.choice(SIZES)
        r = max(2, int(cell_px * (0.40 if size == "large" else 0.25)))
        slack = max(0, int(cell_px / 2 - r - 1))  # jitter that keeps the object inside its cell
        cx = (cell % 3 + 0.5) * cell_px
        cy = (cell // 3 + 0.5) * cell_px
        x = int(cx) + rng.randint(-slack, slack)
        y = int(cy) + rng.randint(-slack, slack)
        objects.append(Obj(shape=shape, color=color, size=size, cell=cell, x=x, y=y, r=r))
    return Scene(id=scene_id, split=split, background=rng.choice(BACKGROUND_NAMES), objects=tuple(objects))


def _sample_scenes(seed: int, split: str, count: int, image_size: int, seen: set) -> list[Scene]:
    """`count` scenes, each from its own seeded stream; a scene equal to an earlier one is redrawn."""
    digits = 6 if split == "train" else 5
    scenes = []
    for i in range(count):
        scene_id = f"{split}_{i:0{digits}d}"
        for attempt in range(1000):
            rng = random.Random(f"toyworld/{seed}/scene/{split}/{i}/{attempt}")
            scene = _sample_scene(rng, scene_id, split, image_size)
            if scene.signature() not in seen:
                break
        else:  # pragma: no cover - only for absurdly many images
            raise RuntimeError("could not draw a new distinct scene; the world is too small for this many images")
        seen.add(scene.signature())
        scenes.append(scene)
    return scenes


def render(scene: Scene, image_size: int) -> Image.Image:
    """Draw a scene (no anti-aliasing: every object pixel is exactly its colour)."""
    base, pattern = BACKGROUNDS[scene.background]
    img = Image.new("RGB", (image_size, image_size), base)
    draw = ImageDraw.Draw(img)
    if scene.background == "striped":
        step = max(2, image_size // 16)
        for y in range(step, image_size, 2 * step):
            draw.rectangle([0, y, image_size - 1, y + step - 1], fill=pattern)
    elif scene.background == "checkered":
        step = max(2, image_size // 8)
        for y in range(0, image_size, step):
            for x in range(0, image_size, step):
                if (x // step + y // step) % 2:
                    draw.rectangle([x, y, x + step - 1, y + step - 1], fill=pattern)
    for o in scene.objects:
        _draw_object(draw, o)
    return img


def _draw_object(draw: ImageDraw.ImageDraw, o: Obj, fill=None) -> None:
    """Draw `o` in its colour (or in `fill`: a mask's value)."""
    fill, x, y, r = fill if fill is not None else COLORS[o.color], o.x, o.y, o.r
    if o.shape == "circle":
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
    elif o.shape == "square":
        a = max(1, round(r * 0.85))
        draw.rectangle([x - a, y - a, x + a, y + a], fill=fill)
    elif o.shape == "triangle":
        w, h = round(r * 0.95), round(r * 0.8)
        draw.polygon([(x, y - r), (x + w, y + h), (x - w, y + h)], fill=fill)
    elif o.shape == "star":
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else r * 0.45
            angle = -math.pi / 2 + k * math.pi / 5
            points.append((round(x + radius * math.cos(angle)), round(y + radius * math.sin(angle))))
        draw.polygon(points, fill=fill)
    elif o.shape == "cross":
        w = max(1, round(r * 0.32))
        draw.rectangle([x - r, y - w, x + r, y + w], fill=fill)
        draw.rectangle([x - w, y - r, x + w, y + r], fill=fill)
    else:  # pragma: no cover
        raise ValueError(o.shape)


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _join_and(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def caption(scene: Scene) -> str:
    """E.g. "Two objects on a striped background: a large red circle in the top left and a small
    blue square in the center." (objects in reading order)."""
    n = len(scene.objects)
    things = [f"a {o.size} {o.color} {o.shape} in the {o.position}" for o in scene.objects]
    noun = "object" if n == 1 else "objects"
    return f"{NUMBER_WORDS[n - 1].capitalize()} {noun} on a {scene.background} background: {_join_and(things)}."


def article(phrase: str) -> str:
    return "an" if phrase[0] in "aeiou" else "a"


# ----------------------------------------------------------------------------------------------
# Dense labels, for pretraining a vision tower on the world (our stand-in for CLIP's pretraining)
# ----------------------------------------------------------------------------------------------

ROW_NAMES = ("top row", "middle row", "bottom row")
COLUMN_NAMES = ("left column", "center column", "right column")
PATCH_LABELS = (*SHAPES, *COLOR_NAMES, *SIZES, *ROW_NAMES, *COLUMN_NAMES)


def _object(o: dict) -> Obj:
    (x, y), r = o["center"], o["radius"]
    return Obj(shape=o["shape"], color=o["color"], size=o["size"], cell=o["cell"], x=x, y=y, r=r)


def patch_labels(scene: dict, image_size: int, patch_size: int) -> list[list[int]]:
    """Per patch (row-major over the image's patch grid), 0/1 for each of `PATCH_LABELS`: the shape,
    colour, size, grid row and grid column of every object with a drawn pixel on the patch. Row and
    column are targets so that the tower's tokens say where their object is: without them colour
    swamps the position embedding and a token's cell cannot be read off it (issue 24's probes)."""
    grid = image_size // patch_size
    labels = [[0] * len(PATCH_LABELS) for _ in range(grid * grid)]
    for o in map(_object, scene["objects"]):
        mask = Image.new("L", (image_size, image_size), 0)
        _draw_object(ImageDraw.Draw(mask), o, fill=255)
        on = [PATCH_LABELS.index(name) for name in (o.shape, o.color, o.size)]
        on += [PATCH_LABELS.index(ROW_NAMES[o.row]), PATCH_LABELS.index(COLUMN_NAMES[o.col])]
        box = mask.getbbox()
        for row in range(box[1] // patch_size, min(grid - 1, (box[3] - 1) // patch_size) + 1):
            for col in range(box[0] // patch_size, min(grid - 1, (box[2] - 1) // patch_size) + 1):
                cut = (col * patch_size, row * patch_size, (col + 1) * patch_size, (row + 1) * patch_size)
                if mask.crop(cut).getbbox() is not None:  # a drawn pixel of the object on this patch
                    for i in on:
                        labels[row * grid + col][i] = 1
    return labels
