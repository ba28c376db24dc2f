#!/usr/bin/env python3
"""The scale-out and scale-in part of bench/discovery (stdlib only).

  discovery_scale.py --admin SOCK --pool POOL --entry NAME --port P --dns-pid PID
                     --hosts FILE --dns-name NAME --veer-port P --client PATH --out FILE
                     [--initial 25] [--scale-out 50] [--scale-in 25] [--cycles 3]
                     [--conns 8] [--poll-ms 10] [--settle-ms 1000] [--warmup-ms 1000]
                     [--deadline-s 20] [--bound-ms 1200]

veer runs with pool POOL whose discover entry NAME follows DNS_NAME:P, answered by dnsmasq
(pid PID) from the hosts file FILE (re-read on SIGHUP). A backend listens on P at every
127.0.0.X of the address list (127.0.0.2 up, INITIAL + SCALE_OUT addresses) and answers with
"X-Backend: 127.0.0.X". The script:

 1. writes the first INITIAL addresses to FILE, SIGHUPs dnsmasq and waits until veer has
    exactly those backends, all READY;
 2. starts the load: `httpclient.py tagged` (CONNS keep-alive connections through veer, every
    request recorded with the backend that answered, CLOCK_MONOTONIC times), WARMUP ms;
 3. CYCLES times:
    scale-out  SCALE_OUT addresses veer does not have are added to FILE at once; t0 is taken
               right before the SIGHUP. veer's pool is polled (`show pools --json` on the admin
               socket, every POLL ms) until every new backend is READY; then SETTLE ms of load.
    scale-in   the SCALE_IN oldest addresses are removed from FILE at once (t1 before the
               SIGHUP); polled until veer has removed them all; then SETTLE ms.
    reset      (between cycles, not measured) back to INITIAL addresses, the others removed,
               so that the next scale-out adds SCALE_OUT addresses veer does not have.
 4. stops the load and works out, per cycle, from the polls and the request records:
    out: (a) all new backends present, (b) all READY, (c) the first response from a new
         instance, (d) every new instance has answered at least one request (all from t0);
         the longest PENDING time of one backend (present -> READY); responses a new
         instance completed before a poll that still showed it not READY (must be 0);
    in:  all removed backends left READY (DRAINING, DRAINED or gone), all DRAINED or gone,
         all gone; the last response from a removed instance; requests sent to a removed
         instance after a poll showed it draining (must be 0);
    each phase judged on the requests sent from its SIGHUP to the end of its SETTLE (an
    address removed in one cycle comes back as a new one in the next); and over the whole run:
    requests, failed requests (no complete 200; must be 0) by kind.
    A poll's time is the moment its reply was read (an upper bound for the state it shows);
    "before a poll" compares with the moment the poll was sent.
Writes OUT (JSON); a progress line per step to stderr. Exit 0 when the run completed (whatever
the numbers), 1 when a step did not complete within DEADLINE s.
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class Admin:
    def __init__(self, path, pool, entry, port):
        self.path, self.pool, self.entry, self.port = path, pool, entry, port
        self.polls = 0
        self.rtt = []

    def command(self, line):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(self.path)
        s.sendall(line.encode() + b"\n")
        s.shutdown(socket.SHUT_WR)   # as veerctl does; veer closes after its reply
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        s.close()
        return buf.decode()

    def backends(self):
        """(t_sent, t_read, {address: state}) of the entry's backends in the pool."""
        t_sent = time.monotonic()
        doc = json.loads(self.command("show pools --json"))
        t_read = time.monotonic()
        self.polls += 1
        self.rtt.append(t_read - t_sent)
        prefix = self.entry + "-"
        out = {}
        for p in doc["pools"]:
            if p["pool"] != self.pool:
                continue
            for b in p["backends"]:
                if b["name"].startswith(prefix):
                    out[b["address"].rsplit(":", 1)[0]] = b["state"]
        return t_sent, t_read, out

    def discovery(self):
        doc = json.loads(self.command("show discovery --json"))
        return next(e for e in doc["discovery"] if e["name"] == self.entry)


