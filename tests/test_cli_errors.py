"""Bad input to every verb: exit code 2 and one line on stderr naming the file, record or field.

Each row of TABLE is (verb, argv, what the line must say); `{name}` in argv is a path from the
`files` fixture. Rows run `voco_llama.cli.main` in-process. Also here: `voco --help` in under a
second, `--version`, both flag spellings, defaults in the help."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
import zlib

import pytest
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from voco_llama.cli import VERBS, main
from voco_llama.core.presets import build_model, save_bundle


def png_claiming(path, width, height):
    """A few-byte PNG whose header claims width x height (what a decompression bomb looks like)."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def rewrite_header(source, target, edit):
    """Copy a cache file with its string header changed by `edit(meta)` (tensors as they were)."""
    with safe_open(str(source), framework="pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    edit(meta)
    save_file(tensors, str(target), metadata=meta)
    return target


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_model_dir):
    d = tmp_path_factory.mktemp("bad")
    model = tiny_model_dir()
    paths = {"d": d, "model": model, "missing": d / "missing", "mixture": tiny_model_dir(num_voco_choices=(1, 2, 4))}
    Image.new("RGB", (40, 30), (200, 30, 30)).save(d / "img.png")
    paths["img"] = d / "img.png"
    paths["bomb"] = png_claiming(d / "bomb.png", 20000, 20000)  # above 2x PIL's limit: PIL's own error
    paths["big"] = png_claiming(d / "big.png", 10000, 10000)  # above PIL's limit, below 2x
    (d / "bad.png").write_bytes(b"not an image")
    paths["bad"] = d / "bad.png"
    (d / "nonempty").mkdir()
    (d / "nonempty" / "model.safetensors").write_bytes(b"trained weights")
    paths["nonempty"] = d / "nonempty"
    # a model whose context is 64 positions: a long question cannot fit
    short, tok, ip = build_model("tiny")
    short.config.text_config.max_position_embeddings = 64
    paths["short_model"] = save_bundle(d / "short", short, tok, ip)
    paths["long_question"] = " ".join(["red circle left"] * 40)
    # a good cache (this also warms up every import, so no first-import notice lands in a row)
    assert main(["compress", "--model", str(model), "--image", str(d / "img.png"), "--out", str(d / "c.voco")]) == 0
    cache = d / "c.voco"
    paths["edited"] = rewrite_header(cache, d / "edited.voco", lambda m: m.update(positions="[99]"))
    paths["badjson"] = rewrite_header(cache, d / "badjson.voco", lambda m: m.update(positions="[16,"))
    paths["nolayout"] = rewrite_header(cache, d / "nolayout.voco", lambda m: m.pop("layout"))
    paths["oldformat"] = rewrite_header(cache, d / "old.voco", lambda m: m.update(format="voco-cache/1"))
    # a K=4 cache of the mixture model (the same weights as `model`): `model` was trained at K=1 only
    argv = ["compress", "--model", str(paths["mixture"]), "--image", str(d / "img.png"), "--num-voco", "4"]
    assert main([*argv, "--out", str(d / "k4.voco")]) == 0
    paths["mixcache"] = d / "k4.voco"
    (d / "train.json").write_text("[]")
    (d / "q.jsonl").write_text(json.dumps({"question_id": 1, "image": "img.png", "text": "What?"}) + "\n")
    (d / "qint.jsonl").write_text(json.dumps({"question_id": 1, "image": "img.png", "text": 5}) + "\n")
    dup = [{"question_id": 7, "image": "img.png", "text": "What?"}] * 2  # the same question twice
    (d / "qdup.jsonl").write_text("".join(json.dumps(q) + "\n" for q in dup))
    (d / "blank.jsonl").write_text("\n\n")  # no answer at all (a torn one: tests/eval/test_submit.py)
    for verb in VERBS:  # import every verb module now: a first import may print a notice
        main([verb, "--help"])
    return paths


