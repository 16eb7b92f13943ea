"""`vampnet-onnx web`: serve the in-browser page (web/) on this machine.

The page runs the model in the browser with onnxruntime-web; this server only hands out files. It
serves two folders of the repository at their own paths, so that the page finds the demo model
at the same relative URL as under any static server started at the repository's root:

* ``/web/``: the page (``/`` redirects there), with onnxruntime-web in ``web/vendor/``;
* ``/artifacts/demo/``: the demo model that ``vampnet-onnx demo`` builds.

Files may be kept by the browser but are checked on every use (``Cache-Control: no-cache`` with an
``ETag`` of the file's size and modification time, answered ``304 Not Modified`` while it is
unchanged): a second visit does not download onnxruntime-web's 14 MB WebAssembly again, and a
rebuilt demo model is picked up at once.

Every response says the page is cross-origin isolated (COOP ``same-origin``, COEP ``require-corp``):
browsers give only such a page SharedArrayBuffer, which onnxruntime-web's multi-threaded
WebAssembly needs. Served without them, the page runs on one thread.

Only the standard library: the runtime path never imports torch.
"""
from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import posixpath
import stat
import urllib.parse
from pathlib import Path

from .errors import UsageError
from .paths import DEMO_DIR, DEMO_MODEL_NAME

REPO = Path(__file__).resolve().parents[1]
WEB = REPO / "web"
DEMO = REPO / DEMO_DIR
VENDOR_FILES = ("ort.wasm.bundle.min.mjs", "ort-wasm-simd-threaded.wasm",
                "ort.webgpu.bundle.min.mjs", "ort-wasm-simd-threaded.asyncify.wasm")
VENDOR_COMMAND = "npm ci --prefix web"  # its postinstall (web/vendor.mjs) fills web/vendor/


def runtime_problem(web: Path | None = None) -> str | None:
    """Why web/vendor/ does not hold the onnxruntime-web that web/package.json pins, or None."""
    web = web or WEB
    vendor = web / "vendor"
    missing = [name for name in VENDOR_FILES if not (vendor / name).is_file()]
    if missing:
        return f"onnxruntime-web is not in {vendor} (missing {', '.join(missing)})"
    pinned = json.loads((web / "package.json").read_text())["dependencies"]["onnxruntime-web"]
    version = (vendor / "VERSION").read_text().strip() if (vendor / "VERSION").is_file() else "unknown"
    if version != pinned:
        return f"{vendor} holds onnxruntime-web {version}, web/package.json pins {pinned}"
    return None


class Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".mjs": "text/javascript",
        ".js": "text/javascript",
        ".wasm": "application/wasm",
        ".onnx": "application/octet-stream",
        ".data": "application/octet-stream",
    }

    def __init__(self, *args, mounts: dict[str, Path], isolated: bool = True, **kwargs):
        self.mounts = mounts
        self.isolated = isolated
        self.version_tag = None  # the ETag of the file being answered with
        super().__init__(*args, directory=str(mounts["/web/"]), **kwargs)

    def translate_path(self, path: str) -> str:
        """Only the mounted folders; anything else maps to a path that does not exist (404)."""
        path = urllib.parse.unquote(urllib.parse.urlsplit(path).path)
        path = posixpath.normpath(path) + ("/" if path.endswith("/") else "")
        for prefix, folder in self.mounts.items():
            if path.startswith(prefix) or path + "/" == prefix:
                rest = path[len(prefix):].lstrip("/")
                return str(folder.joinpath(*[p for p in rest.split("/") if p not in ("", ".", "..")]))
        return str(self.mounts["/web/"] / ".not-served")

    def etag(self) -> str | None:
        """The requested file's version: its size and modification time in nanoseconds."""
        try:
            st = os.stat(self.translate_path(self.path))
        except OSError:
            return None
        return f'"{st.st_size:x}-{st.st_mtime_ns:x}"' if stat.S_ISREG(st.st_mode) else None

    def send_head(self):
        self.version_tag = self.etag()
        wanted = self.headers.get("If-None-Match")
        if self.version_tag and wanted and self.version_tag in (t.strip() for t in wanted.split(",")):
            self.send_response(304)
            self.end_headers()
            return None
        return super().send_head()

    def do_GET(self):
        if self.path in ("/", "/index.html"):
            self.send_response(302)
            self.send_header("Location", "/web/")
            self.end_headers()
            return
        super().do_GET()

    def end_headers(self):
        # kept, but checked again at every use (the module's docstring)
        self.send_header("Cache-Control", "no-cache")
        if self.version_tag:
            self.send_header("ETag", self.version_tag)
        if self.isolated:  # SharedArrayBuffer, so threads (docs/browser.md lists these headers)
            self.send_header("Cross-Origin-Opener-Policy", "same-origin")
            self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        super().end_headers()

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


def make_server(host: str = "127.0.0.1", port: int = 8000, demo: Path = DEMO,
                isolated: bool = True) -> http.server.ThreadingHTTPServer:
    """The server (not yet serving); port 0 picks a free one (``server.server_address``); `demo`:
    the folder served as /artifacts/demo/; `isolated`: send the cross-origin isolation headers
    (without them the page runs on one thread)."""
    problem = runtime_problem()
    if problem:
        raise UsageError(f"{problem}; run `{VENDOR_COMMAND}` in the repository (needs Node.js and npm)")
    handler = functools.partial(Handler, mounts={"/web/": WEB, "/artifacts/demo/": Path(demo)}, isolated=isolated)
    try:
        return http.server.ThreadingHTTPServer((host, port), handler)
    except OSError as e:
        raise UsageError(f"cannot serve on {host}:{port}: {e.strerror or e}") from e


def add_parser(sub) -> None:
    w = sub.add_parser("web", help="serve the in-browser page on this machine",
                       description="Serve the page that runs the model in your browser "
                                   "(onnxruntime-web; the audio stays on your machine).")
    w.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0: any free one)")
    w.add_argument("--host", default="127.0.0.1", help="address (default: 127.0.0.1, this machine only)")
    w.set_defaults(func=cmd_web)


def cmd_web(args: argparse.Namespace) -> int:
    server = make_server(args.host, args.port)
    host, port = server.server_address[:2]
    print(f"serving the page at http://{host}:{port}/web/ (Ctrl-C stops)", flush=True)
    if not (DEMO / DEMO_MODEL_NAME).is_file():
        print("no demo model yet: run `vampnet-onnx demo` to build it, or open a model in the page", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
