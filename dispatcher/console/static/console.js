// The console's behaviour: buttons and forms call the JSON API (same validation and
// messages as the CLI), forms are generated from JSON Schemas, lists and logs follow live.
// No framework and nothing loaded from elsewhere.
"use strict";

const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

async function api(method, path, body) {
  const headers = {"Accept": "application/json", "X-CSRF-Token": csrf()};
  const init = {method, headers, credentials: "same-origin"};
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  return {ok: response.ok, status: response.status, data};
}

function problem(result) {
  const data = result.data || {};
  let text = data.message || `the server answered ${result.status}`;
  if (Array.isArray(data.details) && data.details.length > 1) {
    text += " — " + data.details.map(d => d.field ? `${d.field}: ${d.message}` : d.message)
      .slice(1).join("; ");
  }
  return text;
}

function say(where, text, kind) {
  const box = (where && where.querySelector("[data-message]")) ||
    document.querySelector("[data-message]");
  if (!box) return;
  box.textContent = text;
  box.className = "message " + (kind || "error");
  box.hidden = !text;
}

// ---------------------------------------------------------------- buttons: data-action
document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-action]");
  if (!button) return;
  event.preventDefault();
  if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
  const [method, path] = button.dataset.action.split(" ");
  button.disabled = true;
  const result = await api(method, path, button.dataset.body ? JSON.parse(button.dataset.body)
                                                             : (method === "POST" ? {} : undefined));
  button.disabled = false;
  if (!result.ok) { say(button.closest("section") || document, problem(result)); return; }
  const go = button.dataset.redirect;
  if (go) { window.location.assign(go.replace("{id}", (result.data || {}).id || "")); }
  else { window.location.reload(); }
});

// ---------------------------------------------------------------- forms from JSON Schema
function fieldFor(name, schema, required, value) {
  const wrap = document.createElement("div");
  wrap.className = "field";
  const id = "f-" + name.replace(/[^A-Za-z0-9_-]/g, "_") + "-" + Math.random().toString(36).slice(2, 7);
  const label = document.createElement("label");
  label.htmlFor = id;
  label.textContent = (schema.title || name) + (required ? " *" : "");
  wrap.appendChild(label);
  let types = Array.isArray(schema.type) ? schema.type.filter(t => t !== "null") : [schema.type];
  const kind = types[0] || (schema.enum ? "string" : "json");
  let input;
  if (schema.enum) {
    input = document.createElement("select");
    if (!required) input.appendChild(new Option("", ""));
    for (const choice of schema.enum) if (choice !== null) input.appendChild(new Option(String(choice), String(choice)));
    if (value !== undefined && value !== null) input.value = String(value);
  } else if (kind === "boolean") {
    input = document.createElement("input");
    input.type = "checkbox";
    input.checked = value === true;
  } else if (kind === "integer" || kind === "number") {
    input = document.createElement("input");
    input.type = "number";
    input.step = kind === "integer" ? "1" : "any";
    if (value !== undefined && value !== null) input.value = String(value);
  } else if (kind === "string") {
    input = document.createElement("input");
    input.type = (schema.writeOnly || schema.format === "password") ? "password" : "text";
    if (value !== undefined && value !== null) input.value = String(value);
  } else {
    input = document.createElement("textarea");
    input.rows = 3;
    if (value !== undefined && value !== null) input.value = JSON.stringify(value, null, 1);
  }
  input.id = id;
  input.name = name;
  input.dataset.kind = schema.enum ? "enum"
    : (["string", "integer", "number", "boolean"].includes(kind) ? kind : "json");
  if (schema.description) {
    const hint = document.createElement("small");
    hint.textContent = schema.description;
    hint.id = id + "-hint";
    input.setAttribute("aria-describedby", hint.id);
    wrap.appendChild(input);
    wrap.appendChild(hint);
  } else {
    wrap.appendChild(input);
  }
  return wrap;
}

