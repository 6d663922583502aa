#!/usr/bin/env python3
"""End-to-end test of `punica serve` with the official `openai` client (scripts/requirements-ci.txt).

    scripts/e2e_openai.py .build/debug/punica

Starts the binary on a free loopback port with the bundled model (models/) and a temporary --adapter-root, then:
completions and chat (whole and streamed, base model and adapters), logprobs, echo and prompt logprobs (lm-eval's
loglikelihood request), prompt lists, token-id prompts, n > 1 with a seed, every sampling field, /tokenize and
/detokenize, errors as the client raises them,
loading an adapter copied into the root and unloading it, 100+ simultaneous streams of which some close early (every
one answered or cancelled, and afterwards nothing running and no KV page held), and a SIGTERM during a stream (the
stream finishes, the server exits 0). Exits non-zero on the first failure.
"""
import argparse
import asyncio
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import openai

ROOT = pathlib.Path(__file__).resolve().parent.parent
API_KEY = "sk-e2e"
BASE = "models"  # the bundled model directory's name
ADAPTERS = ["fortunes", "manpages", "python", "scripture"]
STREAMS = 120


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """`punica serve` in a child process, its output in a log file."""

    def __init__(self, binary, adapter_root, log_path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.log = open(log_path, "w")
        command = [binary, "serve", "--port", str(self.port), "--api-key", API_KEY, "--adapter-root", str(adapter_root),
                   "--max-tokens-limit", "256"]
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_until_healthy(self, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                fail(f"punica serve exited with {self.process.returncode} before becoming healthy")
            try:
                if self.request("GET", "/health", timeout=1)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        fail(f"punica serve not healthy after {timeout} s")

    def metrics(self):
        """Each sample of /metrics, keyed by its name and labels: {'punica_requests_running': 0.0, ...}."""
        text = self.request("GET", "/metrics")[1]
        return {match[1]: float(match[2]) for match in re.finditer(r"^([a-z_]+(?:\{[^}]*\})?) (\S+)$", text, re.M)}

    def request(self, method, path, body=None, timeout=60):
        """(status, body text) of a plain HTTP request with the API key."""
        request = urllib.request.Request(self.url + path, method=method, data=body,
                                         headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def post(self, path, body):
        return self.request("POST", path, json.dumps(body).encode())

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
        self.log.close()


def fail(message):
    raise AssertionError(message)


def check(condition, message):
    if not condition:
        fail(message)


def expect_error(error_type, call):
    try:
        call()
    except error_type as error:
        return error
    fail(f"expected {error_type.__name__}")


def test_models(client):
    models = client.models.list().data
    check([model.id for model in models] == [BASE] + ADAPTERS, f"models: {[model.id for model in models]}")
    check(all(getattr(model, "parent", None) == BASE for model in models[1:]), "adapters name the base model as parent")


def greedy_completion(client, model, prompt, max_tokens=8, **options):
    return client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, temperature=0, **options)


def test_completions(client):
    base = greedy_completion(client, BASE, "def main():")
    python = greedy_completion(client, "python", "def main():")
    check(base.object == "text_completion" and base.id.startswith("cmpl-"), f"completion shape: {base}")
    check(base.usage.completion_tokens == 8 and base.choices[0].finish_reason == "length", f"usage: {base.usage}")
    check(python.choices[0].text != base.choices[0].text, "the python adapter changes the greedy continuation")
    check(greedy_completion(client, "python", "def main():").choices[0].text == python.choices[0].text, "greedy is deterministic")

    streamed = client.completions.create(model="python", prompt="def main():", max_tokens=8, temperature=0, stream=True,
                                         stream_options={"include_usage": True})
    chunks = list(streamed)
    text = "".join(chunk.choices[0].text for chunk in chunks if chunk.choices)
    check(text == python.choices[0].text, f"streamed text {text!r} equals the whole one {python.choices[0].text!r}")
    check(chunks[-1].usage.completion_tokens == 8 and not chunks[-1].choices, "the last chunk carries the usage")

    with_logprobs = greedy_completion(client, BASE, "Once upon a time", max_tokens=4, logprobs=2).choices[0].logprobs
    check(len(with_logprobs.tokens) == 4 and len(with_logprobs.top_logprobs) == 4, f"logprobs: {with_logprobs}")
    check(all(logprob <= 0 for logprob in with_logprobs.token_logprobs), "logprobs are <= 0")


def test_completion_extensions(client, server):
    def tokenize(text, **options):
        status, body = server.post("/tokenize", {"model": BASE, "prompt": text, **options})
        check(status == 200, f"/tokenize: {status} {body}")
        return json.loads(body)["tokens"]

    # Echo + logprobs (lm-eval's loglikelihood): the prompt's tokens scored, the first null; scoring a greedy
    # generation's own text gives the logprobs the generation reported for the same tokens.
    prompt = "Once upon a time"
    prompt_ids = tokenize(prompt)
    generated = greedy_completion(client, BASE, prompt, max_tokens=6, logprobs=1).choices[0]
    for max_tokens in (0, 1):
        scored = greedy_completion(client, BASE, prompt + generated.text, max_tokens=max_tokens, logprobs=1, echo=True).choices[0]
        check(scored.text.startswith(prompt + generated.text), f"echo writes the prompt first: {scored.text!r}")
        echoed = scored.logprobs
        count = len(prompt_ids) + len(generated.logprobs.tokens)
        check(len(echoed.tokens) == count + max_tokens and echoed.token_logprobs[0] is None and echoed.top_logprobs[0] is None,
              f"echoed logprobs: {echoed.tokens} {echoed.token_logprobs[:2]}")
        check(echoed.tokens[len(prompt_ids):count] == generated.logprobs.tokens, "the generated text re-tokenizes into the same tokens")
        for mine, theirs in zip(echoed.token_logprobs[len(prompt_ids):count], generated.logprobs.token_logprobs):
            check(abs(mine - theirs) < 1e-3, f"scored {mine} vs generated {theirs}")
        check(echoed.text_offset == sorted(echoed.text_offset) and echoed.text_offset[0] == 0, "text offsets rise from 0")
    # Token-id prompts (lm-eval's default) score the same; vLLM's prompt_logprobs agree with the echoed ones.
    by_ids = client.completions.create(model=BASE, prompt=prompt_ids, max_tokens=0, echo=True, logprobs=1,
                                       extra_body={"prompt_logprobs": 2}).choices[0]
    by_text = greedy_completion(client, BASE, prompt, max_tokens=0, logprobs=1, echo=True).choices[0]
    check(by_ids.text == by_text.text and by_ids.logprobs.token_logprobs == by_text.logprobs.token_logprobs, "ids and text score alike")
    prompt_logprobs = by_ids.model_extra["prompt_logprobs"]
    check(prompt_logprobs[0] is None and len(prompt_logprobs) == len(prompt_ids), f"prompt_logprobs: {prompt_logprobs[:2]}")
    for position, entry in enumerate(prompt_logprobs[1:], start=1):
        mine = entry[str(prompt_ids[position])]
        check(abs(mine["logprob"] - by_ids.logprobs.token_logprobs[position]) < 1e-5 and mine["rank"] >= 1, f"prompt_logprobs {entry}")

    # Prompt lists and token-id lists: independent choices, each what it would be alone.
    alone = [greedy_completion(client, "python", text, max_tokens=4).choices[0].text for text in ("def main():", "import os")]
    batched = greedy_completion(client, "python", ["def main():", "import os"], max_tokens=4).choices
    check([choice.index for choice in batched] == [0, 1] and [choice.text for choice in batched] == alone, f"prompt list: {batched}")
    batched_ids = greedy_completion(client, "python", [tokenize("def main():"), tokenize("import os")], max_tokens=4).choices
    check([choice.text for choice in batched_ids] == alone, "token-id lists")

    # n > 1 with a seed: distinct choices, the same again with the same seed.
    def sampled(seed):
        return [choice.text for choice in client.completions.create(model=BASE, prompt="Once", max_tokens=6, n=3, seed=seed, temperature=1).choices]
    first = sampled(11)
    check(len(first) == 3 and len(set(first)) > 1 and sampled(11) == first, f"n=3 seeded: {first}")
    best = client.completions.create(model=BASE, prompt="Once", max_tokens=6, n=1, best_of=3, seed=11, temperature=1, logprobs=0).choices
    others = client.completions.create(model=BASE, prompt="Once", max_tokens=6, n=3, seed=11, temperature=1, logprobs=0).choices
    ranked = max(others, key=lambda choice: sum(choice.logprobs.token_logprobs))
    check(len(best) == 1 and best[0].text == ranked.text, f"best_of=3 keeps the likeliest of n=3's choices: {best[0].text!r}")

    # Every sampling field, each with an effect that can be checked on the greedy continuation.
    base = greedy_completion(client, BASE, prompt, max_tokens=16).choices[0].text
    first_token = tokenize(base, add_special_tokens=False)[0]
    banned = greedy_completion(client, BASE, prompt, max_tokens=2, logit_bias={str(first_token): -100}).choices[0].text
    check(not banned.startswith(server_detokenize(server, [first_token])), f"logit_bias -100 bans the first token: {banned!r}")
    forced = greedy_completion(client, BASE, prompt, max_tokens=3, logit_bias={"300": 100}).choices[0].text
    check(forced == server_detokenize(server, [300, 300, 300]), f"logit_bias +100 forces a token: {forced!r}")
    stopped = greedy_completion(client, BASE, prompt, max_tokens=16, extra_body={"stop_token_ids": [first_token]}).choices[0]
    check(stopped.finish_reason == "stop" and stopped.text == "", f"stop_token_ids: {stopped}")
    held = greedy_completion(client, BASE, prompt, max_tokens=4, extra_body={"stop_token_ids": [first_token], "min_tokens": 3}).choices[0]
    check(len(tokenize(held.text, add_special_tokens=False)) >= 3, f"min_tokens holds stop tokens back: {held}")
    for field, value in [("frequency_penalty", 2.0), ("presence_penalty", 2.0), ("repetition_penalty", 3.0)]:
        options = {field: value} if field != "repetition_penalty" else {"extra_body": {field: value}}
        changed = greedy_completion(client, BASE, prompt, max_tokens=16, **options).choices[0].text
        check(changed != base, f"{field} changes the greedy continuation")
    same = client.completions.create(model=BASE, prompt=prompt, max_tokens=6, temperature=1, extra_body={"min_p": 1.0}).choices[0].text
    check(same and base.startswith(same), f"min_p 1 keeps only the most likely token: {same!r} {base!r}")
    eos = json.loads((ROOT / BASE / "config.json").read_text())["eos_token_id"]
    shown = greedy_completion(client, BASE, prompt, max_tokens=2, logit_bias={str(eos): 100},
                              extra_body={"ignore_eos": True, "skip_special_tokens": False}).choices[0].text
    hidden = greedy_completion(client, BASE, prompt, max_tokens=2, logit_bias={str(eos): 100}, extra_body={"ignore_eos": True}).choices[0].text
    check(shown == server_detokenize(server, [eos, eos]) and hidden == "", f"skip_special_tokens: {shown!r} {hidden!r}")

    # /detokenize inverts /tokenize; unsupported fields are refused by name.
    check(server_detokenize(server, tokenize("Hello there", add_special_tokens=False)) == "Hello there", "/detokenize")
    for options in [{"suffix": "x"}, {"n": 2, "best_of": 1}, {"extra_body": {"use_beam_search": True}}]:
        error = expect_error(openai.BadRequestError, lambda: greedy_completion(client, BASE, "x", **options))
        check(error.body["param"] in options.get("extra_body", options), f"refused by name: {error.body}")


def server_detokenize(server, tokens):
    status, body = server.post("/detokenize", {"model": BASE, "tokens": tokens})
    check(status == 200, f"/detokenize: {status} {body}")
    return json.loads(body)["prompt"]


def test_chat(client):
    messages = [{"role": "system", "content": "You speak like the King James Bible."}, {"role": "user", "content": "Who made the world?"}]
    whole = client.chat.completions.create(model="scripture", messages=messages, max_tokens=10, temperature=0,
                                           logprobs=True, top_logprobs=2)
    choice = whole.choices[0]
    check(whole.object == "chat.completion" and whole.id.startswith("chatcmpl-"), f"chat shape: {whole}")
    check(choice.message.role == "assistant" and choice.message.content, f"message: {choice.message}")
    check(len(choice.logprobs.content) == 10 and all(len(entry.top_logprobs) == 2 for entry in choice.logprobs.content), "chat logprobs")

    chunks = list(client.chat.completions.create(model="scripture", messages=messages, max_tokens=10, temperature=0, stream=True))
    check(chunks[0].choices[0].delta.role == "assistant", "the first chunk announces the role")
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    check(text == choice.message.content, f"streamed chat {text!r} equals the whole one {choice.message.content!r}")
    check(chunks[-1].choices[0].finish_reason == "length", "the last chunk has the finish reason")

    # Tools, a tool call (arguments as the client sends them: a JSON string) and its result reach the template.
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    round_trip = [{"role": "user", "content": "Weather in Paris?"},
                  {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\": \"Paris\"}"}}]},
                  {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]
    with_tools = client.chat.completions.create(model=BASE, messages=round_trip, tools=tools, max_tokens=4, temperature=0)
    check(with_tools.choices[0].message.content, f"chat with tools: {with_tools}")
    error = expect_error(openai.BadRequestError, lambda: client.chat.completions.create(model=BASE, messages=round_trip, tools=tools, tool_choice="required"))
    check(error.body["param"] == "tool_choice", f"the error names the field: {error.body}")


