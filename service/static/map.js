// The operator map on a plain canvas: Web Mercator (so XYZ tiles fit when a tile server is configured), a lat/lon
// grid (and the bundled coastline, if any) otherwise; cameras with their view cone, drones with heading, route and
// trail, a drone's recorded track (its flight log over the recording window shown, with where it was at the picture
// shown), AIS vessels, events with their 1-sigma uncertainty ellipse, and a search area (a polygon or a circle drawn on
// the map). Drag pans, the wheel zooms, a click picks an event (or a camera: its live view); while an area is being
// drawn a click adds a corner (or sets the circle's centre, then its edge) instead.
"use strict";

export const COLOURS = {
  sea: "#dfe9f2", grid: "#9fb3c4", gridText: "#4a6275", coast: "#7a8b6a", land: "#eef0e4",
  camera: "#6a3d9a", drone: "#e7298a", ais: "#1b9e77",
  area: "#12324a",  // a search area: dashed outline, faint fill (a polygon or circle drawn for the search)
  recTrack: "#00a6d6",  // a drone's recorded track and its marker (solid, cased in white: the live trail is faint pink)
  severity: { low: "#2c7bb6", medium: "#b8860b", high: "#e66101", critical: "#d7191c" },
};
const TILE_PX = 256;
// Text from outside the site's control (AIS names and destinations, registry names, notes, drone messages) as it is
// shown: tabs and line breaks become spaces; control and invisible format characters (bidi overrides and isolates,
// zero-width spaces and joiners, soft hyphens, tag characters) become a visible U+FFFD, so a name cannot reorder the
// text after it or pass for another name it only looks like; and at most `max` characters (0: all), cut with "…".
const INVISIBLE = /[\p{Cc}\p{Cf}\u2028\u2029]/gu;
export function displayText(text, max = 0) {
  const s = String(text ?? "").replace(/[\t\n\r]+/g, " ").replace(INVISIBLE, "\uFFFD");
  if (!max || s.length <= max) return s;
  const chars = Array.from(s);  // code points: a cut never splits a surrogate pair
  return chars.length <= max ? s : chars.slice(0, max).join("") + "…";
}
// The same in one line of plain text (a tooltip, a canvas label): inside first-strong isolates, so right-to-left
// letters in it order only themselves.
export function isolated(text, max = 0) { return "\u2068" + displayText(text, max) + "\u2069"; }

const MAX_CANVAS_PX = 4096 * 4096;  // the canvas's own pixels at most (resize() lowers the pixel ratio above it)
const R_EARTH_M = 6378137;
const R_MEAN_M = 6371008.8;  // a search circle: drawn and measured on the mean sphere

function worldPx(z) { return TILE_PX * Math.pow(2, z); }
function mercX(lon) { return (lon + 180) / 360; }
function mercY(lat) {
  const s = Math.sin(Math.max(-85.05, Math.min(85.05, lat)) * Math.PI / 180);
  return 0.5 - Math.log((1 + s) / (1 - s)) / (4 * Math.PI);
}
function invMercY(y) { return (Math.atan(Math.exp((0.5 - y) * 2 * Math.PI)) * 360) / Math.PI - 90; }
function niceStep(span) {
  const p = Math.pow(10, Math.floor(Math.log10(span / 4)));
  return [1, 2, 5, 10].map((m) => m * p).find((s) => span / s <= 7);
}
// destination a short distance away on a sphere (drawing only: view cones of a few km)
function offsetLatLon(lat, lon, bearingDeg, distM, rEarthM = R_EARTH_M) {
  const b = bearingDeg * Math.PI / 180, d = distM / rEarthM, la = lat * Math.PI / 180, lo = lon * Math.PI / 180;
  const la2 = Math.asin(Math.sin(la) * Math.cos(d) + Math.cos(la) * Math.sin(d) * Math.cos(b));
  const lo2 = lo + Math.atan2(Math.sin(b) * Math.sin(d) * Math.cos(la), Math.cos(d) - Math.sin(la) * Math.sin(la2));
  return [la2 * 180 / Math.PI, lo2 * 180 / Math.PI];
}