function renderSchemaFields(container, schema, values) {
  container.textContent = "";
  const properties = (schema && schema.properties) || {};
  const required = new Set((schema && schema.required) || []);
  for (const [name, property] of Object.entries(properties)) {
    const value = values && name in values ? values[name] : property.default;
    container.appendChild(fieldFor(name, property, required.has(name), value));
  }
  if (!Object.keys(properties).length) {
    const none = document.createElement("p");
    none.className = "muted";
    none.textContent = "Nothing to fill in.";
    container.appendChild(none);
  }
}

// Values of the fields in ``container``; ``onlyChanged``: leave out empty ones. Throws a
// message naming the field when a JSON field does not parse.
function collectFields(container, onlyChanged) {
  const values = {};
  for (const input of container.querySelectorAll("[data-kind]")) {
    const kind = input.dataset.kind;
    if (kind === "boolean") {
      if (!onlyChanged || input.checked) values[input.name] = input.checked;
      continue;
    }
    const raw = input.value;
    if (raw === "") { if (!onlyChanged) values[input.name] = null; continue; }
    if (kind === "integer" || kind === "number") values[input.name] = Number(raw);
    else if (kind === "json") {
      try { values[input.name] = JSON.parse(raw); }
      catch (e) { throw new Error(`${input.name}: not valid JSON (${e.message})`); }
    } else values[input.name] = raw;
  }
  return values;
}

function readJson(id) {
  const node = document.getElementById(id);
  return node ? JSON.parse(node.textContent) : null;
}

// A pool type's provisioning options as a JSON Schema for renderSchemaFields. Values go
// to the server as text (booleans aside), so it checks them as the CLI's --infra-option.
function optionsSchema(options) {
  const properties = {};
  for (const option of options) {
    const aliases = option.aliases.length ? ` (or ${option.aliases.join(", ")})` : "";
    properties[option.name] = option.kind === "bool" ? {type: "boolean", title: option.name,
                                                         description: option.help + aliases}
      : {type: "string", title: option.name, enum: option.choices.length ? option.choices : undefined,
         description: option.help + aliases + (option.kind === "list" ? "; comma-separated" : "")};
    if (!properties[option.name].enum) delete properties[option.name].enum;
  }
  return {type: "object", properties};
}

function showPlan(where, plan, doneText) {
  where.textContent = "";
  const title = document.createElement("p");
  const strong = document.createElement("strong");
  strong.textContent = plan.target;
  title.appendChild(strong);
  title.appendChild(document.createTextNode(doneText ||
    (plan.changes ? ` — ${plan.changes} resource(s) to create` : " — everything already exists")));
  where.appendChild(title);
  const list = document.createElement("ul");
  list.className = "plan";
  for (const step of plan.steps) {
    const item = document.createElement("li");
    item.dataset.step = step.action;
    item.textContent = `${step.action} ${step.resource}: ${step.name}` +
      (step.detail ? ` — ${step.detail}` : "");
    list.appendChild(item);
  }
  where.appendChild(list);
}

