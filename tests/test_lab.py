"""`make lab`'s last step: JupyterLab starts on notebooks/ and answers with its token."""

import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from course_utils.settings import repo_root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_jupyterlab_starts_and_lists_the_notebooks(tmp_path):
    port = _free_port()
    jupyter = Path(sys.executable).parent / "jupyter"
    args = [str(jupyter), "lab", "--notebook-dir=notebooks", "--no-browser", "--ip=127.0.0.1",
            f"--port={port}", f"--ServerApp.runtime_dir={tmp_path}"]
    if os.geteuid() == 0:
        args.append("--allow-root")
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path)}
    proc = subprocess.Popen(args, cwd=repo_root(), env=env, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True).start()
    try:
        token, log = None, ""
        deadline = time.time() + 90
        while token is None and time.time() < deadline:  # a silent server cannot block past the deadline
            try:
                line = lines.get(timeout=max(0.1, deadline - time.time()))
            except queue.Empty:
                break
            log += line
            match = re.search(rf"http://127\.0\.0\.1:{port}/lab\?token=(\w+)", line)
            token = match.group(1) if match else None
        assert token, f"no URL with a token printed:\n{log}"
        url = f"http://127.0.0.1:{port}/api/contents/?token={token}"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, no proxy
        for attempt in range(30):  # the URL can be printed a moment before the port answers
            try:
                listing = json.load(opener.open(url, timeout=30))
                break
            except OSError:
                if attempt == 29:
                    raise
                time.sleep(1)
        names = {item["name"] for item in listing["content"]}
        assert "00_llmops_overview.ipynb" in names
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a loaded machine can be slow to shut the server down
            proc.kill()
            proc.wait(timeout=30)
