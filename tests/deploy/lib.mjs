// Shared by the deploy tests: loads the tool packages that scripts/install-deps.sh put into
// .tools/ (by absolute path: they are not beside this file) and parses rendered manifests.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

export const TOOLS = process.env.EVENTBUS_TOOLS || join(import.meta.dirname ?? new URL(".", import.meta.url).pathname, "../../.tools");
const MODULES = join(TOOLS, "node_modules");

// Imports FILE (relative to .tools/node_modules); fails naming the package when it is missing.
export async function importTool(file) {
  const path = join(MODULES, file);
  if (!existsSync(path)) {
    throw new Error(`${path} is missing: run scripts/install-deps.sh (it installs the npm ` +
                    `validation packages into .tools/)`);
  }
  return import(pathToFileURL(path).href);
}

// Returns the objects of a multi-document YAML file, skipping empty documents.
export async function loadObjects(file) {
  const yaml = await importTool("js-yaml/dist/js-yaml.mjs");
  return yaml.loadAll(readFileSync(file, "utf8")).filter((o) => o !== null && o !== undefined);
}

export function objectName(o) {
  return `${o?.kind ?? "?"}/${o?.metadata?.name ?? "?"}`;
}
