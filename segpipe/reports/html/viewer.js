// segpipe report: sortable, filterable patient table and slice viewer. Runs from file://,
// no network: a patient's slices arrive as a <script> (report_files/patient_N.js) that
// calls window.segpipeLoaded with PNG data URIs (data URIs keep canvas pixels readable).
(function () {
  "use strict";
  var S = window.SEGPIPE;
  var ALPHA = 0.5;
  var state = {sortBy: S.sortBy, ascending: true, filter: "", order: [], patient: null, slice: 0,
               pending: null, wantSlice: 0, enabled: {}, counts: {ref: 0, pred: 0}, token: 0};
  var cache = {};
  var $ = function (id) { return document.getElementById(id); };
  var col = function (name) { return S.columns.indexOf(name); };
  var PATIENT = col("patient");
  var colours = {};
  S.labels.forEach(function (l) {
    state.enabled[l.value] = true;
    colours[l.value] = [1, 3, 5].map(function (i) { return parseInt(l.colour.substr(i, 2), 16); });
  });

  // ------------------------------------------------------------------ table
  function missing(v) { return v === null || v === undefined; }
  function fmt(v) {
    if (missing(v)) return "NaN";
    if (typeof v === "number" && !Number.isInteger(v)) return v.toFixed(4);
    return String(v);
  }
  function compare(a, b) {
    var i = col(state.sortBy), x = a[i], y = b[i];
    if (missing(x) || missing(y)) return missing(x) - missing(y);  // NaN last either way
    var r = (typeof x === "number" && typeof y === "number") ? x - y : String(x).localeCompare(String(y));
    return state.ascending ? r : -r;
  }
  function matches(row) {
    var f = state.filter.trim();
    if (!f) return true;
    var m = f.match(/^([\w.]+)\s*(<=|>=|<|>|=)\s*(-?[\d.]+(?:e-?\d+)?)$/);
    if (m && col(m[1]) >= 0) {
      var v = row[col(m[1])], t = parseFloat(m[3]);
      if (missing(v)) return false;
      return {"<": v < t, ">": v > t, "<=": v <= t, ">=": v >= t, "=": v === t}[m[2]];
    }
    return String(row[PATIENT]).toLowerCase().indexOf(f.toLowerCase()) >= 0;
  }
  function renderTable() {
    var head = "<tr>" + S.columns.map(function (c) {
      var arrow = c === state.sortBy ? (state.ascending ? " \u25b2" : " \u25bc") : "";
      return "<th data-col='" + escapeHtml(c) + "'>" + escapeHtml(c) + arrow + "</th>";
    }).join("") + "</tr>";
    var rows = S.rows.filter(matches).sort(compare);
    state.order = rows.map(function (r) { return String(r[PATIENT]); });
    var body = rows.map(function (r) {
      var p = String(r[PATIENT]);
      return "<tr data-patient='" + escapeHtml(encodeURIComponent(p)) + "'" + (p === state.patient ? " class='current'" : "") + ">" +
        r.map(function (v) { return "<td>" + escapeHtml(fmt(v)) + "</td>"; }).join("") + "</tr>";
    }).join("");
    $("patients").tHead.innerHTML = head;
    $("patients").tBodies[0].innerHTML = body;
    $("row-count").textContent = rows.length + " of " + S.rows.length + " patients";
  }
  function escapeHtml(s) {
    return s.replace(/[&<>"']/g, function (c) { return "&#" + c.charCodeAt(0) + ";"; });
  }

  // ------------------------------------------------------------------ viewer
  window.segpipeLoaded = function (data) {
    cache[data.patient] = data;
    if (state.pending === data.patient) { state.pending = null; open(data.patient, state.wantSlice); }
  };
  function show(patient, slice) {
    if (!$("viewer") || !(patient in S.data)) return;
    state.wantSlice = slice || 0;
    if (cache[patient]) { open(patient, state.wantSlice); return; }
    state.pending = patient;
    var tag = document.createElement("script");
    tag.src = S.data[patient];
    document.head.appendChild(tag);
  }
  function open(patient, slice) {
    state.patient = patient;
    var data = cache[patient];
    $("slice").max = data.slices.length - 1;
    $("viewer-title").textContent = "Patient " + patient + " (" + data.case + ")";
    var row = S.rows.filter(function (r) { return String(r[PATIENT]) === patient; })[0] || [];
    $("patient-row").innerHTML = "<table><tr>" + S.columns.map(function (c) { return "<th>" + escapeHtml(c) + "</th>"; }).join("") +
      "</tr><tr>" + row.map(function (v) { return "<td>" + escapeHtml(fmt(v)) + "</td>"; }).join("") + "</tr></table>";
    renderTable();
    setSlice(slice);
  }
  function setSlice(k) {
    var data = cache[state.patient];
    if (!data) return;
    state.slice = Math.max(0, Math.min(data.slices.length - 1, k | 0));
    $("slice").value = state.slice;
    $("slice-name").textContent = (state.slice + 1) + " / " + data.slices.length + "  " + data.slices[state.slice].name;
    history.replaceState(null, "", "#patient=" + encodeURIComponent(state.patient) + "&slice=" + state.slice);
    draw();
  }
  function decode(src) {
    var img = new Image();
    img.src = src;
    return img.decode().then(function () { return img; });
  }
  function composite(canvas, image, labels) {
    var w = image.naturalWidth, h = image.naturalHeight;
    canvas.width = w; canvas.height = h;
    var ctx = canvas.getContext("2d");
    ctx.drawImage(image, 0, 0);
    var base = ctx.getImageData(0, 0, w, h);
    var scratch = document.createElement("canvas");
    scratch.width = w; scratch.height = h;
    var sctx = scratch.getContext("2d");
    sctx.drawImage(labels, 0, 0);
    var lab = sctx.getImageData(0, 0, w, h).data, px = base.data, n = 0;
    for (var i = 0; i < lab.length; i += 4) {
      var v = lab[i], c = colours[v];
      if (!v || !c || !state.enabled[v]) continue;
      px[i] = px[i] * (1 - ALPHA) + c[0] * ALPHA;
      px[i + 1] = px[i + 1] * (1 - ALPHA) + c[1] * ALPHA;
      px[i + 2] = px[i + 2] * (1 - ALPHA) + c[2] * ALPHA;
      n++;
    }
    ctx.putImageData(base, 0, 0);
    return n;
  }
  function draw() {
    var s = cache[state.patient].slices[state.slice], token = ++state.token;
    Promise.all([decode(s.image), decode(s.ref), decode(s.pred)]).then(function (imgs) {
      if (token !== state.token) return;
      state.counts = {ref: composite($("ref-canvas"), imgs[0], imgs[1]),
                      pred: composite($("pred-canvas"), imgs[0], imgs[2])};
      document.body.setAttribute("data-shown", state.patient + "|" + state.slice);
    });
  }
  function step(patientDelta) {
    var i = state.order.indexOf(state.patient);
    var next = state.order[Math.max(0, Math.min(state.order.length - 1, (i < 0 ? 0 : i + patientDelta)))];
    if (next !== undefined && next !== state.patient) show(next, 0);
  }
  function fromHash() {
    var params = {};
    location.hash.replace(/^#/, "").split("&").forEach(function (kv) {
      var at = kv.indexOf("=");
      if (at > 0) params[kv.slice(0, at)] = decodeURIComponent(kv.slice(at + 1));
    });
    return params;
  }

  // ------------------------------------------------------------------ wiring
  $("patients").addEventListener("click", function (e) {
    var th = e.target.closest("th"), tr = e.target.closest("tbody tr");
    if (th) {
      var c = th.getAttribute("data-col");
      state.ascending = c === state.sortBy ? !state.ascending : true;
      state.sortBy = c;
      renderTable();
    } else if (tr) {
      show(decodeURIComponent(tr.getAttribute("data-patient")), 0);
      window.scrollTo(0, $("viewer-title") ? $("viewer-title").offsetTop : 0);
    }
  });
  $("filter").addEventListener("input", function (e) { state.filter = e.target.value; renderTable(); });
  if ($("viewer")) {
    $("slice").addEventListener("input", function (e) { setSlice(parseInt(e.target.value, 10)); });
    $("toggles").innerHTML = S.labels.map(function (l) {
      return "<label><input type='checkbox' checked data-label='" + l.value + "'><span class='swatch' style='background:" +
        l.colour + "'></span>" + escapeHtml(l.name) + "</label>";
    }).join("");
    $("toggles").addEventListener("change", function (e) {
      state.enabled[e.target.getAttribute("data-label")] = e.target.checked;
      if (state.patient) draw();
    });
    document.addEventListener("keydown", function (e) {
      var t = e.target;
      if (t && t.tagName === "INPUT" && (t.type === "search" || t.type === "text")) return;
      var moves = {ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1]}[e.key];
      if (!moves || !state.patient) return;
      e.preventDefault();
      if (moves[0]) setSlice(state.slice + moves[0]); else step(moves[1]);
    });
    window.addEventListener("hashchange", function () {
      var p = fromHash();
      if (p.patient && (p.patient !== state.patient || parseInt(p.slice || "0", 10) !== state.slice)) show(p.patient, parseInt(p.slice || "0", 10));
    });
  }
  window.segpipeViewer = {state: function () {
    return {patient: state.patient, slice: state.slice, counts: state.counts, order: state.order.slice(),
            slices: state.patient && cache[state.patient] ? cache[state.patient].slices.length : 0};
  }};
  renderTable();
  var start = fromHash();
  if (start.patient) show(start.patient, parseInt(start.slice || "0", 10));
  else if (state.order.length) show(state.order[0], 0);  // the worst patient first
})();
