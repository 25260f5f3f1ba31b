"""The synthetic world: determinism, LLaVA formats, correct and balanced answers, the tokenizer.

Answers are checked against an oracle written here from the stored scenes (scenes.json), not with
the generator's own question code, so a wrong template or an ambiguous reference fails the test.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from PIL import Image

from voco_llama.core.conversation import get_template
from voco_llama.demo import toyworld as tw

SA = "\nAnswer the question using a single word or phrase."
MC = "\nAnswer with the option's letter from the given choices directly."
YN = " Please answer yes or no."
NUMBERS = ["one", "two", "three", "four"]
SMALL = dict(num_train_images=400, num_eval_images=120, image_size=64)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tw.World:
    return tw.generate_world(tmp_path_factory.mktemp("w0") / "world", seed=0, progress=False, **SMALL)


@pytest.fixture(scope="module")
def scenes(world) -> dict[str, dict]:
    return {s["image"]: s for s in json.loads(world.scenes_json.read_text())["scenes"]}


@pytest.fixture(scope="module")
def records(world) -> list[dict]:
    return json.loads(world.train_json.read_text())


def read_bench(world, bench) -> list[tuple[dict, dict]]:
    qs = [json.loads(line) for line in world.questions(bench).read_text().splitlines()]
    keys = [json.loads(line) for line in world.answer_key(bench).read_text().splitlines()]
    assert [q["question_id"] for q in qs] == [k["question_id"] for k in keys]
    return list(zip(qs, keys))


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------- oracle


def resolve(ref: str, objs: list[dict]) -> dict:
    """The one object a referring expression names; fails if it names none or several."""
    m = re.fullmatch(r"the object in the (.+)", ref)
    if m:
        found = [o for o in objs if o["position"] == m.group(1)]
    elif m := re.fullmatch(r"the (\w+) object", ref):
        found = [o for o in objs if o["color"] == m.group(1)]
    elif m := re.fullmatch(r"the (\w+) (\w+)", ref):
        found = [o for o in objs if o["color"] == m.group(1) and o["shape"] == m.group(2)]
    elif m := re.fullmatch(r"the (\w+)", ref):
        found = [o for o in objs if o["shape"] == m.group(1)]
    else:
        raise AssertionError(f"unparsed reference {ref!r}")
    assert len(found) == 1, f"{ref!r} is ambiguous or names nothing: {objs}"
    return found[0]


def yn(b: bool) -> str:
    return "yes" if b else "no"


def oracle(question: str, scene: dict) -> str:
    """Answer a world question from the ground-truth scene."""
    q = question.replace(SA, "").replace(YN, "").replace("this image", "the image")
    objs = scene["objects"]
    if m := re.fullmatch(r"What color is (.+)\?", q):
        return resolve(m.group(1), objs)["color"]
    if m := re.fullmatch(r"What shape is (.+)\?", q):
        return resolve(m.group(1), objs)["shape"]
    if m := re.fullmatch(r"Is (.+) small or large\?", q):
        return resolve(m.group(1), objs)["size"]
    if m := re.fullmatch(r"Where is (.+)\?", q):
        return resolve(m.group(1), objs)["position"]
    if re.fullmatch(r"How many objects are (there )?in the image\?", q):
        return NUMBERS[len(objs) - 1]
    if q in ("What does the background look like?", "What kind of background does the image have?"):
        return scene["background"]
    if m := re.fullmatch(r"(?:Is there exactly|Are there exactly) (\w+) objects? in the image\?", q):
        return yn(NUMBERS.index(m.group(1)) + 1 == len(objs))
    if m := re.fullmatch(r"Is there an? (.+) in the image\?", q):
        words = m.group(1).split()
        if len(words) == 1:
            return yn(any(o["shape"] == words[0] for o in objs))
        if words[1] == "object":
            return yn(any(o["color"] == words[0] for o in objs))
        return yn(any((o["color"], o["shape"]) == tuple(words) for o in objs))
    if m := re.fullmatch(r"Which object is (to the left of|to the right of|above|below) (.+)\?", q):
        w = resolve(m.group(2), objs)
        test = {
            "to the left of": lambda o: o["col"] < w["col"],
            "to the right of": lambda o: o["col"] > w["col"],
            "above": lambda o: o["row"] < w["row"],
            "below": lambda o: o["row"] > w["row"],
        }[m.group(1)]
        found = [o for o in objs if o is not w and test(o)]
        assert len(found) == 1, f"relation question with {len(found)} answers: {question!r}"
        return f"{found[0]['color']} {found[0]['shape']}"
    if m := re.fullmatch(r"Is (.+) (?:on the (left|right) side|at the (top|bottom)) of the image\?", q):
        o = resolve(m.group(1), objs)
        side = m.group(2) or m.group(3)
        return yn({"left": o["col"] == 0, "right": o["col"] == 2, "top": o["row"] == 0, "bottom": o["row"] == 2}[side])
    if m := re.fullmatch(r"Is (.+) (\w+)\?", q):
        return yn(resolve(m.group(1), objs)["color"] == m.group(2))
    raise AssertionError(f"unparsed question {question!r}")


def parse_mc(text: str) -> tuple[str, list[str]]:
    assert text.endswith(MC)
    lines = text[: -len(MC)].split("\n")
    assert [line[:3] for line in lines[1:]] == ["A. ", "B. ", "C. ", "D. "], text
    return lines[0], [line[3:] for line in lines[1:]]


def answer_turn(question: str, scene: dict) -> str:
    if question.endswith(MC):
        stem, options = parse_mc(question)
        assert len(set(options)) == 4
        return "ABCD"[options.index(oracle(stem, scene))]
    return oracle(question, scene)


# ---------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path):
    tiny = dict(num_train_images=60, num_eval_images=40, eval_questions=24, progress=False)
    a = tree_bytes(tw.generate_world(tmp_path / "a", seed=7, **tiny).root)
    b = tree_bytes(tw.generate_world(tmp_path / "b", seed=7, **tiny).root)
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []
    assert sum(k.endswith(".png") for k in a) == 100
    assert sum(k.endswith(".jsonl") for k in a) == 2 * len(tw.BENCHES)

    c = tree_bytes(tw.generate_world(tmp_path / "c", seed=8, **tiny).root)
    assert c["train.json"] != a["train.json"]
    for bench in tw.BENCHES:
        assert c[f"eval/{bench}/questions.jsonl"] != a[f"eval/{bench}/questions.jsonl"]
    pngs = [k for k in a if k.endswith(".png")]
    assert sum(c[k] != a[k] for k in pngs) > 0.9 * len(pngs)


def test_no_temporary_files_and_regeneration_replaces_old_world(world, tmp_path):
    assert [p for p in world.root.rglob("*") if p.name.startswith(".")] == []
    big = tw.generate_world(tmp_path / "w", seed=3, num_train_images=30, num_eval_images=20, progress=False)
    small = tw.generate_world(big.root, seed=3, num_train_images=10, num_eval_images=10, progress=False)
    assert len(list(small.images_dir.glob("*.png"))) == 20  # stale images of the larger world removed
    assert tw.load_world(small.root).meta()["counts"]["train_images"] == 10
    mtime = small.meta_json.stat().st_mtime_ns
    again = tw.ensure_world(small.root, seed=3, num_train_images=10, num_eval_images=10)
    assert again.meta_json.stat().st_mtime_ns == mtime  # same config: not regenerated
    changed = tw.ensure_world(small.root, seed=4, num_train_images=10, num_eval_images=10)
    assert changed.meta()["config"]["seed"] == 4
    with pytest.raises(FileNotFoundError):
        tw.load_world(tmp_path / "nothing")


# ---------------------------------------------------------------------------- formats


def test_train_json_has_llava_schema(world, records, scenes):
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids))
    image_records = [r for r in records if "image" in r]
    text_records = [r for r in records if "image" not in r]
    assert len(image_records) == SMALL["num_train_images"]
    assert 0.02 <= len(text_records) / len(records) <= 0.10
    starts = ends = captions = multi_turn = 0
    for r in records:
        assert set(r) <= {"id", "image", "conversations"}
        conv = r["conversations"]
        assert len(conv) >= 2 and len(conv) % 2 == 0
        assert [t["from"] for t in conv] == ["human", "gpt"] * (len(conv) // 2)
        assert all(isinstance(t["value"], str) and t["value"].strip() for t in conv)
        assert all("<voco>" not in t["value"] for t in conv)
        tags = [t["value"].count("<image>") for t in conv]
        if "image" in r:
            assert r["image"] in scenes and scenes[r["image"]]["split"] == "train"
            assert (world.images_dir / r["image"]).is_file()
            assert tags == [1] + [0] * (len(conv) - 1)
            first = conv[0]["value"]
            assert first.startswith("<image>\n") or first.endswith("\n<image>")
            starts += first.startswith("<image>\n")
            ends += first.endswith("\n<image>")
            captions += first.replace("<image>", "").strip() in tw.CAPTION_PROMPTS
            multi_turn += len(conv) >= 4
        else:
            assert sum(tags) == 0
    assert starts > ends > 0
    assert captions > 0.05 * len(image_records) and multi_turn > 0.7 * len(image_records)
    assert any(t["value"].startswith("Describe the image briefly.") for r in records for t in r["conversations"])


def test_eval_files_have_llava_question_and_answer_key_formats(world, scenes):
    for bench in tw.BENCHES:
        rows = read_bench(world, bench)
        assert len(rows) >= 20, bench
        ids = [q["question_id"] for q, _ in rows]
        assert len(set(ids)) == len(ids) and all(isinstance(i, int) for i in ids)
        for q, k in rows:
            assert set(q) == {"question_id", "image", "text", "category"}
            assert {"question_id", "answer", "category", "image"} <= set(k)
            assert q["image"] == k["image"] and q["category"] == k["category"]
            assert scenes[q["image"]]["split"] == "eval"
            assert "<image>" not in q["text"]
            if bench in ("mmbench", "seed"):
                assert q["text"].endswith(MC) and k["answer"] in "ABCD"
            else:
                assert q["text"].endswith(SA)
            if bench in ("pope", "mme"):
                assert k["answer"] in ("yes", "no")
            if bench == "mme":
                assert q["text"].endswith("? Please answer yes or no." + SA)
            if bench == "pope":
                assert re.fullmatch(r"Is there an? \w+ \w+ in the image\?" + re.escape(SA), q["text"])
            assert ("answers" in k) == (bench == "vqav2")
            assert ("group" in k) == (bench == "mmbench")


def test_images_are_rgb_pngs_with_exact_object_colours(world, scenes):
    files = sorted(world.images_dir.glob("*.png"))
    assert {f.name for f in files} == set(scenes)
    signatures = set()
    for f in files:
        scene = scenes[f.name]
        with Image.open(f) as img:
            assert img.format == "PNG" and img.mode == "RGB" and img.size == (64, 64)
            px = img.load()
            for o in scene["objects"]:
                assert px[tuple(o["center"])] == tw.COLORS[o["color"]], (f.name, o)
            r, g, b = px[0, 0]  # a corner is always background: a gray, never an object colour
            assert r == g == b
        objects = tuple((o["cell"], o["shape"], o["color"], o["size"]) for o in scene["objects"])
        signatures.add((scene["background"], objects))
        cells = [o["cell"] for o in scene["objects"]]
        assert 1 <= len(cells) <= 4 and len(set(cells)) == len(cells)
        assert len({(o["color"], o["shape"]) for o in scene["objects"]}) == len(cells)
    assert len(signatures) == len(files)  # every image is a different scene, train and eval disjoint


def test_image_size_is_configurable(tmp_path):
    w = tw.generate_world(
        tmp_path / "w", seed=5, num_train_images=12, num_eval_images=10, image_size=48, eval_questions=8, progress=False
    )
    scenes = w.scenes()
    for f in w.images_dir.glob("*.png"):
        with Image.open(f) as img:
            assert img.size == (48, 48)
            for o in scenes[f.stem]["objects"]:
                assert img.getpixel(tuple(o["center"])) == tw.COLORS[o["color"]]


# ---------------------------------------------------------------------------- correctness


def test_training_answers_and_captions_are_correct(records, scenes):
    checked = 0
    for r in records:
        if "image" not in r:
            continue
        scene = scenes[r["image"]]
        conv = r["conversations"]
        for i in range(0, len(conv), 2):
            question, answer = conv[i]["value"].replace("<image>", "").strip(), conv[i + 1]["value"]
            if question in tw.CAPTION_PROMPTS:
                assert answer == scene["caption"]
                for o in scene["objects"]:
                    assert f"a {o['size']} {o['color']} {o['shape']} in the {o['position']}" in answer
                assert f"on a {scene['background']} background" in answer
            else:
                assert answer == answer_turn(question, scene), question
                checked += 1
    assert checked > 1000


@pytest.mark.parametrize("bench", tw.BENCHES)
def test_eval_answers_are_correct(world, scenes, bench):
    for q, k in read_bench(world, bench):
        assert k["answer"] == answer_turn(q["text"], scenes[q["image"]]), q


def test_vqav2_annotators_are_normalised_and_mostly_agree(world):
    from voco_llama.eval.scorers.vqa import vqa_normalize

    rows, agreeing = read_bench(world, "vqav2"), []
    for _, k in rows:
        assert len(k["answers"]) == 10 and all(isinstance(a, str) and a for a in k["answers"])
        assert all(vqa_normalize(a) == a for a in k["answers"])  # as VQAv2's annotations come
        matches = sum(a == vqa_normalize(k["answer"]) for a in k["answers"])
        assert matches >= 6  # the gold answer is the clear majority: full soft accuracy
        agreeing.append(matches)
    assert sum(m < 10 for m in agreeing) > 0.3 * len(rows)  # real disagreement exists
    assert any(a.isdigit() for _, k in rows for a in k["answers"])  # counts as digits, like "2"
    assert set(k["category"] for _, k in rows) == {"yes/no", "number", "other"}


# ---------------------------------------------------------------------------- balance


def test_yes_no_balance(world, records):
    for bench in ("pope", "mme"):
        answers = [k["answer"] for _, k in read_bench(world, bench)]
        assert 0.4 <= answers.count("yes") / len(answers) <= 0.6, bench
    train = Counter(
        r["conversations"][i + 1]["value"]
        for r in records
        for i in range(0, len(r["conversations"]), 2)
        if r["conversations"][i + 1]["value"] in ("yes", "no")
    )
    assert 0.45 <= train["yes"] / (train["yes"] + train["no"]) <= 0.55
    # ... and per subject: "Is there a red circle?" is not "usually yes" just because circles are common
    per_subject = defaultdict(Counter)
    for r in records:
        conv = r["conversations"]
        for i in range(0, len(conv), 2):
            if m := re.search(r"Is there an? (.+) in (?:the|this) image\?", conv[i]["value"]):
                per_subject[m.group(1)][conv[i + 1]["value"]] += 1
    assert len(per_subject) == len(tw.OBJECT_NAMES) + len(tw.SHAPES) + len(tw.COLORS)
    assert sum(sum(c.values()) for c in per_subject.values()) > 150
    assert all(abs(c["yes"] - c["no"]) <= 2 for c in per_subject.values()), per_subject


def test_gqa_answers_balanced_per_template(world):
    per = defaultdict(Counter)
    for _, k in read_bench(world, "gqa"):
        per[k["category"]][k["answer"]] += 1
    assert set(per) == set(tw.GQA_TEMPLATES)
    for template, counts in per.items():
        n, top = sum(counts.values()), counts.most_common(1)[0][1]
        if template in ("exist", "size"):
            assert 0.4 <= top / n <= 0.6, (template, counts)
        else:
            assert top / n <= 0.4, (template, counts)
            assert len(counts) >= 4, (template, counts)


def test_multiple_choice_letters_uniform(world, records):
    for bench in ("mmbench", "seed"):
        letters = Counter(k["answer"] for _, k in read_bench(world, bench))
        n = sum(letters.values())
        assert set(letters) == set("ABCD")
        assert all(0.18 <= c / n <= 0.32 for c in letters.values()), (bench, letters)
    train = Counter(
        r["conversations"][i + 1]["value"]
        for r in records
        for i in range(0, len(r["conversations"]), 2)
        if r["conversations"][i]["value"].endswith(MC)
    )
    n = sum(train.values())
    assert n > 100 and all(0.2 <= c / n <= 0.3 for c in train.values()), train


def test_image_blind_priors_are_at_chance(world, records):
    """The best image-blind guess (the most common training answer to the exact same question
    text) must not beat chance on the yes/no benches or GQA's multi-answer templates."""
    prior = defaultdict(Counter)
    for r in records:
        conv = r["conversations"]
        for i in range(0, len(conv), 2):
            q = conv[i]["value"].replace("<image>", "").strip().replace(YN, "").replace("this image", "the image")
            prior[q][conv[i + 1]["value"]] += 1

    def guess(text: str, default: str) -> str:
        q = text.replace(YN, "").replace("this image", "the image")
        return prior[q].most_common(1)[0][0] if prior[q] else default

    for bench in ("pope", "mme"):
        rows = read_bench(world, bench)
        acc = sum(guess(q["text"], "yes") == k["answer"] for q, k in rows) / len(rows)
        assert acc <= 0.62, (bench, acc)
    rows = [(q, k) for q, k in read_bench(world, "gqa") if k["category"] in ("color", "shape", "where", "count")]
    acc = sum(guess(q["text"], "") == k["answer"] for q, k in rows) / len(rows)
    assert acc <= 0.4, acc


