#!/usr/bin/env python3
"""Peak resident memory of `ecomap serve` reading one large JSON tensor.

Usage: json_body_rss.py PATH/TO/ecomap [VALUES]

Starts `ecomap serve` on an echo tenant (a `Synthetic` model: no libtorch
needed), reads the server's peak RSS (VmHWM) once it is ready, sends one
inference request whose input is VALUES (default 8 M) UINT8 zeros as a JSON
list ("0,": two bytes a value), asks for the output as binary data, and
reads VmHWM again. Prints both, the body's size and the rise per byte of
body. Run it with two builds to compare how the server holds a JSON body.
"""

import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

WORKLOAD = """(tenants: [
    (name: "echo", model: Synthetic(service: "1ms"), arrival: Periodic(rate_hz: 1.0),
     deadline: "60s", capacity: 4),
])"""
RT = '(workers: [(name: "w0")])'
POLICY = '(name: "edf", queue_order: EarliestDeadline)'


def hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def main():
    binary = sys.argv[1]
    values = int(sys.argv[2]) if len(sys.argv) > 2 else 8 * 1024 * 1024
    tmp = tempfile.mkdtemp(prefix="ecomap-rss-")
    for name, text in [("w.ron", WORKLOAD), ("rt.ron", RT), ("p.ron", POLICY)]:
        with open(os.path.join(tmp, name), "w") as f:
            f.write(text)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [binary, "serve", "--workload", os.path.join(tmp, "w.ron"),
         "--rt-config", os.path.join(tmp, "rt.ron"), "--policy", os.path.join(tmp, "p.ron"),
         "--listen", f"127.0.0.1:{port}", "--max-body-mb", "64",
         "--out", os.path.join(tmp, "out")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/v2/health/ready")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if server.poll() is not None or time.time() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.2)
        before = hwm_kib(server.pid)
        body = (
            '{"inputs":[{"name":"input","shape":[%d],"datatype":"UINT8","data":[' % values
            + ",".join(["0"] * values)
            + ']}],"parameters":{"binary_data_output":true}}'
        ).encode()
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        t0 = time.time()
        c.request("POST", "/v2/models/echo/infer", body=body,
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        took = time.time() - t0
        after = hwm_kib(server.pid)
        print(json.dumps({
            "values": values,
            "body_mb": round(len(body) / 2**20, 1),
            "status": r.status,
            "round_trip_s": round(took, 2),
            "peak_rss_mb_ready": round(before / 1024, 1),
            "peak_rss_mb_after": round(after / 1024, 1),
            "rise_per_body_byte": round((after - before) * 1024 / len(body), 2),
        }))
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
