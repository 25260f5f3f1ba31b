"""The lmms-eval plugin, driven with hand-made requests (lmms-eval itself is not needed)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from PIL import Image

from voco_llama.core.errors import InputError
from voco_llama.core.pipeline import VoCoPipeline
from voco_llama.core.presets import build_model, save_bundle
from voco_llama.eval.lmms import VoCoLlava, cut_at

QUESTIONS = ["What colour is the circle?", "How many shapes are there?", "Where is the square?"]
TASK, SPLIT = "toy", "test"


@dataclass
class FakeInstance:
    """What the plugin reads of lmms-eval's `Instance`: `.args`."""

    arguments: tuple

    @property
    def args(self):
        return self.arguments


def word_tokens(tokenizer) -> list[int]:
    """Tokens that are one whole space-led word and tokenise back to themselves."""
    ids = []
    for i in range(len(tokenizer)):
        piece = tokenizer.convert_ids_to_tokens(i)
        if piece.startswith("Ġ") and piece[1:].isalpha() and len(piece) > 2:
            if tokenizer(" " + piece[1:], add_special_tokens=False).input_ids == [i]:
                ids.append(i)
    return ids


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    model, tokenizer, processor = build_model("tiny", num_voco=2, num_voco_choices=(1, 2))  # K=2 by default
    # A random model emits byte fragments that do not survive decode -> encode; let it emit only
    # whole words (every other lm_head row zeroed: logit 0, below the best word's), so its greedy
    # continuation is a string that can be handed back to loglikelihood.
    words = word_tokens(tokenizer)
    assert len(words) >= 20
    keep = torch.zeros(model.lm_head.weight.shape[0], dtype=torch.bool)
    keep[words] = True
    with torch.no_grad():
        model.lm_head.weight[~keep] = 0.0
        model.lm_head.weight[keep] *= 4.0
    return save_bundle(tmp_path_factory.mktemp("lmms") / "tiny", model, tokenizer, processor)


@pytest.fixture(scope="module")
def images():
    red = Image.new("RGB", (40, 32), (200, 30, 30))
    fractal = Image.effect_mandelbrot((32, 32), (-2.0, -1.5, 1.0, 1.5), 50).convert("RGB")
    return red, fractal


@pytest.fixture(scope="module")
def docs(images):
    red, fractal = images
    # doc 2 shows the same picture as doc 0 through another object: still compressed once.
    return [
        {"image": red, "q": QUESTIONS[0]},
        {"image": fractal, "q": QUESTIONS[1]},
        {"image": red.copy(), "q": QUESTIONS[2]},
    ]


@pytest.fixture(scope="module")
def pipe(bundle):
    return VoCoPipeline.from_pretrained(bundle)


def doc_to_visual(doc):
    return [doc["image"]] if doc.get("image") is not None else []


def plugin_for(bundle, docs, **kwargs) -> VoCoLlava:
    lm = VoCoLlava(pretrained=str(bundle), **kwargs)
    lm.task_dict = {TASK: {SPLIT: docs}}
    return lm


def gen_request(doc_id, docs, **gen_kwargs):
    return FakeInstance((docs[doc_id]["q"], gen_kwargs, doc_to_visual, doc_id, TASK, SPLIT))


def test_generate_until_matches_pipeline_and_compresses_each_image_once(bundle, docs, pipe):
    lm = plugin_for(bundle, docs, batch_size=2)
    requests = [gen_request(i, docs, max_new_tokens=6, temperature=0, until=[]) for i in range(3)]
    texts = lm.generate_until(requests)
    expected = [pipe.ask(d["q"], images=[d["image"]], route="cache", max_new_tokens=6).text for d in docs]
    assert texts == expected
    assert all(texts)
    assert lm.images_compressed == 2  # 3 questions, 2 distinct pictures, 2 batches
    assert lm.compressed_images.reused == 1

    again = lm.generate_until(requests[:1])
    assert again == texts[:1] and lm.images_compressed == 2


def test_until_cuts_the_output(bundle, docs, pipe):
    lm = plugin_for(bundle, docs)
    full = lm.generate_until([gen_request(0, docs, max_new_tokens=8)])[0]
    words = full.split()
    assert len(words) >= 4
    stop = " " + words[2]
    cut = lm.generate_until([gen_request(0, docs, max_new_tokens=8, until=stop)])[0]
    assert cut == full.split(stop)[0] and len(cut) < len(full)
    earliest = lm.generate_until([gen_request(0, docs, max_new_tokens=8, until=[" " + words[3], " " + words[1]])])[0]
    assert earliest == full.split(" " + words[1])[0]
    assert cut_at("a, b. c", [".", ","]) == "a"


def test_text_only_request_uses_no_image(bundle, docs, pipe):
    lm = plugin_for(bundle, [{"image": None, "q": "Describe the image briefly."}])
    text = lm.generate_until([gen_request(0, lm.task_dict[TASK][SPLIT], max_new_tokens=5)])[0]
    assert text == pipe.ask("Describe the image briefly.", route="none", max_new_tokens=5).text
    assert lm.images_compressed == 0


