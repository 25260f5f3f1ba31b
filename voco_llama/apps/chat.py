"""`voco chat`: a conversation about one image or video, compressed once, answers streamed.

Commands: /image PATH (switch image), /video PATH (switch video), /stats (cache bytes vs
full-token bytes, timings), /save FILE (write the cache), /reset (forget the conversation),
/quit. Each turn re-reads only text against the cache: the image is never seen again. A bad
command or file is one line and the session goes on; Ctrl-C stops an answer (or, at the prompt,
only clears the line), Ctrl-D or /quit ends the chat.
"""

from __future__ import annotations

import sys
import time

from ..core.errors import InputError, non_negative_float, positive_int

COMMANDS = "commands: /image PATH, /video PATH, /stats, /save FILE, /reset, /quit (or Ctrl-D)"


def timed_streamer(tokenizer, out):
    """A transformers TextStreamer that prints tokens as they come (without the space a tokenizer
    puts before the first word, as the final answer has none) and remembers when the first one
    arrived (`.first`). Built here so that `voco chat --help` imports no transformers."""
    from transformers import TextStreamer

    class TimedStreamer(TextStreamer):
        def __init__(self):
            super().__init__(tokenizer, skip_prompt=False, skip_special_tokens=True)
            self.first = None
            self.started = False

        def put(self, value):
            if self.first is None:
                self.first = time.perf_counter()
            super().put(value)

        def on_finalized_text(self, text: str, stream_end: bool = False):
            if not self.started:
                text = text.lstrip()
                self.started = bool(text)
            print(text, end="" if not stream_end else "\n", flush=True, file=out)

    return TimedStreamer()


class ChatSession:
    def __init__(
        self,
        pipe,
        num_frames: int = 8,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        out=sys.stdout,
        num_voco: int | None = None,
    ):
        self.pipe, self.num_frames, self.out = pipe, num_frames, out
        self.num_voco = pipe.model.config.accepted_num_voco(num_voco)  # K of every image and video compressed
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.cache, self.history, self.stats = None, [], {}

    def load(self, image=None, video=None, cache_file=None) -> None:
        start = time.perf_counter()
        if cache_file:
            self.cache = self.pipe.load_cache(cache_file)
        elif video:
            self.cache = self.pipe.compress_video(video, self.num_frames, num_voco=self.num_voco)
        else:
            self.cache = self.pipe.compress([image], num_voco=self.num_voco)
        self.history = []
        self.stats = {"compress_ms": (time.perf_counter() - start) * 1e3}
        print(
            f"[{self.cache.num_groups} group(s) at K={self.cache.num_voco}: {self.cache.nbytes:,} bytes]", file=self.out
        )

    def ask(self, question: str) -> str:
        from ..core.processing import place_images

        streamer = timed_streamer(self.pipe.tokenizer, self.out)
        start = time.perf_counter()
        answer = self.pipe.ask(
            question,
            cache=self.cache,
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            streamer=streamer,
            history=self.history,
        )
        end = time.perf_counter()
        if not self.history:
            question = place_images(question, self.cache.num_groups)  # the first turn holds the image(s)
        self.history.append((question, answer.text))
        n = max(1, len(answer.token_ids))
        self.stats.update(
            first_token_ms=((streamer.first or end) - start) * 1e3,
            decode_ms_per_token=(end - (streamer.first or start)) * 1e3 / n,
        )
        return answer.text

    def stats_line(self) -> str:
        from ..core.cache import kv_bytes

        config = self.pipe.model.config
        element = self.cache.keys[0].element_size()
        full = kv_bytes(config, self.cache.num_groups * (config.num_vision_tokens + self.cache.num_voco), element)
        timings = ", ".join(f"{k} {v:.1f}" for k, v in self.stats.items())
        return (
            f"cache {self.cache.nbytes:,} bytes vs full-token K/V {full:,} bytes "
            f"({self.cache.nbytes / full:.2%}); {timings}"
        )

    def handle(self, line: str) -> bool:
        """One line of input; False when the session should end."""
        line = line.strip()
        if not line:
            return True
        command, _, rest = line.partition(" ")
        rest = rest.strip()
        try:
            if command in ("/quit", "/exit"):
                return False
            if command in ("/image", "/video", "/save") and not rest:
                raise InputError(f"{command} needs a file name: {command} {'FILE' if command == '/save' else 'PATH'}")
            if command == "/image":
                self.load(image=rest)
            elif command == "/video":
                self.load(video=rest)
            elif command == "/stats":
                print(self.stats_line(), file=self.out)
            elif command == "/save":
                print(f"[saved {self.cache.save(rest)}]", file=self.out)
            elif command == "/reset":
                self.history = []
            elif command.startswith("/"):
                print(COMMANDS, file=self.out)
            else:
                self.ask(line)
        except InputError as err:
            print(f"voco: error: {err}", file=self.out)
        return True


def run_chat(session: ChatSession, lines, interactive: bool = False) -> int:
    """Read lines until /quit or the end of input (Ctrl-D). Ctrl-C abandons the answer being
    written (the conversation keeps every earlier turn) or the line being typed; it never ends
    the session or its cache."""
    print(COMMANDS, file=session.out)
    while True:
        try:
            if interactive:
                print("> ", end="", flush=True, file=session.out)
            line = lines.readline()
            if not line or not session.handle(line):
                return 0
        except KeyboardInterrupt:
            print("\n[interrupted; /quit or Ctrl-D to leave]", file=session.out)


def _chat_command(args) -> int:
    from ..core.pipeline import VoCoPipeline

    pipe = VoCoPipeline.from_pretrained(args.model)
    session = ChatSession(pipe, args.num_frames, args.max_new_tokens, args.temperature, num_voco=args.num_voco)
    session.load(image=args.image, video=args.video, cache_file=args.cache)
    return run_chat(session, sys.stdin, sys.stdin.isatty())


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "chat",
        description="A conversation about one image or video, compressed once; answers are streamed. " + COMMANDS,
    )
    p.add_argument("--model", required=True, help="a VoCo model folder")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", help="an image")
    source.add_argument("--video", help="a video file or a folder of frames")
    source.add_argument("--cache", help="a cache file from voco compress")
    p.add_argument("--num-frames", type=positive_int, default=8, help="frames sampled uniformly from a video")
    p.add_argument(
        "--num-voco",
        type=positive_int,
        help="K: <voco> tokens per image or frame, one the model was trained with (default: the model's)",
    )
    p.add_argument("--max-new-tokens", type=positive_int, default=256, help="at most this many tokens per answer")
    p.add_argument("--temperature", type=non_negative_float, default=0.0, help="0: greedy decoding")
    p.set_defaults(func=_chat_command)