class Run:
    def __init__(self, a):
        self.a = a
        self.admin = Admin(a.admin, a.pool, a.entry, a.port)
        self.addrs = ["127.0.0.%d" % (2 + i) for i in range(a.initial + a.scale_out)]
        self.dns = []   # the addresses in DNS, oldest first

    def set_dns(self, addrs):
        """Write the hosts file, SIGHUP dnsmasq; returns the time right before the signal."""
        tmp = self.a.hosts + ".new"
        with open(tmp, "w") as f:
            f.writelines("%s %s\n" % (x, self.a.dns_name) for x in addrs)
        os.replace(tmp, self.a.hosts)
        self.dns = list(addrs)
        t = time.monotonic()
        os.kill(self.a.dns_pid, signal.SIGHUP)
        return t

    def wait(self, what, done, on_poll=None):
        """Poll until done(states) holds; on_poll(t_sent, t_read, states) sees every poll."""
        deadline = time.monotonic() + self.a.deadline_s
        nxt = time.monotonic()
        while True:
            t_sent, t_read, st = self.admin.backends()
            if on_poll:
                on_poll(t_sent, t_read, st)
            if done(st):
                return t_read
            if t_read > deadline:
                raise TimeoutError("%s: not within %d s (veer has %s)"
                                   % (what, self.a.deadline_s, sorted(st.items())))
            nxt += self.a.poll_ms / 1000
            delay = nxt - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                nxt = time.monotonic()

    def exactly_ready(self, addrs):
        want = set(addrs)
        return lambda st: set(st) == want and all(v == "READY" for v in st.values())

    def scale_out(self, new):
        present, ready, last_not_ready = {}, {}, {}

        def on_poll(t_sent, t_read, st):
            for x in new:
                s = st.get(x)
                if s is not None and x not in present:
                    present[x] = t_read
                if s == "READY":
                    ready.setdefault(x, t_read)
                else:
                    last_not_ready[x] = t_sent
        t0 = self.set_dns(self.dns + new)
        t_done = self.wait("scale-out: every new backend READY",
                           lambda st: all(st.get(x) == "READY" for x in new), on_poll)
        return {"t0": t0, "t_all_ready_poll": t_done, "new": new, "present": present,
                "ready": ready, "last_not_ready": last_not_ready}

    def scale_in(self, gone):
        left, drained, removed, seen_draining = {}, {}, {}, {}

        def on_poll(t_sent, t_read, st):
            for x in gone:
                s = st.get(x)
                if s != "READY":
                    left.setdefault(x, t_read)
                    if s is not None:
                        seen_draining.setdefault(x, t_read)
                if s in (None, "DRAINED"):
                    drained.setdefault(x, t_read)
                if s is None:
                    removed.setdefault(x, t_read)
        keep = [x for x in self.dns if x not in set(gone)]
        t1 = self.set_dns(keep)
        self.wait("scale-in: every removed backend gone",
                  lambda st: not any(x in st for x in gone), on_poll)
        return {"t1": t1, "gone": gone, "left": left, "drained": drained, "removed": removed,
                "seen_draining": seen_draining}

    def settle(self):
        time.sleep(self.a.settle_ms / 1000)


def ms(v):
    return None if v is None else round(v * 1000, 1)


def analyse(cycles, recs, a):
    by_backend = {}
    for t_send, t_done, status, backend, err in recs:
        if status == 200:
            by_backend.setdefault(backend, []).append((t_send, t_done))
    out = []
    for c in cycles:
        o, i = c["out"], c["in"]
        t0, t1 = o["t0"], i["t1"]
        new, gone = o["new"], i["gone"]
        # Each phase is judged on the requests sent within it: from its SIGHUP to the end of its
        # settle time (an address removed in one cycle comes back as a new one in the next).
        served = {}
        early = 0
        for x in new:
            mine = [(s, d) for s, d in by_backend.get(x, []) if t0 <= s < o["t_end"]]
            if mine:
                served[x] = min(d for s, d in mine)
            lnr = o["last_not_ready"].get(x)
            if lnr is not None:
                early += sum(1 for s, d in mine if d < lnr)
        pend = [o["ready"][x] - o["present"][x] for x in new if x in o["ready"] and x in o["present"]]
        last_removed = None
        after_drain = 0
        for x in gone:
            mine = [(s, d) for s, d in by_backend.get(x, []) if t1 <= d and s < i["t_end"]]
            for s, d in mine:
                if last_removed is None or d > last_removed:
                    last_removed = d
            sd = i["seen_draining"].get(x) or i["removed"].get(x)
            if sd is not None:
                after_drain += sum(1 for s, d in mine if s > sd)
        out.append({
            "scale_out": {
                "new_addresses": len(new),
                "all_present_ms": ms(max(o["present"].values()) - t0),
                "all_ready_ms": ms(max(o["ready"].values()) - t0),
                "first_present_ms": ms(min(o["present"].values()) - t0),
                "first_served_ms": ms(min(served.values()) - t0) if served else None,
                "all_served_ms": ms(max(served.values()) - t0) if len(served) == len(new) else None,
                "instances_served": len(served),
                "max_pending_ms": ms(max(pend)) if pend else None,
                "min_pending_ms": ms(min(pend)) if pend else None,
                "bound_ms": a.bound_ms,
                "all_ready_within_bound": (max(o["ready"].values()) - t0) * 1000 <= a.bound_ms,
                "served_before_ready": early,
            },
            "scale_in": {
                "removed_addresses": len(gone),
                "all_left_ms": ms(max(i["left"].values()) - t1),
                "all_drained_ms": ms(max(i["drained"].values()) - t1),
                "all_removed_ms": ms(max(i["removed"].values()) - t1),
                "last_served_ms": ms(last_removed - t1) if last_removed is not None else None,
                "sent_after_draining": after_drain,
            },
        })
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    for k in ("admin", "pool", "entry", "hosts", "dns-name", "client", "out"):
        ap.add_argument("--" + k, required=True)
    for k in ("port", "dns-pid", "veer-port"):
        ap.add_argument("--" + k, type=int, required=True)
    for k, v in (("initial", 25), ("scale-out", 50), ("scale-in", 25), ("cycles", 3),
                 ("conns", 8), ("poll-ms", 10), ("settle-ms", 1000), ("warmup-ms", 1000),
                 ("deadline-s", 20), ("bound-ms", 1200)):
        ap.add_argument("--" + k, type=int, default=v)
    a = ap.parse_args()
    if not 0 < a.scale_in <= a.initial + a.scale_out:
        ap.error("--scale-in must be 1 .. initial + scale-out")
    run = Run(a)
    doc = {"initial": a.initial, "scale_out": a.scale_out, "scale_in": a.scale_in,
           "cycles_asked": a.cycles, "conns": a.conns, "poll_ms": a.poll_ms,
           "settle_ms": a.settle_ms, "bound_ms": a.bound_ms}
    load = None
    cycles = []
    tmp = os.path.dirname(os.path.abspath(a.out))
    recs_path = os.path.join(tmp, "requests.tsv")
    ready_path = os.path.join(tmp, "load.ready")
    status = 0
    try:
        run.set_dns(run.addrs[:a.initial])
        run.wait("start: the first addresses READY", run.exactly_ready(run.addrs[:a.initial]))
        log("  %d backends READY; load: %d connections" % (a.initial, a.conns))
        load = subprocess.Popen([sys.executable, a.client, "tagged", "--port", str(a.veer_port),
                                 "--out", recs_path, "--threads", str(a.conns),
                                 "--ready", ready_path])
        deadline = time.monotonic() + a.deadline_s
        while not os.path.exists(ready_path):
            if load.poll() is not None or time.monotonic() > deadline:
                raise TimeoutError("the load client got no 200 through veer")
            time.sleep(0.01)
        time.sleep(a.warmup_ms / 1000)
        t_load = time.monotonic()
        for k in range(a.cycles):
            have = set(run.dns)
            new = [x for x in run.addrs if x not in have][:a.scale_out]
            o = run.scale_out(new)
            log("  cycle %d: +%d addresses, all READY %.0f ms after the SIGHUP"
                % (k + 1, len(new), (max(o["ready"].values()) - o["t0"]) * 1000))
            run.settle()
            o["t_end"] = time.monotonic()
            gone = run.dns[:a.scale_in]
            i = run.scale_in(gone)
            log("  cycle %d: -%d addresses, all gone %.0f ms after the SIGHUP"
                % (k + 1, len(gone), (max(i["removed"].values()) - i["t1"]) * 1000))
            run.settle()
            i["t_end"] = time.monotonic()
            cycles.append({"out": o, "in": i})
            if k + 1 < a.cycles:
                keep = run.dns[:a.initial]
                if len(keep) < a.initial:
                    have = set(run.dns)
                    keep += [x for x in run.addrs if x not in have][:a.initial - len(keep)]
                run.set_dns(keep)
                run.wait("reset to %d addresses" % a.initial, run.exactly_ready(keep))
        t_end = time.monotonic()
    except TimeoutError as e:
        log("  error: %s" % e)
        doc["error"] = str(e)
        status = 1
        t_load = t_end = None
    finally:
        if load is not None:
            load.send_signal(signal.SIGTERM)
            load.wait(30)
    recs = []
    if os.path.exists(recs_path):
        with open(recs_path) as f:
            for line in f:
                s, d, st, b, e = line.rstrip("\n").split("\t")
                recs.append((float(s), float(d), int(st), b, e))
    failed = [r for r in recs if r[2] != 200]
    kinds = {}
    for r in failed:
        kinds[r[4]] = kinds.get(r[4], 0) + 1
    doc.update({
        "cycles": analyse(cycles, recs, a),
        "requests": len(recs),
        "failed": len(failed),
        "failure_kinds": kinds,
        "load_seconds": round(t_end - t_load, 3) if t_load and t_end else None,
        "rps": round(sum(1 for r in recs if t_load <= r[0] < t_end) / (t_end - t_load), 1)
        if t_load and t_end else None,
        "polls": run.admin.polls,
        "poll_rtt_ms_median": ms(sorted(run.admin.rtt)[len(run.admin.rtt) // 2])
        if run.admin.rtt else None,
    })
    try:
        d = run.admin.discovery()
        doc["discovery"] = {k: d.get(k) for k in ("ttl_s", "resolutions", "errors", "last_error")}
    except (OSError, ValueError, StopIteration):
        pass
    with open(a.out + ".tmp", "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    os.replace(a.out + ".tmp", a.out)
    return status


if __name__ == "__main__":
    sys.exit(main())
