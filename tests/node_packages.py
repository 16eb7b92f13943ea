"""Node.js, npm packages and Chromium for what runs JavaScript (test_runtimes.py, test_web.py,
benchmarks/browser.py).

Node itself comes from Debian's packages when it is missing and the tests run as root; packages
are installed with `npm ci` from a committed package.json and package-lock.json, into a folder
that is reinstalled whenever the lock file changes. Each install holds a file lock, so that two
pytest workers (`-n 2`) never install into one folder at once.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache"


def run(cmd: list, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@contextlib.contextmanager
def one_at_a_time(name: str):
    """Hold the lock `name` across processes (pytest-xdist workers) for the block's duration."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def apt_install(*packages: str) -> None:
    """Install Debian packages (the tests do this only as root, where apt-get exists)."""
    run(["apt-get", "update", "-qq"], timeout=900)
    run(["apt-get", "install", "-y", "-qq", *packages], timeout=1800)


def can_apt() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def node() -> str:
    with one_at_a_time("apt"):
        found = shutil.which("node")
        if found is None and can_apt():
            apt_install("nodejs", "npm")
            found = shutil.which("node")
    assert found, "Node.js is needed for the JavaScript tests: install nodejs and npm"
    return found


def chromium() -> str:
    """Debian's Chromium (installed when missing and the tests run as root)."""
    with one_at_a_time("apt"):
        found = shutil.which("chromium") or shutil.which("chromium-browser")
        if found is None and can_apt():
            apt_install("chromium")
            found = shutil.which("chromium")
    assert found, "Chromium is needed for the page: install Debian's chromium"
    return found


def npm_ci(source: Path, folder: Path, scripts: tuple[str, ...] = ()) -> Path:
    """`npm ci` of source's package.json and package-lock.json into `folder` (the `scripts`, files
    of `source`, are copied beside them on every call: always the current ones)."""
    with one_at_a_time(folder.name):
        lock = (source / "package-lock.json").read_bytes()
        if not (folder / "ready").exists() or (folder / "package-lock.json").read_bytes() != lock:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            for name in ("package.json", "package-lock.json"):
                shutil.copy(source / name, folder / name)
            node()
            npm = shutil.which("npm")
            assert npm, "npm is needed for the JavaScript tests"
            # the CUDA binaries onnxruntime-node would download are not needed (nor reachable)
            env = {**os.environ, "ONNXRUNTIME_NODE_INSTALL": "skip", "ONNXRUNTIME_NODE_INSTALL_CUDA": "skip"}
            run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=folder, env=env, timeout=1800)
            (folder / "ready").touch()
        for name in scripts:
            shutil.copy(source / name, folder / name)
    return folder