// great-circle distance on the mean sphere (a circle drawn for a search: the server measures the radius on the WGS84
// ellipsoid; the two differ by under 0.5 %, a few metres in a harbour)
export function distanceM(lat1, lon1, lat2, lon2) {
  const r = Math.PI / 180, dLat = (lat2 - lat1) * r, dLon = (lon2 - lon1) * r;
  const h = Math.sin(dLat / 2) ** 2 + Math.cos(lat1 * r) * Math.cos(lat2 * r) * Math.sin(dLon / 2) ** 2;
  return 2 * R_MEAN_M * Math.asin(Math.min(1, Math.sqrt(h)));
}
const wrapLon = (lon) => ((((lon + 180) % 360) + 360) % 360) - 180;
// segments ab and cd ([lat, lon] each) cross or touch, in lon/lat (the server's edges are straight in lon/lat)
function segmentsMeet(a, b, c, d) {
  const o = (p, q, s) => Math.sign((q[1] - p[1]) * (s[0] - p[0]) - (q[0] - p[0]) * (s[1] - p[1]));
  const on = (p, q, s) => Math.min(p[0], q[0]) <= s[0] && s[0] <= Math.max(p[0], q[0]) && Math.min(p[1], q[1]) <= s[1] && s[1] <= Math.max(p[1], q[1]);
  const o1 = o(a, b, c), o2 = o(a, b, d), o3 = o(c, d, a), o4 = o(c, d, b);
  if (o1 !== o2 && o3 !== o4) return true;
  return (o1 === 0 && on(a, b, c)) || (o2 === 0 && on(a, b, d)) || (o3 === 0 && on(c, d, a)) || (o4 === 0 && on(c, d, b));
}
export const MAX_AREA_CORNERS = 500;  // the search API's limit
export const MAX_RADIUS_M = 1_000_000;
// Why corner ``q`` cannot follow the corners ``pts`` of a polygon being drawn, or "" when it can: the search needs a
// simple ring, so the new edge may not cross or touch an edge it does not share a corner with, nor fold back over the
// last one. close: ``q`` is the first corner again (the closing edge).
export function badCorner(pts, q, close = false) {
  const n = pts.length, last = pts[n - 1], same = (a, b) => a[0] === b[0] && a[1] === b[1];
  if (!last) return "";
  if (!close && n >= MAX_AREA_CORNERS) return `at most ${MAX_AREA_CORNERS} corners`;
  if (!close && pts.some((p) => same(p, q))) return "there is a corner there already";
  for (let i = close ? 1 : 0; i + 1 < n - 1; i++) {
    if (segmentsMeet(pts[i], pts[i + 1], last, q)) return "its edge would cross another edge";
  }
  if (!close && n >= 2 && (segmentsMeet(pts[n - 2], last, q, q) || segmentsMeet(last, q, pts[n - 2], pts[n - 2]))) {
    return "its edge would fold back over the last one";
  }
  return "";
}
// area of a small polygon ([lat, lon] corners) in m² (local equirectangular: the description of a drawn area only)
export function polygonAreaM2(pts) {
  if (pts.length < 3) return 0;
  const lat0 = pts.reduce((s, p) => s + p[0], 0) / pts.length, k = (Math.PI / 180) * R_MEAN_M;
  const xy = pts.map(([la, lo]) => [lo * k * Math.cos(lat0 * Math.PI / 180), la * k]);
  let a = 0;
  for (let i = 0; i < xy.length; i++) { const [x1, y1] = xy[i], [x2, y2] = xy[(i + 1) % xy.length]; a += x1 * y2 - x2 * y1; }
  return Math.abs(a) / 2;
}
// One line describing a search area: "polygon of 5 corners, 0.42 km²" / "circle of 350 m around 52.84010°, 5.70120°"
export function describeArea(area) {
  if (!area) return "";
  const size = (m2) => (m2 >= 1e5 ? `${(m2 / 1e6).toFixed(m2 >= 1e7 ? 0 : 2)} km²` : `${Math.round(m2).toLocaleString("en")} m²`);
  if (area.kind === "circle") {
    const r = area.radius_m >= 10000 ? `${(area.radius_m / 1000).toFixed(1)} km` : `${Math.round(area.radius_m)} m`;
    return `circle of ${r} around ${area.lat.toFixed(5)}°, ${area.lon.toFixed(5)}°`;
  }
  return `polygon of ${area.points.length} corners, ${size(polygonAreaM2(area.points))}`;
}

export class MapView {
  constructor(canvas, { tilesUrl = null, attribution = "", onPick = () => {}, onPickCamera = () => {}, onPickTrack = () => {}, onMove = () => {},
    onHover = () => {}, onArea = () => {}, onDrawHint = () => {}, onDraw = null } = {}) {
    this.c = canvas;
    this.g = canvas.getContext("2d");
    // the map's size in CSS pixels: every position (project, unproject, a click, the hit tests) is in these; the
    // canvas's own pixels may be more (resize() makes them devicePixelRatio times as many, for a sharp picture)
    this.widthPx = canvas.width;
    this.heightPx = canvas.height;
    this.tilesUrl = tilesUrl;
    this.attribution = attribution;
    this.onPick = onPick;
    this.onPickCamera = onPickCamera;
    this.onPickTrack = onPickTrack;
    this.onMove = onMove;
    this.onHover = onHover;
    this.onArea = onArea;          // a search area was drawn (the area) or cleared (null)
    this.onDrawHint = onDrawHint;  // what the next click does while drawing ("" when not drawing)
    this.onDraw = onDraw;          // (context, map): a page's own marks, drawn over the events on every redraw
    // the search area: {kind: "polygon", points: [[lat, lon], ...]} or {kind: "circle", lat, lon, radius_m}, or null
    this.area = null;
    this.drawing = null;   // an area being drawn: {kind, points: [[lat, lon], ...], hover: [lat, lon] | null}
    this.view = { lat: 52.8405, lon: 5.703, zoom: 14 };
    this.layers = { events: true, cameras: true, drones: true, ais: true, track: true };
    this.data = { events: [], cameras: [], drones: [], vessels: [], selected: null };
    this.trails = new Map(); // drone id -> [[lat, lon], ...]
    this.recTrack = null;   // a drone's recorded track: { droneId, points: [[lat, lon], ...] }, or null
    this.recMarker = null;  // where that drone was at the picture shown: [lat, lon], or null
    this.tiles = new Map();
    this.coast = null;
    this.fitted = false;
    this.touched = false;  // the user panned or zoomed: no automatic fit from then on
    this._pending = false;
    this._bind();
  }

