"""Bounded load test of `recmoo serve` on loopback: p50 / p99 latency and requests per second.

Starts the real service (`recmoo serve --workers N`, uvicorn + uvloop + httptools) on a free port,
sends a fixed number of POST /recommend requests per scenario over keep-alive connections, then
stops it. The client is raw asyncio HTTP/1.1 so that it costs the 2-core machine as little as
possible; every answer is checked (status 200, k items) and anything else counts as an error.

Scenarios (k = 10): known users (precomputed lists) from 1 and `--clients` concurrent connections;
live sessions of 5 recent items (a forward pass each, micro-batched by the service) from each of
`--session-clients` connections; and mixed loads from `--clients` connections: "mixed", 80 % known
users and 20 % sessions, and, where the service takes POST /events, "mixed+ev": 80 % known users,
15 % sessions and 5 % posts of one event (on a temporary project, as the "events" scenario below; the
events join their users' next requests, which then cost a forward pass). Each is repeated
`--repeats` times; the table shows the median of the repeats. Above the tables, the cost of a lone
session in the benchmark's own process, without HTTP: this machine's speed at the time of the run.

The "events" scenario posts batches of `--event-batch` events (known users and items, times stamped by
the service) to POST /events from 1 and `--clients` connections, `--event-requests` batches a run, on
a copy of the served version in a temporary project: the log and the batch files it rolls land
there, never in the repository's data/raw/incoming. An event counts when its batch is answered 200
with every event accepted, i.e. once it is on disk (fsync); after the runs, the log and the batch files
are read back and must hold exactly the acknowledged events.

The "attack" scenario opens `--attackers` connections of each kind at once: slow headers (a head
that never ends, one byte a second), slow bodies (a complete head, then a body one byte a second)
and idle ones (connect, send nothing), and probes GET /health every 0.1 s on fresh connections
meanwhile. It reports /health's answers and latency during the attack, and per kind how long until
the server dropped each connection (or answered it: 503 over serve.max_connections).

    python benchmarks/bench_serve.py                      # the deployed version in deploy.store
    python benchmarks/bench_serve.py --scratch            # deploy an untrained model first (no training needed)
    python benchmarks/bench_serve.py --workers 1 2 --requests 3000 --clients 16
    python benchmarks/bench_serve.py --scenarios attack --workers 1 --attackers 2000
    python benchmarks/bench_serve.py --scenarios events --workers 1 2
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from recmoo_dag.config import load_params


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Service:
    """`recmoo serve` in a child process, up until the context exits."""

    def __init__(self, params_file: Path, workers: int):
        self.params_file, self.workers, self.port = params_file, workers, free_port()

    def __enter__(self) -> Self:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "recmoo_dag.cli", "serve", "--params", str(self.params_file),
             "--port", str(self.port), "--workers", str(self.workers)], cwd=self.params_file.parent,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while not self._healthy():
            if self.process.poll() is not None:
                raise SystemExit(f"recmoo serve exited:\n{self.process.stdout.read().decode()[-3000:]}")
            if time.monotonic() > deadline:
                raise SystemExit("recmoo serve did not answer /health within 120 s")
            time.sleep(0.25)
        time.sleep(1.0 * self.workers)  # every worker must be up, not just the first that answered
        return self

    def _healthy(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                return sock.recv(64).startswith(b"HTTP/1.1 200")
        except OSError:
            return False

    def __exit__(self, *exc) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def encode(body: dict, path: str = "/recommend") -> bytes:
    data = json.dumps(body).encode()
    return (b"POST %s HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (path.encode(), len(data))) + data


def kind(request: bytes) -> str:
    """What a request of `scenarios` asks for: "event", "session" (recent items: a forward pass) or "user"."""
    return "event" if request.startswith(b"POST /events") else "session" if b"recent_items" in request else "user"


def percentile(values: list[float], share: float) -> float:
    """The tables' percentile of sorted `values` (seconds), in ms."""
    return values[max(int(len(values) * share) - 1, 0)] * 1e3


