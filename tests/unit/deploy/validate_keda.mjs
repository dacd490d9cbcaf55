// Validates KEDA objects against KEDA's published CRD schemas (@kubernetes-models/keda).
//
//   node validate_keda.mjs <node_modules folder> < objects.json
//
// stdin: a JSON array of ScaledObject / TriggerAuthentication objects. Prints one line per
// invalid object and exits 1 if any is invalid, 2 on an object of another kind.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";

const require = createRequire(join(resolve(process.argv[2]), "noop.js"));
const keda = require("@kubernetes-models/keda/keda.sh/v1alpha1");
const classes = {
  ScaledObject: keda.ScaledObject,
  TriggerAuthentication: keda.TriggerAuthentication,
};

let failed = 0;
for (const obj of JSON.parse(readFileSync(0, "utf8"))) {
  const cls = classes[obj.kind];
  if (cls === undefined) {
    console.log(`${obj.kind}/${obj.metadata?.name}: not a KEDA kind this script validates`);
    process.exit(2);
  }
  try {
    new cls(obj).validate();
    console.log(`${obj.kind}/${obj.metadata.name}: valid`);
  } catch (err) {
    failed += 1;
    console.log(`${obj.kind}/${obj.metadata?.name}: ${err.message}`);
  }
}
process.exit(failed ? 1 : 0);