  // ---- projection -------------------------------------------------------------------------------------------
  project(lat, lon) {
    const W = worldPx(this.view.zoom);
    return { x: (mercX(lon) - mercX(this.view.lon)) * W + this.widthPx / 2,
             y: (mercY(lat) - mercY(this.view.lat)) * W + this.heightPx / 2 };
  }
  unproject(x, y) {
    const W = worldPx(this.view.zoom);
    const mx = mercX(this.view.lon) + (x - this.widthPx / 2) / W, my = mercY(this.view.lat) + (y - this.heightPx / 2) / W;
    return { lat: invMercY(my), lon: mx * 360 - 180 };
  }
  // Show the map at ``widthPx`` x ``heightPx`` CSS pixels, drawn on ``dpr`` canvas pixels per CSS pixel (the
  // screen's devicePixelRatio: sharp on a 4K or HiDPI display), its centre and zoom kept. Sizes that are not finite
  // and positive change nothing (false); the same size again neither (no redraw, no flicker).
  resize(widthPx, heightPx, dpr = window.devicePixelRatio || 1) {
    if (!(Number.isFinite(widthPx) && Number.isFinite(heightPx) && widthPx > 0 && heightPx > 0)) return false;
    const w = Math.round(widthPx), h = Math.round(heightPx);
    // 1 to 4 canvas pixels per CSS pixel, and at most MAX_CANVAS_PX in all (a 4K screen at 200 %: every redraw
    // stays quick), never fewer than one per CSS pixel
    let k = Number.isFinite(dpr) && dpr > 0 ? Math.min(4, Math.max(1, dpr)) : 1;
    k = Math.max(1, Math.min(k, Math.sqrt(MAX_CANVAS_PX / (w * h))));
    const cw = Math.round(w * k), ch = Math.round(h * k);
    if (w === this.widthPx && h === this.heightPx && cw === this.c.width && ch === this.c.height) return false;
    this.widthPx = w; this.heightPx = h;
    this.c.width = cw; this.c.height = ch;  // this clears the canvas: drawn again at once below, not a frame later
    this.c.style.width = `${w}px`; this.c.style.height = `${h}px`;
    this.draw();
    return true;
  }

  metresPerPx(lat) { return (2 * Math.PI * R_EARTH_M * Math.cos(lat * Math.PI / 180)) / worldPx(this.view.zoom); }

