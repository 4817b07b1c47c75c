// Runs one Supabase Edge Function (a module that calls Deno.serve) under the plain Deno CLI, the way
// edge-runtime hosts it: on 127.0.0.1, on the port the stack chose (0 = any free one), announcing the
// bound port on stdout so the supervisor can route /functions/v1/<name> to it.
type Handler = (req: Request, info: Deno.ServeHandlerInfo) => Response | Promise<Response>;

const entry = Deno.args[0];
if (!entry) throw new Error("usage: serve.ts <absolute path of the function's index.ts>");
const port = Number(Deno.env.get("FLEETBENCH_FUNCTION_PORT") ?? "0");
const name = Deno.env.get("FLEETBENCH_FUNCTION_NAME") ?? entry;
const realServe = Deno.serve.bind(Deno);

// deno-lint-ignore no-explicit-any
(Deno as any).serve = (...args: unknown[]) => {
  const handler = args.find((a) => typeof a === "function") as Handler | undefined ??
    (args.find((a) => typeof a === "object" && a !== null && "handler" in a) as { handler: Handler } | undefined)
      ?.handler;
  if (!handler) throw new Error(`${name}: Deno.serve was called without a handler`);
  return realServe({
    hostname: "127.0.0.1",
    port,
    onListen: ({ port }) => console.log(`fleetbench-function ${name} listening on 127.0.0.1:${port}`),
  }, handler);
};

await import(new URL(`file://${entry}`).href);
