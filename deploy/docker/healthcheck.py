"""Container health checks for the edgefleet images (Docker's HEALTHCHECK runs this).

``healthcheck.py hub``: GET /healthz on the hub's own API port; healthy on 200 (the database answers).
``healthcheck.py agent --socket PATH``: the agent's local API health service (gRPC over its Unix
socket); healthy on SERVING.

The slim base images carry no curl or grpc_health_probe, and the images' own Python already has
everything needed. Exit status 0 means healthy and 1 unhealthy, as Docker expects; the one line
printed says why, and Docker keeps it in `docker inspect`.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

HEALTHY, UNHEALTHY = 0, 1
DEFAULT_AGENT_SOCKET = "/var/lib/edgefleet/agent.sock"


def check_hub(port: int, timeout_s: float) -> tuple[int, str]:
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return HEALTHY, f"{url}: {response.status}"
    except urllib.error.HTTPError as e:
        # 503: the hub runs but its database does not answer.
        return UNHEALTHY, f"{url}: {e.code} {e.reason}"
    except (urllib.error.URLError, OSError) as e:
        return UNHEALTHY, f"{url}: {e}"


def check_agent(socket_path: str, timeout_s: float) -> tuple[int, str]:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    target = f"unix:{socket_path}"
    try:
        with grpc.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
    except grpc.RpcError as e:
        return UNHEALTHY, f"{target}: {e.code().name}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return (HEALTHY if status == "SERVING" else UNHEALTHY), f"{target}: {status}"


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"expected a TCP port 1-65535, got {text!r}")
    return int(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    hub = sub.add_parser("hub", help="the hub's HTTP API")
    # The hub reads its port from EDGEFLEET_API_PORT; the check follows the same variable.
    hub.add_argument("--port", type=_port, default=None, help="default: EDGEFLEET_API_PORT, else 8080")
    agent = sub.add_parser("agent", help="the agent's local API")
    agent.add_argument("--socket", default=DEFAULT_AGENT_SOCKET, metavar="PATH")
    parser.add_argument("--timeout", type=float, default=4.0, metavar="SECONDS")
    try:
        args = parser.parse_args(argv)
        port = (args.port or _port(os.environ.get("EDGEFLEET_API_PORT", "8080"))) if args.what == "hub" else 0
    except argparse.ArgumentTypeError as e:
        print(f"unhealthy: EDGEFLEET_API_PORT: {e}", file=sys.stderr)
        return UNHEALTHY
    except SystemExit as e:
        # Docker reserves exit status 2 (argparse's for a usage error): report it as unhealthy.
        return HEALTHY if e.code in (0, None) else UNHEALTHY
    if args.what == "hub":
        code, line = check_hub(port, args.timeout)
    else:
        code, line = check_agent(args.socket, args.timeout)
    print(("healthy: " if code == HEALTHY else "unhealthy: ") + line)
    return code


if __name__ == "__main__":
    sys.exit(main())
