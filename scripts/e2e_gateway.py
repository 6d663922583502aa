#!/usr/bin/env python3
"""The inference gateway's contract, end to end: two `punica serve` replicas on loopback, read as the gateway reads them.

    scripts/e2e_gateway.py .build/debug/punica

Replica A serves the adapters python and fortunes with a running batch of one request; replica B serves scripture and
manpages and resolves unknown `model` names from its --adapter-root (--lora-filesystem-resolver). Each /metrics is
parsed with prometheus_client's text parser and read as the endpoint picker's core metrics extractor reads vLLM
(llm-d router, pkg/epp/framework/plugins/datalayer/extractor/metrics): the model-server-protocol gauges, their types,
labels and ranges. Under load (streams left open) the adapters of running requests are in `running_lora_adapters`,
those queued in `waiting_lora_adapters`, and leave them when their requests end; the picker's LoRA-affinity scorer,
applied to what the two replicas expose, sends each adapter to the replica running it. Then the rollout calls:
`base_model_name` checked, a repeated load idempotent, an adapter resolved from the root on its first request. No
router runs here (it needs Kubernetes); this checks the data it routes by. Exits non-zero on the first failure.
"""
import argparse
import http.client
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from prometheus_client.parser import text_string_to_metric_families

ROOT = pathlib.Path(__file__).resolve().parent.parent
BASE = "models"  # the bundled model directory's name
ADAPTERS = ROOT / "models" / "adapters"
MSP_GAUGES = ["vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc",
              "vllm:cache_config_info", "vllm:lora_requests_info"]


def fail(message):
    raise AssertionError(message)