def test_loglikelihood_is_lmms_evals_loss(bundle, docs, pipe, reference_loss):
    lm = plugin_for(bundle, docs, batch_size=3)
    doc = docs[1]
    answer = pipe.ask(doc["q"], images=[doc["image"]], route="cache", max_new_tokens=5)
    words = answer.text.split()
    other = " ".join(words[:-1] + ["circle" if words[-1] != "circle" else "square"])

    def ll(continuation, doc_id=1):
        return FakeInstance((docs[doc_id]["q"], continuation, doc_to_visual, doc_id, TASK, SPLIT))

    results = lm.loglikelihood(
        [
            ll(answer.text),  # LLaVA's way: the answer, placed after "ASSISTANT: "
            ll(" " + answer.text),  # lm-eval's way: the word boundary in the continuation
            ll(other),
            ll(lambda d: answer.text),  # doc_to_target callable
        ]
    )
    (loss, greedy), (loss_spaced, _), (loss_other, greedy_other), (loss_fn, _) = results
    assert loss == pytest.approx(reference_loss(pipe, doc["q"], doc["image"], answer.text), abs=1e-4)
    assert loss_other == pytest.approx(reference_loss(pipe, doc["q"], doc["image"], other), abs=1e-4)
    assert loss > 0 and loss_other > loss  # a loss: the greedy answer is the more likely one
    assert loss_spaced == pytest.approx(loss, abs=1e-6) and loss_fn == pytest.approx(loss, abs=1e-6)
    # greedy covers the closing </s> too, which this model (its </s> row zeroed) never picks
    assert not greedy and not greedy_other
    assert lm.images_compressed == 1

    # The same from the single masked pass over all vision tokens (the reference way).
    masked = plugin_for(bundle, docs, route="masked").loglikelihood([ll(answer.text), ll(other)])
    assert masked[0][0] == pytest.approx(loss, abs=1e-4) and masked[1][0] == pytest.approx(loss_other, abs=1e-4)


def test_loglikelihood_greedy_when_the_model_would_say_it(bundle, docs, pipe):
    # Allow </s>: a continuation that is what greedy decoding says, then </s>, is greedy.
    lm = plugin_for(bundle, docs)
    eos = lm.tokenizer.eos_token_id
    with torch.no_grad():
        saved = lm.model.lm_head.weight[eos].clone()
        lm.model.lm_head.weight[eos] = lm.model.lm_head.weight.abs().max() * 50  # </s> always wins
    try:
        loss, greedy = lm.loglikelihood([FakeInstance((docs[0]["q"], "", doc_to_visual, 0, TASK, SPLIT))])[0]
        assert greedy and loss < 0.01  # the empty answer, closed at once
        assert not lm.loglikelihood([FakeInstance((docs[0]["q"], "red", doc_to_visual, 0, TASK, SPLIT))])[0][1]
    finally:
        with torch.no_grad():
            lm.model.lm_head.weight[eos] = saved


def test_loglikelihood_batches_rows_of_different_lengths(bundle, docs):
    lm = plugin_for(bundle, docs, batch_size=3)
    requests = [
        FakeInstance((d["q"], c, doc_to_visual, i, TASK, SPLIT))
        for i, (d, c) in enumerate(zip(docs, ["red", "a red circle on the left", "two"]))
    ]
    batched = lm.loglikelihood(requests)
    single = plugin_for(bundle, docs, batch_size=1).loglikelihood(requests)
    for (a, ga), (b, gb) in zip(batched, single):
        assert a == pytest.approx(b, abs=1e-4) and ga == gb and a > 0


def test_model_args(bundle, docs):
    for args in ({"route": "bogus"}, {"mode": "bogus"}):
        with pytest.raises(ValueError, match=r"^voco_llava: unknown route 'bogus'; expected one of cache, masked"):
            VoCoLlava(pretrained=str(bundle), **args)
    with pytest.raises(ValueError, match="not both"):
        VoCoLlava(pretrained=str(bundle), route="cache", mode="voco")
    # the earlier spelling: mode=voco is route cache, mode=masked route masked
    assert [VoCoLlava(pretrained=str(bundle), mode=m).route for m in ("voco", "masked")] == ["cache", "masked"]
    with pytest.raises(TypeError, match="unexpected"):
        VoCoLlava(pretrained=str(bundle), temperature=0.5)
    lm = VoCoLlava(
        pretrained=str(bundle),
        num_voco="1",
        batch_size="4",
        device="cpu",
        dtype="float32",
        conv_template="vicuna_v1",
        max_batch_size=None,
    )
    assert (lm.num_voco, lm.batch_size, lm.rank, lm.world_size) == (1, 4, 0, 1)
    lm.task_dict = {TASK: {SPLIT: docs}}
    lm.generate_until([gen_request(0, docs, max_new_tokens=2)])
    assert lm.compressed_images.caches[next(iter(lm.compressed_images.caches))].num_voco == 1
    with pytest.raises(InputError, match=r"^K=4: this model was trained with K in \{1, 2\}$"):
        VoCoLlava(pretrained=str(bundle), num_voco="4")


def test_the_one_documented_command_installs_lmms_eval():
    # issue 27 item 12: `pip install "voco-llama[lmms]"` cannot bring lmms-eval (pip has no per-requirement
    # --no-deps), so the README names one command, `make lmms`, that installs both; this checks it does
    import importlib.util
    import re
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    assert "lmms-eval: one command, `make lmms`" in readme
    assert '`pip install\n"voco-llama[lmms]"` alone gives no lmms-eval' in readme
    pinned = re.search(r"pip install --no-deps (lmms-eval==[\d.]+)", readme).group(1)
    for target in ("lmms", "install"):
        plan = subprocess.run(["make", "-n", "-B", target], cwd=root, capture_output=True, text=True, check=True)
        assert f'pip install -q --no-deps "{pinned}"' in plan.stdout, plan.stdout
    assert importlib.util.find_spec("lmms_eval") is not None  # and the venv `make install` built has it
