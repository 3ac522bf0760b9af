"""TF_CONFIG checked before TensorFlow starts, the bounded wait for peers, and the
lost-peer line naming the worker that died."""
import json
import socket
import time

import pytest

from leukemia_tf import cluster
from leukemia_tf.errors import UserError


def _config(addresses, kind="worker", index=0):
    return {"cluster": {"worker": addresses}, "task": {"type": kind, "index": index}}


@pytest.mark.parametrize("tf_config,message", [
    (_config(["localhost:23456", "localhost:23456"]),
     "worker 0 and worker 1 have the same address localhost:23456; give every task its own "
     "port"),
    (_config(["127.0.0.1:2222", "localhost:2222"]),
     "worker 0 and worker 1 have the same address localhost:2222 (as 127.0.0.1:2222)"),
    (_config(["localhost:1", "localhost:2"], index=2),
     "task index 2 is out of range: the cluster has 2 worker task(s), 0..1"),
    (_config(["localhost:1", "localhost:2"], kind="chief"),
     "task type 'chief' is not a job of the cluster (worker)"),
    (_config(["localhost:1", "localhost"]),
     "worker 1 has the address 'localhost', not host:port with a port in 1..65535"),
    (_config(["localhost:1", "localhost:70000"]),
     "worker 1 has the address 'localhost:70000', not host:port"),
    ({"cluster": {"worker": "localhost:1"}}, '"cluster" must map each job to a list'),
])
def test_bad_tf_config_is_one_line(tf_config, message):
    with pytest.raises(UserError) as err:
        cluster.check(tf_config)
    assert str(err.value).startswith(f"the TF_CONFIG environment variable: {message}")
    assert "\n" not in str(err.value)


def test_good_tf_configs_pass():
    cluster.check({})
    cluster.check(_config(["localhost:1", "localhost:2"], index=1))
    cluster.check({"cluster": {"chief": ["a:1"], "worker": ["a:2", "b:1"]},
                   "task": {"type": "worker", "index": "1"}})
    assert cluster.workers(_config(["a:1", "b:1"])) == 2


def test_train_refuses_duplicate_addresses_before_tensorflow(records_dir, tmp_path,
                                                             monkeypatch):
    from tests.cli.test_cli import _probe
    monkeypatch.setenv("TF_CONFIG", json.dumps(_config(["localhost:23456"] * 2, index=1)))
    last, err = _probe("train", f"--records_dir={records_dir}", f"--model_dir={tmp_path}/m",
                       "--strategy=multi_worker")
    assert last == "exit 1 raised [False] tf False", (last, err)
    assert err == ["error: the TF_CONFIG environment variable: worker 0 and worker 1 have "
                   "the same address localhost:23456; give every task its own port"], err
    monkeypatch.setenv("LEUKEMIA_TF_PEER_TIMEOUT", "-3")
    monkeypatch.delenv("TF_CONFIG")
    last, err = _probe("train", f"--records_dir={records_dir}", f"--model_dir={tmp_path}/m")
    assert last == "exit 1 raised [False] tf False" and err == [
        "error: LEUKEMIA_TF_PEER_TIMEOUT='-3' must be a number of seconds > 0"], err


def _closed_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_watchdog_names_the_silent_peer_and_ends_the_process(capsys):
    port = _closed_port()
    with socket.socket() as listening:  # worker 2 is up, worker 1 is not
        listening.bind(("localhost", 0))
        listening.listen()
        up = listening.getsockname()[1]
        tf_config = _config(["localhost:1", f"localhost:{port}", f"localhost:{up}"])
        exits = []
        with cluster.PeerWatchdog(tf_config, seconds=0.3, exit=exits.append):
            for _ in range(100):
                if exits:
                    break
                time.sleep(0.05)
    assert exits == [1]
    assert capsys.readouterr().err.splitlines() == [
        f"error: no contact with worker 1 (localhost:{port}) after 0.3 s of waiting for the "
        "cluster in TF_CONFIG: start every worker with the same flags (or set "
        "LEUKEMIA_TF_PEER_TIMEOUT to wait longer)"]


def test_watchdog_is_quiet_once_the_cluster_answered(capsys):
    exits = []
    with cluster.PeerWatchdog(_config(["localhost:1", "localhost:2"]), seconds=0.2,
                              exit=exits.append):
        pass
    time.sleep(0.4)
    assert exits == [] and capsys.readouterr().err == ""


def test_lost_peer_line_names_the_other_worker_not_this_one():
    from leukemia_tf.training.trainer_errors import lost_peer_line
    message = ("Collective ops is aborted by: failed to connect to all addresses\n"
               "[[{{node CollectiveReduceV2}}]] on /job:worker/replica:0/task:0/device:CPU:0"
               "\nAdditional GRPC error information from remote target "
               "/job:worker/replica:0/task:1")
    assert lost_peer_line(message, ("worker", 0)).startswith(
        "lost contact with worker 1 during multi-worker training (Collective ops is aborted")
    assert lost_peer_line(message, ("worker", 1)).startswith("lost contact with worker 0 ")
    only_own = "Collective ops is aborted on /job:worker/replica:0/task:0/device:CPU:0"
    assert lost_peer_line(only_own, ("worker", 0), [("worker", 1)]).startswith(
        "lost contact with worker 1 ")
    assert "a worker (not named by TensorFlow)" in lost_peer_line(
        only_own, ("worker", 0), [("worker", 1), ("worker", 2)])