EVAL = ["eval", "--model", "{model}", "--question-file", "{d}/q.jsonl", "--image-folder", "{d}", "--answers-file"]

TABLE = [
    ("top", ["nosuchverb"], "invalid choice: 'nosuchverb'"),
    ("top", [], "required: VERB"),
    ("init", ["init", "--preset", "foo", "--out", "{d}/x"], "invalid choice: 'foo' (choose from 'llava15-geometry', "),
    ("init", ["init", "--out", "{nonempty}"], "nonempty: folder is not empty; pass --overwrite"),
    ("init", ["init", "--out", "{img}"], "img.png: is a file"),
    ("init", ["init", "--num-voco", "0", "--out", "{d}/y"], "argument --num-voco: must be at least 1, got 0"),
    ("convert", ["convert", "--llava-hf", "{missing}", "--out", "{d}/z"], "missing: llava-hf checkpoint folder not"),
    ("convert", ["convert", "--llava-hf", "{model}", "--out", "{nonempty}"], "nonempty: folder is not empty"),
    ("convert", ["convert", "--llava", "{model}", "--out", "{d}/z"], "--vision-tower is required"),
    ("convert", ["convert", "--llava", "{missing}", "--vision-tower", "{model}", "--out", "{d}/z"], "missing: LLaVA"),
    ("compress", ["compress", "--model", "{model}", "--image", "{img}", "--out", "{d}"], "is a folder; give a file"),
    ("compress", ["compress", "--model", "{model}", "--image", "{img}", "--out", "{img}/c.voco"], "is not a folder"),
    ("compress", ["compress", "--model", "{model}", "--images", "{d}", "--out", "{img}"], "img.png: is a file"),
    (
        "compress",
        ["compress", "--model", "{model}", "--image", "{img}", "--out", "{d}/n.voco", "--num-voco", "0"],
        "--num-voco: must",
    ),
    (
        "compress",
        ["compress", "--model", "{model}", "--video", "{d}", "--num-frames", "0", "--out", "{d}/v"],
        "at least 1",
    ),
    ("compress", ["compress", "--model", "{model}", "--images", "{d}", "--out", "{d}/o", "--batch-size", "0"], "batch"),
    (
        "compress",
        ["compress", "--model", "{model}", "--image", "{bomb}", "--out", "{d}/b.voco"],
        "bomb.png: unreadable",
    ),
    ("compress", ["compress", "--model", "{model}", "--image", "{bad}", "--out", "{d}/b.voco"], "bad.png: unreadable"),
    ("ask", ["ask", "--model", "{model}", "--image", "{big}", "--question", "q"], "big.png: image is 10000x10000"),
    ("ask", ["ask", "--model", "{model}", "--image", "{img}", "--video", "{d}", "--question", "q"], "not allowed"),
    ("ask", ["ask", "--model", "{model}", "--image", "{img}", "--question", "q", "--max-new-tokens", "0"], "tokens"),
    ("ask", ["ask", "--model", "{model}", "--image", "{img}", "--question", "q", "--num_voco", "-1"], "got -1"),
    ("ask", ["ask", "--model", "{model}", "--video", "{d}", "--question", "q", "--fps", "0"], "--fps: must be above"),
    ("ask", ["ask", "--model", "{model}", "--question", "q"], "give --image IMG"),
    ("ask", ["ask", "--model", "{missing}", "--image", "{img}", "--question", "q"], "missing: model folder not found"),
    ("ask", ["ask", "--model", "{short_model}", "--image", "{img}", "--question", "{long_question}"], "context is 64"),
    (
        "ask",
        ["ask", "--model", "{model}", "--cache", "{edited}", "--question", "q"],
        "edited.voco: VoCo cache is corru",
    ),
    ("ask", ["ask", "--model", "{model}", "--cache", "{badjson}", "--question", "q"], "'positions' is malformed"),
    ("ask", ["ask", "--model", "{model}", "--cache", "{nolayout}", "--question", "q"], "has no 'layout' field"),
    ("ask", ["ask", "--model", "{model}", "--cache", "{oldformat}", "--question", "q"], "'voco-cache/1'"),
    ("chat", ["chat", "--model", "{model}", "--image", "{missing}.png"], "missing.png: image not found"),
    ("chat", ["chat", "--model", "{model}", "--image", "{img}", "--max-new-tokens", "0"], "--max-new-tokens: must"),
    (
        "train",
        [
            "train",
            "--model_name_or_path",
            "{model}",
            "--data_path",
            "{missing}.json",
            "--image_folder",
            "{d}",
            "--output_dir",
            "{d}/run",
        ],
        "missing.json: data file not found",
    ),
    (
        "data check",
        ["data", "check", "--data-path", "{d}/q.jsonl", "--image-folder", "{missing}", "--model", "{model}"],
        "missing: image folder not found",
    ),
    (
        "eval",
        ["eval", "--model", "{model}", "--question-file", "{missing}.jsonl", "--answers-file", "{d}/a.jsonl"],
        "missing.jsonl",
    ),
    (
        "score",
        ["score", "pope", "--answers-file", "{missing}.jsonl", "--annotation-file", "{missing}.jsonl"],
        "missing.jsonl",
    ),
    (
        "retention",
        ["retention", "--upper", "{missing}.json", "--lower", "{missing}.json", "--method", "v={missing}.json"],
        "missing.json",
    ),
    (
        "submit",
        ["submit", "gqa", "--answers-file", "{missing}.jsonl", "--questions", "{missing}.json", "--out", "{d}/p.json"],
        "missing.json",
    ),
    ("bench", ["bench", "--model", "{missing}", "--out", "{d}/bench"], "missing: model folder not found"),
    ("bench-train", ["bench-train", "--preset", "foo"], "invalid choice: 'foo'"),
    ("demo", ["demo", "--preset", "foo", "--out", "{d}/demo"], "'foo'"),
    ("demo", ["demo", "--preset", "smoke", "--out", "{img}"], "img.png: is a file; give a folder"),
    ("demo", ["demo", "--preset", "smoke", "--out", "{img}/run"], "img.png/run: cannot write ("),
    ("demo", ["demo", "--pretrain", "--preset", "smoke", "--out", "{img}"], "img.png: is a file; give a folder"),
    ("serve", ["serve", "--model", "{model}", "--cache-memory", "lots"], "'lots': not a size"),
    ("bench-serve", ["bench-serve", "--modes", "foo"], "--modes foo: expected a comma-separated subset"),
    # K: only those the model was trained with (issue 18), one rule for every verb
    (
        "compress",
        ["compress", "--model", "{mixture}", "--image", "{img}", "--out", "{d}/k.voco", "--num-voco", "3"],
        "K=3: this model was trained with K in {1, 2, 4}",
    ),
    (
        "compress",
        ["compress", "--model", "{model}", "--images", "{d}", "--out", "{d}/k", "--num-voco", "2"],
        "K=2: this model was trained at K=1 only (voco train --num_voco_choices",
    ),
    ("ask", ["ask", "--model", "{mixture}", "--image", "{img}", "--question", "q", "--num-voco", "8"], "K=8: this"),
    (
        "ask",
        ["ask", "--model", "{model}", "--cache", "{mixcache}", "--question", "q"],
        "K=4: this model was trained at",
    ),
    ("chat", ["chat", "--model", "{mixture}", "--image", "{img}", "--num-voco", "16"], "K=16: this model was trained"),
    (
        "eval",
        ["eval", "--model", "{mixture}", "--question-file", "{d}/q.jsonl", "--answers-file", "{d}/k.jsonl"]
        + ["--image-folder", "{d}", "--num-voco", "3"],
        "K=3: this model was trained with K in {1, 2, 4}",
    ),
    ("serve", ["serve", "--model", "{mixture}", "--port", "0", "--num-voco", "5"], "K=5: this model was trained with"),
    (
        "train",
        ["train", "--model_name_or_path", "{model}", "--data_path", "{d}/train.json", "--output_dir", "{d}/run"]
        + ["--num_voco_choices", "1,0,4"],
        "--num_voco_choices 1,0,4: expected distinct positive integers separated by commas",
    ),
    (
        "train",
        ["train", "--model_name_or_path", "{model}", "--data_path", "{d}/train.json", "--output_dir", "{d}/run"]
        + ["--num-voco-choices", "1,2", "--num_voco", "4"],
        "--num_voco 4 is not in --num_voco_choices 1,2",
    ),
    # issue 27: a second round of bad inputs
    (
        "train",
        ["train", "--model_name_or_path", "{model}", "--data_path", "{d}/train.json", "--output_dir", "{model}"],
        "tiny: holds a trained model; pass --overwrite_output_dir to replace it",
    ),
    (
        "train",
        ["train", "--model_name_or_path", "{model}", "--data_path", "{d}/train.json", "--output_dir", "{d}/run"]
        + ["--num_voco", "0"],
        "--num_voco 0: must be at least 1",
    ),
    (
        "data check",
        ["data", "check", "--data-path", "{d}/q.jsonl", "--image-folder", "{d}", "--model", "{model}"]
        + ["--num_voco", "0"],
        "argument --num_voco: must be at least 1, got 0",
    ),
    (
        "train",
        ["train", "--model_name_or_path", "{model}", "--data_path", "{d}/train.json", "--output_dir", "{img}/run"],
        "img.png/run: cannot write (",
    ),
    (
        "train",
        ["train", "--model_name_or_path", "{model}", "--data_path", "{d}/train.json", "--output_dir", "{d}/run"]
        + ["--learning_rate", "-1"],
        "--learning_rate -1: expected a finite number >= 0",
    ),
    (
        "train",
        ["train", "--model_name_or_path", "{model}", "--data_path", "{d}/train.json", "--output_dir", "{d}/run"]
        + ["--warmup_ratio", "2"],
        "--warmup_ratio 2.0: expected a fraction in [0, 1)",
    ),
    ("eval", [*EVAL, "{d}"], ": is a folder; give a file name"),
    ("eval", [*EVAL, "{img}/a.jsonl"], "img.png/a.jsonl: cannot write ("),
    ("eval", [*EVAL, "{d}/a.jsonl", "--question-file", "{d}/qint.jsonl"], "qint.jsonl:1: 'text' must be a string"),
    (
        "eval",
        [*EVAL, "{d}/a.jsonl", "--question-file", "{d}/qdup.jsonl"],
        "qdup.jsonl:2: question_id 7 repeats the question of ",  # (an id with another text: MME's layout)
    ),
    ("eval", [*EVAL, "{d}/a.jsonl", "--temperature", "nan"], "--temperature: must be a finite number >= 0, got nan"),
    ("ask", ["ask", "--model", "{model}", "--image", "{img}", "--question", "q", "--temperature", "-1"], "got -1"),
    ("ask", ["ask", "--model", "{model}", "--image", "{img}", "--question", "q", "--temperature", "nan"], "got nan"),
    ("chat", ["chat", "--model", "{model}", "--image", "{img}", "--temperature", "-1"], "finite number >= 0, got -1"),
    ("init", ["init", "--out", "/proc/voco-cannot-write/model"], "voco-cannot-write/model: cannot write ("),
    ("serve", ["serve", "--model", "{model}", "--port", "-1"], "--port: must be 0 (any free port) to 65535, got -1"),
    ("serve", ["serve", "--model", "{model}", "--port", "70000"], "to 65535, got 70000"),
    ("serve", ["serve", "--model", "{model}", "--cache-dir", "{img}"], "img.png: is a file; give a folder"),
    ("bench", ["bench", "--preset", "bogus", "--out", "{d}/bench"], "argument --preset: invalid choice: 'bogus'"),
    ("bench", ["bench", "--layers", "0", "--out", "{d}/bench"], "argument --layers: must be at least 1, got 0"),
    ("bench", ["bench", "--preset", "tiny", "--out", "{img}/bench"], "img.png/bench: cannot write ("),
    ("bench-train", ["bench-train", "--steps", "0"], "argument --steps: must be at least 1, got 0"),
    ("bench-train", ["bench-train", "--images", "-1"], "argument --images: must be at least 1, got -1"),
    (
        "submit",
        ["submit", "gqa", "--answers-file", "{d}/blank.jsonl", "--questions", "{d}/q.jsonl", "--out", "{d}/p.json"],
        "blank.jsonl: no answer to any question of",
    ),
]


