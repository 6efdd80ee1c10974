// hangar's own script for its web UI: times in the viewer's zone, copy buttons, the
// environment editor's line numbers, and logs that follow their end. Everything it
// touches is already on the page as text; it inserts no HTML.
"use strict";
(function () {
  // The words of hangar_spec::format_ago, which the server writes first.
  function ago(ms) {
    var s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return "just now";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    if (s < 172800) return Math.floor(s / 3600) + " h ago";
    return Math.floor(s / 86400) + " d ago";
  }

  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (t) {
      var d = new Date(t.getAttribute("datetime"));
      if (isNaN(d)) return;
      if (t.classList.contains("age")) {
        t.textContent = ago(Date.now() - d.getTime());
        t.title = d.toLocaleString();
      } else {
        t.textContent = d.toLocaleString();
        t.title = t.getAttribute("datetime");
      }
    });
  }

  function copy(button) {
    var source = document.querySelector(button.getAttribute("data-copy"));
    if (!source) return;
    var text = source.textContent;
    var done = function () {
      var was = button.textContent;
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = was; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done);
    } else {
      var range = document.createRange();
      range.selectNodeContents(source);
      var sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      try { document.execCommand("copy"); done(); } catch (e) { /* the text stays selected */ }
    }
  }

  function gotoLine(textarea, line) {
    var lines = textarea.value.split("\n");
    var start = 0;
    for (var i = 0; i < line - 1 && i < lines.length; i++) start += lines[i].length + 1;
    var end = start + (lines[line - 1] || "").length;
    textarea.focus();
    textarea.setSelectionRange(start, end);
    var lh = parseFloat(getComputedStyle(textarea).lineHeight) || 18;
    textarea.scrollTop = Math.max(0, (line - 3) * lh);
  }

  function editors(root) {
    root.querySelectorAll(".editor").forEach(function (ed) {
      var ta = ed.querySelector("textarea");
      var gutter = ed.querySelector(".gutter");
      if (!ta || !gutter || ta.dataset.wired) return;
      ta.dataset.wired = "1";
      ta.addEventListener("scroll", function () { gutter.scrollTop = ta.scrollTop; });
      ta.addEventListener("input", function () {
        var n = ta.value.split("\n").length;
        var have = gutter.children.length;
        for (var i = have + 1; i <= n; i++) {
          var s = document.createElement("span");
          s.className = "ln";
          s.textContent = i + "\n";
          gutter.appendChild(s);
        }
        while (gutter.children.length > n) gutter.removeChild(gutter.lastChild);
      });
    });
  }

  document.addEventListener("click", function (e) {
    var b = e.target.closest("button[data-copy]");
    if (b) { copy(b); return; }
    var a = e.target.closest("a[data-goto-line]");
    if (a) {
      var ta = document.querySelector(".editor textarea");
      if (ta) { e.preventDefault(); gotoLine(ta, parseInt(a.getAttribute("data-goto-line"), 10)); }
    }
  });

  // A log box that was scrolled to its end stays at its end as lines arrive.
  document.addEventListener("htmx:sseBeforeMessage", function (e) {
    var box = e.target;
    box.dataset.atEnd = box.scrollHeight - box.scrollTop - box.clientHeight < 24 ? "1" : "";
  });
  document.addEventListener("htmx:sseMessage", function (e) {
    var box = e.target;
    if (box.dataset.atEnd) box.scrollTop = box.scrollHeight;
  });

  function wire(root) { localTimes(root); editors(root); }
  document.addEventListener("DOMContentLoaded", function () { wire(document); });
  document.addEventListener("htmx:load", function (e) { wire(e.target); });
  setInterval(function () { localTimes(document); }, 30000);
})();
