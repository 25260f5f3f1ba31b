"""`voco convert --voco-llama-reference`: a checkpoint folder as the VoCo-LLaMA reference code saves
it (github.com/Yxxxb/VoCo-LLaMA: LlavaLlamaForCausalLM, model_type "llava_llama", `model.mm_projector.*`,
a Vicuna-style tokenizer plus a trained `<voco>` row, no `<image>` token: the reference writes the
image as id -200), built tiny with the same transformers classes, then answered here.

The converted model is checked against the reference's computation re-done in the test: its
prompt string (llava/eval/model_vqa_loader.py), its tokenisation (llava/mm_utils.py
`tokenizer_image_token`), the stock Llama and CLIP modules and the projector by hand, and its mask
(`reference_mask`, tests/core/test_reference_layout.py)."""

import json

import pytest
import torch
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

from tests.core.test_reference_layout import TOL, reference_mask
from voco_llama.cli import main
from voco_llama.core.convert import from_voco_llama_reference
from voco_llama.core.errors import InputError
from voco_llama.core.pipeline import VoCoPipeline
from voco_llama.core.presets import build_model, image_processor_for, save_bundle
from voco_llama.core.processing import encode_prompts, question_prompt
from voco_llama.core.tokenizer import build_tokenizer

VISION = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8
)
SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant of the image. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


def save_reference_checkpoint(directory, tower_dir=None, voco=True):
    """A tiny folder as the reference code's training saves it, its CLIP tower in `tower_dir`."""
    directory.mkdir()
    tok = build_tokenizer(
        [SYSTEM + " USER: What is it? ASSISTANT: a red circle</s>"] * 4,
        vocab_size=300,
        extra_special=("<voco>",) if voco else (),
    )
    torch.manual_seed(5)
    llama = LlamaForCausalLM(
        LlamaConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=len(tok),
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
        )
    ).eval()
    tower = CLIPVisionModel(CLIPVisionConfig(**VISION)).eval()
    projector = {
        "model.mm_projector.0.weight": torch.randn(64, 32) * 0.2,
        "model.mm_projector.0.bias": torch.randn(64) * 0.2,
        "model.mm_projector.2.weight": torch.randn(64, 64) * 0.2,
        "model.mm_projector.2.bias": torch.randn(64) * 0.2,
    }
    # LLaVA saves the frozen tower inside the checkpoint too (model.vision_tower.vision_tower.*)
    inside = {f"model.vision_tower.vision_tower.{k}": v for k, v in tower.state_dict().items()}
    weights = {**{k: v.contiguous() for k, v in llama.state_dict().items()}, **projector, **inside}
    save_file(weights, str(directory / "model.safetensors"))
    raw = llama.config.to_dict()
    tower_dir = tower_dir or directory.parent / "clip"
    raw.update(
        model_type="llava_llama",
        architectures=["LlavaLlamaForCausalLM"],
        mm_vision_tower=str(tower_dir),
        mm_hidden_size=32,
        mm_projector_type="mlp2x_gelu",
        mm_vision_select_layer=-2,
        mm_vision_select_feature="patch",
        mm_patch_merge_type="flat",
        mm_use_im_start_end=False,
        mm_use_im_patch_token=False,
        image_aspect_ratio="pad",
        tokenizer_padding_side="left",
        tokenizer_model_max_length=2048,
        use_mm_proj=True,
    )
    (directory / "config.json").write_text(json.dumps(raw))
    tok.save_pretrained(directory)
    if not tower_dir.exists():
        tower.save_pretrained(tower_dir)
        image_processor_for("clip", 32).save_pretrained(tower_dir)
    return llama, tower, projector, tok


def reference_ids(tok, question, voco_id, num_voco=2):
    """The reference's input ids for one question, -200 where the image goes."""
    prompt = f"{SYSTEM} USER: <image>\n{question} ASSISTANT:"
    prompt = "<image>\n" + "<voco>" * num_voco + "\n" + prompt.replace("\n", "").replace("<image>", "")
    chunks = [tok(chunk).input_ids for chunk in prompt.split("<image>")]
    return [tok.bos_token_id, -200] + chunks[1][1:]  # BOS of the first chunk only


