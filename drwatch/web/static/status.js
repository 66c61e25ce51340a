// drwatch status page: polls the JSON API and updates the page in place.
// No framework and no build step. Every value from the API goes in through
// textContent, never innerHTML, so a hostile name cannot inject markup.
"use strict";

const POLL_MS = 5000;
const TOKEN_KEY = "drwatch.token";
const WIDE_SCOPES = ["region", "zone"];
const LAYERS = [["provider", "P"], ["agent", "A"], ["app", "H"]];

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v; else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function replace(id, ...children) {
  const node = document.getElementById(id);
  node.replaceChildren(...children.flat(Infinity).filter((c) => c));
  return node;
}

// API times are ISO 8601 UTC; older payloads may carry epoch seconds.
function toDate(value) {
  if (value === null || value === undefined || value === "") return null;
  const d = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  return isNaN(d.getTime()) ? null : d;
}

function hms(value) {
  const d = toDate(value);
  return d ? d.toISOString().slice(11, 19) + "Z" : "–";
}

function list(value, key) {
  if (Array.isArray(value)) return value;
  if (value && Array.isArray(value[key])) return value[key];
  if (value && typeof value === "object") {
    // A mapping name -> health or name -> object.
    return Object.entries(value).map(([name, v]) => (typeof v === "object" ? { name, ...v } : { name, health: v }));
  }
  return [];
}

function healthOf(value) {
  const h = typeof value === "object" && value ? value.health : value;
  return h === "up" || h === "down" ? h : "unknown";
}

function isOpen(inc) {
  return !inc.closed_at && inc.state !== "ended";
}

async function api(path) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  const resp = await fetch(path, { headers, cache: "no-store" });
  if (resp.status === 401 || resp.status === 403) throw Object.assign(new Error("token"), { auth: true });
  if (!resp.ok) throw new Error(path + ": HTTP " + resp.status);
  return resp.json();
}

// -- overall state --------------------------------------------------------------------

function overallState(status, open) {
  const watcher = status.watcher || {};
  const declared = status.overall || status.state || watcher.state || status.watcher_state;
  if (declared === "impaired" || declared === "warming_up") return declared;
  if (open.some((i) => WIDE_SCOPES.includes(i.scope))) return "outage";
  if (open.length) return "degraded";
  if (declared && declared !== "ok" && declared !== "paused") return declared;
  // No incident, but findings that warn (a readiness gap, a disk filling up): not OK.
  return warningFindings(status).length ? "warning" : "ok";
}

function warningFindings(status) {
  return list(status.findings, "findings").filter((f) => f.severity === "warning");
}

function isPaused(status) {
  const watcher = status.watcher || {};
  return Boolean(status.paused ?? watcher.paused ?? false) || (status.watcher_state || watcher.state) === "paused";
}

function renderHeader(status, open) {
  const state = overallState(status, open);
  document.getElementById("top").className = "state-" + state;
  const badge = document.getElementById("overall");
  badge.textContent = state.replace("_", " ");
  badge.className = "badge " + state;
  const warned = warningFindings(status).length;
  badge.title = warned ? warned + " warning finding(s): see readiness and early warning" : "";
  document.getElementById("paused").hidden = !isPaused(status);
  const summary = status.summary || (status.last_tick && status.last_tick.summary) || "";
  document.getElementById("summary").textContent = summary || (open.length ? open.length + " open incident(s)" : "All watched targets healthy.");
  document.title = "drwatch · " + state + (open.length ? " · " + open.length + " open" : "");
}

// -- incidents: the timeline holds decisions, the steps list under it holds the run --

function where(inc) {
  const parts = [inc.scope, inc.zone || inc.region || ""].filter(Boolean);
  return parts.join(" ");
}

