// The admin's run page reloads itself while the run is queued or running, so an instructor following
// a student's run sees new epochs and log lines without pressing F5. The server marks such a page with
// data-admin-refresh="<seconds>"; a finished run's page has no mark and stays still.
// Loaded from <head> by the admin's Media: wait for the document before looking for the mark.
document.addEventListener("DOMContentLoaded", function () {
  "use strict";
  var mark = document.querySelector("[data-admin-refresh]");
  if (!mark) {
    return;
  }
  var seconds = parseInt(mark.getAttribute("data-admin-refresh"), 10) || 5;
  window.setTimeout(function () {
    if (!document.hidden) {
      window.location.reload();
      return;
    }
    // A background tab reloads when it is looked at again.
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden) {
        window.location.reload();
      }
    }, { once: true });
  }, seconds * 1000);
});
