#!/usr/bin/env python3
"""End-to-end test of `punica serve` against malformed and hostile HTTP clients, over raw loopback sockets.

    scripts/e2e_http.py .build/debug/punica

Starts the binary on the bundled model (models/) with short timeouts, then checks, each within a time bound:
a malformed chunked body and a malformed request head get 400 with OpenAI's error body and the connection closed; a
body shorter than its Content-Length and an unterminated chunked body get 408 and are closed after --body-timeout;
headers sent slowly (slowloris) get 408 and are closed after --header-timeout; a silent connection is closed after
--idle-timeout; a body over --max-body-bytes gets 413 and the connection closed; a client that stops reading a
stream is cut off after --send-timeout, its request cancelled (metrics, no KV page left) while others are served; a
stream cut by a TCP reset is counted as cancelled. Then, on fresh servers: a port already in use and an out-of-range
flag fail at once, before the model loads; SIGTERM with a half-sent body exits within --shutdown-timeout; a second
SIGTERM exits at once. Exits non-zero on the first failure.
"""
import argparse
import json
import os
import pathlib
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Short limits so that the suite takes seconds: (flag, seconds).
HEADER_TIMEOUT, BODY_TIMEOUT, IDLE_TIMEOUT, SEND_TIMEOUT, SHUTDOWN_TIMEOUT = 1.0, 1.5, 3.0, 1.5, 2.0
MAX_BODY = 64 * 1024
SLACK = 2.0  # seconds allowed beyond a timeout (a loaded CI machine, the 2 s linger)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fail(message):
    raise AssertionError(message)


def check(condition, message):
    if not condition:
        fail(message)


