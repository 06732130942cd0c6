// tocsin console: the few behaviours HTML cannot do alone. No inline script anywhere
// (the Content-Security-Policy forbids it): pages mark elements with data-* attributes.
"use strict";

(function () {
  // Header rows: "Add header" clones the row template; each row's "Remove" drops it.
  function renumber(list) {
    list.querySelectorAll(".header-row").forEach(function (row, index) {
      row.querySelectorAll("[data-header-part]").forEach(function (input) {
        var id = "header-" + input.dataset.headerPart + "-" + index;
        input.id = id;
        var label = row.querySelector("label[data-for='" + input.dataset.headerPart + "']");
        if (label) { label.htmlFor = id; }
      });
    });
  }

  document.addEventListener("click", function (event) {
    var add = event.target.closest("[data-add-header]");
    if (add) {
      var list = document.getElementById(add.dataset.addHeader);
      var template = document.getElementById(add.dataset.template);
      list.appendChild(template.content.cloneNode(true));
      renumber(list);
      var rows = list.querySelectorAll(".header-row");
      rows[rows.length - 1].querySelector("input").focus();
      return;
    }
    var remove = event.target.closest("[data-remove-header]");
    if (remove) {
      var row = remove.closest(".header-row");
      var parent = row.parentElement;
      row.remove();
      renumber(parent);
      var next = document.querySelector("[data-add-header]");
      if (next) { next.focus(); }
      return;
    }
    var copy = event.target.closest("[data-copy]");
    if (copy && navigator.clipboard) {
      navigator.clipboard.writeText(document.getElementById(copy.dataset.copy).textContent.trim());
      copy.textContent = "Copied";
    }
  });

  // A PEM file chosen for the CA certificate is read into its text area.
  document.addEventListener("change", function (event) {
    var input = event.target.closest("[data-pem-into]");
    if (!input || !input.files || !input.files[0]) { return; }
    var target = document.getElementById(input.dataset.pemInto);
    input.files[0].text().then(function (text) {
      target.value = text;
      target.dispatchEvent(new Event("input", { bubbles: true }));
    });
  });
})();
