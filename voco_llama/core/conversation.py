"""LLaVA-1.5 conversation templates, rendered byte for byte as LLaVA renders them.

`render` returns the prompt text plus the character spans that training supervises (each
assistant answer and its closing separator), so labels can be derived from a fast tokenizer's
offset mapping for any tokenizer, instead of LLaVA's per-tokenizer length arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGE_PLACEHOLDER = "<image>"  # one per image in prompts and training text
VIDEO_PLACEHOLDER = "<video>"  # one per video: becomes one <image> per sampled frame
VOCO_PLACEHOLDER = "<voco>"  # the VoCo token; never written by users (K are added after each image)


@dataclass(frozen=True)
class Template:
    name: str
    system: str
    roles: tuple[str, str]
    sep: str  # after a user turn
    sep2: str  # after an assistant turn (closes the answer; supervised)

    def render(self, turns: list[tuple[str, str | None]]) -> tuple[str, list[tuple[int, int]]]:
        """turns: (user message, assistant answer or None for a generation prompt).

        Returns the text and the [start, end) character spans of the supervised answers."""
        if self.name == "plain":
            return self._render_plain(turns)
        user, assistant = self.roles
        text, spans = self.system + self.sep, []
        for message, answer in turns:
            text += f"{user}: {message}{self.sep}{assistant}:"
            if answer is None:
                break
            text += " "
            start = len(text)
            text += answer + self.sep2
            spans.append((start, len(text)))
        return text, spans

    def _render_plain(self, turns):
        # LLaVA's pretraining format: the image alone, then the caption, then "\n" (all supervised).
        text, spans = "", []
        for message, answer in turns:
            text += IMAGE_PLACEHOLDER if IMAGE_PLACEHOLDER in message else message
            if answer is None:
                break
            start = len(text)
            text += answer + self.sep2
            spans.append((start, len(text)))
        return text, spans

    def prompt(self, question: str) -> str:
        """A single-turn generation prompt, ending with the assistant role."""
        return self.render([(question, None)])[0]


TEMPLATES = {
    "vicuna_v1": Template(
        name="vicuna_v1",
        system=(
            "A chat between a curious user and an artificial intelligence assistant. "
            "The assistant gives helpful, detailed, and polite answers to the user's questions."
        ),
        roles=("USER", "ASSISTANT"),
        sep=" ",
        sep2="</s>",
    ),
    "plain": Template(name="plain", system="", roles=("", ""), sep="", sep2="\n"),
}


# The reference code's own template for VoCo training and evaluation (github.com/Yxxxb/VoCo-LLaMA,
# llava/conversation.py `voco_conv_vicuna_v1`): vicuna_v1 with "assistant of the image".
REFERENCE_TEMPLATE = Template(
    name="voco_vicuna_v1",
    system=(
        "A chat between a curious user and an artificial intelligence assistant of the image. "
        "The assistant gives helpful, detailed, and polite answers to the user's questions."
    ),
    roles=("USER", "ASSISTANT"),
    sep=" ",
    sep2="</s>",
)


def get_template(name: str) -> Template:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown conversation template {name!r}; expected one of {sorted(TEMPLATES)}") from None
