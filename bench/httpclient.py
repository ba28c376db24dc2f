#!/usr/bin/env python3
"""HTTP/1.1 clients for bench/lifecycle, bench/slow_clients, bench/routes_cpu and bench/discovery
(stdlib only).

  probe  --port P --body B --ready FILE [--timeout S] [--interval-ms MS]
      Startup probe. Writes FILE once it is looping, then every MS (1) milliseconds opens a
      connection to P and sends GET /, until a response is 200 with body B. Prints the wall-clock
      time of that response (seconds since the epoch, microseconds) and the number of attempts.
      Exit 1 after S (10) seconds without one.

  strict --port P --out FILE [--threads N] [--duration S] [--timeout S]
      Closed-loop load from N (12) threads, one keep-alive connection each, one request
      outstanding, back to back, until SIGTERM/SIGINT (or S seconds). A strict client: it never
      retries and never checks a pooled connection before using it. Every request that does not
      end in a complete 200 is a failure: refused or failed connect, reset, the connection
      closed while the request was outstanding, a timeout, another status. After a complete
      response with "Connection: close" it closes and reconnects, which is not a failure.
      Writes FILE (JSON): counts, failure kinds, and the wall-clock time of every failure.

  paced  --port P --out FILE [--rate R] [--conns C] [--duration S] [--timeout S] [--path PATH]
      Open-loop "normal client": R (200) requests per second in total over C (4) keep-alive
      connections (one thread each, staggered schedules), for S (20) seconds. Latency is measured
      from the send, or from the scheduled send time when the previous request on the same
      connection was still running then (no coordinated omission). Any request without a
      complete 200 is an error; the next one reconnects. Writes FILE (JSON): counts, error
      kinds, latency percentiles (nearest rank). --sample-port Q also counts, every 0.5 s, the
      established client-side connections to port Q on this host (its own included).

  replay --port P --requests FILE --count N --body B --out FILE [--conns C] [--timeout S]
      A fixed amount of work: the first N requests of FILE (lines "HOST<TAB>PATH", taken in
      order and from the start again when N is larger) as GET requests over C (4) keep-alive
      connections, one request outstanding on each, each connection taking the next request of
      the list when its previous one is answered. Every response must be a complete 200 with
      body B; the first that is not ends the run (exit 1). Writes FILE (JSON): requests sent,
      answered 200 with B, the statuses seen, the failure (if any) and the run's seconds.
"""
import argparse
import json
import os
import signal
import socket
import sys
import threading
import time

REQ_TMPL = "GET {path} HTTP/1.1\r\nHost: bench\r\nUser-Agent: veer-bench\r\n\r\n"


class HTTPError(Exception):
    """A failed request; .kind names the failure."""

    def __init__(self, kind):
        super().__init__(kind)
        self.kind = kind


def recv_some(sock, pending):
    """Read more bytes; an EOF or reset with a request outstanding is a failure."""
    try:
        chunk = sock.recv(65536)
    except socket.timeout:
        raise HTTPError("timeout") from None
    except ConnectionResetError:
        raise HTTPError("reset before response" if not pending else "reset mid-response") from None
    except OSError as e:
        raise HTTPError(f"read: {e.strerror or e}") from None
    if not chunk:
        raise HTTPError("eof before response" if not pending else "eof mid-response")
    return chunk


