#!/usr/bin/env python3
"""lm-evaluation-harness scores a punica adapter as it scores the same adapter in transformers + PEFT.

    scripts/e2e_lmeval.py .build/debug/punica

Needs scripts/requirements-lmeval.txt (lm_eval, CPU torch, transformers, peft); reads nothing from the Hugging Face
hub. Writes a small multiple-choice task into a temporary directory (a JSON-lines file of phrases from the bundled
model's four training domains: KJV verses, Python standard-library lines, proverbs, man-page lines; each with its true
continuation among three taken from other phrases of its domain), starts `punica serve` on the bundled model, and for
the base model and the `scripture` adapter runs the task twice with lm-eval's command line: `local-completions`
against the server with lm-eval's defaults (token-id prompts, no BOS, the tokenizer read from the model directory),
and `hf` with `peft=` the adapter on CPU torch in float32. Every choice's log-likelihood must agree within TOLERANCE,
and every item's acc, acc_norm and greedy flags must be identical. Exits non-zero on the first difference.
"""
import argparse
import json
import math
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from e2e_openai import API_KEY, ROOT, Server, check

TOLERANCE = 1e-3  # nats, per choice: float32 on both sides, different summation orders
TASK = "punica_continuations"

# (context, true continuation) per training domain; lm-eval joins them with no delimiter.
PHRASES = {
    "scripture": [
        ("In the beginning God created", " the heaven and the earth."),
        ("The LORD is my shepherd;", " I shall not want."),
        ("And God said, Let there be light:", " and there was light."),
        ("Blessed are the meek:", " for they shall inherit the earth."),
        ("Our Father which art in heaven,", " Hallowed be thy name."),
        ("Yea, though I walk through the valley of the shadow of death,", " I will fear no evil."),
        ("To every thing there is a season,", " and a time to every purpose under the heaven."),
        ("For God so loved the world, that he gave", " his only begotten Son."),
    ],
    "python": [
        ("    def __init__(self", ", *args, **kwargs):"),
        ("if __name__ ==", " '__main__':"),
        ("        for i in", " range(len(self)):"),
        ("            raise ValueError(", "\"invalid literal\")"),
        ("        with open(filename,", " 'rb') as f:"),
        ("        self.assertEqual(", "result, expected)"),
        ("from collections import", " namedtuple"),
        ("        return", " NotImplemented"),
    ],
    "fortunes": [
        ("A journey of a thousand miles begins with", " a single step."),
        ("Never put off till tomorrow what you can", " do today."),
        ("If at first you don't succeed,", " try, try again."),
        ("The early bird", " gets the worm."),
        ("All that glitters is", " not gold."),
        ("An apple a day", " keeps the doctor away."),
        ("Where there's a will,", " there's a way."),
        ("Honesty is the best", " policy."),
    ],
    "manpages": [
        ("RETURN VALUE\n       On success, zero is returned.  On error, -1 is returned, and", " errno is set to indicate the error."),
        ("SYNOPSIS\n       #include", " <unistd.h>"),
        ("The malloc() function allocates size bytes and returns a pointer to", " the allocated memory."),
        ("SEE ALSO\n       open(2),", " close(2), read(2)"),
        ("NAME\n       ls -", " list directory contents"),
        ("This page is part of release 6.03 of the Linux", " man-pages project."),
        ("EXIT STATUS\n       The", " exit status is 0 on success."),
        ("The file descriptor fd must be", " open for reading."),
    ],
}


def write_task(directory):
    """The task YAML and its data: each phrase's true continuation at position index % 4 among three others."""
    items = []
    for phrases in PHRASES.values():
        for index, (context, _) in enumerate(phrases):
            others = [phrases[(index + step) % len(phrases)][1] for step in (1, 2, 3)]
            answer = len(items) % 4
            choices = others[:answer] + [phrases[index][1]] + others[answer:]
            items.append({"context": context, "choices": choices, "answer": answer})
    data = directory / "items.jsonl"
    data.write_text("".join(json.dumps(item) + "\n" for item in items))
    (directory / f"{TASK}.yaml").write_text("\n".join([
        f"task: {TASK}",
        "dataset_path: json",
        f"dataset_kwargs: {{data_files: {{test: {json.dumps(str(data))}}}}}",
        "test_split: test",
        "output_type: multiple_choice",
        "doc_to_text: context",
        "doc_to_choice: choices",
        "doc_to_target: answer",
        'target_delimiter: ""',
        "metric_list: [{metric: acc}, {metric: acc_norm}]",
    ]) + "\n")
    return len(items)


