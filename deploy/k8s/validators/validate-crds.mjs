// Validates the custom resources of rendered manifests (KEDA, Prometheus operator) against the
// schemas of their CRDs, as published in @kubernetes-models/keda and
// @kubernetes-models/prometheus-operator. kubernetes-validate knows only built-in kinds; this
// covers the rest. scripts/validate_deploy.sh copies it beside the validators' node_modules
// (installed from package.json / package-lock.json here) and runs:
//
//   node validate-crds.mjs RENDERED.yaml...   # exit 1 on any problem
//   node validate-crds.mjs --kinds            # the kinds it validates, one a line
//
// Two checks per object:
//   1. the model's validate(): types, required fields, enums, patterns (a Duration "5x", a
//      string where an integer belongs, a ScaledObject without triggers);
//   2. unknown fields: the CRD schemas allow extra properties, so a misspelt
//      `minReplicaCont` passes (1) and is silently dropped by the API server. Every field name
//      is looked up in the TypeScript declarations (.d.ts) shipped with the models, following
//      nested types; free-form maps (labels, trigger metadata) are not checked.
// Trigger metadata is a free-form string map in the CRD; the keys sluice uses for the
// rabbitmq and prometheus scalers are checked against KEDA's documented parameters.

import { readFileSync, existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";
import * as keda from "@kubernetes-models/keda/keda.sh/v1alpha1";
import * as monitoring from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const MODELS = {
  "keda.sh/v1alpha1": {
    ScaledObject: keda.ScaledObject,
    ScaledJob: keda.ScaledJob,
    TriggerAuthentication: keda.TriggerAuthentication,
    ClusterTriggerAuthentication: keda.ClusterTriggerAuthentication,
  },
  "monitoring.coreos.com/v1": {
    ServiceMonitor: monitoring.ServiceMonitor,
    PodMonitor: monitoring.PodMonitor,
    PrometheusRule: monitoring.PrometheusRule,
  },
};

// Declaration files of each kind, relative to its package.
const DECLARATIONS = {
  ScaledObject: "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject",
  ScaledJob: "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledJob",
  TriggerAuthentication: "@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication",
  ClusterTriggerAuthentication: "@kubernetes-models/keda/keda.sh/v1alpha1/ClusterTriggerAuthentication",
  ServiceMonitor: "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor",
  PodMonitor: "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor",
  PrometheusRule: "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule",
};

// KEDA scaler parameters (keda.sh docs, scalers "RabbitMQ Queue" and "Prometheus", KEDA 2.x).
// Parameters that may come from a TriggerAuthentication are listed too.
const SCALER_METADATA = {
  rabbitmq: new Set([
    "host", "hostFromEnv", "protocol", "mode", "value", "activationValue", "queueName",
    "vhostName", "usernameFromEnv", "passwordFromEnv", "useRegex", "excludeUnacknowledged",
    "pageSize", "operation", "timeout", "unsafeSsl",
  ]),
  prometheus: new Set([
    "serverAddress", "query", "queryParameters", "threshold", "activationThreshold",
    "namespace", "customHeaders", "ignoreNullValues", "unsafeSsl", "timeout", "authModes",
  ]),
};

// The script runs from a copy beside the validators' node_modules (ES modules resolve packages
// from the script's own folder, never from NODE_PATH).
const nodeModules = path.join(path.dirname(fileURLToPath(import.meta.url)), "node_modules");

function declarationFile(spec, fromFile) {
  let file;
  if (spec.startsWith(".")) {
    file = path.resolve(path.dirname(fromFile), spec.replace(/\.js$/, ""));
  } else {
    file = path.join(nodeModules, spec);
  }
  file = file.replace(/\.d\.ts$/, "") + ".d.ts";
  return existsSync(file) ? file : null;
}

// interface name -> { props: Map(name -> type text), file }
const interfaces = new Map();

function parseDeclarations(file) {
  const text = readFileSync(file, "utf8");
  const imports = new Map();
  for (const m of text.matchAll(/^import \{ ([^}]+) \} from "([^"]+)";$/gm)) {
    for (const name of m[1].split(",").map((s) => s.trim())) imports.set(name, m[2]);
  }
  const m = text.match(/^export interface (\w+)(?: extends ([^{]+))? \{\n([\s\S]*?)^\}/m);
  if (!m) return null;
  const props = new Map();
  for (const line of m[3].split("\n")) {
    const p = line.match(/^ {4}"([^"]+)"\??: (.*?);?$/);
    if (p) props.set(p[1], p[2]);
  }
  const parents = (m[2] || "").split(",").map((s) => s.trim()).filter(Boolean);
  return { props, parents, imports, file };
}

