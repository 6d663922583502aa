#!/usr/bin/env python3
"""Fine-tunes one PEFT LoRA adapter per corpus domain on the pretrained model.

    python3 scripts/train/train_adapters.py --corpus data/corpus --model models

Writes standard PEFT folders <model>/adapters/<domain>/{adapter_config.json, adapter_model.safetensors}
and the training statistics to <model>/adapter_results.json. evaluate.py then measures them.

The adapters differ on purpose, so the serving engine meets every shape it must handle: ranks 8 to 64,
scales (alpha/r) 2 and 1, and three sets of target modules — all seven projections, attention only
(q/k/v/o, where k and v are narrower than q under GQA) and MLP only (gate/up/down).
"""

import argparse
import json
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaForCausalLM

from common import load_split, load_tokenizer, pick_device, random_windows, train

ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
MLP = ["gate_proj", "up_proj", "down_proj"]

# domain -> LoRA shape. A domain without an entry gets DEFAULT_ADAPTER.
ADAPTERS = {
    "scripture": dict(r=8, lora_alpha=16, target_modules=ATTENTION + MLP),
    "python": dict(r=16, lora_alpha=32, target_modules=ATTENTION),
    "fortunes": dict(r=32, lora_alpha=32, target_modules=ATTENTION + MLP),
    "manpages": dict(r=64, lora_alpha=64, target_modules=MLP),
}
DEFAULT_ADAPTER = dict(r=16, lora_alpha=32, target_modules=ATTENTION + MLP)


def load_base(model_dir: Path, device: torch.device) -> LlamaForCausalLM:
    # The checkpoint is bf16; train and evaluate on fp32 copies of exactly those weights.
    return LlamaForCausalLM.from_pretrained(model_dir).float().to(device)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    parser.add_argument("--model", type=Path, default=Path("models"))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="few steps on a corpus slice, for tests")
    args = parser.parse_args()
    slice_bytes = None
    if args.tiny:
        slice_bytes = 200_000
        args.steps, args.batch_size, args.seq_len, args.warmup = 20, 4, 64, 4

    device = pick_device()
    train_tokens = load_split(args.corpus, load_tokenizer(args.model), "train", device, slice_bytes)
    results = {}
    for domain, tokens in train_tokens.items():
        spec = ADAPTERS.get(domain, DEFAULT_ADAPTER)
        print(f"== adapter {domain}: r={spec['r']} alpha={spec['lora_alpha']} targets={','.join(spec['target_modules'])}")
        torch.manual_seed(args.seed)
        config = LoraConfig(**spec, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
        model = get_peft_model(load_base(args.model, device), config)
        trainable = [p for p in model.parameters() if p.requires_grad]
        generator = torch.Generator(device=device).manual_seed(args.seed)
        stats = train(model, trainable, lambda: random_windows(tokens, args.batch_size, args.seq_len, generator),
                      steps=args.steps, lr=args.lr, warmup=args.warmup, weight_decay=0.0, device=device)

        out = args.model / "adapters" / domain
        model.save_pretrained(out)
        (out / "README.md").unlink(missing_ok=True)  # PEFT's empty model-card template
        results[domain] = {**spec, "trainable_parameters": sum(p.numel() for p in trainable), **stats,
                           "batch_size": args.batch_size, "seq_len": args.seq_len, "lr": args.lr,
                           "lora_dropout": 0.0, "bytes": (out / "adapter_model.safetensors").stat().st_size}
    (args.model / "adapter_results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {len(results)} adapters under {args.model}/adapters and adapter_results.json")


if __name__ == "__main__":
    main()
