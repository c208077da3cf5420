// The global rates over the last minutes, drawn on a canvas: download and upload as two
// lines, scaled to the highest rate in view.

import { rate } from './format.js';

const KEEP = 200;

export class RateGraph {
  constructor(canvas) {
    this.canvas = canvas;
    this.samples = [];
  }

  push(down, up) {
    this.samples.push([down || 0, up || 0]);
    if (this.samples.length > KEEP) this.samples.shift();
    this.draw();
  }

  draw() {
    const c = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const w = c.clientWidth || 240, h = c.clientHeight || 36;
    if (c.width !== Math.round(w * ratio)) { c.width = Math.round(w * ratio); c.height = Math.round(h * ratio); }
    const g = c.getContext('2d');
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, w, h);
    const max = Math.max(1024, ...this.samples.map(([d, u]) => Math.max(d, u)));
    const step = w / (KEEP - 1);
    const x0 = w - (this.samples.length - 1) * step;
    for (const [i, colour] of [[0, '#2f7dd1'], [1, '#2f9d57']]) {
      g.beginPath();
      this.samples.forEach((s, j) => {
        const x = x0 + j * step, y = h - 1 - (s[i] / max) * (h - 4);
        if (j) g.lineTo(x, y); else g.moveTo(x, y);
      });
      g.strokeStyle = colour;
      g.lineWidth = 1.5;
      g.stroke();
    }
    c.title = `Transfer rates, last ${this.samples.length} updates; top of the scale ${rate(max)}`;
  }
}
