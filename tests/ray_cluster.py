"""A Ray cluster of several nodes on 127.0.0.1 for tests (the approach of
``test_evaluate_ray.py``'s fixture, as a context manager other tests can share)."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import tempfile
from typing import Any, Iterator

import psutil
import pytest


@contextlib.contextmanager
def local_cluster(nodes: int = 2, cpus: int = 1) -> Iterator[Any]:
    """A head node and ``nodes - 1`` worker nodes, ``cpus`` CPUs each, on 127.0.0.1 with
    token authentication; every process of it is stopped at the end (this process's
    Ray connection too). Yields the ``ray.cluster_utils.Cluster`` (``.address``)."""
    folder = tempfile.mkdtemp(prefix="camray")  # short: Ray's socket paths must stay < 108 chars
    env = {
        "RAY_TMPDIR": folder,  # sessions and the address file stay in this folder
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        import ray
        import ray._private.ray_constants as ray_constants
        from ray.cluster_utils import Cluster

        _reload_authentication()
        # Ray swaps a 127.0.0.1 address for the machine's network address unless it runs
        # in single-machine mode; this keeps the driver on the loopback interface too.
        patch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
        cluster = Cluster(
            initialize_head=True,
            head_node_args={"node_ip_address": "127.0.0.1", "num_cpus": cpus, "include_dashboard": False},
        )
        try:
            for _ in range(nodes - 1):
                cluster.add_node(node_ip_address="127.0.0.1", num_cpus=cpus)
            yield cluster
        finally:
            if ray.is_initialized():
                ray.shutdown()
            workers = [child for pid in raylet_pids(cluster) for child in psutil.Process(pid).children(recursive=True)]
            cluster.shutdown()
            # a worker may outlive its raylet by a moment: wait for it, then stop it
            _, alive = psutil.wait_procs(workers, timeout=10)
            for process in alive:
                process.kill()
            shutil.rmtree(folder, ignore_errors=True)
    _reload_authentication()  # back to the environment's settings


def _reload_authentication() -> None:
    """Make this process read RAY_AUTH_MODE and RAY_AUTH_TOKEN again: Ray caches both when
    first used, so a test that imported Ray earlier would connect without the token."""
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def raylet_pids(cluster: Any) -> list[int]:
    return [node.all_processes["raylet"][0].process.pid for node in [cluster.head_node, *cluster.worker_nodes]]


def worker_processes(cluster: Any, marker: str) -> list[psutil.Process]:
    """The cluster's worker processes whose command line names ``marker`` (e.g. an actor class)."""
    return [
        child
        for pid in raylet_pids(cluster)
        for child in psutil.Process(pid).children(recursive=True)
        if marker in " ".join(child.cmdline())
    ]