function timeline(inc) {
  const events = [];
  const add = (at, cls, text) => { if (toDate(at)) events.push({ at: toDate(at), cls, text }); };
  const cause = inc.opened_finding || inc.finding || "";
  const causeEvidence = inc.opened_evidence || inc.evidence || "";
  add(inc.opened_at, "opened", "opened: " + cause + (causeEvidence ? " — " + causeEvidence : ""));
  for (const g of inc.gate_history || []) add(g.at, "gate", "not acting: " + (g.reasons || []).join("; "));
  add(inc.approved_at, "done", "approved");
  add(inc.acted_at, "running", "started " + (inc.playbook || "playbook"));
  add(inc.recovered_at, "recovered", "recovered");
  add(inc.closed_at, inc.outcome === "failed" ? "failed" : "done", "closed: " + (inc.outcome || ""));
  events.sort((a, b) => a.at - b.at);
  return el("ol", { class: "timeline" }, events.map((e) =>
    el("li", { class: e.cls }, el("time", { datetime: e.at.toISOString() }, hms(e.at)), e.text)));
}

function steps(inc) {
  if (!(inc.steps || []).length) return null;
  return el("details", { open: isOpen(inc) },
    el("summary", {}, "Steps (" + inc.steps.length + ")"),
    el("ol", { class: "timeline steps" }, inc.steps.map((s) =>
      el("li", { class: s.status || "" },
        el("time", {}, hms(s.started_at)), el("strong", {}, s.name), " " + (s.status || ""),
        s.ended_at ? " → " + hms(s.ended_at) : "",
        s.detail ? el("div", { class: "step-detail" }, s.detail) : null))));
}

function incidentCard(inc) {
  const targets = inc.target_names || inc.targets || [];
  const reasons = inc.gate_reasons || [];
  return el("article", { class: "incident", id: "incident-" + inc.id },
    el("h3", {}, el("span", { class: "sev " + (inc.severity || "") }, inc.severity || "?"), where(inc), " · ", inc.finding || ""),
    el("div", { class: "id" }, inc.id),
    el("div", {}, "state: ", el("strong", {}, inc.outcome || inc.state || "open"),
      inc.playbook ? [" · playbook ", el("code", {}, inc.playbook)] : null),
    targets.length ? el("div", {}, "targets: " + targets.join(", ")) : null,
    inc.opened_finding && inc.opened_finding !== inc.finding
      ? el("div", { class: "cause" }, "opened as " + inc.opened_finding + ", now " + (inc.finding || "")) : null,
    reasons.length ? el("div", { class: "why" }, el("strong", {}, "Why drwatch is not acting"),
      el("ul", {}, reasons.map((r) => el("li", {}, r)))) : null,
    inc.detail ? el("div", { class: "step-detail" }, inc.detail) : null,
    timeline(inc),
    steps(inc));
}

// Widest first: a region or zone outage explains the instance incidents inside it.
const SCOPE_RANK = { region: 0, zone: 1, provider_api: 2, instance: 3 };

function renderIncidents(incidents, steps = []) {
  const rank = (i) => SCOPE_RANK[i.scope] ?? 9;
  const open = incidents.filter(isOpen).sort((a, b) => rank(a) - rank(b) || (toDate(a.opened_at) - toDate(b.opened_at)));
  document.getElementById("open-count").textContent = String(open.length);
  replace("incidents", open.length ? open.map(incidentCard) : el("p", { class: "empty" }, "No open incidents."));
  // An incident waits before it acts, or a running playbook's step waits (restore_from_dump).
  const stepOf = Object.fromEntries(steps.map((p) => [p.incident, p.what]));
  const waiting = open.filter((i) => i.outcome === "awaiting_approval" || stepOf[i.id]);
  document.getElementById("approvals").hidden = waiting.length === 0;
  replace("approval-list", waiting.map((i) => el("li", {},
    el("strong", {}, where(i)), " · " + (stepOf[i.id] || i.playbook || "playbook") + " · ",
    el("a", { href: "#incident-" + i.id }, "details"), el("br"), "approve with ", el("code", {}, "drwatch approve " + i.id))));
  const closed = incidents.filter((i) => !isOpen(i)).slice(0, 10);
  replace("recent", closed.length ? closed.map((i) => el("li", {},
    el("span", { class: "id" }, hms(i.opened_at) + " "), where(i) + " · " + (i.finding || "") + " · ",
    el("strong", {}, i.outcome || "closed"))) : el("li", { class: "empty" }, "None."));
  return open;
}

// -- fleet grid -----------------------------------------------------------------------

