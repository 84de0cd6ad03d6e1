"""`python -m dashboards.serve`: optuna-dashboard on the study database, on 127.0.0.1 by default.

Before serving, every study gets its markdown note and its best trials' exported configs as
downloadable artifacts (`dashboards.annotate`; skip with --no-annotate). optuna-dashboard has
no authentication: anyone who can reach the port can read every study and edit or delete them,
so keep the default loopback host and use an SSH tunnel to look from another machine.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys
from pathlib import Path

from dashboards import default_artifact_dir
from search.cli import Parser, run_main
from search.storage import DEFAULT_STORAGE, StorageError, open_existing_storage, safe_url

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080

EPILOG = """examples:
  python -m dashboards.serve
  python -m dashboards.serve --storage sqlite:///runs/studies.db --port 8081
  python -m dashboards.serve --storage postgresql://user:pw@dbhost/attnsearch
from another machine, keep the loopback host and tunnel:
  ssh -L 8080:127.0.0.1:8080 user@search-host   # then open http://127.0.0.1:8080/dashboard
FLOPs: fvcore convention, one multiply-add = one FLOP (GFLOPs = GMACs), forward, one sequence."""


def port_arg(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number, e.g. 8080") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 1..65535, e.g. 8080")
    return port


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m dashboards.serve",
        description=__doc__.split("\n\n")[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--storage",
        default=DEFAULT_STORAGE,
        help=f"study database URL, default {DEFAULT_STORAGE}",
    )
    p.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to bind, default {DEFAULT_HOST} (this machine only); "
        "anything else exposes an unauthenticated dashboard",
    )
    p.add_argument(
        "--port",
        type=port_arg,
        default=DEFAULT_PORT,
        help=f"port to serve on, default {DEFAULT_PORT}",
    )
    p.add_argument(
        "--artifacts",
        help="artifact directory (exported configs of the best trials); default: artifacts/ "
        "next to a SQLite database file, i.e. studies/artifacts for the default storage",
    )
    p.add_argument(
        "--top",
        type=int,
        default=3,
        help="best trials per study that get a config artifact, default 3",
    )
    p.add_argument(
        "--no-annotate",
        action="store_true",
        help="serve as is: do not write notes or artifacts (e.g. a read-only database)",
    )
    return p


def is_loopback(host: str) -> bool:
    """True when `host` only accepts connections from this machine."""
    name = host.strip("[]")
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(name, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def exposure_warning(host: str, port: int, storage_url: str) -> str:
    return (
        f"WARNING: --host {host} is not a loopback address, so the dashboard is reachable from "
        f"other machines on port {port}. optuna-dashboard has NO authentication: anyone who can "
        f"reach it can read every study in {safe_url(storage_url)} and edit notes or DELETE "
        "studies and artifacts. Prefer the default --host 127.0.0.1 and an SSH tunnel "
        f"(ssh -L {port}:127.0.0.1:{port} user@this-host), or put it behind an authenticating "
        "proxy."
    )


def fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        storage = open_existing_storage(args.storage)
    except StorageError as exc:
        return fail(str(exc))

    import optuna
    from optuna.artifacts import FileSystemArtifactStore
    from optuna_dashboard import run_server

    artifact_dir = Path(args.artifacts) if args.artifacts else default_artifact_dir(args.storage)
    try:
        artifact_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return fail(f"--artifacts {str(artifact_dir)!r}: cannot create it ({exc.strerror})")
    store = FileSystemArtifactStore(str(artifact_dir))

    names = [s.study_name for s in optuna.get_all_study_summaries(storage, False)]
    if not names:
        print(
            f"note: {safe_url(args.storage)} holds no study yet; "
            "run python -m search.run --budget 2GFLOPs and reload the page",
            file=sys.stderr,
        )
    if not args.no_annotate and names:
        from dashboards.notes import annotate_all

        for name, result in annotate_all(storage, artifact_dir, args.top, args.storage).items():
            if isinstance(result, Exception):
                print(f"warning: study {name!r}: not annotated ({result})", file=sys.stderr)

    if not is_loopback(args.host):
        print(exposure_warning(args.host, args.port, args.storage), file=sys.stderr)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(
        f"optuna-dashboard for {len(names)} stud{'y' if len(names) == 1 else 'ies'} in "
        f"{safe_url(args.storage)} (artifacts: {artifact_dir})\n"
        f"open http://{shown}:{args.port}/dashboard   (Ctrl-C stops it)",
        flush=True,
    )
    try:
        run_server(storage, host=args.host, port=args.port, artifact_store=store)
    except OSError as exc:
        return fail(
            f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc}); "
            "pick another --port or stop the other server"
        )
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    run_main(main)
