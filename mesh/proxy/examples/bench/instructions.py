#!/usr/bin/env python3
"""Instructions, system calls and CPU per proxied request: serin-proxy, nginx and HAProxy.

The benchmark (`cargo run --release -p serin-proxy --example bench`) measures time, which this
shared VM makes noisy. This measures what does not depend on the machine's load, on the same
request mix (`GET /` with `Host: podinfo`, 32 keep-alive connections, 90/10 weighted split,
serin-proxy's metrics on) and the same configurations as the benchmark, each proxy as one
process with one worker (nginx with `master_process off`, HAProxy `nbthread 1`, serin-proxy's
default single-threaded runtime). The upstreams are a small asyncio server pair answering as
the benchmark's do (`content-length`, `date`, 8-byte body); only the proxy is measured.

    python3 mesh/proxy/examples/bench/instructions.py callgrind serin,nginx,haproxy
    python3 mesh/proxy/examples/bench/instructions.py perf serin,nginx,haproxy
    python3 mesh/proxy/examples/bench/instructions.py strace serin

- `callgrind`: the proxy runs under `valgrind --tool=callgrind`; after `WARM` requests
  (default 1000) its counters are zeroed (`callgrind_control -z`), `N` requests (default
  10000) are sent and the counts dumped: `instr_per_request` is user-space instructions per
  request (the kernel's work is not counted). `callgrind_annotate <file>` shows where they go.
- `perf`: `perf stat` on the running proxy (pinned to CPU 0 with `PIN=1`): task-clock per
  request (user and kernel time; noisy) and system calls per request by kind.
- `strace`: `strace -c` system call counts per request (slows the proxy, which batches more
  events per `epoll_wait` as a result).

`SERIN_PROXY_BIN` names the serin-proxy binary (default: `target/dist/serin-proxy`, built with
`cargo build --profile dist -p serin-proxy`). Needs Debian's `valgrind`, `nginx-light`,
`haproxy` (a proxy that is missing fails the run) and, for `perf`, `linux-perf`.
"""
import asyncio, os, re, selectors, shutil, signal, socket, subprocess, sys, tempfile, time, random, email.utils

# The benchmark's request (examples/bench.rs).
REQUEST = b"GET / HTTP/1.1\r\nHost: podinfo\r\nUser-Agent: serin-bench\r\n\r\n"

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def upstream_main(ports):
    # hyper's answer as in bench.rs: content-length, date, body.
    async def serve(name, port):
        body = b"primary\n" if name == "primary" else b"canary\n"
        async def handle(r, w):
            buf = b""
            try:
                while True:
                    while b"\r\n\r\n" not in buf:
                        d = await r.read(65536)
                        if not d:
                            return
                        buf += d
                    _, buf = buf.split(b"\r\n\r\n", 1)
                    date = email.utils.formatdate(usegmt=True).encode()
                    w.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\ndate: %s\r\n\r\n%s" % (len(body), date, body))
            except Exception:
                pass
            finally:
                w.close()
        srv = await asyncio.start_server(handle, "127.0.0.1", port)
        for s in srv.sockets:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await srv.serve_forever()
    async def main():
        await asyncio.gather(serve("primary", ports[0]), serve("canary", ports[1]))
    asyncio.run(main())

def wait_port(port, t=60):
    end = time.time() + t
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close(); return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listening on {port}")

def load(port, conns, total):
    """Closed loop: `conns` keep-alive connections, `total` requests; returns elapsed s."""
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(conns):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        socks.append(s)
    sent = 0; done = 0
    state = {}
    t0 = time.time()
    for s in socks:
        if sent < total:
            s.send(REQUEST); sent += 1
            state[s] = b""
            sel.register(s, selectors.EVENT_READ)
    while done < total:
        for key, _ in sel.select(30):
            s = key.fileobj
            d = s.recv(65536)
            if not d:
                raise SystemExit("proxy closed a connection")
            buf = state[s] + d
            while True:
                i = buf.find(b"\r\n\r\n")
                if i < 0: break
                m = re.search(rb"(?i)content-length: *(\d+)", buf[:i])
                if not m: raise SystemExit(f"no length: {buf[:i]!r}")
                n = int(m.group(1))
                if len(buf) < i + 4 + n: break
                if not buf.startswith(b"HTTP/1.1 200"): raise SystemExit(f"bad: {buf[:i]!r}")
                buf = buf[i + 4 + n:]
                done += 1
                if sent < total:
                    s.send(REQUEST); sent += 1
            state[s] = buf
    el = time.time() - t0
    for s in socks: s.close()
    return el

