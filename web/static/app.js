// micromotion page: camera → server (aiortc) → edited stream; controls over the "controls" data channel.
// Reenact mode: a target photo goes to POST /target (checked there: a photo, not too large, a face in it); its token
// and the reenactment options go over the data channel ("reenact"); the stream then shows the target animated.
// With /config "kind": "remote" (python -m web --control URL) the page has no media: its controls drive a running
// virtual camera through POST /controls and its status line reads GET /stats.
// window.micromotion exposes the live objects and counters (used by the browser tests and for debugging).
"use strict";

const $ = (id) => document.getElementById(id);
const mm = (window.micromotion = {
  pc: null, dc: null, config: null, lastStats: null, lastError: null, framesShown: 0,
  firstFrameMs: null, startedAt: null, controlsAcked: null, phase: "loading", recorder: null, recording: null,
  recordingDone: null, status: null,
  reenact: { mode: "edit", target: null, refusal: null, uploading: false, acked: null, thumb: null },
});

// ------------------------------------------------------------------------------------------------ words
const MODE_WORDS = {
  full: ["full effect", "networks and directions loaded: the face is edited"],
  tracking: ["tracking only", "no networks: the face is found and outlined, not edited (see the status line)"],
  demo: ["demo", "started with --demo: faces are tinted per direction, no networks"],
};
// the server's states (stream.status) → a short label; the server's own message follows it
const STATE_LABELS = {
  ready: "Ready", demo: "Demo", networks_missing: "Networks missing", tracking_only: "Tracking only",
  directions_missing: "Directions missing", unreachable: "Virtual camera not reachable",
  running: "Running", waiting: "Face found", stale: "Edit stale", no_face: "No face in view",
  face_too_small: "Face too small", off: "Effect off", error: "Frame failed", starting: "Camera starting",
  calibrating: "Calibrating", driving: "Driving", driver_lost: "Driver face lost",
  target_refused: "Target photo refused", target_ready: "Target ready", reading_target: "Reading the photo",
  switching: "Switching to the target", pick_target: "Pick a target photo",
};
// what to do, where the server's own line would only repeat the label
const STATE_HINTS = {
  no_face: "nothing to edit: look into the camera",
  off: "the camera passes through unchanged: tick “effect on” to edit",
};
const EDIT_STATES = ["running", "stale", "directions_missing", "driving", "driver_lost"];
const STATE_KIND = {  // the status line's colour
  ready: "ok", running: "ok", demo: "ok", waiting: "busy", starting: "busy", connecting: "busy",
  stale: "warn", no_face: "warn", face_too_small: "warn", off: "idle", idle: "idle", stopped: "idle",
  networks_missing: "bad", tracking_only: "warn", directions_missing: "bad", unreachable: "bad", error: "bad",
  calibrating: "busy", driving: "ok", driver_lost: "warn", target_refused: "bad", target_ready: "ok",
  reading_target: "busy", switching: "busy", pick_target: "warn",
};

