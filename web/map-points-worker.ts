/// <reference lib="webworker" />
/**
 * Draws the dashboard's vehicles in a worker, on an OffscreenCanvas: a square of a few pixels per
 * vehicle, rasterised here in JavaScript into an ImageData put on a 2D context, or one GL point
 * per vehicle with WebGL2: WebGL2 where WebGL runs on a GPU, 2D where it runs in software
 * (chooseDrawing; `?points=webgl` or `?points=2d` forces one). Why a
 * worker and not deck.gl's ScatterplotLayer on the page (bench/README.md, "web"): without a GPU,
 * WebGL runs on SwiftShader and the page's main thread waits for every frame it draws (100,000
 * vehicles: deck.gl on the main thread left it busy all the time, input waited seconds); drawn
 * here, the main thread stays free for input and the stream whatever the frame costs. deck.gl
 * itself does not run in a worker (it builds DOM widgets), and its instanced, anti-aliased circles
 * cost ~4× the fragments of a point.
 *
 * Why 2D where WebGL is software: every WebGL context of the page, the worker's and deck.gl's on the main
 * thread, is served by the one GPU process, in order. 100,000 points through SwiftShader kept its
 * main thread busy ~80 ms a frame (3.4-4.2 s of each 10 s), and a synchronous call of deck.gl's context on the main thread (a getError, the
 * read-back of its canvas for software compositing) waited behind that frame: the trace of bench
 * web --profile showed a 164 ms main-thread task that was 146 ms of such a wait. The same squares
 * written into an ImageData cost a few ms of this worker's time and nothing of the GPU process's.
 *
 * It also keeps the vehicles (the area watch and its MapState, web/map-source.ts) when the page
 * asks it to with a SourceRequest: then no buffers come from the page, and it draws from its own.
 *
 * Messages in: WorkerMessage. Out: { frames } twice a second, SourceReply.
 */
import { createMapState } from "./map-state";
import { serveSource, type SourceRequest } from "./map-source";

export type WorkerMessage =
  | { type: "init"; canvas: OffscreenCanvas; context?: "2d" | "webgl2" | "auto" }
  | { type: "view"; longitude: number; latitude: number; zoom: number; width: number; height: number }
  /** Copies of MapState's buffers: [lon, lat] and RGBA per slot (alpha 0: not drawn). */
  | { type: "data"; positions: Float32Array; colours: Uint8Array; count: number }
  | SourceRequest;

/** How often the vehicles are drawn again while events change them (a vehicle reports every few seconds). */
const DATA_INTERVAL_MS = 200;

const VERTEX = `#version 300 es
in vec2 screen;
in vec4 colour;
out vec4 vColour;
uniform vec2 size;
uniform float pointSize;
void main() {
  gl_Position = vec4(screen.x / size.x * 2.0 - 1.0, 1.0 - screen.y / size.y * 2.0, 0.0, 1.0);
  gl_PointSize = colour.a > 0.0 ? pointSize : 0.0;
  vColour = colour;
}`;
const FRAGMENT = `#version 300 es
precision mediump float;
in vec4 vColour;
out vec4 outColour;
void main() { outColour = vColour; }`;

let gl: WebGL2RenderingContext | undefined;
let ctx2d: OffscreenCanvasRenderingContext2D | undefined;
let image: ImageData | undefined;
/** `image`'s pixels, one RGBA word each (the bytes in memory order, as `colours` holds them). */
let pixels = new Uint32Array(0);
let canvas: OffscreenCanvas | undefined;
let screenBuffer: WebGLBuffer | null = null;
let colourBuffer: WebGLBuffer | null = null;
let sizeUniform: WebGLUniformLocation | null = null;
let pointSizeUniform: WebGLUniformLocation | null = null;
let view = { longitude: 0, latitude: 0, zoom: 1, width: 1, height: 1 };
/** Web Mercator of each slot in world units (0..1), computed when data comes: a frame only scales and shifts them. */
let mercX = new Float64Array(0);
let mercY = new Float64Array(0);
let screen = new Float32Array(0);
let colours: Uint8Array = new Uint8Array(0);
let count = 0;
let coloursDirty = false;
let dirty = false;
let frames = 0;

const mercatorX = (lon: number) => (lon + 180) / 360;
const mercatorY = (lat: number) => {
  const s = Math.sin((Math.max(-85.05, Math.min(85.05, lat)) * Math.PI) / 180);
  return 0.5 - Math.log((1 + s) / (1 - s)) / (4 * Math.PI);
};