def read_response(sock, hdrs_out=None):
    """Read one response. Returns (status, body, close) where close is True when the server
    said Connection: close (or HTTP/1.0 without keep-alive). With hdrs_out (a dict), the
    response's headers go there too (lowercase byte names, repeated ones joined by commas)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += recv_some(sock, bool(buf))
        if len(buf) > 1 << 20:
            raise HTTPError("head too large")
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    parts = lines[0].split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise HTTPError("bad status line")
    version, status = parts[0], int(parts[1])
    hdrs = {}
    for line in lines[1:]:
        k, sep, v = line.partition(b":")
        if not sep:
            raise HTTPError("bad header")
        k = k.strip().lower()
        hdrs[k] = hdrs[k] + b"," + v.strip() if k in hdrs else v.strip()
    if hdrs_out is not None:
        hdrs_out.update(hdrs)
    conn_tokens = [t.strip().lower() for t in hdrs.get(b"connection", b"").split(b",")]
    close = b"close" in conn_tokens or (version == b"HTTP/1.0" and b"keep-alive" not in conn_tokens)
    if 100 <= status < 200:
        raise HTTPError(f"interim {status}")
    if status in (204, 304):
        return status, b"", close
    if b"chunked" in hdrs.get(b"transfer-encoding", b"").lower():
        body, data = b"", rest
        while True:
            while b"\r\n" not in data:
                data += recv_some(sock, True)
            size_line, data = data.split(b"\r\n", 1)
            try:
                size = int(size_line.split(b";")[0].strip(), 16)
            except ValueError:
                raise HTTPError("bad chunk size") from None
            if size == 0:
                while b"\r\n\r\n" not in b"\r\n" + data:
                    data += recv_some(sock, True)
                return status, body, close
            while len(data) < size + 2:
                data += recv_some(sock, True)
            body += data[:size]
            data = data[size + 2:]
    if b"content-length" in hdrs:
        try:
            n = int(hdrs[b"content-length"])
        except ValueError:
            raise HTTPError("bad content-length") from None
        while len(rest) < n:
            rest += recv_some(sock, True)
        return status, rest[:n], close
    # No framing: the body runs to EOF, and the connection ends with it.
    while True:
        try:
            chunk = sock.recv(65536)
        except OSError:
            raise HTTPError("reset mid-response") from None
        if not chunk:
            return status, rest, True
        rest += chunk


def connect(port, timeout):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except socket.timeout:
        raise HTTPError("connect timeout") from None
    except ConnectionRefusedError:
        raise HTTPError("connect refused") from None
    except OSError as e:
        raise HTTPError(f"connect: {e.strerror or e}") from None
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def send(sock, req):
    try:
        sock.sendall(req)
    except socket.timeout:
        raise HTTPError("write timeout") from None
    except (BrokenPipeError, ConnectionResetError):
        raise HTTPError("reset on write") from None
    except OSError as e:
        raise HTTPError(f"write: {e.strerror or e}") from None


def pct(values, p):
    """Nearest-rank percentile of a sorted list."""
    if not values:
        return None
    k = max(0, min(len(values) - 1, -(-len(values) * p // 100) - 1))
    return values[int(k)]


def write_json(path, doc):
    with open(path + ".tmp", "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    os.replace(path + ".tmp", path)


def stop_on_signals(stop):
    def handler(_sig, _frame):
        stop.set()
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


# --- probe ------------------------------------------------------------------------------------

def cmd_probe(a):
    req = REQ_TMPL.format(path="/").encode()
    body = a.body.encode()
    with open(a.ready, "w") as f:
        f.write("ready\n")
    interval = a.interval_ms / 1000.0
    deadline = time.monotonic() + a.timeout
    attempts = 0
    nxt = time.monotonic()
    while time.monotonic() < deadline:
        attempts += 1
        s = None
        try:
            s = socket.socket()
            s.settimeout(2.0)
            s.connect(("127.0.0.1", a.port))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(req)
            status, got, _ = read_response(s)
            if status == 200 and got == body:
                t = time.time_ns()
                s.close()
                print(f"{t // 1000 / 1e6:.6f} {attempts}")
                return 0
        except (OSError, HTTPError):
            pass
        finally:
            if s is not None:
                s.close()
        nxt += interval
        delay = nxt - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            nxt = time.monotonic()
    print(f"timeout {attempts}")
    return 1


# --- strict -----------------------------------------------------------------------------------

def cmd_strict(a):
    stop = threading.Event()
    stop_on_signals(stop)
    req = REQ_TMPL.format(path="/").encode()
    lock = threading.Lock()
    tot = {"requests": 0, "ok": 0, "failed": 0, "connections": 0, "clean_closes": 0}
    kinds, failures = {}, []

    def worker():
        sock = None
        n = ok = conns = closes = 0
        my_fail = []
        while not stop.is_set():
            n += 1
            try:
                if sock is None:
                    sock = connect(a.port, a.timeout)
                    conns += 1
                send(sock, req)
                status, _, close = read_response(sock)
                if status != 200:
                    raise HTTPError(f"status {status}")
                ok += 1
                if close:
                    closes += 1
                    sock.close()
                    sock = None
            except HTTPError as e:
                my_fail.append((time.time(), e.kind))
                if sock is not None:
                    sock.close()
                    sock = None
                if e.kind.startswith("connect"):
                    time.sleep(0.001)   # no busy loop against a closed port
        if sock is not None:
            sock.close()
        with lock:
            tot["requests"] += n
            tot["ok"] += ok
            tot["failed"] += len(my_fail)
            tot["connections"] += conns
            tot["clean_closes"] += closes
            for t, k in my_fail:
                kinds[k] = kinds.get(k, 0) + 1
                failures.append([round(t, 6), k])

    t0 = time.time()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(a.threads)]
    for t in threads:
        t.start()
    stop.wait(a.duration if a.duration > 0 else None)
    stop.set()
    t1 = time.time()
    for t in threads:
        t.join(a.timeout + 5)
    failures.sort()
    doc = dict(tot, threads=a.threads, started=round(t0, 6), stopped=round(t1, 6),
               seconds=round(t1 - t0, 3), rps=round(tot["requests"] / max(t1 - t0, 1e-9), 1),
               failure_kinds=kinds, failures=failures,
               unfinished_threads=sum(t.is_alive() for t in threads))
    write_json(a.out, doc)
    return 0


# --- paced ------------------------------------------------------------------------------------

def cmd_paced(a):
    stop = threading.Event()
    stop_on_signals(stop)
    req = REQ_TMPL.format(path=a.path).encode()
    lock = threading.Lock()
    lat, kinds, raw = [], {}, []
    counts = {"requests": 0, "ok": 0, "errors": 0, "connections": 0, "late_starts": 0}
    interval = a.conns / a.rate
    t0 = time.monotonic() + 0.05

    def worker(i):
        sock = None
        my_lat, my_err, my_raw = [], [], []
        n = conns = late = 0
        prev_done = 0.0
        k = 0
        while True:
            sched = t0 + i * interval / a.conns + k * interval
            k += 1
            if sched > t0 + a.duration or stop.is_set():
                break
            now = time.monotonic()
            if sched > now:
                time.sleep(sched - now)
            n += 1
            try:
                start = time.monotonic()
                if prev_done > sched:
                    start = sched      # queued behind the previous request on this connection
                    late += 1
                if sock is None:
                    sock = connect(a.port, a.timeout)
                    conns += 1
                send(sock, req)
                status, _, close = read_response(sock)
                done = time.monotonic()
                if status != 200:
                    raise HTTPError(f"status {status}")
                my_lat.append(done - start)
                if close:
                    sock.close()
                    sock = None
            except HTTPError as e:
                done = time.monotonic()
                my_err.append(e.kind)
                if sock is not None:
                    sock.close()
                    sock = None
            prev_done = done
            my_raw.append((i, sched - t0, start - t0, done - t0))
        if sock is not None:
            sock.close()
        with lock:
            raw.extend(my_raw)
            lat.extend(my_lat)
            counts["requests"] += n
            counts["ok"] += len(my_lat)
            counts["errors"] += len(my_err)
            counts["connections"] += conns
            counts["late_starts"] += late
            for e in my_err:
                kinds[e] = kinds.get(e, 0) + 1

    samples = []

    def sampler():
        """Established client-side TCP connections to the port (ours included), every 0.5 s."""
        hexport = ":%04X" % a.sample_port
        while not done_ev.wait(0.5):
            n = 0
            for table in ("/proc/net/tcp", "/proc/net/tcp6"):
                try:
                    with open(table) as f:
                        next(f)
                        for line in f:
                            fields = line.split(None, 4)
                            if fields[2].endswith(hexport) and fields[3] == "01":
                                n += 1
                except OSError:
                    pass
            samples.append(n)

    done_ev = threading.Event()
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(a.conns)]
    for t in threads:
        t.start()
    if a.sample_port:
        st = threading.Thread(target=sampler, daemon=True)
        st.start()
    for t in threads:
        while t.is_alive():
            t.join(0.2)
    done_ev.set()
    if a.dump:
        with open(a.dump, "w") as f:
            for r in sorted(raw, key=lambda r: r[1]):
                f.write("%d %.6f %.6f %.6f\n" % r[:4])
    lat.sort()
    ms = [v * 1000 for v in lat]
    ss = sorted(samples)
    doc = dict(counts, rate=a.rate, conns=a.conns, duration=a.duration, path=a.path,
               error_kinds=kinds,
               port_connections=({"min": ss[0], "median": ss[len(ss) // 2], "max": ss[-1],
                                  "samples": len(ss)} if ss else None),
               p50_ms=round(pct(ms, 50), 3) if ms else None,
               p90_ms=round(pct(ms, 90), 3) if ms else None,
               p99_ms=round(pct(ms, 99), 3) if ms else None,
               p999_ms=round(pct(ms, 99.9), 3) if ms else None,
               max_ms=round(ms[-1], 3) if ms else None,
               mean_ms=round(sum(ms) / len(ms), 3) if ms else None)
    write_json(a.out, doc)
    return 0


# --- replay -----------------------------------------------------------------------------------

def cmd_replay(a):
    with open(a.requests) as f:
        reqs = []
        for line in f:
            host, path = line.rstrip("\n").split("\t")
            reqs.append(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: veer-bench\r\n\r\n"
                        .encode())
    if not reqs:
        raise SystemExit(f"{a.requests}: no requests")
    body = a.body.encode()
    lock = threading.Lock()
    state = {"next": 0, "ok": 0, "statuses": {}, "failure": None}

    def take():
        with lock:
            if state["failure"] is not None or state["next"] >= a.count:
                return None
            i = state["next"]
            state["next"] += 1
            return reqs[i % len(reqs)]

    def run():
        sock = None
        try:
            while True:
                req = take()
                if req is None:
                    break
                if sock is None:
                    sock = connect(a.port, a.timeout)
                send(sock, req)
                status, got, close = read_response(sock)
                with lock:
                    state["statuses"][status] = state["statuses"].get(status, 0) + 1
                    if status != 200 or got != body:
                        if state["failure"] is None:
                            state["failure"] = f"status {status}, body {got[:80]!r} for {req[:80]!r}"
                        break
                    state["ok"] += 1
                if close:
                    sock.close()
                    sock = None
        except HTTPError as e:
            with lock:
                if state["failure"] is None:
                    state["failure"] = e.kind
        finally:
            if sock is not None:
                sock.close()

    t0 = time.monotonic()
    threads = [threading.Thread(target=run) for _ in range(a.conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    doc = {"sent": state["next"], "ok": state["ok"], "count": a.count, "conns": a.conns,
           "statuses": {str(k): v for k, v in sorted(state["statuses"].items())},
           "failure": state["failure"], "seconds": round(time.monotonic() - t0, 3)}
    write_json(a.out, doc)
    return 0 if state["failure"] is None and state["ok"] == a.count else 1


# --- tagged -----------------------------------------------------------------------------------

def cmd_tagged(a):
    stop = threading.Event()
    stop_on_signals(stop)
    req = REQ_TMPL.format(path="/").encode()
    lock = threading.Lock()
    recs = []
    first_ok = threading.Event()

    def worker():
        sock = None
        mine = []
        while not stop.is_set():
            t_send = time.monotonic()
            try:
                if sock is None:
                    sock = connect(a.port, a.timeout)
                send(sock, req)
                hdrs = {}
                status, _, close = read_response(sock, hdrs)
                t_done = time.monotonic()
                backend = hdrs.get(b"x-backend", b"-").decode(errors="replace") or "-"
                mine.append((t_send, t_done, status, backend,
                             "-" if status == 200 else f"status {status}"))
                if status == 200 and not first_ok.is_set():
                    first_ok.set()
                if close:
                    sock.close()
                    sock = None
            except HTTPError as e:
                mine.append((t_send, time.monotonic(), 0, "-", e.kind))
                if sock is not None:
                    sock.close()
                    sock = None
                if e.kind.startswith("connect"):
                    time.sleep(0.001)   # no busy loop against a closed port
        if sock is not None:
            sock.close()
        with lock:
            recs.extend(mine)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(a.threads)]
    for t in threads:
        t.start()
    if a.ready:
        while not stop.is_set() and not first_ok.wait(0.05):
            pass
        if first_ok.is_set():
            with open(a.ready + ".tmp", "w") as f:
                f.write("ready\n")
            os.replace(a.ready + ".tmp", a.ready)
    stop.wait()
    for t in threads:
        t.join(a.timeout + 5)
    recs.sort()
    with open(a.out + ".tmp", "w") as f:
        for r in recs:
            f.write("%.6f\t%.6f\t%d\t%s\t%s\n" % r)
    os.replace(a.out + ".tmp", a.out)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("probe")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--body", required=True)
    p.add_argument("--ready", required=True)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--interval-ms", type=float, default=1.0)
    p = sub.add_parser("strict")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=12)
    p.add_argument("--duration", type=float, default=0.0)
    p.add_argument("--timeout", type=float, default=10.0)
    p = sub.add_parser("paced")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--conns", type=int, default=4)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--path", default="/")
    p.add_argument("--dump", help="write every request: conn, scheduled, start, done (s)")
    p.add_argument("--sample-port", type=int, default=0,
                   help="count established connections to this port every 0.5 s")
    p = sub.add_parser("replay")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--requests", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--body", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--conns", type=int, default=4)
    p.add_argument("--timeout", type=float, default=30.0)
    p = sub.add_parser("tagged")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--ready")
    p.add_argument("--timeout", type=float, default=10.0)
    a = ap.parse_args()
    return {"probe": cmd_probe, "strict": cmd_strict, "paced": cmd_paced,
            "replay": cmd_replay, "tagged": cmd_tagged}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
