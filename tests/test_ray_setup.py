"""The private local Ray a job starts: what listens on the network and whether it lets a stranger in.

Ray's gRPC servers listen on every interface and Ray has no setting to bind them to 127.0.0.1, so the job
turns token authentication on with a fresh token: every listener must be on loopback, or refuse a request
that carries no token, or be the read-only Prometheus metrics exporter."""
import os
import subprocess
import sys

import grpc
import psutil
import pytest

pytestmark = pytest.mark.slow  # starts a job's own Ray in a subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One real method of each Ray gRPC service (a server answers UNAUTHENTICATED before it runs it).
PROBES = ("/ray.rpc.NodeInfoGcsService/GetClusterId", "/ray.rpc.NodeManagerService/GetNodeStats",
          "/ray.rpc.CoreWorkerService/NumPendingTasks", "/ray.rpc.ReporterService/GetTraceback",
          "/ray.rpc.LogService/ListLogs", "/ray.rpc.ObjectManagerService/Pull")


@pytest.fixture(scope="module")
def job_ray():
    """A process that starts Ray as every job does (init_ray without an address), held until the tests end;
    started with RAY_AUTH_MODE=disabled in its environment, as CI machines often have."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": REPO}
    env.pop("RAY_ADDRESS", None)
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; from thorax_ray.ray_setup import init_ray; "
                               "init_ray(num_cpus=1); print('READY', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        assert process.stdout.readline().strip() == "READY"
        yield psutil.Process(process.pid)
    finally:
        process.stdin.close()
        process.wait(timeout=60)


def listeners(root: psutil.Process) -> list[tuple[str, str, int]]:
    found = []
    for process in [root, *root.children(recursive=True)]:
        try:
            found += [(process.name(), c.laddr.ip, c.laddr.port) for c in process.net_connections(kind="tcp")
                      if c.status == psutil.CONN_LISTEN]
        except psutil.Error:
            continue
    return found


def grpc_refuses_without_token(port: int) -> bool:
    for method in PROBES:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        try:
            channel.unary_unary(method, request_serializer=bytes, response_deserializer=bytes)(b"", timeout=3)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.UNAUTHENTICATED:
                return True
        finally:
            channel.close()
    return False


def http_answer(host: str, port: int, path: str) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=3) as response:
            return response.status, response.read(200)
    except urllib.error.HTTPError as error:
        return error.code, error.read(200)


def test_every_listener_of_a_jobs_ray_is_loopback_or_needs_the_token(job_ray):
    found = listeners(job_ray)
    assert any(name == "gcs_server" for name, _, _ in found), found
    for name, ip, port in found:
        if ip.startswith("127."):
            if name == "python" or "dashboard" in name.lower():  # the dashboard's HTTP server: token too
                assert http_answer(ip, port, "/api/version")[0] in (401, 403, 404), (name, ip, port)
            continue
        if grpc_refuses_without_token(port):
            continue
        host = "127.0.0.1" if ip in ("0.0.0.0", "::") else ip
        status, body = http_answer(host, port, "/api/version")
        if status == 401:
            continue
        # Left: Prometheus text of Ray's metrics exporter (read-only, nothing to run there).
        assert status == 200 and body.startswith(b"# HELP"), (name, ip, port, status, body[:80])