// The allowed fields of a named type, or null when the type is not an object we can follow.
function shape(typeName, fromFile, imports) {
  const key = `${typeName}@${fromFile}`;
  if (interfaces.has(key)) return interfaces.get(key);
  interfaces.set(key, null); // recursion guard
  let result = null;
  if (typeName === "TypeMeta") {
    result = { props: new Map([["apiVersion", "string"], ["kind", "string"]]), imports: new Map(), file: fromFile };
  } else {
    const spec = imports.get(typeName);
    const file = spec && declarationFile(spec, fromFile);
    const decl = file && parseDeclarations(file);
    if (decl) {
      const props = new Map(decl.props);
      for (const parent of decl.parents) {
        const inherited = shape(parent, decl.file, decl.imports);
        if (inherited) for (const [k, v] of inherited.props) props.set(k, v);
      }
      result = { props, imports: decl.imports, file: decl.file, owner: new Map() };
      for (const k of props.keys()) result.owner.set(k, decl);
      for (const parent of decl.parents) {
        const inherited = shape(parent, decl.file, decl.imports);
        if (inherited) for (const k of inherited.props.keys()) result.owner.set(k, inherited);
      }
    }
  }
  interfaces.set(key, result);
  return result;
}

function checkFields(value, typeText, ctx, where, problems) {
  if (value === null || typeof value !== "object") return;
  typeText = typeText.trim();
  const array = typeText.match(/^Array<(.*)>$/);
  if (array) {
    if (Array.isArray(value)) value.forEach((v, i) => checkFields(v, array[1], ctx, `${where}[${i}]`, problems));
    return;
  }
  if (!/^I\w+$/.test(typeText) || Array.isArray(value)) return; // free-form or a union: not followed
  const s = shape(typeText, ctx.file, ctx.imports);
  if (!s) return;
  for (const [k, v] of Object.entries(value)) {
    if (!s.props.has(k)) {
      problems.push(`${where}.${k}: unknown field (known: ${[...s.props.keys()].sort().join(", ")})`);
      continue;
    }
    const owner = s.owner?.get(k) || s;
    checkFields(v, s.props.get(k), { file: owner.file, imports: owner.imports }, `${where}.${k}`, problems);
  }
}

function checkObject(doc) {
  const problems = [];
  const Model = MODELS[doc.apiVersion]?.[doc.kind];
  try {
    new Model(doc).validate();
  } catch (e) {
    problems.push(e.message);
  }
  const root = declarationFile(DECLARATIONS[doc.kind], nodeModules);
  const decl = parseDeclarations(root);
  const top = `I${doc.kind}`;
  const imports = new Map(decl.imports);
  imports.set(top, DECLARATIONS[doc.kind]);
  checkFields(doc, top, { file: root, imports }, doc.kind, problems);
  if (doc.kind === "ScaledObject" || doc.kind === "ScaledJob") {
    for (const [i, t] of (doc.spec?.triggers || []).entries()) {
      const known = SCALER_METADATA[t.type];
      if (!known) {
        problems.push(`spec.triggers[${i}]: scaler type ${t.type} has no parameter list here; add it`);
        continue;
      }
      for (const k of Object.keys(t.metadata || {})) {
        if (!known.has(k)) problems.push(`spec.triggers[${i}].metadata.${k}: not a ${t.type} scaler parameter`);
      }
    }
  }
  return problems;
}

function main(args) {
  if (args[0] === "--kinds") {
    for (const [apiVersion, kinds] of Object.entries(MODELS)) {
      for (const kind of Object.keys(kinds)) console.log(`${apiVersion} ${kind}`);
    }
    return 0;
  }
  if (args.length === 0) {
    console.error("usage: validate-crds.mjs RENDERED.yaml... | --kinds");
    return 2;
  }
  let failed = 0;
  let checked = 0;
  for (const file of args) {
    for (const d of parseAllDocuments(readFileSync(file, "utf8"))) {
      if (d.errors.length) {
        console.log(`ERROR ${file}: ${d.errors[0].message}`);
        failed++;
        continue;
      }
      const doc = d.toJS();
      if (!doc || typeof doc !== "object") continue;
      const group = String(doc.apiVersion || "").split("/")[0];
      const ours = Object.keys(MODELS).some((v) => v.split("/")[0] === group);
      if (!ours) continue; // a built-in kind: kubernetes-validate's
      const name = `${doc.kind}/${doc.metadata?.name}`;
      if (!MODELS[doc.apiVersion]?.[doc.kind]) {
        console.log(`ERROR ${file}: ${name}: no schema for ${doc.apiVersion} ${doc.kind}`);
        failed++;
        continue;
      }
      const problems = checkObject(doc);
      checked++;
      if (problems.length) {
        failed++;
        for (const p of problems) console.log(`ERROR ${file}: ${name}: ${p}`);
      } else {
        console.log(`ok    ${file}: ${name}`);
      }
    }
  }
  console.log(`${checked} custom resources checked, ${failed} with problems`);
  return failed ? 1 : 0;
}

process.exitCode = main(process.argv.slice(2));