// The pool form: pick a type, see its default base job template as fields; for a type
// that can provision, show the plan of its infrastructure, then apply it and create.
async function setUpPoolForm(form) {
  const typeSelect = form.querySelector("[name=type]");
  const fields = form.querySelector("[data-fields]");
  const provision = form.querySelector("[data-provision]");
  const toggle = form.querySelector("[data-provision-toggle]");
  const provisionBody = form.querySelector("[data-provision-body]");
  const optionFields = form.querySelector("[data-provision-fields]");
  const planBox = form.querySelector("[data-plan]");
  const create = form.querySelector("[data-create]");
  let template = null;
  let plan = null;  // the plan shown, until anything it depends on changes
  function forget() { plan = null; planBox.textContent = ""; setCreateLabel(); }
  function setCreateLabel() {
    create.textContent = toggle.checked ? "Apply and create" : "Create";
    create.disabled = toggle.checked && !plan;
  }
  async function load() {
    forget();
    const type = encodeURIComponent(typeSelect.value);
    const [result, options] = await Promise.all([
      api("GET", `/api/pool-types/${type}/base-job-template`),
      api("GET", `/api/pool-types/${type}/provision-options`)]);
    if (!result.ok) { template = null; fields.textContent = ""; say(form, problem(result)); return; }
    say(form, "");
    template = result.data;
    renderSchemaFields(fields, template.variables || {}, null);
    const declared = options.ok && Array.isArray(options.data) ? options.data : [];
    provision.hidden = !declared.length;
    if (!declared.length) toggle.checked = false;
    renderSchemaFields(optionFields, optionsSchema(declared), {});
    provisionBody.hidden = !toggle.checked;
    setCreateLabel();
  }
  function templateBody() {
    const values = collectFields(fields, false);
    const variables = JSON.parse(JSON.stringify(template.variables || {}));
    for (const [name, value] of Object.entries(values)) {
      if (variables.properties && variables.properties[name]) {
        if (value === null) delete variables.properties[name].default;
        else variables.properties[name].default = value;
      }
    }
    return {...template, variables};
  }
  typeSelect.addEventListener("change", load);
  toggle.addEventListener("change", () => { provisionBody.hidden = !toggle.checked; forget(); });
  form.querySelector("[name=name]").addEventListener("input", forget);
  fields.addEventListener("input", forget);
  optionFields.addEventListener("input", forget);
  optionFields.addEventListener("change", forget);
  form.querySelector("[data-show-plan]").addEventListener("click", async (event) => {
    event.preventDefault();
    if (!template) return;
    let body;
    try {
      body = {name: form.querySelector("[name=name]").value, options: collectFields(optionFields, true),
              base_job_template: templateBody()};
    } catch (e) { say(form, e.message); return; }
    event.target.disabled = true;
    planBox.textContent = "Asking the cloud what exists…";
    const result = await api("POST", `/api/pool-types/${encodeURIComponent(typeSelect.value)}/provision-plan`, body);
    event.target.disabled = false;
    if (!result.ok) { forget(); say(form, problem(result)); return; }
    say(form, "");
    plan = result.data;
    showPlan(planBox, plan);
    setCreateLabel();
  });
  await load();
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!template) return;
    let body;
    try {
      body = {name: form.querySelector("[name=name]").value, type: typeSelect.value,
              base_job_template: templateBody()};
    } catch (e) { say(form, e.message); return; }
    const limit = form.querySelector("[name=concurrency_limit]").value;
    if (limit !== "") body.concurrency_limit = Number(limit);
    if (toggle.checked) {
      if (!plan) { say(form, "Show the plan first: nothing is made before you have seen it."); return; }
      body.provision = {options: collectFields(optionFields, true), confirm_plan: plan.digest};
      showPlan(planBox, plan, ` — applying ${plan.changes} change(s), then creating the pool…`);
      say(form, "");
    }
    create.disabled = true;
    const result = await api("POST", "/api/work-pools", body);
    create.disabled = false;
    if (!result.ok) {
      if (toggle.checked) { forget(); }
      say(form, problem(result));
      return;
    }
    window.location.assign("/pools/" + encodeURIComponent(result.data.name));
  });
}

// The Run form of a deployment: parameters and job variables from their schemas.
function setUpRunForm(form) {
  const parameters = form.querySelector("[data-parameters]");
  const variables = form.querySelector("[data-variables]");
  renderSchemaFields(parameters, readJson("parameter-schema") || {},
                     readJson("parameter-defaults") || {});
  renderSchemaFields(variables, readJson("variables-schema") || {}, {});
  for (const input of variables.querySelectorAll("input,select,textarea")) {
    if (input.type !== "checkbox") input.value = "";  // only what the user sets overrides
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let body;
    try {
      body = {parameters: collectFields(parameters, true),
              job_variables: collectFields(variables, true)};
    } catch (e) { say(form, e.message); return; }
    const result = await api("POST", form.dataset.url, body);
    if (!result.ok) { say(form, problem(result)); return; }
    window.location.assign("/runs/" + encodeURIComponent(result.data.id));
  });
}

