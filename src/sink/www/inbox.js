/* inbox.js: the sink's inbox. Reads /api/messages (newest first, a page
 * at a time, the search in ?q=), one message from /api/messages/ID/view;
 * the HTML part is framed from /api/messages/ID/html in a sandboxed
 * iframe (no scripts, no origin) whose CSP lets nothing remote load.
 * Polls /api/messages?limit=0 every 2 s and reloads when "changes" moved.
 * Every value from mail is written as text (sl.el, textContent). */
"use strict";

const PAGE = 50;
const $ = id => document.getElementById(id);
const state = { q: "", offset: 0, changes: -1, id: null, raw: false };

function fail(err) {
	const e = $("error");
	e.textContent = err.message || String(err);
	e.hidden = false;
}

function clearFail() {
	$("error").hidden = true;
}

function msgUrl(id, sub) {
	return "api/messages/" + encodeURIComponent(id) + (sub ? "/" + sub : "");
}

async function loadServer() {
	const s = await sl.json("api/server");
	const bits = ["SMTP port " + s.smtp_port];
	if (s.pop3_port !== null)
		bits.push("POP3 port " + s.pop3_port);
	if (s.auth_users && s.auth_users.length)
		bits.push("AUTH users: " + s.auth_users.join(", ") +
			(s.auth_required ? " (required)" : ""));
	$("server").textContent = bits.join(" · ");
	sl.fill($("rules"), s.rules.length ? s.rules.map(r => sl.el("li", {}, r)) :
		sl.el("li", {}, "None: every message is accepted."));
}

function row(m) {
	const to = (m.rcpt_to || []).join(", ");
	return sl.el("tr", {},
		sl.el("td", { "data-label": "From" }, m.from || m.mail_from || "<>"),
		sl.el("td", { "data-label": "To" }, to),
		sl.el("td", { "data-label": "Subject" },
			sl.el("a", { href: "#/m/" + encodeURIComponent(m.id) },
				m.subject || "(no subject)")),
		sl.el("td", { "data-label": "Received" }, sl.time(m.time)),
		sl.el("td", { "data-label": "Size", class: "num" }, sl.bytes(m.size)));
}

async function loadList() {
	const p = new URLSearchParams({ order: "newest", limit: PAGE, offset: state.offset });
	if (state.q)
		p.set("q", state.q);
	const r = await sl.json("api/messages?" + p);
	state.changes = r.changes;
	sl.fill($("messages").tBodies[0], r.messages.map(row));
	$("empty").hidden = r.messages.length > 0;
	$("count").textContent = state.q ? `(${r.count} of ${r.total} match)` : `(${r.total})`;
	const last = Math.min(state.offset + r.messages.length, r.count);
	$("page").textContent = r.count ? `${state.offset + 1}–${last} of ${r.count}` : "";
	$("newer").disabled = state.offset === 0;
	$("older").disabled = last >= r.count;
	clearFail();
}

function showTab(tab) {
	if (tab.id === "tab-raw" && !state.raw && state.id) {
		state.raw = true;
		fetch(msgUrl(state.id, "raw"), { cache: "no-store" })
			.then(r => r.ok ? r.text() : Promise.reject(new Error(r.statusText)))
			.then(t => { $("raw").textContent = t; })
			.catch(fail);
	}
}
let selectTab = null;

async function loadMessage(id) {
	const m = await sl.json(msgUrl(id, "view"));
	state.id = id;
	state.raw = false;
	$("msg-gone").hidden = true;
	$("msg-subject").textContent = m.subject || "(no subject)";
	const kv = [
		["From", m.from], ["To", m.to], ["Cc", m.cc],
		["Envelope sender", m.mail_from || "<>"],
		["Envelope recipients", (m.rcpt_to || []).join(", ")],
		["Received", m.date], ["Client", m.client + " (HELO " + m.helo + ")"],
		["TLS", m.tls ? "yes" : "no"],
		["Authenticated as", m.auth_user],
		["Size", sl.bytes(m.size)],
	].filter(([, v]) => v);
	sl.fill($("envelope"), kv.flatMap(([k, v]) => [sl.el("dt", {}, k), sl.el("dd", {}, v)]));
	$("raw-link").href = msgUrl(id, "raw");
	$("text").textContent = m.text === null ? "(no text part)" : m.text;
	$("raw").textContent = "";
	sl.fill($("headers").tBodies[0], m.headers.map(([k, v]) =>
		sl.el("tr", {}, sl.el("th", { scope: "row", "data-label": "Field" }, k),
			sl.el("td", { "data-label": "Value" }, v))));
	sl.fill($("attachments"), m.attachments.map(a =>
		sl.el("li", {}, sl.el("a", { href: msgUrl(id, "part/" + a.part), download: a.filename || "" },
			a.filename || "part " + a.part), " ", sl.el("span", { class: "muted" },
			a.type + ", " + sl.bytes(a.size)))));
	$("tab-html").hidden = !m.html;
	$("html-frame").src = m.html ? msgUrl(id, "html") : "about:blank";
	selectTab(m.html ? $("tab-html") : $("tab-text"), false);
	clearFail();
}

async function route() {
	const h = location.hash || "#/";
	const mm = h.match(/^#\/m\/(.+)$/);
	$("list-view").hidden = !!mm;
	$("message-view").hidden = !mm;
	try {
		if (mm) {
			await loadMessage(decodeURIComponent(mm[1]));
			$("msg-subject").focus();
		} else {
			state.id = null;
			$("html-frame").src = "about:blank";
			await loadList();
		}
	} catch (e) {
		fail(e);
	}
}

async function poll() {
	const r = await sl.json("api/messages?limit=0");
	if (r.changes === state.changes)
		return;
	state.changes = r.changes;
	if (state.id) {
		try {
			await sl.json(msgUrl(state.id));
		} catch (e) {
			if (e.status === 404)
				$("msg-gone").hidden = false;
		}
	} else {
		await loadList();
		sl.announce("The inbox changed: " + $("count").textContent);
	}
}

document.addEventListener("DOMContentLoaded", () => {
	$("msg-subject").tabIndex = -1;
	selectTab = sl.tabs($("tabs"), showTab);
	$("search").addEventListener("submit", e => {
		e.preventDefault();
		state.q = $("q").value.trim();
		state.offset = 0;
		loadList().catch(fail);
	});
	$("clear").addEventListener("click", () => {
		$("q").value = "";
		state.q = "";
		state.offset = 0;
		loadList().catch(fail);
	});
	$("newer").addEventListener("click", () => {
		state.offset = Math.max(0, state.offset - PAGE);
		loadList().catch(fail);
	});
	$("older").addEventListener("click", () => {
		state.offset += PAGE;
		loadList().catch(fail);
	});
	$("delete-all").addEventListener("click", async () => {
		if (!confirm("Delete every captured message?"))
			return;
		try {
			const r = await sl.json("api/messages", { method: "DELETE" });
			sl.announce(r.deleted + " messages deleted");
			state.offset = 0;
			await loadList();
		} catch (e) {
			fail(e);
		}
	});
	$("delete-one").addEventListener("click", async () => {
		if (!state.id || !confirm("Delete this message?"))
			return;
		try {
			await sl.json(msgUrl(state.id), { method: "DELETE" });
			sl.announce("Message deleted");
			location.hash = "#/";
		} catch (e) {
			fail(e);
		}
	});
	window.addEventListener("hashchange", route);
	loadServer().catch(fail);
	route();
	sl.every(2000, () => poll().catch(() => {}));
});
