/* Sorting, filtering and keyboard use of the gallery. Without script the page shows every image in run order. */
(function () {
  "use strict";
  var cards = Array.prototype.slice.call(document.querySelectorAll("article.card"));
  var galleries = Array.prototype.slice.call(document.querySelectorAll(".gallery"));
  var groups = Array.prototype.slice.call(document.querySelectorAll("section.group"));
  var bar = document.getElementById("toolbar");
  function num(card, key, missing) {
    var v = parseFloat(card.getAttribute("data-" + key));
    return isNaN(v) ? missing : v;
  }
  function value(id) {
    var el = document.getElementById(id);
    return el ? el.value : "";
  }
  var orders = {
    "order": function (a, b) { return num(a, "order", 0) - num(b, "order", 0); },
    "score-asc": function (a, b) { return num(a, "score", 2) - num(b, "score", 2); },
    "score-desc": function (a, b) { return num(b, "score", -1) - num(a, "score", -1); },
    "atypical": function (a, b) { return num(b, "atypicality", -1) - num(a, "atypicality", -1); },
    "class": function (a, b) { return num(a, "class", 1e12) - num(b, "class", 1e12); }
  };
  function apply() {
    var cls = value("f-class"), grp = value("f-group"), flag = value("f-flag");
    var most = parseFloat(value("f-score"));
    most = isNaN(most) ? 1 : most / 100;
    var shown = 0;
    cards.forEach(function (c) {
      var flags = " " + (c.getAttribute("data-flags") || "") + " ";
      var ok = (cls === "" || c.getAttribute("data-class") === cls) &&
        (grp === "" || c.getAttribute("data-group") === grp) &&
        num(c, "score", 0) <= most + 1e-9 &&
        (flag === "" || (flag === "any" ? flags.trim() !== "" : flags.indexOf(" " + flag + " ") >= 0));
      c.hidden = !ok;
      if (ok) { shown += 1; }
    });
    var order = orders[value("sort")] || orders.order;
    galleries.forEach(function (g) {
      var items = Array.prototype.slice.call(g.children);
      items.sort(function (a, b) { return order(a, b) || orders.order(a, b); });
      items.forEach(function (c) { g.appendChild(c); });
    });
    groups.forEach(function (s) { s.hidden = !s.querySelector("article.card:not([hidden])"); });
    var out = document.getElementById("shown");
    if (out) { out.textContent = shown + " of " + cards.length + " images shown"; }
  }
  if (bar) {
    bar.hidden = false;
    bar.addEventListener("input", apply);
    bar.addEventListener("change", apply);
    apply();
  }
  function visible() {
    return Array.prototype.slice.call(document.querySelectorAll("article.card")).filter(function (c) { return !c.hidden; });
  }
  document.addEventListener("keydown", function (ev) {
    var id = decodeURIComponent(location.hash.slice(1));
    if (id.indexOf("view-") !== 0 || !document.getElementById(id)) { return; }
    var key = id.slice(5);
    if (ev.key === "Escape") {
      ev.preventDefault();
      location.hash = "#card-" + key;
      var card = document.getElementById("card-" + key);
      var link = card && card.querySelector("a");
      if (link) { link.focus(); }
      return;
    }
    if (ev.key !== "ArrowRight" && ev.key !== "ArrowLeft") { return; }
    var list = visible();
    var at = list.map(function (c) { return c.id; }).indexOf("card-" + key);
    var next = list[at + (ev.key === "ArrowRight" ? 1 : -1)];
    if (at >= 0 && next) {
      ev.preventDefault();
      location.hash = "#view-" + next.id.slice(5);
    }
  });
})();
