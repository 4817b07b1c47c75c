// The dashboard's alert feed, written the way an application uses @supabase/supabase-js Realtime:
// sign in, subscribe to INSERTs on `alerts`, wait for the subscription to go live, print
// {"ready":true}, then read the id of the alert to wait for from stdin and print what arrived.
import { createClient } from "npm:@supabase/supabase-js@2.119.1";

const input = JSON.parse(Deno.env.get("CONFORMANCE_INPUT")!);
const supabase = createClient(Deno.env.get("SUPABASE_URL")!, Deno.env.get("SUPABASE_ANON_KEY")!, {
  auth: { persistSession: false, autoRefreshToken: false },
});
const signIn = await supabase.auth.signInWithPassword({ email: input.email, password: input.password });
if (signIn.error) throw signIn.error;

const received: Record<string, unknown>[] = [];
let wanted: number | null = null;
let arrived: () => void;
const done = new Promise<void>((resolve) => (arrived = resolve));
let live: () => void;
const isLive = new Promise<void>((resolve) => (live = resolve));
const fail = (why: string) => {
  console.log(JSON.stringify({ error: why }));
  Deno.exit(1);
};
const timer = setTimeout(() => fail(`timed out; received ${JSON.stringify(received)}`), 30_000);

const channel = supabase
  .channel("dashboard-alerts")
  .on("postgres_changes", { event: "INSERT", schema: "public", table: "alerts" }, (payload) => {
    received.push(payload as unknown as Record<string, unknown>);
    if (wanted !== null && (payload.new as { id: number }).id === wanted) arrived();
  })
  .on("system", {}, (payload) => {
    if (payload.extension === "postgres_changes" && payload.status === "ok") live();
    else if (payload.status === "error") fail(`system: ${JSON.stringify(payload)}`);
  })
  .subscribe((status, err) => {
    if (status === "CHANNEL_ERROR" || status === "TIMED_OUT") fail(`${status}: ${err}`);
  });
await isLive;
console.log(JSON.stringify({ ready: true }));

const reader = Deno.stdin.readable.pipeThrough(new TextDecoderStream()).getReader();
let line = "";
while (!line.includes("\n")) {
  const { value, done: end } = await reader.read();
  if (end) break;
  line += value;
}
wanted = Number(line.trim());
if (received.some((p) => (p.new as { id: number }).id === wanted)) arrived!();
await done;
clearTimeout(timer);
await supabase.removeChannel(channel);
console.log(JSON.stringify({
  ids: received.map((p) => (p.new as { id: number }).id),
  first: received[0],
}));
Deno.exit(0);
