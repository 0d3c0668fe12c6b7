"""Serve a local checkpoint over the OpenAI API with `transformers serve`, on machines without torchvision.

    python tools/openai_server.py assets/models/mini-base --port 8001

This is transformers' own server (`transformers.cli.serve.Serve`), with two changes for local Qwen2.5-VL
folders: the processor loads through saferdemo.loading (stock `AutoProcessor` needs torchvision for the
video processor, which CPU-only installs cannot have), and `/v1/models` lists the served folder (stock, it
lists only the Hub cache; ours shows the folder's name, not its path). A request guard (request_guard.py) runs
first: body and text caps, data-URL images only unless --allow-image-hosts says otherwise, parameters checked
with 400s. Everything else (chat template, streaming, disconnects) is stock. Needs the `openai` package (`pip install -e ".[serve]"`). Where torchvision works, plain
`transformers serve MODEL` is the same thing.
"""

from __future__ import annotations

import argparse
import os


def patch_transformers_serve(model_dir: str, policy) -> None:
    from request_guard import RequestGuard
    from transformers.cli.serving import server
    from transformers.cli.serving.model_manager import ModelManager

    from saferdemo.loading import load_processor

    original = ModelManager._load_processor

    def _load_processor(self, model_id_and_revision, gguf_file=None):
        model_id = model_id_and_revision.split("@", 1)[0]
        if gguf_file is None and os.path.isdir(model_id):
            return load_processor(model_id)
        return original(self, model_id_and_revision, gguf_file=gguf_file)

    ModelManager._load_processor = _load_processor
    build_server = server.build_server

    def guarded(*args, **kwargs):
        app = build_server(*args, **kwargs)
        app.add_middleware(RequestGuard, policy=policy)
        return app

    server.build_server = guarded


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a local checkpoint folder")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--allow-image-hosts", default="",
                        help="comma-separated hosts whose http(s) image URLs may be fetched (default: none, data: URLs only)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the stock CLI looks up huggingface.co even for a local path
    model_dir = os.path.abspath(args.model)
    from request_guard import Policy

    hosts = {h.strip() for h in args.allow_image_hosts.split(",") if h.strip()}
    patch_transformers_serve(model_dir, Policy(os.path.basename(model_dir.rstrip("/")), model_dir,
                                               allowed_image_hosts=hosts))
    from transformers.cli.serve import Serve

    Serve(force_model=model_dir, device=args.device, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