def test_errors(client, server):
    expect_error(openai.NotFoundError, lambda: greedy_completion(client, "no-such-adapter", "x"))
    error = expect_error(openai.BadRequestError, lambda: client.completions.create(model=BASE, prompt="x", n=17))
    check(error.body["param"] == "n", f"the error names the field: {error.body}")
    expect_error(openai.BadRequestError, lambda: greedy_completion(client, BASE, "x", max_tokens=100_000))
    expect_error(openai.BadRequestError, lambda: client.chat.completions.create(model=BASE, messages=[]))
    wrong_key = openai.OpenAI(base_url=server.url + "/v1", api_key="sk-wrong", max_retries=0)
    expect_error(openai.AuthenticationError, lambda: wrong_key.models.list())
    status, text = server.request("POST", "/v1/completions", b"{not json")
    check(status == 400 and "error" in json.loads(text), f"malformed JSON: {status} {text}")


def test_load_unload(client, server, adapter_root, outside):
    copied = adapter_root / "mine"
    shutil.copytree(ROOT / "models" / "adapters" / "python", copied)
    shutil.copytree(ROOT / "models" / "adapters" / "python", outside / "evil")
    for path in [outside / "evil", adapter_root / ".." / outside.name / "evil"]:
        status, text = server.post("/v1/load_lora_adapter", {"lora_name": "evil", "lora_path": str(path)})
        check(status == 403, f"loading from {path}: {status} {text}")

    status, text = server.post("/v1/load_lora_adapter", {"lora_name": "mine", "lora_path": str(copied)})
    check(status == 200, f"load: {status} {text}")
    check("mine" in [model.id for model in client.models.list().data], "a loaded adapter is listed")
    mine = greedy_completion(client, "mine", "def main():").choices[0].text
    python = greedy_completion(client, "python", "def main():").choices[0].text
    check(mine == python, "a copy of the python adapter generates what the python adapter does")

    status, text = server.post("/v1/unload_lora_adapter", {"lora_name": "mine"})
    check(status == 200, f"unload: {status} {text}")
    expect_error(openai.NotFoundError, lambda: greedy_completion(client, "mine", "x"))


