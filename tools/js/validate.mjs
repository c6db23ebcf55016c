// Print the Khronos glTF-Validator report for one .glb/.gltf as JSON on stdout.
// Usage: node validate.mjs FILE [maxIssues]   (exit 0 when the report was produced, 2 on bad usage/IO)
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(import.meta.url);
const validator = require("gltf-validator");

const file = process.argv[2];
if (!file) {
  console.error("usage: node validate.mjs FILE [maxIssues]");
  process.exit(2);
}
try {
  const bytes = new Uint8Array(await readFile(file));
  const report = await validator.validateBytes(bytes, {
    uri: path.basename(file),
    maxIssues: Number(process.argv[3] ?? 100),
    externalResourceFunction: (uri) => readFile(path.resolve(path.dirname(file), decodeURIComponent(uri))),
  });
  process.stdout.write(JSON.stringify(report, null, 1) + "\n");
} catch (err) {
  console.error(String(err));
  process.exit(2);
}
