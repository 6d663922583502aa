#!/usr/bin/env python3
"""Punica's CPU backend against llama.cpp (llama-cpp-python), side by side in one invocation.

Both run the same random llama2.c-shaped models (stories15M / stories110M shapes, float32 weights, tied embeddings):
a 128-token prompt, then 64 decode steps, batch 1, without LoRA and with a rank-16 LoRA on all 7 projections; and
Punica's 8 requests on 8 distinct adapters against llama.cpp serving them one after another (its batch-1 LoRA rate).
Punica also runs with bfloat16 weights (its default for bfloat16 checkpoints) against llama.cpp's float32.
The two programs alternate, `--rounds` times, so a machine whose load drifts affects both alike; the medians and
their ratios are printed as a Markdown table.

    pip install llama-cpp-python==0.3.36 gguf==0.19.0   # builds llama.cpp with its native flags (slow on 2 cores)
    swift build -c release
    python3 scripts/bench_cpu_vs_llamacpp.py [--shapes llama-15m llama-110m] [--threads N] [--rounds 2]

Punica's side is `punica bench forward` (random weights of the same shapes); llama.cpp's side loads GGUF files
this script writes to a temporary directory with random weights (a model and a LoRA adapter per shape).
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

SHAPES = {  # hidden, intermediate, layers, heads (llama2.c's stories15M and stories110M; vocab 32000)
    "llama-15m": (288, 768, 6, 6),
    "llama-110m": (768, 2048, 12, 12),
}
VOCAB = 32000
RANK = 16


def write_model(path, shape, rng):
    import gguf
    hidden, inter, layers, heads = shape
    w = gguf.GGUFWriter(path, "llama")
    w.add_context_length(2048)
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(inter)
    w.add_head_count(heads)
    w.add_head_count_kv(heads)
    w.add_rope_dimension_count(hidden // heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(VOCAB)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    # A SentencePiece-style vocabulary: specials, the 256 byte tokens llama.cpp looks up, then filler pieces.
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + [gguf.TokenType.BYTE] * 256
    tokens += [f"t{i}" for i in range(VOCAB - len(tokens))]
    types += [gguf.TokenType.NORMAL] * (VOCAB - len(types))
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * VOCAB)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)

    def tensor(name, rows, columns):  # numpy [out, in] is GGUF's ne = [in, out], as nn.Linear stores it
        bound = 1 / np.sqrt(columns)
        w.add_tensor(name, rng.uniform(-bound, bound, size=(rows, columns)).astype(np.float32))

    tensor("token_embd.weight", VOCAB, hidden)
    w.add_tensor("output_norm.weight", np.ones(hidden, dtype=np.float32))
    for layer in range(layers):
        prefix = f"blk.{layer}."
        w.add_tensor(prefix + "attn_norm.weight", np.ones(hidden, dtype=np.float32))
        w.add_tensor(prefix + "ffn_norm.weight", np.ones(hidden, dtype=np.float32))
        for name, rows, columns in projections(shape):
            tensor(prefix + name + ".weight", rows, columns)
    finish(w)


def projections(shape):
    hidden, inter, _, _ = shape
    return [("attn_q", hidden, hidden), ("attn_k", hidden, hidden), ("attn_v", hidden, hidden),
            ("attn_output", hidden, hidden), ("ffn_gate", inter, hidden), ("ffn_up", inter, hidden),
            ("ffn_down", hidden, inter)]


def write_lora(path, shape, rng):
    import gguf
    w = gguf.GGUFWriter(path, "llama")
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", float(RANK))
    # float16: llama-cpp-python 0.3.36 segfaults on its first decode with a float32 adapter (float16 works).
    for layer in range(shape[2]):
        for name, rows, columns in projections(shape):
            base = f"blk.{layer}.{name}.weight"
            w.add_tensor(base + ".lora_a", (rng.uniform(-1, 1, size=(RANK, columns)) / np.sqrt(columns)).astype(np.float16))
            w.add_tensor(base + ".lora_b", (rng.uniform(-1, 1, size=(rows, RANK)) / np.sqrt(RANK)).astype(np.float16))
    finish(w)


def finish(w):
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def llama_cpp_run(model_path, lora_path, threads, prompt, decode):
    """(prefill tok/s, decode tok/s) of one request: the prompt in one batch, then one token per step."""
    from llama_cpp import Llama
    llm = Llama(model_path=model_path, lora_path=lora_path, n_ctx=prompt + decode + 16, n_batch=prompt,
                n_threads=threads, n_threads_batch=threads, verbose=False)
    rng = np.random.default_rng(0)
    tokens = [int(t) for t in rng.integers(300, VOCAB, size=prompt)]
    results = []
    for _ in range(2):  # the first run warms up; the second is reported
        llm.reset()
        start = time.perf_counter()
        llm.eval(tokens)
        prefill = time.perf_counter() - start
        start = time.perf_counter()
        for step in range(decode):
            llm.eval([int(tokens[step % prompt])])
        results.append((prompt / prefill, decode / (time.perf_counter() - start)))
    del llm
    return results[-1]


def punica_run(binary, shape, threads, prompt, decode, float32):
    """{(batch, LoRA label): (prefill tok/s, decode tok/s, decode step ms / its roofline ms)} from `punica bench forward`
    (the roofline: the step's bytes over the read bandwidth it measured)."""
    env = dict(os.environ, PUNICA_THREADS=str(threads))
    out = subprocess.run([binary, "bench", "forward", "--device", "cpu", "--shape", shape, "--batch", "1", "8",
                          "--rank", str(RANK), "--prompt-tokens", str(prompt), "--decode-tokens", str(decode)]
                         + (["--cpu-float32-weights"] if float32 else []),
                         env=env, check=True, capture_output=True, text=True).stdout
    rows = {}
    for line in out.splitlines():
        m = re.match(r"\|\s*(\d+)\s*\|\s*(\w+)\s*\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|.*\|\s*([\d.]+)×\s*\|$", line)
        if m:
            rows[(int(m[1]), m[2])] = (float(m[3]), float(m[4]), float(m[5]) / float(m[6]))
    backend = next((line for line in out.splitlines() if line.startswith("backend:")), "")
    return rows, backend


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two programs (median reported)")
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--decode", type=int, default=64)
    parser.add_argument("--punica", default=".build/release/punica", help="the punica binary (swift build -c release)")
    args = parser.parse_args()
    import llama_cpp
    print(f"llama-cpp-python {llama_cpp.__version__}; {args.threads} threads; prompt {args.prompt}, decode {args.decode}; "
          f"LoRA rank {RANK} on all 7 projections; median of {args.rounds} alternating rounds")

    table = []
    with tempfile.TemporaryDirectory() as directory:
        for shape_name in args.shapes:
            shape = SHAPES[shape_name]
            rng = np.random.default_rng(1)
            model, lora = os.path.join(directory, shape_name + ".gguf"), os.path.join(directory, shape_name + "-lora.gguf")
            write_model(model, shape, rng)
            write_lora(lora, shape, rng)
            ours, ours_bf16, theirs, theirs_lora = [], [], [], []
            for _ in range(args.rounds):
                rows, backend = punica_run(args.punica, shape_name, args.threads, args.prompt, args.decode, True)
                ours.append(rows)
                ours_bf16.append(punica_run(args.punica, shape_name, args.threads, args.prompt, args.decode, False)[0])
                theirs.append(llama_cpp_run(model, None, args.threads, args.prompt, args.decode))
                theirs_lora.append(llama_cpp_run(model, lora, args.threads, args.prompt, args.decode))
            print(f"{shape_name}: punica {backend}")

            def med(values, index):
                return statistics.median(v[index] for v in values)

            def multiples(mine, key, peer):
                """Decode step time as a multiple of its roofline: punica's at its own bytes, llama.cpp's at punica's
                float32 bytes (the same weights; llama.cpp's float16 KV cache and adapter make it a little less)."""
                ours_step = 1000 * key[0] / med([r[key] for r in mine], 1)
                return (ours_step / med([r[key] for r in mine], 2),
                        1000 / med(peer, 1) / med([r[(1, key[1])] for r in ours], 2))

            for label, key, mine, peer in [("no LoRA", (1, "none"), ours, theirs),
                                           ("LoRA", (1, "distinct"), ours, theirs_lora),
                                           ("no LoRA, punica bf16 weights", (1, "none"), ours_bf16, theirs),
                                           ("LoRA, punica bf16 weights", (1, "distinct"), ours_bf16, theirs_lora),
                                           ("8 requests, 8 adapters", (8, "distinct"), ours, theirs_lora)]:
                p = [r[key] for r in mine]
                serial = "serial: " if key[0] > 1 else ""  # llama.cpp serves 8 adapters one after another
                table.append(f"| {shape_name} | {label} | {med(p, 0):.0f} / {med(p, 1):.1f} | "
                             f"{serial}{med(peer, 0):.0f} / {med(peer, 1):.1f} | "
                             f"{med(p, 0) / med(peer, 0):.2f}× / {med(p, 1) / med(peer, 1):.2f}× | "
                             "{:.2f}× / {:.2f}× |".format(*multiples(mine, key, peer)))
    print("Punica float32 weights unless marked; llama.cpp float32 throughout.")
    print("Last column: a decode step's time over its roofline (its bytes over the read bandwidth punica measured).")
    print("| model | workload | punica prefill / decode tok/s | llama.cpp prefill / decode tok/s | ratio prefill / decode "
          "| decode × roofline punica / llama.cpp |")
    print("|---|---|---|---|---|---|")
    print("\n".join(table))


if __name__ == "__main__":
    sys.exit(main())
