"""A small in-process Hugging Face Hub for the tests: an HTTP server on 127.0.0.1 that speaks the endpoints the
real ``huggingface_hub`` client (2.x, LFS path with ``HF_HUB_DISABLE_XET=1``) calls to create a repo, validate
card YAML, commit files (preupload → LFS batch → PUT → verify → ndjson commit) and download them (model info,
tree listing, resolve with HEAD/GET and the ``X-Repo-Commit``/``ETag``/``X-Linked-*`` headers, LFS redirect).

State lives in memory; commits are immutable snapshots ``{path: FileEntry}``; a branch moves only when a whole
commit is accepted, so a failed upload never shows a partial commit. ``LocalHub.fail`` injects failures:
``{"commit": 500}`` makes the next commit request fail, ``{"lfs_put": 403}`` the next LFS upload.
``LocalHub.corrupt(repo_id, path)`` flips bytes of a stored file (same size) to test verification on pull.

``hub_env(monkeypatch, hub, tmp_path)`` points the client at the server inside the current pytest process by
setting the environment and the matching ``huggingface_hub.constants`` values (configuration read at import
time); the client itself is never mocked.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

LFS_EXTENSIONS = (".safetensors", ".bin", ".pt", ".pth", ".png", ".jpg", ".npz", ".onnx", ".gz", ".zip")
LICENSES = {"apache-2.0", "mit", "bsd", "bsd-2-clause", "bsd-3-clause", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0",
            "cc-by-nc-sa-4.0", "cc-by-nc-nd-4.0", "cc0-1.0", "gpl-3.0", "lgpl-3.0", "agpl-3.0", "openrail", "other",
            "unknown", "llama2", "llama3", "gemma", "mpl-2.0", "unlicense", "cc-by-3.0", "cc-by-nc-3.0"}
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]{0,95}/[\w.\-]{1,96}$")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class FileEntry:
    size: int
    blob_id: str  # git blob sha1 of the content (regular) or of the LFS pointer
    sha256: str | None  # set for LFS files: the key into LocalHub.lfs


@dataclass
class Repo:
    owner: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit oid
    # oid -> parent, files, summary
    commits: dict[str, tuple[str | None, dict[str, FileEntry], str]] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)  # git blob sha1 -> content (regular files)
    lfs_oids: set[str] = field(default_factory=set)  # LFS objects uploaded to this repo (LFS storage is per repo)


class LocalHub:
    """Start with ``hub = LocalHub(tokens={"hf_test": "alice"}).start()``; ``hub.url``; ``hub.stop()``."""

    def __init__(self, tokens: dict[str, str] | None = None):
        self.tokens = dict(tokens or {})
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.fail: dict[str, int] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._cdn: ThreadingHTTPServer | None = None  # LFS downloads come from another origin, as on the Hub

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def start(self) -> LocalHub:
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._cdn = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        for srv, name in ((self._server, "local-hub"), (self._cdn, "local-hub-cdn")):
            srv.daemon_threads = True
            threading.Thread(target=srv.serve_forever, name=name, daemon=True).start()
        return self

    def stop(self) -> None:
        for srv in (self._server, self._cdn):
            if srv is not None:
                srv.shutdown()
                srv.server_close()
        self._server = self._cdn = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def cdn_url(self) -> str:
        host, port = self._cdn.server_address[:2]
        return f"http://{host}:{port}"

    # -- inspection helpers for tests ---------------------------------------------------------------------------
    def head(self, repo_id: str, branch: str = "main") -> str | None:
        repo = self.repos.get(repo_id)
        return repo.branches.get(branch) if repo else None

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        oid = repo.branches.get(revision, revision)
        return {p: self._content(repo, e) for p, e in repo.commits[oid][1].items()}

    def n_commits(self, repo_id: str) -> int:
        return len(self.repos[repo_id].commits) if repo_id in self.repos else 0

    def corrupt(self, repo_id: str, path: str, revision: str = "main", offset: int = -100) -> None:
        """Flip bytes of a stored file in place (size unchanged): what a bad disk or proxy would do. Calling it
        again with the same arguments restores the file."""
        repo = self.repos[repo_id]
        e = repo.commits[repo.branches.get(revision, revision)][1][path]
        data = bytearray(self._content(repo, e))
        for i in range(8):
            data[(offset + i) % len(data)] ^= 0xFF
        if e.sha256:
            self.lfs[e.sha256] = bytes(data)
        else:
            repo.blobs[e.blob_id] = bytes(data)

    def _content(self, repo: Repo, e: FileEntry) -> bytes:
        return self.lfs[e.sha256] if e.sha256 else repo.blobs[e.blob_id]

    def _take_failure(self, key: str) -> int | None:
        with self.lock:
            return self.fail.pop(key, None)


class _Handler(BaseHTTPRequestHandler):
    hub: LocalHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    # -- plumbing -----------------------------------------------------------------------------------------------
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status: int, body: bytes | dict | list | str = b"", headers: dict | None = None,
              head_only: bool = False) -> None:
        if isinstance(body, (dict, list)):
            body, ctype = json.dumps(body).encode(), "application/json"
        elif isinstance(body, str):
            body, ctype = body.encode(), "text/plain"
        else:
            ctype = "application/octet-stream"
        self.send_response(status)
        hdrs = {"Content-Type": ctype, "Content-Length": str(len(body))}
        hdrs.update(headers or {})
        for k, v in hdrs.items():
            self.send_header(k, v)
        self.end_headers()
        if not head_only and body:
            self.wfile.write(body)

    def _error(self, status: int, message: str, code: str | None = None, head_only: bool = False) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, {"error": message}, headers, head_only=head_only)

    def _user(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return self.hub.tokens.get(auth[7:])
        return None

    def _repo_for_read(self, repo_id: str, head_only: bool = False) -> Repo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None or (repo.private and self._user() != repo.owner):
            self._error(404 if repo is None else 401, "Repository not found", "RepoNotFound", head_only)
            return None
        return repo

    def _repo_for_write(self, repo_id: str) -> Repo | None:
        user = self._user()
        if user is None:
            self._error(401, "Invalid credentials in Authorization header")
            return None
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._error(404, "Repository not found", "RepoNotFound")
            return None
        if repo.owner != user:
            self._error(403, f"You don't have the rights to write to {repo_id}")
            return None
        return repo

    def _resolve(self, repo: Repo, rev: str, head_only: bool = False) -> str | None:
        rev = unquote(rev)
        if rev in repo.branches:
            return repo.branches[rev]
        if rev in repo.commits:
            return rev
        self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound", head_only)
        return None

    def _at_revision(self, repo_id: str, rev: str, write: bool = False, head_only: bool = False):
        """(repo, commit oid) for a request, or None after sending the error response."""
        r = self._repo_for_write(repo_id) if write else self._repo_for_read(repo_id, head_only)
        if r is None:
            return None
        oid = self._resolve(r, rev, head_only)
        return None if oid is None else (r, oid)

    # -- routing ------------------------------------------------------------------------------------------------
    def do_GET(self):
        self._route("GET")

    def do_HEAD(self):
        self._route("HEAD")

    def do_POST(self):
        self._route("POST")

    def do_PUT(self):
        self._route("PUT")

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        path, query = url.path, parse_qs(url.query)
        self.hub.requests.append((method, path))
        routes = [
            ("GET", r"/api/whoami-v2", self._whoami),
            ("POST", r"/api/repos/create", self._create_repo),
            ("POST", r"/api/validate-yaml", self._validate_yaml),
            ("GET", r"/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?", self._model_info),
            ("GET", r"/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<sub>.*))?", self._tree),
            ("POST", r"/api/models/(?P<repo>[^/]+/[^/]+)/preupload/(?P<rev>[^/]+)", self._preupload),
            ("POST", r"/api/models/(?P<repo>[^/]+/[^/]+)/commit/(?P<rev>[^/]+)", self._commit),
            ("POST", r"/api/models/(?P<repo>[^/]+/[^/]+)/branch/(?P<branch>.+)", self._create_branch),
            ("POST", r"/(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch", self._lfs_batch),
            ("PUT", r"/_lfs/upload/(?P<repo>[^/]+/[^/]+)/(?P<oid>[0-9a-f]{64})", self._lfs_put),
            ("POST", r"/_lfs/verify/(?P<repo>[^/]+/[^/]+)", self._lfs_verify),
            ("GET", r"/_cdn/(?P<oid>[0-9a-f]{64})", self._cdn),
            ("HEAD", r"/_cdn/(?P<oid>[0-9a-f]{64})", self._cdn),
            ("GET", r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self._resolve_file),
            ("HEAD", r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self._resolve_file),
        ]
        for m, pattern, fn in routes:
            match = re.fullmatch(pattern, path)
            if m == method and match:
                try:
                    fn(method=method, query=query, **{k: v for k, v in match.groupdict().items() if v is not None})
                except Exception as e:  # a server bug must surface as a 500, not hang the client
                    self._error(500, f"local hub error: {type(e).__name__}: {e}")
                return
        self._error(404, f"local hub: no route for {method} {path}")

    # -- endpoints ----------------------------------------------------------------------------------------------
    def _whoami(self, method, query):
        user = self._user()
        if user is None:
            return self._error(401, "Invalid credentials in Authorization header")
        self._send(200, {"type": "user", "name": user, "fullname": user, "orgs": [],
                         "auth": {"type": "access_token", "accessToken": {"displayName": "tests", "role": "write"}}})

    def _create_repo(self, method, query):
        user = self._user()
        if user is None:
            return self._error(401, "Invalid credentials in Authorization header")
        body = json.loads(self._body() or b"{}")
        owner = body.get("organization") or user
        repo_id = f"{owner}/{body['name']}"
        if body.get("type", "model") not in (None, "model"):
            return self._error(400, "the local hub only stores model repos")
        if owner != user:
            return self._error(403, f"You don't have the rights to create a repo under {owner}")
        if not _REPO_ID.match(repo_id):
            return self._error(400, f"Invalid repo name {repo_id}")
        url = f"{self.hub.url}/{repo_id}"
        with self.hub.lock:
            if repo_id in self.hub.repos:
                return self._send(409, {"error": "You already created this model repo", "url": url})
            private = body.get("private") or body.get("visibility") == "private"
            repo = Repo(owner=owner, private=bool(private))
            attrs = "".join(f"*{ext} filter=lfs diff=lfs merge=lfs -text\n" for ext in LFS_EXTENSIONS).encode()
            blob = git_blob_sha1(attrs)
            repo.blobs[blob] = attrs
            oid = hashlib.sha1(f"{repo_id}{time.time_ns()}init".encode()).hexdigest()
            repo.commits[oid] = (None, {".gitattributes": FileEntry(len(attrs), blob, None)}, "initial commit")
            repo.branches["main"] = oid
            self.hub.repos[repo_id] = repo
        self._send(200, {"url": url, "name": repo_id, "id": oid})

    def _create_branch(self, method, query, repo, branch):
        r = self._repo_for_write(repo)
        if r is None:
            return
        branch = unquote(branch)
        body = json.loads(self._body() or b"{}")
        with self.hub.lock:
            if branch in r.branches:
                return self._error(409, f"Reference already exists: refs/heads/{branch}")
            start = body.get("startingPoint") or "main"
            oid = self._resolve(r, start)
            if oid is None:
                return
            r.branches[branch] = oid
        self._send(200, {})

    def _validate_yaml(self, method, query):
        body = json.loads(self._body() or b"{}")
        problems = validate_card_metadata(body.get("content", ""))
        if problems:
            return self._send(400, {"error": "; ".join(problems)})
        self._send(200, {"errors": [], "warnings": []})

    def _model_info(self, method, query, repo, rev="main"):
        at = self._at_revision(repo, rev)
        if at is None:
            return
        r, oid = at
        files = r.commits[oid][1]
        blobs = query.get("blobs", ["false"])[0].lower() in ("1", "true")
        siblings = []
        for p, e in sorted(files.items()):
            s = {"rfilename": p}
            if blobs:
                s.update(size=e.size, blobId=e.blob_id)
                if e.sha256:
                    s["lfs"] = {"sha256": e.sha256, "size": e.size, "pointerSize": len(lfs_pointer(e.sha256, e.size))}
            siblings.append(s)
        self._send(200, {"_id": oid, "id": repo, "modelId": repo, "author": r.owner, "sha": oid,
                         "private": r.private, "disabled": False, "gated": False, "downloads": 0, "likes": 0,
                         "tags": [], "library_name": "timm", "siblings": siblings,
                         "lastModified": "2026-01-01T00:00:00.000Z", "createdAt": "2026-01-01T00:00:00.000Z"})

    def _tree(self, method, query, repo, rev, sub=""):
        at = self._at_revision(repo, rev)
        if at is None:
            return
        r, oid = at
        sub = unquote(sub).strip("/")
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        entries, folders = [], set()
        for p, e in sorted(r.commits[oid][1].items()):
            if sub and not p.startswith(sub + "/"):
                continue
            rel = p[len(sub) + 1:] if sub else p
            if "/" in rel and not recursive:
                folders.add((sub + "/" if sub else "") + rel.split("/")[0])
                continue
            item = {"type": "file", "oid": e.blob_id, "size": e.size, "path": p}
            if e.sha256:
                item["lfs"] = {"oid": e.sha256, "size": e.size, "pointerSize": len(lfs_pointer(e.sha256, e.size))}
            entries.append(item)
        entries += [{"type": "directory", "oid": hashlib.sha1(f.encode()).hexdigest(), "size": 0, "path": f}
                    for f in sorted(folders)]
        self._send(200, entries)

    def _preupload(self, method, query, repo, rev):
        at = self._at_revision(repo, rev, write=True)
        if at is None:
            return
        r, oid = at
        current = r.commits[oid][1]
        files = json.loads(self._body())["files"]
        out = []
        for f in files:
            sample = base64.b64decode(f.get("sample", ""))
            binary = b"\0" in sample or _not_utf8(sample)
            lfs = f["path"].endswith(LFS_EXTENSIONS) or binary or f["size"] >= 10 * 2**20
            existing = current.get(f["path"])
            out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                        "oid": existing.blob_id if existing else None})
        self._send(200, {"files": out, "commitOid": oid})

    def _lfs_batch(self, method, query, repo):
        r = self._repo_for_write(repo)
        if r is None:
            return
        body = json.loads(self._body())
        objects = []
        for o in body["objects"]:
            item = {"oid": o["oid"], "size": o["size"], "authenticated": True}
            if o["oid"] not in r.lfs_oids:
                item["actions"] = {"upload": {"href": f"{self.hub.url}/_lfs/upload/{repo}/{o['oid']}"},
                                   "verify": {"href": f"{self.hub.url}/_lfs/verify/{repo}"}}
            objects.append(item)
        self._send(200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

    def _lfs_put(self, method, query, repo, oid):
        data = self._body()
        r = self.hub.repos.get(repo)
        if r is None:
            return self._error(404, "Repository not found", "RepoNotFound")
        status = self.hub._take_failure("lfs_put")
        if status:
            return self._error(status, "local hub: injected LFS upload failure (storage rejected the object)")
        if hashlib.sha256(data).hexdigest() != oid:
            return self._error(400, "uploaded content does not match its sha256")
        with self.hub.lock:
            self.hub.lfs.setdefault(oid, data)
            r.lfs_oids.add(oid)
        self._send(200, b"", {"ETag": f'"{hashlib.md5(data).hexdigest()}"'})

    def _lfs_verify(self, method, query, repo):
        body = json.loads(self._body())
        r = self.hub.repos.get(repo)
        data = self.hub.lfs.get(body["oid"])
        if r is None or body["oid"] not in r.lfs_oids or data is None or len(data) != body["size"]:
            return self._error(404, "LFS object not found")
        self._send(200, {})

    def _commit(self, method, query, repo, rev):
        r = self._repo_for_write(repo)
        if r is None:
            return
        raw = self._body()
        status = self.hub._take_failure("commit")
        if status:
            return self._error(status, "local hub: injected commit failure (internal error)")
        branch = unquote(rev)
        lines = [json.loads(line) for line in raw.splitlines() if line.strip()]
        header = next((x["value"] for x in lines if x["key"] == "header"), {})
        with self.hub.lock:
            if branch not in r.branches:
                return self._error(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            parent = r.branches[branch]
            if header.get("parentCommit") and header["parentCommit"] != parent:
                return self._error(412, "A commit has happened since. Please refresh and try again.")
            files = dict(r.commits[parent][1])
            new_blobs = {}
            for x in lines:
                key, v = x["key"], x["value"]
                if key == "file":
                    data = base64.b64decode(v["content"])
                    blob = git_blob_sha1(data)
                    new_blobs[blob] = data
                    files[v["path"]] = FileEntry(len(data), blob, None)
                elif key == "lfsFile":
                    data = self.hub.lfs.get(v["oid"]) if v["oid"] in r.lfs_oids else None
                    if data is None:
                        return self._error(422, f"LFS object {v['oid']} for {v['path']} was never uploaded")
                    files[v["path"]] = FileEntry(len(data), git_blob_sha1(lfs_pointer(v["oid"], len(data))), v["oid"])
                elif key == "deletedFile":
                    if v["path"] not in files:
                        return self._error(404, "A file with this name doesn't exist", "EntryNotFound")
                    del files[v["path"]]
                elif key == "deletedFolder":
                    files = {p: e for p, e in files.items() if not p.startswith(v["path"].rstrip("/") + "/")}
                elif key != "header":
                    return self._error(400, f"unknown commit operation {key}")
            oid = hashlib.sha1(f"{repo}{parent}{time.time_ns()}{header.get('summary')}".encode()).hexdigest()
            r.blobs.update(new_blobs)
            r.commits[oid] = (parent, files, header.get("summary", ""))
            r.branches[branch] = oid
        self._send(200, {"commitUrl": f"{self.hub.url}/{repo}/commit/{oid}", "commitOid": oid,
                         "pullRequestUrl": None, "success": True})

    def _resolve_file(self, method, query, repo, rev, file):
        head = method == "HEAD"
        at = self._at_revision(repo, rev, head_only=head)
        if at is None:
            return
        r, oid = at
        e = r.commits[oid][1].get(unquote(file))
        if e is None:
            return self._error(404, "Entry not found", "EntryNotFound", head)
        headers = {"X-Repo-Commit": oid, "ETag": f'"{e.blob_id}"'}
        if e.sha256:  # LFS: redirect to the storage, with the linked etag/size the client caches by
            headers.update({"X-Linked-Etag": f'"{e.sha256}"', "X-Linked-Size": str(e.size),
                            "Location": f"{self.hub.cdn_url}/_cdn/{e.sha256}"})
            return self._send(302, b"", headers, head_only=head)
        self._send(200, r.blobs[e.blob_id], headers, head_only=head)

    def _cdn(self, method, query, oid):
        data = self.hub.lfs.get(oid)
        if data is None:
            return self._error(404, "not found", head_only=method == "HEAD")
        self._send(200, data, {"ETag": f'"{oid}"'}, head_only=method == "HEAD")


def _not_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


def validate_card_metadata(content: str) -> list[str]:
    """The card checks the Hub applies that a px-hub card can get wrong (a subset of the Hub's rules)."""
    m = re.match(r"^---\n(.*?)\n---\n", content, re.S)
    if not m:
        return ["the card has no YAML metadata block"]
    try:
        meta = yaml.safe_load(m.group(1))
    except yaml.YAMLError as e:
        return [f"YAML does not parse: {e}"]
    if not isinstance(meta, dict):
        return ["metadata must be a mapping"]
    problems = []
    lic = meta.get("license")
    if lic is not None and lic not in LICENSES:
        problems.append(f'"license" must be one of the Hub license ids, got {lic!r}')
    if lic == "other" and not meta.get("license_name"):
        problems.append('"license_name" is required when "license" is "other"')
    for key in ("tags", "datasets", "metrics"):
        if key in meta and not (isinstance(meta[key], list) and all(isinstance(x, str) for x in meta[key])):
            problems.append(f'"{key}" must be an array of strings')
    bm = meta.get("base_model")
    for b in ([bm] if isinstance(bm, str) else bm or []):
        if not (isinstance(b, str) and _REPO_ID.match(b)):
            problems.append(f'"base_model" must be a valid model id, got {b!r}')
    for key in ("library_name", "pipeline_tag"):
        if key in meta and not isinstance(meta[key], str):
            problems.append(f'"{key}" must be a string')
    mi = meta.get("model-index")
    if mi is not None:
        if not isinstance(mi, list):
            problems.append('"model-index" must be an array')
        else:
            for model in mi:
                if not isinstance(model, dict) or not isinstance(model.get("name"), str):
                    problems.append('"model-index[].name" is required')
                    continue
                for res in model.get("results") or []:
                    if not isinstance((res.get("task") or {}).get("type"), str):
                        problems.append('"model-index[].results[].task.type" is required')
                    ds = res.get("dataset") or {}
                    if not (isinstance(ds.get("type"), str) and isinstance(ds.get("name"), str)):
                        problems.append('"model-index[].results[].dataset" needs type and name')
                    metrics = res.get("metrics")
                    if not metrics or not all(isinstance(x, dict) and isinstance(x.get("type"), str)
                                              and "value" in x for x in metrics):
                        problems.append('"model-index[].results[].metrics" needs type and value for each metric')
    return problems


def hub_env(monkeypatch, hub: LocalHub, tmp_path, token: str | None = None) -> dict[str, str]:
    """Point huggingface_hub (and timm through it) at ``hub`` for this test: online, no Xet, a private cache and
    token file under ``tmp_path``; ``token`` (if given) is exported as HF_TOKEN. Returns the env for subprocesses."""
    from huggingface_hub import constants

    home = tmp_path / "hf_home"
    cache = home / "hub"
    cache.mkdir(parents=True, exist_ok=True)
    env = {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(home),
           "HF_HUB_CACHE": str(cache), "HF_TOKEN_PATH": str(home / "token"), "HF_HUB_DISABLE_TELEMETRY": "1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    if token is None:
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    else:
        monkeypatch.setenv("HF_TOKEN", token)
        env["HF_TOKEN"] = token
    for name, value in {
        "ENDPOINT": hub.url,
        "HUGGINGFACE_CO_URL_TEMPLATE": hub.url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_XET": True,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(cache),
        "HUGGINGFACE_HUB_CACHE": str(cache),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
    }.items():
        if hasattr(constants, name):
            monkeypatch.setattr(constants, name, value)
    return env
