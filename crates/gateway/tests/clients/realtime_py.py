"""The dashboard's alert feed, written the way the Python `supabase` package's Realtime is used:
sign in, subscribe to INSERTs on `alerts`, wait for the subscription to go live, print
{"ready": true}, then read the id of the alert to wait for from stdin and print what arrived."""

import asyncio
import json
import os
import sys

from supabase import AsyncClientOptions, acreate_client


def record(payload):
    data = payload.get("data", payload)
    return data.get("record") or {}


async def main():
    inp = json.loads(os.environ["CONFORMANCE_INPUT"])
    sb = await acreate_client(
        os.environ["SUPABASE_URL"],
        os.environ["SUPABASE_ANON_KEY"],
        options=AsyncClientOptions(auto_refresh_token=False, persist_session=False),
    )
    await sb.auth.sign_in_with_password({"email": inp["email"], "password": inp["password"]})
    received = []
    live = asyncio.Event()
    arrived = asyncio.Event()
    wanted = {"id": None}
    errors = []

    def on_insert(payload):
        received.append(payload)
        if record(payload).get("id") == wanted["id"]:
            arrived.set()

    def on_system(payload):
        # System payloads arrive as the client's pydantic models.
        if payload.extension == "postgres_changes" and payload.status == "ok":
            live.set()
        elif payload.status == "error":
            errors.append(payload.model_dump())
            live.set()

    channel = sb.channel("dashboard-alerts-py")
    channel.on_postgres_changes("INSERT", schema="public", table="alerts", callback=on_insert)
    channel.on_system(on_system)
    await channel.subscribe()
    await asyncio.wait_for(live.wait(), 30)
    if errors:
        print(json.dumps({"error": errors}))
        sys.exit(1)
    print(json.dumps({"ready": True}), flush=True)
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    wanted["id"] = int(line.strip())
    if any(record(p).get("id") == wanted["id"] for p in received):
        arrived.set()
    await asyncio.wait_for(arrived.wait(), 30)
    await sb.remove_channel(channel)
    print(json.dumps({"ids": [record(p).get("id") for p in received], "first": received[0]}, default=str))


asyncio.run(main())