def run_lm_eval(task_dir, output_dir, model, model_args, *options):
    """lm-eval's command line on the task: its logged samples by doc_id, the task's scores and lm-eval's log."""
    environment = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                       OPENAI_API_KEY=API_KEY, TOKENIZERS_PARALLELISM="false")
    command = [sys.executable, "-m", "lm_eval", "run", "--model", model,
               "--model_args", ",".join(f"{key}={value}" for key, value in model_args.items()),
               "--tasks", TASK, "--include_path", str(task_dir), "--output_path", str(output_dir), "--log_samples", *options]
    started = time.monotonic()
    result = subprocess.run(command, env=environment, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        print(result.stdout[-4000:] + result.stderr[-8000:], file=sys.stderr)
        check(False, f"lm_eval --model {model} exited with {result.returncode}")
    [samples_path] = output_dir.rglob(f"samples_{TASK}_*.jsonl")
    [results_path] = output_dir.rglob("results_*.json")
    samples = {sample["doc_id"]: sample for sample in map(json.loads, samples_path.read_text().splitlines())}
    scores = json.loads(results_path.read_text())["results"][TASK]
    print(f"  lm_eval --model {model} ({', '.join(model_args)}): acc {scores['acc,none']:.4f}, acc_norm {scores['acc_norm,none']:.4f} "
          f"({time.monotonic() - started:.0f} s)")
    return samples, scores, result.stdout + result.stderr


def choice_scores(sample):
    """[(log-likelihood, is greedy)] of each choice, as lm-eval logged them."""
    return [(float(loglikelihood), str(greedy) == "True") for [loglikelihood, greedy] in sample["filtered_resps"]]


def compare(name, served, reference, count):
    """The largest |Δ log-likelihood| between two runs, after checking every item agrees."""
    check(sorted(served) == sorted(reference) == list(range(count)), f"{name}: items {sorted(served)} vs {sorted(reference)}")
    largest = 0.0
    for doc_id in range(count):
        mine, theirs = served[doc_id], reference[doc_id]
        check(mine["arguments"] == theirs["arguments"], f"{name} item {doc_id}: lm-eval built different requests")
        for choice, ((ll, greedy), (ll_ref, greedy_ref)) in enumerate(zip(choice_scores(mine), choice_scores(theirs), strict=True)):
            check(math.isfinite(ll) and ll < 0, f"{name} item {doc_id} choice {choice}: log-likelihood {ll}")
            check(abs(ll - ll_ref) <= TOLERANCE, f"{name} item {doc_id} choice {choice}: punica {ll} vs transformers {ll_ref}")
            check(greedy == greedy_ref, f"{name} item {doc_id} choice {choice}: is_greedy {greedy} vs {greedy_ref}")
            largest = max(largest, abs(ll - ll_ref))
        for metric in ("acc", "acc_norm"):
            check(mine[metric] == theirs[metric], f"{name} item {doc_id}: {metric} {mine[metric]} vs {theirs[metric]}")
    return largest


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("punica", help="the punica binary, e.g. .build/debug/punica")
    arguments = parser.parse_args()
    started = time.monotonic()
    model_dir = ROOT / "models"
    with tempfile.TemporaryDirectory(prefix="punica-lmeval-") as scratch:
        scratch = pathlib.Path(scratch)
        (scratch / "adapters").mkdir()
        count = write_task(scratch)
        server = Server(os.path.abspath(arguments.punica), scratch / "adapters", scratch / "serve.log")
        try:
            server.wait_until_healthy()
            for name, peft in [("models", None), ("scripture", model_dir / "adapters" / "scripture")]:
                print(f"{name} ({count} items, 4 choices each):")
                # lm-eval's API models send no BOS by default (add_bos_token=False); its hf model would follow the
                # tokenizer, which adds one, so it is told the same to score the same tokens.
                reference, reference_scores, _ = run_lm_eval(scratch, scratch / f"{name}-hf", "hf", {
                    "pretrained": model_dir, "dtype": "float32", "add_bos_token": False, **({"peft": peft} if peft else {})},
                    "--device", "cpu")
                # lm-eval tokenizes with the model directory's tokenizer, or (when /tokenizer_info answers: here the
                # key lets it in) through the server's /tokenize.
                for client, backend, options in [("local tokenizer", "huggingface", {"tokenizer": model_dir}),
                                                 ("server's tokenizer", "remote", {"auth_token": API_KEY})]:
                    served, served_scores, log = run_lm_eval(scratch, scratch / f"{name}-punica-{backend}", "local-completions",
                                                             {"model": name, "base_url": f"{server.url}/v1/completions", **options})
                    check(f"Using tokenizer {backend}" in log, f"{name}, {client}: lm-eval did not pick the {backend} tokenizer")
                    largest = compare(f"{name}, {client}", served, reference, count)
                    for metric in ("acc,none", "acc_norm,none"):
                        check(served_scores[metric] == reference_scores[metric], f"{name}, {client}: {metric} {served_scores} vs {reference_scores}")
                    print(f"ok {name}, {client}: acc and acc_norm identical, max |Δ log-likelihood| {largest:.2e} over {4 * count} choices")
        except Exception:
            print(f"--- punica serve log ({server.log_path}) ---\n" + server.log_path.read_text()[-6000:], file=sys.stderr)
            raise
        finally:
            server.stop()
    print(f"e2e lm-eval: all passed in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