@pytest.mark.parametrize(("verb", "argv", "expected"), TABLE, ids=[f"{r[0]}: {r[2][:40]}" for r in TABLE])
def test_bad_input_is_one_line_and_exit_2(files, capsys, verb, argv, expected):
    capsys.readouterr()
    argv = [a.format(**files) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("voco: error: ") and expected in err[0], err[0]


def test_every_verb_has_a_row():
    assert {row[0] for row in TABLE} >= {"data check"} | (set(VERBS) - {"data"})


def test_help_is_fast_and_imports_no_verb(tmp_path):
    code = (
        "import sys, time; t = time.perf_counter(); from voco_llama.cli import main; main(['--help']); "
        "print(time.perf_counter() - t, 'torch' in sys.modules)"
    )
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    wall = time.perf_counter() - start
    seconds, torch_loaded = out.strip().splitlines()[-1].split()
    assert torch_loaded == "False"
    assert wall < 1.0, f"voco --help took {wall:.2f} s (in-process {float(seconds):.2f} s)"
    for verb in VERBS:
        assert verb in out


# `voco VERB --help` builds the verb's parser without importing torch (or transformers); the verbs
# left out still do: train's parser is transformers' TrainingArguments, and data check, serve and
# the benches define torch-backed classes in the modules that hold their parsers
LIGHT_HELP = ("init", "convert", "compress", "ask", "chat", "eval", "score", "retention", "submit", "demo")


@pytest.mark.parametrize("verb", LIGHT_HELP)
def test_verb_help_imports_no_torch(verb):
    code = (
        "import sys, contextlib, io; from voco_llama.cli import main\n"
        f"with contextlib.redirect_stdout(io.StringIO()) as out: code = main([{verb!r}, '--help'])\n"
        "print(code, 'usage: voco' in out.getvalue(), 'torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["0", "True", "False", "False"], out


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == "voco 0.1.0"


def test_both_spellings_and_defaults_in_help(files, capsys):
    out = files["d"] / "spell.voco"
    argv = ["compress", "--model", str(files["mixture"]), "--image", str(files["img"]), "--num_voco", "2"]
    assert main([*argv, "--out", str(out)]) == 0
    from voco_llama.core.cache import VoCoCache

    assert VoCoCache.load(out).num_voco == 2
    capsys.readouterr()
    assert main(
        [
            "data",
            "check",
            "--data-path",
            str(files["d"] / "train.json"),
            "--image-folder",
            str(files["d"]),
            "--tokenizer",
            str(files["model"]),
            "--num-voco",
            "1",
        ]
    ) in (0, 1)
    capsys.readouterr()
    for verb in ("init", "ask", "compress", "convert", "chat"):
        assert main([verb, "--help"]) == 0
        text = capsys.readouterr().out
        assert "(default:" in text and ("--num-frames" in text or "--num-voco" in text), verb
        assert "--num_" not in text, verb  # the other spelling parses but is not shown
