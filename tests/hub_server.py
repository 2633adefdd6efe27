"""A local stand-in for the Hub endpoints huggingface_hub calls to check a token, create a repo and upload a
folder, small files inline ("regular") and weights through Git LFS (preupload answers "lfs", then the LFS
batch endpoint, a PUT of the bytes, and an ``lfsFile`` line in the commit), as the real Hub does.

``mode``: "ok"; "401" (every request is refused as unauthorized); "drop" (the connection is closed, with no
answer, when the commit arrives: a connection lost mid-upload).
"""

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeHub:
    def __init__(self, mode="ok"):
        self.mode = mode
        self.repos, self.files, self.requests, self.auth = {}, {}, [], set()
        self.lfs_objects, self.upload_modes = {}, {}  # sha256 -> bytes; path -> "lfs" | "regular"
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _reply(self, status, payload):
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _body(self):
                length = int(self.headers.get("Content-Length", 0))
                return self.rfile.read(length) if length else b""

            def do_GET(self):
                hub.requests.append("GET " + self.path)
                hub.auth.add(self.headers.get("authorization", ""))
                if hub.mode == "401":
                    return self._reply(401, {"error": "Invalid credentials in Authorization header"})
                if self.path.split("?")[0] == "/api/whoami-v2":
                    return self._reply(
                        200, {"type": "user", "name": "tester", "auth": {"type": "access_token"}}
                    )
                return self._reply(404, {"error": f"unknown endpoint {self.path}"})

            def do_PUT(self):  # the LFS upload action's href: store the object's bytes under its sha256
                hub.requests.append("PUT " + self.path)
                oid = self.path.rsplit("/", 1)[-1]
                hub.lfs_objects[oid] = self._body()
                return self._reply(200, {})

            def do_POST(self):
                body = self._body()
                hub.requests.append(self.path)
                hub.auth.add(self.headers.get("authorization", ""))
                if hub.mode == "401":
                    return self._reply(401, {"error": "Invalid credentials in Authorization header"})
                parts = self.path.split("?")[0].strip("/").split("/")
                if self.path.endswith(".git/info/lfs/objects/batch"):
                    objects = json.loads(body)["objects"]
                    return self._reply(
                        200,
                        {
                            "transfer": "basic",
                            "objects": [
                                {
                                    "oid": o["oid"],
                                    "size": o["size"],
                                    "authenticated": True,
                                    "actions": {"upload": {"href": f"{hub.url}/lfs-upload/{o['oid']}"}},
                                }
                                for o in objects
                            ],
                        },
                    )
                if parts[:3] == ["api", "repos", "create"]:
                    data = json.loads(body)
                    repo = f"{data.get('organization') or 'user'}/{data['name']}"
                    hub.repos[repo] = data
                    return self._reply(200, {"url": f"{hub.url}/{repo}", "name": repo})
                if parts[:2] == ["api", "validate-yaml"]:  # model card metadata check
                    return self._reply(200, {"errors": [], "warnings": []})
                repo = "/".join(parts[2:4])
                action = parts[4] if len(parts) > 4 else ""
                if action == "preupload":
                    files = json.loads(body)["files"]
                    for f in files:  # weights go through LFS, as the Hub's .gitattributes says for them
                        lfs = f["path"].endswith((".safetensors", ".onnx", ".bin"))
                        hub.upload_modes[f["path"]] = "lfs" if lfs else "regular"
                    return self._reply(
                        200,
                        {
                            "files": [
                                {
                                    "path": f["path"],
                                    "uploadMode": hub.upload_modes[f["path"]],
                                    "shouldIgnore": False,
                                }
                                for f in files
                            ]
                        },
                    )
                if action == "branch":
                    return self._reply(200, {})
                if action == "commit":
                    if hub.mode == "drop":
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return None
                    for line in body.decode().splitlines():
                        item = json.loads(line)
                        if item["key"] == "file":
                            content = base64.b64decode(item["value"]["content"])
                            hub.files[(repo, "/".join(parts[5:]), item["value"]["path"])] = content
                        elif item["key"] == "lfsFile":  # must have been uploaded through the batch action
                            content = hub.lfs_objects[item["value"]["oid"]]
                            hub.files[(repo, "/".join(parts[5:]), item["value"]["path"])] = content
                    return self._reply(
                        200,
                        {
                            "commitUrl": f"{hub.url}/{repo}/commit/abc",
                            "commitOid": "a" * 40,
                            "pullRequestUrl": None,
                        },
                    )
                return self._reply(404, {"error": f"unknown endpoint {self.path}"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