def cfg(kind, d, listen, admin, up):
    p1, p2 = up
    if kind == "serin":
        f = os.path.join(d, "serin.yaml")
        open(f, "w").write(f"""outbound:\n  listen: 127.0.0.1:{listen}\n  maxConnections: 20000\nadmin:\n  listen: 127.0.0.1:{admin}\nlabels:\n  namespace: bench\n  deployment: bench\nroutes:\n  - authority: podinfo\n    rules:\n      - backends:\n          - {{ name: podinfo-primary, weight: 90, endpoints: ["127.0.0.1:{p1}"] }}\n          - {{ name: podinfo-canary, weight: 10, endpoints: ["127.0.0.1:{p2}"] }}\n""")
        return [os.environ.get("SERIN_PROXY_BIN", os.path.abspath("target/dist/serin-proxy")), "--config", f], {"RUST_LOG": "warn"}
    if kind == "nginx":
        nd = os.path.join(d, "nginx"); os.makedirs(nd, exist_ok=True)
        f = os.path.join(nd, "nginx.conf")
        open(f, "w").write(f"""worker_processes 1;\ndaemon off;\nmaster_process off;\npid {nd}/nginx.pid;\nerror_log {nd}/error.log warn;
events {{ worker_connections 12000; }}
http {{\n  access_log off;\n  keepalive_requests 100000;\n  client_body_temp_path {nd}/body;\n  proxy_temp_path {nd}/proxy;\n  fastcgi_temp_path {nd}/fastcgi;\n  uwsgi_temp_path {nd}/uwsgi;\n  scgi_temp_path {nd}/scgi;
  upstream podinfo {{\n    server 127.0.0.1:{p1} weight=90;\n    server 127.0.0.1:{p2} weight=10;\n    keepalive 64;\n    keepalive_requests 100000;\n  }}
  server {{\n    listen 127.0.0.1:{listen};\n    location / {{\n      proxy_pass http://podinfo;\n      proxy_http_version 1.1;\n      proxy_set_header Connection "";\n    }}\n  }}\n}}\n""")
        return ["nginx", "-c", f, "-p", nd], {}
    if kind == "haproxy":
        f = os.path.join(d, "haproxy.cfg")
        open(f, "w").write(f"""global\n  maxconn 1000\n  nbthread 1\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n  option http-keep-alive
frontend fe\n  bind 127.0.0.1:{listen}\n  default_backend be
backend be\n  balance roundrobin\n  http-reuse always\n  server primary 127.0.0.1:{p1} weight 90\n  server canary 127.0.0.1:{p2} weight 10\n""")
        return ["haproxy", "-f", f, "-db"], {}
    raise SystemExit(kind)

def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    mode = sys.argv[1]
    kinds = sys.argv[2].split(",")
    n = int(os.environ.get("N", "10000")); warm = int(os.environ.get("WARM", "1000")); conns = int(os.environ.get("CONNS", "32"))
    up = (free_port(), free_port())
    upp = subprocess.Popen([sys.executable, __file__, "--upstream", str(up[0]), str(up[1])])
    try:
        wait_port(up[0]); wait_port(up[1])
        for kind in kinds:
            d = tempfile.mkdtemp(prefix=f"instr-{kind}-")
            listen, admin = free_port(), free_port()
            argv, env = cfg(kind, d, listen, admin, up)
            e = dict(os.environ); e.update(env)
            out = os.path.join(d, "callgrind.out")
            if mode == "callgrind":
                argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no",
                        "--collect-atstart=yes"] + (["--trace-children=no"]) + argv
            if os.environ.get("PIN"):
                argv = ["taskset", "-c", "0"] + argv
            p = subprocess.Popen(argv, env=e, stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "stderr"), "w"), cwd=d)
            wait_port(listen, 300)
            load(listen, conns, warm)
            if mode == "callgrind":
                subprocess.run(["callgrind_control", "-z", str(p.pid)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                el = load(listen, conns, n)
                subprocess.run(["callgrind_control", "-d", str(p.pid)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1)
                files = sorted(f for f in os.listdir(d) if f.startswith("callgrind.out"))
                last = None
                for f in files:
                    txt = open(os.path.join(d, f)).read()
                    m = re.search(r"^summary: (\d+)", txt, re.M) or re.search(r"^totals: (\d+)", txt, re.M)
                    if "Trigger: dump" in txt:
                        last = (f, int(m.group(1)))
                print(f"path={kind} mode=callgrind requests={n} instr_per_request={last[1] / n:.0f} file={os.path.join(d, last[0])} wall_s={el:.1f}", flush=True)
            elif mode == "strace":
                tr = os.path.join(d, "strace.txt")
                st = subprocess.Popen(["strace", "-c", "-f", "-o", tr, "-p", str(p.pid)], stderr=subprocess.DEVNULL)
                time.sleep(1)
                load(listen, conns, n)
                st.send_signal(signal.SIGINT); st.wait()
                txt = open(tr).read()
                total = int(re.findall(r"^100\.00\s+\S+\s+\S+\s+(\d+)", txt, re.M)[0])
                print(f"path={kind} mode=strace requests={n} syscalls_per_request={total / n:.2f}", flush=True)
                for line in txt.splitlines():
                    mm = re.match(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", line)
                    if mm and int(mm.group(1)) > n / 20:
                        print(f"#   {mm.group(2)} {int(mm.group(1)) / n:.2f}")
            elif mode == "perf":
                pf = os.path.join(d, "perf.txt")
                ev = "task-clock,context-switches,raw_syscalls:sys_enter,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_read,syscalls:sys_enter_recvfrom,syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_sendto"
                st = subprocess.Popen(["perf", "stat", "-x", ",", "-e", ev, "-o", pf, "-p", str(p.pid)], stderr=subprocess.DEVNULL)
                time.sleep(0.5)
                el = load(listen, conns, n)
                st.send_signal(signal.SIGINT); st.wait()
                vals = {}
                for line in open(pf):
                    f = line.strip().split(",")
                    if len(f) > 3 and f[0] and not line.startswith("#"):
                        try: vals[f[2]] = float(f[0])
                        except ValueError: pass
                tc = vals.get("task-clock", 0)
                parts = " ".join(f"{k.split(':')[-1].replace('sys_enter_', '')}={v / n:.2f}" for k, v in vals.items() if k != "task-clock")
                print(f"path={kind} mode=perf requests={n} rps={n / el:.0f} task_clock_us_per_request={tc * 1000 / n:.1f} {parts}", flush=True)
            else:
                raise SystemExit(f"unknown mode {mode!r}: callgrind, perf or strace")
            p.send_signal(signal.SIGTERM)
            try: p.wait(30)
            except subprocess.TimeoutExpired: p.kill(); p.wait()
    finally:
        upp.kill()

if __name__ == "__main__":
    if sys.argv[1] == "--upstream":
        upstream_main((int(sys.argv[2]), int(sys.argv[3])))
    else:
        main()
