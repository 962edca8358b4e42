/* dashboard.js: sluiced's queue dashboard. It reads only the HTTP API
 * (/api/v1/, docs/HTTP.md), a page at a time: the overview and its rates
 * (/api/v1/dashboard), one page of destinations (/api/v1/destinations,
 * sorted and filtered by the daemon), one destination
 * (/api/v1/destinations/NAME) with a page of its messages
 * (/api/v1/queue?domain=NAME&limit=..&cursor=..), one message
 * (/api/v1/queue/MID). Every 2 s it asks again for what is on screen, so
 * its cost does not grow with the queue.
 *
 * The API token stays in this tab (sessionStorage) and goes in the
 * Authorization header, never in a cookie: another site's page cannot make
 * the browser send it, so it cannot trigger an action. Every value from
 * the queue is written as text (sl.el, textContent). */
"use strict";

const $ = id => document.getElementById(id);
const PAGE = 50;
const view = {
	name: "overview", sort: "queued", order: "desc", q: "", state: "",
	offset: 0, dest: null, cursor: null, cursors: [], mid: null,
};

function token() {
	return sessionStorage.getItem("sluice-token") || "";
}

async function api(path, opts) {
	const o = Object.assign({ headers: {} }, opts || {});
	if (token())
		o.headers.Authorization = "Bearer " + token();
	try {
		return await sl.json("api/v1/" + path, o);
	} catch (e) {
		if (e.status === 401) {
			showTokenForm();
			e.message = token() ? "That token was refused: give the one of " +
				"[http] api_token_file." : "Give the API token to read the queue.";
		}
		throw e;
	}
}

function fail(e) {
	$("error").textContent = e.message || String(e);
	$("error").hidden = false;
}

function ok() {
	$("error").hidden = true;
}

/* Ask for the token: once, not at every refused poll (that would take
 * the focus away every 2 s). */
function showTokenForm() {
	if (!$("token-form").hidden)
		return;
	$("token-form").hidden = false;
	$("token").focus();
}

/* An action from the page: confirmed, sent with the token, then the view
 * is read again. what is {mids: [...]} | {domain: d} | {all: true}. */
async function act(verb, what, label) {
	if (!confirm(`${verb[0].toUpperCase() + verb.slice(1)} ${label}?`))
		return;
	try {
		const r = await api("queue/" + verb, {
			method: "POST",
			headers: { "Content-Type": "application/json" },
			body: JSON.stringify(what),
		});
		const n = r.changed !== undefined ? r.changed : r.deleted;
		sl.announce(`${verb}: ${n} ${r.deleted !== undefined ? "messages" : "recipients"} changed`);
		ok();
		await refresh(view.name === "dest");
	} catch (e) {
		fail(e);
	}
}

function actions(node, what, label, verbs) {
	sl.fill(node, verbs.map(v => sl.el("button", {
		type: "button", class: v === "delete" || v === "bounce" ? "danger" : null,
		onclick: () => act(v, what, label),
	}, v[0].toUpperCase() + v.slice(1))));
}

/* ---- overview ---- */

function tile(label, value) {
	return sl.el("div", { class: "tile" }, sl.el("div", { class: "v" }, value),
		sl.el("div", { class: "l" }, label));
}

function spark(label, series) {
	const max = Math.max(1, ...series), w = 120, h = 30;
	const pts = series.map((v, i) => `${(i * w / (series.length - 1)).toFixed(1)},` +
		`${(h - 1 - v * (h - 2) / max).toFixed(1)}`).join(" ");
	const NS = "http://www.w3.org/2000/svg";
	const svg = document.createElementNS(NS, "svg");
	svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
	svg.setAttribute("preserveAspectRatio", "none");
	svg.setAttribute("role", "img");
	const total = series.reduce((a, b) => a + b, 0);
	svg.setAttribute("aria-label", `${label}: ${total} in the last hour, at most ${max} a minute`);
	const line = document.createElementNS(NS, "polyline");
	line.setAttribute("points", pts);
	svg.append(line);
	const last = series.length > 1 ? series[series.length - 2] : 0;
	return sl.el("div", { class: "spark" },
		sl.el("div", {}, label + " ", sl.el("span", { class: "now" }, last), " a minute"),
		svg);
}

function renderOverview(d) {
	$("host").textContent = d.hostname || "";
	$("node-state").textContent = d.draining ? "draining: not accepting mail" :
		d.stopping ? "stopping" : "";
	const q = d.queue, c = d.connections, pm = d.rates.per_minute;
	sl.fill($("tiles"), [
		tile("messages queued", q.messages),
		tile("recipients queued", q.recipients),
		tile("destinations", q.destinations),
		tile("connections out", c.out),
		tile("connections in", c.in),
		tile("received a minute", pm.received),
		tile("delivered a minute", pm.delivered),
		tile("deferred a minute", pm.deferred),
		tile("bounced a minute", pm.bounced),
	]);
	sl.fill($("sparks"), ["received", "delivered", "deferred", "bounced"]
		.map(k => spark(k[0].toUpperCase() + k.slice(1), d.rates[k])));
}

