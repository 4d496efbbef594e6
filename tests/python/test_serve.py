#!/usr/bin/env python3
"""`ecomap serve` against real clients: Triton's own HTTP client
(tritonclient[http]) for the Open Inference Protocol, prometheus_client's
OpenMetrics parser for /metrics.

Usage: test_serve.py PATH/TO/ecomap   (scripts/test.sh runs it)

Every request the clients send is tallied by HTTP status and compared, per
model, with the server's /metrics and with the run's final summary: every
request is in exactly one outcome.
"""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter

import numpy as np
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

WORKLOAD = """(tenants: [
    (name: "echo", model: Synthetic(service: "1ms"), arrival: Periodic(rate_hz: 1.0),
     deadline: "2s", capacity: 64),
    (name: "busy", model: Synthetic(service: "20ms"), arrival: Periodic(rate_hz: 1.0),
     deadline: "2s", capacity: 2),
    (name: "squeezenet", model: Vision(SqueezeNet1_1), arrival: Periodic(rate_hz: 1.0),
     deadline: "5s", capacity: 8),
])"""
RT = '(workers: [(name: "w0"), (name: "w1")])'
POLICY = '(name: "edf", queue_order: EarliestDeadline)'

FAILURES = []


def check(cond, what):
    if cond:
        print(f"  ok    {what}")
    else:
        print(f"  FAIL  {what}")
        FAILURES.append(what)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raw_post(url, body, headers):
    """POST raw bytes; (status, parsed JSON error body or None)."""
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, None
    except urllib.error.HTTPError as e:
        payload = e.read()
        try:
            return e.code, json.loads(payload)
        except ValueError:
            return e.code, {"raw": payload[:200]}


def status_of(exc):
    """The HTTP status of a tritonclient exception, as an int."""
    try:
        return int(exc.status())
    except (TypeError, ValueError):
        return None


