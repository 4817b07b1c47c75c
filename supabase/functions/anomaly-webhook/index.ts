// anomaly-webhook: receives the database-webhook payload of an `alerts` insert, keeps only the fields
// an outside system should see, and forwards them to ANOMALY_WEBHOOK_URL.
//
// Invoked by the database webhook (pg_net on hosted Supabase, the local stack's webhook dispatcher
// otherwise) with {type, table, schema, record, old_record}.

interface WebhookPayload {
  type: "INSERT" | "UPDATE" | "DELETE";
  table: string;
  schema: string;
  record: Record<string, unknown> | null;
  old_record: Record<string, unknown> | null;
}

const FORWARDED_FIELDS = [
  "id",
  "device_id",
  "kind",
  "severity",
  "metric_ts",
  "value",
  "threshold",
  "message",
  "created_at",
] as const;
const MAX_MESSAGE_CHARS = 280;

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "Content-Type": "application/json" },
  });
}

function isPayload(value: unknown): value is WebhookPayload {
  if (typeof value !== "object" || value === null) return false;
  const p = value as Record<string, unknown>;
  return typeof p.type === "string" && typeof p.table === "string" &&
    typeof p.schema === "string" && "record" in p;
}

// Drops user ids and anything not listed, strips control characters and bounds the message length.
export function sanitise(record: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of FORWARDED_FIELDS) {
    const value = record[key];
    if (value === undefined) continue;
    if (typeof value === "string") {
      const clean = value.replace(/[\u0000-\u001f\u007f]/g, " ");
      out[key] = key === "message" ? clean.slice(0, MAX_MESSAGE_CHARS) : clean;
    } else if (typeof value === "number" || typeof value === "boolean" || value === null) {
      out[key] = value;
    }
  }
  return out;
}

export async function handle(req: Request): Promise<Response> {
  if (req.method !== "POST") return json(405, { error: "method not allowed" });
  let payload: unknown;
  try {
    payload = await req.json();
  } catch {
    return json(400, { error: "body is not JSON" });
  }
  if (!isPayload(payload)) {
    return json(400, { error: "expected a database webhook payload {type, table, schema, record, old_record}" });
  }
  if (payload.schema !== "public" || payload.table !== "alerts" || payload.type !== "INSERT" || !payload.record) {
    return json(200, { forwarded: false, reason: "not an alert insert" });
  }
  const alert = sanitise(payload.record);
  const target = Deno.env.get("ANOMALY_WEBHOOK_URL");
  if (!target) return json(200, { forwarded: false, reason: "ANOMALY_WEBHOOK_URL is not set", alert });

  const started = performance.now();
  try {
    const res = await fetch(target, {
      method: "POST",
      headers: { "Content-Type": "application/json", "User-Agent": "system-health-ai/anomaly-webhook" },
      body: JSON.stringify({ source: "system-health-ai", alert }),
      signal: AbortSignal.timeout(5000),
    });
    await res.body?.cancel();
    return json(res.ok ? 200 : 502, {
      forwarded: res.ok,
      status: res.status,
      elapsed_ms: Math.round(performance.now() - started),
    });
  } catch (err) {
    return json(502, { forwarded: false, error: `webhook target unreachable: ${(err as Error).name}` });
  }
}

Deno.serve(handle);