  fit(points, padPx = 40) {
    const pts = points.filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1]));
    if (!pts.length) return false;
    let [minLat, maxLat, minLon, maxLon] = [90, -90, 180, -180];
    for (const [la, lo] of pts) { minLat = Math.min(minLat, la); maxLat = Math.max(maxLat, la); minLon = Math.min(minLon, lo); maxLon = Math.max(maxLon, lo); }
    const dx = Math.max(mercX(maxLon) - mercX(minLon), 1e-7), dy = Math.max(mercY(minLat) - mercY(maxLat), 1e-7);
    const z = Math.log2(Math.min((this.widthPx - 2 * padPx) / (dx * TILE_PX), (this.heightPx - 2 * padPx) / (dy * TILE_PX)));
    this.view = { lat: invMercY((mercY(minLat) + mercY(maxLat)) / 2), lon: (minLon + maxLon) / 2, zoom: Math.max(2, Math.min(18, z)) };
    this.redraw();
    return true;
  }

  // events, cameras and drones (with their routes); a camera's view cone (often kilometres long) only when
  // there is nothing else to frame
  fitAll() {
    const pts = [], cones = [];
    for (const e of this.data.events) if (e.geo) pts.push([e.geo.lat_deg, e.geo.lon_deg]);
    for (const c of this.data.cameras) if (c.view) { pts.push([c.view.lat_deg, c.view.lon_deg]); cones.push(...this._cone(c.view).slice(1)); }
    for (const d of this.data.drones) { if (d.lat_deg != null) pts.push([d.lat_deg, d.lon_deg]); pts.push(...(d.route || [])); }
    return this.fit(pts.length >= 2 ? pts : pts.concat(cones));
  }

  setData(part) {
    Object.assign(this.data, part);
    for (const d of this.data.drones) {
      if (d.lat_deg == null) continue;
      const t = this.trails.get(d.drone_id) || [];
      const last = t[t.length - 1];
      if (!last || last[0] !== d.lat_deg || last[1] !== d.lon_deg) t.push([d.lat_deg, d.lon_deg]);
      if (t.length > 300) t.shift();
      this.trails.set(d.drone_id, t);
    }
    if (!this.fitted && this.fitAll()) this.fitted = true;
    this.redraw();
  }

  setCoastline(lines) { this.coast = lines; this.redraw(); }

  // A drone's recorded track (``points``: [[lat, lon], ...] in time order; null or none: no track) and its marker.
  setRecTrack(droneId, points) {
    this.recTrack = droneId && points && points.length ? { droneId, points } : null;
    this.recMarker = null;
    this.redraw();
  }

  setRecMarker(latLon) {
    const m = latLon && this.recTrack ? [latLon[0], latLon[1]] : null, o = this.recMarker;
    if ((!m && !o) || (m && o && m[0] === o[0] && m[1] === o[1])) return;
    this.recMarker = m;
    this.redraw();
  }

  redraw() {
    if (this._pending) return;
    this._pending = true;
    requestAnimationFrame(() => { this._pending = false; this.draw(); });
  }

  // ---- drawing ----------------------------------------------------------------------------------------------
  draw() {
    const g = this.g, c = this.c, W = this.widthPx, H = this.heightPx;
    g.setTransform(c.width / W, 0, 0, c.height / H, 0, 0);  // drawn in CSS pixels on the canvas's own (more) pixels
    g.globalAlpha = 1;
    g.fillStyle = COLOURS.sea; g.fillRect(0, 0, W, H);
    if (this.tilesUrl) this._drawTiles();
    else if (this.coast) this._drawCoast();
    this._drawGrid();
    if (this.layers.cameras) this._drawCameras();
    if (this.layers.ais) this._drawVessels();
    if (this.layers.drones) this._drawDrones();
    if (this.layers.track) this._drawRecTrack();
    this._drawArea();
    if (this.layers.events) this._drawEvents();
    if (this.onDraw) { g.save(); this.onDraw(g, this); g.restore(); }
    this._drawScale();
    if (this.tilesUrl && this.attribution) {
      g.font = "10px sans-serif"; g.fillStyle = "rgba(255,255,255,0.8)";
      const w = g.measureText(this.attribution).width + 6;
      g.fillRect(W - w, H - 14, w, 14); g.fillStyle = "#333"; g.fillText(this.attribution, W - w + 3, H - 3);
    }
    this.onMove(this.view);
  }

  _drawTiles() {
    const z = Math.max(0, Math.min(19, Math.round(this.view.zoom)));
    const scale = Math.pow(2, this.view.zoom - z), n = Math.pow(2, z), size = TILE_PX * scale;
    const tl = this.unproject(0, 0), br = this.unproject(this.widthPx, this.heightPx);
    const x0 = Math.floor(mercX(tl.lon) * n), x1 = Math.floor(mercX(br.lon) * n);
    const y0 = Math.max(0, Math.floor(mercY(tl.lat) * n)), y1 = Math.min(n - 1, Math.floor(mercY(br.lat) * n));
    for (let ty = y0; ty <= y1; ty++) {
      for (let tx = x0; tx <= x1; tx++) {
        const wx = ((tx % n) + n) % n;
        const url = this.tilesUrl.replace("{z}", z).replace("{x}", wx).replace("{y}", ty);
        let img = this.tiles.get(url);
        if (!img) {
          img = new Image(); img.crossOrigin = "anonymous"; img.onload = () => this.redraw(); img.src = url;
          this.tiles.set(url, img);
          if (this.tiles.size > 400) this.tiles.delete(this.tiles.keys().next().value);
        }
        if (img.complete && img.naturalWidth) {
          const p = this.project(invMercY(ty / n), (tx / n) * 360 - 180);
          this.g.drawImage(img, p.x, p.y, size, size);
        }
      }
    }
  }

  _drawCoast() {
    const g = this.g;
    g.strokeStyle = COLOURS.coast; g.lineWidth = 1.2;
    for (const line of this.coast) {
      g.beginPath();
      line.forEach(([lon, lat], i) => { const p = this.project(lat, lon); i ? g.lineTo(p.x, p.y) : g.moveTo(p.x, p.y); });
      g.stroke();
    }
  }

  _drawGrid() {
    const g = this.g, W = this.widthPx, H = this.heightPx;
    const tl = this.unproject(0, 0), br = this.unproject(W, H);
    const stepLat = niceStep(tl.lat - br.lat), stepLon = niceStep(br.lon - tl.lon);
    const dec = (s) => Math.max(0, -Math.floor(Math.log10(s)));
    g.strokeStyle = COLOURS.grid; g.fillStyle = COLOURS.gridText; g.font = "10px sans-serif"; g.lineWidth = 1;
    for (let lat = Math.ceil(br.lat / stepLat) * stepLat; lat <= tl.lat; lat += stepLat) {
      const y = Math.round(this.project(lat, tl.lon).y) + 0.5;
      g.beginPath(); g.moveTo(0, y); g.lineTo(W, y); g.stroke(); g.fillText(lat.toFixed(dec(stepLat)) + "°", 2, y - 2);
    }
    for (let lon = Math.ceil(tl.lon / stepLon) * stepLon; lon <= br.lon; lon += stepLon) {
      const x = Math.round(this.project(tl.lat, lon).x) + 0.5;
      g.beginPath(); g.moveTo(x, 0); g.lineTo(x, H); g.stroke(); g.fillText(lon.toFixed(dec(stepLon)) + "°", x + 2, H - 16);
    }
  }

  _drawScale() {
    const g = this.g, mpp = this.metresPerPx(this.view.lat);
    const raw = mpp * 120, p10 = Math.pow(10, Math.floor(Math.log10(raw)));  // the longest 1-2-5 length under 120 px
    const m = [5, 2, 1].map((k) => k * p10).find((v) => v <= raw) || p10, px = m / mpp;
    g.strokeStyle = "#1d2733"; g.fillStyle = "#1d2733"; g.lineWidth = 2;
    g.beginPath(); g.moveTo(10, 14); g.lineTo(10 + px, 14); g.stroke(); g.lineWidth = 1;
    g.font = "10px sans-serif"; g.fillText(m >= 1000 ? `${m / 1000} km` : `${m} m`, 14 + px, 18);
  }

  _cone(v) {
    const r = v.range_m || 500, h = v.hfov_deg || 60, pts = [[v.lat_deg, v.lon_deg]];
    for (let a = -h / 2; a <= h / 2 + 1e-9; a += h / 8) pts.push(offsetLatLon(v.lat_deg, v.lon_deg, v.pan_deg + a, r));
    return pts;
  }

  _drawCameras() {
    const g = this.g;
    for (const cam of this.data.cameras) {
      if (!cam.view) continue;
      const pts = this._cone(cam.view).map(([la, lo]) => this.project(la, lo));
      g.globalAlpha = 0.18; g.fillStyle = COLOURS.camera;
      g.beginPath(); pts.forEach((p, i) => (i ? g.lineTo(p.x, p.y) : g.moveTo(p.x, p.y))); g.closePath(); g.fill();
      g.globalAlpha = 0.8; g.strokeStyle = COLOURS.camera; g.lineWidth = 1; g.stroke(); g.globalAlpha = 1;
      const p = pts[0];
      g.fillStyle = COLOURS.camera; g.fillRect(p.x - 5, p.y - 5, 10, 10);
      g.font = "11px sans-serif"; g.fillText(cam.source_id, p.x + 8, p.y - 6);
    }
  }

  _arrow(x, y, headingDeg, size) {
    const g = this.g, a = ((headingDeg || 0) * Math.PI) / 180;
    g.save(); g.translate(x, y); g.rotate(a);
    g.beginPath(); g.moveTo(0, -size); g.lineTo(size * 0.7, size); g.lineTo(0, size * 0.45); g.lineTo(-size * 0.7, size); g.closePath();
    g.fill(); g.restore();
  }

  _drawDrones() {
    const g = this.g;
    for (const d of this.data.drones) {
      const route = (d.route || []).map(([la, lo]) => this.project(la, lo));
      if (route.length) {
        g.strokeStyle = COLOURS.drone; g.globalAlpha = 0.7; g.lineWidth = 1.5; g.setLineDash([6, 4]);
        g.beginPath(); route.forEach((p, i) => (i ? g.lineTo(p.x, p.y) : g.moveTo(p.x, p.y))); g.stroke();
        g.setLineDash([]); g.globalAlpha = 1;
        route.forEach((p, i) => { g.fillStyle = "#fff"; g.beginPath(); g.arc(p.x, p.y, 3, 0, 2 * Math.PI); g.fill(); g.stroke(); });
      }
      const trail = (this.trails.get(d.drone_id) || []).map(([la, lo]) => this.project(la, lo));
      if (trail.length > 1) {
        g.strokeStyle = COLOURS.drone; g.globalAlpha = 0.35; g.lineWidth = 2;
        g.beginPath(); trail.forEach((p, i) => (i ? g.lineTo(p.x, p.y) : g.moveTo(p.x, p.y))); g.stroke(); g.globalAlpha = 1;
      }
      if (d.lat_deg == null) continue;
      const p = this.project(d.lat_deg, d.lon_deg);
      g.fillStyle = d.state === "connected" ? COLOURS.drone : "#888";
      this._arrow(p.x, p.y, d.heading_deg, 10);
      g.font = "11px sans-serif"; g.fillStyle = "#1d2733";
      g.fillText(`${d.drone_id} ${d.mode ? isolated(d.mode, 20) : ""} ${d.alt_rel_m != null ? Math.round(d.alt_rel_m) + " m" : ""}`, p.x + 12, p.y + 4);
    }
  }

  // the recorded track: a white casing under a solid line (distinct from the faint live trail and the dashed route),
  // the marker a hollow ring (the drone's live arrow may sit elsewhere)
  _drawRecTrack() {
    const g = this.g, t = this.recTrack;
    if (!t) return;
    const pts = t.points.map(([la, lo]) => this.project(la, lo));
    g.lineJoin = "round"; g.lineCap = "round";
    for (const [colour, width] of [["#fff", 5], [COLOURS.recTrack, 2.5]]) {
      g.strokeStyle = colour; g.lineWidth = width; g.beginPath();
      pts.forEach((p, i) => (i ? g.lineTo(p.x, p.y) : g.moveTo(p.x, p.y)));
      if (pts.length === 1) g.lineTo(pts[0].x + 0.01, pts[0].y);
      g.stroke();
    }
    g.lineJoin = "miter"; g.lineCap = "butt";
    if (this.recMarker) {
      const p = this.project(this.recMarker[0], this.recMarker[1]);
      g.strokeStyle = "#fff"; g.lineWidth = 6; g.beginPath(); g.arc(p.x, p.y, 8, 0, 2 * Math.PI); g.stroke();
      g.strokeStyle = COLOURS.recTrack; g.lineWidth = 3; g.beginPath(); g.arc(p.x, p.y, 8, 0, 2 * Math.PI); g.stroke();
      g.strokeStyle = "#1d2733"; g.lineWidth = 1; g.beginPath(); g.arc(p.x, p.y, 11.5, 0, 2 * Math.PI); g.stroke();
    }
    g.lineWidth = 1;
  }

  _drawVessels() {
    const g = this.g;
    g.fillStyle = COLOURS.ais;
    for (const v of this.data.vessels) {
      if (v.lat_deg == null) continue;
      const p = this.project(v.lat_deg, v.lon_deg);
      if (p.x < -10 || p.y < -10 || p.x > this.widthPx + 10 || p.y > this.heightPx + 10) continue;
      const hdg = v.heading_deg != null ? v.heading_deg : v.cog_deg;
      if (hdg != null) this._arrow(p.x, p.y, hdg, 6);
      else { g.beginPath(); g.arc(p.x, p.y, 4, 0, 2 * Math.PI); g.fill(); }
    }
  }

  _drawEvents() {
    const g = this.g;
    for (const ev of this.data.events) {
      if (!ev.geo) continue;
      const p = this.project(ev.geo.lat_deg, ev.geo.lon_deg), mpp = this.metresPerPx(ev.geo.lat_deg);
      const a = Math.max(6, ev.geo.semi_major_m / mpp), b = Math.max(6, ev.geo.semi_minor_m / mpp);
      const colour = COLOURS.severity[ev.severity] || "#555";
      g.fillStyle = colour; g.strokeStyle = colour;
      g.globalAlpha = 0.22; g.beginPath(); g.ellipse(p.x, p.y, a, b, ((ev.geo.orientation_deg - 90) * Math.PI) / 180, 0, 2 * Math.PI); g.fill();
      g.globalAlpha = 0.7; g.lineWidth = 1; g.stroke();
      g.globalAlpha = 1; g.beginPath(); g.arc(p.x, p.y, 5, 0, 2 * Math.PI); g.fill();
      if (ev.id === this.data.selected) { g.strokeStyle = "#000"; g.lineWidth = 2; g.beginPath(); g.arc(p.x, p.y, 8, 0, 2 * Math.PI); g.stroke(); g.lineWidth = 1; }
    }
  }

  // ---- a search area drawn on the map ------------------------------------------------------------------------
  // kind "polygon": each click a corner, closed by a click on the first corner (or the last one again: a double
  // click) or finishPolygon(); kind "circle": a click on the centre, then one on the edge. A drag still pans.
  startDrawing(kind) {
    this.drawing = { kind, points: [], hover: null };
    this.c.classList.add("drawing");
    this._hint();
    this.redraw();
  }

  cancelDrawing() {
    if (!this.drawing) return;
    this.drawing = null;
    this.c.classList.remove("drawing");
    this.onDrawHint("");
    this.redraw();
  }

  undoCorner() {
    if (!this.drawing || !this.drawing.points.length) return;
    this.drawing.points.pop();
    this._hint();
    this.redraw();
  }

  finishPolygon() {
    const d = this.drawing;
    if (!d || d.kind !== "polygon") return false;
    if (d.points.length < 3) { this._hint("an area needs 3 corners at least"); return false; }
    const why = badCorner(d.points, d.points[0], true);
    if (why) { this._hint(`it cannot be closed there (${why})`); return false; }
    // longitudes as drawn (a pan may have gone round the world): the first corner's brought into -180..180 and the
    // others moved with it; an area that then crosses the 180° meridian cannot be searched in one piece
    const shift = wrapLon(d.points[0][1]) - d.points[0][1], pts = d.points.map(([la, lo]) => [la, lo + shift]);
    if (pts.some(([, lo]) => lo < -180 || lo > 180)) { this._hint("the area crosses the 180° meridian: draw each side on its own"); return false; }
    this._finish({ kind: "polygon", points: pts });
    return true;
  }

  // the search area shown (null: none); only an area drawn here is passed to onArea
  setArea(area) { this.area = area; this.redraw(); }

  clearArea() {
    this.cancelDrawing();
    if (!this.area) return;
    this.area = null;
    this.redraw();
    this.onArea(null);
  }

  _finish(area) {
    this.drawing = null;
    this.c.classList.remove("drawing");
    this.onDrawHint("");
    this.area = area;
    this.redraw();
    this.onArea(area);
  }

  _hint(problem = "") {
    const d = this.drawing;
    if (!d) return;
    const n = d.points.length;
    const next = d.kind === "circle" ? (n ? "click the circle's edge" : "click the circle's centre")
      : n < 3 ? `click corner ${n + 1} of the area` : `click corner ${n + 1}, or the first corner (or press Enter) to finish`;
    this.onDrawHint(`${problem ? problem + ". " : ""}${next}; Backspace takes back a corner, Esc cancels`);
  }

  // a click at canvas pixel (x, y) while drawing
  _drawClick(x, y) {
    const d = this.drawing, ll = this.unproject(x, y), q = [ll.lat, ll.lon];
    const near = (p) => { const s = this.project(p[0], p[1]); return Math.hypot(s.x - x, s.y - y) <= 8; };
    if (d.kind === "circle") {
      if (!d.points.length) { d.points.push(q); this._hint(); this.redraw(); return; }
      const [lat, lon] = d.points[0], r = distanceM(lat, lon, q[0], q[1]);
      if (near(d.points[0])) { this._hint("the edge is on the centre"); return; }
      if (r > MAX_RADIUS_M) { this._hint("a search circle is 1000 km at most"); return; }
      this._finish({ kind: "circle", lat, lon: wrapLon(lon), radius_m: r });
      return;
    }
    const pts = d.points;
    if (pts.length >= 3 && (near(pts[0]) || near(pts[pts.length - 1]))) { this.finishPolygon(); return; }
    if (pts.length && near(pts[pts.length - 1])) return;  // the second click of a double click on a corner
    const why = badCorner(pts, q);
    if (why) { this._hint(`not there: ${why}`); return; }
    pts.push(q);
    this._hint();
    this.redraw();
  }

  _circlePoints(lat, lon, radiusM) {
    const pts = [];
    for (let a = 0; a < 360; a += 4) pts.push(offsetLatLon(lat, lon, a, radiusM, R_MEAN_M));
    return pts;
  }

  _drawArea() {
    const g = this.g, a = this.area, d = this.drawing;
    const path = (pts, close) => {
      g.beginPath();
      pts.forEach(([la, lo], i) => { const p = this.project(la, lo); i ? g.lineTo(p.x, p.y) : g.moveTo(p.x, p.y); });
      if (close) g.closePath();
    };
    g.strokeStyle = COLOURS.area; g.fillStyle = COLOURS.area;
    if (a) {
      path(a.kind === "circle" ? this._circlePoints(a.lat, a.lon, a.radius_m) : a.points, true);
      g.globalAlpha = 0.07; g.fill(); g.globalAlpha = 1;
      g.lineWidth = 2; g.setLineDash([8, 5]); g.stroke(); g.setLineDash([]); g.lineWidth = 1;
    }
    if (!d) return;
    const pts = d.points, hover = d.hover;
    g.lineWidth = 2;
    if (d.kind === "circle" && pts.length && hover) {
      const r = distanceM(pts[0][0], pts[0][1], hover[0], hover[1]);
      path(this._circlePoints(pts[0][0], pts[0][1], r), true);
      g.setLineDash([4, 4]); g.stroke();
      path([pts[0], hover], false); g.stroke(); g.setLineDash([]);
      const h = this.project(hover[0], hover[1]);
      g.font = "bold 12px sans-serif"; g.fillText(r >= 10000 ? `${(r / 1000).toFixed(1)} km` : `${Math.round(r)} m`, h.x + 8, h.y - 8);
    } else if (d.kind === "polygon" && pts.length) {
      path(pts, false); g.stroke();
      if (hover) {
        g.setLineDash([4, 4]);
        path(pts.length >= 2 ? [pts[pts.length - 1], hover, pts[0]] : [pts[0], hover], false); g.stroke();
        g.setLineDash([]);
      }
    }
    g.lineWidth = 1.5;
    pts.forEach(([la, lo], i) => {
      const p = this.project(la, lo);
      g.fillStyle = i === 0 && d.kind === "polygon" && pts.length >= 3 ? COLOURS.area : "#fff";
      g.beginPath(); g.arc(p.x, p.y, 5, 0, 2 * Math.PI); g.fill(); g.stroke();
    });
    g.lineWidth = 1;
  }

  // ---- interaction ------------------------------------------------------------------------------------------
  pick(x, y, maxPx = 10) {
    if (!this.layers.events) return null;  // hidden events cannot be clicked
    let best = null, bestD = maxPx;
    for (const ev of this.data.events) {
      if (!ev.geo) continue;
      const p = this.project(ev.geo.lat_deg, ev.geo.lon_deg), d = Math.hypot(p.x - x, p.y - y);
      if (d <= bestD) { best = ev; bestD = d; }
    }
    return best;
  }

  // the camera whose marker is at (x, y), or null
  pickCamera(x, y, maxPx = 10) {
    if (!this.layers.cameras) return null;
    let best = null, bestD = maxPx;
    for (const c of this.data.cameras) {
      if (!c.view) continue;
      const p = this.project(c.view.lat_deg, c.view.lon_deg), d = Math.hypot(p.x - x, p.y - y);
      if (d <= bestD) { best = c; bestD = d; }
    }
    return best;
  }

  // what a click at (x, y) opens: the nearest of the events, the recorded track and the cameras within maxPx (an
  // event placed next to its camera must not hide the camera's live view), as {kind, item}, or null
  clickTarget(x, y, maxPx = 10) {
    const dist = (lat, lon) => { const p = this.project(lat, lon); return Math.hypot(p.x - x, p.y - y); };
    const found = [];
    const ev = this.pick(x, y, maxPx);
    if (ev) found.push({ kind: "event", item: ev.id, d: dist(ev.geo.lat_deg, ev.geo.lon_deg) });
    const i = this.pickTrack(x, y, maxPx);
    if (i != null) { const [lat, lon] = this.recTrack.points[i]; found.push({ kind: "track", item: i, d: dist(lat, lon) }); }
    const cam = this.pickCamera(x, y, maxPx);
    if (cam) found.push({ kind: "camera", item: cam.source_id, d: dist(cam.view.lat_deg, cam.view.lon_deg) });
    found.sort((a, b) => a.d - b.d);  // stable: at equal distance an event, then the track, then a camera
    return found[0] || null;
  }

  // the recorded track's point nearest (x, y) within maxPx (its index in the track), or null
  pickTrack(x, y, maxPx = 10) {
    if (!this.layers.track || !this.recTrack) return null;
    let best = null, bestD = maxPx;
    this.recTrack.points.forEach(([lat, lon], i) => {
      const p = this.project(lat, lon), d = Math.hypot(p.x - x, p.y - y);
      if (d <= bestD) { best = i; bestD = d; }
    });
    return best;
  }

  // what is under the pointer, as one line of text (vessel name / MMSI, drone, camera, event), or ""
  describeAt(x, y, maxPx = 10) {
    const near = (lat, lon) => { const p = this.project(lat, lon); return Math.hypot(p.x - x, p.y - y) <= maxPx; };
    const hit = this.clickTarget(x, y, maxPx);  // what a click here would open is named first
    if (hit && hit.kind === "camera") {
      const cam = this.data.cameras.find((c) => c.source_id === hit.item);
      return `camera ${cam.source_id}: ${cam.state} (click: live view)`;
    }
    const ev = hit && hit.kind === "event" ? this.data.events.find((e) => e.id === hit.item) : null;
    if (ev) return `event ${ev.type} (${ev.severity}) on ${ev.source_id}, ${ev.review_status}`;
    if (this.layers.track && this.recMarker && near(this.recMarker[0], this.recMarker[1])) {
      return `drone ${this.recTrack.droneId} at the recorded picture shown`;
    }
    if (this.pickTrack(x, y, maxPx) != null) return `drone ${this.recTrack.droneId}'s recorded track (click: its video from there)`;
    if (this.layers.drones) for (const d of this.data.drones) {
      if (d.lat_deg != null && near(d.lat_deg, d.lon_deg)) {
        return `drone ${d.drone_id}: ${d.state}, ${d.mode ? isolated(d.mode, 40) : "?"}, ${d.alt_rel_m != null ? d.alt_rel_m.toFixed(0) + " m" : ""}` +
          (d.battery_pct != null ? `, battery ${d.battery_pct}%` : "");
      }
    }
    const cam = this.pickCamera(x, y, maxPx);
    if (cam) return `camera ${cam.source_id}: ${cam.state} (click: live view)`;
    if (this.layers.ais) for (const v of this.data.vessels) {
      if (v.lat_deg != null && near(v.lat_deg, v.lon_deg)) {
        return `vessel ${v.name ? isolated(v.name, 40) : "(no name)"} MMSI ${v.mmsi}` + (v.ship_type_text ? `, ${v.ship_type_text}` : "") +
          (v.sog_kn != null ? `, ${v.sog_kn} kn` : "") + (v.destination ? ` to ${isolated(v.destination, 40)}` : "");
      }
    }
    return "";
  }

  _bind() {
    const c = this.c;
    let drag = null;
    // a pointer's position in the map's CSS pixels (widthPx x heightPx), whatever the canvas's own pixel count and
    // however large it is shown
    const pos = (e) => { const r = c.getBoundingClientRect(); return { x: (e.clientX - r.left) * (this.widthPx / r.width), y: (e.clientY - r.top) * (this.heightPx / r.height) }; };
    c.addEventListener("pointerdown", (e) => { drag = { ...pos(e), moved: 0 }; c.setPointerCapture(e.pointerId); });
    c.addEventListener("pointermove", (e) => {
      if (!drag) {
        const p = pos(e);
        if (this.drawing) {
          const ll = this.unproject(p.x, p.y), d = this.drawing;
          d.hover = [ll.lat, ll.lon];
          this.onHover(d.kind === "circle" && d.points.length ? `radius ${Math.round(distanceM(d.points[0][0], d.points[0][1], ll.lat, ll.lon))} m` : "");
          this.redraw();
        } else this.onHover(this.describeAt(p.x, p.y));
        return;
      }
      const p = pos(e), W = worldPx(this.view.zoom);
      drag.moved += Math.abs(p.x - drag.x) + Math.abs(p.y - drag.y);
      this.view = { ...this.view, lon: this.view.lon - ((p.x - drag.x) / W) * 360, lat: invMercY(mercY(this.view.lat) - (p.y - drag.y) / W) };
      drag.x = p.x; drag.y = p.y; this.fitted = this.touched = true; this.redraw();
    });
    c.addEventListener("pointerup", (e) => {
      const p = pos(e);
      if (drag && drag.moved < 4 && this.drawing) this._drawClick(p.x, p.y);  // a corner, a centre or an edge
      else if (drag && drag.moved < 4) {  // a click: the nearest event, recorded track point (its video) or camera
        const hit = this.clickTarget(p.x, p.y);
        if (hit && hit.kind === "event") this.onPick(hit.item);
        else if (hit && hit.kind === "track") this.onPickTrack(hit.item);
        else if (hit && hit.kind === "camera") this.onPickCamera(hit.item);
      }
      drag = null;
    });
    c.addEventListener("pointerleave", () => { if (this.drawing && this.drawing.hover) { this.drawing.hover = null; this.redraw(); } });
    c.addEventListener("wheel", (e) => {
      e.preventDefault();
      const p = pos(e), before = this.unproject(p.x, p.y);
      this.view = { ...this.view, zoom: Math.max(2, Math.min(19, this.view.zoom - Math.sign(e.deltaY) * 0.5)) };
      const after = this.unproject(p.x, p.y);  // keep the point under the cursor in place
      this.view.lon += before.lon - after.lon;
      this.view.lat = invMercY(mercY(this.view.lat) + mercY(before.lat) - mercY(after.lat));
      this.fitted = this.touched = true; this.redraw();
    }, { passive: false });
  }
}