async def one_stream(client, index):
    """A chat or completion stream on a rotating model; every fourth closes after its first chunk. Returns
    'finished' or 'closed'."""
    model = ([BASE] + ADAPTERS)[index % 5]
    if index % 2:
        stream = await client.chat.completions.create(model=model, messages=[{"role": "user", "content": f"Tell me about {index}"}],
                                                      max_tokens=8 + index % 8, stream=True)
    else:
        stream = await client.completions.create(model=model, prompt=f"Story {index}:", max_tokens=8 + index % 8, stream=True)
    finish = None
    async for chunk in stream:
        if index % 4 == 3:
            await stream.close()
            return "closed"
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    check(finish in ("stop", "length"), f"stream {index} ended with {finish}")
    return "finished"


def request_outcomes(server):
    metrics = server.metrics()
    return {outcome: metrics.get(f'punica_requests_total{{outcome="{outcome}"}}', 0) for outcome in ("stop", "length", "cancelled", "error")}


def test_concurrent_streams(server):
    before = request_outcomes(server)

    async def run_all():
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=300)
        async with client:
            return await asyncio.gather(*(one_stream(client, index) for index in range(STREAMS)))

    started = time.monotonic()
    results = asyncio.run(run_all())
    closed = results.count("closed")
    print(f"  {STREAMS} concurrent streams: {results.count('finished')} finished, {closed} closed early, {time.monotonic() - started:.1f} s")

    # Cancellation frees a request within a step: wait until nothing runs and no KV page is held.
    deadline = time.monotonic() + 30
    while True:
        metrics = server.metrics()
        idle = metrics["punica_requests_running"] == 0 and metrics["punica_requests_waiting"] == 0 and metrics["punica_kv_pages_used"] == 0
        if idle or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    check(idle, f"after the streams: running {metrics['punica_requests_running']}, waiting {metrics['punica_requests_waiting']}, "
                f"KV pages used {metrics['punica_kv_pages_used']}")
    after = request_outcomes(server)
    delta = {outcome: after[outcome] - before[outcome] for outcome in after}
    check(delta["error"] == 0 and sum(delta.values()) == STREAMS, f"every stream answered or cancelled: {delta}")
    check(delta["cancelled"] > 0, f"closed streams cancel their requests: {delta}")
    print(f"  outcomes {delta}; afterwards running 0, waiting 0, KV pages used 0 of {metrics['punica_kv_pages_total']:.0f}")


