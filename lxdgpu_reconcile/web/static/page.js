// The fleet page: refreshes its data from api/v1/status without reloading, filters and sorts
// the containers table. Every value from the server is put into the page as text (textContent),
// never as HTML.
"use strict";

(function () {
  const body = document.body;
  const interval = Math.max(1, Number(body.dataset.interval) || 30) * 1000;
  let data = null;
  let sortKey = "host";
  let sortDir = 1;

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function badge(text, kind) {
    return el("span", text, "badge badge-" + kind);
  }

  function hostStatus(host) {
    if (host.stale) return ["stale", "stale: " + host.error.kind];
    if (host.reachable) return ["ok", "ok"];
    return ["down", host.error ? host.error.kind : "down"];
  }

  function renderHost(host) {
    const [kind, word] = hostStatus(host);
    const card = el("article", null, "host host-" + kind);
    card.dataset.host = host.name;
    const title = el("h3", host.name + " ");
    title.appendChild(badge(word, kind));
    card.appendChild(title);
    if (host.error) {
      card.appendChild(el("p", host.error.message, "error"));
      if (host.error.hint) card.appendChild(el("p", "What to do: " + host.error.hint, "hint"));
    }
    if (host.lxd_version || host.cpus) {
      const dl = el("dl");
      const pairs = [["LXD", host.lxd_version || "-"], ["CPUs", host.cpus ?? "-"]];
      if (host.memory_total) pairs.push(["Memory", memory(host)]);
      pairs.push(["Containers", host.containers ?? "-"]);
      if (host.stale) pairs.push(["Read at", new Date(host.read_at).toLocaleString()]);
      for (const [term, value] of pairs) {
        dl.appendChild(el("dt", term));
        dl.appendChild(el("dd", value));
      }
      card.appendChild(dl);
    }
    if (host.gpus !== null && host.gpus !== undefined) {
      const list = el("ul", null, "gpus");
      for (const gpu of host.gpus) {
        const item = el("li", "GPU " + gpu.id + ": " + (gpu.product || gpu.vendor || gpu.pci_address));
        if (gpu.nvidia_uuid) {
          item.appendChild(document.createTextNode(" "));
          item.appendChild(el("span", gpu.nvidia_uuid, "uuid"));
        }
        const holders = gpu.holders && gpu.holders.length ? gpu.holders.join(", ") : "free";
        item.appendChild(document.createTextNode(" — " + holders));
        list.appendChild(item);
      }
      if (!host.gpus.length) list.appendChild(el("li", "No GPU"));
      if (host.gpus_expected !== null && host.gpus_expected !== host.gpus.length) {
        list.appendChild(el("li", "The fleet expects " + host.gpus_expected, "warn"));
      }
      card.appendChild(list);
    }
    return card;
  }

  function cellValue(c, key) {
    const value = c[key];
    if (key === "notes") return notes(c);
    if (key === "template") return c.template || c.image || "";
    if (Array.isArray(value)) return value.join(" ");
    return value === null || value === undefined ? "" : String(value);
  }

  // The same text as notes() in server.py.
  function notes(c) {
    const found = [];
    if (c.moved_to) found.push("moved to " + c.moved_to);
    else if (!c.managed && c.state !== "absent" && c.state !== "unknown") found.push("not managed");
    return found.concat(c.pending || []).join("; ");
  }

  // The same text as memory() in server.py: "12.3 / 31.2 GiB" (used / total).
  function memory(host) {
    const gib = (bytes) => (bytes / 1024 ** 3).toFixed(1);
    const total = gib(host.memory_total) + " GiB";
    return host.memory_used === null || host.memory_used === undefined
      ? total : gib(host.memory_used) + " / " + total;
  }

  function cell(label, text, className) {
    const td = el("td", text === "" ? "-" : text, (className || "") + (text === "" ? " empty" : ""));
    td.dataset.label = label;
    return td;
  }

  function renderRow(c) {
    const tr = el("tr", null, c.stale ? "stale" : "");
    tr.dataset.search = (c.name + " " + (c.user || "")).toLowerCase();
    const name = cell("Container", "");
    name.textContent = "";
    name.className = "";
    name.appendChild(el("span", c.name, "name"));
    if (c.description) name.appendChild(el("span", c.description, "desc"));
    tr.appendChild(name);
    tr.appendChild(cell("User", c.user || ""));
    tr.appendChild(cell("Host", c.host));
    const state = cell("State", "");
    state.textContent = "";
    state.className = "";
    state.appendChild(badge(c.state, c.state));
    if (c.stale) {
      state.appendChild(document.createTextNode(" "));
      state.appendChild(badge("stale", "stale"));
    }
    tr.appendChild(state);
    tr.appendChild(cell("IPv4", c.ipv4.join(" "), "addr"));
    tr.appendChild(cell("IPv6", c.ipv6.join(" "), "addr"));
    const template = cell("Template", cellValue(c, "template"));
    if (c.outdated) {
      template.appendChild(document.createTextNode(" "));
      template.appendChild(badge("older version", "old"));
    }
    tr.appendChild(template);
    tr.appendChild(cell("CUDA", c.cuda.join(", ")));
    tr.appendChild(cell("CPU", c.cpu_limit || ""));
    tr.appendChild(cell("GPUs", c.gpus.join(", ")));
    tr.appendChild(cell("Notes", notes(c)));
    return tr;
  }

  function applyFilter() {
    const words = document.getElementById("search").value.trim().toLowerCase().split(/\s+/);
    const rows = document.querySelectorAll("#rows tr");
    let shown = 0;
    for (const row of rows) {
      const match = words.every((w) => row.dataset.search.includes(w));
      row.hidden = !match;
      if (match) shown += 1;
    }
    const count = document.getElementById("count");
    count.textContent = shown === rows.length
      ? rows.length + " containers" : shown + " of " + rows.length + " containers";
  }

  function render() {
    if (!data) return;
    const hosts = document.getElementById("hosts");
    hosts.replaceChildren(...data.hosts.map(renderHost));
    if (!data.hosts.length) hosts.appendChild(el("p", "Waiting for the first observation of the hosts…"));
    const sorted = data.containers.slice().sort((a, b) => {
      const x = cellValue(a, sortKey), y = cellValue(b, sortKey);
      const primary = x.localeCompare(y, undefined, { numeric: true });
      return sortDir * (primary || cellValue(a, "name").localeCompare(cellValue(b, "name")));
    });
    document.getElementById("rows").replaceChildren(...sorted.map(renderRow));
    const planError = document.getElementById("pending-error");
    planError.textContent = "Pending changes unknown: " + (data.pending_error || "");
    planError.hidden = !data.pending_error;
    const observed = document.getElementById("observed-at");
    observed.dateTime = data.observed_at || "";
    observed.textContent = data.observed_at ? new Date(data.observed_at).toLocaleString() : "not yet";
    applyFilter();
  }

  async function refresh() {
    try {
      const answer = await fetch("api/v1/status", { cache: "no-store" });
      if (!answer.ok) throw new Error("HTTP " + answer.status);
      data = await answer.json();
      document.getElementById("live").hidden = true;
      render();
    } catch (err) {
      const live = document.getElementById("live");
      live.textContent = "the page server did not answer; showing older data";
      live.hidden = false;
    }
  }

  for (const th of document.querySelectorAll("th[data-key]")) {
    th.querySelector("button").addEventListener("click", () => {
      const key = th.dataset.key;
      sortDir = key === sortKey ? -sortDir : 1;
      sortKey = key;
      for (const other of document.querySelectorAll("th[data-key]")) {
        other.setAttribute("aria-sort", "none");
      }
      th.setAttribute("aria-sort", sortDir > 0 ? "ascending" : "descending");
      render();
    });
  }
  document.getElementById("search").addEventListener("input", applyFilter);
  refresh();
  setInterval(refresh, interval);
})();
