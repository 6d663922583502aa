#!/usr/bin/env python3
"""A Hugging Face Llama directory with random float16 weights and a borrowed tokenizer: the engine and serving
benchmarks' model on a GPU host, where a 13 GB checkpoint cannot be carried; with --adapters N, also N random PEFT
LoRA adapters (all seven projections) in OUT/adapters/adapter-I. Needs torch and safetensors (made on the GPU if
there is one).

    python3 scripts/make_random_model.py OUT --tokenizer DIR [--shape llama-7b] [--adapters N --rank R]
"""
import argparse
import json
import os
import shutil

import torch
from safetensors.torch import save_file

SHAPES = {  # Llama-2-7B and a small shape for trying the script
    "llama-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32),
    "llama-tiny": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4),
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--tokenizer", required=True, help="directory with tokenizer.json (and tokenizer_config.json)")
    parser.add_argument("--shape", default="llama-7b", choices=sorted(SHAPES))
    parser.add_argument("--adapters", type=int, default=0, help="random PEFT adapters to write beside the model")
    parser.add_argument("--rank", type=int, default=16, help="their LoRA rank (alpha = 2 × rank)")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if os.path.exists(os.path.join(args.tokenizer, name)):
            shutil.copy(os.path.join(args.tokenizer, name), args.out)
    with open(os.path.join(args.tokenizer, "tokenizer.json")) as f:
        tokenizer = json.load(f)
    vocab = max(list(tokenizer["model"]["vocab"].values()) + [t["id"] for t in tokenizer.get("added_tokens", [])]) + 1
    shape = SHAPES[args.shape]
    config = dict(architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=vocab, rms_norm_eps=1e-5,
                  max_position_embeddings=4096, rope_theta=10000.0, tie_word_embeddings=False, torch_dtype="float16",
                  bos_token_id=1, eos_token_id=2, **shape)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    generator = torch.Generator(device=device).manual_seed(0)
    hidden, inter = shape["hidden_size"], shape["intermediate_size"]
    head_dim = hidden // shape["num_attention_heads"]
    kv = shape["num_key_value_heads"] * head_dim

    def random(*size):
        return (torch.randn(*size, generator=generator, device=device) * 0.02).half().cpu()

    tensors = {"model.embed_tokens.weight": random(vocab, hidden), "model.norm.weight": torch.ones(hidden).half(),
               "lm_head.weight": random(vocab, hidden)}
    for layer in range(shape["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        tensors.update({
            p + "input_layernorm.weight": torch.ones(hidden).half(), p + "post_attention_layernorm.weight": torch.ones(hidden).half(),
            p + "self_attn.q_proj.weight": random(hidden, hidden), p + "self_attn.k_proj.weight": random(kv, hidden),
            p + "self_attn.v_proj.weight": random(kv, hidden), p + "self_attn.o_proj.weight": random(hidden, hidden),
            p + "mlp.gate_proj.weight": random(inter, hidden), p + "mlp.up_proj.weight": random(inter, hidden),
            p + "mlp.down_proj.weight": random(hidden, inter),
        })
    save_file(tensors, os.path.join(args.out, "model.safetensors"), metadata={"format": "pt"})
    print(f"{args.out}: {args.shape}, vocabulary {vocab}, {sum(t.numel() for t in tensors.values()) / 1e9:.2f}B parameters")

    # PEFT's layout: A [rank, in] (Kaiming-like scale), B [out, rank] (random, not PEFT's zeros, so the delta is real).
    widths = {"self_attn.q_proj": (hidden, hidden), "self_attn.k_proj": (hidden, kv), "self_attn.v_proj": (hidden, kv),
              "self_attn.o_proj": (hidden, hidden), "mlp.gate_proj": (hidden, inter), "mlp.up_proj": (hidden, inter),
              "mlp.down_proj": (inter, hidden)}
    for index in range(args.adapters):
        directory = os.path.join(args.out, "adapters", f"adapter-{index}")
        os.makedirs(directory, exist_ok=True)
        lora = {}
        for layer in range(shape["num_hidden_layers"]):
            for module, (width_in, width_out) in widths.items():
                p = f"base_model.model.model.layers.{layer}.{module}."
                lora[p + "lora_A.weight"] = random(args.rank, width_in) * (1 / (0.02 * width_in ** 0.5))
                lora[p + "lora_B.weight"] = random(width_out, args.rank)
        save_file(lora, os.path.join(directory, "adapter_model.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(directory, "adapter_config.json"), "w") as f:
            json.dump(dict(peft_type="LORA", r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0, bias="none",
                           target_modules=[name.split(".")[1] for name in widths], task_type="CAUSAL_LM"), f, indent=2)
    if args.adapters:
        print(f"{args.out}/adapters: {args.adapters} random rank-{args.rank} adapters")


if __name__ == "__main__":
    main()
