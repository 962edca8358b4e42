/* base.js: helpers the sink's inbox and sluiced's dashboard share. Values
 * from mail reach the page only as text nodes (el(), textContent): never
 * as markup. */
"use strict";

const sl = {};

/* A new element: el("a", {href: "#x", class: "c"}, "text", child...). */
sl.el = function (tag, attrs, ...kids) {
	const e = document.createElement(tag);
	for (const [k, v] of Object.entries(attrs || {})) {
		if (v === null || v === undefined || v === false)
			continue;
		if (k.startsWith("on"))
			e.addEventListener(k.slice(2), v);
		else
			e.setAttribute(k, v === true ? "" : String(v));
	}
	for (const kid of kids.flat()) {
		if (kid === null || kid === undefined)
			continue;
		e.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
	}
	return e;
};

/* Replace the children of node with kids. */
sl.fill = function (node, ...kids) {
	node.replaceChildren(...kids.flat().filter(k => k !== null && k !== undefined)
		.map(k => k instanceof Node ? k : document.createTextNode(String(k))));
};

sl.bytes = function (n) {
	if (n === null || n === undefined)
		return "";
	const u = ["B", "KB", "MB", "GB"];
	let i = 0;
	while (n >= 1024 && i < u.length - 1) {
		n /= 1024;
		i++;
	}
	return (i ? n.toFixed(1) : String(n)) + " " + u[i];
};

/* Unix seconds as local date and time. */
sl.time = function (t) {
	return t ? new Date(t * 1000).toLocaleString() : "";
};

/* "3 min" for a number of seconds. */
sl.age = function (s) {
	if (s === null || s === undefined || s < 0)
		return "";
	if (s < 60) return Math.round(s) + " s";
	if (s < 3600) return Math.round(s / 60) + " min";
	if (s < 86400) return (s / 3600).toFixed(1) + " h";
	return (s / 86400).toFixed(1) + " d";
};

/* Say text to screen readers through the page's live region. */
sl.announce = function (text) {
	const s = document.getElementById("status");
	if (s)
		s.textContent = text;
};

/* fetch() JSON; throws an Error with the server's {"error"} text. */
sl.json = async function (url, opts) {
	const r = await fetch(url, Object.assign({ cache: "no-store" }, opts || {}));
	let body = null;
	try {
		body = await r.json();
	} catch (e) {
		body = null;
	}
	if (!r.ok) {
		const err = new Error((body && body.error) || (r.status + " " + r.statusText));
		err.status = r.status;
		throw err;
	}
	return body;
};

/* Tabs (WAI-ARIA): click or arrow keys select; each tab's panel is
 * aria-controls. onshow(tab) runs when one is selected. */
sl.tabs = function (list, onshow) {
	const tabs = () => Array.from(list.querySelectorAll('[role="tab"]'))
		.filter(t => !t.hidden);
	const select = (tab, focus) => {
		for (const t of tabs()) {
			const on = t === tab;
			t.setAttribute("aria-selected", on ? "true" : "false");
			t.tabIndex = on ? 0 : -1;
			document.getElementById(t.getAttribute("aria-controls")).hidden = !on;
		}
		if (focus)
			tab.focus();
		if (onshow)
			onshow(tab);
	};
	list.addEventListener("click", e => {
		const t = e.target.closest('[role="tab"]');
		if (t)
			select(t, false);
	});
	list.addEventListener("keydown", e => {
		const all = tabs(), i = all.indexOf(document.activeElement);
		let j = -1;
		if (e.key === "ArrowRight") j = (i + 1) % all.length;
		else if (e.key === "ArrowLeft") j = (i - 1 + all.length) % all.length;
		else if (e.key === "Home") j = 0;
		else if (e.key === "End") j = all.length - 1;
		if (j >= 0 && i >= 0) {
			e.preventDefault();
			select(all[j], true);
		}
	});
	return select;
};

/* Run fn every ms while the page is visible (and once when it shows). */
sl.every = function (ms, fn) {
	let timer = null;
	const tick = async () => {
		timer = null;
		try {
			await fn();
		} finally {
			if (document.visibilityState === "visible" && timer === null)
				timer = setTimeout(tick, ms);
		}
	};
	document.addEventListener("visibilitychange", () => {
		if (document.visibilityState === "visible" && timer === null)
			tick();
	});
	timer = setTimeout(tick, ms);
};
