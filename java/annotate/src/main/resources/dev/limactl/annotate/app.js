// limactl annotation page: keyboard shortcuts, the per-item timer and a draft (note and time) kept across reloads.
(function () {
  "use strict";
  function typing(el) {
    return el && (el.tagName === "TEXTAREA" || el.tagName === "INPUT" || el.tagName === "SELECT" || el.isContentEditable);
  }
  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey || typing(e.target)) return;
    var el = document.querySelector('[data-key="' + e.key.toLowerCase() + '"]');
    if (el) {
      e.preventDefault();
      el.click();
    }
  });
  var form = document.getElementById("answer-form");
  if (!form) return;
  var key = form.getAttribute("data-draft");
  var note = document.getElementById("note");
  var seconds = document.getElementById("seconds");
  var timer = document.getElementById("timer");
  var draft = {};
  try {
    draft = JSON.parse(window.localStorage.getItem(key) || "{}") || {};
  } catch (err) {
    draft = {};
  }
  if (typeof draft.note === "string" && draft.note !== "" && note.value === "") note.value = draft.note;
  var elapsed = Number(draft.seconds) > 0 ? Number(draft.seconds) : 0;
  var last = Date.now();
  function save() {
    try {
      window.localStorage.setItem(key, JSON.stringify({ note: note.value, seconds: elapsed }));
    } catch (err) {
      // storage full or disabled: the answer still works, only the draft is not kept
    }
  }
  function tick() {
    var now = Date.now();
    if (!document.hidden) elapsed += (now - last) / 1000;
    last = now;
    seconds.value = elapsed.toFixed(1);
    var s = Math.floor(elapsed);
    timer.textContent = Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
    save();
  }
  tick();
  window.setInterval(tick, 1000);
  note.addEventListener("input", save);
  form.addEventListener("submit", function () {
    tick();
    try {
      window.localStorage.removeItem(key);
    } catch (err) {
      // nothing kept, nothing to remove
    }
  });
})();
