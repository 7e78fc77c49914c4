// The echo page: the browser's own WebSocket against a Flask-Sock style route.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const ws = new WebSocket(scheme + location.host + "/ws/echo");

  function log(direction, text) {
    const li = document.createElement("li");
    li.className = direction;
    li.textContent = (direction === "out" ? "→ " : "← ") + text;
    $("echo-log").appendChild(li);
  }

  ws.addEventListener("open", () => {
    $("status").textContent = "connected";
    $("status").className = "status on";
    document.body.dataset.ready = "1";
  });
  ws.addEventListener("close", (event) => {
    $("status").textContent = "closed (" + event.code + ")";
    $("status").className = "status off";
  });
  ws.addEventListener("message", (event) => log("in", event.data));

  $("echo-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("echo-text").value;
    if (!text || ws.readyState !== WebSocket.OPEN) return;
    ws.send(text);
    log("out", text);
    $("echo-text").value = "";
  });
})();