// ------------------------------------------------------------------------------------------------ small helpers
function withCode(box, text) {
  // `command` → <code>command</code>, the rest as text (never HTML)
  box.textContent = "";
  String(text || "").split(/`([^`]+)`/).forEach((part, i) => {
    if (i % 2) { const c = document.createElement("code"); c.textContent = part; box.appendChild(c); }
    else box.appendChild(document.createTextNode(part));
  });
}

function showError(message) {
  mm.lastError = message;
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function setStatus(state, label, text) {
  mm.status = { state, label, text };
  const box = $("status");
  box.dataset.state = state;
  box.dataset.kind = STATE_KIND[state] || "idle";
  $("status-label").textContent = label;
  withCode($("status-text"), text || "");
}

const isRemote = () => !!(mm.config && mm.config.kind === "remote");
const hasDirections = () => !!(mm.config && mm.config.directions && mm.config.directions.length);

// the state the server is in before any frame: what is missing, or ready
function configStatus() {
  const c = mm.config || {};
  const state = c.state || "ready";
  if (state === "ready") {
    return isRemote() ? ["ready", "Ready", "driving the virtual camera: its picture goes to the camera, not here"]
      : ["ready", "Ready", "press Start to use your camera"];
  }
  return [state, STATE_LABELS[state] || state, c.notice || state.replace(/_/g, " ")];
}

// reenactment's lines begin with the state's own words ("driving the target; …"): the label says them once
const LEADS = { calibrating: /^calibrating:\s*/i, driving: /^driving\s*/i, driver_lost: /^driver face lost:?\s*/i };

function streamStatus(s) {
  const label = STATE_LABELS[s.state] || s.state;
  let text = s.message || "";
  if (!text || text.toLowerCase() === label.toLowerCase()) text = STATE_HINTS[s.state] || text;
  if (LEADS[s.state]) text = text.replace(LEADS[s.state], "");
  const alphas = Object.values((s.controls && s.controls.directions) || {});
  if (s.state === "running" && alphas.length && alphas.every((a) => a === 0)) {
    text += " — α is 0, so nothing changes: move the α slider";
  }
  return [s.state, label, text];
}

// reenact mode's own lines (the target photo's upload, the switch): null when the stream's own state is the news
function reenactStatus(s) {
  const r = mm.reenact;
  if (r.mode !== "reenact" || isRemote()) return null;
  const streaming = !!(s && s.stream === "reenact");
  if (r.uploading) return ["reading_target", STATE_LABELS.reading_target, "checking the photo and finding its face…"];
  if (r.refusal) {
    return ["target_refused", STATE_LABELS.target_refused,
      r.refusal + (streaming ? " (still driving the previous photo)" : "")];
  }
  if (!r.target) {
    return ["pick_target", STATE_LABELS.pick_target, "choose the photo your face will drive" +
      (mm.phase === "running" ? " (your camera is edited meanwhile)" : "")];
  }
  const name = `‘${r.target.name}’ ${r.target.width}×${r.target.height}`;
  if (mm.phase !== "running") {
    return ["target_ready", STATE_LABELS.target_ready, `${name}: press Start; the first seconds calibrate ` +
      "(start with a neutral face, then move your head)"];
  }
  if (s && !streaming) return ["switching", STATE_LABELS.switching, `${name}: finding its face and starting…`];
  return null;
}

function renderStatus() {
  const s = mm.lastStats;
  const reenact = reenactStatus(s);
  if (mm.phase === "connecting") setStatus("connecting", "Connecting", "asking for the camera and the server…");
  else if (reenact && (mm.phase !== "idle" || mm.config.state === "ready" || mm.reenact.refusal
                       || mm.reenact.uploading)) setStatus(...reenact);
  else if ((mm.phase === "running" || mm.phase === "remote") && s && s.state) setStatus(...streamStatus(s));
  else if (mm.phase === "running") setStatus("connecting", "Connecting", "waiting for the first edited frame…");
  else {
    const [state, label, text] = configStatus();
    if (mm.phase === "stopped" && state === "ready") setStatus("stopped", "Stopped", "press Start to go again");
    else setStatus(state, label, text);
  }
  // the notice repeats what is missing only while the status line says something else
  const noticeText = $("notice-text");
  if (noticeText) noticeText.hidden = mm.status.state === (mm.config && mm.config.state);
  $("notice").hidden = ![...$("notice").children].some((e) => !e.hidden);
}
mm.renderStatus = renderStatus;

// ------------------------------------------------------------------------------------------------ readouts
function renderFace(s) {
  const el = $("face");
  let face = "idle", text = "face: –";
  if (s && s.state) {
    const faces = (s.effect && s.effect.faces) || 0;
    if (s.state === "no_face") { face = "none"; text = "no face"; }
    else if (s.state === "face_too_small") { face = "small"; text = "face too small"; }
    else if (s.state === "off") { face = "idle"; text = "effect off"; }
    else if (s.state === "driver_lost" && !faces) { face = "none"; text = "no face: pose held"; }
    else if (faces > 0 || ["running", "waiting", "stale", "networks_missing", "tracking_only",
      "directions_missing"].includes(s.state)) { face = "found"; text = faces > 1 ? `${faces} faces` : "face found"; }
  }
  el.dataset.face = face;
  $("face-text").textContent = text;
}

const READOUTS = ["fps", "latency", "process", "edit-age", "dropped", "shown-fps"];

function renderReadout(s) {
  const ms = (v) => (v == null ? "–" : `${Number(v).toFixed(0)} ms`);
  $("fps").textContent = s.fps == null ? "–" : Number(s.fps).toFixed(1);
  $("latency").textContent = ms(s.latency_ms);
  $("process").textContent = ms(s.process_ms);
  $("edit-age").textContent = EDIT_STATES.includes(s.state) ? ms(s.edit_age_ms) : "–";
  $("dropped").textContent = s.dropped == null ? "–" : s.dropped;
}

function clearReadouts() {
  for (const id of READOUTS) $(id).textContent = "–";
  mm.lastStats = null;
  renderFace(null);
}

// ------------------------------------------------------------------------------------------------ controls
function currentControls() {
  const alpha = parseFloat($("alpha").value);
  const direction = $("direction").value;
  const controls = {
    directions: direction ? { [direction]: alpha } : {},
    animate: $("animate").checked,
    period_s: parseFloat($("period").value),
    enabled: $("enabled").checked,
    paste_mode: $("paste-mode").value,
  };
  const faces = parseInt($("max-faces").value, 10);
  if (faces > 0) controls.max_faces = faces;
  return controls;
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
  a.value = value === "default" ? h.default : (typeof value === "number" ? value : Math.min(Math.max(0, h.min), h.max));
  $("alpha-min").textContent = h.min;
  $("alpha-max").textContent = h.max;
  showAlpha();
}
mm.applyAlphaRange = applyAlphaRange;

function sendControls(controls) {
  const body = JSON.stringify({ type: "controls", controls: controls || currentControls() });
  if (isRemote()) {
    postRemoteControls(controls || currentControls());
    return true;
  }
  if (!mm.dc || mm.dc.readyState !== "open") return false;
  mm.dc.send(body);
  return true;
}
mm.sendControls = sendControls;

// every control that can do nothing now is disabled, and the list under the controls says why
function updateControlStates() {
  const c = mm.config || {};
  const reasons = [];
  const off = !$("enabled").checked;
  const noDirections = !hasDirections();
  const disable = (ids, why) => {
    for (const id of ids) { $(id).disabled = true; $(id).title = why; }
  };
  for (const id of ["direction", "alpha", "animate", "period", "enabled", "max-faces", "paste-mode"]) {
    $(id).disabled = false; $(id).removeAttribute("title");
  }
  if (noDirections) {
    const why = `No direction to apply: ${(STATE_LABELS[c.state] || "none installed").toLowerCase()} ` +
      "(the status line says how to fix it)";
    reasons.push(why);
    disable(["direction", "alpha", "animate", "period"], why);
  } else if (off) {
    const why = "The effect is off: tick “effect on” to edit";
    reasons.push(why);
    disable(["direction", "alpha", "animate", "period", "paste-mode"], why);
  } else if (!$("animate").checked) {
    disable(["period"], "the period applies while animating");
  }
  if (!c.available && !off) {
    const why = "Paste: nothing is pasted without networks";
    reasons.push(why);
    disable(["paste-mode"], why);
  }
  if ((c.max_faces || 1) <= 1) {
    disable(["max-faces"], "the server edits one face: start it with --max-faces N for more");
  }
  if (c.state === "unreachable") {
    const why = "The virtual camera does not answer";
    disable(["direction", "alpha", "animate", "period", "enabled", "max-faces", "paste-mode"], why);
  }
  if (mm.reenact.mode === "reenact") {
    const why = "Reenact mode: these controls edit your own face (pick “edit my face” to use them)";
    reasons.splice(0, reasons.length, why);
    disable(["direction", "alpha", "animate", "period", "enabled", "max-faces", "paste-mode"], why);
  }
  const list = $("controls-reason");
  list.textContent = "";
  for (const r of reasons) { const li = document.createElement("li"); withCode(li, r); list.appendChild(li); }
  list.hidden = reasons.length === 0;
  updateSourceStates();
}
mm.updateControlStates = updateControlStates;

function updateSourceStates() {
  const running = mm.phase === "running";
  const remote = isRemote();
  $("start").disabled = remote || running || mm.phase === "connecting" || mm.phase === "loading";
  $("stop").disabled = remote || !running;
  $("stop").title = running ? "stop the camera and the stream" : "Start first";
  const recording = !!(mm.recorder && mm.recorder.state === "recording");
  $("record").disabled = remote || !(running && $("remote").srcObject);
  $("record").title = remote ? "the picture goes to the virtual camera, not to this page"
    : (running ? "record the edited stream (webm)" : "Start first: records the edited stream");
  $("record").textContent = recording ? "■ Stop recording" : "● Record";
  $("record").classList.toggle("recording", recording);
  for (const id of ["camera", "resolution", "split"]) $(id).disabled = remote;
  if (mm.reenact.mode === "reenact") {
    $("split").disabled = true;
    $("split").title = "the split compares the camera with its edit; in reenact mode the stream is another photo";
  } else $("split").title = "";
  if (running && !remote && mm.reenact.mode === "reenact") $("record").title = "record the stream: the target, driven (webm)";
  const reason = $("source-reason");
  reason.hidden = !remote;
  if (remote) {
    withCode(reason, `This page drives the virtual camera at ${mm.config.control_url}: its picture goes to the ` +
      "virtual camera (pick it in your call app), not to this page. Preview keys there: + / - α, space on/off.");
  }
}

function fillDirections() {
  const select = $("direction");
  select.textContent = "";
  if (!hasDirections()) {
    const opt = document.createElement("option");
    opt.value = ""; opt.textContent = "none installed";
    select.appendChild(opt);
  }
  for (const name of mm.config.directions || []) {
    const opt = document.createElement("option");
    opt.value = opt.textContent = name;
    select.appendChild(opt);
  }
  applyAlphaRange(select.value, "rest");
  const faces = $("max-faces");
  faces.textContent = "";
  const cap = Math.max(1, mm.config.max_faces || 1);
  for (let n = 1; n <= cap; n++) {
    const opt = document.createElement("option");
    opt.value = String(n); opt.textContent = String(n);
    faces.appendChild(opt);
  }
  faces.value = String(cap);
}

// the controls the server reports (a virtual camera started with its own flags) → the widgets
function showControls(controls, maxFaces) {
  if (!controls) return;
  const names = Object.keys(controls.directions || {});
  if (names.length && (mm.config.directions || []).includes(names[0])) {
    $("direction").value = names[0];
    applyAlphaRange(names[0], controls.directions[names[0]]);
  }
  $("animate").checked = !!controls.animate;
  $("enabled").checked = controls.enabled !== false;
  if (controls.period_s) $("period").value = controls.period_s;
  $("period-value").textContent = `${parseFloat($("period").value).toFixed(1)} s`;
  if (controls.paste_mode) $("paste-mode").value = controls.paste_mode;
  if (maxFaces) $("max-faces").value = String(maxFaces);
  updateControlStates();
}

// ------------------------------------------------------------------------------------------------ messages
function onStats(msg) {
  const was = mm.lastStats && mm.lastStats.stream;
  mm.lastStats = msg;
  renderReadout(msg);
  renderFace(msg);
  if (msg.stream !== was) updateReenactStates();
  renderStatus();
}

function onMessage(event) {
  let msg;
  try { msg = JSON.parse(event.data); } catch (e) { return; }
  if (msg.type === "stats") {
    if (mm.phase === "running") onStats(msg);
  } else if (msg.type === "controls_ok") {
    mm.controlsAcked = msg.controls;
    $("error").hidden = true;
  } else if (msg.type === "reenact_ok") {
    mm.reenact.acked = msg;
    $("error").hidden = true;
    renderStatus();
  } else if (msg.type === "error") {
    if (String(msg.message).startsWith("reenactment refused")) {
      mm.reenact.refusal = msg.message;
      if (msg.message.includes("not held here")) {       // expired or the server restarted: pick it again
        mm.reenact.target = null;
        $("target-thumb").hidden = true;
        $("target-info").textContent = "";
        updateReenactStates();
      }
      renderStatus();
    }
    showError(msg.message);
  }
}

// ------------------------------------------------------------------------------------------------ camera and stream
let shownLoop = 0;
function countShownFrames(video) {
  const loop = ++shownLoop;
  let last = performance.now(), frames = 0;
  const tick = (now) => {
    if (loop !== shownLoop) return;
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

function cameraConstraints() {
  const [w, h] = $("resolution").value.split("x").map(Number);
  const video = { width: { ideal: w }, height: { ideal: h } };
  if ($("camera").value) video.deviceId = { exact: $("camera").value };
  return { video, audio: false };
}

async function listCameras() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return;
  const select = $("camera"), keep = select.value;
  const cams = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "videoinput");
  select.textContent = "";
  const def = document.createElement("option");
  def.value = ""; def.textContent = "default camera";
  select.appendChild(def);
  cams.forEach((d, i) => {
    if (!d.deviceId) return;       // no permission yet: ids and labels come after Start
    const opt = document.createElement("option");
    opt.value = d.deviceId; opt.textContent = d.label || `camera ${i + 1}`;
    select.appendChild(opt);
  });
  if ([...select.options].some((o) => o.value === keep)) select.value = keep;
}

async function start() {
  mm.phase = "connecting";
  updateSourceStates();
  renderStatus();
  $("error").hidden = true;
  mm.startedAt = performance.now();
  mm.firstFrameMs = null;
  try {
    const stream = await navigator.mediaDevices.getUserMedia(cameraConstraints());
    $("local").srcObject = stream;
    if ($("split").checked) $("before").srcObject = stream;
    listCameras();
    const pc = (mm.pc = new RTCPeerConnection({ iceServers: (mm.config && mm.config.iceServers) || [] }));
    pc.addEventListener("connectionstatechange", () => {
      $("state").textContent = pc.connectionState;
      if (["failed", "closed"].includes(pc.connectionState) && mm.pc === pc) {
        showError(`the connection ${pc.connectionState}; press Start to try again`);
        stop();
      }
    });
    pc.addEventListener("track", (event) => {
      const remote = $("remote");
      remote.srcObject = event.streams[0] || new MediaStream([event.track]);
      countShownFrames(remote);
      updateSourceStates();
    });
    const dc = (mm.dc = pc.createDataChannel("controls"));
    dc.addEventListener("open", () => {
      sendControls();
      if (mm.reenact.mode === "reenact" && mm.reenact.target) sendReenact();
    });
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
    mm.phase = "running";
  } catch (err) {
    showError(`could not start: ${err.message || err}` +
      (window.isSecureContext ? "" : " (cameras need https:// or localhost: start the server with --cert/--key)"));
    stop();
    return;
  }
  updateSourceStates();
  renderStatus();
}

// a new camera or resolution while streaming: the same connection carries the new track
async function switchSource() {
  if (mm.phase !== "running" || !mm.pc) return;
  try {
    const stream = await navigator.mediaDevices.getUserMedia(cameraConstraints());
    const track = stream.getVideoTracks()[0];
    const sender = mm.pc.getSenders().find((s) => s.track && s.track.kind === "video");
    if (sender) await sender.replaceTrack(track);
    const old = $("local").srcObject;
    $("local").srcObject = stream;
    if ($("split").checked) $("before").srcObject = stream;
    if (old) old.getTracks().forEach((t) => t.stop());
  } catch (err) {
    showError(`could not switch the camera: ${err.message || err}`);
  }
}

function stop() {
  if (mm.recorder && mm.recorder.state === "recording") mm.recorder.stop();
  if (mm.pc) mm.pc.close();
  const local = $("local").srcObject;
  if (local) local.getTracks().forEach((t) => t.stop());
  $("local").srcObject = null;
  $("remote").srcObject = null;
  $("before").srcObject = null;
  shownLoop += 1;
  mm.pc = mm.dc = null;
  mm.phase = "stopped";
  $("state").textContent = "closed";
  mm.reenact.acked = null;
  clearReadouts();
  updateSourceStates();
  updateReenactStates();
  renderStatus();
}

// ------------------------------------------------------------------------------------------------ recording
function startRecording() {
  const stream = $("remote").srcObject;
  if (!stream || !window.MediaRecorder) { showError("nothing to record yet (or this browser cannot record)"); return false; }
  const type = ["video/webm;codecs=vp8", "video/webm;codecs=vp9", "video/webm"]
    .find((t) => MediaRecorder.isTypeSupported(t)) || "";
  const rec = new MediaRecorder(stream, type ? { mimeType: type } : {});
  const chunks = [];
  rec.addEventListener("dataavailable", (e) => { if (e.data && e.data.size) chunks.push(e.data); });
  mm.recordingDone = new Promise((resolve) => {
    rec.addEventListener("stop", () => {
      const blob = new Blob(chunks, { type: (rec.mimeType || "video/webm").split(";")[0] });
      mm.recording = blob;
      const link = $("download");
      if (link.href) URL.revokeObjectURL(link.href);
      link.href = URL.createObjectURL(blob);
      link.download = `micromotion-${new Date().toISOString().replace(/[:.]/g, "-")}.webm`;
      link.textContent = `download recording (${(blob.size / 1024).toFixed(0)} kB)`;
      link.hidden = false;
      updateSourceStates();
      resolve(blob);
    });
  });
  rec.start(500);
  mm.recorder = rec;
  updateSourceStates();
  return true;
}
mm.startRecording = startRecording;

function stopRecording() {
  if (mm.recorder && mm.recorder.state === "recording") mm.recorder.stop();
  return mm.recordingDone;
}
mm.stopRecording = stopRecording;

// ------------------------------------------------------------------------------------------------ before/after
function applySplit() {
  const on = $("split").checked;
  $("before").hidden = !on;
  $("split-line").hidden = !on;
  $("split-pos").hidden = !on;
  $("before").srcObject = on ? $("local").srcObject : null;
  $("stage").style.setProperty("--split", `${$("split-pos").value}%`);
}

// ------------------------------------------------------------------------------------------------ reenact mode
const REENACT_INPUTS = ["target-file", "rank", "layer-start", "layer-stop", "beta", "reference", "smoothing", "method",
  "reenact-paste", "calibration", "calibration-s", "recalibrate"];
const intOrNull = (id) => ($(id).value.trim() === "" ? null : parseInt($(id).value, 10));

function currentReenact() {
  const start = intOrNull("layer-start") || 0, stop = intOrNull("layer-stop");
  return {
    options: {
      rank: intOrNull("rank") || 1,
      layers: start === 0 && stop === null ? null : [start, stop],
      beta: parseFloat($("beta").value),
      reference: intOrNull("reference"),
      smoothing: parseFloat($("smoothing").value),
      method: $("method").value,
    },
    paste_mode: $("reenact-paste").value,
    calibration: intOrNull("calibration") || 2,
    calibration_s: parseFloat($("calibration-s").value) || 0,
  };
}

// the target and every option, to the server (it builds, refits or applies at once: web.peer)
function sendReenact(extra) {
  if (!mm.dc || mm.dc.readyState !== "open" || !mm.reenact.target) return false;
  mm.dc.send(JSON.stringify({ type: "reenact", target: mm.reenact.target.target, ...currentReenact(), ...(extra || {}) }));
  return true;
}
mm.sendReenact = sendReenact;

function sendMessage(msg) {
  if (!mm.dc || mm.dc.readyState !== "open") return false;
  mm.dc.send(JSON.stringify(msg));
  return true;
}
mm.sendMessage = sendMessage;

// the photo to the server: refused there (the project's one line) or held under a token
async function uploadTarget(file) {
  const r = mm.reenact, limits = mm.config.reenact || {};
  r.refusal = null;
  r.uploading = true;
  renderStatus();
  try {
    const limit = (limits.max_target_mb || 10) * 2 ** 20;
    if (file.size > limit) {
      throw new Error(`'${file.name}' is over the ${limits.max_target_mb} MB limit for a target photo; use a smaller file`);
    }
    const response = await fetch(`/target?name=${encodeURIComponent(file.name)}`, {
      method: "POST", headers: { "Content-Type": "application/octet-stream" }, body: file,
    });
    let reply;
    try { reply = await response.json(); } catch (e) { reply = {}; }
    if (!response.ok) throw new Error(reply.error || `the server said ${response.status}`);
    r.target = reply;
    if (r.thumb) URL.revokeObjectURL(r.thumb);
    r.thumb = URL.createObjectURL(file);
    $("target-thumb").src = r.thumb;
    $("target-thumb").hidden = false;
    $("target-info").textContent = `${reply.name} ${reply.width}×${reply.height}` +
      (reply.scaled ? ` (scaled from ${reply.source_size[0]}×${reply.source_size[1]})` : "");
    sendReenact();
  } catch (err) {
    r.refusal = String(err.message || err);
  } finally {
    $("target-file").value = "";      // picking the same file again is a new upload (a change event)
    r.uploading = false;
    updateReenactStates();
    renderStatus();
  }
  return { target: r.target, refusal: r.refusal };
}
mm.uploadTarget = uploadTarget;

function setStreamMode(mode) {
  mm.reenact.mode = mode;
  mm.reenact.refusal = null;
  $(mode === "reenact" ? "mode-reenact" : "mode-edit").checked = true;
  if (mode === "reenact") {
    if ($("split").checked) { $("split").checked = false; applySplit(); }
    sendReenact();
  } else sendMessage({ type: "edit" });
  updateControlStates();
  updateReenactStates();
  renderStatus();
}
mm.setStreamMode = setStreamMode;

function updateReenactStates() {
  const c = mm.config || {}, rc = c.reenact;
  const shown = !!rc && !isRemote();
  $("mode-pick").hidden = !shown;
  $("reenact-panel").hidden = !shown || mm.reenact.mode !== "reenact";
  $("remote-caption").textContent = mm.reenact.mode === "reenact" ? "target, driven by your face" : "edited";
  $("edit-age-label").textContent = mm.reenact.mode === "reenact" ? "pose age" : "edit age";
  if (!shown) return;
  const reasons = [];
  for (const id of REENACT_INPUTS) { $(id).disabled = false; $(id).removeAttribute("title"); }
  const disable = (ids, why) => { for (const id of ids) { $(id).disabled = true; $(id).title = why; } };
  if (!rc.available) {
    const why = `No networks: the target photo is shown as it is (${rc.notice || "see the status line"})`;
    reasons.push(why);
    disable(REENACT_INPUTS.filter((id) => id !== "target-file"), why);
  }
  if (!mm.reenact.target) reasons.push("Pick a target photo: a face must be visible in it");
  const streaming = !!(mm.lastStats && mm.lastStats.stream === "reenact");
  if (!streaming && rc.available) disable(["recalibrate"], "Start with a target photo first");
  if ($("method").value === "none" && rc.available) {
    disable(["rank"], "method none transfers the raw latent offsets: no subspace, no rank");
  }
  const cal = intOrNull("calibration") || rc.calibration;
  $("rank").max = Math.max(1, cal - 1);
  $("reference").max = Math.max(0, cal - 1);
  if (rc.num_ws) { $("layer-start").max = rc.num_ws - 1; $("layer-stop").max = rc.num_ws; }
  $("beta-value").textContent = parseFloat($("beta").value).toFixed(2);
  $("smoothing-value").textContent = parseFloat($("smoothing").value).toFixed(1);
  const list = $("reenact-reason");
  list.textContent = "";
  for (const r of reasons) { const li = document.createElement("li"); withCode(li, r); list.appendChild(li); }
  list.hidden = reasons.length === 0;
}
mm.updateReenactStates = updateReenactStates;

function fillReenact() {
  const rc = mm.config.reenact;
  if (!rc) return;
  const d = rc.defaults;      // none without networks: the options are greyed, the page's own values stay
  if (d) {
    $("rank").value = d.rank;
    $("beta").value = d.beta;
    $("smoothing").value = d.smoothing;
    $("method").value = d.method;
    $("reference").value = d.reference == null ? "" : d.reference;
    $("layer-start").value = d.layers ? d.layers[0] : 0;
    $("layer-stop").value = d.layers && d.layers[1] != null ? d.layers[1] : "";
  }
  $("calibration").value = rc.calibration;
  $("calibration-s").value = rc.calibration_s;
  $("calibration").max = rc.max_calibration;
  $("target-file").title = `a photo with a face (jpg, png, webp, bmp; at most ${rc.max_target_mb} MB, ` +
    `${rc.max_target_side} px a side; streamed at most ${rc.target_side} px a side)`;
  updateReenactStates();
}

function initReenact() {
  $("mode-edit").addEventListener("change", () => setStreamMode("edit"));
  $("mode-reenact").addEventListener("change", () => setStreamMode("reenact"));
  $("target-file").addEventListener("change", () => {
    const file = $("target-file").files[0];
    if (file) uploadTarget(file);
  });
  const onOption = () => { updateReenactStates(); sendReenact(); };
  for (const id of ["beta", "smoothing"]) $(id).addEventListener("input", () => updateReenactStates());
  for (const id of ["rank", "layer-start", "layer-stop", "beta", "reference", "smoothing", "method", "reenact-paste",
    "calibration", "calibration-s"]) $(id).addEventListener("change", onOption);
  $("recalibrate").addEventListener("click", () => sendMessage({ type: "recalibrate" }));
}

// ------------------------------------------------------------------------------------------------ remote mode
async function postRemoteControls(controls) {
  try {
    const r = await fetch("/controls", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(controls),
    });
    const reply = await r.json();
    if (!r.ok) { showError(reply.error || `the camera said ${r.status}`); return; }
    mm.controlsAcked = reply.controls;
    $("error").hidden = true;
  } catch (err) {
    showError(`cannot reach the server: ${err}`);
  }
}

async function pollRemote() {
  let first = true;
  for (;;) {
    try {
      const r = await fetch("/stats");
      const s = await r.json();
      if (r.ok) {
        if (mm.config.state === "unreachable") { await loadConfig(); first = true; }   // the camera came up
        if (first && s.controls) { showControls(s.controls, s.max_faces); first = false; }
        onStats(s);
      } else {
        mm.lastStats = null;
        setStatus("unreachable", STATE_LABELS.unreachable, s.error || `the server said ${r.status}`);
      }
    } catch (err) {
      setStatus("unreachable", "Server not reachable", String(err));
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

// ------------------------------------------------------------------------------------------------ start-up
function showNotice() {
  const c = mm.config, box = $("notice");
  box.textContent = "";
  if (c.notice) {
    const p = document.createElement("p");
    p.id = "notice-text";
    withCode(p, c.notice);
    box.appendChild(p);
  }
  const skipped = c.skipped_directions || [];
  if (skipped.length) {
    const p = document.createElement("p");
    p.textContent = `${skipped.length} direction file${skipped.length > 1 ? "s" : ""} could not be used:`;
    const ul = document.createElement("ul");
    for (const [file, reason] of skipped) {
      const li = document.createElement("li");
      const name = document.createElement("code");
      name.textContent = String(file).split("/").pop();
      li.appendChild(name);
      li.appendChild(document.createTextNode(` — ${reason}`));
      ul.appendChild(li);
    }
    box.appendChild(p);
    box.appendChild(ul);
  }
  box.hidden = !box.childNodes.length;
}

function showMode() {
  const remote = isRemote();
  let [word, why] = remote ? ["virtual camera", `controls of the virtual camera at ${mm.config.control_url}`]
    : (MODE_WORDS[mm.config.mode] || [mm.config.mode, ""]);
  if (mm.config.state === "directions_missing") {
    [word, why] = ["no directions", "networks loaded, no direction installed: faces are reconstructed, not edited"];
  }
  $("mode").textContent = word;
  $("mode").title = why;
  $("videos").hidden = remote;
  document.body.classList.toggle("remote", remote);   // no camera, Start, Record or split: the picture is elsewhere
}

async function loadConfig() {
  const r = await fetch("/config");
  const config = await r.json();
  if (!r.ok) throw new Error(config.error || r.status);
  mm.config = config;
  showMode();
  showNotice();
  fillDirections();
  fillReenact();
  updateControlStates();
  updateReenactStates();
}

async function init() {
  try {
    await loadConfig();
  } catch (err) {
    setStatus("unreachable", "Server not reachable", `cannot read /config: ${err.message || err}`);
    showError(`cannot reach the server: ${err.message || err}`);
    return;
  }
  mm.phase = isRemote() ? "remote" : "idle";
  const onChange = () => {
    showAlpha();
    $("period-value").textContent = `${parseFloat($("period").value).toFixed(1)} s`;
    updateControlStates();
    sendControls();
  };
  for (const id of ["alpha", "period", "animate", "enabled"]) $(id).addEventListener("input", onChange);
  for (const id of ["max-faces", "paste-mode"]) $(id).addEventListener("change", onChange);
  $("direction").addEventListener("change", () => { applyAlphaRange($("direction").value, "default"); onChange(); });
  $("start").addEventListener("click", start);
  $("stop").addEventListener("click", stop);
  $("record").addEventListener("click", () => {
    if (mm.recorder && mm.recorder.state === "recording") stopRecording(); else startRecording();
  });
  $("split").addEventListener("change", applySplit);
  $("split-pos").addEventListener("input", applySplit);
  $("camera").addEventListener("change", switchSource);
  $("resolution").addEventListener("change", switchSource);
  initReenact();
  updateControlStates();
  renderStatus();
  if (isRemote()) pollRemote(); else listCameras();
  mm.ready = true;
}

init();
