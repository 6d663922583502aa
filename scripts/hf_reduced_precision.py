#!/usr/bin/env python3
"""How far transformers + PEFT itself lands from the committed float32 references when it runs a fixture model in
float16 and bfloat16 (on CUDA if present): the scale that the CUDA backend's parity tolerances are judged against.

    python3 scripts/hf_reduced_precision.py [--write] [MODEL ...]   (names under Tests/Fixtures/models; default: all)

Prints, per model and dtype, the largest absolute logit difference from expected_logits.safetensors over every case
(base and each adapter, every prompt position). --write also stores them in
Tests/Fixtures/models/transformers-reduced-precision.json, where the CUDA parity tests read them: a backend is held
to its base tolerance or to transformers' own error, whichever is larger.
"""
import json
import os
import sys

import torch
import transformers
import peft
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "models")


@torch.no_grad()
def max_error(directory, dtype, device):
    reference = json.load(open(os.path.join(directory, "expected.json")))
    expected = load_file(os.path.join(directory, "expected_logits.safetensors"))
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype, attn_implementation="eager").to(device).eval()
    names = sorted(os.listdir(os.path.join(directory, "adapters")))
    peft = PeftModel.from_pretrained(model, os.path.join(directory, "adapters", names[0]), adapter_name=names[0])
    for name in names[1:]:
        peft.load_adapter(os.path.join(directory, "adapters", name), adapter_name=name)
    peft = peft.to(device=device, dtype=dtype).eval()
    worst = 0.0
    for case in reference["cases"]:
        ids = torch.tensor([reference["prompts"][case["prompt_index"]]], device=device)
        if case["adapter"] is None:
            with peft.disable_adapter():
                logits = peft(input_ids=ids, use_cache=False).logits[0]
        else:
            peft.set_adapter(case["adapter"])
            logits = peft(input_ids=ids, use_cache=False).logits[0]
        difference = (logits.float().cpu() - expected[case["logits_key"]]).abs().max().item()
        worst = max(worst, difference)
    return worst


def main():
    write = "--write" in sys.argv[1:]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    models = [a for a in sys.argv[1:] if a != "--write"] or sorted(os.listdir(FIXTURES))
    measured = {}
    print(f"| model | float16 | bfloat16 |  (max |logit - float32 reference|, transformers on {device})")
    print("|---|---|---|")
    for name in models:
        directory = os.path.join(FIXTURES, name)
        if not os.path.exists(os.path.join(directory, "expected_logits.safetensors")):
            continue
        errors = [max_error(directory, dtype, device) for dtype in (torch.float16, torch.bfloat16)]
        print(f"| {name} | {errors[0]:.3f} | {errors[1]:.3f} |")
        measured[name] = {"float16": round(errors[0], 4), "bfloat16": round(errors[1], 4)}
    if write:
        device_name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
        with open(os.path.join(FIXTURES, "transformers-reduced-precision.json"), "w") as f:
            json.dump({"generator": "scripts/hf_reduced_precision.py", "device": device_name,
                       "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
                       "max_abs_logit_error": measured}, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