// The pool's edit form: only what changed is sent (a PATCH), the template as JSON.
function setUpEditForm(form) {
  const template = form.querySelector("[name=base_job_template]");
  const original = template.value;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = {};
    const limit = form.querySelector("[name=concurrency_limit]");
    if (limit.value !== limit.defaultValue) {
      if (limit.value === "") body.clear_concurrency_limit = true;
      else body.concurrency_limit = Number(limit.value);
    }
    const description = form.querySelector("[name=description]");
    if (description.value !== description.defaultValue) body.description = description.value;
    if (template.value !== original) {
      try { body.base_job_template = JSON.parse(template.value); }
      catch (e) { say(form, `base_job_template: not valid JSON (${e.message})`); return; }
    }
    const result = await api("PATCH", form.dataset.url, body);
    if (!result.ok) { say(form, problem(result)); return; }
    window.location.reload();
  });
}

// ---------------------------------------------------------------- live lists and logs
function followList(node) {
  const url = node.dataset.liveUrl;
  const tick = async () => {
    if (document.hidden) return;
    try {
      const response = await fetch(url, {credentials: "same-origin"});
      if (response.ok) node.innerHTML = await response.text();
    } catch (e) { /* the server is restarting: the next tick tries again */ }
  };
  setInterval(tick, Number(node.dataset.liveEvery || 2000));
}

const FINAL = new Set(["COMPLETED", "FAILED", "CANCELLED", "CRASHED"]);

function followRun(node) {
  const id = node.dataset.run;
  const logs = node.querySelector("[data-logs]");
  const stateBadge = document.querySelector("[data-state]");
  let after = 0;
  let finalSeen = false;
  async function tick() {
    const read = await api("GET", `/api/runs/${encodeURIComponent(id)}/logs?after=${after}&limit=1000`);
    if (read.ok && Array.isArray(read.data)) {
      for (const entry of read.data) {
        const line = document.createElement("div");
        line.className = "log " + entry.stream;
        const when = document.createElement("time");
        when.textContent = entry.timestamp.slice(11, 19);
        line.appendChild(when);
        line.appendChild(document.createTextNode(" " + entry.message));
        logs.appendChild(line);
        after = Math.max(after, entry.id);
      }
      if (read.data.length) logs.scrollTop = logs.scrollHeight;
    }
    const run = await api("GET", `/api/runs/${encodeURIComponent(id)}`);
    if (run.ok && stateBadge && stateBadge.dataset.state !== run.data.state) {
      window.location.reload();  // the timeline and buttons change with the state
      return;
    }
    if (run.ok && FINAL.has(run.data.state)) {
      if (finalSeen && !(read.data || []).length) return;  // nothing more will come
      finalSeen = true;
    }
    setTimeout(tick, 1000);
  }
  tick();
}

document.addEventListener("DOMContentLoaded", () => {
  const poolForm = document.querySelector("form[data-pool-form]");
  if (poolForm) setUpPoolForm(poolForm);
  const runForm = document.querySelector("form[data-run-form]");
  if (runForm) setUpRunForm(runForm);
  const editForm = document.querySelector("form[data-edit-form]");
  if (editForm) setUpEditForm(editForm);
  for (const node of document.querySelectorAll("[data-live-url]")) followList(node);
  for (const node of document.querySelectorAll("[data-run]")) followRun(node);
  const reload = document.querySelector("[data-reload-after]");
  if (reload) setTimeout(() => window.location.reload(), Number(reload.dataset.reloadAfter));
  for (const form of document.querySelectorAll("form[data-filter]")) {
    form.addEventListener("change", () => form.submit());
  }
});
