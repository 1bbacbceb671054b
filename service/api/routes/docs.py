"""The API's own description: GET /openapi.json, and GET /docs, a page that renders it.

The page is self-contained (no CDN, no external script or stylesheet, so it works offline); its
inline script builds the page with `textContent` only, so nothing in the document becomes HTML,
and a Content-Security-Policy with the script's and style's hashes forbids anything else.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from service.api.context import services
from service.api.openapi import document_for

_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#222}
h2{margin-top:2rem;border-bottom:1px solid #ccc}
details{border:1px solid #ddd;border-radius:4px;margin:.4rem 0;padding:.3rem .6rem}
summary{cursor:pointer}
.m{display:inline-block;min-width:4rem;font:bold 13px monospace;text-transform:uppercase}
.get{color:#1565c0}.post{color:#2e7d32}
code,pre{font:13px monospace;background:#f5f5f5}
pre{padding:.5rem;overflow:auto;max-height:24rem}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left}
"""

_SCRIPT = """
"use strict";
const el = (tag, text, cls) => {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
};
const deref = (doc, value) => {
  while (value && value.$ref) {
    value = value.$ref.slice(2).split("/").reduce((at, key) => at && at[key], doc);
  }
  return value || {};
};
const table = (head, rows) => {
  const t = el("table"), top = el("tr");
  head.forEach((h) => top.append(el("th", h)));
  t.append(top);
  rows.forEach((cells) => {
    const row = el("tr");
    cells.forEach((c) => row.append(el("td", c)));
    t.append(row);
  });
  return t;
};
const render = (doc) => {
  const main = document.getElementById("main");
  main.textContent = "";
  document.title = doc.info.title + " " + doc.info.version;
  main.append(el("h1", doc.info.title + " " + doc.info.version));
  main.append(el("p", doc.info.description || ""));
  const byTag = new Map();
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) {
      const tag = (op.tags || ["other"])[0];
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push([method, path, op]);
    }
  }
  for (const [tag, ops] of byTag) {
    main.append(el("h2", tag));
    for (const [method, path, op] of ops) {
      const box = el("details"), head = el("summary");
      head.append(el("span", method, "m " + method), el("code", path), " " + (op.summary || ""));
      box.append(head);
      if (op.description) box.append(el("p", op.description));
      const schemes = (op.security || doc.security || []).map((s) => Object.keys(s).join(" + "));
      box.append(el("p", "Authentication: " + (schemes.map((s) => s || "none").join(" or ")
        || "none") + "."));
      const params = (op.parameters || []).map((p) => deref(doc, p));
      if (params.length) {
        box.append(el("h4", "Parameters"));
        const rows = params.map((p) => [p.name, p.in, p.required ? "yes" : "no",
          JSON.stringify(p.schema || {}), p.description || ""]);
        box.append(table(["name", "in", "required", "schema", "description"], rows));
      }
      if (op.requestBody) {
        box.append(el("h4", "Request body"));
        for (const [type, media] of Object.entries(op.requestBody.content || {})) {
          box.append(el("p", type));
          box.append(el("pre", JSON.stringify(deref(doc, media.schema), null, 2)));
        }
      }
      box.append(el("h4", "Responses"));
      const named = ([type, media]) => type + (media.schema && media.schema.$ref
        ? " (" + media.schema.$ref.split("/").pop() + ")" : "");
      const rows = Object.entries(op.responses).map(([code, r]) => [code,
        Object.entries(r.content || {}).map(named).join(", ") || "(no body)",
        Object.keys(r.headers || {}).join(", "), r.description || ""]);
      box.append(table(["status", "content", "headers", "description"], rows));
      main.append(box);
    }
  }
  main.append(el("h2", "Schemas"));
  for (const [name, schema] of Object.entries(doc.components.schemas)) {
    const box = el("details");
    box.append(el("summary", name), el("pre", JSON.stringify(schema, null, 2)));
    main.append(box);
  }
};
fetch("openapi.json").then((r) => r.json()).then(render).catch((e) => {
  document.getElementById("main").textContent = "Could not load openapi.json: " + e;
});
"""


def _csp_hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>grsai-relay API</title><style>{_STYLE}</style></head>
<body><main id="main"><p>Loading <a href="openapi.json">openapi.json</a>...</p></main>
<script>{_SCRIPT}</script></body></html>
"""
PAGE_HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'none'; script-src {_csp_hash(_SCRIPT)}; style-src {_csp_hash(_STYLE)}; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


@functools.cache
def _rendered(public_base_url: str | None) -> bytes:
    """The document as JSON bytes; it depends on nothing but the public base URL."""
    return json.dumps(document_for(public_base_url), separators=(",", ":")).encode()


async def openapi_json(request: Request) -> Response:
    """GET /openapi.json: the OpenAPI 3.1 document of this relay."""
    body = _rendered(services(request).public.base or None)
    return Response(body, media_type="application/json")


async def docs_page(request: Request) -> HTMLResponse:
    """GET /docs: a small page that fetches /openapi.json and lists every endpoint."""
    return HTMLResponse(PAGE, headers=PAGE_HEADERS)


routes = [
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/docs", docs_page, methods=["GET"]),
]
