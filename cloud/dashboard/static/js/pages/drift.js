// Drift per cohort and feature over time: the newest scores of every cohort, then series charts of the
// chosen cohort and model (the drift score per version, the KS statistic per feature, accuracy).

import {allPages, api} from "../api.js";
import {lineChart} from "../charts.js";
import {add, badge, fmtNum, h, section, select, table} from "../dom.js";

const FLEET = "@fleet";
const MAX_FEATURES = 16;  // charts per page; the table lists every drifted feature anyway
const HOURS = [["1", "1 hour"], ["6", "6 hours"], ["24", "24 hours"], ["168", "7 days"], ["720", "30 days"]];

function lineSeries(series, labelOf) {
  return series.map((sr) => ({label: labelOf(sr),
    points: sr.points.map((p) => ({t: p.bucket_start, v: p.value}))}));
}

function thresholdOf(series) {
  for (const sr of series) for (const p of sr.points) if (p.threshold !== null) return p.threshold;
  return null;
}

export async function renderDrift(view, {query}) {
  const [models, cohorts] = await Promise.all([api("/models"), allPages("/cohorts", {limit: 1000})]);
  const report = await api("/drift");
  const names = [...new Set([...report.data.map((r) => r.model), ...models.data.map((m) => m.name)])].sort();
  const choice = {
    model: query.get("model") || (report.data[0] && report.data[0].model) || names[0] || "",
    cohort: query.get("cohort") || FLEET,
    hours: query.get("hours") || "24",
  };
  const charts = h("div", {id: "drift-charts"});

  function go(key) {
    return (value) => {
      choice[key] = value;
      location.hash = `#/drift?${new URLSearchParams(choice)}`;
    };
  }

  add(view, h("h1", {}, "Drift"));
  if (!names.length) {
    add(view, section("No models", h("p", {class: "empty"}, "Push a model and let devices report sketches.")));
    return;
  }
  add(view, 
    h("div", {class: "filters"},
      select("model", names.map((n) => [n, n]), choice.model, go("model")),
      select("cohort", [[FLEET, "whole fleet"], ...cohorts.items.map((c) => [c.name, c.name])], choice.cohort,
        go("cohort")),
      select("hours", HOURS, choice.hours, go("hours"))),
    section("Newest scores", table([
      {title: "Cohort", cell: (r) => h("a", {href: `#/drift?${new URLSearchParams({...choice,
        cohort: r.cohort || FLEET})}`}, r.cohort || "whole fleet")},
      {title: "Version", cell: (r) => `${r.model}:${r.version}`},
      {title: "Drift score", class: "num", cell: (r) => (r.drift_score !== null && r.drift_score >= 1
        ? badge(fmtNum(r.drift_score), "fail") : fmtNum(r.drift_score))},
      {title: "Drifted features", cell: (r) => r.drifted_features.join(", ") || "—"},
      {title: "Prediction PSI", class: "num", cell: (r) => fmtNum(r.prediction_psi)},
      {title: "Accuracy", class: "num", cell: (r) => fmtNum(r.accuracy)},
      {title: "Bucket", cell: (r) => new Date(r.bucket_start).toLocaleString()},
    ], report.data.filter((r) => r.model === choice.model), {empty: "No scores for this model yet.",
      rowAttrs: (r) => ({"data-cohort": r.cohort || FLEET})})),
    section(`Over time: ${choice.cohort === FLEET ? "whole fleet" : `cohort ${choice.cohort}`}`, charts));

  const params = {model: choice.model, cohort: choice.cohort, hours: choice.hours};
  const [score, ks, accuracy] = await Promise.all(["drift_score", "drift_ks", "accuracy"].map((metric) =>
    api("/drift/series", {params: {...params, metric}})));
  charts.append(lineChart({title: "Drift score (≥ 1: drifted)", threshold: 1,
    series: lineSeries(score.data, (sr) => `${sr.version} vs ${sr.reference || "—"}`)}));
  if (accuracy.data.length) {
    charts.append(lineChart({title: "Accuracy on labelled predictions",
      series: lineSeries(accuracy.data, (sr) => sr.version)}));
  }
  const byFeature = new Map();
  for (const sr of ks.data) {
    if (!byFeature.has(sr.feature)) byFeature.set(sr.feature, []);
    byFeature.get(sr.feature).push(sr);
  }
  const features = [...byFeature.keys()].sort((a, b) => a.localeCompare(b, undefined, {numeric: true}));
  const grid = h("div", {class: "small-multiples"});
  for (const feature of features.slice(0, MAX_FEATURES)) {
    const group = byFeature.get(feature);
    grid.append(lineChart({title: `KS statistic: ${feature}`, threshold: thresholdOf(group), width: 360,
      height: 160, series: lineSeries(group, (sr) => `${sr.version} vs ${sr.reference}`)}));
  }
  charts.append(h("h3", {}, "Per feature"), features.length ? grid : h("p", {class: "empty"},
    "No per-feature scores in this period."));
  if (features.length > MAX_FEATURES) {
    charts.append(h("p", {class: "muted"}, `${features.length - MAX_FEATURES} more feature(s) not drawn.`));
  }
}
