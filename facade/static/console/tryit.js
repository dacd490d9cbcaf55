// "Try it": a form built from a model's signature (GET /v1/models/{name}), one request row per
// predict, and the outputs: shape, first values, a float vector's L2 norm, strings as text.

import { model as fetchModel, predict } from "./api.js";
import { h } from "./dom.js";

const FIRST = 8; // values shown of each output
const SENTENCE = "The quick brown fox jumps over the lazy dog.";

const isFloat = (dtype) => /^(float|bfloat)/.test(dtype);

// The active version's metadata, else the newest loaded one.
export async function signatureOf(name) {
  const meta = await fetchModel(name);
  const versions = meta.versions;
  return versions.find((v) => v.version === meta.active)
    ?? [...versions].reverse().find((v) => v.loaded) ?? versions.at(-1);
}

function example(spec) {
  // One row: the shape without its batch dimension; a symbolic size (seq) becomes 3.
  const dims = spec.shape.slice(1).map((d) => (typeof d === "number" ? d : 3));
  let n = 0;
  const value = () => {
    n += 1;
    if (spec.dtype === "bool") return true;
    if (spec.dtype === "string") return "text";
    if (isFloat(spec.dtype)) return 0.5;
    return n;
  };
  const build = (depth) => (depth === dims.length ? value()
    : Array.from({ length: dims[depth] }, () => build(depth + 1)));
  return build(0);
}

// A text field for a string per row (type a sentence), JSON for everything else.
function isTextRow(spec) {
  return spec.dtype === "string" && spec.shape.length === 1;
}

export class TryIt {
  constructor({ select, inputs, version, form, output, send }) {
    Object.assign(this, { select, inputs, version, form, output, send });
    this.spec = null;
    this.fields = new Map();
    this.showing = 0; // the latest show(): an older one that answers late is dropped
    select.addEventListener("change", () => this.show(select.value));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.run();
    });
  }

  // The models one can try: those with an active version.
  setModels(names) {
    const current = this.select.value;
    const have = [...this.select.options].map((o) => o.value);
    if (have.join() !== names.join()) {
      this.select.replaceChildren(...names.map((n) => h("option", { value: n }, n)));
      if (names.includes(current)) this.select.value = current;
    }
    if (!this.spec && names.length) this.show(this.select.value);
  }

  async show(name) {
    this.select.value = name;
    this.output.replaceChildren();
    const ticket = ++this.showing;
    let spec;
    try {
      spec = await signatureOf(name);
    } catch (exc) {
      if (ticket === this.showing) {
        this.inputs.replaceChildren(h("p", { class: "error" }, exc.message));
      }
      return;
    }
    if (ticket !== this.showing) return;
    this.spec = spec;
    this.version.textContent = `version ${spec.version} · ${spec.format}`;
    this.fields = new Map();
    const rows = spec.inputs.map((input) => {
      const id = `try-input-${input.name}`;
      const field = isTextRow(input)
        ? h("input", { id, type: "text", value: SENTENCE, "data-input": input.name })
        : h("textarea", { id, rows: 3, spellcheck: "false", "data-input": input.name },
          JSON.stringify(example(input)));
      this.fields.set(input.name, field);
      return h("div", { class: "field" },
        h("label", { for: id }, input.name,
          h("span", { class: "muted" }, ` ${input.dtype} [${input.shape.join(", ")}]`,
            input.optional ? " optional" : "", isTextRow(input) ? "" : " · one row, JSON")),
        field);
    });
    this.inputs.replaceChildren(...rows);
  }

  async run() {
    if (!this.spec) return;
    const spec = this.spec;
    const inputs = {};
    for (const input of spec.inputs) {
      const raw = this.fields.get(input.name).value;
      if (isTextRow(input)) {
        inputs[input.name] = { data: [raw] };
        continue;
      }
      if (input.optional && !raw.trim()) continue;
      try {
        inputs[input.name] = { data: [JSON.parse(raw)] };
      } catch (exc) {
        this.showError(`${input.name}: not JSON (${exc.message})`);
        return;
      }
    }
    this.send.disabled = true;
    const started = performance.now();
    try {
      const reply = await predict(spec.name, inputs);
      this.showReply(reply, performance.now() - started);
    } catch (exc) {
      this.showError(`${exc.code ?? "error"}: ${exc.message}`);
    } finally {
      this.send.disabled = false;
    }
  }

  showError(message) {
    this.output.replaceChildren(h("p", { class: "error", "data-field": "error" }, message));
  }

  showReply(reply, ms) {
    const blocks = Object.entries(reply.outputs).map(([name, out]) => outputBlock(name, out));
    this.output.replaceChildren(
      h("p", { class: "muted", "data-field": "answered" },
        `${reply.model} version ${reply.version} answered in ${ms.toFixed(1)} ms`),
      ...blocks);
  }
}

function outputBlock(name, out) {
  const flat = [out.data].flat(Infinity);
  const lines = [h("div", { class: "muted", "data-field": "shape" },
    `${out.dtype} · shape [${out.shape.join(", ")}]`)];
  if (out.dtype === "string") {
    lines.push(h("ul", { "data-field": "text" }, flat.map((s) => h("li", {}, s))));
  } else {
    const first = flat.slice(0, FIRST).map((v) => (typeof v === "number" && !Number.isInteger(v)
      ? Number(v.toPrecision(4)) : v));
    lines.push(h("div", { "data-field": "first" },
      `${first.join(", ")}${flat.length > FIRST ? `, … (${flat.length} values)` : ""}`));
    // A float vector per row: the first row's L2 norm (embeddings are often of unit norm).
    if (isFloat(out.dtype) && out.shape.length >= 2) {
      const row = [out.data[0]].flat(Infinity);
      const norm = Math.sqrt(row.reduce((acc, v) => acc + v * v, 0));
      lines.push(h("div", { "data-field": "norm" }, `L2 norm (row 0): ${norm.toFixed(4)}`));
    }
  }
  return h("div", { class: "output", "data-output": name }, h("h4", {}, name), ...lines);
}
