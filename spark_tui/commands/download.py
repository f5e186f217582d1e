"""`spark-tui download`: fetch a checkpoint (resumable, disk-checked) or verify a local one."""

from __future__ import annotations

import argparse
import json
import sys
import time

from spark_tui.errors import UsageError


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", nargs="?", default=None,
                   help="Hugging Face repo id (default: nvidia/Qwen3.6-35B-A3B-NVFP4)")
    p.add_argument("--revision", help="branch, tag or commit (default: main)")
    p.add_argument("--dir", dest="dir", help="download into this folder instead of the Hugging Face cache")
    p.add_argument("--model-path", help="a local checkpoint folder (or HF cache repo folder) to verify")
    p.add_argument("--verify-only", action="store_true", help="with --model-path: only verify, never download")
    p.add_argument("--expect-format", help="checkpoint format the plan expects (modelopt_mixed, modelopt_fp4, "
                   "compressed-tensors-nvfp4, compressed-tensors-nvfp4-fp8, fp8, bf16); another format is a warning; "
                   "default: known for the listed repos")
    p.add_argument("--workers", type=int, default=4, help="parallel file downloads (default 4)")
    p.add_argument("--json", action="store_true", help="print the verification report as JSON")


def _print_report(rep, as_json: bool) -> None:
    from spark_tui.core.runtime.download import fmt_bytes

    if as_json:
        print(json.dumps(rep.to_dict(), indent=2))
        return
    q = rep.quant
    state = "complete" if rep.complete else "INCOMPLETE"
    print(f"checkpoint {rep.path}: {state}")
    print(f"  format   {q.format} ({q.detail}; from {q.source})")
    print(f"  vLLM     quantization method {q.quant_method}"
          + (f"; NOT LOADABLE: {q.not_loadable}" if q.not_loadable else ""))
    print(f"  experts  {q.experts}   shared expert {q.shared_expert}   lm_head {q.lm_head}"
          + (f"   group {q.group_size}" if q.group_size else ""))
    print(f"  attention {q.attention} (full-attention q/k/v/o)   DeltaNet {q.deltanet} (in_proj_qkv/z, out_proj)")
    print(f"  MTP head {'yes' if rep.has_mtp else 'no'} ({rep.mtp_detail}; {rep.mtp_dtype or q.mtp})")
    kv = q.kv_cache_quant_algo or "none declared"
    scales = {True: "k/v scales present", False: "no k/v scales", None: "k/v scales unknown"}[rep.kv_cache_scales]
    auto = "the model dtype" if q.kv_cache_dtype_auto == "auto" else q.kv_cache_dtype_auto
    print(f"  KV cache {kv}; --kv-cache-dtype auto gives {auto}; {scales}")
    print(f"  shards   {sum(s.ok for s in rep.shards)}/{len(rep.shards)} ok, {rep.tensor_count} tensors, "
          f"{fmt_bytes(rep.total_bytes)}")
    for w in rep.warnings:
        print(f"  warning: {w}")
    for pr in rep.problems:
        print(f"  problem: {pr}")


class _Printer:
    """Progress line on stderr: redrawn in place on a terminal, every 5 s otherwise."""

    def __init__(self, stream=sys.stderr) -> None:
        from spark_tui.core.runtime.download import ProgressState

        self.state = ProgressState()
        self.stream = stream
        self.tty = stream.isatty()
        self.last = 0.0

    def __call__(self, ev) -> None:
        from spark_tui.core.runtime import download as dl

        self.state.apply(ev)
        now = time.monotonic()
        if isinstance(ev, dl.DownloadStarted):
            print(f"downloading {ev.repo_id}@{ev.commit[:12]} into {ev.target}: {len(ev.files)} files, "
                  f"{dl.fmt_bytes(ev.total_bytes)} ({dl.fmt_bytes(ev.cached_bytes)} already here, "
                  f"{dl.fmt_bytes(ev.missing_bytes)} to fetch)", file=self.stream)
        elif isinstance(ev, dl.FileDone) and not self.tty:
            print(f"  done {ev.path} ({dl.fmt_bytes(ev.size)}{', cached' if ev.cached else ''})", file=self.stream)
        elif isinstance(ev, (dl.DownloadFinished, dl.DownloadFailed)):
            if self.tty:
                print(file=self.stream)
            if isinstance(ev, dl.DownloadFinished):
                rate = ev.fetched_bytes / ev.seconds if ev.seconds > 0 else 0
                print(f"finished in {dl.fmt_eta(ev.seconds)} ({dl.fmt_bytes(rate)}/s): {ev.path}", file=self.stream)
            return
        if (self.tty and now - self.last >= 0.2) or (not self.tty and now - self.last >= 5.0):
            self.last = now
            line = self.state.line()
            print(("\r" + line.ljust(90)) if self.tty else "  " + line, end="" if self.tty else "\n",
                  file=self.stream, flush=True)


def run(args: argparse.Namespace) -> int:
    from spark_tui.core.catalog import checkpoint as ck

    if args.verify_only or (args.model_path and not args.checkpoint):
        if not args.model_path:
            raise UsageError("--verify-only needs --model-path DIR", "spark-tui download --model-path DIR --verify-only")
        rep = ck.verify_checkpoint(args.model_path, expected_format=args.expect_format)
        _print_report(rep, args.json)
        ck.require_complete(rep)
        return 0

    from spark_tui.core.runtime import download as dl

    repo = args.checkpoint or dl.DEFAULT_REPO
    if repo.count("/") != 1:
        raise UsageError(f"{repo!r} is not a Hugging Face repo id (org/name)",
                         f"for example: spark-tui download {dl.DEFAULT_REPO}")
    expected = args.expect_format or dl.KNOWN_FORMATS.get(repo)
    listing = dl.fetch_listing(repo, args.revision)
    if listing.gated and dl.current_token() is None:
        raise dl.DownloadError(f"{repo} is a gated repository ({listing.gated} approval) and no Hugging Face "
                               "token is set", f"accept the terms at https://huggingface.co/{repo}, then "
                               + dl.TOKEN_HINT)
    plan = dl.plan_download(listing, local_dir=args.dir)
    if not plan.selected:
        raise dl.DownloadError(f"{repo} has no files vLLM can load (no *.safetensors / *.json)",
                               "check the repository id")
    dl.check_disk(plan.target, plan.missing_bytes)
    out = dl.download(plan, [_Printer()], max_workers=args.workers)
    rep = ck.verify_checkpoint(out, expected_format=expected)
    _print_report(rep, args.json)
    ck.require_complete(rep)
    if not args.json:
        print(f"serve it with: spark-tui launch --model-path {out}")
    return 0