function setup2d(c: OffscreenCanvas): void {
  canvas = c;
  const context = c.getContext("2d", { alpha: true });
  if (!context) {
    postMessage({ error: "a 2D OffscreenCanvas is not available in this browser's workers" });
    return;
  }
  ctx2d = context;
}

/** The points' size in pixels: they grow a little as the user zooms in (2 px for a city of 100,000, 5 px for a street). */
const pointSize = () => Math.max(2, Math.min(6, view.zoom - 9));

/** Draws every shown slot as a pointSize square (as a GL point is) into the ImageData, the later slot over the earlier. */
function draw2d(): void {
  if (!ctx2d || !canvas) return;
  const { width, height } = view;
  if (canvas.width !== width || canvas.height !== height || !image) {
    canvas.width = width;
    canvas.height = height;
    image = ctx2d.createImageData(width, height);
    pixels = new Uint32Array(image.data.buffer);
  }
  pixels.fill(0);
  const scale = 512 * 2 ** view.zoom;
  const cx = mercatorX(view.longitude);
  const cy = mercatorY(view.latitude);
  const size = Math.round(pointSize());
  const half = size / 2;
  const hw = width / 2 - half;
  const hh = height / 2 - half;
  const rgba = new Uint32Array(colours.buffer, colours.byteOffset, count);
  for (let i = 0; i < count; i++) {
    const c = rgba[i]!;
    // Alpha is the top byte on little-endian machines (all the browsers' platforms): 0 is not drawn.
    if (c >>> 24 === 0) continue;
    // The square's top-left pixel, clipped to the canvas.
    const x0 = Math.round((mercX[i]! - cx) * scale + hw);
    const y0 = Math.round((mercY[i]! - cy) * scale + hh);
    if (x0 >= width || y0 >= height || x0 + size <= 0 || y0 + size <= 0) continue;
    const xa = Math.max(0, x0);
    const xb = Math.min(width, x0 + size);
    const yb = Math.min(height, y0 + size);
    for (let y = Math.max(0, y0); y < yb; y++) pixels.fill(c, y * width + xa, y * width + xb);
  }
  ctx2d.putImageData(image, 0, 0);
  frames++;
}

function setup(c: OffscreenCanvas): void {
  canvas = c;
  const context = c.getContext("webgl2", { antialias: false, premultipliedAlpha: false, alpha: true });
  if (!context) {
    postMessage({ error: "WebGL2 is not available in this browser's workers" });
    return;
  }
  gl = context;
  const compile = (type: number, source: string) => {
    const s = gl!.createShader(type)!;
    gl!.shaderSource(s, source);
    gl!.compileShader(s);
    if (!gl!.getShaderParameter(s, gl!.COMPILE_STATUS)) throw new Error(`shader: ${gl!.getShaderInfoLog(s)}`);
    return s;
  };
  const program = gl.createProgram()!;
  gl.attachShader(program, compile(gl.VERTEX_SHADER, VERTEX));
  gl.attachShader(program, compile(gl.FRAGMENT_SHADER, FRAGMENT));
  gl.linkProgram(program);
  gl.useProgram(program);
  sizeUniform = gl.getUniformLocation(program, "size");
  pointSizeUniform = gl.getUniformLocation(program, "pointSize");
  screenBuffer = gl.createBuffer();
  gl.bindBuffer(gl.ARRAY_BUFFER, screenBuffer);
  const screenAt = gl.getAttribLocation(program, "screen");
  gl.enableVertexAttribArray(screenAt);
  gl.vertexAttribPointer(screenAt, 2, gl.FLOAT, false, 0, 0);
  colourBuffer = gl.createBuffer();
  gl.bindBuffer(gl.ARRAY_BUFFER, colourBuffer);
  const colourAt = gl.getAttribLocation(program, "colour");
  gl.enableVertexAttribArray(colourAt);
  gl.vertexAttribPointer(colourAt, 4, gl.UNSIGNED_BYTE, true, 0, 0);
}

function draw(): void {
  if (!gl || !canvas) return;
  if (canvas.width !== view.width || canvas.height !== view.height) {
    canvas.width = view.width;
    canvas.height = view.height;
  }
  const scale = 512 * 2 ** view.zoom;
  const cx = mercatorX(view.longitude);
  const cy = mercatorY(view.latitude);
  const hw = view.width / 2;
  const hh = view.height / 2;
  for (let i = 0; i < count; i++) {
    screen[2 * i] = (mercX[i]! - cx) * scale + hw;
    screen[2 * i + 1] = (mercY[i]! - cy) * scale + hh;
  }
  gl.viewport(0, 0, view.width, view.height);
  gl.clearColor(0, 0, 0, 0);
  gl.clear(gl.COLOR_BUFFER_BIT);
  gl.uniform2f(sizeUniform, view.width, view.height);
  gl.uniform1f(pointSizeUniform, pointSize());
  gl.bindBuffer(gl.ARRAY_BUFFER, screenBuffer);
  gl.bufferData(gl.ARRAY_BUFFER, screen.subarray(0, 2 * count), gl.DYNAMIC_DRAW);
  if (coloursDirty) {
    gl.bindBuffer(gl.ARRAY_BUFFER, colourBuffer);
    gl.bufferData(gl.ARRAY_BUFFER, colours.subarray(0, 4 * count), gl.DYNAMIC_DRAW);
    coloursDirty = false;
  }
  gl.drawArrays(gl.POINTS, 0, count);
  frames++;
}