def check(condition, message):
    if not condition:
        fail(message)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Replica:
    """`punica serve` in a child process, its output in a log file."""

    def __init__(self, binary, name, log_dir, adapters, *flags):
        self.name, self.port = name, free_port()
        self.log_path = log_dir / f"{name}.log"
        self.log = open(self.log_path, "w")
        adapter_flags = [flag for adapter in adapters for flag in ("--adapter", f"{adapter}={ADAPTERS / adapter}")]
        command = [binary, "serve", "--port", str(self.port), "--max-tokens-limit", "1000", *adapter_flags, *flags]
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_until_healthy(self, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            check(self.process.poll() is None, f"{self.name} exited with {self.process.returncode} before becoming healthy")
            try:
                if self.request("GET", "/health", timeout=1)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        fail(f"{self.name} not healthy after {timeout} s")

    def request(self, method, path, body=None, timeout=60):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=None if body is None else json.dumps(body), headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            return response.status, response.read().decode()
        finally:
            connection.close()

    def open_stream(self, model, max_tokens=1000):
        """A completion stream left open; closing it cancels its request."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        body = {"model": model, "prompt": "Once upon a time", "max_tokens": max_tokens, "ignore_eos": True, "stream": True}
        connection.request("POST", "/v1/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
        return connection

    def endpoint(self):
        """What the endpoint picker's extractor takes from /metrics, after checking the contract it relies on."""
        status, text = self.request("GET", "/metrics")
        check(status == 200, f"{self.name} /metrics: {status}")
        families = {family.name: family for family in text_string_to_metric_families(text)}
        for name in MSP_GAUGES:
            check(name in families and families[name].type == "gauge", f"{self.name}: {name} is a gauge")
            check(len(families[name].samples) == 1, f"{self.name}: one series of {name}: {families[name].samples}")
        sample = {name: families[name].samples[0] for name in MSP_GAUGES}
        for name in MSP_GAUGES[:4]:
            check(sample[name].labels == {"model_name": BASE}, f"{self.name}: {name} labels {sample[name].labels}")
        running, waiting = sample["vllm:num_requests_running"].value, sample["vllm:num_requests_waiting"].value
        usage = sample["vllm:kv_cache_usage_perc"].value
        check(running >= 0 and waiting >= 0 and running == int(running) and waiting == int(waiting), f"{self.name}: counts {running} {waiting}")
        check(0 <= usage <= 1 and sample["vllm:gpu_cache_usage_perc"].value == usage, f"{self.name}: KV usage {usage}")
        cache = sample["vllm:cache_config_info"]
        check(set(cache.labels) == {"block_size", "cache_dtype", "num_gpu_blocks"} and cache.value == 1
              and cache.labels["cache_dtype"] in {"float32", "float16", "bfloat16"}, f"{self.name}: cache_config_info {cache}")
        lora = sample["vllm:lora_requests_info"]
        check(set(lora.labels) == {"max_lora", "running_lora_adapters", "waiting_lora_adapters"}, f"{self.name}: LoRA labels {lora.labels}")
        check(abs(lora.value - time.time()) < 60, f"{self.name}: lora_requests_info is the Unix time of the update: {lora.value}")
        names = lambda label: {name.strip() for name in lora.labels[label].split(",") if name.strip()}
        residency = {s.labels["adapter"]: s.labels["state"] for s in families["punica_adapter_residency"].samples if s.value == 1}
        return {"running": int(running), "waiting": int(waiting), "kv_usage": usage, "block_size": int(cache.labels["block_size"]),
                "num_gpu_blocks": int(cache.labels["num_gpu_blocks"]), "max_lora": int(lora.labels["max_lora"]),
                "active": names("running_lora_adapters"), "waiting_models": names("waiting_lora_adapters"), "residency": residency}

    def wait_for(self, condition, what, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            endpoint = self.endpoint()
            if condition(endpoint):
                return endpoint
            check(time.monotonic() < deadline, f"{self.name}: {what} within {timeout} s; last {endpoint}")
            time.sleep(0.1)

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
        self.log.close()


def lora_affinity(endpoint, target):
    """The llm-d router's lora-affinity-scorer (pkg/epp/framework/plugins/scheduling/scorer/loraaffinity)."""
    if target in endpoint["active"]:
        return 1.0
    if len(endpoint["active"]) + len(endpoint["waiting_models"]) < endpoint["max_lora"]:
        return 0.8
    return 0.6 if target in endpoint["waiting_models"] else 0.0


def pick(replicas, target):
    """The replica with the best LoRA affinity, then the shortest queue (the queue scorer's order)."""
    endpoints = {replica.name: replica.endpoint() for replica in replicas}
    return max(endpoints, key=lambda name: (lora_affinity(endpoints[name], target), -endpoints[name]["waiting"]))


def test_idle(a, b):
    for replica, adapters in [(a, {"python", "fortunes"}), (b, {"scripture", "manpages"})]:
        endpoint = replica.endpoint()
        check(endpoint["running"] == endpoint["waiting"] == 0 and endpoint["kv_usage"] == 0, f"{replica.name} idle: {endpoint}")
        check(endpoint["active"] == endpoint["waiting_models"] == set(), f"{replica.name}: no adapter runs: {endpoint}")
        check(endpoint["block_size"] == 16 and endpoint["num_gpu_blocks"] > 0 and endpoint["max_lora"] > 0, f"{replica.name}: {endpoint}")
        check(endpoint["residency"] == {name: "disk" for name in adapters}, f"{replica.name} residency: {endpoint['residency']}")


def test_under_load(a, b):
    # A runs one request at a time: the first python stream runs, the rest queue behind it.
    streams = [a.open_stream("python") for _ in range(3)] + [a.open_stream("fortunes"), b.open_stream("scripture")]
    try:
        endpoint = a.wait_for(lambda e: e["running"] == 1 and e["waiting"] == 3, "one request running, three waiting")
        check(endpoint["active"] == {"python"} and endpoint["waiting_models"] == {"python", "fortunes"}, f"A under load: {endpoint}")
        check(endpoint["kv_usage"] > 0 and endpoint["residency"]["python"] == "slot", f"A under load: {endpoint}")
        b.wait_for(lambda e: e["active"] == {"scripture"}, "scripture running")
        # An adapter only queued scores as "room to load it" on both (0.8): the shorter queue, B, wins.
        for target, expected in [("python", "A"), ("scripture", "B"), ("fortunes", "B")]:
            check(pick([a, b], target) == expected, f"the picker sends {target} to {expected}")
        print(f"  under load: A runs {endpoint['active']}, queues {endpoint['waiting_models']}, KV {endpoint['kv_usage']:.4f}; "
              "the picker sends python to A, scripture to B, fortunes (queued on A, room on both) to B's shorter queue")

        for stream in streams[:3]:
            stream.close()  # cancels the python requests; fortunes runs next
        endpoint = a.wait_for(lambda e: e["active"] == {"fortunes"} and e["waiting_models"] == set(), "python leaves, fortunes runs")
    finally:
        for stream in streams:
            stream.close()
    for replica in (a, b):
        endpoint = replica.wait_for(lambda e: e["running"] == e["waiting"] == 0 and e["kv_usage"] == 0 and not e["active"], "idle again")
    check(a.endpoint()["residency"]["python"] in ("slot", "host"), "python stays resident after its requests")


def test_rollout(a, b, adapter_root):
    load = {"lora_name": "python-copy", "lora_path": str(adapter_root / "lazy")}
    status, text = b.request("POST", "/v1/load_lora_adapter", {**load, "base_model_name": "llama-70b"})
    check(status == 400 and "llama-70b" in text, f"a load for another base model: {status} {text}")
    for _ in range(2):  # the second is idempotent
        status, text = b.request("POST", "/v1/load_lora_adapter", {**load, "base_model_name": BASE})
        check(status == 200, f"load with base_model_name: {status} {text}")

    status, text = a.request("POST", "/v1/completions", {"model": "lazy", "prompt": "x", "max_tokens": 2})
    check(status == 404, f"A does not resolve adapters: {status} {text}")
    status, text = b.request("POST", "/v1/completions", {"model": "lazy", "prompt": "x", "max_tokens": 2})
    check(status == 200, f"B resolves `lazy` from its adapter root: {status} {text}")
    models = {model["id"]: model for model in json.loads(b.request("GET", "/v1/models")[1])["data"]}
    check(models["lazy"]["parent"] == BASE and models["python-copy"]["parent"] == BASE and models[BASE]["parent"] is None, f"{models}")
    check(models["lazy"]["root"].endswith("/lazy"), f"root of a resolved adapter: {models['lazy']}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("punica", help="the punica binary, e.g. .build/debug/punica")
    arguments = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="punica-gateway-") as scratch:
        scratch = pathlib.Path(scratch)
        adapter_root = scratch / "adapters"
        shutil.copytree(ADAPTERS / "python", adapter_root / "lazy")
        binary = os.path.abspath(arguments.punica)
        a = Replica(binary, "A", scratch, ["python", "fortunes"], "--max-running-requests", "1")
        b = Replica(binary, "B", scratch, ["scripture", "manpages"], "--adapter-root", str(adapter_root), "--lora-filesystem-resolver")
        try:
            a.wait_until_healthy()
            b.wait_until_healthy()
            for name, test in [("idle", lambda: test_idle(a, b)), ("under load", lambda: test_under_load(a, b)),
                               ("rollout", lambda: test_rollout(a, b, adapter_root))]:
                test_started = time.monotonic()
                test()
                print(f"ok {name} ({time.monotonic() - test_started:.1f} s)")
        except Exception:
            for replica in (a, b):
                print(f"--- {replica.name} log ---\n" + replica.log_path.read_text()[-4000:], file=sys.stderr)
            raise
        finally:
            a.stop()
            b.stop()
    print(f"e2e gateway: all passed in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