# ---------------------------------------------------------------------------- bench structure


def test_mme_has_one_yes_and_one_no_per_image_and_subtask(world):
    pairs = defaultdict(list)
    for _, k in read_bench(world, "mme"):
        pairs[k["image"], k["category"]].append(k["answer"])
    assert {sub for _, sub in pairs} == set(tw.MME_SUBTASKS)
    assert all(sorted(a) == ["no", "yes"] for a in pairs.values()), pairs


def test_mmbench_groups_are_circular_rotations(world):
    groups = defaultdict(list)
    for q, k in read_bench(world, "mmbench"):
        groups[k["group"]].append((q, k))
    assert len(groups) >= 10
    for copies in groups.values():
        assert len(copies) == 4
        parsed = [parse_mc(q["text"]) for q, _ in copies]
        assert len({stem for stem, _ in parsed}) == 1 and len({q["image"] for q, _ in copies}) == 1
        base = parsed[0][1]
        right = base["ABCD".index(copies[0][1]["answer"])]
        for shift, ((_, options), (_, k)) in enumerate(zip(parsed, copies)):
            assert options == base[shift:] + base[:shift]
            assert options["ABCD".index(k["answer"])] == right
        assert sorted(k["answer"] for _, k in copies) == list("ABCD")


def test_pope_categories_share_positives_and_negatives_follow_their_rule(world, scenes):
    by_cat = defaultdict(list)
    for q, k in read_bench(world, "pope"):
        obj = re.match(r"Is there an? (\w+ \w+) in", q["text"]).group(1)
        by_cat[k["category"]].append((q["image"], obj, k["answer"]))
    assert set(by_cat) == set(tw.POPE_CATEGORIES)
    positives = {c: sorted((i, o) for i, o, a in rows if a == "yes") for c, rows in by_cat.items()}
    assert positives["random"] == positives["popular"] == positives["adversarial"]
    for cat, rows in by_cat.items():
        assert Counter(a for _, _, a in rows)["yes"] == len(rows) / 2, cat
    freq = tw.load_world(world.root).meta()["object_frequency"]
    negatives = {c: [(i, o) for i, o, a in rows if a == "no"] for c, rows in by_cat.items()}
    for image, obj in negatives["adversarial"]:
        color, shape = obj.split()
        assert any(o["color"] == color or o["shape"] == shape for o in scenes[image]["objects"])
    mean_freq = {c: sum(freq[o] for _, o in neg) / len(neg) for c, neg in negatives.items()}
    assert mean_freq["popular"] > mean_freq["random"]
    assert len({o for _, o in negatives["popular"]}) < len({o for _, o in negatives["random"]})


