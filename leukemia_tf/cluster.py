"""TF_CONFIG checked before TensorFlow starts, and a bounded wait for the peers.

`check` refuses, in one line, a TF_CONFIG that TensorFlow would only fail on after minutes
(or never): JSON that is not an object, a cluster that is not `{job: ["host:port", …]}`,
an address without a host or a port in 1..65535, one endpoint listed twice, however it
is spelled (`localhost:2222` and `127.0.0.1:2222`: two tasks
cannot both serve it: the second fails to start its gRPC server and the first waits for
it forever), and a task whose type is not a job of the cluster or whose index is out of
range.

`PeerWatchdog`: TensorFlow waits for every worker of the cluster without a deadline, and
while it waits in C++ it ignores SIGTERM. The trainer arms this watchdog before it creates
the multi-worker strategy and disarms it once a first collective succeeded; when
`LEUKEMIA_TF_PEER_TIMEOUT` seconds (default 600) pass first, it prints one `error:` line
naming the peers that do not accept a TCP connection at their address (or all peers when
every address answers) and ends the process with exit status 1.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import threading
from typing import List, Optional, Tuple

from leukemia_tf.errors import JsonFileError, UserError, one_line

ENV = "TF_CONFIG"
TIMEOUT_ENV = "LEUKEMIA_TF_PEER_TIMEOUT"
DEFAULT_TIMEOUT_S = 600
NAME = "the TF_CONFIG environment variable"


class ClusterError(ValueError, UserError):
    """A TF_CONFIG that cannot describe a cluster; the message says what is wrong."""


def parse(text: Optional[str] = None) -> dict:
    """The parsed TF_CONFIG (the environment's when `text` is None); {} when unset."""
    text = os.environ.get(ENV, "") if text is None else text
    try:
        value = json.loads(text or "{}")
    except ValueError as e:
        raise JsonFileError(NAME, one_line(e)) from None
    if not isinstance(value, dict):
        raise ClusterError(f"{NAME} is not a JSON object ({{\"cluster\": …, \"task\": …}})")
    return value


def _port(address) -> Optional[int]:
    if not isinstance(address, str):
        return None
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        return None
    return int(port)


def _hosts(host: str) -> frozenset:
    """The addresses a host name stands for: every loopback name is one host, and a
    name is resolved when it can be (else compared as written)."""
    host = host.strip("[]").lower()
    try:
        infos = socket.getaddrinfo(host, None)
        ips = {info[4][0] for info in infos}
    except (OSError, UnicodeError):
        ips = {host}
    return frozenset("loopback" if ip == "::1" or ip.startswith("127.") or ip == "localhost"
                     else ip for ip in ips)


def _same_endpoint(a: str, b: str) -> bool:
    """`a` and `b` (both host:port) name one endpoint: the same text, or one port on
    hosts that resolve to a shared address (`localhost:2222` and `127.0.0.1:2222`)."""
    if a == b:
        return True
    if _port(a) != _port(b):
        return False
    return bool(_hosts(a.rpartition(":")[0]) & _hosts(b.rpartition(":")[0]))


def check(tf_config: dict) -> None:
    """ClusterError for the first rule of the module doc that `tf_config` breaks."""
    cluster = tf_config.get("cluster", {})
    if not isinstance(cluster, dict) or not all(isinstance(v, list) for v in cluster.values()):
        raise ClusterError(f"{NAME}: \"cluster\" must map each job to a list of "
                           "\"host:port\" addresses")
    seen = {}
    for job, addresses in cluster.items():
        for i, address in enumerate(addresses):
            if _port(address) is None:
                raise ClusterError(f"{NAME}: {job} {i} has the address {address!r}, not "
                                   "host:port with a port in 1..65535")
            same = next((other for other in seen if _same_endpoint(other, address)), None)
            if same is not None:
                spelled = "" if same == address else f" (as {same})"
                raise ClusterError(f"{NAME}: {seen[same]} and {job} {i} have the same "
                                   f"address {address}{spelled}; give every task its own "
                                   "port")
            seen[address] = f"{job} {i}"
    task = tf_config.get("task")
    if task is None:
        return
    task = task if isinstance(task, dict) else {}
    kind, index = task.get("type"), task.get("index")
    index = int(index) if isinstance(index, str) and index.isdigit() else index
    if kind not in cluster:
        raise ClusterError(f"{NAME}: task type {kind!r} is not a job of the cluster "
                           f"({', '.join(cluster) or 'none'})")
    if not isinstance(index, int) or not 0 <= index < len(cluster[kind]):
        raise ClusterError(f"{NAME}: task index {index!r} is out of range: the cluster has "
                           f"{len(cluster[kind])} {kind} task(s), 0..{len(cluster[kind]) - 1}")


def workers(tf_config: dict) -> int:
    """Tasks that train (chief and workers)."""
    return sum(len(v) for k, v in tf_config.get("cluster", {}).items()
               if k in ("chief", "worker"))


def peers(tf_config: dict) -> List[Tuple[str, str]]:
    """(`job index`, address) of every task but this one."""
    task = tf_config.get("task") or {}
    return [(f"{job} {i}", address)
            for job, addresses in tf_config.get("cluster", {}).items()
            for i, address in enumerate(addresses)
            if (job, i) != (task.get("type"), task.get("index"))]


def silent(tf_config: dict, timeout_s: float = 2.0) -> List[str]:
    """`job index (address)` of the peers that accept no TCP connection."""
    out = []
    for who, address in peers(tf_config):
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
                pass
        except OSError:
            out.append(f"{who} ({address})")
    return out


def timeout_s() -> float:
    """The peer wait bound: LEUKEMIA_TF_PEER_TIMEOUT seconds, else DEFAULT_TIMEOUT_S."""
    text = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ClusterError(f"{TIMEOUT_ENV}={text!r} is not a number of seconds") from None
    if not value > 0:
        raise ClusterError(f"{TIMEOUT_ENV}={text!r} must be a number of seconds > 0")
    return value


class PeerWatchdog:
    """`with PeerWatchdog(tf_config):` around the first contact with the peers; ends the
    process with one line when it lasts longer than `timeout_s()` (see the module doc)."""

    def __init__(self, tf_config: dict, seconds: Optional[float] = None, exit=os._exit):
        self.tf_config, self.seconds = tf_config, seconds or timeout_s()
        self._done = threading.Event()
        self._exit = exit

    def _watch(self) -> None:
        if self._done.wait(self.seconds):
            return
        missing = silent(self.tf_config) or [f"{w} ({a})" for w, a in peers(self.tf_config)]
        print(f"error: no contact with {', '.join(missing)} after {self.seconds:g} s of "
              f"waiting for the cluster in {ENV}: start every worker with the same flags "
              f"(or set {TIMEOUT_ENV} to wait longer)", file=sys.stderr, flush=True)
        self._exit(1)

    def __enter__(self):
        threading.Thread(target=self._watch, daemon=True, name="peer-watchdog").start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        return False
