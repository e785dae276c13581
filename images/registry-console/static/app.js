// The registry console's page: everything goes through the console's same-origin /v2/ proxy.
"use strict";

const INDEX_TYPES = [
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
];
const IMAGE_TYPES = [
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.docker.distribution.manifest.v2+json",
];
// Without every type in Accept, the registry may convert the manifest and report another digest.
const MANIFEST_ACCEPT = [...INDEX_TYPES, ...IMAGE_TYPES].join(", ");
const PAGE_SIZE = 100;
const PARALLEL_REQUESTS = 6;

const state = { repositories: [], tagCounts: new Map(), selected: null, tags: [], pendingDelete: null };
const $ = (id) => document.getElementById(id);

async function call(path, options = {}) {
  const response = await fetch(path, { cache: "no-store", ...options });
  if (!response.ok) {
    throw new Error(`${options.method || "GET"} ${path}: ${await describeError(response)}`);
  }
  return response;
}

async function describeError(response) {
  try {
    const error = (await response.json()).errors[0];
    return `${response.status} ${error.code}: ${error.message}`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

// `Link: </v2/_catalog?last=x&n=100>; rel="next"`, kept same-origin.
function nextPage(response) {
  const match = /<([^>]+)>\s*;\s*rel="?next"?/.exec(response.headers.get("Link") || "");
  if (!match) return null;
  const url = new URL(match[1], location.href);
  return url.pathname + url.search;
}

async function allPages(first, key) {
  const items = [];
  for (let path = first; path; ) {
    const response = await call(path);
    items.push(...((await response.json())[key] || []));
    path = nextPage(response);
  }
  return items;
}

async function listTags(repository) {
  try {
    return await allPages(`/v2/${repository}/tags/list?n=${PAGE_SIZE}`, "tags");
  } catch (error) {
    if (/NAME_UNKNOWN/.test(error.message)) return []; // every tag deleted: the name lingers in the catalog
    throw error;
  }
}

async function manifest(repository, reference) {
  const response = await call(`/v2/${repository}/manifests/${reference}`, { headers: { Accept: MANIFEST_ACCEPT } });
  const body = await response.json();
  return {
    digest: response.headers.get("Docker-Content-Digest"),
    mediaType: body.mediaType || (response.headers.get("Content-Type") || "").split(";")[0],
    body,
  };
}

async function imageDetails(repository, body) {
  const size = body.config.size + (body.layers || []).reduce((sum, layer) => sum + layer.size, 0);
  const config = await (await call(`/v2/${repository}/blobs/${body.config.digest}`)).json();
  return { size, created: config.created || null };
}

// Size is config + layers; for an index, summed over its platform images (attestations left out).
async function describeTag(repository, tag) {
  const top = await manifest(repository, tag);
  if (!INDEX_TYPES.includes(top.mediaType)) {
    return { tag, digest: top.digest, ...(await imageDetails(repository, top.body)) };
  }
  const platforms = top.body.manifests.filter(
    (m) => (m.annotations || {})["vnd.docker.reference.type"] !== "attestation-manifest");
  const images = await Promise.all(platforms.map(async (m) =>
    imageDetails(repository, (await manifest(repository, m.digest)).body)));
  return {
    tag,
    digest: top.digest,
    size: images.reduce((sum, image) => sum + image.size, 0),
    created: images.length ? images[0].created : null,
  };
}

async function inBatches(items, work) {
  const results = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await work(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(PARALLEL_REQUESTS, items.length) }, worker));
  return results;
}

