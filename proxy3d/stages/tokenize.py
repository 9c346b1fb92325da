"""Tool ``proxy3d tokenize``: tokenize one triplets file or a folder of them, outside the pipeline."""

from __future__ import annotations

from pathlib import Path

from proxy3d.config import load_params
from proxy3d.stages._common import command_parser
from proxy3d.tokenizer import METHODS, ProxyTokenizer


def main(argv: list[str] | None = None) -> int:
    ap = command_parser(
        "tokenize", "Turn patch triplets (<scene>.safetensors from the triplets stage) into proxy tokens "
        "saved as <out>/<scene>.safetensors. Unset options come from params.yaml's 'proxies:' section.")
    ap.add_argument("triplets", type=Path, help="a triplets .safetensors file or a folder of them")
    ap.add_argument("--budget", type=int, default=None, help="max tokens per scene (default: proxies.budget)")
    ap.add_argument("--method", choices=METHODS, default=None, help="tokenizer (default: proxies.method)")
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--params", default="params.yaml", help="params file for the other proxies.* settings")
    args = ap.parse_args(argv)
    p = load_params(args.params).proxies
    over = {k: v for k, v in (("budget", args.budget), ("method", args.method)) if v is not None}
    tok = ProxyTokenizer.from_params(p, **over)
    if args.triplets.is_dir():
        files = sorted(args.triplets.glob("*.safetensors"))
    elif args.triplets.exists():
        files = [args.triplets]
    else:
        raise FileNotFoundError(f"{args.triplets}: no such file or folder; pass a triplets .safetensors file or folder")
    if not files:
        raise FileNotFoundError(f"{args.triplets}: folder holds no *.safetensors triplets")
    for f in files:
        s = tok.tokenize_file(f, args.out / f.name)
        print(f"{s['scene_id']}: {s['tokens']} tokens from {s['valid']} valid patches "
              f"({s['nan_dropped']} NaN dropped, {s['unassigned']} unassigned) in {s['time_s']:.3f} s -> {args.out / f.name}")
    return 0
