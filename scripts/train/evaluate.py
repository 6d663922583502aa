#!/usr/bin/env python3
"""Measures the saved base model and adapters, and records reference outputs for the Swift engine.

    python3 scripts/train/evaluate.py --corpus data/corpus --model models

Everything is computed in float32 from the files on disk (the bf16 base checkpoint upcast, the fp32
adapters), which is what the engine loads. Writes to the model folder:

  eval_results.json       held-out loss of the base and of each adapter on every domain (the matrix),
                          and a few sampled continuations for the model card
  reference_outputs.json  greedy continuations of fixed prompts under the base and every adapter:
                          prompt ids, output ids and text, and each step's top-1/top-2 logit margin,
                          so a test can tell a real mismatch from a near-tie flipped by rounding

Exits non-zero when an adapter does not lower the loss on its own domain.
"""

import argparse
import contextlib
import json
import sys
from pathlib import Path

import torch
from peft import PeftModel

from common import heldout_loss, load_split, load_tokenizer, pick_device
from corpus import corpus_domains
from train_adapters import load_base

GREEDY_TOKENS = 32
SAMPLE_TOKENS = 48
SAMPLE_TEMPERATURE = 0.8

# (domain, prompt). Multi-line prompts exercise newlines and runs of spaces in the tokenizer; the
# neutral prompts show each adapter pulling the same start towards its own style.
REFERENCE_PROMPTS = [
    ("scripture", "And God said,"),
    ("scripture", "Exodus 3\n\n1 Now Moses"),
    ("python", "def __init__(self"),
    ("python", "import os\nimport sys\n\n\nclass "),
    ("fortunes", "A man who"),
    ("fortunes", "Life is"),
    ("manpages", "NAME\n       open"),
    ("manpages", "DESCRIPTION\n       The"),
    ("neutral", "The"),
    ("neutral", "When"),
]
SAMPLE_PROMPTS = ["The", "When"]


@torch.no_grad()
def continue_prompt(model, prompt_ids: list[int], steps: int, device, temperature: float = 0.0,
                    generator: torch.Generator | None = None) -> tuple[list[int], list[float]]:
    """Greedy (temperature 0) or sampled continuation; recomputes the whole sequence every step, with no
    KV cache and no EOS stop, so it depends on nothing but the forward pass. Returns ids and margins."""
    ids, margins = list(prompt_ids), []
    for _ in range(steps):
        logits = model(input_ids=torch.tensor([ids], device=device)).logits[0, -1].float()
        top2 = logits.topk(2).values
        margins.append(round((top2[0] - top2[1]).item(), 4))
        if temperature == 0.0:
            next_id = int(logits.argmax())
        else:
            probs = torch.softmax(logits / temperature, dim=-1)
            next_id = int(torch.multinomial(probs.cpu(), 1, generator=generator))
        ids.append(next_id)
    return ids[len(prompt_ids):], margins


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    parser.add_argument("--model", type=Path, default=Path("models"))
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--tiny", action="store_true", help="evaluate on a corpus slice, for tests")
    args = parser.parse_args()
    slice_bytes = None
    if args.tiny:
        slice_bytes, args.seq_len = 50_000, 64

    device = pick_device()
    tokenizer = load_tokenizer(args.model)
    valid_tokens = load_split(args.corpus, tokenizer, "valid", device, slice_bytes)
    domains = corpus_domains(args.corpus)
    adapters = sorted(p.name for p in (args.model / "adapters").iterdir() if (p / "adapter_config.json").exists())
    adapters = [d for d in domains if d in adapters] + [a for a in adapters if a not in domains]

    # One PEFT model holding every adapter; set_adapter switches, disable_adapter gives the base.
    model = PeftModel.from_pretrained(load_base(args.model, device), args.model / "adapters" / adapters[0],
                                      adapter_name=adapters[0])
    for name in adapters[1:]:
        model.load_adapter(args.model / "adapters" / name, adapter_name=name)
    model.eval()

    def using(name: str | None):
        if name is None:
            return model.disable_adapter()
        model.set_adapter(name)
        return contextlib.nullcontext()

    variants = [None] + adapters  # None is the base model
    matrix = {}
    for name in variants:
        with using(name):
            matrix[name or "base"] = {d: round(heldout_loss(model, valid_tokens[d], args.seq_len), 4) for d in domains}
        print(f"{name or 'base':10s} " + "  ".join(f"{d} {v:.4f}" for d, v in matrix[name or "base"].items()))

    cases, samples = [], []
    for domain, prompt in REFERENCE_PROMPTS:
        prompt_ids = tokenizer.encode(prompt).ids
        for name in variants:
            with using(name):
                output_ids, margins = continue_prompt(model, prompt_ids, GREEDY_TOKENS, device)
            cases.append({"domain": domain, "adapter": name, "prompt": prompt, "prompt_ids": prompt_ids,
                          "output_ids": output_ids, "output_text": tokenizer.decode(output_ids, skip_special_tokens=False),
                          "margins": margins})
    for prompt in SAMPLE_PROMPTS:
        for seed, name in enumerate(variants):
            with using(name):
                generator = torch.Generator().manual_seed(seed)
                output_ids, _ = continue_prompt(model, tokenizer.encode(prompt).ids, SAMPLE_TOKENS, device,
                                                SAMPLE_TEMPERATURE, generator)
            # Special tokens kept: a sample often ends one document and starts another (</s><s>).
            samples.append({"adapter": name, "prompt": prompt,
                            "text": tokenizer.decode(output_ids, skip_special_tokens=False)})

    reference = {
        "description": "Greedy continuations: float32 compute on the stored weights (bf16 base upcast, fp32 "
                       "LoRA), argmax of the last position's logits, whole sequence recomputed each step, no "
                       "EOS stop. prompt_ids include <s>. adapter null = base model. margins[i] = top-1 minus "
                       "top-2 logit at step i.",
        "max_new_tokens": GREEDY_TOKENS,
        "cases": cases,
    }
    (args.model / "reference_outputs.json").write_text(json.dumps(reference, indent=1, ensure_ascii=False) + "\n")
    results = {
        "heldout_loss": matrix,
        "seq_len": args.seq_len,
        "valid_tokens": {d: len(t) for d, t in valid_tokens.items()},
        "samples": {"temperature": SAMPLE_TEMPERATURE, "max_new_tokens": SAMPLE_TOKENS, "outputs": samples},
    }
    (args.model / "eval_results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {args.model}/eval_results.json and reference_outputs.json ({len(cases)} greedy cases)")

    failures = [a for a in adapters if a in domains and matrix[a][a] >= matrix["base"][a]]
    if failures:
        sys.exit(f"adapters that do not lower their own domain's loss: {', '.join(failures)}")


if __name__ == "__main__":
    main()
