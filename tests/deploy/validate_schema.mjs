// Validates rendered Kubernetes manifests offline, every object of every file given:
//  1. against the API's OpenAPI schema as compiled by kubernetes-models (types, enums, required
//     fields, formats; the ServiceMonitor CRD through @kubernetes-models/prometheus-operator), and
//  2. for unknown fields, which those schemas let through (as `kubectl apply --validate=strict`
//     would reject them): every key is looked up, recursively, in the field lists that
//     @kubernetes/client-node generates from the same OpenAPI spec.
// An apiVersion/kind with no schema fails. Exits 1 naming the file, the object, the path and the
// problem for each error.
//   node validate_schema.mjs RENDERED.yaml...
import { basename } from "node:path";
import { importTool, loadObjects, objectName } from "./lib.mjs";

const CLIENT_MODELS = "@kubernetes/client-node/dist/gen/models";
// Custom resources: the kubernetes-models package of their operator; no field lists (their
// compiled schema checks types and names known fields only, so unknown fields pass).
const CRD_PACKAGES = {"monitoring.coreos.com": "@kubernetes-models/prometheus-operator"};

const modelCache = new Map();
async function fieldList(type) {
  if (!modelCache.has(type)) {
    let fields = null;
    try {
      const mod = await importTool(`${CLIENT_MODELS}/${type}.js`);
      fields = mod[type]?.attributeTypeMap ?? null;
    } catch {
      fields = null;
    }
    modelCache.set(type, fields && new Map(fields.map((f) => [f.baseName, f.type])));
  }
  return modelCache.get(type);
}

// Appends to ERRORS every key under VALUE (at PATH) that the model TYPE does not define.
async function checkFields(value, type, path, errors) {
  let m;
  if ((m = /^Array<(.+)>$/.exec(type))) {
    if (Array.isArray(value)) {
      for (const [i, item] of value.entries()) await checkFields(item, m[1], `${path}/${i}`, errors);
    }
    return;
  }
  if ((m = /^\{ \[key: string\]: (.+); \}$/.exec(type))) {
    if (value && typeof value === "object") {
      for (const [k, v] of Object.entries(value)) await checkFields(v, m[1], `${path}/${k}`, errors);
    }
    return;
  }
  if (!/^V\d|^[A-Z][A-Za-z]*V\d/.test(type)) return;  // string, number, IntOrString, any...
  const fields = await fieldList(type);
  if (!fields || !value || typeof value !== "object" || Array.isArray(value)) return;
  for (const [k, v] of Object.entries(value)) {
    if (!fields.has(k)) {
      errors.push(`${path || "/"}: unknown field "${k}" (${type} has: ${[...fields.keys()].join(", ")})`);
    } else {
      await checkFields(v, fields.get(k), `${path}/${k}`, errors);
    }
  }
}

// Returns the kubernetes-models class for OBJ's apiVersion and kind, or throws.
async function modelClass(obj) {
  const [group, version] = obj.apiVersion?.includes("/") ? obj.apiVersion.split("/")
                                                         : ["", obj.apiVersion];
  const pkg = CRD_PACKAGES[group] ?? "kubernetes-models";
  const dir = group === "" ? version : `${group}/${version}`;
  let mod;
  try {
    mod = await importTool(`${pkg}/${dir}/${obj.kind}.js`);
  } catch (e) {
    throw new Error(`no schema for apiVersion "${obj.apiVersion}" kind "${obj.kind}" in ${pkg}`);
  }
  return {cls: mod[obj.kind], crd: group in CRD_PACKAGES, version};
}

let failed = 0, checked = 0;
const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node validate_schema.mjs RENDERED.yaml...");
  process.exit(2);
}
for (const file of files) {
  const objects = await loadObjects(file);
  if (objects.length === 0) {
    console.error(`${basename(file)}: no objects`);
    failed++;
  }
  for (const obj of objects) {
    const where = `${basename(file)}: ${objectName(obj)}`;
    const errors = [];
    try {
      const {cls, crd, version} = await modelClass(obj);
      try {
        new cls(obj).validate();
      } catch (e) {
        errors.push(...String(e.message).split(/,\s*(?=data)/).map((s) => s.replace(/^data/, "")));
      }
      if (!crd) {
        const type = version.charAt(0).toUpperCase() + version.slice(1) + obj.kind;
        if (!(await fieldList(type))) errors.push(`no field list for ${type}`);
        else await checkFields(obj, type, "", errors);
      }
    } catch (e) {
      errors.push(e.message);
    }
    checked++;
    if (errors.length) {
      failed++;
      for (const err of errors) console.error(`FAIL ${where}: ${err}`);
    } else {
      console.log(`ok   ${where}`);
    }
  }
}
console.log(`schema: ${checked} objects in ${files.length} files, ${failed} with errors`);
process.exit(failed ? 1 : 0);
