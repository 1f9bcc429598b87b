// Builds the demo into dist/: the files of src/ as they are, plus the client library's compiled
// ES modules (clients/typescript/dist/*.js) in dist/lib/, which app.js imports as ./lib/index.js.
// No bundler: the browser loads the modules one by one. Uses nothing but Node's own modules, so
// it runs without `npm ci` here.
//
// The library must be built first (cd ../typescript && npm ci && npm run build);
// RETICH_CLIENT_DIST points at another build of it.
import { cpSync, existsSync, mkdirSync, readdirSync, rmSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const src = join(root, "src");
const out = join(root, "dist");
const lib = resolve(process.env.RETICH_CLIENT_DIST ?? join(root, "../typescript/dist"));

if (!existsSync(join(lib, "index.js"))) {
  console.error(
    `demo build: ${join(lib, "index.js")} is missing.\n` +
      "Build the client library first: (cd clients/typescript && npm ci && npm run build)",
  );
  process.exit(1);
}

rmSync(out, { recursive: true, force: true });
cpSync(src, out, { recursive: true });

// Only the JavaScript: declarations and source maps (which point at ../src/*.ts) are not served.
let copied = 0;
const copyJs = (from, to) => {
  for (const name of readdirSync(from)) {
    const path = join(from, name);
    if (statSync(path).isDirectory()) {
      copyJs(path, join(to, name));
    } else if (name.endsWith(".js")) {
      mkdirSync(to, { recursive: true });
      cpSync(path, join(to, name));
      copied++;
    }
  }
};
copyJs(lib, join(out, "lib"));

console.log(`demo build: ${relative(process.cwd(), out) || "."}/ (${copied} library modules from ${lib})`);