async def one_connection(port: int, requests: list[bytes], answered: Callable[[dict, bytes], bool],
                         latencies: list[tuple[str, float]], errors: list[str]) -> None:
    """One keep-alive connection sending `requests` in turn, each one's (kind, seconds) appended to
    `latencies`; an answer other than 200 whose body `answered(body, request)` accepts is an error."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for request in requests:
            start = time.perf_counter()
            writer.write(request)
            status = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = await reader.readexactly(length)
            latencies.append((kind(request), time.perf_counter() - start))
            if not status.startswith(b"HTTP/1.1 200") or not answered(json.loads(body), request):
                errors.append(status.decode().strip() + " " + body[:200].decode(errors="replace"))
    finally:
        writer.close()


def complete(answer: dict, request: bytes, k: int) -> bool:
    """k items for POST /recommend; every event accepted for POST /events (the mixed load posts one)."""
    return answer["accepted"] == 1 if request.startswith(b"POST /events") else len(answer["items"]) == k


def takes_events(port: int) -> bool:
    """Whether the service has POST /events (its OpenAPI schema lists the path)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        answer = b"".join(iter(lambda: sock.recv(65536), b""))
    return b'"/events"' in answer


async def load(port: int, requests: list[bytes], clients: int, k: int) -> dict:
    """p50 / p99 of every request, req/s, and each kind's p99 (what a mixed load's tail is made of)."""
    latencies: list[tuple[str, float]] = []
    errors: list[str] = []
    shares = [requests[i::clients] for i in range(clients)]
    start = time.perf_counter()
    await asyncio.gather(*(one_connection(port, share, lambda body, request: complete(body, request, k), latencies,
                                          errors) for share in shares))
    elapsed = time.perf_counter() - start
    seconds = sorted(s for _, s in latencies)
    by_kind = {name: percentile(sorted(s for what, s in latencies if what == name), 0.99)
               for name in sorted({what for what, _ in latencies})}
    return {"p50": seconds[len(seconds) // 2] * 1e3, "p99": percentile(seconds, 0.99), "rps": len(requests) / elapsed,
            "p99_by_kind": by_kind, "errors": len(errors), "first_error": errors[0] if errors else ""}


ATTACK_HEADS = {"slow header": b"GET /health HTTP/1.1\r\nHost: bench\r\nX-Pad: ",
                "slow body": b"POST /recommend HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 1000\r\n\r\n",
                "idle": b""}
HEALTH = b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"


async def attacker(port: int, head: bytes, watch: float) -> tuple[float, float | None, bytes]:
    """Seconds to connect; seconds from the connect attempt until the server closed the connection
    (None: still open after `watch`); the status line it answered (empty: dropped without an answer).
    The server's clock for the connection starts between the attempt and the client seeing it open."""
    start = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    connected = time.monotonic()

    async def trickle() -> None:
        try:
            writer.write(head)
            while head:
                await writer.drain()
                await asyncio.sleep(1.0)
                writer.write(b"a")
        except ConnectionError:
            pass

    sender = asyncio.create_task(trickle())
    answer = b""
    try:
        async with asyncio.timeout(watch):
            try:
                while chunk := await reader.read(4096):
                    answer += chunk
            except ConnectionError:
                pass
        return connected - start, time.monotonic() - start, answer.split(b"\r\n", 1)[0]
    except TimeoutError:
        return connected - start, None, b""
    finally:
        sender.cancel()
        writer.close()


def probe_health(port: int, stop: threading.Event) -> list[tuple[float, bool, float]]:
    """GET /health on a new connection every 0.1 s until `stop`: (when, answered 200, seconds). Blocking
    sockets in a thread, so that the probe does not queue behind the attackers in the event loop."""
    answers = []
    while not stop.is_set():
        start = time.perf_counter()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(HEALTH)
                ok = sock.recv(64).startswith(b"HTTP/1.1 200")
        except OSError:
            ok = False
        answers.append((start, ok, time.perf_counter() - start))
        stop.wait(0.1)
    return answers


async def attack(port: int, n: int, watch: float) -> dict:
    """`n` attackers of each kind, opened 200 at a time (a burst larger than the listen backlog
    would measure SYN retries), with /health probed throughout."""
    stop = threading.Event()
    health = asyncio.create_task(asyncio.to_thread(probe_health, port, stop))
    begun = time.perf_counter()
    tasks: dict[str, list[asyncio.Task]] = {kind: [] for kind in ATTACK_HEADS}
    for start in range(0, n, 200):
        for kind, head in ATTACK_HEADS.items():
            tasks[kind] += [asyncio.create_task(attacker(port, head, watch)) for _ in range(min(200, n - start))]
        await asyncio.sleep(0.05)
    opened = time.perf_counter() - begun
    outcomes = {kind: await asyncio.gather(*group) for kind, group in tasks.items()}
    stop.set()
    return {"attackers": outcomes, "opened_s": opened,
            "health": [(when - begun, ok, seconds) for when, ok, seconds in await health]}


def report_attack(workers: int, n: int, watch: float, result: dict) -> None:
    print(f"\nattack: {n} connections of each kind, watched for {watch:.0f} s, {workers} worker(s); "
          "seconds to drop are counted from the connect attempt")
    print(f"{'kind':>12} {'connect p99 s':>13} {'dropped':>8} {'median s':>9} {'max s':>7}  answered")
    for kind, outcomes in result["attackers"].items():
        connects = sorted(c for c, _, _ in outcomes)
        seconds = sorted(s for _, s, _ in outcomes if s is not None)
        answered: dict[str, int] = {}
        for _, s, status in outcomes:
            if s is not None and status:
                answered[status.decode()] = answered.get(status.decode(), 0) + 1
        print(f"{kind:>12} {connects[int(len(connects) * 0.99) - 1]:>13.3f} {len(seconds):>8} "
              f"{statistics.median(seconds) if seconds else float('nan'):>9.2f} {seconds[-1] if seconds else float('nan'):>7.2f}  "
              + (", ".join(f"{count} x {status}" for status, count in answered.items()) or "-"))
    # The opening burst (every attacker connecting within opened_s) and the hold after it load the
    # server differently: connection setup, then only timers.
    opened = result["opened_s"] + 0.5
    for phase, probes in (("while the attackers connect", [p for p in result["health"] if p[0] < opened]),
                          ("while they are held", [p for p in result["health"] if p[0] >= opened])):
        latencies = sorted(seconds for _, _, seconds in probes)
        ok = sum(ok for _, ok, _ in probes)
        print(f"/health {phase}: {ok}/{len(latencies)} answered 200; p50 {latencies[len(latencies) // 2] * 1e3:.1f} ms, "
              f"p99 {percentile(latencies, 0.99):.1f} ms, max {latencies[-1] * 1e3:.1f} ms")


def scenarios(users: list[str], items: list[str], n: int, k: int, seed: int) -> dict[str, list[bytes]]:
    rng = random.Random(seed)

    def known() -> bytes:
        return encode({"user_id": rng.choice(users), "k": k})

    def session() -> bytes:
        return encode({"user_id": rng.choice(users), "recent_items": rng.sample(items, 5), "k": k})

    def event() -> bytes:
        return encode({"events": [{"user_id": rng.choice(users), "item_id": rng.choice(items)}]}, "/events")

    draws = [rng.random() for _ in range(n)]
    return {"user": [known() for _ in range(n)], "session": [session() for _ in range(n)],
            "mixed": [known() if x < 0.8 else session() for x in draws],
            "mixed+ev": [known() if x < 0.8 else session() if x < 0.95 else event() for x in draws]}


def events_project(params_file: Path, workdir: Path) -> Path:
    """A project for the events scenario: the params, with the store, the event log and the incoming
    folder inside it, and a copy of the served version. Returns its params file."""
    raw = yaml.safe_load(params_file.read_text())
    store = Path(load_params(params_file).deploy.store)
    served = (store if store.is_absolute() else params_file.parent / store) / "CURRENT"
    project = workdir / "events"
    version = project / "deployments" / "versions" / served.resolve().name
    shutil.copytree(served.resolve(), version)
    (project / "deployments" / "CURRENT").symlink_to(version.relative_to(project / "deployments"))
    raw["deploy"]["store"] = "deployments"
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return project / "params.yaml"


async def events_load(port: int, requests: list[bytes], clients: int, size: int) -> dict:
    latencies: list[tuple[str, float]] = []
    errors: list[str] = []
    start = time.perf_counter()
    # Accepted means every event of the batch is on disk.
    await asyncio.gather(*(one_connection(port, requests[i::clients], lambda body, _: body["accepted"] == size,
                                          latencies, errors) for i in range(clients)))
    elapsed = time.perf_counter() - start
    seconds = sorted(s for _, s in latencies)
    acknowledged = (len(requests) - len(errors)) * size
    return {"p50": seconds[len(seconds) // 2] * 1e3, "p99": percentile(seconds, 0.99),
            "events_per_s": acknowledged / elapsed, "acknowledged": acknowledged, "errors": len(errors),
            "first_error": errors[0] if errors else ""}


def events_scenario(params_file: Path, workdir: Path, workers_list: list[int], users: list[str], items: list[str],
                    args: argparse.Namespace) -> None:
    """POST /events rates (module docstring), then every acknowledged event found on disk again."""
    from recmoo_dag.data import find_log_files, read_interactions
    from recmoo_dag.events import read_segment

    rng = random.Random(0)
    print(f"\nevents: batches of {args.event_batch}, {args.event_requests} batches a run, median of {args.repeats}")
    print(f"{'workers':>7} {'clients':>7} {'p50 ms':>8} {'p99 ms':>8} {'events/s':>9} {'errors':>6}")
    for workers in workers_list:
        project_params = events_project(params_file, workdir / f"w{workers}")
        project, params, acknowledged = project_params.parent, load_params(project_params), 0
        with Service(project_params, workers) as service:
            for clients in (1, args.clients):
                runs = []
                for _ in range(args.repeats):
                    requests = [encode({"events": [{"user_id": rng.choice(users), "item_id": rng.choice(items)}
                                                   for _ in range(args.event_batch)]}, "/events")
                                for _ in range(args.event_requests)]
                    runs.append(run_timed(events_load(service.port, requests, clients, args.event_batch)))
                acknowledged += sum(run["acknowledged"] for run in runs)
                errors = sum(run["errors"] for run in runs)
                print(f"{workers:>7} {clients:>7} {statistics.median(r['p50'] for r in runs):>8.2f} "
                      f"{statistics.median(r['p99'] for r in runs):>8.2f} "
                      f"{statistics.median(r['events_per_s'] for r in runs):>9.0f} {errors:>6}"
                      + (f"  {next(r['first_error'] for r in runs if r['errors'])}" if errors else ""))
        # The service's shutdown rolled every segment: the batch files hold what was acknowledged.
        files = find_log_files(project / params.data.incoming_dir, params.data.format, params.data.generic)[0]
        on_disk = sum(len(read_interactions(path, params.data.format, params.data.generic)) for path in files)
        on_disk += sum(len(read_segment(path)) for path in (project / params.serve.events_log_dir).glob("*.jsonl"))
        print(f"        {acknowledged} acknowledged; on disk after the service stopped: {on_disk} events in "
              f"{len(files)} batch file(s)" + ("" if on_disk == acknowledged else "  MISMATCH"))


@contextlib.contextmanager
def collector_off():
    """This process's garbage collector off while timing, as `timeit` does. The client holds tens of
    thousands of objects (its imports), and a collection over them took ~1 ms every ~120 requests:
    with it on, the slowest 1 % of a lone client's sessions were those pauses (p99 2.8-3.3 ms with it
    on, 2.0 ms with it off, one client of 3,000 sessions, the same service)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def run_timed(coroutine):
    """`asyncio.run(coroutine)` with the collector off."""
    with collector_off():
        return asyncio.run(coroutine)


def in_process_session_ms(params, store: Path, requests: list[bytes], k: int, warm_up: int = 100) -> float:
    """The median ms of the session `requests` answered one at a time in this process, without HTTP, by
    the version `store` serves: `Recommender.answer` on one batch of one, as a worker's loop runs a lone
    request, on the worker's torch threads; the first `warm_up` requests are left out. Printed above the
    tables because this shared 2-core VM's speed swings by up to 2x between hours, and every latency
    below moves with it: a table read against this figure says whether the code or the machine changed."""
    import torch

    from recmoo_dag.recommender import Recommended, Recommender
    from recmoo_dag.store import version_dir

    torch.set_num_threads(params.serve.torch_threads)
    recommender = Recommender.load(version_dir(store), params.serve.session_window,
                                   params.serve.history_cache_mb << 20)
    seconds = []
    with collector_off():
        for request in requests:
            body = json.loads(request.partition(b"\r\n\r\n")[2])
            start = time.perf_counter()
            answer = recommender.prepare(str(body["user_id"]), [str(i) for i in body["recent_items"]], k)
            if not isinstance(answer, Recommended):
                recommender.answer([answer])
            seconds.append(time.perf_counter() - start)
    return statistics.median(seconds[warm_up:]) * 1e3


def load_rows(port: int, workers: int, plan: list[tuple[str, int]], user_ids: list[str], item_ids: list[str],
              args: argparse.Namespace) -> list[dict]:
    """One table row per (scenario, clients) of `plan`: the median of `args.repeats` runs."""
    rows = []
    for name, clients in plan:
        runs = [run_timed(load(port, scenarios(user_ids, item_ids, args.requests, args.k, seed=r + 1)[name],
                               clients, args.k)) for r in range(args.repeats)]
        rows.append({"workers": workers, "scenario": name, "clients": clients,
                     **{key: statistics.median(run[key] for run in runs) for key in ("p50", "p99", "rps")},
                     "p99_by_kind": {name: statistics.median(run["p99_by_kind"][name] for run in runs)
                                     for name in runs[0]["p99_by_kind"]},
                     "errors": sum(run["errors"] for run in runs),
                     "first_error": next((run["first_error"] for run in runs if run["errors"]), "")})
    return rows


def scratch_deployment(params_file: Path, workdir: Path) -> Path:
    """Deploy an untrained model of the configured architecture (serving cost does not depend on
    training) with candidates and a mid-sized policy into a store under `workdir`, from the
    project's features. `workdir` becomes a project of its own (every configured path must lie
    inside the params file's folder): the inputs the deploy reads are copied there, at the paths
    params.yaml gives them. Returns the scratch params file."""
    import pandas as pd
    import torch

    from recmoo_dag.features import load_features
    from recmoo_dag.generator import save_generator
    from recmoo_dag.model import SeqRecModel, save_model
    from recmoo_dag.policy import VARIABLE_NAMES, policy_vector
    from recmoo_dag.stages import candidates, deploy, exposure

    project = params_file.parent
    raw = load_params(params_file).model_dump(by_alias=True, mode="json")  # every key, defaults included
    for section, key in (("data", "raw_dir"), ("data", "interactions"), ("data", "items"), ("validate", "interactions"),
                         ("validate", "items"), ("features", "dir"), ("item_text", "dir")):
        source, copy = project / raw[section][key], workdir / raw[section][key]
        if source.is_dir():
            shutil.copytree(source, copy, dirs_exist_ok=True)
        elif source.is_file():
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, copy)
    raw["deploy"]["min_ratio"] = {}
    scratch = workdir / "params.yaml"
    scratch.write_text(yaml.safe_dump(raw, sort_keys=False))
    with contextlib.chdir(workdir):  # the stages read and write the params' relative paths
        params = load_params(scratch)
        torch.manual_seed(params.seed)
        architecture = {"n_items": load_features(params.features.dir).n_items, **params.model.model_dump()}
        save_model(SeqRecModel(**architecture).eval(), params.train.model_dir, architecture, {"scratch": True})
        save_generator(params.train.model_dir, "model", 0.0, 1.0)
        candidates.main(params)
        exposure.main(params)  # the version carries its prices
        policy = {"log10_temperature": 0.0, "debias": 0.2, "novelty": 0.2, "calibration": 0.2, "dither": 0.0,
                  "diversity": 0.5, "pool": 100}  # a diversified mid-pool policy
        Path(params.search.front).parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame([policy_vector(policy)], columns=list(VARIABLE_NAMES)).to_csv(params.search.front, index=False)
        deploy.main(params)
    return scratch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--scratch", action="store_true", help="deploy an untrained model into a temp store first")
    parser.add_argument("--workers", type=int, nargs="+", default=[2])
    parser.add_argument("--requests", type=int, default=2000, help="per scenario and repeat")
    parser.add_argument("--clients", type=int, default=16, help="connections of the concurrent scenarios")
    parser.add_argument("--session-clients", type=int, nargs="+", default=[1, 16, 64],
                        help="connections of the session scenario, one run each")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--scenarios", nargs="+", choices=["load", "attack", "events"], default=["load"])
    parser.add_argument("--event-batch", type=int, default=100, help="events per POST /events")
    parser.add_argument("--event-requests", type=int, default=300, help="batches per events run and repeat")
    parser.add_argument("--attackers", type=int, default=2000, help="connections of each kind in the attack")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp:
        params_file = Path(args.params).resolve()
        if args.scratch:
            params_file = scratch_deployment(params_file, Path(tmp))
        params = load_params(params_file)
        store = Path(params.deploy.store)
        store = store if store.is_absolute() else params_file.parent / store
        import numpy as np

        with np.load(store / "CURRENT" / "users.npz", allow_pickle=False) as users, \
                np.load(store / "CURRENT" / "catalog.npz", allow_pickle=False) as catalog:
            user_ids, item_ids = users["user_ids"].tolist(), catalog["item_ids"][1:].tolist()
        print(f"store {store} -> {os.readlink(store / 'CURRENT')}: {len(user_ids)} users, {len(item_ids)} items; "
              f"{args.requests} requests per scenario, median of {args.repeats} repeats, k = {args.k}")
        if "load" in args.scenarios:
            reference = in_process_session_ms(params, store, scenarios(user_ids, item_ids, 600, args.k, seed=0)["session"],
                                              args.k)
            print(f"this machine now: a lone session costs {reference:.2f} ms in this process, without HTTP "
                  f"(median of 500, Recommender.answer)")
        rows = []
        for workers in args.workers:
            with Service(params_file, workers) as service:
                if "attack" in args.scenarios:
                    # Every attacker is dropped or answered by then, if the deadlines hold.
                    watch = params.serve.header_timeout_s + params.serve.body_timeout_s + 10
                    report_attack(workers, args.attackers, watch, asyncio.run(attack(service.port, args.attackers, watch)))
                if "load" not in args.scenarios:
                    continue
                warm = scenarios(user_ids, item_ids, 300, args.k, seed=0)
                asyncio.run(load(service.port, warm["mixed"], 4, args.k))
                plan = ([("user", c) for c in (1, args.clients)] + [("session", c) for c in args.session_clients]
                        + [("mixed", args.clients)])
                rows += load_rows(service.port, workers, plan, user_ids, item_ids, args)
                events = takes_events(service.port)
            if "load" in args.scenarios and events:  # its events must not land in this project's incoming folder
                with Service(events_project(params_file, Path(tmp) / f"mixed-w{workers}"), workers) as service:
                    asyncio.run(load(service.port, warm["mixed"], 4, args.k))
                    rows += load_rows(service.port, workers, [("mixed+ev", args.clients)], user_ids, item_ids, args)
        if "events" in args.scenarios:
            events_scenario(params_file, Path(tmp), args.workers, [str(u) for u in user_ids],
                            [str(i) for i in item_ids], args)
    if not rows:
        return
    print(f"\n{'workers':>7} {'scenario':>9} {'clients':>7} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'errors':>6}")
    for row in rows:
        print(f"{row['workers']:>7} {row['scenario']:>9} {row['clients']:>7} {row['p50']:>8.2f} {row['p99']:>8.2f} "
              f"{row['rps']:>8.0f} {row['errors']:>6}"
              + ("  p99 " + ", ".join(f"{name} {ms:.2f}" for name, ms in row["p99_by_kind"].items())
                 if len(row["p99_by_kind"]) > 1 else "")
              + (f"  {row['first_error']}" if row["errors"] else ""))


if __name__ == "__main__":
    main()
