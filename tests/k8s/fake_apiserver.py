"""A small in-process Kubernetes API server for the RayJob runner's tests.

It speaks the real REST paths the `kubernetes` client calls (CRD lookup, RayJob create/get/watch,
pod list and logs) with real status codes: 401 without the token, 403 in forbidden namespaces,
404, 409. A RayJob's status advances one scripted step per watch event, like an operator would.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

RAYJOBS = re.compile(r"^/apis/ray\.io/v1/namespaces/([^/]+)/rayjobs(?:/([^/]+))?$")
PODS = re.compile(r"^/api/v1/namespaces/([^/]+)/pods(?:/([^/]+)/log)?$")
CRD = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/rayjobs.ray.io"


class FakeKubeAPI:
    def __init__(self, token: str = "s3cret"):
        self.token = token
        self.crd_installed = True
        self.forbidden_namespaces: set[str] = set()
        self.rayjobs: dict[tuple[str, str], dict] = {}
        self.script: list[dict] = []  # statuses every new RayJob goes through, one per watch event
        self.progress: dict[tuple[str, str], int] = {}
        self.logs = "driver: finished\n"
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeKubeAPI:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def kubeconfig(self, path, token: str | None = None) -> str:
        import yaml

        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "me", "user": {"token": token or self.token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "me", "namespace": "recsys"}}],
        }))
        return str(path)

    def advance(self, key: tuple[str, str]) -> dict:
        with self.lock:
            step = self.progress.get(key, 0)
            obj = self.rayjobs[key]
            if step < len(self.script):
                obj["status"] = dict(self.script[step])
                self.progress[key] = step + 1
            return json.loads(json.dumps(obj))

    def _handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def send_json(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def status(self, code: int, reason: str, message: str) -> None:
                self.send_json(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                      "reason": reason, "message": message, "code": code})

            def authorized(self) -> bool:
                if self.headers.get("Authorization") != f"Bearer {api.token}":
                    self.status(401, "Unauthorized", "Unauthorized")
                    return False
                return True

            def do_POST(self):
                if not self.authorized():
                    return
                match = RAYJOBS.match(urlparse(self.path).path)
                if not match or match.group(2):
                    return self.status(404, "NotFound", "the server could not find the requested resource")
                namespace = match.group(1)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if namespace in api.forbidden_namespaces:
                    return self.status(403, "Forbidden", f'rayjobs.ray.io is forbidden: cannot create in "{namespace}"')
                key = (namespace, body["metadata"]["name"])
                with api.lock:
                    if key in api.rayjobs:
                        return self.status(409, "AlreadyExists", f'rayjobs.ray.io "{key[1]}" already exists')
                    body["metadata"].update(uid=f"uid-{len(api.rayjobs)}", resourceVersion="1",
                                            creationTimestamp="2026-01-01T00:00:00Z")
                    api.rayjobs[key] = body
                self.send_json(201, body)

            def do_GET(self):
                if not self.authorized():
                    return
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path == CRD:
                    if api.crd_installed:
                        return self.send_json(200, {
                            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                            "metadata": {"name": "rayjobs.ray.io"},
                            "spec": {"group": "ray.io", "scope": "Namespaced",
                                     "names": {"kind": "RayJob", "plural": "rayjobs"},
                                     "versions": [{"name": "v1", "served": True, "storage": True}]},
                        })
                    return self.status(404, "NotFound", 'customresourcedefinitions "rayjobs.ray.io" not found')
                if match := RAYJOBS.match(url.path):
                    return self.rayjob(match.group(1), match.group(2), query)
                if match := PODS.match(url.path):
                    return self.pods(match.group(1), match.group(2), query)
                self.status(404, "NotFound", "the server could not find the requested resource")

            def rayjob(self, namespace: str, name: str | None, query: dict) -> None:
                if namespace in api.forbidden_namespaces:
                    return self.status(403, "Forbidden", "rayjobs.ray.io is forbidden")
                if name:
                    if (namespace, name) not in api.rayjobs:
                        return self.status(404, "NotFound", f'rayjobs.ray.io "{name}" not found')
                    return self.send_json(200, api.rayjobs[(namespace, name)])
                selected = query.get("fieldSelector", "").removeprefix("metadata.name=")
                keys = [k for k in api.rayjobs if k[0] == namespace and (not selected or k[1] == selected)]
                if query.get("watch", "").lower() not in ("true", "1"):  # the API server uses ParseBool
                    return self.send_json(200, {"kind": "RayJobList", "apiVersion": "ray.io/v1", "metadata": {},
                                                "items": [api.rayjobs[k] for k in keys]})
                # A watch: one MODIFIED event per scripted step, then hold until the timeout (≤ 1 s here).
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                for key in keys:
                    while api.progress.get(key, 0) < len(api.script):
                        event = {"type": "MODIFIED", "object": api.advance(key)}
                        self.wfile.write((json.dumps(event) + "\n").encode())
                        self.wfile.flush()
                        time.sleep(0.02)
                time.sleep(min(float(query.get("timeoutSeconds", 1)), 1.0))

            def pods(self, namespace: str, pod: str | None, query: dict) -> None:
                if pod:
                    data = api.logs.encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                job = query.get("labelSelector", "").removeprefix("job-name=")
                items = [{"metadata": {"name": f"{job}-submitter-x1", "namespace": namespace,
                                       "creationTimestamp": "2026-01-01T00:00:00Z"}}] if (namespace, job) in api.rayjobs else []
                self.send_json(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})

        return Handler
