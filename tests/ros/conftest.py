"""ROS test fixtures: a private ROS domain, and a harness that spins a node under test beside a
test client node.

Traffic is real DDS (FastDDS; rclpy has no intra-process shortcut), kept on this machine
(ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST) and on a domain of its own, with every test's topics under a
namespace of their own, so parallel runs by other people on the same machine do not cross. The tiny
model bundles (tiny_bundle, tiny_onnx_bundle) come from tests/conftest.py.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
import time

import pytest

# before rclpy creates any participant
os.environ["ROS_DOMAIN_ID"] = os.environ.get("GENIE_TEST_ROS_DOMAIN_ID", str(11 + os.getpid() % 80))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

rclpy = pytest.importorskip("rclpy", reason="ROS 2 rclpy is not installed (the 'ros' extra or a sourced ROS 2)")

_ns_counter = itertools.count()


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models gain nothing from a second thread; on a shared 2-core machine an oversubscribed
    OpenMP pool is many times slower (a tiny step: 22 ms with one thread, >1 s with two under load)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Harness:
    """A node under test and a client node, spun by one executor on a background thread; closed the
    way the node entry points stop (`ros_nodes.node_main.stop`), so no callback is left to fail on a
    destroyed handle and print "never retrieved" into a later test's output."""

    def __init__(self):
        from rclpy.context import Context
        from rclpy.executors import MultiThreadedExecutor

        self.ns = f"/t{os.getpid()}_{next(_ns_counter)}"
        self.context = Context()
        rclpy.init(context=self.context)
        self.client = rclpy.create_node("test_client", namespace=self.ns, context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=3, context=self.context)
        self.executor.add_node(self.client)
        self.nodes = [self.client]
        self._spinning = True
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        while self._spinning and self.context.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def add(self, node_cls, **params):
        """Start node_cls in this harness's namespace with these parameters."""
        from rclpy.parameter import Parameter

        node = node_cls(namespace=self.ns, context=self.context,
                        parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def subscribe(self, msg_type, topic, qos=10) -> "queue.Queue":
        q: queue.Queue = queue.Queue()
        self.client.create_subscription(msg_type, topic, q.put, qos)
        return q

    def publisher(self, msg_type, topic, qos=10, *, wait_for_subscribers: int = 1):
        pub = self.client.create_publisher(msg_type, topic, qos)
        wait_until(lambda: pub.get_subscription_count() >= wait_for_subscribers, what=f"a subscriber on {topic}")
        return pub

    def call(self, srv_type, name, request, timeout=30.0):
        cli = self.client.create_client(srv_type, name)
        assert cli.wait_for_service(timeout_sec=10.0), f"service {name} did not appear"
        future = cli.call_async(request)
        wait_until(future.done, timeout, what=f"an answer from {name}")
        return future.result()

    @staticmethod
    def take(q, n, timeout=20.0, what="messages"):
        return take(q, n, timeout, what)

    @staticmethod
    def wait_until(cond, timeout=20.0, what="the condition"):
        return wait_until(cond, timeout, what)

    def close(self):
        from ros_nodes.node_main import stop

        self._spinning = False
        self._thread.join(5.0)
        stop(self.executor, *self.nodes, context=self.context)


@pytest.fixture
def ros():
    h = Harness()
    yield h
    h.close()


def wait_until(cond, timeout: float = 20.0, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def take(q: "queue.Queue", n: int, timeout: float = 20.0, what: str = "messages") -> list:
    """n messages from q, or an AssertionError naming how many came."""
    out, deadline = [], time.monotonic() + timeout
    while len(out) < n:
        left = deadline - time.monotonic()
        try:
            out.append(q.get(timeout=max(left, 0.001)))
        except queue.Empty:
            raise AssertionError(f"got {len(out)} of {n} {what} in {timeout:g} s") from None
    return out
