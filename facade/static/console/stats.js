// Rates and percentiles from two readings of /console/api/state: the server sends cumulative
// counters and histogram buckets; what happened in between is their difference.

export const WINDOW_S = 30;

// Readings of the last WINDOW_S seconds, oldest first.
export class History {
  constructor(windowS = WINDOW_S) {
    this.windowS = windowS;
    this.readings = [];
  }

  add(reading) {
    this.readings.push(reading);
    // Keep one reading at or before the window's start, so the window is always covered.
    while (this.readings.length > 2 && reading.at - this.readings[1].at >= this.windowS) {
      this.readings.shift();
    }
  }

  // The oldest and newest readings, or null before there are two.
  span() {
    if (this.readings.length < 2) return null;
    return [this.readings[0], this.readings[this.readings.length - 1]];
  }
}

function modelOf(reading, name) {
  return reading.models.find((m) => m.name === name)?.metrics ?? null;
}

// A counter's increase; a counter that went down was reset (a facade restart): count from 0.
function increase(now, before) {
  return now >= before ? now - before : now;
}

function bucketDelta(now, before) {
  if (!now) return null;
  const same = before && before.le.length === now.le.length
    && before.le.every((b, i) => b === now.le[i]) && now.count >= before.count;
  const counts = same ? now.counts.map((c, i) => c - before.counts[i]) : now.counts;
  return { le: now.le, counts, count: counts.at(-1) ?? 0,
           sum: same ? now.sum - before.sum : now.sum };
}

// Prometheus's histogram_quantile: linear interpolation inside the bucket holding the rank;
// past the highest finite bound, that bound.
export function quantile(q, histogram) {
  if (!histogram || histogram.count <= 0) return null;
  const rank = q * histogram.count;
  const { le, counts } = histogram;
  for (let i = 0; i < counts.length; i += 1) {
    if (counts[i] >= rank) {
      if (i >= le.length) return le.length ? le[le.length - 1] : null;
      const lower = i === 0 ? 0 : le[i - 1];
      const below = i === 0 ? 0 : counts[i - 1];
      const inBucket = counts[i] - below;
      return inBucket > 0 ? lower + (le[i] - lower) * ((rank - below) / inBucket) : lower;
    }
  }
  return null;
}

// What the model did between the history's oldest and newest readings.
export function modelStats(history, name) {
  const span = history.span();
  const newest = history.readings.at(-1);
  const now = newest ? modelOf(newest, name) : null;
  if (!now) return null;
  const out = { requests: now.requests, errors: now.errors, seconds: 0, rate: null,
                errorRate: null, errorShare: null, p50: null, p99: null, batchMean: null };
  if (!span) return out;
  const before = modelOf(span[0], name);
  const seconds = span[1].at - span[0].at;
  if (!before || seconds <= 0) return out;
  const requests = increase(now.requests, before.requests);
  const errors = increase(now.errors, before.errors);
  const latency = bucketDelta(now.latency, before.latency);
  // Summed over the live workers: a worker that left or restarted makes both go down.
  const reset = now.batch.batches < before.batch.batches || now.batch.rows < before.batch.rows;
  const batches = reset ? now.batch.batches : now.batch.batches - before.batch.batches;
  const rows = reset ? now.batch.rows : now.batch.rows - before.batch.rows;
  out.seconds = seconds;
  out.rate = requests / seconds;
  out.errorRate = errors / seconds;
  out.errorShare = requests > 0 ? errors / requests : null;
  out.p50 = quantile(0.5, latency);
  out.p99 = quantile(0.99, latency);
  out.batchMean = batches > 0 ? rows / batches : null;
  return out;
}

export function formatSeconds(value) {
  if (value === null || value === undefined) return "—";
  if (value < 0.001) return `${(value * 1000).toFixed(2)} ms`;
  if (value < 1) return `${(value * 1000).toFixed(1)} ms`;
  return `${value.toFixed(2)} s`;
}

export function formatRate(value) {
  if (value === null || value === undefined) return "—";
  return value >= 100 ? `${value.toFixed(0)}/s` : `${value.toFixed(value >= 10 ? 1 : 2)}/s`;
}
