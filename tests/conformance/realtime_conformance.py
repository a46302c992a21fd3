#!/usr/bin/env python3
"""Drives a WebSocket session against the voxrelay realtime simulator with the official OpenAI
Python SDK and checks every server event against the SDK's typed models
(openai.types.realtime.RealtimeServerEvent). Any event that does not validate fails the run.

Usage: realtime_conformance.py --base-url http://127.0.0.1:PORT
Exit status 0 on success; 1 with a report on stderr otherwise.
"""

import argparse
import asyncio
import base64
import collections
import json
import math
import struct
import sys

try:
    import openai
    from openai import AsyncOpenAI
    from openai.types.realtime import RealtimeServerEvent
    from pydantic import TypeAdapter, ValidationError
except ImportError as exc:  # pragma: no cover - setup problem, reported plainly
    print(f"missing Python packages ({exc}); run: pip install -r tests/conformance/requirements.txt", file=sys.stderr)
    sys.exit(2)

ADAPTER = TypeAdapter(RealtimeServerEvent)
RATE = 24_000


def pcm(ms: int, amplitude: float) -> bytes:
    n = RATE * ms // 1000
    return b"".join(struct.pack("<h", int(math.sin(i * 0.13) * amplitude)) for i in range(n))


class Checker:
    def __init__(self, conn):
        self.conn = conn
        self.failures = []
        self.counts = collections.Counter()
        self.order = []

    async def next(self):
        raw = await asyncio.wait_for(self.conn.recv_bytes(), timeout=15)
        data = json.loads(raw)
        kind = data.get("type", "<no type>")
        self.counts[kind] += 1
        self.order.append(kind)
        try:
            model = ADAPTER.validate_python(data)
            if getattr(model, "type", None) != kind:
                self.failures.append(f"{kind}: validated as {type(model).__name__} with type {getattr(model, 'type', None)}")
        except ValidationError as err:
            self.failures.append(f"{kind}: {err}\n{json.dumps(data)[:2000]}")
        # the SDK's own parser must take it too
        self.conn.parse_event(raw)
        return data

    async def until(self, kind, also=None):
        for _ in range(20_000):
            ev = await self.next()
            if ev["type"] == "error" and kind != "error":
                self.failures.append(f"unexpected error event: {json.dumps(ev)}")
            if also:
                also(ev)
            if ev["type"] == kind:
                return ev
        raise AssertionError(f"no {kind}")


async def run(base_url: str) -> int:
    client = AsyncOpenAI(api_key="sk-conformance", base_url=base_url.rstrip("/") + "/v1")
    async with client.realtime.connect(model="gpt-realtime") as conn:
        c = Checker(conn)
        created = await c.until("session.created")
        await conn.session.update(
            session={
                "type": "realtime",
                "instructions": "You are a clinic receptionist.",
                "output_modalities": ["audio"],
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": RATE},
                        "transcription": {"model": "gpt-4o-transcribe", "language": "en"},
                        "turn_detection": {"type": "server_vad", "silence_duration_ms": 400, "interrupt_response": True},
                    },
                    "output": {"format": {"type": "audio/pcm", "rate": RATE}, "voice": "marin"},
                },
                "tools": [
                    {"type": "function", "name": "check_availability", "description": "Free slots",
                     "parameters": {"type": "object", "properties": {"start_date": {"type": "string"}, "end_date": {"type": "string"}}}},
                    {"type": "function", "name": "create_booking", "description": "Books a slot",
                     "parameters": {"type": "object", "properties": {}}},
                ],
            }
        )
        await c.until("session.updated")

        # 1. the greeting: a full spoken response
        await conn.response.create()
        done = await c.until("response.done")
        assert done["response"]["status"] == "completed", done

        # 2. a spoken turn: speech, then silence; the model calls a tool
        for chunk in [pcm(100, 9000.0)] * 6 + [pcm(100, 0.0)] * 6:
            await conn.input_audio_buffer.append(audio=base64.b64encode(chunk).decode())
        call = await c.until("response.function_call_arguments.done")
        assert call["name"] == "check_availability", call
        await c.until("response.done")
        assert c.counts["conversation.item.input_audio_transcription.completed"] >= 1

        # 3. the function call round trip
        await conn.conversation.item.create(
            item={"type": "function_call_output", "call_id": call["call_id"], "output": json.dumps({"slots": ["2027-03-02T10:00"]})}
        )
        await conn.response.create()
        delta = await c.until("response.output_audio.delta")
        item_id = delta["item_id"]

        # 4. barge-in: the caller talks over the answer
        for chunk in [pcm(100, 9000.0)] * 3:
            await conn.input_audio_buffer.append(audio=base64.b64encode(chunk).decode())
        await c.until("input_audio_buffer.speech_started")
        done = await c.until("response.done")
        assert done["response"]["status"] == "cancelled", done
        assert done["response"]["status_details"]["reason"] == "turn_detected", done
        # the client-side half of barge-in on WebSocket: truncate what was played
        await conn.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=200)
        await c.until("conversation.item.truncated")

        # 5. a cancel with nothing running is an error event the SDK can read
        await conn.response.cancel()
        await c.until("error")

    required = [
        "session.created", "session.updated", "response.created", "rate_limits.updated",
        "response.output_item.added", "conversation.item.added", "response.content_part.added",
        "response.output_audio.delta", "response.output_audio_transcript.delta",
        "response.output_audio.done", "response.output_audio_transcript.done",
        "response.content_part.done", "response.output_item.done", "conversation.item.done",
        "response.done", "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed", "conversation.item.input_audio_transcription.completed",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "conversation.item.truncated", "error",
    ]
    missing = [k for k in required if c.counts[k] == 0]
    report = {"openai": openai.__version__, "events": sum(c.counts.values()), "by_type": dict(c.counts),
              "failures": c.failures, "missing": missing}
    print(json.dumps(report, indent=1))
    if c.failures or missing:
        print(f"{len(c.failures)} event(s) failed the SDK's models; missing: {missing}", file=sys.stderr)
        for f in c.failures[:20]:
            print(f, file=sys.stderr)
        return 1
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base-url", required=True)
    args = ap.parse_args()
    return asyncio.run(run(args.base_url))


if __name__ == "__main__":
    sys.exit(main())