class Server:
    """`punica serve` in a child process, its output in a log file."""

    def __init__(self, binary, log_path, *flags, port=None):
        self.port = port or free_port()
        self.log_path = log_path
        self.log = open(log_path, "w")
        command = [binary, "serve", "--port", str(self.port), "--max-tokens-limit", "1000", *flags]
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_until_healthy(self, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                fail(f"punica serve exited with {self.process.returncode} before becoming healthy")
            try:
                if request(self.port, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        fail(f"punica serve not healthy after {timeout} s")

    def metrics(self):
        """Each sample of /metrics, keyed by its name and labels."""
        text = request(self.port, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")[2]
        return {match[1]: float(match[2]) for match in re.finditer(r"^([a-z_]+(?:\{[^}]*\})?) (\S+)$", text, re.M)}

    def wait_idle(self, timeout=15, cancelled_at_least=0):
        """Waits until nothing runs or waits, no KV page is held and at least `cancelled_at_least` requests were counted
        as cancelled (a request leaves the engine a moment before its handler counts its outcome); returns the metrics."""
        deadline = time.monotonic() + timeout
        while True:
            metrics = self.metrics()
            if metrics["punica_requests_running"] == 0 and metrics["punica_requests_waiting"] == 0 and metrics["punica_kv_pages_used"] == 0 \
                    and outcome_counts(metrics)["cancelled"] >= cancelled_at_least:
                return metrics
            if time.monotonic() > deadline:
                fail(f"not idle with {cancelled_at_least} cancelled after {timeout} s: {metrics}")
            time.sleep(0.1)

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.log.close()


def connect(port, receive_buffer=None):
    sock = socket.socket()
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


def read_until_closed(sock, timeout):
    """Everything the server sends until it closes, and the seconds that took; fails if it is still open after
    `timeout`."""
    started = time.monotonic()
    data = b""
    while True:
        left = timeout - (time.monotonic() - started)
        if left <= 0:
            fail(f"the server kept the connection open for {timeout} s; it sent {data[:200]!r}")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return data, time.monotonic() - started
        data += chunk


def parse_response(data):
    """(status, headers, body) of the first HTTP response in `data`."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    check(lines[0].startswith("HTTP/1.1 "), f"not an HTTP response: {data[:200]!r}")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    headers = {name.lower(): value for name, value in headers.items()}
    if "content-length" in headers:
        body = body[:int(headers["content-length"])]
    return int(lines[0].split()[1]), headers, body.decode("utf-8", "replace")


def request(port, text, timeout=30):
    """Sends `text` (a whole request that says Connection: close) and parses the answer. (Closing our side would
    cancel a generation: the server takes it for a client that went away.)"""
    with connect(port) as sock:
        sock.sendall(text.encode() if isinstance(text, str) else text)
        data, _ = read_until_closed(sock, timeout)
    return parse_response(data)


def post(path, body):
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"\r\n{body}")


def expect_error(status, body, expected_status, code):
    check(status == expected_status, f"expected {expected_status}, got {status}: {body}")
    error = json.loads(body)["error"]
    check(error["code"] == code and error["message"], f"error body: {error}")
    check("/" not in error["message"] and "Error" not in error["message"], f"the message names no path or Swift type: {error}")


def test_malformed_chunked_body(server):
    with connect(server.port) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n")
        data, _ = read_until_closed(sock, SLACK)
    status, headers, body = parse_response(data)
    expect_error(status, body, 400, "malformed_request")
    check(headers.get("connection") == "close", f"the 400 says Connection: close: {headers}")


def test_malformed_head(server):
    with connect(server.port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Name: 1\r\n\r\n")
        data, _ = read_until_closed(sock, SLACK)
    status, _, body = parse_response(data)
    expect_error(status, body, 400, "malformed_request")


def expect_closed_after(sock, timeout, code):
    """The server answers 408 (`code`) and closes within [timeout - 0.3, timeout + SLACK] seconds from now."""
    started = time.monotonic()
    data, _ = read_until_closed(sock, timeout + SLACK)
    seconds = time.monotonic() - started
    check(seconds >= timeout - 0.3, f"closed after {seconds:.2f} s, before the {timeout} s timeout")
    if code:
        status, _, body = parse_response(data)
        expect_error(status, body, 408, code)
    return seconds


def test_short_content_length(server):
    with connect(server.port) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"model\"")
        seconds = expect_closed_after(sock, BODY_TIMEOUT, "request_timeout")
    print(f"  short Content-Length: 408 and closed after {seconds:.2f} s")


def trickle(sock, pieces, interval):
    """Sends `pieces` one every `interval` seconds from a thread, until the server closes the connection."""
    def run():
        for piece in pieces:
            try:
                sock.sendall(piece)
            except OSError:
                return
            time.sleep(interval)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_unterminated_chunked_body(server):
    with connect(server.port) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        trickle(sock, [b"1\r\n \r\n"] * 100, 0.2)  # a chunk every 0.2 s, never the last one
        seconds = expect_closed_after(sock, BODY_TIMEOUT, "request_timeout")
    print(f"  unterminated chunked body (a chunk every 0.2 s): 408 and closed after {seconds:.2f} s")


def test_slowloris_headers(server):
    with connect(server.port) as sock:
        trickle(sock, [b"GET /health HTTP/1.1\r\n"] + [b"X-Slow: 1\r\n"] * 100, 0.2)
        seconds = expect_closed_after(sock, HEADER_TIMEOUT, "request_timeout")
    print(f"  slowloris headers (a line every 0.2 s): 408 and closed after {seconds:.2f} s")


def test_idle_connection(server):
    with connect(server.port) as sock:
        seconds = expect_closed_after(sock, IDLE_TIMEOUT, None)
    print(f"  silent connection closed after {seconds:.2f} s")


def test_body_too_large_closes(server):
    size = 16 * MAX_BODY
    with connect(server.port) as sock:
        sock.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {size}\r\n\r\n".encode())
        trickle(sock, [b"x" * 4096] * (size // 4096), 0)
        data, seconds = read_until_closed(sock, SLACK + 1)
    status, headers, body = parse_response(data)
    expect_error(status, body, 413, "body_too_large")
    check(headers.get("connection") == "close", f"the 413 says Connection: close: {headers}")
    print(f"  {size} byte body: 413 and closed after {seconds:.2f} s")


def stream_request(max_tokens, logprobs=0):
    body = json.dumps({"model": "models", "prompt": "Once upon a time", "max_tokens": max_tokens, "stream": True,
                       "ignore_eos": True, "logprobs": logprobs})
    return post("/v1/completions", body).encode()


def outcome_counts(metrics):
    """punica_requests_total by outcome: {"stop": 3.0, "cancelled": 1.0, ...}."""
    return {key.split('"')[1]: value for key, value in metrics.items() if key.startswith("punica_requests_total{")}


def outcomes(server):
    metrics = server.metrics()
    return metrics, outcome_counts(metrics)


def test_stalled_reader(server):
    _, before = outcomes(server)
    closed_before = server.metrics()['punica_http_connections_closed_total{reason="send_stalled"}']
    # Small buffers on both sides and big events (20 logprobs a token): a debug build's few tokens a second fill them.
    with connect(server.port, receive_buffer=1024) as sock:
        sock.sendall(stream_request(max_tokens=1000, logprobs=20))
        check(sock.recv(64).startswith(b"HTTP/1.1 200"), "the stream starts")
        # Stop reading. Others are served meanwhile.
        started = time.monotonic()
        status, _, body = request(server.port, post("/v1/completions", json.dumps({"model": "models", "prompt": "Hi", "max_tokens": 4})))
        check(status == 200 and json.loads(body)["usage"]["completion_tokens"] == 4, f"another client is served: {status} {body}")
        deadline = started + 60
        while server.metrics()['punica_http_connections_closed_total{reason="send_stalled"}'] == closed_before:
            check(time.monotonic() < deadline, "the stalled stream was not cut off within 60 s")
            time.sleep(0.1)
        seconds = time.monotonic() - started
    metrics = server.wait_idle(cancelled_at_least=before["cancelled"] + 1)
    after = outcome_counts(metrics)
    check(after["cancelled"] == before["cancelled"] + 1, f"the stalled request is counted as cancelled: {before} → {after}")
    print(f"  a client that stopped reading was cut off after {seconds:.1f} s; request cancelled, no KV page held")


def test_reset_mid_stream(server):
    _, before = outcomes(server)
    sock = connect(server.port)
    sock.sendall(stream_request(max_tokens=500))
    data = b""
    while b"data: " not in data:
        data += sock.recv(4096)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close() sends RST
    sock.close()
    metrics = server.wait_idle(cancelled_at_least=before["cancelled"] + 1)
    after = outcome_counts(metrics)
    check(after["cancelled"] == before["cancelled"] + 1, f"the reset stream is counted as cancelled: {before} → {after}")
    print("  a stream cut by a TCP reset: counted as cancelled, no KV page held")


def test_still_serving(server):
    status, _, body = request(server.port, post("/v1/completions", json.dumps({"model": "models", "prompt": "Hi", "max_tokens": 2})))
    check(status == 200, f"after all that, a plain request is served: {status} {body}")


def test_fails_before_loading(binary, busy_port, scratch):
    for flags, expected in [(["--port", str(busy_port)], "cannot listen"), (["--port", "70001"], "--port"),
                            (["--kv-cache-tokens", "0"], "--kv-cache-tokens"), (["--max-running-requests", "0"], "--max-running-requests"),
                            (["--header-timeout", "0"], "--header-timeout")]:
        started = time.monotonic()
        run = subprocess.run([binary, "serve", *flags], cwd=ROOT, capture_output=True, text=True, timeout=30)
        seconds = time.monotonic() - started
        check(run.returncode != 0 and expected in run.stderr, f"serve {flags}: exit {run.returncode}, {run.stderr!r}")
        check("chat template" not in run.stdout + run.stderr, f"serve {flags} failed only after loading the model")
    print(f"  busy port, --port 70001, --kv-cache-tokens 0, --max-running-requests 0, --header-timeout 0: refused at start")


def half_sent_body(port):
    sock = connect(port)
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"mo")
    time.sleep(0.3)
    return sock


def test_sigterm_with_half_sent_body(binary, scratch):
    server = Server(binary, scratch / "shutdown.log", "--body-timeout", "60", "--shutdown-timeout", str(SHUTDOWN_TIMEOUT))
    try:
        server.wait_until_healthy()
        sock = half_sent_body(server.port)
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        try:
            code = server.process.wait(timeout=SHUTDOWN_TIMEOUT + SLACK + 3)
        except subprocess.TimeoutExpired:
            fail(f"punica serve did not exit within {SHUTDOWN_TIMEOUT + SLACK + 3} s of SIGTERM with a half-sent body")
        seconds = time.monotonic() - started
        check(code == 0, f"exit code {code}")
        check(seconds >= SHUTDOWN_TIMEOUT - 0.3, f"exited after {seconds:.2f} s, before the {SHUTDOWN_TIMEOUT} s deadline")
        read_until_closed(sock, 1)
        sock.close()
        print(f"  SIGTERM with a half-sent body: exited 0 after {seconds:.2f} s (deadline {SHUTDOWN_TIMEOUT} s)")
    finally:
        server.stop()


def test_second_signal_exits_at_once(binary, scratch):
    server = Server(binary, scratch / "second.log", "--body-timeout", "60", "--shutdown-timeout", "60")
    try:
        server.wait_until_healthy()
        sock = half_sent_body(server.port)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        check(server.process.poll() is None, "the first SIGTERM waits for the half-sent request")
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        try:
            code = server.process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            fail("a second SIGTERM did not exit within 3 s")
        check(code == 128 + signal.SIGTERM, f"exit code {code}")
        sock.close()
        print(f"  a second SIGTERM: exited {code} after {time.monotonic() - started:.2f} s")
    finally:
        server.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("punica", help="the punica binary, e.g. .build/debug/punica")
    arguments = parser.parse_args()
    binary = os.path.abspath(arguments.punica)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="punica-e2e-http-") as scratch:
        scratch = pathlib.Path(scratch)
        server = Server(binary, scratch / "serve.log", "--header-timeout", str(HEADER_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT),
                        "--idle-timeout", str(IDLE_TIMEOUT), "--send-timeout", str(SEND_TIMEOUT), "--send-buffer-bytes", "1024",
                        "--max-body-bytes", str(MAX_BODY))
        try:
            server.wait_until_healthy()
            for name, test in [("malformed chunked body", lambda: test_malformed_chunked_body(server)),
                               ("malformed head", lambda: test_malformed_head(server)),
                               ("short Content-Length", lambda: test_short_content_length(server)),
                               ("unterminated chunked body", lambda: test_unterminated_chunked_body(server)),
                               ("slowloris headers", lambda: test_slowloris_headers(server)),
                               ("idle connection", lambda: test_idle_connection(server)),
                               ("413 then closed", lambda: test_body_too_large_closes(server)),
                               ("stalled reader", lambda: test_stalled_reader(server)),
                               ("reset mid-stream", lambda: test_reset_mid_stream(server)),
                               ("still serving", lambda: test_still_serving(server)),
                               ("refused before loading", lambda: test_fails_before_loading(binary, server.port, scratch))]:
                test_started = time.monotonic()
                test()
                print(f"ok {name} ({time.monotonic() - test_started:.1f} s)")
            server.stop()
            for name, test in [("SIGTERM with a half-sent body", test_sigterm_with_half_sent_body),
                               ("second signal", test_second_signal_exits_at_once)]:
                test_started = time.monotonic()
                test(binary, scratch)
                print(f"ok {name} ({time.monotonic() - test_started:.1f} s)")
        except Exception:
            for log in sorted(scratch.glob("*.log")):
                print(f"--- {log.name} ---\n" + log.read_text()[-4000:], file=sys.stderr)
            raise
        finally:
            server.stop()
    print(f"e2e http: all passed in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
