/* castway chat widget: every element with data-castway-chat="<channel>" becomes a chat.
 * Reconnects with exponential backoff and full jitter (so a restarted server is not hit by
 * every viewer at once); keeps its identity token in localStorage (see docs/chat.md). */
(function () {
  "use strict";
  var BASE_DELAY_MS = 500, MAX_DELAY_MS = 30000, MAX_SHOWN = 200, STABLE_MS = 10000;
  var store = {
    get: function (k) { try { return window.localStorage.getItem(k); } catch (e) { return null; } },
    set: function (k, v) { try { window.localStorage.setItem(k, v); } catch (e) { /* private mode */ } }
  };

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function Chat(root) {
    this.root = root;
    this.channel = root.getAttribute("data-castway-chat");
    this.nick = store.get("castway.chat.nick") ||
      ("guest-" + Math.floor(Math.random() * 1e4));
    this.token = store.get("castway.chat.token");
    this.messages = [];      // what is shown, oldest first: {id, nick, user, text, ts}
    this.errors = [];        // error frames received: {code, message}
    this.delays = [];        // reconnect delays chosen (ms), for the curious and for tests
    this.joins = 0;          // welcomes received
    this.connected = false;
    this.attempt = 0;
    this.ws = null;
    this.outbox = null;
    this.stopped = false;
    this.build();
    this.connect();
  }

  Chat.prototype.build = function () {
    var self = this;
    this.root.classList.add("castway-chat");
    this.list = el("ol", "castway-chat-list");
    this.status = el("p", "castway-chat-status", "connecting…");
    var form = el("form", "castway-chat-form");
    this.nickInput = el("input", "castway-chat-nick");
    this.nickInput.value = this.nick;
    this.nickInput.maxLength = 24;
    this.nickInput.title = "nickname";
    this.input = el("input", "castway-chat-input");
    this.input.maxLength = 100;
    this.input.placeholder = "Say something (100 characters)";
    var button = el("button", "castway-chat-send", "Send");
    button.type = "submit";
    form.appendChild(this.nickInput);
    form.appendChild(this.input);
    form.appendChild(button);
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var nick = self.nickInput.value.trim();
      if (nick && nick !== self.nick) { self.setNick(nick); }
      if (self.input.value.trim() && self.send(self.input.value)) { self.input.value = ""; }
    });
    this.root.appendChild(this.list);
    this.root.appendChild(this.status);
    this.root.appendChild(form);
  };

  Chat.prototype.url = function () {
    var proto = window.location.protocol === "https:" ? "wss:" : "ws:";
    var url = proto + "//" + window.location.host + "/chat/" +
      encodeURIComponent(this.channel) + "?nick=" + encodeURIComponent(this.nick);
    if (this.token) { url += "&token=" + encodeURIComponent(this.token); }
    return url;
  };

  Chat.prototype.connect = function () {
    var self = this;
    var ws = new WebSocket(this.url());
    var opened = 0;
    this.ws = ws;
    ws.onopen = function () { opened = Date.now(); };
    ws.onmessage = function (event) {
      var frame;
      try { frame = JSON.parse(event.data); } catch (e) { return; }
      self.onFrame(frame);
    };
    ws.onclose = function (event) {
      if (self.ws !== ws) { return; }
      self.connected = false;
      self.ws = null;
      if (self.stopped) { return; }
      if (event.code === 1008) {  // bad channel/nickname, too many tabs: retrying would not help
        self.setStatus("chat closed: " + (event.reason || "refused"));
        return;
      }
      if (opened && Date.now() - opened > STABLE_MS) { self.attempt = 0; }
      self.attempt += 1;
      // Full jitter: uniform in [0, min(cap, base * 2^attempt)].
      var cap = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * Math.pow(2, self.attempt));
      var delay = Math.random() * cap;
      self.delays.push(delay);
      self.setStatus("reconnecting in " + (delay / 1000).toFixed(1) + " s…");
      window.setTimeout(function () { if (!self.stopped) { self.connect(); } }, delay);
    };
  };

  Chat.prototype.setStatus = function (text) { this.status.textContent = text; };

  Chat.prototype.setNick = function (nick) {
    // The nickname is part of the join: reconnect at once under the new one.
    var old = this.ws;
    this.nick = nick;
    store.set("castway.chat.nick", nick);
    this.ws = null;
    this.connected = false;
    if (old) { old.close(1000); }
    this.connect();
  };

  Chat.prototype.send = function (text) {
    if (!this.ws || !this.connected) {
      this.outbox = text;  // one message waits for the (re)connection, the newest
      this.setStatus("sending once connected…");
      return true;
    }
    this.ws.send(JSON.stringify({type: "send", text: text,
                                 ref: String(Date.now()) + Math.random().toString(36).slice(2, 6)}));
    return true;
  };

  Chat.prototype.onFrame = function (frame) {
    var self = this;
    switch (frame.type) {
      case "welcome":
        this.connected = true;
        this.joins += 1;
        this.token = frame.token;
        store.set("castway.chat.token", frame.token);
        this.setStatus("chatting as " + frame.nick);
        if (this.outbox !== null) { var text = this.outbox; this.outbox = null; this.send(text); }
        break;
      case "history":
        this.messages = [];
        while (this.list.firstChild) { this.list.removeChild(this.list.firstChild); }
        frame.messages.forEach(function (m) { self.add(m); });
        break;
      case "message":
        this.add(frame);
        break;
      case "delete":
        this.remove(function (m) { return m.id === frame.id; });
        break;
      case "ban":
        this.remove(function (m) {
          return (frame.user && m.user === frame.user) ||
            (frame.nick && m.nick.toLowerCase() === String(frame.nick).toLowerCase());
        });
        break;
      case "error":
        this.errors.push({code: frame.code, message: frame.message});
        this.setStatus(frame.message);
        break;
      default:
        break;
    }
  };

  Chat.prototype.add = function (m) {
    this.messages.push(m);
    var item = el("li", "castway-chat-message");
    item.setAttribute("data-id", String(m.id));
    item.appendChild(el("span", "castway-chat-who", m.nick));
    item.appendChild(el("span", "castway-chat-text", m.text));
    item.title = new Date(m.ts).toLocaleTimeString();
    this.list.appendChild(item);
    while (this.messages.length > MAX_SHOWN) {
      this.messages.shift();
      this.list.removeChild(this.list.firstChild);
    }
    this.list.scrollTop = this.list.scrollHeight;
  };

  Chat.prototype.remove = function (match) {
    var keep = [];
    var self = this;
    this.messages.forEach(function (m) {
      if (match(m)) {
        var item = self.list.querySelector("[data-id='" + m.id + "']");
        if (item) { self.list.removeChild(item); }
      } else {
        keep.push(m);
      }
    });
    this.messages = keep;
  };

  Chat.prototype.stop = function () {
    this.stopped = true;
    if (this.ws) { this.ws.close(1000); }
  };

  function init() {
    window.castwayChat = window.castwayChat || [];
    var roots = document.querySelectorAll("[data-castway-chat]");
    for (var i = 0; i < roots.length; i++) {
      if (!roots[i].castwayChat) {
        roots[i].castwayChat = new Chat(roots[i]);
        window.castwayChat.push(roots[i].castwayChat);
      }
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
