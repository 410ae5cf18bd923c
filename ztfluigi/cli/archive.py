"""``ztfluigi archive serve``: the synthetic archive behind an IRSA-compatible HTTP server."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys


def _serve(args: argparse.Namespace) -> int:
    """Serve the synthetic instrument through IRSA's URLs until interrupted."""
    from ztfluigi import config
    from ztfluigi.archive.server import Faults, IrsaServer
    from ztfluigi.archive.sim import SimArchive

    s = config.sim().sim_config()
    sim = dataclasses.replace(
        s,
        seed=s.seed if args.seed is None else args.seed,
        scale=s.scale if args.scale is None else args.scale,
        n_fields=s.n_fields if args.n_fields is None else args.n_fields,
        calib_gaps=s.calib_gaps or args.calib_gaps,
    )
    credentials = None
    if args.require_login:
        user, password = os.environ.get("IRSA_USERNAME"), os.environ.get("IRSA_PASSWORD")
        if not (user and password):
            print("ztfluigi: error: --require-login needs IRSA_USERNAME and IRSA_PASSWORD",
                  file=sys.stderr)  # fmt: skip
            return 2
        credentials = (user, password)
    faults = Faults(
        fail_first=args.fail_first, fail_rate=args.fail_rate, fail_status=args.fail_status,
        stall_first=args.stall_first, stall_seconds=args.stall_seconds,
        truncate_first=args.truncate_first, short_first=args.short_first,
        corrupt_first=args.corrupt_first, seed=args.fault_seed,
    )  # fmt: skip
    server = IrsaServer(
        SimArchive(sim), args.host, args.port, credentials=credentials, faults=faults,
        cache_bytes=args.cache_mb * 2**20, max_nights=args.max_nights, ranges=not args.no_ranges,
    )  # fmt: skip
    print(
        f"serving the synthetic archive (seed={sim.seed}, scale={sim.scale}, "
        f"n_fields={sim.n_fields}) on {server.url}" + (" (login required)" if credentials else ""),
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``archive serve``."""
    archive = sub.add_parser("archive", help="archive tools (an IRSA-compatible server)")
    verbs = archive.add_subparsers(dest="verb", required=True)
    serve = verbs.add_parser(
        "serve",
        help="serve the synthetic archive through IRSA's URLs",
        description="Serve the synthetic archive with IRSA's search, data and login URLs; "
        "point the pipeline at it with '[ztfluigi] archive = http://HOST:PORT'. "
        "Synthetic settings default to luigi.cfg's [sim] section.",
    )
    serve.add_argument("--port", type=int, default=0, help="TCP port (0: any free port)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    serve.add_argument("--seed", type=int, help="synthetic seed (default: [sim] seed)")
    serve.add_argument("--scale", type=int, help="synthetic scale (default: [sim] scale)")
    serve.add_argument("--n-fields", type=int, help="science fields per night ([sim] n_fields)")
    serve.add_argument("--calib-gaps", action="store_true", help="nights with missing calibrations")
    serve.add_argument(
        "--require-login", action="store_true",
        help="answer 401 without a login; the account is IRSA_USERNAME/IRSA_PASSWORD",
    )  # fmt: skip
    serve.add_argument("--cache-mb", type=int, default=256, help="rendered-file cache (MiB)")
    serve.add_argument("--max-nights", type=int, default=7, help="nights one search may span")
    faults = serve.add_argument_group("fault injection (deterministic; counted per path)")
    faults.add_argument("--fail-first", type=int, default=0, help="first N requests: error")
    faults.add_argument("--fail-rate", type=float, default=0.0, help="then this fraction: error")
    faults.add_argument("--fail-status", type=int, default=503, help="status of injected errors")
    faults.add_argument("--stall-first", type=int, default=0, help="first N: stall before body")
    faults.add_argument("--stall-seconds", type=float, default=0.0, help="length of a stall")
    faults.add_argument("--truncate-first", type=int, default=0, help="first N: half a body")
    faults.add_argument(
        "--short-first", type=int, default=0, help="first N: Content-Length one block short"
    )
    faults.add_argument("--corrupt-first", type=int, default=0, help="first N: one byte flipped")
    faults.add_argument("--no-ranges", action="store_true", help="ignore Range headers")
    faults.add_argument("--fault-seed", type=int, default=0, help="seed of --fail-rate draws")
    serve.set_defaults(func=_serve)
