// The face bstrain preview draws (train/inference/preview.py draw_face), on a canvas:
// panel units -1..1 across a square of `size` pixels; ARKit curve values in [0, 1].
const SKIN = "rgb(236,200,170)", BACKGROUND = "rgb(225,225,230)", LIPS = "rgb(185,70,80)",
  MOUTH = "rgb(70,15,25)", EYE_WHITE = "rgb(250,250,250)", PUPIL = "rgb(35,35,45)",
  BROW = "rgb(90,60,40)", CHEEK = "rgb(230,150,150)";
const MOUTH_Y = 0.45, MOUTH_OPEN = 0.28;

export function drawFace(ctx, size, v) {
  const g = (name) => Math.min(1, Math.max(0, v[name] || 0));
  const px = (u) => (u + 1) * size / 2, len = (u) => u * size / 2;
  const ellipse = (cx, cy, rx, ry, color) => {
    ctx.fillStyle = color;
    ctx.beginPath();
    ctx.ellipse(px(cx), px(cy), Math.max(len(rx), 0.5), Math.max(len(ry), 0.5), 0, 0, 2 * Math.PI);
    ctx.fill();
  };
  ctx.fillStyle = BACKGROUND;
  ctx.fillRect(0, 0, size, size);
  ellipse(0.0, 0.05, 0.72, 0.9, SKIN);
  for (const [side, sx] of [["Left", 1], ["Right", -1]]) {  // the subject's left on the viewer's right
    const puff = g("cheekPuff") + 0.5 * g(`cheekSquint${side}`);
    ellipse(0.45 * sx, 0.2, 0.08 + 0.07 * puff, 0.06 + 0.05 * puff, CHEEK);
    const ex = 0.3 * sx, ey = -0.18;
    const open = (1 - g(`eyeBlink${side}`)) * (1 - 0.5 * g(`eyeSquint${side}`)) * (1 + 0.5 * g(`eyeWide${side}`));
    ellipse(ex, ey, 0.14, 0.09 * open, EYE_WHITE);
    const lookX = 0.05 * (g(`eyeLookOut${side}`) - g(`eyeLookIn${side}`)) * sx;
    const lookY = 0.04 * (g(`eyeLookDown${side}`) - g(`eyeLookUp${side}`));
    ctx.save();  // the pupil shows within the eye's white only
    ctx.beginPath();
    ctx.ellipse(px(ex), px(ey), len(0.14), Math.max(len(0.09 * open), 0.01), 0, 0, 2 * Math.PI);
    ctx.clip();
    ellipse(ex + lookX, ey + lookY, 0.05, 0.05, PUPIL);
    ctx.restore();
    const raise = 0.5 * g("browInnerUp") + 0.5 * g(`browOuterUp${side}`) - 0.6 * g(`browDown${side}`);
    const by = -0.38 - 0.12 * raise;
    ctx.fillStyle = BROW;
    ctx.fillRect(px(0.3 * sx - 0.13), px(by - 0.025), len(0.26), len(0.05));
  }
  const jaw = g("jawOpen") * (1 - 0.7 * g("mouthClose"));
  const smile = 0.5 * (g("mouthSmileLeft") + g("mouthSmileRight"));
  const width = 0.22 * (1 + 0.5 * smile + 0.3 * 0.5 * (g("mouthStretchLeft") + g("mouthStretchRight"))
    - 0.4 * g("mouthPucker") - 0.3 * g("mouthFunnel"));
  const shift = 0.08 * (g("mouthRight") - g("mouthLeft"));
  const cy = MOUTH_Y + 0.5 * MOUTH_OPEN * jaw - 0.03 * smile;
  ellipse(shift, cy, width + 0.03, 0.5 * MOUTH_OPEN * jaw + 0.04, LIPS);
  ellipse(shift, cy, width, 0.5 * MOUTH_OPEN * jaw + 0.004, MOUTH);
}

// The drawn mouth's height in pixels (train/inference/preview.py mouth_opening): the longest
// run of mouth-coloured pixels down the 16 columns at the middle.
export function mouthOpening(ctx, size) {
  const x0 = size / 2 - 8, img = ctx.getImageData(x0, 0, 16, size).data;
  let best = 0;
  for (let c = 0; c < 16; c++) {
    let n = 0;
    for (let y = 0; y < size; y++) {
      const i = 4 * (y * 16 + c);
      if (Math.abs(img[i] - 70) + Math.abs(img[i + 1] - 15) + Math.abs(img[i + 2] - 25) < 60) n++;
    }
    best = Math.max(best, n);
  }
  return best;
}