def test_eval_sizes_are_configurable(tmp_path):
    w = tw.generate_world(
        tmp_path / "w", seed=2, num_train_images=20, num_eval_images=40,
        eval_questions={"gqa": 16, "mmbench": 24, "pope": 30}, progress=False,
    )  # fmt: skip
    assert len(read_bench(w, "gqa")) == 16
    assert len(read_bench(w, "mmbench")) == 24
    assert len(read_bench(w, "pope")) == 30
    assert len(read_bench(w, "seed")) == tw.DEFAULT_EVAL_QUESTIONS["seed"]
    with pytest.raises(ValueError):
        tw.generate_world(tmp_path / "x", eval_questions={"nope": 10}, num_train_images=5, progress=False)


# ---------------------------------------------------------------------------- tokenizer


def test_world_tokenizer(world):
    texts = list(tw.world_texts(world.root))
    n_records = len(json.loads(world.train_json.read_text()))
    assert len(texts) == n_records + sum(len(read_bench(world, b)) for b in tw.BENCHES)
    assert all(t.startswith(get_template("vicuna_v1").system + " USER: ") for t in texts)
    assert texts[0].count("</s>") >= 1 and "<image>\n" in texts[0]

    tok = tw.build_world_tokenizer(world.root, vocab_size=1024)
    assert (world.tokenizer_dir / "tokenizer.json").is_file()
    for special in ("<image>", "<voco>", "</s>"):
        ids = tok(special, add_special_tokens=False).input_ids
        assert len(ids) == 1 and ids[0] != tok.unk_token_id, special
    ids = tok("<image>\nWhat color is the circle?", add_special_tokens=False).input_ids
    assert ids[0] == tok.convert_tokens_to_ids("<image>")
    for text in texts[::5]:
        ids = tok(text, add_special_tokens=False).input_ids
        assert tok.decode(ids) == text
    # the world's words are single tokens (after a space, where they occur)
    for word in ["circle", "triangle", "purple", "orange", "checkered", "objects", "three", "yes"]:
        assert len(tok(" " + word, add_special_tokens=False).input_ids) == 1, word

    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(world.tokenizer_dir)
    assert loaded(texts[1]).input_ids == tok(texts[1]).input_ids
    assert loaded(texts[1]).input_ids[0] == loaded.bos_token_id


