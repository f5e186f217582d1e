"""A local Hugging Face hub on 127.0.0.1 serving recorded responses (tests/data/hub/SOURCE.md).

The real huggingface_hub client runs against it through HF_ENDPOINT. Recorded repos answer with the
recorded JSON; repos the tests build from bytes answer in the same wire format (git blob SHA-1 ETag for
small files, LFS SHA-256 for *.safetensors, Range support). Every request is logged for assertions.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

DATA = Path(__file__).resolve().parents[1] / "data" / "hub"
COMMIT = "3c1f2a9e8b7d6c5b4a39281706f5e4d3c2b1a098"  # a fixed 40-hex commit for the built repos


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    files: dict[str, bytes]
    commit: str = COMMIT
    gated: bool = False  # resolve answers the recorded GatedRepo 401/403
    lfs_suffixes: tuple[str, ...] = (".safetensors",)

    def is_lfs(self, path: str) -> bool:
        return path.endswith(self.lfs_suffixes)

    def etag(self, path: str) -> str:
        data = self.files[path]
        return hashlib.sha256(data).hexdigest() if self.is_lfs(path) else git_blob_sha1(data)

    def model_info(self, repo_id: str) -> dict:
        # the shape of the recorded gpt2_model_info_blobs.json
        base = json.loads((DATA / "gpt2_model_info_blobs.json").read_text())
        sib = []
        for p, data in sorted(self.files.items()):
            s = {"rfilename": p, "blobId": git_blob_sha1(data), "size": len(data)}
            if self.is_lfs(p):
                s["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            sib.append(s)
        base.update(id=repo_id, modelId=repo_id, author=repo_id.split("/")[0], sha=self.commit, siblings=sib,
                    gated="manual" if self.gated else False, safetensors=None, usedStorage=sum(map(len, self.files.values())))
        return base


@dataclass
class Fault:
    """Drop the connection after `after` bytes of GET bodies for `path`, `times` times; later GETs get
    `then_status` (e.g. 503) `then_times` times."""

    path: str
    after: int
    times: int = 1
    then_status: int | None = None
    then_times: int = 0


@dataclass
class FakeHub:
    repos: dict[str, Repo] = field(default_factory=dict)
    recorded: dict[str, dict] = field(default_factory=dict)  # repo id -> recorded model_info JSON
    faults: list[Fault] = field(default_factory=list)
    log: list[dict] = field(default_factory=list)
    url: str = ""

    def __post_init__(self) -> None:
        self.errors = json.loads((DATA / "errors.json").read_text())
        gpt2 = json.loads((DATA / "gpt2_model_info_blobs.json").read_text())
        self.recorded.setdefault(gpt2["id"], gpt2)
        self._lock = threading.Lock()

    def __enter__(self) -> FakeHub:
        hub = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def do_HEAD(self):
                hub._handle(self, head=True)

            def do_GET(self):
                hub._handle(self, head=False)

        class S(ThreadingHTTPServer):
            def handle_error(self, request, client_address):  # clients dropping connections: not news
                pass

        self._srv = S(("127.0.0.1", 0), H)
        self._srv.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._srv.server_address[1]}"
        self._t = threading.Thread(target=self._srv.serve_forever, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._srv.shutdown()
        self._srv.server_close()

    # ------------------------------------------------------------------ helpers for assertions
    def gets(self, path_suffix: str) -> list[dict]:
        return [r for r in self.log if r["method"] == "GET" and "/resolve/" in r["path"]
                and r["path"].endswith("/" + path_suffix)]

    # ------------------------------------------------------------------ request handling
    def _send(self, h, status: int, headers: dict[str, str], body: bytes = b"", head: bool = False) -> None:
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", headers.get("Content-Length", str(len(body))))
        h.end_headers()
        if not head and body:
            h.wfile.write(body)

    def _error(self, h, kind: str, head: bool, commit: str | None = None, **fmt) -> None:
        e = self.errors[kind]
        def sub(t: str) -> str:  # "{repo}" / "{revision}" placeholders (not str.format: bodies hold JSON braces)
            for k, v in fmt.items():
                t = t.replace("{" + k + "}", str(v))
            return t

        headers = {k: sub(v) for k, v in e["headers"].items()}
        if commit:
            headers["X-Repo-Commit"] = commit
        self._send(h, e["status"], headers, sub(e["body"]).encode(), head)

    def _handle(self, h, head: bool) -> None:
        u = urlparse(h.path)
        path = unquote(u.path)
        auth = h.headers.get("authorization")
        with self._lock:
            self.log.append({"method": "HEAD" if head else "GET", "path": path, "range": h.headers.get("range"),
                             "auth": auth is not None, "authorization": auth})
        m = re.match(r"^/api/models/([^/]+/[^/]+)(?:/revision/(.+))?$", path)
        if m:
            return self._api(h, m.group(1), m.group(2) or "main", head)
        m = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
        if m:
            return self._resolve(h, m.group(1), m.group(2), m.group(3), head, auth)
        self._send(h, 404, {"X-Error-Code": "EntryNotFound"}, b"not found", head)

    def _api(self, h, repo_id: str, rev: str, head: bool) -> None:
        if repo_id in self.recorded:
            body = json.dumps(self.recorded[repo_id]).encode()
            return self._send(h, 200, {"Content-Type": "application/json"}, body, head)
        repo = self.repos.get(repo_id)
        if repo is None:
            return self._error(h, "repo_not_found_unauthenticated", head)
        if rev not in ("main", repo.commit):
            return self._error(h, "revision_not_found", head, revision=rev)
        body = json.dumps(repo.model_info(repo_id)).encode()
        self._send(h, 200, {"Content-Type": "application/json"}, body, head)

    def _resolve(self, h, repo_id: str, rev: str, fpath: str, head: bool, auth: str | None) -> None:
        repo = self.repos.get(repo_id)
        if repo is None:
            return self._error(h, "repo_not_found_unauthenticated", head)
        if repo.gated:
            kind = "gated_authenticated_no_access" if auth else "gated_unauthenticated"
            return self._error(h, kind, head, repo=repo_id)
        if rev not in ("main", repo.commit):
            return self._error(h, "revision_not_found", head, revision=rev)
        if fpath not in repo.files:
            return self._send(h, 404, {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found",
                                       "X-Repo-Commit": repo.commit}, b"Entry not found", head)
        data = repo.files[fpath]
        etag = f'"{repo.etag(fpath)}"'
        base = {"X-Repo-Commit": repo.commit, "ETag": etag, "X-Linked-Etag": etag, "X-Linked-Size": str(len(data)),
                "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream",
                "Content-Disposition": f"inline; filename=\"{fpath.rsplit('/', 1)[-1]}\";"}
        if head:
            return self._send(h, 200, {**base, "Content-Length": str(len(data))}, b"", True)
        fault = next((f for f in self.faults if fpath == f.path and (f.times > 0 or f.then_times > 0)), None)
        if fault is not None and fault.times <= 0 and fault.then_status:
            fault.then_times -= 1
            return self._send(h, fault.then_status, {"X-Repo-Commit": repo.commit}, b"unavailable", False)
        start = 0
        rng = h.headers.get("range")
        if rng:
            start = int(re.match(r"bytes=(\d+)-", rng).group(1))
        body = data[start:]
        status = 206 if rng else 200
        hdr = {**base, "Content-Length": str(len(body))}
        if rng:
            hdr["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        if fault is not None and fault.times > 0:
            fault.times -= 1
            h.send_response(status)
            for k, v in hdr.items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(body[: fault.after])
            h.wfile.flush()
            h.close_connection = True
            try:
                import socket

                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self._send(h, status, hdr, body)
