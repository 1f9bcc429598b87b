#!/usr/bin/env python3
"""Upload benchmark of api-service: thumbnailing cost and memory.

Starts one api-service (release build, AUTH_MODE=header, AUTO_MIGRATE, its own scratch database
and upload directory), creates a group and a message, then measures in one run:

1. 1 MiB JPEG uploads per second and latency percentiles with thumbnailing (image/jpeg), and the
   same bytes uploaded as application/pdf (the same route, storage and insert, without any image
   decoding): the difference is the thumbnail's cost;
2. the peak resident memory (VmHWM of the process) during 16 concurrent ~8 MiB uploads, first
   as application/pdf (no decoding), then the same bytes as image/jpeg (the increase is what
   thumbnailing adds), with the latency of /health meanwhile.

The photos are random noise (incompressible, so JPEG-encoded at the wanted size), made with
ffmpeg. Needs python3, ffmpeg, psql and the services of scripts/ensure-services.sh.

    cargo build --release -p api-service
    python3 bench/uploads.py [--bin target/release/api-service] [--seconds 20] [--concurrency 8]
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid

BOUNDARY = "retich-bench-upload-boundary"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def noise_jpeg(path, width, height, quality):
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
         f"nullsrc=s={width}x{height},geq=lum='random(1)*255':cb=128:cr=128",
         "-frames:v", "1", "-q:v", str(quality), path],
        check=True,
    )
    with open(path, "rb") as f:
        return f.read()


def form(filename, mime, data):
    head = (
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
        f"Content-Type: {mime}\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def request(base, method, path, user, body=None, content_type="application/json"):
    req = urllib.request.Request(base + path, data=body, method=method)
    req.add_header("X-User-ID", user)
    if body is not None:
        req.add_header("Content-Type", content_type)
    with urllib.request.urlopen(req, timeout=120) as resp:
        return resp.status, resp.read()


def vm_hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmHWM:", "VmRSS:")):
                yield line.split(":")[0], int(line.split()[1])


def mem(pid):
    return dict(vm_hwm_kib(pid))


def load(base, user, message, body, seconds, concurrency):
    """Uploads `body` from `concurrency` threads for `seconds`; returns (count, latencies in s)."""
    deadline = time.monotonic() + seconds
    latencies, errors = [], []
    lock = threading.Lock()

    def worker():
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                status, _ = request(base, "POST", f"/messages/{message}/attachments", user, body,
                                    f"multipart/form-data; boundary={BOUNDARY}")
            except Exception as e:  # noqa: BLE001 - reported below
                with lock:
                    errors.append(repr(e))
                continue
            took = time.monotonic() - started
            with lock:
                (latencies if status == 201 else errors).append(took if status == 201 else status)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    if errors:
        print(f"  {len(errors)} failed uploads, e.g. {errors[0]}", file=sys.stderr)
    return len(latencies) / elapsed, sorted(latencies)


def burst(base, user, message, body, pid, mime):
    """16 concurrent uploads of `body`, /health timed meanwhile; prints the peak RSS after."""
    statuses = []

    def upload():
        statuses.append(request(base, "POST", f"/messages/{message}/attachments", user, body,
                                f"multipart/form-data; boundary={BOUNDARY}")[0])

    threads = [threading.Thread(target=upload) for _ in range(16)]
    started = time.monotonic()
    for t in threads:
        t.start()
    health = []
    while any(t.is_alive() for t in threads):
        t0 = time.monotonic()
        urllib.request.urlopen(base + "/health", timeout=30).read()
        health.append(time.monotonic() - t0)
        time.sleep(0.05)
    for t in threads:
        t.join()
    took = time.monotonic() - started
    m = mem(pid)
    print(f"16 concurrent {len(body) / 1048576:.1f} MiB uploads as {mime:16}: "
          f"{statuses.count(201)}/16 ok in {took:.2f} s; peak RSS (VmHWM) so far "
          f"{m['VmHWM'] / 1024:.0f} MiB; /health meanwhile: max {max(health) * 1000:.1f} ms "
          f"over {len(health)} requests")


def pct(sorted_values, p):
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p / 100))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/api-service")
    ap.add_argument("--admin-url", default="postgres://postgres:postgres@127.0.0.1:5432/postgres?sslmode=disable")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="retich-upload-bench-")
    db = f"retich_upload_bench_{uuid.uuid4().hex[:8]}"
    base_url = args.admin_url.split("?")[0]
    db_url = base_url.rsplit("/", 1)[0] + "/" + db + "?sslmode=disable"
    port = free_port()
    env = dict(os.environ, PORT=str(port), AUTH_MODE="header", AUTO_MIGRATE="true",
               DATABASE_URL=db_url, UPLOAD_DIR=os.path.join(work, "uploads"),
               NATS_SUBJECT_PREFIX=f"bench{db[-8:]}", RUST_LOG="warn")
    proc = subprocess.Popen([args.bin], env=env, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/health", timeout=1)
                break
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.2)
        owner = str(uuid.uuid4())
        _, body = request(base, "POST", "/conversations", owner,
                          json.dumps({"type": "group", "name": "bench", "participant_ids": [str(uuid.uuid4())]}).encode())
        conv = json.loads(body)["data"]["id"]
        _, body = request(base, "POST", f"/conversations/{conv}/messages", owner,
                          json.dumps({"type": "image", "content": "photos"}).encode())
        message = json.loads(body)["data"]["id"]

        one = noise_jpeg(os.path.join(work, "one.jpg"), 1520, 1100, 3)
        eight = noise_jpeg(os.path.join(work, "eight.jpg"), 4200, 3080, 3)
        print(f"1 MiB photo: {len(one)} bytes (1520x1100); big photo: {len(eight)} bytes (4200x3080)")

        # Memory first, on a fresh process: the same 16 concurrent uploads as PDF (no decoding),
        # then as JPEG; VmHWM only grows, so the second step shows what decoding adds.
        print(f"RSS after start: {mem(proc.pid)['VmRSS'] / 1024:.0f} MiB")
        for mime, name in [("application/pdf", "big.pdf"), ("image/jpeg", "big.jpg")]:
            data = eight if mime == "image/jpeg" else b"%PDF-" + eight[5:]
            burst(base, owner, message, form(name, mime, data), proc.pid, mime)

        # Warm-up, then both variants in the same run.
        load(base, owner, message, form("w.jpg", "image/jpeg", one), 2, args.concurrency)
        results = {}
        for label, mime, name in [("jpeg (thumbnail)", "image/jpeg", "a.jpg"),
                                  ("same bytes as pdf (no thumbnail)", "application/pdf", "a.pdf")]:
            data = one if mime == "image/jpeg" else b"%PDF-" + one[5:]
            rate, lat = load(base, owner, message, form(name, mime, data), args.seconds, args.concurrency)
            results[label] = (rate, lat)
            print(f"{label:34} {rate:7.1f} uploads/s  p50 {pct(lat, 50) * 1000:6.1f} ms  "
                  f"p99 {pct(lat, 99) * 1000:6.1f} ms  ({len(lat)} uploads, {args.concurrency} concurrent)")

    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
        subprocess.run(["psql", args.admin_url, "-qc", f"drop database if exists {db}"],
                       check=False, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
