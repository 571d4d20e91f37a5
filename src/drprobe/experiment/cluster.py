"""Joining a Ray cluster the way Ray's own clients do, and dialling only the address given.

A cluster started with ``ray start --head`` (Ray >= 2.52) may require a token: every client
then needs ``RAY_AUTH_MODE=token`` and the token, which Ray reads from, in this order,
``RAY_AUTH_TOKEN``, the file named by ``RAY_AUTH_TOKEN_PATH``, or ``~/.ray/auth_token``. Ray
itself switches token mode on only for ``ray.init()`` / ``address="auto"``, never for an
explicit address; :func:`join` does the same for the address the user gave: when
``RAY_AUTH_MODE`` is unset and one of those places holds a token, token mode is switched on.

:func:`join` refuses, on one line and before ``ray.init``:

- an address that is not ``HOST:PORT``, or one nothing answers on;
- a loopback address that Ray would rewrite to this machine's network address (Ray on Linux
  turns ``127.0.0.1`` into the address of the default route) -- drprobe never lets Ray dial
  an address other than the one given;
- a cluster that wants a token this process does not have (naming what to set);
- a cluster whose head node is registered under another address than the one dialled.

After ``ray.init`` it checks that Ray is connected to that very address and that the driver
sits on the head node. No message ever names an address other than the user's.

Memory: a few node records; nothing grows with n or d.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path

from drprobe.errors import InvalidValueError

__all__ = ["ClusterError", "join", "loopback_local_node", "parse_address", "start_local",
           "token_source"]

MODE_ENV, TOKEN_ENV, TOKEN_PATH_ENV = "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"
DEFAULT_TOKEN_FILE = Path(".ray") / "auth_token"  # under the home folder
TOKEN_HELP = (f"set {TOKEN_ENV} to the cluster's token (`ray get-auth-token` on the head prints "
              f"it), or {TOKEN_PATH_ENV} to a file holding it, or copy it to ~/.ray/auth_token")


class ClusterError(InvalidValueError):
    """A Ray cluster address that cannot be joined as given (one line, the user's address only)."""


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` as ``(host, port)``; anything else is refused."""
    host, sep, port = str(address).strip().rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or "/" in host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterError(
            f"Ray cluster address {address!r} is not HOST:PORT; give the head node's address "
            "and GCS port, e.g. 10.0.0.1:6379 (what `ray start --head` prints)")
    return host, int(port)


def token_source(environ: Mapping[str, str] | None = None, home: Path | None = None) -> str | None:
    """Where a Ray client would read the cluster token from, in Ray's order; None if nowhere.

    Raises:
        ClusterError: ``RAY_AUTH_TOKEN`` is blank, or ``RAY_AUTH_TOKEN_PATH`` names a file that
            is missing or empty (Ray finds no token there either, or treats it as fatal).
    """
    env = os.environ if environ is None else environ
    if env.get(TOKEN_ENV):  # Ray takes a set, non-empty variable even when it is blank
        if not env[TOKEN_ENV].strip():
            raise ClusterError(f"{TOKEN_ENV} is set but blank; set it to the cluster's token "
                               "(`ray get-auth-token` on the head prints it) or unset it")
        return TOKEN_ENV
    named = env.get(TOKEN_PATH_ENV, "")
    if named:
        if not _holds_text(Path(named).expanduser()):
            raise ClusterError(f"{TOKEN_PATH_ENV}={named!r} names no readable, non-empty file; "
                               f"point it at the file holding the cluster's token")
        return f"{TOKEN_PATH_ENV} ({named})"
    if _holds_text((Path.home() if home is None else home) / DEFAULT_TOKEN_FILE):
        return "~/.ray/auth_token"
    return None


def _holds_text(path: Path) -> bool:
    try:
        return bool(path.read_text().strip())
    except (OSError, UnicodeDecodeError):
        return False


def _use_token_if_available(ray) -> str | None:
    """Switch this process to token mode when ``RAY_AUTH_MODE`` is unset and a token exists.

    Returns where the token comes from (None: no token, or the mode was set by the user and is
    not ``token``). Ray versions without token authentication are left alone.
    """
    try:
        from ray._private.authentication import authentication_token_setup as setup
    except ImportError:  # Ray before token authentication
        return None
    mode = os.environ.get(MODE_ENV)
    if mode is not None and mode.lower() != "token":
        return None
    source = token_source()
    if source is not None and mode is None:
        setup._enable_token_auth()  # what ray.init("auto") does when it finds a token
    return source


def _check_reachable(host: str, port: int, address: str, timeout: float = 10.0) -> None:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:
        raise ClusterError(
            f"cannot reach the Ray cluster at {address!r}: {err.strerror or err}; give the "
            "address of a running head node (HOST:PORT), or no --address for a local Ray"
        ) from None


def _host_ips(host: str) -> set[str]:
    """The IP addresses ``host`` names (itself when it is one)."""
    try:
        return {str(ipaddress.ip_address(host))}
    except ValueError:
        pass
    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except OSError:
        return set()


def _ray_would_dial(host: str) -> str:
    """The host Ray's driver dials for ``host`` (Ray rewrites loopback names and addresses)."""
    from ray._private import services

    with _quiet_native_stderr():  # it warns there when this machine has no default route
        return services.resolve_ip_for_localhost(host)


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null (Ray's C++ client logs each failed attempt there)."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _auth_errors() -> tuple[type[BaseException], ...]:
    import ray.exceptions

    return tuple(e for e in [getattr(ray.exceptions, "AuthenticationError", None)] if e)


def _alive_nodes(ray, address: str, source: str | None) -> list:
    """The cluster's alive node records, read from the head's GCS at ``address`` (only)."""
    from ray._raylet import GcsClient

    auth_errors = _auth_errors()  # empty before Ray 2.52
    try:
        with _quiet_native_stderr():
            client = GcsClient(address=address)
            infos = client.get_all_node_info(timeout=30)
    except auth_errors:
        mode = os.environ.get(MODE_ENV)
        if mode is not None and mode.lower() != "token":
            raise ClusterError(
                f"the Ray cluster at {address!r} requires token authentication but "
                f"{MODE_ENV}={mode!r} here; unset it or set it to token, and {TOKEN_HELP}"
            ) from None
        if source is None:
            raise ClusterError(f"the Ray cluster at {address!r} requires token authentication "
                               f"and no token was found; {TOKEN_HELP}") from None
        raise ClusterError(f"the Ray cluster at {address!r} rejected the token from {source}; "
                           f"{TOKEN_HELP}") from None
    except (ray.exceptions.RayError, RuntimeError, OSError) as err:  # no Ray head, a timeout
        raise ClusterError(f"no Ray head node answers at {address!r} ({type(err).__name__}); "
                           "give the GCS port of `ray start --head` (6379 by default)") from None
    from ray.core.generated.gcs_pb2 import GcsNodeInfo

    return [info for info in infos.values() if info.state == GcsNodeInfo.GcsNodeState.ALIVE]


def join(ray, address: str) -> None:
    """Connect ``ray`` (the module) to the cluster whose head is at ``address``, or refuse.

    Dials ``address`` only: a TCP connect test, one read of the node list from the head's GCS,
    then ``ray.init(address=address)`` with the driver attached to the head node. The checks
    are in the module docstring.

    Raises:
        ClusterError: one line naming ``address`` and what to change.
    """
    host, port = parse_address(address)
    _check_reachable(host, port, address)
    dialled = _host_ips(host) | {host}
    if _ray_would_dial(host) not in dialled:
        raise ClusterError(
            f"Ray would not dial {address!r} as given (it rewrites loopback addresses to this "
            "machine's network address); give the head's address as `ray start --head` "
            "printed it")
    source = _use_token_if_available(ray)
    nodes = _alive_nodes(ray, address, source)
    heads = [n for n in nodes if n.is_head_node and n.node_manager_address in dialled]
    if not heads:
        raise ClusterError(
            f"the Ray cluster at {address!r} has no head node registered under {host!r}; give "
            "the head's address as `ray start --head` printed it")
    head_ip = heads[0].node_manager_address
    try:
        ray.init(address=address, _node_ip_address=head_ip, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as err:
        raise ClusterError(f"cannot join the Ray cluster at {address!r} ({type(err).__name__}); "
                           "run drprobe on the head node, with the Ray version the cluster "
                           "runs") from None
    _check_joined(ray, address, port, dialled)


def _check_joined(ray, address: str, port: int, dialled: set[str]) -> None:
    """Refuse (and disconnect) unless Ray joined ``address`` with the driver on a dialled host."""
    context = ray.get_runtime_context()
    gcs_host, gcs_port = parse_address(context.gcs_address)
    node = context.get_node_id()
    here = [n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == node]
    if (gcs_host not in dialled or gcs_port != port or not here
            or here[0] not in dialled):
        ray.shutdown()
        raise ClusterError(f"Ray did not join the cluster at {address!r} as given; run drprobe "
                           "on the head node and give the address `ray start --head` printed")


def start_local(ray) -> None:
    """Start a one-node Ray in this process on 127.0.0.1 only, or refuse.

    Ray on Linux rewrites ``127.0.0.1`` to the address of the default route, so the "local"
    node would listen on the network; while Ray starts, its multi-node switch is off here,
    which keeps every address on loopback. Checked afterwards on the node list.
    """
    try:
        with loopback_local_node():
            ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InvalidValueError(f"cannot start a local Ray: {first}") from None
    if {n["NodeManagerAddress"] for n in ray.nodes()} != {"127.0.0.1"}:
        ray.shutdown()
        raise InvalidValueError("the local Ray did not stay on 127.0.0.1; start a cluster with "
                                "`ray start --head` and pass its address as --address")


@contextlib.contextmanager
def loopback_local_node() -> Iterator[None]:
    """While it lasts, Ray resolves ``127.0.0.1`` to itself (its single-machine behaviour)."""
    from ray._private import ray_constants

    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved
