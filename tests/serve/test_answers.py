"""Served answers equal `voco ask` on the same inputs: one and several images, video, cache ids,
streamed or not, multi-turn, per-part K; and the decoding fields (`stop`, `seed`, `logprobs` /
`top_logprobs`, `n`, `max_completion_tokens`), each checked against the offline answer."""

from __future__ import annotations

import pytest
from PIL import Image

from tests.serve.kit import KEY, QUESTIONS, Server, data_url, http, image_part, offline, user
from voco_llama.core.cache import kv_bytes
from voco_llama.core.pipeline import VoCoPipeline
from voco_llama.core.processing import encode_prompts, question_prompt


def test_answers_equal_voco_ask_streamed_or_not(server, media, model_dir, capsys):
    folder, images = media
    for i, question in ((0, QUESTIONS[0]), (1, QUESTIONS[1])):
        ask = offline(
            capsys,
            ["--model", str(model_dir), "--image", str(folder / f"img{i}.png"), "--question", question]
            + ["--max-new-tokens", "8"],
        )
        reply = server.client.chat.completions.create(
            model=server.name, messages=user(image_part(images[i]), question), max_tokens=8, temperature=0
        )
        assert reply.choices[0].message.content == ask["answer"]
        assert reply.usage.completion_tokens == len(ask["token_ids"])
        assert reply.choices[0].finish_reason == ("stop" if len(ask["token_ids"]) < 8 else "length")
        # the prompt the answer reads: system + question text + K=1 VoCo token, never the 16 vision tokens
        assert 20 < reply.usage.prompt_tokens < 80
        chunks = list(
            server.client.chat.completions.create(
                model=server.name,
                messages=user(image_part(images[i]), question),
                max_tokens=8,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
        assert "".join(pieces) == ask["answer"] and len([p for p in pieces if p]) > 1
        assert chunks[-1].usage.completion_tokens == len(ask["token_ids"])
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == reply.choices[0].finish_reason


def test_video_and_cache_ids_equal_voco_ask(server, media, model_dir, pipe, capsys):
    folder, _ = media
    question = QUESTIONS[2]
    ask = offline(
        capsys,
        ["--model", str(model_dir), "--video", str(folder / "frames"), "--num-frames", "4", "--question", question]
        + ["--max-new-tokens", "6"],
    )
    frames = [Image.open(p).convert("RGB") for p in sorted((folder / "frames").iterdir())]
    path_part = {"type": "video_url", "video_url": {"url": (folder / "frames").as_uri(), "num_frames": 4}}
    inline_part = {"type": "video", "video": [data_url(f) for f in frames]}
    status, made = http(server.url + "/v1/voco/compress", inline_part)
    assert status == 200 and made["groups"] == 4 and made["num_voco"] == 1 and not made["cached"]
    assert made["bytes"] == kv_bytes(pipe.model.config, 4 * 1)  # 4 frames x K=1 token, fp32
    cache_part = {"type": "voco_cache", "voco_cache": {"id": made["id"]}}
    for part in (path_part, inline_part, cache_part):
        reply = server.client.chat.completions.create(
            model=server.name, messages=user(part, question), max_tokens=6, temperature=0
        )
        assert reply.choices[0].message.content == ask["answer"], part["type"]
    status, again = http(server.url + "/v1/voco/compress", inline_part)
    assert status == 200 and again["id"] == made["id"] and again["cached"]


def test_multi_turn_system_and_sampling(server, media, pipe):
    _, images = media
    first = pipe.ask(QUESTIONS[0], images=[images[2]], max_new_tokens=5)
    expected = pipe.ask(QUESTIONS[1], images=[images[2]], history=[(QUESTIONS[0], first.text)], max_new_tokens=5)
    messages = user(image_part(images[2]), QUESTIONS[0])
    messages += [{"role": "assistant", "content": first.text}, {"role": "user", "content": QUESTIONS[1]}]
    reply = server.client.chat.completions.create(model=server.name, messages=messages, max_tokens=5)
    assert reply.choices[0].message.content == expected.text
    plain = server.client.chat.completions.create(model=server.name, messages=user(QUESTIONS[0]), max_tokens=3)
    system = server.client.chat.completions.create(
        model=server.name,
        messages=[{"role": "system", "content": "Answer in one word."}, *user(QUESTIONS[0])],
        max_tokens=3,
    )
    assert system.usage.prompt_tokens < plain.usage.prompt_tokens  # the short system prompt replaced vicuna's
    for _ in range(3):
        sampled = server.client.chat.completions.create(
            model=server.name, messages=user(image_part(images[3]), "hi"), max_tokens=6, temperature=1.0, top_p=0.9
        )
        assert 1 <= sampled.usage.completion_tokens <= 6


def test_parts_of_different_k_in_one_request(tiny_model_dir, media):
    """A model trained for K in {1, 2, 4}: each image or video part may ask for its K; a video at K=1
    beside an image at K=4 answers as `pipe.ask` from those two caches."""
    folder, images = media
    model = tiny_model_dir(num_voco_choices=(1, 2, 4))
    pipe = VoCoPipeline.from_pretrained(model)
    s = Server(["--model", str(model), "--api-key", KEY, "--allowed-local-media-path", str(folder / "frames")])
    try:
        card = s.client.models.list().data[0]
        assert (card.num_voco, card.num_voco_choices) == (1, [1, 2, 4])
        frames = [Image.open(p).convert("RGB") for p in sorted((folder / "frames").iterdir())]
        video = {"type": "video", "video": [data_url(f) for f in frames], "num_voco": 1}
        photo = {**image_part(images[1]), "num_voco": 4}
        question = "Is the last frame like the image?"
        placed = "<image>" * 4 + "\n<image>\n" + question  # each part where it is: the prompt the server builds
        caches = [pipe.compress(frames, num_voco=1), pipe.compress([images[1]], num_voco=4)]
        want = pipe.ask(placed, cache=caches, max_new_tokens=6)
        reply = s.client.chat.completions.create(
            model=s.name, messages=user(video, photo, question), max_tokens=6, temperature=0
        )
        assert reply.choices[0].message.content == want.text
        assert reply.usage.prompt_tokens == want_prompt_tokens(pipe, placed, [1, 1, 1, 1, 4])
        status, made = http(s.url + "/v1/voco/compress", photo)
        assert status == 200 and made["num_voco"] == 4 and made["cached"]  # made by the chat request
        assert made["bytes"] == kv_bytes(pipe.model.config, 4)
        status, at_2 = http(s.url + "/v1/voco/compress", {**photo, "num_voco": 2})
        assert status == 200 and at_2["num_voco"] == 2 and at_2["id"] != made["id"] and not at_2["cached"]
        by_id = {"type": "voco_cache", "voco_cache": {"id": made["id"]}}
        reply = s.client.chat.completions.create(
            model=s.name, messages=user(video, by_id, question), max_tokens=6, temperature=0
        )
        assert reply.choices[0].message.content == want.text
        url = s.url + "/v1/chat/completions"
        for part, words in (
            ({**photo, "num_voco": 3}, "num_voco: K=3: this model was trained with K in {1, 2, 4}"),
            ({**by_id, "num_voco": 4}, "num_voco: 4: a cache id has the K it was made with"),
            ({**photo, "num_voco": "4"}, "num_voco: '4': a positive integer is required"),
        ):
            status, body = http(url, {"model": s.name, "messages": user(part, question), "max_tokens": 2})
            assert status == 400 and words in body["error"]["message"], body
    finally:
        s.stop()


def want_prompt_tokens(pipe, question, ks):
    """Tokens a prompt with these images reads: its text plus K per image (what usage reports)."""
    prompt = question_prompt(question, num_images=None)
    batch = encode_prompts([prompt], pipe.tokenizer, pipe.model.config, num_voco=ks)
    return int(batch["attention_mask"].sum()) - len(ks) * pipe.model.config.num_vision_tokens


def test_stop_strings_cut_the_answer_streamed_or_not(server, media, model_dir, capsys):
    folder, images = media
    ask = offline(
        capsys,
        ["--model", str(model_dir), "--image", str(folder / "img0.png"), "--question", QUESTIONS[0]]
        + ["--max-new-tokens", "16"],
    )
    full = ask["answer"]
    assert len(full) >= 8, full  # long enough to stop inside
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    want = full[: full.find(stop)].strip()
    messages = user(image_part(images[0]), QUESTIONS[0])
    for stops in (stop, ["\x00never", stop]):
        reply = server.client.chat.completions.create(
            model=server.name, messages=messages, max_tokens=16, stop=stops, temperature=0
        )
        assert reply.choices[0].message.content == want and reply.choices[0].finish_reason == "stop"
        assert reply.usage.completion_tokens < len(ask["token_ids"]) or len(ask["token_ids"]) < 16
        chunks = list(
            server.client.chat.completions.create(
                model=server.name, messages=messages, max_tokens=16, stop=stops, stream=True
            )
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == want
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    never = server.client.chat.completions.create(
        model=server.name, messages=messages, max_tokens=16, stop=["\x00never"], temperature=0
    )
    assert never.choices[0].message.content == full
    assert never.choices[0].finish_reason == ("stop" if len(ask["token_ids"]) < 16 else "length")
    status, body = http(
        server.url + "/v1/chat/completions",
        {"model": server.name, "messages": messages, "stop": ["a", "b", "c", "d", "e"]},
    )
    assert status == 400 and body["error"]["param"] == "stop" and "up to 4" in body["error"]["message"]


def test_logprobs_equal_voco_ask_json(server, media, model_dir, pipe, capsys):
    folder, images = media
    ask = offline(
        capsys,
        ["--model", str(model_dir), "--image", str(folder / "img1.png"), "--question", QUESTIONS[1]]
        + ["--max-new-tokens", "8"],
    )
    for stream in (False, True):
        kwargs = dict(model=server.name, messages=user(image_part(images[1]), QUESTIONS[1]), max_tokens=8)
        if stream:
            chunks = list(server.client.chat.completions.create(**kwargs, logprobs=True, top_logprobs=5, stream=True))
            content = [c for c in chunks if c.choices and c.choices[0].logprobs][-1].choices[0].logprobs.content
        else:
            reply = server.client.chat.completions.create(**kwargs, logprobs=True, top_logprobs=5)
            content = reply.choices[0].logprobs.content
        assert [e.token for e in content] == [pipe.tokenizer.decode([t]) for t in ask["token_ids"]]
        assert [e.logprob for e in content] == pytest.approx(ask["logprobs"], abs=1e-4)
        for entry in content:
            tops = [t.logprob for t in entry.top_logprobs]
            assert len(tops) == 5 and tops == sorted(tops, reverse=True) and all(p <= 0 for p in tops)
            assert entry.top_logprobs[0].token == entry.token and tops[0] == pytest.approx(entry.logprob)
            assert bytes(entry.bytes) == entry.token.encode()
    plain = server.client.chat.completions.create(**kwargs, logprobs=True)
    assert all(e.top_logprobs == [] for e in plain.choices[0].logprobs.content)
    assert server.client.chat.completions.create(**kwargs).choices[0].logprobs is None
    url = server.url + "/v1/chat/completions"
    for extra, param in (
        ({"top_logprobs": 21, "logprobs": True}, "top_logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
    ):
        status, body = http(url, {"model": server.name, "messages": user("hi"), **extra})
        assert status == 400 and body["error"]["param"] == param, body


def test_seed_n_and_max_completion_tokens(server, media, pipe):
    _, images = media
    messages = user(image_part(images[2]), QUESTIONS[2])
    greedy = pipe.ask(QUESTIONS[2], images=[images[2]], max_new_tokens=8).text
    sample = lambda **kw: server.client.chat.completions.create(  # noqa: E731
        model=server.name, messages=messages, max_tokens=8, temperature=1.0, **kw
    )
    first, again, other = sample(seed=7), sample(seed=7), sample(seed=8)
    assert first.choices[0].message.content == again.choices[0].message.content  # a seeded sample reproduces
    assert first.choices[0].message.content != other.choices[0].message.content
    seeded_greedy = server.client.chat.completions.create(
        model=server.name, messages=messages, max_tokens=8, temperature=0, seed=3
    )
    assert seeded_greedy.choices[0].message.content == greedy  # accepted under greedy: nothing to seed
    three = sample(seed=7, n=3, logprobs=True)
    texts = [c.message.content for c in three.choices]
    assert [c.index for c in three.choices] == [0, 1, 2] and texts[0] == first.choices[0].message.content
    assert len(set(texts)) > 1 and texts == [c.message.content for c in sample(seed=7, n=3).choices]
    assert three.usage.completion_tokens == sum(len(c.logprobs.content) for c in three.choices)
    two = server.client.chat.completions.create(model=server.name, messages=messages, max_tokens=8, n=2)
    assert [c.message.content for c in two.choices] == [greedy, greedy]
    status, body = http(
        server.url + "/v1/chat/completions", {"model": server.name, "messages": messages, "max_tokens": 8, "n": None}
    )
    assert status == 200 and [c["message"]["content"] for c in body["choices"]] == [greedy]
    short = server.client.chat.completions.create(model=server.name, messages=messages, max_completion_tokens=3)
    assert short.usage.completion_tokens <= 3
    assert short.choices[0].message.content == pipe.ask(QUESTIONS[2], images=[images[2]], max_new_tokens=3).text
