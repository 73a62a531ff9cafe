#!/usr/bin/env python3
"""Render deploy/nginx/nginx.conf.template into an nginx.conf for a set of hub replicas.

The one renderer of the proxy's configuration: compose's ``proxy-config`` job runs it (in the hub
image, with deploy/ mounted read-only) and tests/deploy/test_stack.py runs it for nginx on loopback,
so what the tests prove is what operators run. Standard library only.

Placeholders are ``@NAME@`` (upper case), chosen so they can never collide with nginx's own
``$variables``. Every placeholder must get a value and every value must be used; anything else is
an error rather than a half-rendered file.

    python deploy/render_nginx.py --upstream hub:8000 --listen 8080 --out /etc/nginx/nginx.conf
    python deploy/render_nginx.py --upstream 127.0.0.1:8001 --upstream 127.0.0.1:8002 \\
        --listen 127.0.0.1:9000 --prefix /tmp/ar-nginx --out /tmp/ar-nginx/nginx.conf
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent / "nginx" / "nginx.conf.template"
_PLACEHOLDER = re.compile(r"@([A-Z][A-Z0-9_]*)@")
_HOST_PORT = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")


class RenderError(ValueError):
    """A bad option (upstream, listen address, TLS pair) or a template/value mismatch."""


@dataclass(frozen=True)
class ProxyConfig:
    """What the rendered nginx.conf serves.

    Args:
        upstreams: hub replicas as ``host:port`` (a name may resolve to several replicas).
        listen: nginx's ``listen`` address, ``port`` or ``host:port``.
        prefix: folder for the pid file and temp files (must exist and be writable by nginx).
        access_log, error_log: log destinations (``/dev/stdout``, ``stderr`` or a file path).
        server_name: the proxy's host name (``_``: any).
        tls_cert, tls_key: PEM files; both or neither. With them nginx terminates TLS (1.2 and 1.3).
        worker_processes: nginx worker count (``auto``: one per CPU core).
    """

    upstreams: tuple[str, ...]
    listen: str = "8080"
    prefix: str = "/tmp/nginx"
    access_log: str = "/dev/stdout"
    error_log: str = "stderr"
    server_name: str = "_"
    tls_cert: str | None = None
    tls_key: str | None = None
    worker_processes: str = "auto"

    def check(self) -> None:
        """Raises RenderError naming the first bad field."""
        if not self.upstreams:
            raise RenderError("at least one --upstream host:port is needed")
        for up in self.upstreams:
            if not _HOST_PORT.match(up):
                raise RenderError(f"--upstream {up!r} is not host:port")
        if not (self.listen.isdigit() or _HOST_PORT.match(self.listen)):
            raise RenderError(f"--listen {self.listen!r} is neither a port nor host:port")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise RenderError("--tls-cert and --tls-key go together")
        for name, value in (("--prefix", self.prefix), ("--server-name", self.server_name)):
            if not value or any(c.isspace() or c in ";{}" for c in value):
                raise RenderError(f"{name} {value!r} must be one word without ; {{ }}")

    def values(self) -> dict[str, str]:
        """Placeholder name → text."""
        if self.tls_cert:
            listen = (
                f"        listen {self.listen} ssl;\n"
                f"        ssl_certificate {self.tls_cert};\n"
                f"        ssl_certificate_key {self.tls_key};\n"
                "        ssl_protocols TLSv1.2 TLSv1.3;\n"
                "        ssl_session_cache shared:hub_tls:10m;\n"
                '        add_header Strict-Transport-Security "max-age=31536000" always;'
            )
        else:
            listen = f"        listen {self.listen};"
        servers = "\n".join(f"        server {up} max_fails=1 fail_timeout=10s;" for up in self.upstreams)
        return {
            "WORKER_PROCESSES": self.worker_processes,
            "PID_PATH": f"{self.prefix}/nginx.pid",
            "TEMP_DIR": self.prefix,
            "ERROR_LOG": self.error_log,
            "ACCESS_LOG": self.access_log,
            "UPSTREAM_SERVERS": servers,
            "LISTEN": listen,
            "SERVER_NAME": self.server_name,
        }


def render(config: ProxyConfig, template: str | None = None) -> str:
    """The nginx.conf text for ``config`` from ``template`` (default: the file beside this script).

    Raises:
        RenderError: a bad option, a placeholder without a value, or a value without a placeholder.
    """
    config.check()
    text = TEMPLATE.read_text(encoding="utf-8") if template is None else template
    values = config.values()
    names = set(_PLACEHOLDER.findall(text))
    if missing := sorted(names - values.keys()):
        raise RenderError(f"template placeholders without a value: {', '.join(missing)}")
    if unused := sorted(values.keys() - names):
        raise RenderError(f"values the template does not use: {', '.join(unused)}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry: parse options, render, write ``--out`` (or stdout). Exit 2 on a bad option."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", action="append", default=[], help="hub replica host:port (repeat)")
    parser.add_argument("--listen", default="8080", help="port or host:port nginx listens on")
    parser.add_argument("--prefix", default="/tmp/nginx", help="folder for the pid file and temp files")
    parser.add_argument("--access-log", default="/dev/stdout")
    parser.add_argument("--error-log", default="stderr")
    parser.add_argument("--server-name", default="_")
    parser.add_argument("--tls-cert", help="PEM certificate chain: terminate TLS at the proxy")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    parser.add_argument("--worker-processes", default="auto")
    parser.add_argument("--out", type=Path, help="file to write (default: stdout)")
    args = parser.parse_args(argv)
    config = ProxyConfig(
        upstreams=tuple(args.upstream),
        listen=args.listen,
        prefix=args.prefix.rstrip("/") or "/",
        access_log=args.access_log,
        error_log=args.error_log,
        server_name=args.server_name,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        worker_processes=args.worker_processes,
    )
    try:
        text = render(config)
    except RenderError as exc:
        print(f"render_nginx: {exc}", file=sys.stderr)
        return 2
    if args.out is None:
        sys.stdout.write(text)
    else:
        write_atomic(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
