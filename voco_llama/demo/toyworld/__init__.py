"""A synthetic visual world in the LLaVA-1.5 file formats, generated deterministically from a seed.

No pretrained weights or datasets can be downloaded here, so the project proves the method on a small
world it draws itself and trains a tiny LLaVA-style model on. This package only *generates* the world;
training and evaluation read the files through the same code paths as real LLaVA data.

The world
---------
An image (RGB, `image_size` square, 64 px by default) holds 1 to 4 objects on a 3x3 grid, at most one
object per cell, so objects never overlap and every spatial word has a single meaning:

- shape: circle, square, triangle, star, cross (circles are the most frequent, crosses the rarest:
  the skew gives POPE's "popular" split something to be about);
- colour: red, green, blue, yellow, purple, orange (saturated; drawn without anti-aliasing, so the
  pixel at an object's centre is exactly its colour);
- size: small or large;
- position: the grid cell, named "top left", "top center", "top right", "middle left", "center",
  "middle right", "bottom left", "bottom center", "bottom right". "On the left side" means the left
  column, "at the top" the top row; "A is to the left of B" means A's column is left of B's (rows
  likewise for above/below);
- background: white, gray, black, striped or checkered; all background pixels are gray levels, so
  they never equal an object colour.

No two objects in a scene share both colour and shape, so "the red circle" always names one object;
"the circle" / "the red object" are only used when the scene has exactly one circle / red object.
Every image is distinct (no two scenes have the same objects in the same cells on the same background),
and train and eval images are different images.

Questions are generated from templates (`TEMPLATES`): color, shape, size, count ("one".."four"),
exist (yes/no), where (a cell name), relation ("Which object is to the left of the X?" asked only
when exactly one object qualifies), background, and the yes/no verifications MME asks
(verify_color, verify_count, verify_position). Answers are balanced by construction: selection is
greedy on answer counts, so for each template every answer is about equally frequent overall and,
within a subject (e.g. "Is there a red circle?"), yes and no are equally frequent; the letter of the
right multiple-choice option is balanced the same way. An image-blind model is therefore at chance,
while a model that sees the image can answer everything.

Files written by `generate_world(out_dir)`
-----------------------------------------
    images/train_000000.png ...        training images
    images/eval_00000.png ...          evaluation images (shared by the benches, like COCO val)
    train.json                         LLaVA instruction JSON (llava_v1_5_mix665k schema), multi-turn;
                                       `image` is relative to images/; ~5% text-only records
    scenes.json                        ground truth: per image the background, objects and caption
    eval/<bench>/questions.jsonl       LLaVA question file: question_id, image, text, category
    eval/<bench>/answer_key.jsonl      question_id, answer, category, image (the file name, as in
                                       questions.jsonl), + answers (vqav2), + group (mmbench)
    world.json                         config, vocabulary, object frequencies, counts; written last,
                                       so its presence marks a complete world
    tokenizer/                         only after `build_world_tokenizer(out_dir)`

The benches (`BENCHES`), each imitating one of the paper's benchmarks:

- gqa: short answers (exact match), category = template.
- vqav2: short answers with 10 annotator answers written normalised, as VQAv2's are ("4", "top left"):
  mostly the canonical answer, with some genuine disagreement (an off-by-one count, a neighbouring
  colour, "upper left"), so soft accuracy is meaningful; category = VQAv2 answer type ("yes/no",
  "number", "other").
- pope: "Is there a {object} in the image?" where an object is a colour+shape ("red circle"). As in
  POPE, the same images and the same positives (up to 3 present objects per image) are used for each
  category, with as many negatives: random = absent objects drawn uniformly; popular = the absent
  objects most frequent in the training scenes; adversarial = absent objects that share a colour or
  a shape with the most present objects (a "blue circle" next to a red circle and a blue square),
  ties broken by how often they co-occur with the present objects in training scenes. Sharing an
  attribute is this world's version of POPE's co-occurrence: in a world where objects are placed
  independently co-occurrence alone carries no signal, while a near-miss object tests whether the
  model binds colour to shape, which is exactly what a compressed image representation may lose.
- mme: per image and subtask (existence, count, position, color) exactly two yes/no questions, one
  true and one false: MME's "...? Please answer yes or no." followed by the short-answer instruction
  (LLaVA evaluates MME as a short-answer bench). acc+ needs both questions of an image right.
- mmbench: 4-option multiple choice; every question appears in 4 copies whose options are rotated
  circularly (the answer letter follows the rotation); the copies share `group`.
- seed: 4-option multiple choice, category = SEED-Bench-style question type.

API: `generate_world(out_dir, seed, ...) -> World` writes everything; `ensure_world` reuses a world
generated with the same arguments; `load_world` opens one; `world_texts` and `build_world_tokenizer`
give the tokenizer. `candidates(scene)` lists every question the templates can ask about a scene.

Instruction strings are LLaVA's: short answers end with `SHORT_ANSWER`, multiple choice with
`MULTIPLE_CHOICE`; the eval `text` already contains them, and the model's prompt is `<image>\\n{text}`.

Modules: `scenes` (vocabulary, sampling, drawing, captions, dense patch labels), `questions` (templates,
instruction strings, balanced selection), `records` (training records), `benches` (the six eval
benches), `world` (files on disk, generation), `texts` (tokenizer texts and the world tokenizer).
"""

from .benches import BENCHES, DEFAULT_EVAL_QUESTIONS, GQA_TEMPLATES, MME_SUBTASKS, POPE_CATEGORIES
from .questions import CAPTION_PROMPTS, LETTERS, MULTIPLE_CHOICE, SHORT_ANSWER, TEMPLATES, YES_NO, candidates
from .records import conversations
from .scenes import (
    BACKGROUND_NAMES,
    COLOR_NAMES,
    COLORS,
    COLUMN_NAMES,
    NUMBER_WORDS,
    OBJECT_NAMES,
    PATCH_LABELS,
    POSITIONS,
    ROW_NAMES,
    SHAPES,
    SIZES,
    Obj,
    Scene,
    caption,
    patch_labels,
    png_bytes,
    render,
)
from .texts import build_world_tokenizer, training_text, world_texts
from .world import World, ensure_world, generate_world, load_world, train_fingerprint, world_config

__all__ = [
    "BACKGROUND_NAMES",
    "BENCHES",
    "CAPTION_PROMPTS",
    "COLORS",
    "COLOR_NAMES",
    "COLUMN_NAMES",
    "DEFAULT_EVAL_QUESTIONS",
    "GQA_TEMPLATES",
    "LETTERS",
    "MME_SUBTASKS",
    "MULTIPLE_CHOICE",
    "NUMBER_WORDS",
    "OBJECT_NAMES",
    "PATCH_LABELS",
    "POPE_CATEGORIES",
    "POSITIONS",
    "ROW_NAMES",
    "SHAPES",
    "SHORT_ANSWER",
    "SIZES",
    "TEMPLATES",
    "YES_NO",
    "Obj",
    "Scene",
    "World",
    "build_world_tokenizer",
    "candidates",
    "caption",
    "conversations",
    "ensure_world",
    "generate_world",
    "load_world",
    "patch_labels",
    "png_bytes",
    "render",
    "train_fingerprint",
    "training_text",
    "world_config",
    "world_texts",
]
