"""`voco chat`: bad commands and interrupts keep the session; answers print as they end up."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from voco_llama.apps.chat import COMMANDS, ChatSession, run_chat, timed_streamer
from voco_llama.core.pipeline import VoCoPipeline


@pytest.fixture
def session(tmp_path, tiny_model_dir):
    Image.new("RGB", (40, 30), (200, 30, 30)).save(tmp_path / "a.png")
    out = io.StringIO()
    chat = ChatSession(VoCoPipeline.from_pretrained(tiny_model_dir()), max_new_tokens=3, out=out)
    chat.load(image=str(tmp_path / "a.png"))
    return chat, out


class Lines:
    """stdin stand-in: each item is a line, or an exception raised at that read (Ctrl-C)."""

    def __init__(self, *items):
        self.items = list(items)

    def readline(self):
        item = self.items.pop(0) if self.items else ""
        if isinstance(item, BaseException):
            raise item
        return item


def test_commands_are_listed_and_bad_ones_keep_the_session(session, tmp_path):
    chat, out = session
    cache = chat.cache
    lines = Lines("/save\n", "/image\n", f"/save {tmp_path}\n", "/nonsense\n", f"/save {tmp_path / 'c.voco'}\n")
    assert run_chat(chat, lines) == 0  # then the input ends (Ctrl-D): a clean end, code 0
    text = out.getvalue().splitlines()
    assert text[1] == COMMANDS  # after the compression line, before any input
    assert "voco: error: /save needs a file name: /save FILE" in text
    assert "voco: error: /image needs a file name: /image PATH" in text
    assert f"voco: error: {tmp_path}: is a folder; give a file name" in text
    assert text.count(COMMANDS) == 2
    assert chat.cache is cache and (tmp_path / "c.voco").is_file()


def test_ctrl_c_abandons_the_answer_not_the_session(session, monkeypatch):
    chat, out = session
    assert run_chat(chat, Lines("What is it?\n")) == 0
    history = list(chat.history)
    assert len(history) == 1

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    real_ask = chat.pipe.ask
    monkeypatch.setattr(chat.pipe, "ask", interrupted)
    # Ctrl-C while typing, Ctrl-C while answering, then the next question is answered
    lines = Lines(KeyboardInterrupt(), "Describe it.\n")
    assert run_chat(chat, lines) == 0
    assert out.getvalue().count("[interrupted; /quit or Ctrl-D to leave]") == 2
    assert chat.history == history  # the abandoned answer left no turn behind
    monkeypatch.setattr(chat.pipe, "ask", real_ask)
    assert run_chat(chat, Lines("And now?\n", "/quit\n", "never read\n")) == 0
    assert len(chat.history) == 2


def test_streamed_answer_has_no_leading_space(tiny_model_dir):
    pipe = VoCoPipeline.from_pretrained(tiny_model_dir())
    ids = pipe.tokenizer(" yes no", add_special_tokens=False).input_ids
    assert pipe.tokenizer.decode(ids[:1]).startswith(" ")  # the tokenizer's own word-start space
    out = io.StringIO()
    streamer = timed_streamer(pipe.tokenizer, out)
    for token in ids:
        streamer.put(torch.tensor([token]))
    streamer.end()
    assert out.getvalue() == "yes no\n"


def test_chat_compresses_at_the_k_asked_for(tiny_model_dir, tmp_path):
    Image.new("RGB", (32, 32), (20, 200, 40)).save(tmp_path / "g.png")
    out = io.StringIO()
    chat = ChatSession(VoCoPipeline.from_pretrained(tiny_model_dir(num_voco_choices=(1, 2, 4))), out=out, num_voco=4)
    chat.load(image=tmp_path / "g.png")
    assert chat.cache.num_voco == 4 and "at K=4" in out.getvalue()
