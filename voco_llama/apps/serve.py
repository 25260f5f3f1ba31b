"""`voco serve`: an OpenAI-compatible server that compresses each image once and answers every
later question from its VoCo cache (the server itself is voco_llama/serve/).

    voco serve --model runs/tiny                       # http://127.0.0.1:8000/v1
    voco serve --model runs/tiny --cache-dir caches/ --api-key KEY --cache-memory 4GiB

Binds to 127.0.0.1 unless told otherwise; --port 0 takes a free port (printed).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import socket
import sys
from pathlib import Path

from ..core.errors import InputError, positive_int
from ..core.files import check_folder_target
from ..serve.protocol import Limits
from ..serve.store import size_arg


def _port(text: str) -> int:
    """A TCP port, 0 (any free one) to 65535."""
    value = int(text)  # not a number: argparse says "invalid _port value"
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0 (any free port) to 65535, got {value}")
    return value


def build_server(args):
    """(FastAPI app, model name) from the parsed flags: model, store, engine, limits."""
    from ..core.pipeline import VoCoPipeline
    from ..serve.app import create_app
    from ..serve.engine import Engine
    from ..serve.metrics import Metrics
    from ..serve.store import CacheStore

    if args.cache_dir_size is not None and args.cache_dir is None:
        raise InputError("--cache-dir-size: needs --cache-dir (the folder it bounds)")
    pipe = VoCoPipeline.from_pretrained(args.model)
    store = CacheStore(args.cache_memory, pipe.model.fingerprint(), args.cache_dir, args.cache_dir_size)
    engine = Engine(
        pipe, store, Metrics(store), num_voco=args.num_voco, max_batch=args.max_batch, max_queue=args.max_queue
    )
    limits = Limits(
        max_request_bytes=args.max_request_size,
        max_image_pixels=args.max_image_pixels,
        max_frames=args.max_frames,
        max_tokens=args.max_tokens,
        num_frames=args.num_frames,
        allowed_local_media_path=Path(args.allowed_local_media_path) if args.allowed_local_media_path else None,
    )
    name = args.served_model_name or Path(args.model).resolve().name
    return create_app(engine, name, limits, args.api_key, args.max_inflight_bytes), name


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise InputError(f"--host {host} --port {port}: cannot listen there ({err.strerror})") from None
    return sock


def _serve_command(args) -> int:
    import uvicorn

    if args.allowed_local_media_path and not Path(args.allowed_local_media_path).is_dir():
        raise InputError(f"--allowed-local-media-path {args.allowed_local_media_path}: not a folder")
    if args.cache_dir:
        check_folder_target(args.cache_dir)  # a file, or under one: one line before the model loads
    logging.basicConfig(level=logging.WARNING, format="voco serve: %(message)s")
    try:
        loopback = ipaddress.ip_address(socket.gethostbyname(args.host)).is_loopback
    except (OSError, ValueError):
        loopback = False
    if not loopback and not args.api_key:
        print(f"voco serve: warning: listening on {args.host} without --api-key", file=sys.stderr)
    sock = _bind(args.host, args.port)
    try:
        app, name = build_server(args)
    except BaseException:  # a bad model or flag (a K it was never trained at): free the port at once
        sock.close()
        raise
    port = sock.getsockname()[1]
    print(
        f"voco serve: {name} on http://{args.host}:{port}/v1 (cache {args.cache_memory / 2**20:g} MiB"
        f"{', ' + args.cache_dir if args.cache_dir else ''})",
        flush=True,
    )
    server = uvicorn.Server(uvicorn.Config(app, log_level=args.log_level, timeout_graceful_shutdown=5))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down cleanly, then re-raises the Ctrl-C it caught
        pass
    print("voco serve: stopped", flush=True)
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("serve", help="OpenAI-compatible server answering from VoCo caches")
    p.add_argument("--model", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=8000, help="0: any free port (printed)")
    p.add_argument(
        "--num-voco",
        type=positive_int,
        help="K VoCo tokens per image, one the model was trained with (default: the model's)",
    )
    p.add_argument("--cache-memory", type=size_arg, default="1GiB", help="bytes of caches kept in memory (LRU)")
    p.add_argument("--cache-dir", help="also keep every cache here, as VoCo cache files, across restarts")
    p.add_argument(
        "--cache-dir-size", type=size_arg, help="bound --cache-dir to this many bytes, least recently used out"
    )
    p.add_argument("--api-key", help="require Authorization: Bearer KEY on /v1")
    p.add_argument(
        "--max-batch", type=positive_int, default=16, help="answers decoded together (requests join at every step)"
    )
    p.add_argument(
        "--max-queue", type=positive_int, default=256, help="requests waiting beyond the batch; more get 503"
    )
    p.add_argument(
        "--max-inflight-bytes", type=size_arg, default="256MiB", help="request bytes held at once; more get 503"
    )
    p.add_argument("--served-model-name", help="the model's name in the API (default: the folder's name)")
    p.add_argument("--allowed-local-media-path", help="file:// image and video URLs are read only under this folder")
    p.add_argument("--max-request-size", type=size_arg, default="32MiB")
    p.add_argument("--max-image-pixels", type=positive_int, default=4096 * 4096)
    p.add_argument("--max-frames", type=positive_int, default=64, help="images plus video frames in one request")
    p.add_argument("--max-tokens", type=positive_int, default=1024, help="largest max_tokens a request may ask for")
    p.add_argument("--num-frames", type=positive_int, default=8, help="frames sampled from a video_url, unless it says")
    p.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"))
    p.set_defaults(func=_serve_command)
