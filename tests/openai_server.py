"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests and benchmarks.

Serves POST /v1/chat/completions, and for the Batch API POST /v1/files, GET /v1/files/{id},
GET /v1/files/{id}/content, POST /v1/batches, GET /v1/batches/{id}. Answers come from a
pluggable `responder(messages, body) -> str`. Faults are injected per request with
`inject(kind, times=..., match=...)`:

- rate_limit: HTTP 429 with a Retry-After header
- server_error: HTTP 500
- timeout: answers only after `hang_s` (longer than the client's timeout)
- bad_request: HTTP 400
- invalid_json: 200, but the content is prose without JSON
- truncated: 200, the content cut in half, finish_reason "length"
- prose: 200, the content wrapped in prose
- fenced: 200, the content inside a ```json code fence

Every request is recorded (`requests`, `count(...)`), as is the most chat requests in flight at once
(`max_in_flight`); GET /_stats reports these counts to another process. `latency_s` adds a delay
to each chat answer. `hold_after(n)` lets the next n chat requests through and holds the later
ones unanswered until `release()`, so a test can stop a client at an exact point.
Run standalone: `python tests/openai_server.py --port 8000 --latency 0.1`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import threading
import time
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

CHAT_PATH = "/v1/chat/completions"
FAULTS = {"rate_limit", "server_error", "timeout", "bad_request", "invalid_json", "truncated", "prose", "fenced"}


def last_user_text(messages: list[dict]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return ""


def words_responder(messages: list[dict], body: dict) -> str:
    """Default answer: a JSON list of {tag, explanation} from the longest words of the last user paragraph."""
    paragraph = last_user_text(messages).strip().split("\n\n")[-1]
    words = sorted({w.lower() for w in re.findall(r"[A-Za-z]{3,}", paragraph)}, key=lambda w: (-len(w), w))[:3]
    return json.dumps([{"tag": word, "explanation": f"the query mentions {word}"} for word in words])


@dataclass
class Fault:
    kind: str
    times: int
    match: str | None
    retry_after: float
    hang_s: float


@dataclass
class RequestRecord:
    method: str
    path: str
    status: int
    messages: list = field(default_factory=list)
    fault: str | None = None
    authorization_ok: bool = True


class OpenAIServer:
    def __init__(
        self,
        responder: Callable[[list[dict], dict], str] = words_responder,
        latency_s: float = 0.0,
        api_key: str | None = None,
        batch_delay_s: float = 0.0,
        port: int = 0,
    ):
        self.responder, self.latency_s, self.api_key, self.batch_delay_s = responder, latency_s, api_key, batch_delay_s
        self.requests: list[RequestRecord] = []
        self.files: dict[str, dict] = {}
        self.batches: dict[str, dict] = {}
        self._faults: list[Fault] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._gate = threading.Condition(self._lock)
        self._chat_arrivals = 0
        self._answer_limit: int | None = None
        self._ids = itertools.count(1)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # lifecycle ---------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "OpenAIServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # control -------------------------------------------------------------------------------
    def inject(
        self, kind: str, times: int = 1, match: str | None = None, retry_after: float = 1.0, hang_s: float = 5.0
    ):
        """The next `times` chat requests whose messages contain `match` (any, when None) get fault `kind`."""
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; known: {sorted(FAULTS)}")
        with self._lock:
            self._faults.append(Fault(kind, times, match, retry_after, hang_s))

    def hold_after(self, n: int) -> None:
        """Answer the next `n` chat requests; hold the later ones until `release()`."""
        with self._gate:
            self._answer_limit = self._chat_arrivals + n

    def release(self) -> None:
        with self._gate:
            self._answer_limit = None
            self._gate.notify_all()

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._faults.clear()
            self.max_in_flight = 0

    def count(self, path: str = CHAT_PATH, status: int | None = None) -> int:
        with self._lock:
            return sum(r.path == path and (status is None or r.status == status) for r in self.requests)

    def chat_messages(self, status: int | None = 200) -> list[list[dict]]:
        """Messages of the chat requests answered with `status` (None = all)."""
        with self._lock:
            return [r.messages for r in self.requests if r.path == CHAT_PATH and (status is None or r.status == status)]

    # internals ----------------------------------------------------------------------------
    def _next_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}"

    def _take_fault(self, messages: list[dict]) -> Fault | None:
        text = "\n".join(str(m.get("content", "")) for m in messages)
        with self._lock:
            for fault in self._faults:
                if fault.times > 0 and (fault.match is None or fault.match in text):
                    fault.times -= 1
                    return fault
        return None

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self.requests.append(record)

    def answer_chat(self, body: dict, sleep: bool = True) -> tuple[int, dict, dict, str | None]:
        """(status, headers, json body, fault kind) for one chat completion request."""
        messages = body.get("messages") or []
        fault = self._take_fault(messages)
        kind = fault.kind if fault else None
        if sleep and self.latency_s:
            time.sleep(self.latency_s)
        if kind == "rate_limit":
            return (
                429,
                {"Retry-After": f"{fault.retry_after:g}"},
                _error("Rate limit reached", "rate_limit_exceeded"),
                kind,
            )
        if kind == "server_error":
            return 500, {}, _error("The server had an error", "server_error"), kind
        if kind == "bad_request":
            return 400, {}, _error("Invalid request", "invalid_request_error"), kind
        if kind == "timeout" and sleep:
            time.sleep(fault.hang_s)
        content = self.responder(messages, body)
        finish_reason = "stop"
        if kind == "invalid_json":
            content = "I would describe this query as being about several things, mostly writing."
        elif kind == "truncated":
            content, finish_reason = content[: max(1, len(content) // 2)], "length"
        elif kind == "prose":
            content = f"Sure! Here are the tags you asked for:\n{content}\nLet me know if you need anything else."
        elif kind == "fenced":
            content = f"```json\n{content}\n```"
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
        completion_tokens = max(1, len(content.split()))
        completion = {
            "id": self._next_id("chatcmpl"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "unknown"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        return 200, {}, completion, kind

    def _file_object(self, file_id: str) -> dict:
        stored = self.files[file_id]
        return {
            "id": file_id,
            "object": "file",
            "bytes": len(stored["data"]),
            "created_at": stored["created_at"],
            "filename": stored["filename"],
            "purpose": stored["purpose"],
            "status": "processed",
        }

    def _store_file(self, data: bytes, filename: str, purpose: str) -> str:
        file_id = self._next_id("file")
        with self._lock:
            self.files[file_id] = {
                "data": data,
                "filename": filename,
                "purpose": purpose,
                "created_at": int(time.time()),
            }
        return file_id

    def _run_batch(self, batch_id: str) -> None:
        batch = self.batches[batch_id]
        time.sleep(self.batch_delay_s)
        batch["status"] = "in_progress"
        outputs, errors = [], []
        lines = [
            json.loads(line)
            for line in self.files[batch["input_file_id"]]["data"].decode().splitlines()
            if line.strip()
        ]
        batch["request_counts"]["total"] = len(lines)
        for line in lines:
            status, _, body, kind = self.answer_chat(line["body"], sleep=False)
            self._record(RequestRecord("BATCH", CHAT_PATH + "#batch", status, line["body"].get("messages", []), kind))
            entry = {
                "id": self._next_id("batch_req"),
                "custom_id": line["custom_id"],
                "response": {"status_code": status, "request_id": "", "body": body},
                "error": None,
            }
            (outputs if status == 200 else errors).append(json.dumps(entry))
            batch["request_counts"]["completed" if status == 200 else "failed"] += 1
        if outputs:
            batch["output_file_id"] = self._store_file(
                ("\n".join(outputs) + "\n").encode(), "output.jsonl", "batch_output"
            )
        if errors:
            batch["error_file_id"] = self._store_file(
                ("\n".join(errors) + "\n").encode(), "errors.jsonl", "batch_output"
            )
        batch["completed_at"] = int(time.time())
        batch["status"] = "completed"

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # no delayed-ACK stalls between headers and body

            def log_message(self, *args):  # keep test output quiet
                pass

            def _send(self, status: int, payload, headers: dict | None = None, raw: bytes | None = None):
                data = raw if raw is not None else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header(
                        "Content-Type", "application/octet-stream" if raw is not None else "application/json"
                    )
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout fault)

            def _authorized(self) -> bool:
                return server.api_key is None or self.headers.get("Authorization") == f"Bearer {server.api_key}"

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_POST(self):
                data = self._body()
                path = self.path.split("?")[0]
                if not self._authorized():
                    server._record(RequestRecord("POST", path, 401, authorization_ok=False))
                    return self._send(401, _error("Incorrect API key provided", "invalid_api_key"))
                if path == CHAT_PATH:
                    body = json.loads(data or b"{}")
                    record = RequestRecord("POST", path, 0, body.get("messages", []))  # status 0 until answered
                    server._record(record)
                    with server._gate:
                        server._chat_arrivals += 1
                        arrival = server._chat_arrivals
                        server._gate.wait_for(lambda: server._answer_limit is None or arrival <= server._answer_limit)
                        server.in_flight += 1
                        server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    try:
                        status, headers, payload, kind = server.answer_chat(body)
                    finally:
                        with server._lock:
                            server.in_flight -= 1
                    record.status, record.fault = status, kind
                    return self._send(status, payload, headers)
                if path == "/v1/files":
                    form = _parse_multipart(self.headers.get("Content-Type", ""), data)
                    filename, content = form["file"]
                    file_id = server._store_file(content, filename or "upload.jsonl", form["purpose"][1].decode())
                    server._record(RequestRecord("POST", path, 200))
                    return self._send(200, server._file_object(file_id))
                if path == "/v1/batches":
                    body = json.loads(data or b"{}")
                    if body.get("input_file_id") not in server.files:
                        server._record(RequestRecord("POST", path, 404))
                        return self._send(404, _error("No such file", "not_found"))
                    batch_id = server._next_id("batch")
                    server.batches[batch_id] = {
                        "id": batch_id,
                        "object": "batch",
                        "endpoint": body.get("endpoint"),
                        "input_file_id": body["input_file_id"],
                        "completion_window": body.get("completion_window", "24h"),
                        "status": "validating",
                        "created_at": int(time.time()),
                        "output_file_id": None,
                        "error_file_id": None,
                        "request_counts": {"total": 0, "completed": 0, "failed": 0},
                    }
                    threading.Thread(target=server._run_batch, args=(batch_id,), daemon=True).start()
                    server._record(RequestRecord("POST", path, 200))
                    return self._send(200, server.batches[batch_id])
                server._record(RequestRecord("POST", path, 404))
                return self._send(404, _error(f"unknown path {path}", "not_found"))

            def do_GET(self):
                path = self.path.split("?")[0]
                if not self._authorized():
                    server._record(RequestRecord("GET", path, 401, authorization_ok=False))
                    return self._send(401, _error("Incorrect API key provided", "invalid_api_key"))
                parts = path.strip("/").split("/")
                status, payload, raw = 404, _error(f"unknown path {path}", "not_found"), None
                if path == "/_stats":
                    payload = {
                        "chat_requests": server.count(),
                        "chat_ok": server.count(status=200),
                        "max_in_flight": server.max_in_flight,
                    }
                    return self._send(200, payload)
                if len(parts) >= 3 and parts[:2] == ["v1", "files"] and parts[2] in server.files:
                    if len(parts) == 4 and parts[3] == "content":
                        status, raw = 200, server.files[parts[2]]["data"]
                    elif len(parts) == 3:
                        status, payload = 200, server._file_object(parts[2])
                elif len(parts) == 3 and parts[:2] == ["v1", "batches"] and parts[2] in server.batches:
                    status, payload = 200, dict(server.batches[parts[2]])
                server._record(RequestRecord("GET", path, status))
                return self._send(status, payload, raw=raw)

        return Handler


def _error(message: str, code: str) -> dict:
    return {"error": {"message": message, "type": code, "param": None, "code": code}}


def _parse_multipart(content_type: str, data: bytes) -> dict[str, tuple[str | None, bytes]]:
    """name -> (filename, bytes) of a multipart/form-data body."""
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + data)
    return {
        part.get_param("name", header="content-disposition"): (part.get_filename(), part.get_payload(decode=True))
        for part in message.iter_parts()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every chat answer")
    args = parser.parse_args()
    server = OpenAIServer(latency_s=args.latency, port=args.port)
    print(server.base_url, flush=True)
    try:
        server._httpd.serve_forever()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