def reference_answer_logits(llama, tower, projector, ids, pixels, voco_id):
    """One row, the reference's single pass: its embeddings (features spliced at -200), positions, mask."""
    with torch.no_grad():
        hidden = tower(pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
        w0, b0, w2, b2 = (projector[f"model.mm_projector.{k}"] for k in ("0.weight", "0.bias", "2.weight", "2.bias"))
        features = torch.nn.functional.gelu(hidden @ w0.T + b0) @ w2.T + b2
        at = ids.index(-200)
        embed = llama.get_input_embeddings()
        text = [embed(torch.tensor(ids[:at])), features[0], embed(torch.tensor(ids[at + 1 :]))]
        embeds = torch.cat(text)[None]
        spliced = ids[:at] + [-1] * features.shape[1] + ids[at + 1 :]
        spliced_ids = torch.tensor([spliced])
        mask = reference_mask(spliced_ids, torch.ones_like(spliced_ids), voco_id)
        llama.set_attn_implementation("eager")
        return llama(inputs_embeds=embeds, attention_mask=mask, position_ids=torch.arange(len(spliced))[None]).logits


def test_converted_reference_checkpoint_answers_as_the_reference_computes(tmp_path):
    llama, tower, projector, tok = save_reference_checkpoint(tmp_path / "ref")
    voco_row = llama.get_input_embeddings().weight[tok.convert_tokens_to_ids("<voco>")].clone()
    model, tokenizer, processor = from_voco_llama_reference(tmp_path / "ref")
    config = model.config
    assert config.voco_layout == "reference" and config.num_voco == 2 and config.position_layout == "natural"
    assert config.voco_token_id == tok.convert_tokens_to_ids("<voco>")  # its own id, not a new row
    assert torch.equal(model.get_input_embeddings().weight[config.voco_token_id], voco_row)  # trained row kept
    assert config.image_token_id == len(tok)  # <image> is new (one row at the mean): the reference writes -200
    assert config.voco_head_ids == [tok.bos_token_id, config.image_token_id, *tok("\n").input_ids[1:]]
    folder = save_bundle(tmp_path / "ours", model, tokenizer, processor)

    pipe = VoCoPipeline.from_pretrained(folder)
    question = "What is it?\nAnswer briefly."
    torch.manual_seed(6)
    pixels = torch.randn(1, 3, 32, 32)
    want_ids = reference_ids(tok, question, config.voco_token_id)
    expected = reference_answer_logits(llama, tower, projector, want_ids, pixels, config.voco_token_id)
    enc = encode_prompts([question_prompt(question)], pipe.tokenizer, pipe.model.config)
    n = config.num_vision_tokens
    at = want_ids.index(-200)
    assert enc["input_ids"][0].tolist() == want_ids[:at] + [config.image_token_id] * n + want_ids[at + 1 :]
    with torch.no_grad():
        masked = pipe.model(**enc, pixel_values=pixels).logits[..., : len(tok)]
        prompt = pipe.model.prefill(**enc, cache=pipe.model.compress(pixels))
        logits, query = prompt.logits, prompt.query_labels
    assert (masked - expected).abs().max() <= TOL  # every token of the row
    text = expected[0, -query.kind.shape[1] :]
    assert (logits[0, :, : len(tok)] - text).abs().max() <= TOL  # the text, from the cache


def test_a_folder_that_is_not_a_reference_checkpoint_is_refused_in_one_line(tmp_path, capsys):
    save_reference_checkpoint(tmp_path / "plain", voco=False)  # an original LLaVA checkpoint: no <voco>
    ours = save_bundle(tmp_path / "voco", *build_model("tiny"))
    with pytest.raises(InputError, match="no <voco>: not trained with the VoCo-LLaMA reference code"):
        from_voco_llama_reference(tmp_path / "plain")
    capsys.readouterr()
    for folder, words in (
        (ours, "not a VoCo-LLaMA reference checkpoint (config.json model_type 'voco_llava'"),
        (tmp_path / "plain", "(an original LLaVA checkpoint converts with --llava)"),
        (tmp_path / "missing", "missing: VoCo-LLaMA reference checkpoint folder not found"),
    ):
        assert main(["convert", "--voco-llama-reference", str(folder), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("voco: error: ") and words in err[0], err
        assert not (tmp_path / "out").exists()
    # a tower named by a hub id (not a local folder) needs --vision-tower, said in one line
    save_reference_checkpoint(tmp_path / "hub", tower_dir=tmp_path / "clip")
    raw = json.loads((tmp_path / "hub" / "config.json").read_text())
    (tmp_path / "hub" / "config.json").write_text(json.dumps({**raw, "mm_vision_tower": "openai/clip-vit-l"}))
    argv = ["convert", "--voco-llama-reference", str(tmp_path / "hub"), "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    assert "mm_vision_tower 'openai/clip-vit-l' is not a local folder" in capsys.readouterr().err
    assert main([*argv, "--position-layout", "compact", "--vision-tower", str(tmp_path / "clip")]) == 2
    assert "--position-layout does not apply to --voco-llama-reference" in capsys.readouterr().err
    assert main([*argv, "--vision-tower", str(tmp_path / "clip")]) == 0
    assert "reference layout" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "config.json").read_text())["voco_layout"] == "reference"
