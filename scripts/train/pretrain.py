#!/usr/bin/env python3
"""Pretrains the bundled Llama from scratch on the mixed corpus and saves it in Hugging Face layout.

    python3 scripts/train/pretrain.py --corpus data/corpus --out models

Reads the tokenizer from --out (train_tokenizer.py first) and writes config.json, model.safetensors
(bfloat16, tied embeddings: no lm_head.weight) and generation_config.json beside it, then the held-out
loss per domain to pretrain_results.json.

Every batch holds the same number of rows from each domain (balanced, whatever the domain sizes), each
row a random window of that domain's packed token stream. The whole corpus is tokenized once and kept
on the GPU, so the GPU never waits for data.
"""

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from common import autocast, heldout_loss, load_split, load_tokenizer, pick_device, random_windows, train

# The bundled model: ~12.6M parameters at vocab 8192 (25 MB in bf16). GQA (6 query heads, 2 KV heads)
# and head_dim 64 so the serving engine's kernels see the shapes of real Llama models.
FULL = dict(hidden_size=384, intermediate_size=1024, num_hidden_layers=6, num_attention_heads=6,
            num_key_value_heads=2)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    parser.add_argument("--out", type=Path, default=Path("models"))
    # ~33M tokens: measured on an H100, held-out loss bottoms out about here; the corpus is ~6M tokens and
    # longer runs memorise it (at 3000 steps every domain's held-out loss had risen well above its minimum).
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64, help="rows per step, split evenly over domains")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--max-minutes", type=float, default=None, help="stop early after this long")
    parser.add_argument("--eval-every", type=int, default=250, help="print held-out loss every N steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="tiny model, short run on a corpus slice, for tests")
    args = parser.parse_args()
    slice_bytes = None
    shape = FULL
    if args.tiny:
        shape, slice_bytes = TINY, 200_000
        args.steps, args.batch_size, args.seq_len, args.warmup, args.eval_every = 60, 8, 64, 10, 30

    torch.manual_seed(args.seed)
    device = pick_device()
    tokenizer = load_tokenizer(args.out)
    t0 = time.time()
    train_tokens = load_split(args.corpus, tokenizer, "train", device, slice_bytes)
    valid_tokens = load_split(args.corpus, tokenizer, "valid", device, slice_bytes)
    domains = list(train_tokens)
    print(f"tokenized in {time.time() - t0:.0f}s: " + ", ".join(
        f"{d} {len(train_tokens[d]):,}+{len(valid_tokens[d]):,}" for d in domains) + " tokens (train+valid)")

    config = LlamaConfig(
        vocab_size=tokenizer.get_vocab_size(),
        max_position_embeddings=1024,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.token_to_id("<s>"),
        eos_token_id=tokenizer.token_to_id("</s>"),
        **shape,
    )
    model = LlamaForCausalLM(config).to(device)
    n_params = sum(p.numel() for p in model.parameters())  # tied weights counted once
    print(f"model: {n_params / 1e6:.2f}M parameters on {device}")

    rows_per_domain = max(1, args.batch_size // len(domains))
    generator = torch.Generator(device=device).manual_seed(args.seed)

    def next_batch():
        return torch.cat([random_windows(train_tokens[d], rows_per_domain, args.seq_len, generator) for d in domains])

    def evaluate():
        with autocast(device):
            losses = {d: heldout_loss(model, valid_tokens[d], args.seq_len, max_windows=64) for d in domains}
        print("  held-out (≤64 windows): " + "  ".join(f"{d} {v:.3f}" for d, v in losses.items()), flush=True)

    stats = train(model, list(model.parameters()), next_batch, steps=args.steps, lr=args.lr, warmup=args.warmup,
                  weight_decay=args.weight_decay, device=device, max_minutes=args.max_minutes,
                  eval_every=args.eval_every, evaluate=evaluate)

    # Save in bf16, the dtype the engine serves; the reported losses are those of the saved weights.
    model = model.to(torch.bfloat16)
    model.save_pretrained(args.out)
    model = model.float()
    losses = {d: round(heldout_loss(model, valid_tokens[d], args.seq_len), 4) for d in domains}
    print("held-out loss of the saved model (fp32 compute): " + "  ".join(f"{d} {v:.4f}" for d, v in losses.items()))

    results = {
        "parameters": n_params,
        "config": {**shape, "vocab_size": config.vocab_size, "max_position_embeddings": 1024, "rope_theta": 10000.0,
                   "tie_word_embeddings": True},
        "training": {**stats, "batch_size": rows_per_domain * len(domains), "seq_len": args.seq_len,
                     "lr": args.lr, "warmup": args.warmup, "weight_decay": args.weight_decay,
                     "schedule": "linear warmup, cosine decay to 10%", "optimizer": "AdamW(0.9, 0.95)",
                     "precision": "bf16 autocast, fp32 weights" if device.type == "cuda" else "fp32",
                     "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                     "tiny": args.tiny},
        "train_tokens": {d: len(t) for d, t in train_tokens.items()},
        "heldout_loss": losses,
    }
    (args.out / "pretrain_results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}/model.safetensors and pretrain_results.json")


if __name__ == "__main__":
    main()