def main():
    binary = sys.argv[1]
    tmp = tempfile.mkdtemp(prefix="ecomap-serve-")
    for name, text in [("w.ron", WORKLOAD), ("rt.ron", RT), ("p.ron", POLICY)]:
        with open(os.path.join(tmp, name), "w") as f:
            f.write(text)
    port = free_port()
    url = f"127.0.0.1:{port}"
    summary = os.path.join(tmp, "summary.csv")
    server = subprocess.Popen(
        [binary, "serve", "--workload", os.path.join(tmp, "w.ron"),
         "--rt-config", os.path.join(tmp, "rt.ron"), "--policy", os.path.join(tmp, "p.ron"),
         "--listen", url, "--max-body-mb", "1", "--http-workers", "4", "--allow-client-shm",
         "--out", os.path.join(tmp, "out"), "--summary", summary],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sent = Counter()  # (model, status) -> requests
    try:
        client = httpclient.InferenceServerClient(url=url)
        deadline = time.time() + 180
        while True:
            try:
                if client.is_server_live():
                    break
            except Exception:
                pass
            if server.poll() is not None or time.time() > deadline:
                print(server.stderr.read())
                sys.exit("the server did not come up")
            time.sleep(0.2)

        print("health and metadata")
        check(client.is_server_ready(), "server ready")
        check(client.is_model_ready("squeezenet"), "model ready")
        check(not client.is_model_ready("nope"), "unknown model not ready")
        meta = client.get_server_metadata()
        check(meta["name"] == "ecomap" and "binary_tensor_data" in meta["extensions"],
              f"server metadata {meta}")
        m = client.get_model_metadata("squeezenet")
        check(m["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [1, 3, -1, -1]}],
              f"model inputs {m['inputs']}")
        check(m["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [1, 1000]}],
              f"model outputs {m['outputs']}")
        index = client.get_model_repository_index()
        check(sorted(i["name"] for i in index) == ["busy", "echo", "squeezenet"],
              f"repository index {index}")

        print("keep-alive")
        # An idle connection outlives actix-web's default 5 s (the server
        # keeps it 75 s): a second request on the same socket after 6 s
        # is answered.
        live = b"GET /v2/health/live HTTP/1.1\r\nHost: ecomap\r\n\r\n"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(live)
            first = sock.recv(4096)
            time.sleep(6)
            try:
                sock.sendall(live)
                second = sock.recv(4096)
            except OSError as e:
                second = repr(e).encode()
        check(first.startswith(b"HTTP/1.1 200"), f"first answer {first[:40]!r}")
        check(second.startswith(b"HTTP/1.1 200"),
              f"the same connection answers after 6 s idle: {second[:40]!r}")

        print("inference round trips")
        for binary_data in (True, False):
            x = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
            inp = httpclient.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=binary_data)
            out = httpclient.InferRequestedOutput("output", binary_data=binary_data)
            r = client.infer("echo", [inp], outputs=[out])
            sent["echo", 200] += 1
            check(np.array_equal(r.as_numpy("output"), x),
                  f"echo returns its input ({'binary' if binary_data else 'JSON'})")
            params = r.get_response()["parameters"]
            check(params["ecomap_outcome"] == "on_time", "outcome given")
            # The handler's span holds its intake and the runtime's own.
            check(params["ecomap_intake_us"] <= params["ecomap_handler_us"]
                  and params["ecomap_e2e_us"] <= params["ecomap_handler_us"],
                  f"timings nest: {params}")
        # No outputs named: all outputs, binary (the client asks for that).
        img = np.random.default_rng(1).random((1, 3, 224, 224), dtype=np.float32)
        inp = httpclient.InferInput("input", list(img.shape), "FP32")
        inp.set_data_from_numpy(img)
        r = client.infer("squeezenet", [inp])
        sent["squeezenet", 200] += 1
        logits = r.as_numpy("output")
        check(logits is not None and logits.shape == (1, 1000) and np.isfinite(logits).all(),
              "squeezenet binary: logits of the declared shape")
        small = np.zeros((1, 3, 64, 80), dtype=np.float32)
        inp = httpclient.InferInput("input", list(small.shape), "FP32")
        inp.set_data_from_numpy(small, binary_data=False)
        r = client.infer("squeezenet", [inp],
                         outputs=[httpclient.InferRequestedOutput("output", binary_data=False)])
        sent["squeezenet", 200] += 1
        check(r.as_numpy("output").shape == (1, 1000), "squeezenet JSON, another image size")

        print("system shared memory (tritonclient.utils.shared_memory)")
        check("system_shared_memory" in client.get_server_metadata()["extensions"],
              "the extension is listed")
        tag = os.getpid()
        regions = []
        try:
            frame = np.random.default_rng(2).random((1, 3, 224, 224), dtype=np.float32)
            # The frame 64 bytes into its region (a non-zero offset), and an
            # output room larger than the output: the response says how
            # many bytes were written, not the room.
            h_in = shm.create_shared_memory_region("frame", f"/ecomap_test_in_{tag}",
                                                   64 + frame.nbytes)
            regions.append(h_in)
            h_out = shm.create_shared_memory_region("logits", f"/ecomap_test_out_{tag}", 4096)
            regions.append(h_out)
            shm.set_shared_memory_region(h_in, [frame], offset=64)
            client.unregister_system_shared_memory()
            client.register_system_shared_memory("frame", f"/ecomap_test_in_{tag}",
                                                 64 + frame.nbytes)
            client.register_system_shared_memory("logits", f"/ecomap_test_out_{tag}", 4096)
            status = client.get_system_shared_memory_status()
            check(sorted((r["name"], r["byte_size"]) for r in status)
                  == [("frame", 64 + frame.nbytes), ("logits", 4096)], f"status {status}")
            inp = httpclient.InferInput("input", list(frame.shape), "FP32")
            inp.set_shared_memory("frame", frame.nbytes, offset=64)
            out = httpclient.InferRequestedOutput("output")
            out.set_shared_memory("logits", 4096)
            r = client.infer("squeezenet", [inp], outputs=[out])
            sent["squeezenet", 200] += 1
            via_shm = shm.get_contents_as_numpy(h_out, np.float32, [1, 1000]).copy()
            named = r.get_output("output")
            check("data" not in named
                  and named["parameters"]["shared_memory_region"] == "logits"
                  and named["parameters"]["shared_memory_byte_size"] == 4000,
                  f"a shared-memory output is named, not sent, with the bytes written: {named}")
            inp = httpclient.InferInput("input", list(frame.shape), "FP32")
            inp.set_data_from_numpy(frame)
            via_body = client.infer("squeezenet", [inp]).as_numpy("output")
            sent["squeezenet", 200] += 1
            check(np.allclose(via_shm, via_body, rtol=1e-5, atol=1e-5),
                  "the same frame gives the same logits in shared memory as in the body")
            def refused(call, needle, what, model="squeezenet"):
                """`call` is answered 400 with `needle` in its message, and
                counted for `model` (None: a request no model counts)."""
                try:
                    call()
                    check(False, f"{what}: refused")
                except InferenceServerException as e:
                    if model:
                        sent[model, status_of(e)] += 1
                    check(status_of(e) == 400 and needle in e.message(),
                          f"{what}: {status_of(e)} {e.message()}")

            def frame_input():
                inp = httpclient.InferInput("input", list(frame.shape), "FP32")
                inp.set_shared_memory("frame", frame.nbytes, offset=64)
                return inp

            # Refused before a forward pass, and counted: an output placed
            # over its own input, an output region too small for the output.
            over = httpclient.InferRequestedOutput("output")
            over.set_shared_memory("frame", 4000, offset=1000)
            refused(lambda: client.infer("squeezenet", [frame_input()], outputs=[over]),
                    "overlaps the request's input", "output over its input")
            small = httpclient.InferRequestedOutput("output")
            small.set_shared_memory("logits", 100)
            refused(lambda: client.infer("squeezenet", [frame_input()], outputs=[small]),
                    "over the 100 bytes", "too-small output region")
            refused(lambda: client.register_system_shared_memory("evil", "/../../etc/passwd", 10),
                    "POSIX shared-memory name", "key outside /dev/shm", model=None)
            client.unregister_system_shared_memory("frame")
            refused(lambda: client.infer("squeezenet", [frame_input()]),
                    "no shared-memory region 'frame'", "unregistered region")
            client.unregister_system_shared_memory()
            check(client.get_system_shared_memory_status() == [], "all unregistered")
        finally:
            for h in regions:
                shm.destroy_shared_memory_region(h)

        print("bad requests: a clear 4xx, counted")
        cases = [
            ("wrong shape", "squeezenet", np.zeros((1, 3), np.float32), "FP32", 400),
            ("wrong datatype", "squeezenet", np.zeros((1, 3, 8, 8), np.int32), "INT32", 400),
            ("unknown model", "nope", np.zeros((1,), np.float32), "FP32", 404),
        ]
        for what, model, arr, dtype, want in cases:
            inp = httpclient.InferInput("input", list(arr.shape), dtype)
            inp.set_data_from_numpy(arr)
            try:
                client.infer(model, [inp])
                check(False, f"{what}: refused")
            except InferenceServerException as e:
                check(status_of(e) == want and e.message(), f"{what}: {status_of(e)} {e.message()}")
                if model != "nope":
                    sent[model, want] += 1
        base = f"http://{url}/v2/models/echo/infer"
        header = json.dumps({"inputs": [{"name": "input", "shape": [4], "datatype": "FP32",
                                         "parameters": {"binary_data_size": 16}}]}).encode()
        status, body = raw_post(base, header + b"\0" * 8,
                                {"Inference-Header-Content-Length": str(len(header))})
        sent["echo", status] += 1
        check(status == 400 and "runs past" in body["error"], f"truncated binary: {status} {body}")
        status, body = raw_post(base, b"{not json", {})
        sent["echo", status] += 1
        check(status == 400 and "malformed" in body["error"], f"malformed JSON: {status} {body}")
        status, body = raw_post(base, b"x" * (2 << 20), {})
        sent["echo", status] += 1
        check(status == 413, f"oversized body: {status} {body}")
        empty = json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 0, 0],
                                        "datatype": "FP32", "data": []}]}).encode()
        status, body = raw_post(f"http://{url}/v2/models/squeezenet/infer", empty, {})
        sent["squeezenet", status] += 1
        check(status == 400 and "at least 1" in body["error"], f"empty image: {status} {body}")
        status, body = raw_post(base, b"\x1f\x8b compressed", {"Content-Encoding": "gzip"})
        sent["echo", status] += 1
        check(status == 415 and "Content-Encoding" in body["error"], f"gzip body: {status} {body}")
        # A client that goes away mid-upload: its request is counted (rejected).
        host, port = url.split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"POST /v2/models/echo/infer HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                         b'{"inputs": [')
        sent["echo", "gone"] += 1
        time.sleep(0.5)
        one = json.dumps({"inputs": [{"name": "input", "shape": [1], "datatype": "FP32",
                                      "data": [1.0]}]}).encode()
        status, body = raw_post(f"http://{url}/v2/models/echo/versions/2/infer", one, {})
        check(status == 404 and "only version is 1" in body["error"], f"version 2: {status} {body}")
        status, body = raw_post(f"http://{url}/v2/models/echo/versions/1/infer", one, {})
        sent["echo", status] += 1
        check(status == 200, f"version 1: {status} {body}")

        print("many concurrent clients")
        def hammer(model, n, results):
            c = httpclient.InferenceServerClient(url=url)
            for i in range(n):
                x = np.full((4,), i, dtype=np.float32)
                inp = httpclient.InferInput("input", [4], "FP32")
                inp.set_data_from_numpy(x)
                try:
                    r = c.infer(model, [inp])
                    ok = np.array_equal(r.as_numpy("output"), x)
                    results[model, 200 if ok else -1] += 1
                except InferenceServerException as e:
                    results[model, status_of(e)] += 1
        results = Counter()
        threads = [threading.Thread(target=hammer, args=(m, 40, results))
                   for m in ["echo"] * 4 + ["busy"] * 4]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        sent.update(results)
        check(results["echo", -1] == 0 and results["busy", -1] == 0, "every answer is its own input")
        check(results["echo", 200] == 160, f"echo: all 160 served ({dict(results)})")
        check(results["busy", 429] > 0, f"busy (capacity 2) turned some away with 429 ({dict(results)})")
        check(sum(results.values()) == 320, "every concurrent request answered")

        print("/metrics agrees with what the clients saw")
        text = urllib.request.urlopen(f"http://{url}/metrics", timeout=10).read().decode()
        samples = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                samples[s.name, tuple(sorted(s.labels.items()))] = s.value
        for model in ["echo", "busy", "squeezenet"]:
            def got(outcome):
                return samples.get(("ecomap_requests_total",
                                    (("outcome", outcome), ("tenant", model))), -1)
            submitted = samples.get(("ecomap_requests_submitted_total", (("tenant", model),)), -1)
            mine = {k[1]: v for k, v in sent.items() if k[0] == model}
            total = sum(mine.values())
            served = got("on_time") + got("late")
            refused = (mine.get(400, 0) + mine.get(413, 0) + mine.get(415, 0) + mine.get(429, 0)
                       + mine.get("gone", 0))
            check(submitted == total, f"{model}: submitted {submitted} == sent {total}")
            check(served == mine.get(200, 0), f"{model}: served {served} == 200s {mine.get(200, 0)}")
            check(got("rejected") == refused, f"{model}: rejected {got('rejected')} == 4xx {refused}")
            ended = sum(got(o) for o in ["on_time", "late", "expired", "rejected", "shed", "failed"])
            check(ended == submitted, f"{model}: every request in exactly one outcome")
        count = samples.get(("ecomap_end_to_end_seconds_count", (("tenant", "echo"),)), -1)
        check(count == sent["echo", 200], f"echo latency histogram holds {count} samples")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            out, err = server.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            out, err = server.communicate()

    print("the final report")
    check(server.returncode == 0, f"exit status {server.returncode}: {err[-500:]}")
    with open(summary) as f:
        rows = {r["tenant"]: r for r in csv.DictReader(f)}
    for model in ["echo", "busy", "squeezenet"]:
        mine = sum(v for k, v in sent.items() if k[0] == model)
        row = rows.get(model, {})
        check(int(row.get("submitted", -1)) == mine, f"{model}: report submitted {row.get('submitted')} == sent {mine}")
        check(int(row.get("on_time", 0)) + int(row.get("late", 0)) == sent[model, 200],
              f"{model}: report served == 200s")
    print("interval logs (.hlog), read with the Python hdrhistogram package")
    for model in ["echo", "busy", "squeezenet"]:
        path = os.path.join(tmp, "out", f"{model}.hlog")
        reader = HistogramLogReader(path, HdrHistogram(1, 3_600_000_000, 3))
        total, intervals = 0, 0
        while True:
            h = reader.get_next_interval_histogram()
            if h is None:
                break
            total += h.get_total_count()
            intervals += 1
        check(total == sent[model, 200],
              f"{model}: {intervals} intervals hold {total} latencies == {sent[model, 200]} served")
    if FAILURES:
        print(f"\n{len(FAILURES)} check(s) failed")
        sys.exit(1)
    print("\nall serve checks passed")


if __name__ == "__main__":
    main()
