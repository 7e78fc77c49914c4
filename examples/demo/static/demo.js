// The demo page: chat (nicknames, rooms, typing notices) and the live panel.
// Uses the official Socket.IO browser client, served by the demo server itself.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const defaultRoom = document.body.dataset.defaultRoom || "lobby";
  // Per tab (sessionStorage), so two tabs are two people.
  let nick = sessionStorage.getItem("nick") || "guest-" + Math.floor(100 + Math.random() * 900);
  let room = sessionStorage.getItem("room") || defaultRoom;
  const typers = new Map(); // nick -> timer
  const values = [];

  const socket = io(); // same origin, default path /socket.io/
  window.demoSocket = socket; // handy in the console (and for the browser tests)

  function setStatus(text, on) {
    const el = $("status");
    el.textContent = text;
    el.className = "status " + (on ? "on" : "off");
  }

  function addMessage(msg) {
    const li = document.createElement("li");
    const time = document.createElement("time");
    time.textContent = msg.time;
    li.appendChild(time);
    if (msg.nick === null || msg.nick === undefined) {
      li.className = "system";
      li.appendChild(document.createTextNode(" " + msg.text));
    } else {
      const who = document.createElement("b");
      who.textContent = " " + msg.nick + ": ";
      li.appendChild(who);
      li.appendChild(document.createTextNode(msg.text));
      if (msg.nick === nick) li.className = "mine";
    }
    const list = $("messages");
    list.appendChild(li);
    list.scrollTop = list.scrollHeight;
  }

  function showRoom(data) {
    room = data.room;
    sessionStorage.setItem("room", room);
    $("room-name").textContent = "#" + room;
    $("messages").replaceChildren();
    (data.history || []).forEach(addMessage);
    showMembers(data.members || []);
    typers.clear();
    showTypers();
    highlightRoom();
  }

  function showMembers(members) {
    $("members").replaceChildren(
      ...members.map((name) => {
        const li = document.createElement("li");
        li.textContent = name;
        return li;
      }),
    );
  }

  function highlightRoom() {
    for (const li of $("rooms").children) {
      li.classList.toggle("current", li.dataset.room === room);
    }
  }

  function showRooms(rooms) {
    $("rooms").replaceChildren(
      ...Object.entries(rooms).map(([name, count]) => {
        const li = document.createElement("li");
        li.dataset.room = name;
        const button = document.createElement("button");
        button.type = "button";
        button.textContent = "#" + name + " (" + count + ")";
        button.addEventListener("click", () => switchRoom(name));
        li.appendChild(button);
        return li;
      }),
    );
    highlightRoom();
  }

  function showTypers() {
    const names = [...typers.keys()];
    $("typing").textContent =
      names.length === 0 ? "" : names.join(", ") + (names.length === 1 ? " is" : " are") + " typing…";
  }

  function switchRoom(name) {
    socket.emit("switch", name, (data) => {
      if (data && data.ok) showRoom(data);
    });
  }

  // -- connection ----------------------------------------------------------------------------

  socket.on("connect", () => {
    setStatus("connected", true);
    $("transport").textContent = socket.io.engine.transport.name;
    socket.io.engine.once("upgrade", (t) => {
      $("transport").textContent = t.name;
    });
    socket.emit("hello", { nick, room }, (data) => {
      nick = data.nick;
      sessionStorage.setItem("nick", nick);
      $("nick").value = nick;
      showRoom(data);
      showRooms(data.rooms);
      document.body.dataset.ready = "1";
    });
  });
  socket.on("disconnect", (reason) => setStatus("disconnected (" + reason + ")", false));
  socket.on("connect_error", (err) => setStatus("cannot connect: " + err.message, false));

  // -- chat events ----------------------------------------------------------------------------

  socket.on("message", (msg) => {
    if (msg.room === room) addMessage(msg);
  });
  socket.on("members", (data) => {
    if (data.room === room) showMembers(data.members);
  });
  socket.on("rooms", showRooms);
  socket.on("typing", (data) => {
    clearTimeout(typers.get(data.nick));
    if (data.typing) {
      // Forget a typer who went quiet without sending (closed tab, lost focus...).
      typers.set(data.nick, setTimeout(() => { typers.delete(data.nick); showTypers(); }, 4000));
    } else {
      typers.delete(data.nick);
    }
    showTypers();
  });

  // -- live panel ------------------------------------------------------------------------------

  socket.on("tick", (data) => {
    $("live-value").textContent = data.value.toFixed(2);
    $("live-n").textContent = data.n;
    $("live-time").textContent = data.time;
    $("live-online").textContent = data.online;
    values.push(data.value);
    if (values.length > 60) values.shift();
    const step = 300 / 59;
    const points = values.map((v, i) => (i * step).toFixed(1) + "," + (80 - v * 0.8).toFixed(1));
    document.querySelector("#spark polyline").setAttribute("points", points.join(" "));
  });

  // -- forms ------------------------------------------------------------------------------------

  let typingSent = false;
  let typingTimer = null;
  $("text").addEventListener("input", () => {
    if (!typingSent) {
      socket.emit("typing", true);
      typingSent = true;
    }
    clearTimeout(typingTimer);
    typingTimer = setTimeout(() => {
      socket.emit("typing", false);
      typingSent = false;
    }, 1500);
  });

  $("say-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("text").value.trim();
    if (!text) return;
    clearTimeout(typingTimer);
    typingSent = false;
    socket.emit("say", text);
    $("text").value = "";
  });

  $("nick").addEventListener("change", () => {
    const wanted = $("nick").value.trim();
    if (!wanted || wanted === nick) return;
    socket.emit("rename", wanted, (data) => {
      if (data && data.ok) {
        nick = data.nick;
        sessionStorage.setItem("nick", nick);
      }
      $("nick").value = nick;
    });
  });

  $("room-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const name = $("room").value.trim();
    if (name) switchRoom(name);
    $("room").value = "";
  });
})();