function instancesOf(status) {
  const fleet = status.fleet || status.instances || status.targets || [];
  return list(fleet, "instances");
}

function layerHealth(inst, layer) {
  const h = inst.health || inst.layers || {};
  return healthOf(h[layer] !== undefined ? h[layer] : inst[layer]);
}

function instRow(inst) {
  const gone = ["stopped", "terminated", "shutting-down", "stopping"].includes(inst.state);
  return el("div", { class: "inst" + (gone ? " gone" : ""), title: (inst.id || "") + (inst.state ? " · " + inst.state : "") },
    el("span", {}, inst.name || inst.id),
    el("span", { class: "layers" }, LAYERS.map(([layer, letter]) => {
      const h = layerHealth(inst, layer);
      return el("span", { class: "dot " + h, title: layer + ": " + h, "aria-label": layer + " " + h }, letter);
    })));
}

// The provider's verdict on the zone when the API gives one; otherwise "up" as soon
// as one instance in it answers (a zone we have heard nothing about stays unknown).
function zoneHealth(status, zone, members) {
  const zones = list(status.zones || [], "zones");
  const found = zones.find((z) => (z.name || z.zone) === zone);
  if (found) return healthOf(found);
  const answering = members.some((m) => layerHealth(m, "agent") === "up" || layerHealth(m, "app") === "up");
  return answering ? "up" : "unknown";
}

function group(items, key) {
  const out = new Map();
  for (const item of items) {
    const k = item[key] || "?";
    if (!out.has(k)) out.set(k, []);
    out.get(k).push(item);
  }
  return new Map([...out.entries()].sort((a, b) => String(a[0]).localeCompare(String(b[0]))));
}

function renderGrid(status, open) {
  const instances = instancesOf(status);
  if (!instances.length) return replace("grid", el("p", { class: "empty" }, "No fleet data yet."));
  const zonesOut = new Set(open.filter((i) => i.scope === "zone").map((i) => i.zone));
  const regions = [...group(instances, "region").entries()].map(([region, inRegion]) =>
    el("div", { class: "region" }, el("h3", {}, region),
      el("div", { class: "zones" }, [...group(inRegion, "zone").entries()].map(([zone, inZone]) => {
        const zh = zonesOut.has(zone) ? "down" : zoneHealth(status, zone, inZone);
        return el("div", { class: "zone " + zh, "data-zone": zone },
          el("h4", {}, zone, el("span", { class: "dot " + zh, title: "zone " + zh })),
          [...group(inZone, "role").entries()].map(([role, members]) =>
            [el("div", { class: "role" }, role.replace("_", " ")), members.map(instRow)]));
      }))));
  replace("grid", regions);
}

// Which region serves (region_roles): one line; a split between DNS and the databases is
// shown as such, never as a guess.
function renderRegions(status) {
  const line = document.getElementById("region-roles");
  const roles = status.region_roles;
  if (!roles || typeof roles !== "object") { line.hidden = true; return; }
  line.hidden = false;
  line.className = roles.split ? "legend split attention" : "legend";
  const dns = roles.dns_error ? " · DNS: " + roles.dns_error : "";
  line.textContent = "Regions: " + (roles.detail || "unknown") + dns;
}

// -- watcher --------------------------------------------------------------------------

