// Starts Swagger UI on the element that names its spec: <div id="swagger-ui" data-spec-url="...">.
// BaseLayout: the standalone layout's top bar sets inline styles, which the CSP refuses.
(function () {
  "use strict";
  var element = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: element.getAttribute("data-spec-url"),
    dom_id: "#swagger-ui",
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
})();
