// grsai-relay dashboard: live updates over the relay's event stream (script-src 'self': no
// inline script anywhere). Elements are built with DOM calls and text set as textContent,
// never as HTML.
"use strict";

function setStatus(cell, view) {
  const badge = cell.querySelector(".status");
  if (badge) {
    badge.textContent = view.status;
    badge.className = "status status-" + view.status;
  }
  let progress = cell.querySelector(".progress");
  if (view.status === "running" && !view.settled) {
    if (!progress) {
      progress = document.createElement("span");
      progress.className = "progress";
      cell.append(" ", progress);
    }
    progress.textContent = view.progress + "%";
  } else if (progress) {
    progress.remove();
  }
}

function updateRow(row, view) {
  setStatus(row.children[1], view);
  const thumbCell = row.querySelector("td.thumb");
  if (view.thumb && thumbCell && !thumbCell.querySelector("img")) {
    const link = document.createElement("a");
    link.href = "/dashboard/tasks/" + encodeURIComponent(view.id);
    const img = document.createElement("img");
    img.src = view.thumb;
    img.alt = "result of " + view.id;
    link.append(img);
    thumbCell.append(link);
  }
}

function follow(element) {
  const source = new EventSource(element.dataset.live);
  // the tasks still to settle: once none is left the page closes the stream itself
  const open = new Set(new URL(element.dataset.live, window.location.href).searchParams.get("ids").split(","));
  source.addEventListener("task", (message) => {
    const view = JSON.parse(message.data);
    if (view.settled) open.delete(view.id);
    if (open.size === 0) source.close();
    if (element.dataset.reload) {
      const badge = element.querySelector("[data-task-status]");
      if (badge) setStatus(badge.parentElement, view);
      if (view.settled) {
        source.close();
        window.location.reload();
      }
      return;
    }
    for (const row of element.querySelectorAll("tr[data-task]")) {
      if (row.dataset.task === view.id) updateRow(row, view);
    }
  });
  // a 204 (everything settled) or an error page closes the stream; the browser retries a
  // dropped one by itself
}

document.addEventListener("DOMContentLoaded", () => {
  for (const element of document.querySelectorAll("[data-live]")) follow(element);
});
