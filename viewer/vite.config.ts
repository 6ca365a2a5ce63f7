import { defineConfig } from 'vite';

// The tile server serves the build: `/` answers its index.html and `/assets/*` the hashed
// bundles, so the build goes straight into the Python package's static folder.
//
// `npm run dev` serves the sources on http://127.0.0.1:5173/ and passes the API (and the
// `/?token=…` sign-in, which sets the session cookie) to a running `tessera serve`, at
// $TESSERA_URL or http://127.0.0.1:8000.
const server = process.env.TESSERA_URL ?? 'http://127.0.0.1:8000';

export default defineConfig({
  base: '/',
  // Only index.html and assets/ are served by the tile server: keep everything in assets/.
  publicDir: false,
  build: {
    outDir: '../tileserver/web/static/viewer',
    emptyOutDir: true,
    assetsDir: 'assets',
    target: 'es2022',
  },
  server: {
    host: '127.0.0.1',
    port: 5173,
    proxy: {
      '/api': { target: server },
      '^/\\?token=': { target: server },
    },
  },
});