function stateTag(d) {
	const cls = { active: "ok", idle: "ok", throttled: "warn", waiting: "warn",
		suspended: "bad", held: "bad" }[d.state] || "";
	let text = d.state;
	if (d.paused_until)
		text += " until " + new Date(d.paused_until * 1000).toLocaleTimeString();
	return sl.el("span", { class: "tag " + cls }, text);
}

function destRow(d, now) {
	return sl.el("tr", {},
		sl.el("td", { "data-label": "Destination" },
			sl.el("a", { href: "#/d/" + encodeURIComponent(d.name) }, d.name)),
		sl.el("td", { "data-label": "Queued", class: "num" }, d.queued),
		sl.el("td", { "data-label": "Oldest" }, d.oldest ? sl.age(now - d.oldest) : ""),
		sl.el("td", { "data-label": "Connections", class: "num" },
			`${d.connections} of ${d.limit}`),
		sl.el("td", { "data-label": "State" }, stateTag(d),
			d.waiting ? sl.el("div", { class: "muted" }, d.waiting) : null),
		sl.el("td", { "data-label": "Last reply" }, d.last_reply || ""));
}

function renderSortHeaders() {
	for (const th of $("dests").tHead.rows[0].cells) {
		const key = th.dataset.sort;
		if (!key)
			continue;
		if (!th.firstElementChild) {
			const b = sl.el("button", { type: "button", class: "sort" }, th.textContent);
			b.addEventListener("click", () => {
				view.order = view.sort === key && view.order === "desc" ? "asc" : "desc";
				if (view.sort !== key)
					view.order = key === "name" || key === "state" ? "asc" : "desc";
				view.sort = key;
				view.offset = 0;
				refresh();
			});
			sl.fill(th, b);
		}
		th.setAttribute("aria-sort", view.sort === key ?
			(view.order === "asc" ? "ascending" : "descending") : "none");
	}
}

async function loadOverview() {
	const d = await api("dashboard");
	renderOverview(d);
	const p = new URLSearchParams({ sort: view.sort, order: view.order,
		limit: PAGE, offset: view.offset });
	if (view.q)
		p.set("q", view.q);
	if (view.state)
		p.set("state", view.state);
	const r = await api("destinations?" + p);
	renderSortHeaders();
	sl.fill($("dests").tBodies[0], r.destinations.map(x => destRow(x, r.now)));
	$("dests-empty").hidden = r.destinations.length > 0;
	const last = view.offset + r.destinations.length;
	$("dests-page").textContent = r.count ?
		`${view.offset + 1}–${last} of ${r.count}` + (r.count !== r.total ?
			` (${r.total} in all)` : "") : "";
	$("dests-prev").disabled = view.offset === 0;
	$("dests-next").disabled = last >= r.count;
}

/* ---- one destination ---- */

/* Its facts and replies; with first (the view was opened, paged or acted
 * on) also a page of its messages: the live loop does not page. */
async function loadDest(first) {
	let path = "destinations/" + encodeURIComponent(view.dest);
	if (first) {
		const p = new URLSearchParams({ messages: PAGE });
		if (view.cursor)
			p.set("after", view.cursor);
		path += "?" + p;
	}
	const r = await api(path);
	const d = r.destination, now = r.now;
	$("d-title").textContent = d.name;
	sl.fill($("d-facts"), [
		["Queued", `${d.queued} messages, ${d.ready} due now`],
		["Oldest", d.oldest ? sl.age(now - d.oldest) + " old" : "—"],
		["Connections", `${d.connections} open, at most ${d.limit}`],
		["State", stateTag(d)],
		["Traffic shaping site", d.site],
		["Waiting because", d.waiting],
		["Last reply", d.last_reply],
	].filter(([, v]) => v !== null && v !== undefined && v !== "")
		.flatMap(([k, v]) => [sl.el("dt", {}, k), sl.el("dd", {}, v)]));
	if (first)
		actions($("d-actions"), { domain: d.name }, "every message to " + d.name,
			["flush", "hold", "release", "bounce", "delete"]);
	sl.fill($("d-replies").tBodies[0], d.replies.map(x => sl.el("tr", {},
		sl.el("td", { "data-label": "When" }, sl.time(x.time)),
		sl.el("td", { "data-label": "Reply" }, x.reply,
			x.host ? sl.el("div", { class: "muted" }, "from " + x.host) : null),
		sl.el("td", { "data-label": "Times", class: "num" }, x.count))));
	if (first)
		renderDestMsgs(d, r);
}

function renderDestMsgs(d, r) {
	sl.fill($("d-msgs").tBodies[0], r.messages.map(m => {
		const here = m.recipients.filter(x => x.destination === d.name);
		return sl.el("tr", {},
			sl.el("td", { "data-label": "Message" },
				sl.el("a", { href: "#/m/" + m.mid }, m.mid)),
			sl.el("td", { "data-label": "Arrived" }, sl.time(m.arrival)),
			sl.el("td", { "data-label": "Sender" }, m.sender || "<>"),
			sl.el("td", { "data-label": "Recipients here" }, here.map(x =>
				sl.el("div", {}, `${x.address} (${x.state}, ${x.attempts} attempts)`))),
			sl.el("td", { "data-label": "Size", class: "num" }, sl.bytes(m.size)));
	}));
	$("d-msgs-empty").hidden = r.messages.length > 0;
	view.nextCursor = r.next_after;
	$("d-msgs-next").disabled = !r.next_after;
	$("d-msgs-first").disabled = !view.cursor;
}

