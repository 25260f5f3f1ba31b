"""Bringing LLaVA checkpoints in: llava-hf layout and original layout, on tiny stand-ins built
with the same transformers classes as the real 7B checkpoints."""

import json

import torch
from safetensors.torch import save_file
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
)

from voco_llama.cli import main
from voco_llama.core.convert import convert_original, from_llava_hf
from voco_llama.core.presets import image_processor_for
from voco_llama.core.tokenizer import build_tokenizer

VISION = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8
)


def llama_config(vocab):
    return LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab,
    )


def plain_tokenizer(*special):
    """A tokenizer as the checkpoints ship it: no <voco> (llava-hf has <image>, Vicuna has neither)."""
    return build_tokenizer(["USER: hello ASSISTANT: a red circle</s>"] * 4, vocab_size=300, extra_special=special)


def save_llava_hf(directory, bare=False):
    """A tiny llava-hf checkpoint; `bare`: only `model.save_pretrained` (no tokenizer, no processor)."""
    tok = plain_tokenizer("<image>")
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**VISION),
        text_config=llama_config(len(tok)),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_seq_length=16,
    )
    torch.manual_seed(0)
    llava = LlavaForConditionalGeneration(config).eval()
    llava.save_pretrained(directory)
    if not bare:
        tok.save_pretrained(directory)
        image_processor_for("clip", 32).save_pretrained(directory)
    return llava, tok


def test_from_llava_hf_adds_voco_at_the_mean_and_keeps_the_model(tmp_path):
    tok_path = tmp_path / "hf"
    llava, tok = save_llava_hf(tok_path)
    vocab = len(tok)

    model, tokenizer, _ = from_llava_hf(tok_path, num_voco=2)
    voco = model.config.voco_token_id
    assert tokenizer.convert_tokens_to_ids("<voco>") == voco and model.config.num_voco == 2
    emb = model.get_input_embeddings().weight
    old = llava.get_input_embeddings().weight
    assert voco == vocab and emb.shape[0] == vocab + 1
    assert torch.allclose(emb[voco], old.mean(0), atol=1e-6)
    assert torch.equal(emb[:vocab], old)
    # with ordinary causal attention and no VoCo tokens, it is the same model
    ids = torch.tensor([tokenizer("USER: hello ASSISTANT:").input_ids])
    with torch.no_grad():
        ours = model(input_ids=ids, attention_rule="causal").logits
        theirs = llava(input_ids=ids).logits
    assert (ours[..., : theirs.shape[-1]] - theirs).abs().max() < 1e-5


def test_convert_original_layout_maps_every_weight(tmp_path):
    tok = plain_tokenizer()
    vocab = len(tok)
    torch.manual_seed(1)
    llama = LlamaForCausalLM(llama_config(vocab)).eval()
    tower = CLIPVisionModel(CLIPVisionConfig(**VISION)).eval()
    projector = {
        "model.mm_projector.0.weight": torch.randn(64, 32),
        "model.mm_projector.0.bias": torch.randn(64),
        "model.mm_projector.2.weight": torch.randn(64, 64),
        "model.mm_projector.2.bias": torch.randn(64),
    }
    llava_dir, tower_dir = tmp_path / "llava", tmp_path / "tower"
    llava_dir.mkdir()
    save_file(
        {**{k: v.contiguous() for k, v in llama.state_dict().items()}, **projector},
        str(llava_dir / "model.safetensors"),
    )
    raw = llama.config.to_dict()
    raw.update(
        model_type="llava_llama",
        mm_vision_tower="openai/clip-vit-large-patch14-336",
        mm_hidden_size=32,
        mm_projector_type="mlp2x_gelu",
        mm_vision_select_layer=-2,
        mm_vision_select_feature="patch",
    )
    (llava_dir / "config.json").write_text(json.dumps(raw))
    tok.save_pretrained(llava_dir)
    tower.save_pretrained(tower_dir)
    image_processor_for("clip", 32).save_pretrained(tower_dir)

    model, tokenizer, processor = convert_original(llava_dir, tower_dir, num_voco=1)
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        hidden = tower(pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
        w0, b0, w2, b2 = (projector[f"model.mm_projector.{k}"] for k in ("0.weight", "0.bias", "2.weight", "2.bias"))
        expected = torch.nn.functional.gelu(hidden @ w0.T + b0) @ w2.T + b2
        ours = torch.stack(model.get_image_features(pixel_values=pixels).pooler_output)
        assert (ours - expected).abs().max() < 1e-5
        ids = torch.tensor([tok("USER: hello ASSISTANT:").input_ids])
        assert (
            model(input_ids=ids, attention_rule="causal").logits[..., :vocab] - llama(ids).logits
        ).abs().max() < 1e-5
    assert processor.crop_size == {"height": 32, "width": 32}


def one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_llava_hf_folders_get_one_line_saying_what_to_do(tmp_path, capsys):
    save_llava_hf(tmp_path / "hf")
    save_llava_hf(tmp_path / "bare", bare=True)
    capsys.readouterr()  # the setup's own save bars
    # as --model: refused with the command that converts it (it would load with a random LM)
    ask = ["ask", "--model", str(tmp_path / "hf"), "--question", "q", "--route", "none"]
    assert main(ask) == 2
    assert f"voco convert --llava-hf {tmp_path / 'hf'} --out DIR" in one_error_line(capsys)
    # a bare save_pretrained folder: named as lacking a tokenizer, not a sentencepiece traceback
    assert main(["convert", "--llava-hf", str(tmp_path / "bare"), "--out", str(tmp_path / "out")]) == 2
    assert "bare: no tokenizer (tokenizer.json or tokenizer.model)" in one_error_line(capsys)
    # a typo is a missing local folder, never a hub lookup
    assert main(["convert", "--llava-hf", str(tmp_path / "hff"), "--out", str(tmp_path / "out")]) == 2
    assert one_error_line(capsys) == f"voco: error: {tmp_path / 'hff'}: llava-hf checkpoint folder not found"
    assert not (tmp_path / "out").exists()
    # and the real thing converts, then answers
    assert main(["convert", "--llava-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    assert (
        main(["ask", "--model", str(tmp_path / "out"), "--question", "q", "--route", "none", "--max-new-tokens", "2"])
        == 0
    )


def test_convert_refuses_a_folder_holding_a_model_unless_overwrite(tmp_path, capsys):
    save_llava_hf(tmp_path / "hf")
    trained = tmp_path / "trained"
    trained.mkdir()
    (trained / "model.safetensors").write_bytes(b"weeks of training")
    capsys.readouterr()
    argv = ["convert", "--llava-hf", str(tmp_path / "hf"), "--out", str(trained)]
    assert main(argv) == 2
    assert "trained: folder is not empty; pass --overwrite" in one_error_line(capsys)
    assert (trained / "model.safetensors").read_bytes() == b"weeks of training"
    assert main([*argv, "--overwrite"]) == 0
    assert (trained / "model.safetensors").read_bytes() != b"weeks of training"
