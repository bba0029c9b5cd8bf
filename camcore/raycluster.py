"""What every use of a Ray cluster shares: connecting, checking that a worker runs the
driver's software, sizing its thread pools, and shipping a Keras model to it by value.

Used by the evaluation's Ray runner (:mod:`camcore.evaluation.ray_runner`) and the
dashboard's Ray backend (:mod:`camcore.backends.ray`). Ray, TensorFlow and Keras are
imported only when a function here needs them: ``import camcore`` imports none of them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)

RAY_REQUIREMENT = "ray[data]==2.60.0"


def import_ray(purpose: str = "--ray") -> Any:
    """The ``ray`` module (with Ray Data), or ImportError saying what ``purpose`` needs."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ImportError(f"{purpose} needs Ray: pip install '{RAY_REQUIREMENT}' ({exc})") from exc
    return ray


def connect(address: str | None) -> bool:
    """Connect to ``address``, else to ``$RAY_ADDRESS``, else start a local Ray on this
    machine's loopback interface; True if this call connected (and must disconnect).
    An existing connection of this process is used as it is (False)."""
    ray = import_ray()

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and address != "local":
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        # A local instance is bound to 127.0.0.1: Ray's default would be the machine's
        # network address, open to anyone who can reach it.
        ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING,
                 _node_ip_address="127.0.0.1")
    return True


def unreachable_reason(address: str, timeout: float = 3.0) -> str | None:
    """Why nothing answers at ``address`` ("host:port" or "ray://host:port"), or None if a
    TCP connection opens there. Ray itself keeps retrying an address that does not answer
    for minutes; this check takes at most ``timeout`` seconds. Addresses Ray resolves
    itself ("auto", "local") are not checked (None)."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port:
        return None if address in ("auto", "local") else f"{address!r} is not a host:port address"
    try:
        number = int(port)
    except ValueError:
        return f"{address!r} has no port number"
    try:
        with socket.create_connection((host.strip("[]"), number), timeout=timeout):
            return None
    except OSError as exc:
        return f"nothing answers at {hostport} ({exc.strerror or exc})"


def software_versions() -> dict[str, str]:
    """The versions that decide the numbers (camcore, TensorFlow, Keras, NumPy, OpenCV):
    a worker on a node with other versions refuses to run, as its numbers could differ."""
    import importlib.metadata

    import cv2
    import keras
    import tensorflow as tf

    try:
        camcore_version = importlib.metadata.version("cam-studio")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        camcore_version = "source"
    return {"camcore": camcore_version, "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "opencv": cv2.__version__}


def version_mismatch(here: Mapping[str, str], driver: Mapping[str, str]) -> str | None:
    """"this node runs other versions than the driver: ..." naming each difference, or None."""
    if dict(here) == dict(driver):
        return None
    differ = ", ".join(f"{name} {here.get(name)} (driver: {driver.get(name)})"
                       for name in sorted(set(here) | set(driver)) if here.get(name) != driver.get(name))
    return f"this node runs other versions than the driver: {differ}"


def cap_threads(threads: int) -> None:
    """Size TensorFlow's and OpenCV's thread pools to a worker's CPUs, before TensorFlow
    starts: workers sharing a machine must not each use every core."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import cv2
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # this worker process already ran TensorFlow
        logger.warning("TensorFlow was already initialized in this worker; its thread pools are not capped")
    cv2.setNumThreads(threads)


def weights_fingerprint(model: keras.Model) -> str:
    """A digest of every weight (shape, dtype and values, in the model's order): equal
    for the same model however it was shipped and loaded."""
    digest = hashlib.blake2b(digest_size=16)
    for weight in model.weights:
        array = np.ascontiguousarray(np.asarray(weight))
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def keras_model_bytes(model: keras.Model) -> tuple[bytes, str]:
    """``(bytes, filename)`` of ``model`` saved as a ``.keras`` file: how a model that is
    not a file (a demo, an application, an upload, one built in memory) travels, so a
    node needs neither the file nor the demo assets nor an application's weights."""
    with tempfile.TemporaryDirectory(prefix="camcore-model-") as folder:
        saved = Path(folder) / "model.keras"
        model.save(saved)
        return saved.read_bytes(), saved.name


def load_shipped_model(data: bytes, filename: str, weights: str) -> Any:
    """The model in ``data`` (a file named ``filename``, loaded in Keras safe mode);
    ValueError if its :func:`weights_fingerprint` is not ``weights`` (the driver's)."""
    from camcore.models import load_model_bytes

    model = load_model_bytes(data, filename)
    if weights_fingerprint(model) != weights:
        raise ValueError("the shipped model's weights differ from the driver's")
    return model
