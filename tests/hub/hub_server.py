"""A minimal Hugging Face Hub-protocol server for tests, on 127.0.0.1.

No public server accepts uploads offline, so the tests talk to this one with the real huggingface_hub
client (HF_ENDPOINT / ``endpoint=``). It implements ONLY the endpoints that client calls (read from the
installed huggingface_hub source) for:

- upload:   POST /api/repos/create, POST /api/validate-yaml, POST /api/models/{repo}/branch/{branch},
            POST /api/models/{repo}/preupload/{rev}, POST /{repo}.git/info/lfs/objects/batch (basic transfer),
            PUT  <LFS upload href>, POST <LFS verify href>, POST /api/models/{repo}/commit/{rev} (NDJSON)
- download: GET /api/models/{repo}[/revision/{rev}], HEAD/GET /{repo}/resolve/{rev}/{path}
            (X-Repo-Commit, ETag / X-Linked-Etag, X-Linked-Size), GET /api/models/{repo}/tree/{rev}[/{path}]

The LFS path needs HF_HUB_DISABLE_XET=1 in the client (otherwise it asks for Xet storage). State lives in
memory: repos -> branches -> commits -> {path: bytes}, and an LFS object store keyed by sha256.
`fail_once` injects one failure at a named step ("lfs_upload" or "commit") to test resumed uploads.
Anything else answers 404 and is recorded in `unhandled`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".png", ".ckpt")
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    private: bool
    branches: dict[str, str] = field(default_factory=dict)  # branch -> commit oid
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit oid -> {path: content}
    lfs_paths: dict[str, set] = field(default_factory=dict)  # commit oid -> paths stored as LFS
    messages: dict[str, str] = field(default_factory=dict)  # commit oid -> summary

    def resolve(self, rev: str) -> str | None:
        return self.branches.get(rev) or (rev if rev in self.commits else None)


class FakeHub:
    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.unhandled: list[tuple[str, str]] = []
        self.auth_headers: list[str | None] = []
        self.fail_once: set[str] = set()
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    def _new_commit(self, repo: Repo, parent: str | None, files: dict[str, bytes], lfs: set, message: str) -> str:
        oid = hashlib.sha1(f"{parent}{message}{sorted((p, git_blob_sha1(c)) for p, c in files.items())}{len(repo.commits)}"
                           .encode()).hexdigest()
        repo.commits[oid], repo.lfs_paths[oid], repo.messages[oid] = files, lfs, message
        return oid

    def files(self, repo_id: str, rev: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        return repo.commits[repo.resolve(rev)]

    def _handler_class(hub):  # noqa: N805  (closure over the FakeHub)
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            # ------------------------------------------------------------------ plumbing
            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            return data
                        data += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _send(self, status: int, body=b"", headers=None, content_type="application/json"):
                if not isinstance(body, bytes):
                    body = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _error(self, status: int, code: str | None, message: str):
                headers = {"X-Error-Message": message}
                if code:
                    headers["X-Error-Code"] = code
                self._send(status, {"error": message}, headers)

            def _fail(self, step: str) -> bool:
                with hub.lock:
                    if step in hub.fail_once:
                        hub.fail_once.discard(step)
                        status = 500 if step == "commit" else 507  # neither is retried by the client here
                        self._error(status, None, f"simulated failure at step {step!r}")
                        return True
                return False

            def _repo(self, repo_id: str) -> Repo | None:
                repo = hub.repos.get(repo_id)
                if repo is None:
                    self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
                return repo

            def _needs_auth(self) -> bool:
                auth = self.headers.get("Authorization")
                hub.auth_headers.append(auth)
                if not (auth or "").startswith("Bearer "):
                    self._error(401, None, "Invalid credentials in Authorization header")
                    return True
                return False

            def _route(self):
                path = urlsplit(self.path).path
                hub.requests.append((self.command, path))
                parts = [unquote(p) for p in path.strip("/").split("/")]
                m = self.command
                try:
                    if m == "POST" and parts[:3] == ["api", "repos", "create"]:
                        return self.create_repo()
                    if m == "POST" and parts[:2] == ["api", "validate-yaml"]:
                        self._body()
                        return self._send(200, {"errors": [], "warnings": []})
                    if parts[:2] == ["api", "models"] and len(parts) >= 4:
                        repo_id, rest = "/".join(parts[2:4]), parts[4:]
                        if m == "GET" and not rest:
                            return self.model_info(repo_id, "main")
                        if m == "GET" and rest[0] == "revision":
                            return self.model_info(repo_id, "/".join(rest[1:]))
                        if m == "GET" and rest[0] == "tree":
                            return self.tree(repo_id, rest[1], "/".join(rest[2:]))
                        if m == "POST" and rest[0] == "preupload":
                            return self.preupload(repo_id, "/".join(rest[1:]))
                        if m == "POST" and rest[0] == "commit":
                            return self.commit(repo_id, "/".join(rest[1:]))
                        if m == "POST" and rest[0] == "branch":
                            return self.create_branch(repo_id, "/".join(rest[1:]))
                    if m == "POST" and len(parts) == 6 and parts[1].endswith(".git") and parts[2:] == [
                            "info", "lfs", "objects", "batch"]:
                        return self.lfs_batch(f"{parts[0]}/{parts[1][:-4]}")
                    if m == "PUT" and parts[0] == "_lfs_upload":
                        return self.lfs_upload(parts[-1])
                    if m == "POST" and parts[0] == "_lfs_verify":
                        return self.lfs_verify()
                    if m in ("GET", "HEAD") and len(parts) >= 5 and parts[2] == "resolve":
                        return self.resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
                except Exception as err:  # a bug in this fake server: show it in the client's error
                    return self._error(500, None, f"fake hub error: {err!r}")
                hub.unhandled.append((m, path))
                self._error(404, None, f"fake hub does not implement {m} {path}")

            do_GET = do_POST = do_PUT = do_HEAD = _route

            # ------------------------------------------------------------------ endpoints
            def create_repo(self):
                payload = json.loads(self._body())
                if self._needs_auth():
                    return
                repo_id = f"{payload['organization']}/{payload['name']}"
                with hub.lock:
                    if repo_id in hub.repos:  # the Hub's 409 body carries the url; the client reads it
                        return self._send(409, {"error": "You already created this model repo",
                                                "url": f"{hub.url}/{repo_id}"})
                    repo = hub.repos[repo_id] = Repo(private=payload.get("visibility") == "private")
                    repo.branches["main"] = hub._new_commit(repo, None, {".gitattributes": GITATTRIBUTES}, set(),
                                                            "initial commit")
                self._send(200, {"url": f"{hub.url}/{repo_id}", "name": repo_id})

            def create_branch(self, repo_id, branch):
                payload = json.loads(self._body() or b"{}")
                if self._needs_auth() or (repo := self._repo(repo_id)) is None:
                    return
                with hub.lock:
                    if branch in repo.branches:
                        return self._error(409, None, f"Reference already exists: refs/heads/{branch}")
                    start = repo.resolve(payload.get("startingPoint") or "main")
                    repo.branches[branch] = start
                self._send(200, {})

            def model_info(self, repo_id, rev):
                if (repo := self._repo(repo_id)) is None:
                    return
                oid = repo.resolve(rev)
                if oid is None:
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
                files = repo.commits[oid]
                self._send(200, {"id": repo_id, "modelId": repo_id, "sha": oid, "private": repo.private,
                                 "siblings": [{"rfilename": p} for p in sorted(files)], "tags": []})

            def tree(self, repo_id, rev, prefix):
                if (repo := self._repo(repo_id)) is None:
                    return
                oid = repo.resolve(rev)
                if oid is None:
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
                entries = []
                for p, content in sorted(repo.commits[oid].items()):
                    if prefix and not p.startswith(prefix.rstrip("/") + "/"):
                        continue
                    entry = {"type": "file", "path": p, "size": len(content), "oid": git_blob_sha1(content)}
                    if p in repo.lfs_paths[oid]:
                        entry["lfs"] = {"oid": hashlib.sha256(content).hexdigest(), "size": len(content),
                                        "pointerSize": 134}
                    entries.append(entry)
                if prefix and not entries:
                    return self._error(404, "EntryNotFound", f"{prefix} does not exist on {rev}")
                self._send(200, entries)

            def preupload(self, repo_id, rev):
                payload = json.loads(self._body())
                if self._needs_auth() or (repo := self._repo(repo_id)) is None:
                    return
                oid = repo.resolve(rev)
                if oid is None:
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
                current = repo.commits[oid]
                out = []
                for f in payload["files"]:
                    lfs = f["path"].endswith(LFS_SUFFIXES) or f["size"] > 10_000_000
                    entry = {"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False}
                    if f["path"] in current:  # lets the client skip unchanged files on a re-run
                        old = current[f["path"]]
                        entry["oid"] = hashlib.sha256(old).hexdigest() if lfs else git_blob_sha1(old)
                    out.append(entry)
                self._send(200, {"files": out, "commitOid": oid})

            def lfs_batch(self, repo_id):
                payload = json.loads(self._body())
                if self._needs_auth() or self._repo(repo_id) is None:
                    return
                objects = []
                for obj in payload["objects"]:
                    entry = {"oid": obj["oid"], "size": obj["size"]}
                    if obj["oid"] not in hub.lfs:  # already stored -> no actions -> the client skips it
                        entry["actions"] = {
                            "upload": {"href": f"{hub.url}/_lfs_upload/{repo_id}/{obj['oid']}"},
                            "verify": {"href": f"{hub.url}/_lfs_verify/{repo_id}"},
                        }
                    objects.append(entry)
                self._send(200, {"transfer": "basic", "objects": objects}, content_type="application/vnd.git-lfs+json")

            def lfs_upload(self, oid):
                data = self._body()
                if self._fail("lfs_upload"):
                    return
                if hashlib.sha256(data).hexdigest() != oid:
                    return self._error(400, None, "sha256 of the uploaded content does not match the oid")
                hub.lfs[oid] = data
                self._send(200, b"", content_type="text/plain")

            def lfs_verify(self):
                payload = json.loads(self._body())
                if payload["oid"] not in hub.lfs or len(hub.lfs[payload["oid"]]) != payload["size"]:
                    return self._error(404, None, "object not found")
                self._send(200, {})

            def commit(self, repo_id, rev):
                lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
                if self._needs_auth() or (repo := self._repo(repo_id)) is None:
                    return
                if self._fail("commit"):
                    return
                with hub.lock:
                    head = repo.resolve(rev)
                    if head is None or rev not in repo.branches:
                        return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
                    files, lfs = dict(repo.commits[head]), set(repo.lfs_paths[head])
                    header = {}
                    for line in lines:
                        key, value = line["key"], line["value"]
                        if key == "header":
                            header = value
                            if value.get("parentCommit") not in (None, head):
                                return self._error(412, None, "parent commit is not the head of the branch")
                        elif key == "file":
                            files[value["path"]] = base64.b64decode(value["content"])
                            lfs.discard(value["path"])
                        elif key == "lfsFile":
                            if value["oid"] not in hub.lfs:
                                return self._error(422, None, f"LFS object {value['oid']} was never uploaded")
                            files[value["path"]] = hub.lfs[value["oid"]]
                            lfs.add(value["path"])
                        elif key == "deletedFile":
                            files.pop(value["path"], None)
                            lfs.discard(value["path"])
                        else:
                            return self._error(400, None, f"unsupported commit operation {key!r}")
                    oid = hub._new_commit(repo, head, files, lfs, header.get("summary", ""))
                    repo.branches[rev] = oid
                self._send(200, {"success": True, "commitOid": oid, "commitUrl": f"{hub.url}/{repo_id}/commit/{oid}",
                                 "pullRequestUrl": None})

            def resolve(self, repo_id, rev, path):
                if (repo := self._repo(repo_id)) is None:
                    return
                oid = repo.resolve(rev)
                if oid is None:
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
                content = repo.commits[oid].get(path)
                if content is None:
                    return self._error(404, "EntryNotFound", f"{path} does not exist on {rev}",)
                headers = {"X-Repo-Commit": oid, "ETag": f'"{git_blob_sha1(content)}"'}
                if path in repo.lfs_paths[oid]:
                    headers.update({"X-Linked-Etag": f'"{hashlib.sha256(content).hexdigest()}"',
                                    "X-Linked-Size": str(len(content))})
                self._send(200, content, headers, content_type="application/octet-stream")

        return Handler
