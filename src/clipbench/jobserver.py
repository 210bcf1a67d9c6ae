"""A local job server: one process that has imported torch, torchvision and clipbench once, and
forks a child for each ``clipbench`` command the workflow runs on this machine.

Every job of the embedded default pays ~8 s of imports on a 2-core machine (``torch`` ~3-5 s,
``torchvision`` ~4 s, most of it ``torch._dynamo``, which torchvision.ops imports); the default
runs ~60 jobs. A forked child starts with those modules loaded, so a job costs its own work.

The Snakefile starts the server on a local run (``onstart``) and points the jobs at it in the
environment (``CLIPBENCH_JOBSERVER``, the socket's path); ``clipbench`` then hands its command
line, working directory, environment and standard streams to the server and waits for the
child's exit status. The child is the command as a fresh process would run it: the client's
streams (passed as file descriptors), directory and environment, default signal handlers, and
fresh seeds for Python's and NumPy's global generators. A job runs in-process instead when no
server answers (a SLURM node, ``dvc repro``, a server that has exited), or when the client's
environment differs from the server's in a variable read at import time (``ATEN_*``, ``OMP_*``,
``MKL_*``, ``CUDA_*``, ``TORCH*``, ``PYTHON*``, ...), which a forked child could not honour.

Killing the client (Snakemake cancelling a job) kills the child: the client forwards SIGTERM and
SIGINT, and the server kills a child whose client has gone. The server exits after ``idle``
seconds without a job, and at the workflow's end.

This module imports no torch: the client path costs only the socket round trip.
"""
from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
import traceback

ENV = "CLIPBENCH_JOBSERVER"  # the socket's path, set by the workflow
# Read when a module is imported (kernels, thread pools, devices, hashing): a child forked from
# a server that imported under other values would not honour the client's.
IMPORT_TIME_PREFIXES = ("ATEN_", "OMP_", "MKL_", "OPENBLAS_", "CUDA_", "CUBLAS_", "NVIDIA_", "TORCH", "PYTORCH_",
                        "PYTHON", "LD_", "KMP_", "GOMP_", "MPLBACKEND", "NUMEXPR_")
# What a job imports, loaded once by the server.
PRELOAD = ("torch", "torchvision", "torchvision.models", "torchvision.transforms.v2", "torchvision.datasets",
           "numpy", "PIL.Image", "clipbench.cli", "clipbench.engine.train", "clipbench.tasks.classification",
           "clipbench.tasks.segmentation", "clipbench.tasks.superres", "clipbench.diagnostics.noise",
           "clipbench.diagnostics.heavytail", "clipbench.data.prepare", "clipbench.report.render")
_HEADER = struct.Struct("!I")
_SHUTDOWN = "shutdown"


def socket_path(workdir: str) -> str:
    """A short per-user, per-directory path (a Unix socket's path is limited to ~100 bytes)."""
    digest = hashlib.sha256(os.path.abspath(workdir).encode()).hexdigest()[:12]
    return os.path.join(tempfile.gettempdir(), f"clipbench-{os.getuid()}-{digest}.sock")


def _import_time_env(env) -> dict:
    # Thread counts are not compared: Snakemake sets them per job (OMP_NUM_THREADS = its
    # threads), and the child applies them as a fresh process would (_apply_threads).
    return {k: v for k, v in env.items() if k.startswith(IMPORT_TIME_PREFIXES) and not k.endswith("_NUM_THREADS")}


def _apply_threads(env) -> None:
    """torch's intra-op threads as a fresh process started with ``env`` would have them (OpenMP
    read OMP_NUM_THREADS when the server loaded it; the server never started its thread pool)."""
    value = env.get("OMP_NUM_THREADS") or env.get("MKL_NUM_THREADS")
    if value and value.isdigit() and int(value) > 0:
        import torch

        torch.set_num_threads(int(value))


def _send(sock: socket.socket, obj, fds=()) -> None:
    data = json.dumps(obj).encode()
    msg = _HEADER.pack(len(data)) + data
    if fds:
        socket.send_fds(sock, [msg], list(fds))
    else:
        sock.sendall(msg)


def _recv(sock: socket.socket, want_fds: int = 0):
    """One message (and the file descriptors sent with it); None at end of stream."""
    msg, fds, _flags, _addr = socket.recv_fds(sock, 1 << 20, want_fds) if want_fds else (sock.recv(1 << 20), [], 0, None)
    if not msg:
        return None, fds
    size = _HEADER.unpack(msg[:_HEADER.size])[0]
    data = msg[_HEADER.size:]
    while len(data) < size:
        more = sock.recv(size - len(data))
        if not more:
            return None, fds
        data += more
    return json.loads(data), fds


# -- the client (inside `clipbench ...`) ---------------------------------------------------------

def delegate(argv: list[str]) -> int | None:
    """Run ``clipbench argv`` in a child of the server named by $CLIPBENCH_JOBSERVER and return its
    exit status; None when no server took the job (then the caller runs it itself)."""
    path = os.environ.get(ENV)
    if not path:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        _send(sock, {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}, fds=(0, 1, 2))
        reply, _ = _recv(sock)
        if not reply or "pid" not in reply:
            return None  # refused (a different import-time environment) or the server is leaving
        child = reply["pid"]

        def forward(signum, _frame):
            try:
                os.kill(child, signum)
            except ProcessLookupError:
                pass

        previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        try:
            done, _ = _recv(sock)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        if not done:
            print(f"clipbench: the job server at {path} went away while running the job", file=sys.stderr)
            return 1
        return int(done["rc"])
    except (FileNotFoundError, ConnectionRefusedError):
        return None
    finally:
        sock.close()