function schedule(): void {
  if (dirty) return;
  dirty = true;
  requestAnimationFrame(() => {
    dirty = false;
    try {
      if (ctx2d) draw2d();
      else draw();
    } catch (e) {
      postMessage({ error: String(e) });
    }
  });
}

/**
 * "auto": WebGL2 points where WebGL runs on a GPU, 2D squares where it runs in software
 * (SwiftShader, llvmpipe): there the one GPU process drew 100,000 points ~80 ms a frame and the
 * page's own WebGL waited behind it (bench web). Read from a 1 × 1 probe context, then let go.
 */
function chooseDrawing(): { drawing: "2d" | "webgl2"; renderer: string } {
  const probe = new OffscreenCanvas(1, 1).getContext("webgl2");
  if (!probe) return { drawing: "2d", renderer: "no WebGL2" };
  const info = probe.getExtension("WEBGL_debug_renderer_info");
  const renderer = String(probe.getParameter(info ? info.UNMASKED_RENDERER_WEBGL : probe.RENDERER) ?? "");
  probe.getExtension("WEBGL_lose_context")?.loseContext();
  return { drawing: /swiftshader|llvmpipe|softpipe|software/i.test(renderer) ? "2d" : "webgl2", renderer };
}

self.onmessage = (e: MessageEvent<WorkerMessage>) => {
  const m = e.data;
  if (m.type === "init") {
    const chosen = m.context === "auto" ? chooseDrawing() : { drawing: m.context ?? "2d", renderer: "" };
    postMessage({ drawing: chosen.drawing, glRenderer: chosen.renderer });
    if (chosen.drawing === "webgl2") setup(m.canvas);
    else setup2d(m.canvas);
  } else if (m.type === "view") {
    view = {
      longitude: m.longitude,
      latitude: m.latitude,
      zoom: m.zoom,
      width: Math.max(1, Math.round(m.width)),
      height: Math.max(1, Math.round(m.height)),
    };
  } else if (m.type === "data") {
    setData(m.positions, m.colours, m.count);
  } else {
    serve(m);
    return;
  }
  schedule();
};

/** Takes the vehicles' buffers ([lon, lat] and RGBA per slot) and their Web Mercator for the next frames. */
function setData(positions: Float32Array, rgba: Uint8Array, n: number): void {
  count = n;
  if (mercX.length < count) {
    mercX = new Float64Array(positions.length / 2);
    mercY = new Float64Array(positions.length / 2);
    screen = new Float32Array(positions.length);
  }
  for (let i = 0; i < count; i++) {
    mercX[i] = mercatorX(positions[2 * i]!);
    mercY[i] = mercatorY(positions[2 * i + 1]!);
  }
  colours = rgba;
  coloursDirty = true;
}

/** [lon, lat] in CSS pixels of the page's view, as draw() places it. */
function project(lon: number, lat: number): [number, number] {
  const scale = 512 * 2 ** view.zoom;
  return [
    (mercatorX(lon) - mercatorX(view.longitude)) * scale + view.width / 2,
    (mercatorY(lat) - mercatorY(view.latitude)) * scale + view.height / 2,
  ];
}

let serveOwned: ((m: SourceRequest) => void) | undefined;
let ownedVersion = -1;
let dataPending = false;
/** The page's requests about the vehicles: the first one makes this worker keep them. */
function serve(m: SourceRequest): void {
  if (!serveOwned) {
    const state = createMapState({ trailLength: 0 });
    const changed = () => {
      if (dataPending) return;
      dataPending = true;
      setTimeout(() => {
        dataPending = false;
        if (state.version === ownedVersion) return;
        ownedVersion = state.version;
        setData(state.positions, state.colours, state.slotCount);
        schedule();
      }, DATA_INTERVAL_MS);
    };
    serveOwned = serveSource(state, (r) => postMessage(r), changed, project);
  }
  serveOwned(m);
}

setInterval(() => postMessage({ frames }), 500);
