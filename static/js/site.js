// Small progressive enhancements shared by every page. No inline scripts: the CSP forbids them.
(function () {
  "use strict";
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
    var button = select.form.querySelector(".lang-submit");
    if (button) { button.classList.add("visually-hidden"); }
  });
})();

// Buttons that need a second thought carry their question: <button data-confirm="Really?">.
(function () {
  "use strict";
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-confirm]");
    if (button && !window.confirm(button.getAttribute("data-confirm"))) {
      event.preventDefault();
    }
  });
})();