def shutdown(path: str) -> bool:
    """Ask the server at ``path`` to exit once its running jobs are done."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        _send(sock, {"command": _SHUTDOWN})
        return True
    except (FileNotFoundError, ConnectionRefusedError):
        return False
    finally:
        sock.close()


# -- the server ------------------------------------------------------------------------------------

def _child(request: dict, fds: list[int], listener: socket.socket, conn: socket.socket, imported_env: dict,
           run) -> None:
    """In the forked child: become the client's command, run it, exit with its status."""
    rc = 1
    try:
        listener.close()
        conn.close()
        for target, fd in zip((0, 1, 2), fds):
            os.dup2(fd, target)
            os.close(fd)
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(s, signal.SIG_DFL)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for key, value in imported_env.items():  # what importing set (as it would have in the job)
            os.environ.setdefault(key, value)
        tempfile.tempdir = None  # the job's TMPDIR, not the server's
        os.environ.pop(ENV, None)  # a command this one runs (torchrun, ...) starts as a plain process
        sys.stdin = open(0, closefd=False)
        sys.stdout = open(1, "w", buffering=1, closefd=False)
        sys.stderr = open(2, "w", buffering=1, closefd=False)
        sys.argv = ["clipbench", *request["argv"]]
        import random

        import numpy as np

        random.seed()
        np.random.seed()
        _apply_threads(request["env"])
        rc = run(request["argv"])
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - the child reports anything, as a fresh process would
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(rc)


def _watch(conn: socket.socket, pid: int, jobs: set, lock: threading.Lock) -> None:
    """Report the child's exit status to its client; kill the child when the client goes."""
    status = None
    try:
        while status is None:
            done, raw, usage = os.wait4(pid, os.WNOHANG)
            if done:
                status = os.waitstatus_to_exitcode(raw)
                break
            readable, _, _ = select.select([conn], [], [], 0.2)
            if readable and not conn.recv(1):  # the client is gone: so is its job
                print(f"clipbench jobserver: job {pid}: its client is gone, stopping it", flush=True)
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 10
                while not os.waitpid(pid, os.WNOHANG)[0]:
                    if time.monotonic() > deadline:
                        os.kill(pid, signal.SIGKILL)
                    time.sleep(0.1)
                return
        rc = status if status >= 0 else 128 - status  # killed by a signal: as a shell reports it
        # The job's CPU time (Snakemake's benchmark: counts only the client's; bench workflow reads this).
        print(f"clipbench jobserver: job {pid}: exit {rc}, cpu {usage.ru_utime + usage.ru_stime:.2f} s", flush=True)
        try:
            _send(conn, {"rc": rc})
        except OSError:
            pass
    finally:
        conn.close()
        with lock:
            jobs.discard(pid)


def serve(path: str, run, idle: float = 120.0, preload=PRELOAD) -> None:
    """Listen at ``path`` (mode 0600) right away, import ``preload``, then fork a child per job,
    which calls ``run(argv)`` (``clipbench.cli.run``) and exits with its status; exit after
    ``idle`` seconds without a job, or when asked."""
    if os.path.exists(path):
        if listening(path):
            print(f"clipbench jobserver: one already listens at {path}", file=sys.stderr)
            return
        os.unlink(path)  # left by a server that was killed
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        listener.bind(path)
    finally:
        os.umask(old)
    listener.listen(64)
    jobs: set[int] = set()  # running children
    lock = threading.Lock()
    try:
        import importlib

        before = dict(os.environ)
        env = _import_time_env(before)
        t0 = time.perf_counter()
        for name in preload:
            importlib.import_module(name)
        imported_env = {k: v for k, v in os.environ.items() if before.get(k) != v}
        print(f"clipbench jobserver: {path}, {len(preload)} modules in {time.perf_counter() - t0:.1f} s", flush=True)
        last, stopping = time.monotonic(), False
        listener.settimeout(1.0)
        while True:
            with lock:
                busy = bool(jobs)
            if busy:
                last = time.monotonic()
            elif stopping or time.monotonic() - last > idle:
                break
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            conn.settimeout(None)
            try:
                request, fds = _recv(conn, want_fds=3)
            except (OSError, ValueError):
                conn.close()
                continue
            if not request or request.get("command") == _SHUTDOWN:
                stopping = stopping or bool(request)
                conn.close()
                continue
            theirs = _import_time_env(request["env"])
            if len(fds) != 3 or theirs != env:
                differ = set(theirs.items()) ^ set(env.items())
                print(f"clipbench jobserver: refused {' '.join(request['argv'][:1])}: import-time environment differs "
                      f"({', '.join(sorted({k for k, _ in differ}))}); it runs in its own process", flush=True)
                for fd in fds:
                    os.close(fd)
                _send(conn, {"refused": "environment"})
                conn.close()
                continue
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(request, fds, listener, conn, imported_env, run)
            for fd in fds:
                os.close(fd)
            _send(conn, {"pid": pid})
            print(f"clipbench jobserver: job {pid}: clipbench {' '.join(request['argv'][:1])}", flush=True)
            last = time.monotonic()
            with lock:
                jobs.add(pid)
            threading.Thread(target=_watch, args=(conn, pid, jobs, lock), daemon=True).start()
    finally:
        listener.close()
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def listening(path: str) -> bool:
    """Whether something listens at ``path``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        return True
    except (FileNotFoundError, ConnectionRefusedError):
        return False
    finally:
        sock.close()
