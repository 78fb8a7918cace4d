"""``GET /coverage.html``: per symbol and day, stored / missing / exchange-outage minutes
as a heat map with totals. One self-contained page (inline CSS and JS, no external
asset, no CDN): the service serves it, the browser builds it from ``GET /coverage``,
so the picture and the JSON can never disagree."""

from __future__ import annotations

import orjson

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Quaint2 coverage</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; margin: 0 0 .3em; }
table { border-collapse: collapse; margin-top: 1em; }
th, td { border: 1px solid #ccc; padding: 4px 6px; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; font-weight: 600; }
td.cell { width: 3.2em; text-align: center; font-size: 12px; }
.legend span { display: inline-block; padding: 2px 8px; margin-right: .6em; border: 1px solid #ccc; }
#status { color: #a00; margin-top: .6em; }
</style></head>
<body>
<h1>Candle coverage (1-minute)</h1>
<div class="legend">
  <span style="background:#2e9d4f;color:#fff">complete</span>
  <span style="background:#9b9b9b;color:#fff">exchange outage</span>
  <span style="background:#d7301f;color:#fff">missing (darker: more)</span>
  each cell: the minutes missing; hover for all the numbers. Last <b id="days"></b> days, UTC.
</div>
<table id="heatmap"><thead></thead><tbody></tbody></table>
<div id="status"></div>
<script type="application/json" id="config">__CONFIG__</script>
<script>
"use strict";
const config = JSON.parse(document.getElementById("config").textContent);
document.getElementById("days").textContent = String(config.days);

function colour(d) {
  if (d.missing > 0) {
    const share = Math.min(1, d.missing / Math.max(1, d.expected));
    return "rgba(215,48,31," + (0.25 + 0.75 * share).toFixed(3) + ")";
  }
  return d.unrecoverable > 0 ? "#9b9b9b" : "#2e9d4f";
}

function td(text, attrs) {
  const el = document.createElement("td");
  el.textContent = text;
  Object.assign(el, attrs || {});
  return el;
}

async function load() {
  const results = await Promise.all(config.symbols.map(async (symbol) => {
    const resp = await fetch("coverage?symbol=" + encodeURIComponent(symbol) + "&days=" + config.days);
    if (!resp.ok) throw new Error(symbol + ": HTTP " + resp.status);
    return resp.json();
  }));
  const head = document.querySelector("#heatmap thead");
  const body = document.querySelector("#heatmap tbody");
  const hr = document.createElement("tr");
  const dates = results.length ? results[0].days.map((d) => d.date) : [];
  const labels = ["symbol", ...dates.map((d) => d.slice(5)), "stored", "missing", "outage", "complete"];
  for (const label of labels) {
    const th = document.createElement("th");
    th.textContent = label;
    hr.appendChild(th);
  }
  head.appendChild(hr);
  const grand = { stored: 0, missing: 0, unrecoverable: 0, expected: 0 };
  for (const r of results) {
    const tr = document.createElement("tr");
    tr.dataset.symbol = r.symbol;
    tr.appendChild(td(r.symbol, { className: "symbol" }));
    const sum = { stored: 0, missing: 0, unrecoverable: 0, expected: 0 };
    for (const d of r.days) {
      for (const k in sum) sum[k] += d[k];
      const cell = td(d.missing > 0 ? String(d.missing) : "", { className: "cell" });
      cell.style.background = colour(d);
      cell.dataset.date = d.date;
      cell.dataset.stored = d.stored;
      cell.dataset.missing = d.missing;
      cell.dataset.unrecoverable = d.unrecoverable;
      cell.title = r.symbol + " " + d.date + ": " + d.stored + " stored, " + d.missing + " missing, "
        + d.unrecoverable + " exchange outage, of " + d.expected;
      tr.appendChild(cell);
    }
    for (const k in grand) grand[k] += sum[k];
    tr.appendChild(td(String(sum.stored), { className: "stored" }));
    tr.appendChild(td(String(sum.missing), { className: "missing" }));
    tr.appendChild(td(String(sum.unrecoverable), { className: "unrecoverable" }));
    const pct = sum.expected ? (100 * sum.stored / sum.expected).toFixed(2) + "%" : "-";
    tr.appendChild(td(pct, { className: "complete" }));
    body.appendChild(tr);
  }
  const total = document.createElement("tr");
  total.id = "totals";
  total.appendChild(td("total"));
  for (let i = 0; i < dates.length; i++) total.appendChild(td(""));
  total.appendChild(td(String(grand.stored), { className: "stored" }));
  total.appendChild(td(String(grand.missing), { className: "missing" }));
  total.appendChild(td(String(grand.unrecoverable), { className: "unrecoverable" }));
  total.appendChild(td(grand.expected ? (100 * grand.stored / grand.expected).toFixed(2) + "%" : "-"));
  body.appendChild(total);
  document.body.dataset.loaded = "true";
}

load().catch((err) => {
  document.getElementById("status").textContent = "could not load /coverage: " + err.message;
  document.body.dataset.loaded = "error";
});
</script>
</body></html>
"""


def render_coverage_page(symbols: list[str], days: int) -> str:
    """The page for ``symbols`` over the last ``days`` days. The configuration is JSON
    inside a ``<script type="application/json">``; ``<`` is escaped so that no value can
    close the element."""
    config = orjson.dumps({"symbols": symbols, "days": days}).decode().replace("<", "\\u003c")
    return _PAGE.replace("__CONFIG__", config)