/* ---- one message ---- */

async function loadMsg(first) {
	const m = await api("queue/" + encodeURIComponent(view.mid) + "?headers=1");
	$("m-title").textContent = "Message " + m.mid;
	sl.fill($("m-facts"), [
		["Sender", m.sender || "<>"], ["Arrived", sl.time(m.arrival)],
		["Size", sl.bytes(m.size)], ["A bounce we made", m.bounce ? "yes" : "no"],
	].flatMap(([k, v]) => [sl.el("dt", {}, k), sl.el("dd", {}, v)]));
	if (first)
		actions($("m-actions"), { mids: [m.mid] }, "message " + m.mid,
			["flush", "hold", "release", "bounce", "delete"]);
	sl.fill($("m-rcpts").tBodies[0], m.recipients.map(r => sl.el("tr", {},
		sl.el("td", { "data-label": "Recipient" }, r.address),
		sl.el("td", { "data-label": "State" }, r.state),
		sl.el("td", { "data-label": "Attempts", class: "num" }, r.attempts),
		sl.el("td", { "data-label": "Next try" }, r.next_retry ? sl.time(r.next_retry) : ""),
		sl.el("td", { "data-label": "Last reply" }, r.last_reply || ""),
		sl.el("td", { "data-label": "Destination" }, r.destination ?
			sl.el("a", { href: "#/d/" + encodeURIComponent(r.destination) }, r.destination) : ""))));
	sl.fill($("m-headers").tBodies[0], (m.headers || []).map(([k, v]) => sl.el("tr", {},
		sl.el("th", { scope: "row", "data-label": "Field" }, k),
		sl.el("td", { "data-label": "Value" }, v))));
}

async function showBody() {
	try {
		const m = await api("queue/" + encodeURIComponent(view.mid) + "?body=1");
		$("m-body").textContent = m.body;
		$("m-body").hidden = false;
		$("m-body-button").hidden = true;
	} catch (e) {
		fail(e);
	}
}

/* ---- routing and the live loop ---- */

async function refresh(first) {
	try {
		if (view.name === "overview")
			await loadOverview();
		else if (view.name === "dest")
			await loadDest(first);
		else
			await loadMsg(first);
		ok();
	} catch (e) {
		if (e.status === 404 && view.name === "msg")
			e.message = "This message is no longer queued (delivered, bounced or deleted).";
		fail(e);
	}
}

function route() {
	const h = location.hash || "#/";
	let m;
	if ((m = h.match(/^#\/d\/(.+)$/))) {
		view.name = "dest";
		view.dest = decodeURIComponent(m[1]);
		view.cursor = null;
	} else if ((m = h.match(/^#\/m\/([0-9A-Fa-f]{16})$/))) {
		view.name = "msg";
		view.mid = m[1].toUpperCase();
		$("m-body").hidden = true;
		$("m-body-button").hidden = false;
	} else {
		view.name = "overview";
	}
	$("view-overview").hidden = view.name !== "overview";
	$("view-dest").hidden = view.name !== "dest";
	$("view-msg").hidden = view.name !== "msg";
	refresh(true);
}

document.addEventListener("DOMContentLoaded", () => {
	$("token-button").addEventListener("click", () => {
		$("token-form").hidden = true;
		showTokenForm();
	});
	$("token-cancel").addEventListener("click", () => { $("token-form").hidden = true; });
	$("token-forget").addEventListener("click", () => {
		sessionStorage.removeItem("sluice-token");
		$("token").value = "";
		$("token-form").hidden = true;
		sl.announce("Token forgotten");
		refresh();
	});
	$("token-form").addEventListener("submit", e => {
		e.preventDefault();
		sessionStorage.setItem("sluice-token", $("token").value.trim());
		$("token").value = "";
		$("token-form").hidden = true;
		sl.announce("Token set");
		refresh(true);
	});
	$("dest-filter").addEventListener("submit", e => {
		e.preventDefault();
		view.q = $("dest-q").value.trim();
		view.state = $("dest-state").value;
		view.offset = 0;
		refresh();
	});
	$("dests-prev").addEventListener("click", () => {
		view.offset = Math.max(0, view.offset - PAGE);
		refresh();
	});
	$("dests-next").addEventListener("click", () => {
		view.offset += PAGE;
		refresh();
	});
	$("d-msgs-next").addEventListener("click", () => {
		view.cursor = view.nextCursor;
		refresh(true);
	});
	$("d-msgs-first").addEventListener("click", () => {
		view.cursor = null;
		refresh(true);
	});
	$("flush-all").addEventListener("click", () =>
		act("flush", { all: true }, "every deferred recipient in the queue"));
	$("m-body-button").addEventListener("click", showBody);
	window.addEventListener("hashchange", route);
	route();
	sl.every(2000, () => refresh());
});
