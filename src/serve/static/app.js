// The recsys demo page: plain JS against the HTTP API, no framework, no build step.
// Every value from the API reaches the DOM as text (textContent), never as markup.
"use strict";

(() => {
  // How long a purchase may take to show up in /recommend before the page gives up.
  const APPLY_TIMEOUT_MS = 5000;
  const POLL_EVERY_MS = 200;
  // Explanations cite up to 20 recent purchases; the profile lists the newest few of them.
  const RECENT_LOADED = 20;
  const RECENT_SHOWN = 8;

  // H&M colour group names (colour_group_name) as RGB; unknown names fall back to the
  // perceived master colour, then to a stable colour hashed from the name.
  const COLOURS = {
    "Black": [27, 27, 29], "White": [250, 250, 247], "Off White": [240, 235, 221],
    "Light Beige": [232, 219, 193], "Beige": [214, 193, 156], "Dark Beige": [171, 145, 104],
    "Greyish Beige": [190, 179, 160], "Grey": [150, 150, 152], "Dark Grey": [86, 86, 90],
    "Light Grey": [205, 205, 208], "Dark Blue": [31, 45, 84], "Blue": [52, 101, 186],
    "Light Blue": [159, 194, 230], "Other Blue": [82, 126, 170], "Light Pink": [244, 200, 212],
    "Pink": [231, 120, 160], "Dark Pink": [181, 60, 110], "Other Pink": [219, 112, 147],
    "Red": [200, 40, 45], "Dark Red": [122, 24, 36], "Light Red": [236, 120, 115],
    "Other Red": [190, 60, 60], "Dark Green": [30, 78, 52], "Green": [60, 150, 80],
    "Light Green": [170, 215, 160], "Other Green": [90, 140, 90], "Khaki green": [120, 122, 72],
    "Greenish Khaki": [134, 130, 86], "Yellowish Green": [170, 190, 70],
    "Yellow": [245, 205, 50], "Light Yellow": [250, 235, 150], "Dark Yellow": [205, 160, 20],
    "Other Yellow": [230, 190, 70], "Yellowish Brown": [160, 115, 45], "Gold": [205, 165, 60],
    "Orange": [240, 130, 40], "Dark Orange": [205, 90, 25], "Light Orange": [250, 180, 120],
    "Other Orange": [225, 120, 60], "Turquoise": [40, 175, 170],
    "Dark Turquoise": [20, 110, 115], "Light Turquoise": [150, 220, 215],
    "Other Turquoise": [70, 160, 160], "Purple": [120, 70, 150], "Dark Purple": [70, 35, 95],
    "Light Purple": [195, 170, 220], "Other Purple": [140, 95, 160], "Silver": [192, 194, 200],
    "Bronze/Copper": [176, 110, 60], "Brown": [110, 72, 45], "Dark Brown": [70, 45, 30],
  };
  const MASTERS = {
    "Black": [27, 27, 29], "White": [250, 250, 247], "Beige": [214, 193, 156],
    "Grey": [150, 150, 152], "Blue": [52, 101, 186], "Pink": [231, 120, 160],
    "Red": [200, 40, 45], "Green": [60, 150, 80], "Yellow": [245, 205, 50],
    "Orange": [240, 130, 40], "Turquoise": [40, 175, 170], "Lilac Purple": [150, 110, 180],
    "Brown": [110, 72, 45], "Khaki green": [120, 122, 72], "Metal": [180, 182, 188],
    "Mole": [120, 105, 95],
  };

  const $ = (id) => document.getElementById(id);
  const ui = {
    form: $("pick"), customer: $("customer"), examples: $("examples"), k: $("k"),
    group: $("group"), exclude: $("exclude"), diversity: $("diversity"),
    diversityValue: $("diversity-value"), explain: $("explain"), status: $("status"),
    summary: $("summary"), cards: $("cards"), profile: $("profile"), version: $("model-version"),
  };
  const state = {
    customer: null,
    // Bumped on every new load: a reply or a poll of an older one is dropped.
    generation: 0,
    // null until the slider is moved: the server's default (RECSYS_DIVERSITY_LAMBDA) applies.
    diversityLambda: null,
    groups: new Set(),
    profileItems: new Map(), // article_id -> metadata of the customer's recent purchases
    shown: [], // article ids of the list on screen
  };

  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  function detailOf(body, status) {
    const detail = body && body.detail;
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) {
      return detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
    }
    return `HTTP ${status}`;
  }

  // The API key, for customers' data (profiles, explanations, the example customers).
  // `recsys up` and `recsys demo` print the page's address with a read key in the fragment
  // (#key=…), which the browser never sends to a server; the page keeps it for this tab
  // only (sessionStorage) and takes it out of the address bar, so a copied link or the
  // history does not carry it.
  const KEY_STORE = "recsys.apiKey";
  let memoryKey = null; // where sessionStorage is refused (some private modes)

  function takeKeyFromAddress() {
    const url = new URL(window.location.href);
    const fragment = new URLSearchParams(url.hash.slice(1));
    const key = fragment.get("key");
    if (!key) return;
    try {
      window.sessionStorage.setItem(KEY_STORE, key);
    } catch (error) {
      memoryKey = key; // lasts as long as this page
    }
    url.hash = "";
    window.history.replaceState(null, "", url.pathname + url.search);
  }

  function apiKey() {
    try {
      return window.sessionStorage.getItem(KEY_STORE) || memoryKey;
    } catch (error) {
      return memoryKey;
    }
  }

  // Why a call for customers' data was refused, and how to get a key.
  function refusal(error) {
    if (error.status !== 401 && error.status !== 403) return error.message;
    return `${error.message}. Open the address \`recsys up\` or \`recsys demo\` printed ` +
      "(it ends in #key=…), or add #key=<a read key> to this one.";
  }

  async function api(path, params, init) {
    const url = new URL(path, window.location.origin);
    for (const [name, value] of Object.entries(params || {})) {
      if (value !== null && value !== undefined && value !== "") {
        url.searchParams.set(name, String(value));
      }
    }
    const headers = { Accept: "application/json", ...((init && init.headers) || {}) };
    const key = apiKey();
    if (key) headers.Authorization = `Bearer ${key}`;
    let response;
    try {
      response = await fetch(url, { ...init, headers });
    } catch (error) {
      throw new ApiError(0, "the API does not answer");
    }
    let body = null;
    try {
      body = await response.json();
    } catch (error) {
      body = null;
    }
    if (!response.ok) throw new ApiError(response.status, detailOf(body, response.status));
    return body;
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function setStatus(text, kind) {
    ui.status.textContent = text;
    ui.status.dataset.kind = kind || "info";
  }

  // --- colours -----------------------------------------------------------------------

  function hashColour(name) {
    let h = 0;
    for (const ch of name) h = (h * 31 + ch.codePointAt(0)) >>> 0;
    const hue = h % 360;
    return hslToRgb(hue / 360, 0.45, 0.6);
  }

  function hslToRgb(h, s, l) {
    const q = l < 0.5 ? l * (1 + s) : l + s - l * s;
    const p = 2 * l - q;
    const channel = (t) => {
      const u = t < 0 ? t + 1 : t > 1 ? t - 1 : t;
      if (u < 1 / 6) return p + (q - p) * 6 * u;
      if (u < 1 / 2) return q;
      if (u < 2 / 3) return p + (q - p) * (2 / 3 - u) * 6;
      return p;
    };
    return [channel(h + 1 / 3), channel(h), channel(h - 1 / 3)].map((c) => Math.round(c * 255));
  }

  function colourOf(meta) {
    const name = String(meta.colour_group_name || "");
    const master = String(meta.perceived_colour_master_name || "");
    const known = Object.hasOwn(COLOURS, name) ? COLOURS[name] : null;
    const fallback = Object.hasOwn(MASTERS, master) ? MASTERS[master] : null;
    return known || fallback || hashColour(name || master || "unknown");
  }

  function paint(node, meta) {
    const [r, g, b] = colourOf(meta);
    // Relative luminance decides between dark and light text on the swatch.
    const luminance = (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255;
    node.style.backgroundColor = `rgb(${r}, ${g}, ${b})`;
    node.style.color = luminance > 0.6 ? "#1d1d1f" : "#ffffff";
    node.classList.toggle("pale", luminance > 0.9);
  }

  // --- product group options ---------------------------------------------------------

  function learnGroups(metas) {
    let added = false;
    for (const meta of metas) {
      const group = meta && meta.product_group_name;
      if (group && !state.groups.has(String(group))) {
        state.groups.add(String(group));
        added = true;
      }
    }
    if (added) fillGroupOptions();
  }

  function fillGroupOptions() {
    const sorted = [...state.groups].sort((a, b) => a.localeCompare(b));
    for (const select of [ui.group, ui.exclude]) {
      const chosen = select.value;
      while (select.options.length > 1) select.remove(1);
      for (const group of sorted) {
        const option = el("option", null, group);
        option.value = group;
        select.append(option);
      }
      select.value = chosen;
    }
  }

  // --- recommendations ---------------------------------------------------------------

  function recommendParams() {
    return {
      k: ui.k.value,
      product_group: ui.group.value,
      exclude_groups: ui.exclude.value,
      explain: ui.explain.checked ? "true" : null,
      diversity_lambda: state.diversityLambda,
    };
  }

  function fetchRecommendations(customer) {
    return api(`/recommend/${encodeURIComponent(customer)}`, recommendParams());
  }

  function field(label, value, className) {
    const row = el("div", `field ${className}`);
    row.append(el("span", "label", label), el("span", "value", value || "–"));
    return row;
  }

  function explanationList(item) {
    const list = el("ul", "why");
    const parts = item.explanation || [];
    if (parts.length === 0) {
      list.append(el("li", "muted", "no recent purchase explains this item"));
    }
    for (const part of parts) {
      const entry = el("li");
      const share = el("span", "share", `${Math.round(part.share_percent)}%`);
      const bought = state.profileItems.get(part.article_id);
      const what = bought
        ? `${bought.colour_group_name || ""} ${bought.product_type_name || ""}`.trim()
        : "";
      entry.append(share, el("span", null, ` you bought ${part.article_id}`));
      if (what) entry.append(el("span", "muted", ` (${what})`));
      list.append(entry);
    }
    return list;
  }

  function card(item, rank, isNew) {
    const meta = item.metadata || {};
    const node = el("li", isNew ? "card new" : "card");
    node.dataset.articleId = item.article_id;

    const swatch = el("div", "swatch");
    paint(swatch, meta);
    swatch.append(
      el("span", "swatch-type", meta.product_type_name || "item"),
      el("span", "swatch-colour", meta.colour_group_name || ""),
    );
    swatch.setAttribute("aria-hidden", "true");

    const body = el("div", "card-body");
    const title = el("p", "title");
    title.append(el("span", "rank", `#${rank}`), el("span", "name", meta.prod_name || ""));
    body.append(
      title,
      field("group", meta.product_group_name, "group"),
      field("type", meta.product_type_name, "type"),
      field("colour", meta.colour_group_name, "colour"),
      el("p", "meta muted", `${item.article_id} · score ${Number(item.score).toFixed(3)}`),
    );
    if (item.explanation) body.append(explanationList(item));
    const buy = el("button", "buy", "Buy");
    buy.type = "button";
    buy.setAttribute("aria-label", `Buy ${meta.prod_name || item.article_id}`);
    buy.addEventListener("click", () => purchase(item));
    body.append(buy);

    node.append(swatch, body);
    return node;
  }

  // markNew outlines the items that were not on screen before (after a purchase).
  function render(reply, markNew) {
    const before = new Set(state.shown);
    ui.cards.replaceChildren(
      ...reply.items.map((item, i) => card(item, i + 1, markNew && !before.has(item.article_id))),
    );
    state.shown = reply.items.map((item) => item.article_id);
    learnGroups(reply.items.map((item) => item.metadata));

    const parts = [];
    if (reply.source === "personalized") {
      parts.push(`Personalised for ${reply.customer_id}`);
    } else {
      parts.push(`Trending (fallback: ${reply.fallback_reason || "no vector for this customer"})`);
    }
    parts.push(`${reply.items.length} items`);
    parts.push(`diversity λ ${Number(reply.diversity_lambda).toFixed(1)}`);
    parts.push(`last applied purchase: ${reply.applied_event_id || "none"}`);
    ui.summary.textContent = parts.join(" · ");
    ui.summary.dataset.source = reply.source;
    ui.version.textContent = `model ${reply.model_version}`;
    if (state.diversityLambda === null) showDiversity(1 - Number(reply.diversity_lambda));
    if (reply.items.length === 0) {
      ui.cards.append(el("li", "empty muted", "Nothing matches these filters."));
    }
  }

  async function refresh() {
    const customer = state.customer;
    if (!customer) return;
    const generation = ++state.generation;
    ui.cards.setAttribute("aria-busy", "true");
    try {
      const reply = await fetchRecommendations(customer);
      if (generation !== state.generation) return;
      render(reply, false);
      if (ui.status.dataset.kind === "error") setStatus("", "info"); // the error is over
    } catch (error) {
      if (generation !== state.generation) return;
      ui.cards.replaceChildren();
      state.shown = [];
      ui.summary.textContent = "";
      setStatus(`Could not load recommendations: ${refusal(error)}`, "error");
    } finally {
      if (generation === state.generation) ui.cards.removeAttribute("aria-busy");
    }
  }

  // --- purchase ----------------------------------------------------------------------

  function enableBuying(enabled) {
    for (const button of ui.cards.querySelectorAll("button.buy")) button.disabled = !enabled;
  }

  async function purchase(item) {
    const customer = state.customer;
    const meta = item.metadata || {};
    const what = meta.prod_name ? `${meta.prod_name} (${item.article_id})` : item.article_id;
    enableBuying(false);
    setStatus(`Buying ${what}…`, "pending");
    let eventId;
    try {
      const accepted = await api("/events/purchase", null, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ customer_id: customer, article_id: item.article_id }),
      });
      eventId = accepted.event_id;
    } catch (error) {
      setStatus(`The purchase was not accepted: ${error.message}`, "error");
      enableBuying(true);
      return;
    }
    setStatus(`Purchase accepted as event ${eventId}; waiting for the updater to apply it…`,
      "pending");
    // Polls with the options as they are at each turn, so changing them meanwhile is fine;
    // picking another customer ends the wait.
    const started = performance.now();
    while (performance.now() - started < APPLY_TIMEOUT_MS) {
      let reply = null;
      try {
        reply = await fetchRecommendations(customer);
      } catch (error) {
        reply = null; // a failed poll is retried until the deadline
      }
      if (customer !== state.customer) return;
      if (reply && reply.applied_event_id === eventId) {
        const waited = Math.round(performance.now() - started);
        state.generation += 1; // a refresh still in flight is older than this reply
        ui.cards.removeAttribute("aria-busy");
        render(reply, true);
        setStatus(`Event ${eventId} applied after ${waited} ms: bought ${what}; ` +
          "the list now reflects it (new entries are outlined).", "applied");
        ui.status.dataset.eventId = eventId;
        loadProfile(customer);
        return;
      }
      await sleep(POLL_EVERY_MS);
    }
    if (customer !== state.customer) return;
    setStatus(`Event ${eventId} was accepted but not applied within ` +
      `${APPLY_TIMEOUT_MS / 1000} s: is the updater running (recsys updater or recsys up)?`,
      "error");
    enableBuying(true);
  }

  // --- profile -----------------------------------------------------------------------

  function shares(title, list, className) {
    const box = el("div", `shares ${className}`);
    box.append(el("h3", null, title));
    for (const share of list) {
      const row = el("div", "share-row");
      const bar = el("span", "bar");
      bar.style.width = `${Math.max(2, Math.min(100, Number(share.percent)))}%`;
      row.append(
        el("span", "share-name", share.name),
        el("span", "share-count", `${share.count} · ${Math.round(share.percent)}%`),
        bar,
      );
      box.append(row);
    }
    return box;
  }

  function day(iso) {
    return iso ? String(iso).slice(0, 10) : "–";
  }

  function renderProfile(profile) {
    state.profileItems = new Map(
      profile.recent_purchases.map((p) => [p.article_id, p.metadata || {}]),
    );
    learnGroups(profile.recent_purchases.map((p) => p.metadata));
    const summary = el("dl", "facts");
    for (const [term, value] of [
      ["purchases", profile.total_purchases],
      ["first", day(profile.first_purchase)],
      ["last", day(profile.last_purchase)],
    ]) {
      summary.append(el("dt", null, term), el("dd", null, value));
    }
    const recent = el("ul", "recent");
    for (const bought of profile.recent_purchases.slice(0, RECENT_SHOWN)) {
      const meta = bought.metadata || {};
      const entry = el("li");
      const chip = el("span", "chip");
      paint(chip, meta);
      entry.append(
        chip,
        el("span", "recent-what", `${meta.colour_group_name || ""} ${meta.product_type_name || ""}`),
        el("span", "recent-when muted", `${bought.article_id} · ${day(bought.purchased_at)}`),
      );
      recent.append(entry);
    }
    ui.profile.replaceChildren(
      el("p", "profile-id", profile.customer_id),
      summary,
      shares("Top product groups", profile.top_product_groups, "groups"),
      shares("Top product types", profile.top_product_types, "types"),
      el("h3", null, "Recent purchases"),
      recent,
      el("p", "hint", `Shares over ${profile.categories_basis}.`),
    );
  }

  async function loadProfile(customer) {
    try {
      const profile = await api(`/users/${encodeURIComponent(customer)}/profile`, {
        recent_limit: RECENT_LOADED,
        top_categories: 4,
      });
      if (customer === state.customer) renderProfile(profile);
    } catch (error) {
      if (customer !== state.customer) return;
      state.profileItems = new Map();
      const text = error.status === 404 ? "No purchase known for this customer." : refusal(error);
      ui.profile.replaceChildren(el("p", "muted", text));
    }
  }

  // --- customers ---------------------------------------------------------------------

  function choose(customer) {
    const id = customer.trim();
    if (!id) return;
    ui.customer.value = id;
    state.customer = id;
    state.shown = [];
    setStatus("", "info");
    delete ui.status.dataset.eventId;
    for (const button of ui.examples.querySelectorAll("button")) {
      button.setAttribute("aria-pressed", String(button.dataset.customer === id));
    }
    const url = new URL(window.location.href);
    url.searchParams.set("customer", id);
    window.history.replaceState(null, "", url);
    refresh();
    loadProfile(id);
  }

  async function loadExamples() {
    try {
      const reply = await api("/ui/customers", { limit: 12 });
      ui.version.textContent = `model ${reply.model_version}`;
      ui.examples.replaceChildren(
        ...reply.customer_ids.map((id) => {
          const button = el("button", "example", id);
          button.type = "button";
          button.dataset.customer = id;
          button.title = id;
          button.setAttribute("aria-pressed", String(id === state.customer));
          button.addEventListener("click", () => choose(id));
          const entry = el("li");
          entry.append(button);
          return entry;
        }),
      );
      if (reply.customer_ids.length === 0) {
        ui.examples.append(el("li", "muted", "No customer vectors in the live model."));
      }
    } catch (error) {
      ui.examples.replaceChildren(el("li", "muted", `No examples: ${refusal(error)}`));
    }
  }

  async function loadGroups() {
    try {
      const reply = await api("/popular", { k: 50 });
      learnGroups(reply.items.map((item) => item.metadata));
    } catch (error) {
      // The lists still fill from recommendations and profiles as they load.
    }
  }

  function showDiversity(amount) {
    ui.diversity.value = String(amount);
    ui.diversityValue.textContent = Number(amount) === 0 ? "off" : Number(amount).toFixed(1);
  }

  function start() {
    takeKeyFromAddress();
    // A key added to the address of the open page (#key=…): take it and load again.
    window.addEventListener("hashchange", () => {
      if (!new URLSearchParams(window.location.hash.slice(1)).get("key")) return;
      takeKeyFromAddress();
      loadExamples();
      if (state.customer) choose(state.customer);
    });
    ui.form.addEventListener("submit", (event) => {
      event.preventDefault();
      choose(ui.customer.value);
    });
    for (const control of [ui.k, ui.group, ui.exclude, ui.explain]) {
      control.addEventListener("change", refresh);
    }
    ui.diversity.addEventListener("input", () => showDiversity(ui.diversity.value));
    ui.diversity.addEventListener("change", () => {
      state.diversityLambda = Number((1 - Number(ui.diversity.value)).toFixed(2));
      showDiversity(ui.diversity.value);
      refresh();
    });
    showDiversity(0);
    loadExamples();
    loadGroups();
    const wanted = new URL(window.location.href).searchParams.get("customer");
    if (wanted) choose(wanted);
  }

  start();
})();