// As `invoke registry.tags` prints sizes: decimal units.
function humanSize(bytes) {
  const units = ["B", "KB", "MB", "GB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return unit ? `${value.toFixed(1)} ${units[unit]}` : `${value} B`;
}

// As `invoke registry.tags` prints digests; the full one is the cell's tooltip.
function shortDigest(digest) {
  const [algorithm, value] = digest.split(":");
  return `${algorithm}:${value.slice(0, 12)}`;
}

function shortDate(iso) {
  return iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace("Z", " UTC") : "";
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function say(message, isError = false) {
  $("status").textContent = message;
  $("status").className = isError ? "error" : "";
}

function renderRepositories() {
  const filter = $("filter").value.trim();
  const body = $("repositories").tBodies[0];
  body.replaceChildren();
  const shown = state.repositories.filter((name) => name.includes(filter));
  for (const name of shown) {
    const row = body.insertRow();
    row.dataset.repository = name;
    row.classList.toggle("selected", name === state.selected);
    cell(row, name);
    const count = state.tagCounts.get(name);
    cell(row, count === undefined ? "…" : String(count), "number tag-count");
    row.addEventListener("click", () => selectRepository(name));
  }
  $("repository-count").textContent = `(${shown.length}${filter ? ` of ${state.repositories.length}` : ""})`;
}

function renderTags() {
  const body = $("tags").tBodies[0];
  body.replaceChildren();
  $("tags-title").textContent = `${state.selected}: ${state.tags.length} tag(s)`;
  for (const t of state.tags) {
    const row = body.insertRow();
    row.dataset.tag = t.tag;
    row.dataset.digest = t.digest;
    cell(row, t.tag, "tag");
    cell(row, shortDigest(t.digest), "digest").title = t.digest;
    cell(row, humanSize(t.size), "number size");
    cell(row, shortDate(t.created), "created");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "delete";
    button.textContent = "Delete";
    button.addEventListener("click", () => askDelete(t));
    row.insertCell().append(button);
  }
}

async function loadRepositories() {
  say("loading repositories…");
  state.repositories = await allPages(`/v2/_catalog?n=${PAGE_SIZE}`, "repositories");
  state.tagCounts.clear();
  renderRepositories();
  await inBatches(state.repositories, async (name) => {
    state.tagCounts.set(name, (await listTags(name)).length);
  });
  renderRepositories();
  say(`${state.repositories.length} repositories`);
}

async function selectRepository(name) {
  state.selected = name;
  hideConfirm();
  renderRepositories();
  $("tags-pane").hidden = false;
  $("tags-title").textContent = `${name}: loading…`;
  $("tags").tBodies[0].replaceChildren();
  try {
    const tags = (await listTags(name)).sort();
    state.tags = await inBatches(tags, (tag) => describeTag(name, tag));
    state.tagCounts.set(name, tags.length);
    renderTags();
    renderRepositories();
  } catch (error) {
    say(error.message, true);
  }
}

function askDelete(t) {
  const shared = state.tags.filter((other) => other.digest === t.digest && other.tag !== t.tag).map((o) => o.tag);
  state.pendingDelete = t;
  $("confirm-question").textContent = `Delete ${state.selected}:${t.tag} (${t.digest})?`;
  $("confirm-shared").textContent = shared.length
    ? `Tags sharing this digest are deleted too: ${shared.join(", ")}.`
    : "No other tag shares this digest.";
  $("confirm").hidden = false;
  $("confirm-delete").focus();
}

function hideConfirm() {
  state.pendingDelete = null;
  $("confirm").hidden = true;
}

async function confirmDelete() {
  const t = state.pendingDelete;
  const repository = state.selected;
  hideConfirm();
  try {
    await call(`/v2/${repository}/manifests/${t.digest}`, { method: "DELETE" });
    say(`deleted ${repository}:${t.tag} (${t.digest}); run \`invoke registry.gc\` to free the space`);
    await selectRepository(repository);
  } catch (error) {
    say(error.message, true);
  }
}

async function refresh() {
  try {
    await loadRepositories();
    if (state.selected) await selectRepository(state.selected);
  } catch (error) {
    say(error.message, true);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("refresh").addEventListener("click", refresh);
  $("filter").addEventListener("input", renderRepositories);
  $("confirm-delete").addEventListener("click", confirmDelete);
  $("confirm-cancel").addEventListener("click", hideConfirm);
  refresh();
});
