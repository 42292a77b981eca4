// Swagger UI for this API, started from a file rather than an inline script so that
// the docs page's content security policy can forbid inline scripts.
window.ui = SwaggerUIBundle({
  url: document.getElementById("swagger-ui").dataset.openapi,
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  persistAuthorization: true,
  // No badge fetched from validator.swagger.io: the page talks to this API only.
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
});
