#!/usr/bin/env python3
"""Serving benchmark for `punica serve` (or any OpenAI-compatible server with vLLM's adapter routes).

Requests arrive as a Poisson process at each --rate; each names an adapter drawn by --popularity over --adapters
names (Punica's workloads: distinct, uniform, skewed, identical; plus zipf with --zipf-alpha), with prompt and output
lengths drawn from --prompt-tokens and --output-tokens. Every request streams (`ignore_eos`, so outputs have exactly
the drawn length). The client is the standard library's (asyncio streams, server-sent events), so it runs on hosts
without the openai package, such as the GPU host. Adapters are registered first through /v1/load_lora_adapter as
bench-0, bench-1, … from the directories under --adapter-dir in turn, so the server must run with that directory as an
--adapter-root.

    punica serve --adapter-root models/adapters &
    scripts/bench_serve.py --rate 1 4 --popularity distinct skewed --requests 64

Prints a markdown table: per rate and popularity, completed requests, throughput (requests/s, generated tokens/s)
and the p50/p99 of time to first token and inter-token latency. Lengths are in tokens of the bundled model (a prompt
of n tokens is n common words).
"""
import argparse
import asyncio
import json
import math
import pathlib
import random
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
WORDS = ("the of and to in is was he that it for on with as his they be at one have this from by not but what all were "
         "when we there can an your which their said if do will each about how up out them then she many some so these "
         "would other into has more her two like him see time could no make than first been its who now people my made "
         "over did down only way find use may water long little very after words called just where most know").split()


class LengthDistribution:
    """`N` (constant), `uniform:LO:HI` or `exponential:MEAN` (at least 1)."""

    def __init__(self, spec):
        self.spec = spec
        kind, _, parameters = spec.partition(":")
        values = [float(value) for value in parameters.split(":")] if parameters else []
        if kind.isdigit() and not values:
            self.draw = lambda rng: int(kind)
        elif kind == "uniform" and len(values) == 2:
            self.draw = lambda rng: rng.randint(int(values[0]), int(values[1]))
        elif kind == "exponential" and len(values) == 1:
            self.draw = lambda rng: max(1, round(rng.expovariate(1 / values[0])))
        else:
            raise argparse.ArgumentTypeError(f"{spec}: expected N, uniform:LO:HI or exponential:MEAN")

    def __str__(self):
        return self.spec


def adapter_choices(popularity, requests, adapters, alpha, rng):
    """The adapter index of each request."""
    if popularity == "identical":
        return [0] * requests
    if popularity == "distinct":
        return [index % adapters for index in range(requests)]
    if popularity == "uniform":
        count = min(adapters, math.ceil(math.sqrt(requests)))
        weights = [1] * count
    elif popularity == "skewed":
        weights = [1.5 ** -index for index in range(adapters)]
    else:  # zipf
        weights = [(index + 1) ** -alpha for index in range(adapters)]
    return rng.choices(range(len(weights)), weights=weights, k=requests)


def percentile(values, fraction):
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


def register_adapters(url, api_key, count, adapter_dir):
    directories = sorted(path for path in pathlib.Path(adapter_dir).resolve().iterdir() if (path / "adapter_config.json").exists())
    for index in range(count):
        body = json.dumps({"lora_name": f"bench-{index}", "lora_path": str(directories[index % len(directories)])}).encode()
        request = urllib.request.Request(url + "/v1/load_lora_adapter", data=body, method="POST",
                                         headers={"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"})
        try:
            urllib.request.urlopen(request).read()
        except urllib.error.HTTPError as error:
            text = error.read().decode()
            if "already loaded" not in text:
                raise SystemExit(f"loading bench-{index}: {error.code} {text}")


async def stream_completion(url, api_key, body):
    """POSTs a streaming /v1/completions request; yields each server-sent event's JSON."""
    target = urllib.parse.urlsplit(url)
    reader, writer = await asyncio.open_connection(target.hostname, target.port or 80)
    payload = json.dumps(body).encode()
    writer.write((f"POST /v1/completions HTTP/1.1\r\nHost: {target.netloc}\r\nAuthorization: Bearer {api_key}\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n").encode() + payload)
    await writer.drain()
    status = await reader.readline()
    if b" 200 " not in status:
        raise SystemExit(f"{body['model']}: {status.decode().strip()} {(await reader.read()).decode()[:500]}")
    while (await reader.readline()).strip():  # headers
        pass
    try:
        # Chunked or not, each event is one "data: ..." line (the server writes an event per chunk; size lines are skipped).
        while line := await reader.readline():
            if line.startswith(b"data: "):
                data = line[6:].strip()
                if data == b"[DONE]":
                    return
                yield json.loads(data)
    finally:
        writer.close()


