"""Generate the tiny models the real-vLLM tests serve. Runs INSIDE the CPU vLLM venv (it needs torch,
transformers, tokenizers and safetensors, which live there): `<vllm venv>/bin/python gen_tiny_models.py OUT`.

Writes into OUT (deterministic: fixed file list, fixed seeds):
  qwen3-moe/            Qwen3MoeForCausalLM: 2 layers, hidden 128, 8 experts, top-2 (~1M params)
  qwen35-mtp/           Qwen3_5MoeForCausalLM: 1 linear_attention + 1 full_attention layer, plus an MTP head
                        (mtp.* tensors, "mtp_num_hidden_layers": 1); random weights -> ~0% draft acceptance
  qwen35-mtp-accept/    the same with a zero lm_head: every logit equal, greedy always picks one token and the
                        drafter proposes it too -> most drafts accepted (~93% at k=1 on the CPU vLLM 0.32)
Each directory holds its own copy of one byte-level BPE tokenizer (4096 tokens, trained on Python
standard-library sources, ChatML chat template).
"""

from __future__ import annotations

import json
import sys
import sysconfig
from pathlib import Path

VOCAB = 4096
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# fixed list of stdlib modules: the tokenizer depends only on the interpreter's stdlib version
CORPUS_MODULES = [
    "argparse.py", "ast.py", "base64.py", "calendar.py", "collections/__init__.py", "configparser.py",
    "contextlib.py", "csv.py", "dataclasses.py", "datetime.py", "difflib.py", "enum.py", "fractions.py",
    "functools.py", "glob.py", "heapq.py", "inspect.py", "json/decoder.py", "json/encoder.py", "logging/__init__.py",
    "pathlib.py", "pprint.py", "random.py", "shlex.py", "shutil.py", "statistics.py", "string.py",
    "subprocess.py", "tempfile.py", "textwrap.py", "threading.py", "typing.py", "uuid.py", "zipfile.py",
]


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = [str(stdlib / m) for m in CORPUS_MODULES if (stdlib / m).exists()]
    if len(files) < 10:
        raise SystemExit(f"too few stdlib sources found under {stdlib}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train(files, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        unk_token=None, model_max_length=2048,
    )
    fast.chat_template = CHATML
    return fast


def _finish_dir(out: Path, tokenizer, extra_config: dict | None = None, extra_tensors: dict | None = None,
                zero: tuple[str, ...] = ()) -> None:
    from safetensors.torch import load_file, save_file

    tokenizer.save_pretrained(out)
    files = sorted(out.glob("*.safetensors"))
    if len(files) != 1:
        raise SystemExit(f"expected one safetensors file in {out}, got {files}")
    sd = load_file(str(files[0]))
    for name in zero:
        sd[name] = sd[name].new_zeros(sd[name].shape)
    if extra_tensors:
        sd.update(extra_tensors)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(files[0]), metadata={"format": "pt"})
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(extra_config or {})
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def gen_qwen3_moe(out: Path, tokenizer) -> None:
    import torch
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    torch.manual_seed(1234)
    cfg = Qwen3MoeConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, num_experts=8, num_experts_per_tok=2,
        moe_intermediate_size=64, decoder_sparse_step=1, max_position_embeddings=2048,
        tie_word_embeddings=False, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model = Qwen3MoeForCausalLM(cfg).to(torch.bfloat16).eval()
    model.save_pretrained(out)
    _finish_dir(out, tokenizer)


def gen_qwen35_mtp(out: Path, tokenizer, always_accept: bool) -> None:
    import torch
    from transformers import Qwen3_5MoeForCausalLM, Qwen3_5MoeTextConfig

    torch.manual_seed(4321)
    H = 128
    cfg = Qwen3_5MoeTextConfig(
        vocab_size=len(tokenizer), hidden_size=H, num_hidden_layers=2,
        layer_types=["linear_attention", "full_attention"],
        num_attention_heads=4, num_key_value_heads=2, head_dim=64,
        linear_key_head_dim=128, linear_value_head_dim=128,  # the CPU GDN kernel rejects 32
        linear_num_key_heads=2, linear_num_value_heads=4, linear_conv_kernel_dim=4,
        num_experts=8, num_experts_per_tok=2, moe_intermediate_size=64, shared_expert_intermediate_size=64,
        max_position_embeddings=2048, tie_word_embeddings=False,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model = Qwen3_5MoeForCausalLM(cfg).to(torch.bfloat16).eval()
    model.save_pretrained(out)

    from safetensors.torch import load_file

    sd = load_file(str(next(out.glob("*.safetensors"))))
    full = cfg.layer_types.index("full_attention")
    src = f"model.layers.{full}."
    # the MTP block is one full-attention decoder layer (vLLM qwen3_5_mtp.py) + fc [H, 2H] + three norms
    mtp = {"mtp.layers.0." + k[len(src):]: v.clone() for k, v in sd.items() if k.startswith(src)}
    norm = sd["model.norm.weight"]
    g = torch.Generator().manual_seed(99)
    mtp["mtp.fc.weight"] = (torch.randn(H, 2 * H, generator=g) * 0.02).to(torch.bfloat16)
    for n in ("mtp.norm.weight", "mtp.pre_fc_norm_hidden.weight", "mtp.pre_fc_norm_embedding.weight"):
        mtp[n] = norm.clone()
    _finish_dir(out, tokenizer, extra_config={"mtp_num_hidden_layers": 1}, extra_tensors=mtp,
                zero=("lm_head.weight",) if always_accept else ())


def main(argv: list[str]) -> int:
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    gen_qwen3_moe(out / "qwen3-moe", tokenizer)
    gen_qwen35_mtp(out / "qwen35-mtp", tokenizer, always_accept=False)
    gen_qwen35_mtp(out / "qwen35-mtp-accept", tokenizer, always_accept=True)
    print(json.dumps({"out": str(out), "vocab": len(tokenizer)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