function renderWatcher(status) {
  const watcher = typeof status.watcher === "object" && status.watcher ? status.watcher : {};
  const facts = {
    state: watcher.state || status.watcher_state,
    reason: watcher.reason || status.watcher_reason,
    name: watcher.name,
    paused: isPaused(status) ? "yes" : "no",
    "dry run": (status.dry_run ?? watcher.dry_run) ? "yes" : null,
    "last tick": hms(status.tick_at || status.at || watcher.last_tick_at),
    healthy: status.counts ? status.counts.healthy + " / " + status.counts.total : null,
    version: watcher.version || status.version,
  };
  // Several watchers: who leads and since when, from this watcher's own view (docs/cluster.md).
  const cluster = typeof status.cluster === "object" && status.cluster ? status.cluster : null;
  if (cluster) {
    facts.role = cluster.role + (cluster.acting ? " (acting)" : "");
    facts.leader = cluster.leader ? cluster.leader + (cluster.since ? " since " + hms(cluster.since) : "") : "nobody";
    const cut = cluster.vantage && cluster.vantage.cut_from_zones;
    if (cut && cut.length) facts["cut from"] = cut.join(", ");
  }
  replace("watcher", Object.entries(facts).filter(([, v]) => v !== undefined && v !== null && v !== "")
    .map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  const canaries = list(status.canaries || watcher.canaries || [], "canaries");
  replace("canaries", canaries.length ? canaries.map((c) =>
    el("li", { class: healthOf(c) }, (c.name || "?") + ": " + healthOf(c))) : el("li", { class: "empty" }, "none reported"));
}

// -- drills and early warning ---------------------------------------------------------

const TREND_FINDINGS = ["disk_full_soon", "cpu_pressure", "memory_pressure"];

function secs(value) {
  if (value === null || value === undefined) return "–";
  if (value < 120) return Math.round(value) + " s";
  if (value < 7200) return Math.round(value / 60) + " min";
  if (value < 172800) return (value / 3600).toFixed(1) + " h";
  return (value / 86400).toFixed(1) + " days";
}

function day(value) {
  const d = toDate(value);
  return d ? d.toISOString().slice(0, 16).replace("T", " ") + "Z" : "–";
}

function renderDrills(drills) {
  const last = drills && drills.last;
  const lastNode = document.getElementById("last-drill");
  lastNode.className = last ? "" : "empty";
  lastNode.textContent = last
    ? day(last.started_at) + " · " + last.kind + " · " + last.scenario + " · " + last.result +
      " · recovery " + secs(last.recovery_s) + " (RTO " + secs(last.objectives && last.objectives.rto_s) + ")"
    : (drills ? "No drill recorded." : "This drwatch does not report drills.");
  const due = (drills && drills.due) || [];
  replace("drills-due", due.map((d) => el("li", { class: d.overdue ? "overdue" : "due", "data-kind": d.kind }, d.text)));
}

// When data was last proven restorable (the status's backups.restore_test); none: no backups.
function renderRestoreTest(backups) {
  const node = document.getElementById("restore-test");
  const test = backups && backups.restore_test;
  const last = test && test.last_passed;
  let text = "This drwatch takes no backups.";
  if (test && !test.enabled) text = "Not scheduled: " + (test.why_not || "off") + ".";
  else if (test && last) text = "Last proven restorable " + day(last.at) + ": " + last.backup_id + ", " +
    last.rows + " rows in " + secs(last.restore_s) + ", data " + secs(last.data_age_s) + " old" +
    (test.overdue ? " · overdue" : "");
  else if (test) text = "No restore test has passed yet" + (test.overdue ? " · overdue" : "") + ".";
  node.className = test && test.overdue ? "overdue" : (last ? "" : "empty");
  node.textContent = text;
}

function renderEarly(status) {
  const warnings = list(status.findings, "findings").filter((f) => TREND_FINDINGS.includes(f.finding));
  const items = warnings.map((f) => el("li", { class: "warn", "data-finding": f.finding }, f.evidence || f.finding));
  const disks = ((status.trends && status.trends.disks) || []).filter((t) => t.eta_s !== null && t.eta_s !== undefined);
  disks.sort((a, b) => a.eta_s - b.eta_s);
  const shown = new Set(warnings.map((f) => (f.targets || []).join(",")));
  for (const t of disks.slice(0, 5)) {
    if (shown.has(t.instance)) continue;
    items.push(el("li", {}, t.instance + " " + t.mount + ": " + Math.round(t.used_percent) + "% used, full in about " + secs(t.eta_s)));
  }
  replace("early", items.length ? items : el("li", { class: "empty" }, "Nothing is trending toward trouble."));
}

// -- backups --------------------------------------------------------------------------

function backupState(c) {
  if (c.breached) return ["down", "RPO breached"];
  if (c.failing) return ["warn", "failing"];
  return ["up", "ok"];
}

// Backup warnings shown in the panel (not alerts): an image copy on its way.
const BACKUP_WARNINGS = ["image_copy_pending"];

function renderBackups(backups, findings) {
  const card = document.getElementById("backups");
  card.hidden = !backups;
  if (!backups) return;
  const warnings = list(findings, "findings").filter((f) => BACKUP_WARNINGS.includes(f.finding));
  replace("backup-warnings", warnings.map((f) =>
    el("li", { class: "warn", "data-finding": f.finding }, f.evidence || f.finding)));
  replace("backup-rows", (backups.classes || []).map((c) => {
    const [cls, text] = backupState(c);
    const age = c.age_s === null || c.age_s === undefined ? "none yet" : secs(c.age_s) + " ago";
    return el("tr", { class: cls, "data-class": c.data_class, "data-location": c.location },
      el("td", {}, c.data_class), el("td", {}, c.location), el("td", {}, age),
      el("td", {}, secs(c.rpo_s)), el("td", { class: "state" }, text));
  }));
  const notes = [];
  if ((backups.not_backed_up || []).length) notes.push("Not backed up, on purpose: " + backups.not_backed_up.join(", ") + ".");
  const sharing = backups.sharing;
  if (sharing) notes.push(sharing.runs_backups
    ? "This watcher leads: it runs the backups, and every watcher shows this catalogue."
    : "Backups run on the leader (" + (sharing.leader || "none now") + "); this is the shared catalogue" +
      (sharing.synced_at ? ", read " + secs(Date.now() / 1000 - sharing.synced_at) + " ago." : ", not read yet."));
  notes.push(backups.watcher_holds_private_key
    ? "The watcher holds a copy of the backup key (automated restore tests)."
    : "The watcher does not hold the backup key: restores are an operator's command.");
  document.getElementById("backup-notes").textContent = notes.join(" ");
}

// -- readiness ------------------------------------------------------------------------

const READINESS_FINDINGS = ["group_single_zone", "lb_standby_missing", "db_zone_replica_missing",
  "region_replica_missing", "region_replica_lagging", "standby_image_missing", "residency_blocks_failover",
  "dns_mismatch"];

function renderReadiness(status) {
  const r = status.readiness;
  const node = document.getElementById("regions");
  if (!r) {
    node.className = "empty";
    node.textContent = "This drwatch does not report readiness.";
  } else {
    node.className = r.regional_fallback ? "" : "no-fallback";
    node.textContent = "Serving: " + (r.serving_region || "unknown") + " · standby: " + (r.standby_region || "none") +
      " · regional fallback: " + (r.regional_fallback ? "yes (" + r.fallback + ")" : "NONE — " + r.fallback);
  }
  const warnings = list(status.findings, "findings").filter((f) => READINESS_FINDINGS.includes(f.finding));
  replace("ready-warnings", warnings.length
    ? warnings.map((f) => el("li", { class: "warn", "data-finding": f.finding }, f.evidence || f.finding))
    : el("li", { class: "empty" }, "No readiness gap found."));
}

// -- loop -----------------------------------------------------------------------------

function setConn(text, ok) {
  const conn = document.getElementById("conn");
  conn.textContent = text;
  conn.style.color = ok ? "" : "var(--down)";
}

async function refresh() {
  try {
    const [status, incidents] = await Promise.all([api("api/v1/status"), api("api/v1/incidents")]);
    const all = list(incidents, "incidents");
    const open = renderIncidents(all, list(status.approvals || [], "approvals"));
    renderHeader(status, open);
    renderGrid(status, open);
    renderRegions(status);
    renderWatcher(status);
    renderDrills(status.drills);
    renderEarly(status);
    renderBackups(status.backups, status.findings);
    renderReadiness(status);
    renderRestoreTest(status.backups);
    document.getElementById("auth").hidden = true;
    document.getElementById("updated").textContent = "updated " + hms(new Date());
    setConn("live", true);
  } catch (err) {
    if (err.auth) document.getElementById("auth").hidden = false;
    setConn(err.auth ? "API token needed" : "cannot reach drwatch: " + err.message + " (showing last known state)", false);
  }
}

async function loop() {
  await refresh();
  setTimeout(loop, POLL_MS);
}

document.getElementById("auth-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, document.getElementById("auth-token").value.trim());
  refresh();
});
loop();