async def one_request(arguments, model, prompt, output_tokens, delay, started):
    """Waits for its arrival, streams, and returns (arrival, token times, generated tokens)."""
    await asyncio.sleep(max(0.0, started + delay - time.perf_counter()))
    arrival = time.perf_counter()
    body = dict(model=model, prompt=prompt, max_tokens=output_tokens, temperature=1, stream=True,
                stream_options={"include_usage": True}, ignore_eos=True)
    token_times, generated = [], 0
    async for chunk in stream_completion(arguments.url, arguments.api_key, body):
        if chunk.get("choices") and chunk["choices"][0].get("text"):
            token_times.append(time.perf_counter())
        if chunk.get("usage"):
            generated = chunk["usage"]["completion_tokens"]
    return arrival, token_times, generated


async def run(arguments, rate, popularity, rng):
    choices = adapter_choices(popularity, arguments.requests, arguments.adapters, arguments.zipf_alpha, rng)
    arrivals, clock = [], 0.0
    for _ in range(arguments.requests):
        clock += rng.expovariate(rate)
        arrivals.append(clock)
    prompts = [" ".join(rng.choice(WORDS) for _ in range(arguments.prompt_tokens.draw(rng))) for _ in range(arguments.requests)]
    outputs = [arguments.output_tokens.draw(rng) for _ in range(arguments.requests)]
    started = time.perf_counter()
    results = await asyncio.gather(*(one_request(arguments, f"bench-{choice}", prompt, output, arrival, started)
                                     for choice, prompt, output, arrival in zip(choices, prompts, outputs, arrivals)))
    elapsed = time.perf_counter() - started
    time_to_first_token = [times[0] - arrival for arrival, times, _ in results if times]
    inter_token = [later - earlier for _, times, _ in results for earlier, later in zip(times, times[1:])]
    generated = sum(tokens for _, _, tokens in results)
    return (f"| {rate:g} | {popularity} | {len(set(choices))} | {len(results)} | {len(results) / elapsed:.2f} | {generated / elapsed:.1f} | "
            f"{1000 * percentile(time_to_first_token, 0.5):.0f} | {1000 * percentile(time_to_first_token, 0.99):.0f} | "
            f"{1000 * percentile(inter_token, 0.5):.0f} | {1000 * percentile(inter_token, 0.99):.0f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the server (default: %(default)s)")
    parser.add_argument("--api-key", default="none", help="sent as Authorization: Bearer (default: %(default)s)")
    parser.add_argument("--rate", type=float, nargs="+", default=[1.0], help="mean arrivals per second (default: %(default)s)")
    parser.add_argument("--popularity", nargs="+", default=["skewed"], choices=["distinct", "uniform", "skewed", "identical", "zipf"],
                        help="how requests spread over adapters (default: %(default)s)")
    parser.add_argument("--zipf-alpha", type=float, default=1.0, help="power-law exponent for zipf (default: %(default)s)")
    parser.add_argument("--adapters", type=int, default=32, help="adapter names to register and draw from (default: %(default)s)")
    parser.add_argument("--adapter-dir", default=str(ROOT / "models" / "adapters"), help="PEFT adapters to register them from")
    parser.add_argument("--requests", type=int, default=64, help="requests per rate and popularity (default: %(default)s)")
    parser.add_argument("--prompt-tokens", type=LengthDistribution, default=LengthDistribution("uniform:16:64"),
                        help="N, uniform:LO:HI or exponential:MEAN (default: %(default)s)")
    parser.add_argument("--output-tokens", type=LengthDistribution, default=LengthDistribution("uniform:16:64"),
                        help="N, uniform:LO:HI or exponential:MEAN (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="for arrivals, adapters, prompts and lengths (default: %(default)s)")
    arguments = parser.parse_args()

    register_adapters(arguments.url, arguments.api_key, arguments.adapters, arguments.adapter_dir)
    print(f"{arguments.requests} requests per row; prompt tokens {arguments.prompt_tokens}, output tokens {arguments.output_tokens}; "
          f"{arguments.adapters} adapters; seed {arguments.seed}\n")
    print("| rate (req/s) | popularity | adapters used | requests | req/s | generated tok/s | TTFT p50 (ms) | TTFT p99 (ms) | ITL p50 (ms) | ITL p99 (ms) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for rate in arguments.rate:
        for popularity in arguments.popularity:
            print(asyncio.run(run(arguments, rate, popularity, random.Random(f"{arguments.seed}-{rate}-{popularity}"))), flush=True)


if __name__ == "__main__":
    main()
