#!/usr/bin/env python3
"""Fine-tunes a PEFT LoRA adapter on your own text against the bundled model, then prints the punica
command that serves it.

    python3 scripts/finetune_lora.py my_text.txt
    python3 scripts/finetune_lora.py my_text.txt --name mystyle --rank 32 --targets mlp --steps 400

Uses the GPU when there is one, else the CPU; the CPU defaults finish in a couple of minutes on two
cores. The text file is read as one document (or as several, in the corpus format of
scripts/train/corpus.py); its last 5% of tokens are held out to show the loss before and after.
The adapter is a standard PEFT folder (adapter_config.json + adapter_model.safetensors), by default
out/adapters/<name>. Needs torch, transformers, peft and tokenizers (scripts/requirements-train.txt).
"""

import argparse
import re
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "train"))

import torch  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402

from common import encode_documents, heldout_loss, load_tokenizer, pick_device, random_windows, train  # noqa: E402
from corpus import read_documents  # noqa: E402
from train_adapters import ATTENTION, MLP, load_base  # noqa: E402

TARGET_PRESETS = {"all": ATTENTION + MLP, "attention": ATTENTION, "mlp": MLP}
# (steps, batch rows, sequence length): about 2 minutes on 2 CPU cores, about 15 seconds on an H100.
DEFAULTS = {"cpu": (80, 8, 128), "cuda": (300, 32, 512)}
# A short text seen many times is memorised and the adapter gets worse on new text: cap the default run
# at this many passes over the training tokens.
MAX_EPOCHS = 3


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("text", type=Path, help="a UTF-8 text file in the style to learn")
    parser.add_argument("--model", type=Path, default=Path("models"), help="base model folder (default models)")
    parser.add_argument("--name", help="adapter name (default: the text file's name)")
    parser.add_argument("--out", type=Path, help="adapter folder (default out/adapters/<name>)")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--alpha", type=float, default=32)
    parser.add_argument("--targets", default="all",
                        help="all | attention | mlp | a comma-separated list such as q_proj,v_proj (default all)")
    parser.add_argument("--steps", type=int, help=f"default 80 on CPU, 300 on GPU, at most {MAX_EPOCHS} passes over the text")
    parser.add_argument("--batch-size", type=int, help="default 8 on CPU, 32 on GPU")
    parser.add_argument("--seq-len", type=int, help="default 128 on CPU, 512 on GPU")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-minutes", type=float, help="stop early after this long")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    device = pick_device()
    steps, batch_size, seq_len = DEFAULTS[device.type]
    batch_size, seq_len = args.batch_size or batch_size, args.seq_len or seq_len
    name = args.name or re.sub(r"[^A-Za-z0-9_-]+", "-", args.text.stem).strip("-") or "adapter"
    out = args.out or Path("out/adapters") / name
    targets = TARGET_PRESETS.get(args.targets) or [t.strip() for t in args.targets.split(",") if t.strip()]
    if not (args.model / "config.json").exists():
        sys.exit(f"no model at {args.model}: pass --model with the folder holding config.json and tokenizer.json")

    tokens = encode_documents(load_tokenizer(args.model), read_documents(args.text)).to(device)
    if len(tokens) < 2 * (seq_len + 1):
        sys.exit(f"{args.text} is too short: {len(tokens)} tokens; need at least {2 * (seq_len + 1)} "
                 f"(or pass a smaller --seq-len)")
    held = max(seq_len + 1, len(tokens) // 20)
    train_tokens, valid_tokens = tokens[:-held], tokens[-held:]
    steps = args.steps or max(10, min(steps, MAX_EPOCHS * len(train_tokens) // (batch_size * seq_len)))
    print(f"{args.text}: {len(train_tokens):,} training tokens, {len(valid_tokens):,} held out; device {device}")

    torch.manual_seed(args.seed)
    model = get_peft_model(load_base(args.model, device), LoraConfig(
        r=args.rank, lora_alpha=args.alpha, target_modules=targets, lora_dropout=0.0, bias="none",
        task_type="CAUSAL_LM"))
    trainable = [p for p in model.parameters() if p.requires_grad]
    print(f"LoRA r={args.rank} alpha={args.alpha:g} on {','.join(targets)}: {sum(p.numel() for p in trainable):,} "
          f"parameters; {steps} steps x {batch_size} x {seq_len} tokens")
    before = heldout_loss(model, valid_tokens, seq_len)

    generator = torch.Generator(device=device).manual_seed(args.seed)
    start = time.time()
    train(model, trainable, lambda: random_windows(train_tokens, batch_size, seq_len, generator),
          steps=steps, lr=args.lr, warmup=max(1, steps // 10), weight_decay=0.0, device=device,
          max_minutes=args.max_minutes, log_every=max(1, steps // 10))
    after = heldout_loss(model, valid_tokens, seq_len)
    print(f"held-out loss {before:.4f} -> {after:.4f} ({time.time() - start:.0f}s)")
    if after > before:
        print("the held-out loss rose: the adapter memorised the text; try fewer --steps or a lower --lr")

    model.save_pretrained(out)
    (out / "README.md").unlink(missing_ok=True)  # PEFT's empty model-card template
    print(f"saved the adapter to {out}")

    prompt = " ".join(args.text.read_text(encoding="utf-8").split()[:4]) or "The"
    model_flag = "" if args.model == Path("models") else f"--model {shlex.quote(str(args.model))} "
    print("\nserve it with:\n  swift run -c release punica generate "
          f"{model_flag}--adapter {name}={shlex.quote(str(out))} --use-adapter {name} --prompt {shlex.quote(prompt)}")


if __name__ == "__main__":
    main()
