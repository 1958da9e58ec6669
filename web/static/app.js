// micromotion page: camera → server (aiortc) → edited stream; controls over the "controls" data channel.
// window.micromotion exposes the live objects and counters (used by the browser test and for debugging).
"use strict";

const $ = (id) => document.getElementById(id);
const mm = (window.micromotion = {
  pc: null, dc: null, config: null, lastStats: null, lastError: null, framesShown: 0,
  firstFrameMs: null, startedAt: null, controlsAcked: null,
});

function showError(message) {
  mm.lastError = message;
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function currentControls() {
  const alpha = parseFloat($("alpha").value);
  const direction = $("direction").value;
  return {
    directions: direction ? { [direction]: alpha } : {},
    animate: $("animate").checked,
    period_s: parseFloat($("period").value),
    enabled: $("enabled").checked,
  };
}

// The α slider follows the picked direction's suggested range (GET /config "alpha": min/max/step/default from
// the direction file's metadata). A hint only: the server accepts any finite |α| <= 100.
function alphaHint(name) {
  const hints = (mm.config && mm.config.alpha) || {};
  return hints[name] || { min: 0, max: 5, step: 0.05, default: 2.5 };
}

function decimals(step) {
  const s = String(step);
  return s.includes(".") ? Math.min(s.split(".")[1].length, 3) : 0;
}

function showAlpha() {
  const a = $("alpha");
  $("alpha-value").textContent = parseFloat(a.value).toFixed(decimals(a.step));
}

// value: "default" → the direction's suggested α; "rest" → 0 clamped into the range (the page starts unedited)
function applyAlphaRange(name, value) {
  const h = alphaHint(name), a = $("alpha");
  a.min = h.min; a.max = h.max; a.step = h.step;
  a.value = value === "default" ? h.default : Math.min(Math.max(0, h.min), h.max);
  $("alpha-min").textContent = h.min;
  $("alpha-max").textContent = h.max;
  showAlpha();
}
mm.applyAlphaRange = applyAlphaRange;

function sendControls(controls) {
  if (!mm.dc || mm.dc.readyState !== "open") return false;
  mm.dc.send(JSON.stringify({ type: "controls", controls: controls || currentControls() }));
  return true;
}
mm.sendControls = sendControls;

function onMessage(event) {
  let msg;
  try { msg = JSON.parse(event.data); } catch (e) { return; }
  if (msg.type === "stats") {
    mm.lastStats = msg;
    $("fps").textContent = msg.fps.toFixed(1);
    $("latency").textContent = msg.latency_ms == null ? "–" : `${msg.latency_ms.toFixed(0)} ms`;
    $("process").textContent = msg.process_ms == null ? "–" : `${msg.process_ms.toFixed(0)} ms`;
    $("dropped").textContent = msg.dropped;
  } else if (msg.type === "controls_ok") {
    mm.controlsAcked = msg.controls;
    $("error").hidden = true;
  } else if (msg.type === "error") {
    showError(msg.message);
  }
}

function countShownFrames(video) {
  let last = performance.now(), frames = 0;
  const tick = (now) => {
    mm.framesShown += 1;
    frames += 1;
    if (mm.firstFrameMs === null) mm.firstFrameMs = performance.now() - mm.startedAt;
    if (now - last >= 1000) {
      $("shown-fps").textContent = (frames * 1000 / (now - last)).toFixed(1);
      frames = 0; last = now;
    }
    video.requestVideoFrameCallback(tick);
  };
  video.requestVideoFrameCallback(tick);
}

function waitForIceGathering(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const check = () => {
      if (pc.iceGatheringState === "complete") {
        pc.removeEventListener("icegatheringstatechange", check);
        resolve();
      }
    };
    pc.addEventListener("icegatheringstatechange", check);
    setTimeout(resolve, 3000);  // send what we have: host candidates come first
  });
}

async function start() {
  $("start").disabled = true;
  $("error").hidden = true;
  mm.startedAt = performance.now();
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
    $("local").srcObject = stream;
    const pc = (mm.pc = new RTCPeerConnection({ iceServers: (mm.config && mm.config.iceServers) || [] }));
    pc.addEventListener("connectionstatechange", () => { $("state").textContent = pc.connectionState; });
    pc.addEventListener("track", (event) => {
      const remote = $("remote");
      remote.srcObject = event.streams[0] || new MediaStream([event.track]);
      countShownFrames(remote);
    });
    const dc = (mm.dc = pc.createDataChannel("controls"));
    dc.addEventListener("open", () => sendControls());
    dc.addEventListener("message", onMessage);
    for (const track of stream.getVideoTracks()) pc.addTrack(track, stream);
    await pc.setLocalDescription(await pc.createOffer());
    await waitForIceGathering(pc);
    const response = await fetch("/offer", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ sdp: pc.localDescription.sdp, type: pc.localDescription.type }),
    });
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error || `server said ${response.status}`);
    await pc.setRemoteDescription(answer);
    $("stop").disabled = false;
  } catch (err) {
    showError(`could not start: ${err.message || err}` +
      (window.isSecureContext ? "" : " (cameras need https:// or localhost: start the server with --cert/--key)"));
    $("start").disabled = false;
  }
}

function stop() {
  if (mm.pc) mm.pc.close();
  const local = $("local").srcObject;
  if (local) local.getTracks().forEach((t) => t.stop());
  mm.pc = mm.dc = null;
  $("state").textContent = "closed";
  $("start").disabled = false;
  $("stop").disabled = true;
}

async function init() {
  try {
    mm.config = await (await fetch("/config")).json();
  } catch (err) {
    showError(`cannot reach the server: ${err}`);
    return;
  }
  $("mode").textContent = mm.config.mode;
  if (mm.config.notice) {
    const box = $("notice");
    box.textContent = "";
    const parts = String(mm.config.notice).split(/`([^`]+)`/);  // `command` → <code>
    parts.forEach((part, i) => {
      if (i % 2) { const c = document.createElement("code"); c.textContent = part; box.appendChild(c); }
      else box.appendChild(document.createTextNode(part));
    });
    box.hidden = false;
  }
  const select = $("direction");
  if (!mm.config.directions.length) {
    const opt = document.createElement("option");
    opt.value = ""; opt.textContent = "none installed";
    select.appendChild(opt);
    select.disabled = true;
  }
  for (const name of mm.config.directions) {
    const opt = document.createElement("option");
    opt.value = opt.textContent = name;
    select.appendChild(opt);
  }
  applyAlphaRange(select.value, "rest");
  const onChange = () => {
    showAlpha();
    $("period-value").textContent = `${parseFloat($("period").value).toFixed(1)} s`;
    sendControls();
  };
  for (const id of ["alpha", "period", "animate", "enabled"]) $(id).addEventListener("input", onChange);
  $("direction").addEventListener("change", () => { applyAlphaRange(select.value, "default"); onChange(); });
  $("start").addEventListener("click", start);
  $("stop").addEventListener("click", stop);
  mm.ready = true;
}

init();
