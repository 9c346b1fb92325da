"""Tool ``proxy3d tokenize``: tokenize one triplets file or a folder of them, outside the pipeline."""

from __future__ import annotations

from pathlib import Path

from proxy3d.config import load_params
from proxy3d.stages._common import command_parser, params_file
from proxy3d.tokenizer import METHODS, ProxyTokenizer
from proxy3d.tokenizer.tokenizer import check_unique_scenes


def main(argv: list[str] | None = None) -> int:
    ap = command_parser(
        "tokenize", "Turn patch triplets (<scene>.safetensors from the triplets stage) into proxy tokens "
        "saved as <out>/<scene>.safetensors. Unset options come from params.yaml's 'proxies:' section.")
    ap.add_argument("triplets", type=Path, help="a triplets .safetensors file or a folder of them")
    ap.add_argument("--budget", type=int, default=None, help="max tokens per scene (default: proxies.budget)")
    ap.add_argument("--method", choices=METHODS, default=None, help="tokenizer (default: proxies.method)")
    ap.add_argument("--out", type=Path, required=True,
                    help="output folder (not the input folder); each scene is written as <scene_id>.safetensors")
    ap.add_argument("--params", type=Path, default=None,
                    help="params file for the other proxies.* settings (default: params.yaml if present, else the "
                         "built-in defaults)")
    args = ap.parse_args(argv)
    if args.budget is not None and args.budget < 1:
        raise ValueError(f"--budget {args.budget}: a scene needs at least 1 proxy token")
    p = load_params(params_file(args.params)).proxies
    over = {k: v for k, v in (("budget", args.budget), ("method", args.method)) if v is not None}
    tok = ProxyTokenizer.from_params(p, **over)
    if args.triplets.is_dir():
        files = sorted(args.triplets.glob("*.safetensors"))
        source_dir = args.triplets
    elif args.triplets.exists():
        files, source_dir = [args.triplets], args.triplets.parent
    else:
        raise FileNotFoundError(f"{args.triplets}: no such file or folder; pass a triplets .safetensors file or folder")
    if not files:
        raise FileNotFoundError(f"{args.triplets}: folder holds no *.safetensors triplets")
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out} is a file; give a folder for the proxies")
    if args.out.resolve() == source_dir.resolve():
        raise ValueError(f"--out {args.out} is the folder of the input triplets: the proxies would replace them; "
                         "give another folder")
    check_unique_scenes(files)
    for f in files:
        s = tok.tokenize_file(f, out_dir=args.out)
        print(f"{s['scene_id']}: {s['tokens']} tokens from {s['valid']} valid patches "
              f"({s['nan_dropped']} NaN dropped, {s['unassigned']} unassigned) in {s['time_s']:.3f} s -> {s['path']}")
    return 0
