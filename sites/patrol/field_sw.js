// civicgrid field page service worker (/field/sw.js, scope /field/): keeps the field page and the Leaflet files it
// loads, so that a phone reopens today's route without a connection. Only GET requests are touched: recording a
// visit (POST) always goes to the network, and the page queues it itself while the connection is down.
const CACHE = "civicgrid-field-v1";
self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", e => e.waitUntil(self.clients.claim()));
self.addEventListener("fetch", e => {
  const req = e.request;
  if (req.method !== "GET") return;
  const url = new URL(req.url);
  if (url.origin !== self.location.origin) return;
  if (!url.pathname.startsWith("/field/") && !url.pathname.startsWith("/static/vendor/")) return;
  e.respondWith(fetch(req).then(res => {
    if (res.ok) {
      const copy = res.clone();
      caches.open(CACHE).then(c => c.put(req, copy));
    }
    return res;
  }).catch(() => caches.match(req).then(hit => hit || Response.error())));
});
