"""An agent and a dashboard, written the way the Streamlit dashboard uses the `supabase` package,
run against the gateway named by SUPABASE_URL. Prints one JSON object of observations; the Rust
test checks them against the database."""

import json
import os
from datetime import datetime, timedelta

from postgrest.exceptions import APIError
from supabase import ClientOptions, create_client

inp = json.loads(os.environ["CONFORMANCE_INPUT"])
sb = create_client(
    os.environ["SUPABASE_URL"],
    os.environ["SUPABASE_ANON_KEY"],
    options=ClientOptions(auto_refresh_token=False, persist_session=False),
)
out = {}

signed = sb.auth.sign_in_with_password({"email": inp["email"], "password": inp["password"]})
out["user_id"] = signed.user.id
refreshed = sb.auth.refresh_session()
out["rotated"] = refreshed.session.refresh_token != signed.session.refresh_token

start = datetime.fromisoformat(inp["ts0"].replace("Z", "+00:00"))
rows = [
    {
        "device_id": inp["device_id"],
        "ts": (start + timedelta(seconds=i)).isoformat(),
        "cpu_pct": cpu,
        "mem_used_bytes": 1024 * (i + 1),
        "mem_total_bytes": 8 * 1024**3,
    }
    for i, cpu in enumerate(inp["cpu"])
]
inserted = sb.table("system_metrics").insert(rows).execute()
out["inserted_returned"] = len(inserted.data)

mine = (
    sb.table("system_metrics")
    .select("cpu_pct,user_id", count="exact")
    .eq("device_id", inp["device_id"])
    .order("cpu_pct")
    .execute()
)
out["read"] = {
    "count": mine.count,
    "cpu": [r["cpu_pct"] for r in mine.data],
    "users": sorted({r["user_id"] for r in mine.data}),
}
theirs = sb.table("system_metrics").select("*").eq("device_id", inp["other_device_id"]).execute()
out["other_rows"] = len(theirs.data)

matches = sb.rpc("match_memories", {"query_embedding": inp["query_embedding"], "match_count": 3}).execute()
out["matches"] = [m["content"] for m in matches.data]


def error_of(call):
    try:
        call()
    except APIError as e:
        return {"code": e.code, "message": e.message, "details": e.details, "hint": e.hint}
    return None


ts = rows[0]["ts"]
out["bad_check"] = error_of(
    lambda: sb.table("system_metrics").insert([{"device_id": inp["device_id"], "ts": ts, "cpu_pct": 150}]).execute()
)
out["bad_column"] = error_of(
    lambda: sb.table("system_metrics").insert([{"device_id": inp["device_id"], "ts": ts, "cpu_temperature": 1}]).execute()
)
out["rls"] = error_of(
    lambda: sb.table("system_metrics").insert([{"device_id": inp["other_device_id"], "ts": ts}], returning="minimal").execute()
)
sb.auth.sign_out()
out["signed_out"] = True
print(json.dumps(out))