def test_patch_labels_cover_exactly_the_drawn_objects(world, scenes):
    """Every pixel drawn in an object's colour lies in a patch labelled with that object's shape, colour
    size, row and column; and a labelled patch holds pixels of its object (the labels match the image)."""
    size, patch = SMALL["image_size"], 8
    grid = size // patch
    checked = 0
    for name, scene in list(scenes.items())[:60]:
        labels = tw.patch_labels(scene, size, patch)
        assert len(labels) == grid * grid and all(len(row) == len(tw.PATCH_LABELS) for row in labels)
        pixels = Image.open(world.images_dir / name).load()
        for obj in scene["objects"]:
            colour = tw.COLORS[obj["color"]]
            wanted = [tw.PATCH_LABELS.index(obj[k]) for k in ("shape", "color", "size")]
            twins = [o["center"] for o in scene["objects"] if o["color"] == obj["color"]]

            def mine(x, y, c=obj["center"], twins=twins):  # nearest same-coloured object is this one
                return min(twins, key=lambda t: (t[0] - x) ** 2 + (t[1] - y) ** 2) == c

            drawn = {
                (y // patch) * grid + x // patch
                for y in range(size)
                for x in range(size)
                if pixels[x, y] == colour and mine(x, y)
            }
            assert drawn, name
            for i in drawn:
                assert all(labels[i][j] for j in wanted), (name, obj, i)
            labelled = {i for i, row in enumerate(labels) if all(row[j] for j in wanted)}
            assert drawn <= labelled, (name, obj)
            if len(scene["objects"]) == 1:  # (with several objects a patch may mix two objects' labels)
                assert labelled == drawn, (name, obj)  # pixel-exact: no patch without a drawn pixel
            # where the object is: its grid row and column, on every patch it is drawn on
            cell = [tw.PATCH_LABELS.index(tw.ROW_NAMES[obj["cell"] // 3])]
            cell.append(tw.PATCH_LABELS.index(tw.COLUMN_NAMES[obj["cell"] % 3]))
            assert all(labels[i][j] for i in drawn for j in cell), (name, obj)
            checked += 1
        assert sum(not any(row) for row in labels) >= grid * grid - 9 * len(scene["objects"])
    assert checked > 60


def test_questions_per_image_is_configurable(tmp_path):
    w = tw.generate_world(
        tmp_path / "w",
        seed=1,
        num_train_images=60,
        num_eval_images=8,
        image_size=32,
        text_only_fraction=0.0,
        questions_per_image=(6, 6),
        progress=False,
    )
    records = json.loads(w.train_json.read_text())
    turns = Counter(len(r["conversations"]) // 2 for r in records)
    # 6 questions, or a caption record (caption + 0..2 questions), or fewer when a scene runs out of questions
    assert turns[6] > 30 and max(turns) == 6
    assert w.meta()["config"]["questions_per_image"] == [6, 6]
    with pytest.raises(ValueError, match="questions_per_image"):
        tw.world_config(questions_per_image=(3, 2))


def test_train_seed_fixes_the_training_split_and_the_fingerprint_names_it(tmp_path):
    """`train_seed` draws the training scenes and records, `seed` the eval split: two worlds with one
    train_seed and two seeds share train.json byte for byte and differ in their eval questions, and
    `train_fingerprint` (computed without rendering) is the same for both and differs for another
    train_seed."""
    sizes = dict(num_train_images=50, num_eval_images=20, image_size=48, progress=False)
    a = tw.generate_world(tmp_path / "a", seed=0, train_seed=0, **sizes)
    b = tw.generate_world(tmp_path / "b", seed=1, train_seed=0, **sizes)
    assert a.train_json.read_bytes() == b.train_json.read_bytes()
    assert a.questions("gqa").read_bytes() != b.questions("gqa").read_bytes()
    train_images = {s["image"] for s in a.scenes().values() if s["split"] == "train"}
    assert all((a.images_dir / i).read_bytes() == (b.images_dir / i).read_bytes() for i in train_images)
    fa, fb = (tw.train_fingerprint(w.meta()["config"]) for w in (a, b))
    assert fa == fb
    assert (
        tw.train_fingerprint(
            tw.world_config(seed=0, train_seed=1, **{k: v for k, v in sizes.items() if k != "progress"})
        )
        != fa
    )
