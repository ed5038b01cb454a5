"""The two loopback servers of the Hub mirror harness (``tests/hub_mirror.py``); runs in olah's own venv.

``olah``  runs olah (PyPI ``olah==0.5.4``, a self-hosted Hugging Face mirror) exactly as ``olah-cli``
          does, from a TOML config, with two ASGI middlewares around its app: an access log
          (method, path with revision, status, Range and bytes sent, one line a request) and
          :class:`HubAnswers`, which gives the Hub's own answers where olah's offline mode differs
          (gated repos, a missing repo, an unknown revision).
``files`` serves a directory over HTTP with Starlette's ``StaticFiles`` (Range, 206, 416 as RFC 9110
          says), as openslr serves its tarballs, with the same access log; ``--cut-after N`` cuts the
          first full download of each file after N bytes (the connection closes mid-body), so
          that a client's resume can be tested.

Neither knows anything of the workflow; the workflow knows nothing of them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote


class AccessLog:
    """ASGI middleware: one line per request to ``path`` (never the Authorization header)."""

    def __init__(self, app, path: str) -> None:
        self.app, self.path = app, path

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        state = {"status": 0, "bytes": 0}

        async def logged_send(message):
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            elif message["type"] == "http.response.body":
                state["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, logged_send)
        finally:
            query = scope.get("query_string", b"").decode("latin-1")
            line = (f"{time.strftime('%H:%M:%S')} {scope['method']} {scope['path']}{'?' + query if query else ''} "
                    f"{state['status']} range={headers.get('range', '-')} bytes={state['bytes']} "
                    f"auth={'yes' if 'authorization' in headers else 'no'}\n")
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line)


async def _answer(send, method: str, status: int, code: str, message: str) -> None:
    """A JSON error as the Hub sends it (``X-Error-Code``/``X-Error-Message``); no body for HEAD."""
    body = b"" if method == "HEAD" else json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"x-error-code", code.encode()), (b"x-error-message", message.encode())]})
    await send({"type": "http.response.body", "body": body})


# /api/<type>/<org>/<name>/(revision|tree|paths-info)/<rev>...  and  [/<type>]/<org>/<name>/resolve/<rev>/<path>
_API = re.compile(r"^/api/(models|datasets|spaces)/([^/]+)/([^/]+)/(?:revision|tree|paths-info)/([^/]+)")
_RESOLVE = re.compile(r"^/(?:(datasets|spaces)/)?([^/]+)/([^/]+)/resolve/([^/]+)/")


def _repo_and_revision(path: str) -> tuple[str, str, str, str] | None:
    if m := _API.match(path):
        return m.group(1), m.group(2), m.group(3), unquote(m.group(4))
    if (m := _RESOLVE.match(path)) and m.group(2) != "api":
        return m.group(1) or "models", m.group(2), m.group(3), unquote(m.group(4))
    return None


class HubAnswers:
    """ASGI middleware: the Hub's own answers where olah 0.5.4's offline mirror gives other ones.

    * gated repos (``--gated ORG/NAME``): 401 ``GatedRepo`` without a token, 403 with a wrong one;
      olah has no gating.  The right token is ``$HUB_MIRROR_TOKEN``.
    * a repo that is not there: 401 ``RepoNotFound`` (olah answers a file request with 404).
    * a revision that does not exist: 404 ``RevisionNotFound`` (olah raises inside GitPython: 500).
    """

    def __init__(self, app, mirrors: str, gated: list[str], token: str) -> None:
        self.app, self.mirrors, self.gated, self.token = app, Path(mirrors), gated, token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not (found := _repo_and_revision(scope["path"])):
            return await self.app(scope, receive, send)
        kind, org, name, rev = found
        method = scope["method"]
        if f"{org}/{name}" in self.gated:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            auth = headers.get("authorization", "")
            if auth != f"Bearer {self.token}":
                return await _answer(send, method, 403 if auth else 401, "GatedRepo",
                                     f"Access to model {org}/{name} is restricted. You must have access to it and be "
                                     "authenticated to access it. Please log in.")
        repo = self.mirrors / kind / org / name
        if not (repo / ".git").is_dir():
            return await _answer(send, method, 401, "RepoNotFound", "Repository not found")
        ok = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
                            capture_output=True).returncode == 0
        if not ok:
            return await _answer(send, method, 404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return await self.app(scope, receive, send)


class CutOnce:
    """ASGI middleware: the first full (non-Range) GET of each file stops after ``limit`` body bytes."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit
        self.cut: set[str] = set()

    async def __call__(self, scope, receive, send):
        headers = {k.decode("latin-1").lower() for k, _ in scope.get("headers", [])}
        if scope["type"] != "http" or "range" in headers or scope["path"] in self.cut or scope["method"] != "GET":
            return await self.app(scope, receive, send)
        self.cut.add(scope["path"])
        sent = {"n": 0}

        async def cutting_send(message):
            if message["type"] == "http.response.body":
                body = message.get("body", b"")
                room = self.limit - sent["n"]
                if len(body) >= room:
                    await send({"type": "http.response.body", "body": body[:room], "more_body": True})
                    raise ConnectionAbortedError(f"cut {scope['path']} after {self.limit} bytes (test harness)")
                sent["n"] += len(body)
            await send(message)

        return await self.app(scope, receive, cutting_send)


def serve_olah(config: str, mirrors: str, log: str, gated: list[str], port: int) -> None:
    from olah import server

    sys.argv = ["olah-cli", "-c", config, "--port", str(port)]
    args = server.init()
    server.app.add_middleware(HubAnswers, mirrors=mirrors, gated=gated, token=os.environ.get("HUB_MIRROR_TOKEN", ""))
    server.app.add_middleware(AccessLog, path=log)
    server.run_server(args)


def serve_files(root: str, log: str, port: int, cut_after: int | None) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    app = Starlette(routes=[Mount("/", app=StaticFiles(directory=root))])
    if cut_after:
        app.add_middleware(CutOnce, limit=cut_after)
    app.add_middleware(AccessLog, path=log)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    o = sub.add_parser("olah")
    o.add_argument("--config", required=True)
    o.add_argument("--mirrors", required=True, help="the mirrors-path of the config (for HubAnswers)")
    o.add_argument("--gated", action="append", default=[])
    f = sub.add_parser("files")
    f.add_argument("--root", required=True)
    f.add_argument("--cut-after", type=int)
    for p in (o, f):
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--access-log", required=True)
    args = ap.parse_args()
    if args.what == "olah":
        serve_olah(args.config, args.mirrors, args.access_log, args.gated, args.port)
    else:
        serve_files(args.root, args.access_log, args.port, args.cut_after)


if __name__ == "__main__":
    main()