def test_graceful_shutdown(client, server):
    stream = client.completions.create(model=BASE, prompt="Once upon a time", max_tokens=24, temperature=0, stream=True)
    chunks = iter(stream)
    next(chunks)
    server.process.send_signal(signal.SIGTERM)
    rest = list(chunks)
    check(rest and rest[-1].choices[0].finish_reason in ("stop", "length"), "a stream running at SIGTERM finishes")
    try:
        code = server.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        fail("punica serve did not exit within 60 s of SIGTERM")
    check(code == 0, f"punica serve exited with {code} after SIGTERM")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("punica", help="the punica binary, e.g. .build/debug/punica")
    arguments = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="punica-e2e-") as scratch:
        scratch = pathlib.Path(scratch)
        adapter_root, outside = scratch / "adapters", scratch / "outside"
        adapter_root.mkdir()
        outside.mkdir()
        server = Server(os.path.abspath(arguments.punica), adapter_root, scratch / "serve.log")
        try:
            server.wait_until_healthy()
            client = openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=120)
            for name, test in [("models", lambda: test_models(client)), ("completions", lambda: test_completions(client)),
                               ("completion extensions", lambda: test_completion_extensions(client, server)),
                               ("chat", lambda: test_chat(client)), ("errors", lambda: test_errors(client, server)),
                               ("load/unload", lambda: test_load_unload(client, server, adapter_root, outside)),
                               ("concurrent streams", lambda: test_concurrent_streams(server)),
                               ("graceful shutdown", lambda: test_graceful_shutdown(client, server))]:
                test_started = time.monotonic()
                test()
                print(f"ok {name} ({time.monotonic() - test_started:.1f} s)")
        except Exception:
            print(f"--- punica serve log ({server.log_path}) ---\n" + server.log_path.read_text()[-6000:], file=sys.stderr)
            raise
        finally:
            server.stop()
    print(f"e2e: all passed in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
