"""A local stand-in for the Hub endpoints huggingface_hub calls to create a repo and upload a folder.

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

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length) if length else b""
                hub.requests.append(self.path)
                hub.auth.add(self.headers.get("authorization", ""))
                if hub.mode == "401":
                    return self._reply(401, {"error": "Invalid credentials in Authorization header"})
                parts = self.path.split("?")[0].strip("/").split("/")
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
                    return self._reply(
                        200,
                        {
                            "files": [
                                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
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
