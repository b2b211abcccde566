"""A light client of a Gradio app's queue, as the browser speaks it, for load benchmarks.

`gradio_client` spends about 80 ms of CPU on every request (a new HTTP connection per request,
a thread per job, a reader thread per session): 20 of its clients on the 2-core machine that also
runs the server use most of the CPU themselves, so what bench_load then measures is mostly the
clients. This client does what the page does, on one asyncio loop with a kept-alive connection
pool: POST `queue/join` with the event's fn_index and a session hash, then read that session's
`queue/data` server-sent events until `process_completed`, noting the queue rank that
`estimation` messages report ("n ahead of you"). Files go through `upload` first, as the page's
upload does.

Only httpx is needed (a dependency of gradio_client), so it runs in the bench's client process.
"""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx


class QueueError(RuntimeError):
    """The app answered with an error (a user error's message, or a failed request)."""


class QueueClient:
    """One browser-like session against `url` (an app root such as http://127.0.0.1:7860/)."""

    def __init__(self, http: httpx.AsyncClient, url: str, endpoints: dict[str, dict]):
        self.http = http
        self.base = url.rstrip("/") + "/gradio_api/"
        self.endpoints_ = endpoints
        self.session_hash = uuid.uuid4().hex[:11]

    @staticmethod
    async def endpoints(http: httpx.AsyncClient, url: str) -> dict[str, dict]:
        """api_name ("/atlas_search") -> {"fn_index", "parameters"}, from the app's config and API
        info; the parameters say which have defaults (the page sends every value, an API caller
        may leave the trailing ones out, as with gradio_client)."""
        root = url.rstrip("/")
        config, info = await http.get(root + "/config"), await http.get(root + "/gradio_api/info")
        config.raise_for_status()
        info.raise_for_status()
        named = info.json().get("named_endpoints", {})
        out = {}
        for i, dep in enumerate(config.json()["dependencies"]):
            name = dep.get("api_name")
            if name:
                api = "/" + str(name).lstrip("/")
                out[api] = {"fn_index": dep.get("id", i), "parameters": named.get(api, {}).get("parameters", [])}
        return out
    async def upload(self, path: str) -> dict:
        """Upload a file as the page does; returns the FileData to pass as an argument."""
        p = Path(path)
        with p.open("rb") as f:
            r = await self.http.post(self.base + "upload", files={"files": (p.name, f)})
        r.raise_for_status()
        return {"path": r.json()[0], "orig_name": p.name, "meta": {"_type": "gradio.FileData"}}

    async def predict(self, api_name: str, *data) -> tuple[list, int | None]:
        """(the event's output data, the largest rank seen ahead of it in its queue, or None)."""
        if api_name not in self.endpoints_:
            raise QueueError(f"the app has no endpoint {api_name}")
        endpoint = self.endpoints_[api_name]
        values = list(data)
        for p in endpoint["parameters"][len(values):]:  # the defaults of the arguments left out
            if not p.get("parameter_has_default"):
                raise QueueError(f"{api_name}: argument {p.get('parameter_name')!r} has no default")
            values.append(p.get("parameter_default"))
        body = {"data": values, "fn_index": endpoint["fn_index"], "session_hash": self.session_hash,
                "event_data": None, "trigger_id": None}
        r = await self.http.post(self.base + "queue/join", json=body)
        if r.status_code != 200:
            raise QueueError(f"queue/join answered {r.status_code}: {r.text[:300]}")
        event_id = r.json()["event_id"]
        rank = None
        async with self.http.stream("GET", self.base + "queue/data",
                                    params={"session_hash": self.session_hash}) as stream:
            buffer = ""
            async for chunk in stream.aiter_text():
                buffer += chunk
                while "\n\n" in buffer:
                    block, buffer = buffer.split("\n\n", 1)
                    if not block.startswith("data:"):
                        continue
                    msg = json.loads(block[5:])
                    if msg.get("event_id") not in (None, event_id):
                        continue
                    kind = msg.get("msg")
                    if kind == "estimation" and msg.get("rank") is not None:
                        rank = max(rank or 0, int(msg["rank"]))
                    elif kind == "process_completed":
                        out = msg.get("output") or {}
                        if not msg.get("success", False) or "error" in out:
                            raise QueueError(str(out.get("error") or msg.get("title") or "failed")[:300])
                        return out.get("data", []), rank
                    elif kind == "close_stream" or msg.get("message") == "Server stopped unexpectedly.":
                        raise QueueError(f"the stream closed before {api_name} completed")
        raise QueueError(f"the stream ended before {api_name} completed")
