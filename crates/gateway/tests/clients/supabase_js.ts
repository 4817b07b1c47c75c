// An agent and a dashboard, written the way an application uses @supabase/supabase-js, run against
// the gateway named by SUPABASE_URL. Prints one JSON object of observations; the Rust test checks
// them against the database.
import { createClient } from "npm:@supabase/supabase-js@2.119.1";

const input = JSON.parse(Deno.env.get("CONFORMANCE_INPUT")!);
const supabase = createClient(Deno.env.get("SUPABASE_URL")!, Deno.env.get("SUPABASE_ANON_KEY")!, {
  auth: { persistSession: false, autoRefreshToken: false },
});
const out: Record<string, unknown> = {};

const signIn = await supabase.auth.signInWithPassword({ email: input.email, password: input.password });
if (signIn.error) throw signIn.error;
out.user_id = signIn.data.user.id;
const refreshed = await supabase.auth.refreshSession();
if (refreshed.error) throw refreshed.error;
out.rotated = refreshed.data.session!.refresh_token !== signIn.data.session.refresh_token;

const rows = input.cpu.map((cpu: number, i: number) => ({
  device_id: input.device_id,
  ts: new Date(Date.parse(input.ts0) + i * 1000).toISOString(),
  cpu_pct: cpu,
  mem_used_bytes: 1024 * (i + 1),
  mem_total_bytes: 8 * 1024 ** 3,
}));
const inserted = await supabase.from("system_metrics").insert(rows);
out.insert = { status: inserted.status, error: inserted.error };

const mine = await supabase.from("system_metrics")
  .select("cpu_pct,user_id", { count: "exact" })
  .eq("device_id", input.device_id)
  .order("cpu_pct", { ascending: true });
if (mine.error) throw mine.error;
out.read = { count: mine.count, cpu: mine.data.map((r) => r.cpu_pct), users: [...new Set(mine.data.map((r) => r.user_id))] };

const theirs = await supabase.from("system_metrics").select("*").eq("device_id", input.other_device_id);
out.other_rows = theirs.data?.length ?? null;

const matches = await supabase.rpc("match_memories", { query_embedding: input.query_embedding, match_count: 3 });
if (matches.error) throw matches.error;
out.matches = matches.data.map((m: { content: string }) => m.content);

const bad = await supabase.from("system_metrics").insert([{ device_id: input.device_id, ts: rows[0].ts, cpu_pct: 150 }]);
out.bad_check = { status: bad.status, error: bad.error };
const unknown = await supabase.from("system_metrics").insert([{ device_id: input.device_id, ts: rows[0].ts, cpu_temperature: 1 }]);
out.bad_column = { status: unknown.status, error: unknown.error };
const foreign = await supabase.from("system_metrics").insert([{ device_id: input.other_device_id, ts: rows[0].ts }]);
out.rls = { status: foreign.status, error: foreign.error };

const signOut = await supabase.auth.signOut();
out.signed_out = signOut.error === null;
console.log(JSON.stringify(out));
