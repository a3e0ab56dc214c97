// Counters and histograms for the per-query path. prom-client hashes the
// label set on every inc/observe; these hand out a series object once per
// label set and only do arithmetic per query. They plug into a prom-client
// Registry (registerMetric) so /metrics stays one exposition.

type Labels = Record<string, string>;

interface MetricValue {
  value: number;
  labels: Labels;
  metricName?: string;
}

export interface CounterSeries {
  value: number;
}

export interface HistogramSeries {
  /** Per-bucket counts (not cumulative); the last slot is +Inf. */
  readonly counts: Float64Array;
  sum: number;
  count: number;
}

function seriesKey(labels: Labels): string {
  return Object.keys(labels).sort().map((k) => `${k}=${labels[k]}`).join('\0');
}

export class FastCounter {
  readonly name: string;
  readonly help: string;
  readonly type = 'counter';
  readonly aggregator = 'sum';
  private readonly series = new Map<string, { labels: Labels; s: CounterSeries }>();

  constructor(name: string, help: string) {
    this.name = name;
    this.help = help;
  }

  seriesFor(labels: Labels): CounterSeries {
    const k = seriesKey(labels);
    let e = this.series.get(k);
    if (!e) {
      e = { labels, s: { value: 0 } };
      this.series.set(k, e);
    }
    return e.s;
  }

  get(): { name: string; help: string; type: string; aggregator: string; values: MetricValue[] } {
    return {
      name: this.name, help: this.help, type: this.type, aggregator: this.aggregator,
      values: [...this.series.values()].map((e) => ({ value: e.s.value, labels: e.labels })),
    };
  }
}

export class FastHistogram {
  readonly name: string;
  readonly help: string;
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  readonly buckets: readonly number[];
  private readonly series = new Map<string, { labels: Labels; s: HistogramSeries }>();

  constructor(name: string, help: string, buckets: readonly number[]) {
    this.name = name;
    this.help = help;
    this.buckets = buckets;
  }

  seriesFor(labels: Labels): HistogramSeries {
    const k = seriesKey(labels);
    let e = this.series.get(k);
    if (!e) {
      e = { labels, s: { counts: new Float64Array(this.buckets.length + 1), sum: 0, count: 0 } };
      this.series.set(k, e);
    }
    return e.s;
  }

  observe(s: HistogramSeries, v: number): void {
    const b = this.buckets;
    let i = 0;
    while (i < b.length && v > b[i]) i++;
    s.counts[i]++;
    s.sum += v;
    s.count++;
  }

  get(): { name: string; help: string; type: string; aggregator: string; values: MetricValue[] } {
    const values: MetricValue[] = [];
    for (const { labels, s } of this.series.values()) {
      let cum = 0;
      this.buckets.forEach((le, i) => {
        cum += s.counts[i];
        values.push({ metricName: `${this.name}_bucket`, labels: { ...labels, le: String(le) }, value: cum });
      });
      values.push({ metricName: `${this.name}_bucket`, labels: { ...labels, le: '+Inf' }, value: s.count });
      values.push({ metricName: `${this.name}_sum`, labels, value: s.sum });
      values.push({ metricName: `${this.name}_count`, labels, value: s.count });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }
}
