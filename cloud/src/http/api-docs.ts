/**
 * The API reference page at /api/docs: Swagger UI from the swagger-ui-dist package, served from node_modules so it
 * works offline (gyms and CI machines often are). It reads /api/openapi.json.
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { createRequire } from 'node:module';
import type Router from '@koa/router';
import type { AppState } from './state.ts';

const require = createRequire(import.meta.url);
const swaggerDir = path.dirname(require.resolve('swagger-ui-dist/package.json'));

/** The only files the page needs; nothing else under node_modules is reachable. */
const assets = new Map<string, string>([
  ['swagger-ui.css', 'text/css; charset=utf-8'],
  ['swagger-ui-bundle.js', 'application/javascript; charset=utf-8'],
  ['swagger-ui-standalone-preset.js', 'application/javascript; charset=utf-8'],
  ['favicon-32x32.png', 'image/png'],
]);

const page = `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>NXG Connect API</title>
  <link rel="stylesheet" href="/api/docs/assets/swagger-ui.css">
  <link rel="icon" type="image/png" href="/api/docs/assets/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/api/docs/assets/swagger-ui-bundle.js"></script>
  <script src="/api/docs/assets/swagger-ui-standalone-preset.js"></script>
  <script src="/api/docs/init.js"></script>
</body>
</html>
`;

// In a file of its own, so the Content-Security-Policy can forbid inline scripts.
const init = `window.ui = SwaggerUIBundle({
  url: '/api/openapi.json',
  dom_id: '#swagger-ui',
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
  layout: 'StandaloneLayout',
  // Swagger UI would otherwise send the document's URL to validator.swagger.io (and CSP would block the badge).
  validatorUrl: null,
});
`;

export function mountApiDocs(router: Router<AppState>): void {
  router.get('/api/docs', (ctx) => {
    ctx.type = 'text/html; charset=utf-8';
    ctx.body = page;
  });
  router.get('/api/docs/init.js', (ctx) => {
    ctx.type = 'application/javascript; charset=utf-8';
    ctx.body = init;
  });
  router.get('/api/docs/assets/:file', async (ctx) => {
    const file = ctx.params.file ?? '';
    // A Map, not an object literal: `constructor` or `__proto__` must not find an inherited member.
    const type = assets.get(file);
    if (!type) return; // falls through to the 404 problem
    const full = path.join(swaggerDir, file);
    const info = await stat(full);
    ctx.type = type;
    ctx.length = info.size;
    ctx.set('Cache-Control', 'public, max-age=86400');
    ctx.body = createReadStream(full);
  });
}
